"""Every built-in against its reference, on values and gradients.

Tolerances: float64 1e-7 (lossforge and PyTorch compute the same formula in
different but equally stable orders; differences are a few ulps times the
condition number of the sum); float32 2e-4 (float32 has ~6e-8 relative
resolution, and the mean over a batch plus transcendental functions accumulate
several hundred ulps in the worst rows).
"""

from __future__ import annotations

import math

import pytest
import torch

import lossforge as lf

from .library_db import ROWS

TOL = {torch.float64: 1e-7, torch.float32: 2e-4}
DTYPES = [torch.float64, torch.float32]
REDUCTIONS = ["mean", "sum", "none"]
NAMES = list(lf.builtin_names())


@pytest.fixture(scope="module")
def modules():
    cache = {}

    def get(name):
        if name not in cache:
            cache[name] = lf.compile(lf.builtin(name), "torch")
        return cache[name]

    return get


def test_every_builtin_has_a_row_and_the_table_is_complete():
    assert set(NAMES) == set(ROWS)
    assert len(NAMES) == 25


@pytest.mark.parametrize("name", NAMES)
def test_builtin_documents_itself(name):
    spec = lf.builtin(name)
    for key in ("summary", "formula", "reference", "stable_form", "description"):
        assert getattr(spec, key).strip(), f"{name} has no {key}"
    assert spec.name == name


ORDER = {
    "mse": ("pred", "target"), "mae": ("pred", "target"), "huber": ("pred", "target"),
    "smooth_l1": ("pred", "target"), "log_cosh": ("pred", "target"), "quantile": ("pred", "target"),
    "bce": ("p", "target"), "bce_logits": ("logits", "target"), "cost_sensitive_bce": ("p", "target"),
    "cross_entropy": ("logits", "target"), "nll": ("logp", "target"), "kl_div": ("logq", "target"),
    "hinge": ("score", "target"), "multi_margin": ("scores", "target"), "soft_margin": ("score", "target"),
    "margin_ranking": ("x1", "x2", "target"), "hinge_embedding": ("distance", "target"),
    "cosine_embedding": ("x1", "x2", "target"), "triplet": ("anchor", "positive", "negative"),
    "focal": ("logits", "target"), "poisson_nll": ("pred", "target"), "gaussian_nll": ("mean", "target", "var"),
    "dice": ("p", "target"), "wasserstein": ("score", "target"), "emd": ("p", "q"),
}
PARAMS = {
    "huber": {"delta": 1.0}, "smooth_l1": {"beta": 1.0}, "quantile": {"tau": 0.5}, "bce": {"weight": 1.0, "eps": 1e-7},
    "bce_logits": {"weight": 1.0, "pos_weight": 1.0}, "cost_sensitive_bce": {"fn_weight": 5.0, "eps": 1e-7},
    "cross_entropy": {"weight": 1.0, "ignore_index": -100.0, "label_smoothing": 0.0}, "nll": {"weight": 1.0, "ignore_index": -100.0}, "hinge": {"margin": 1.0}, "multi_margin": {"p": 1.0, "margin": 1.0, "weight": 1.0},
    "margin_ranking": {"margin": 0.0}, "hinge_embedding": {"margin": 1.0}, "cosine_embedding": {"margin": 0.0},
    "triplet": {"margin": 1.0, "p": 2.0, "eps": 1e-6, "swap": 0.0}, "focal": {"alpha": 0.25, "gamma": 2.0}, "gaussian_nll": {"full": 0.0, "eps": 1e-6},
    "dice": {"smooth": 1.0}, "kl_div": {"log_target": 0.0}, "poisson_nll": {"log_input": 1.0, "full": 0.0, "eps": 1e-8},
}


@pytest.mark.parametrize("name", NAMES)
def test_argument_order_and_params_follow_the_reference(name):
    spec = lf.builtin(name)
    assert spec.arrays == ORDER[name]
    assert {p: spec.symbols[p].default for p in spec.params} == PARAMS.get(name, {})


def _run(module, reference, args, input_positions, reduction, params, upstream):
    """Value and input gradients of our module and of the reference at the same point."""
    ours_in = [a.clone().requires_grad_(i in input_positions) for i, a in enumerate(args)]
    ref_in = [a.clone().requires_grad_(i in input_positions) for i, a in enumerate(args)]
    ours = module(reduction=reduction, **params)(*ours_in)
    ref = reference(*ref_in, reduction=reduction, **params)
    (ours * upstream(ours)).sum().backward()
    (ref * upstream(ref)).sum().backward()
    return ours.detach(), ref.detach(), [ours_in[i].grad for i in input_positions], [ref_in[i].grad for i in input_positions]


def _upstream(value):
    g = torch.Generator().manual_seed(7)
    return 0.5 + torch.rand(value.shape, generator=g, dtype=value.dtype)


@pytest.mark.parametrize("reduction", REDUCTIONS)
@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_matches_reference_at_ordinary_points(name, dtype, reduction, modules):
    row, spec = ROWS[name], lf.builtin(name)
    positions = [spec.arrays.index(n) for n in spec.inputs]
    g = torch.Generator().manual_seed(hash(name) % 1000)
    for params in ({}, row.params):
        args = row.ordinary(g, dtype)
        ours, ref, gours, gref = _run(modules(name), row.reference, args, positions, reduction, params, _upstream)
        assert ours.dtype == dtype and ours.shape == ref.shape
        torch.testing.assert_close(ours, ref, rtol=TOL[dtype], atol=TOL[dtype])
        for got, want, inp in zip(gours, gref, spec.inputs):
            assert got.dtype == dtype
            torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype], msg=lambda m, inp=inp: f"d/d{inp}: {m}")


@pytest.mark.parametrize("dtype", DTYPES, ids=["float64", "float32"])
@pytest.mark.parametrize("name", NAMES)
def test_extreme_points_are_finite_and_match_where_the_reference_is(name, dtype, modules):
    row, spec = ROWS[name], lf.builtin(name)
    positions = [spec.arrays.index(n) for n in spec.inputs]
    ones = lambda v: torch.ones_like(v)  # noqa: E731 - per-element gradients
    for label, args in row.extremes(dtype):
        ours, ref, gours, gref = _run(modules(name), row.reference, args, positions, "none", {}, ones)
        assert torch.isfinite(ours).all(), f"{name} [{label}]: loss not finite: {ours}"
        for got, inp in zip(gours, spec.inputs):
            assert torch.isfinite(got).all(), f"{name} [{label}]: d/d{inp} not finite: {got}"
        if not row.compare_extremes:
            continue
        mask = torch.isfinite(ref)
        torch.testing.assert_close(ours[mask], ref[mask], rtol=TOL[dtype], atol=TOL[dtype])
        if not row.compare_extreme_grads:
            continue
        for got, want in zip(gours, gref):
            if want is None:
                continue
            ok = torch.isfinite(want)
            torch.testing.assert_close(got[ok], want[ok], rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("name", ["cross_entropy", "nll", "multi_margin"])
def test_onehot_targets_also_take_class_indices(name, modules):
    row = ROWS[name]
    g = torch.Generator().manual_seed(3)
    x, onehot = row.ordinary(g, torch.float64)
    loss = modules(name)()
    torch.testing.assert_close(loss(x, onehot.argmax(-1)), loss(x, onehot), rtol=1e-12, atol=1e-12)
    assert math.isfinite(float(loss(x, onehot.argmax(-1))))
