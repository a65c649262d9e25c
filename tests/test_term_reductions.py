"""A combined loss whose terms reduce differently: mean BCE + 5 * a summed penalty, against hand-written torch.

The value is ``sum_k w_k * reduce_k(term_k)``, so a mean term's per-element gradient carries 1/N and a sum term's
does not. Every path of the generated code is compared with the same reference: NumPy's ``loss_and_grad``, the
Torch Function's backward (eager and recomputed for double backward), ``fused=True``, the chunked CPU path and
torch.func (grad, vmap, jvp).

Tolerances: float64 to 1e-12 relative (the same formula evaluated in another order); float32 to 2e-5 relative
against the float64 reference at the float32-rounded points (a few roundings of values near 1 and a sum of 60
terms, measured below 3e-6).
"""

from __future__ import annotations

import sys

import numpy as np
import pytest
import torch

import lossforge as lf

F = torch.nn.functional
REDUCTIONS = [None, "mean", "sum", "none", "batchmean"]


def penalty() -> lf.LossSpec:
    """A sum-reduced regularizer on the same prediction as the data term."""
    return lf.LossSpec(name="l2_penalty", expr="p**2", symbols={"p": lf.Var("input", domain="probability")},
                       reduction="sum")


def spec() -> lf.LossSpec:
    return lf.combine({"bce": (lf.builtin("bce"), 1.0), "penalty": (penalty(), 5.0)}, name="bce_penalty")


def reference(p, y, reduction):
    """The hand-written loss: torch's BCE and the penalty, each reduced as asked (None: mean BCE, summed penalty)."""
    data, reg = F.binary_cross_entropy(p, y, reduction="none"), p**2
    if reduction is None:
        return data.mean() + 5 * reg.sum()
    if reduction == "none":
        return data + 5 * reg
    if reduction == "batchmean":
        return (data.sum() + 5 * reg.sum()) / p.shape[0]
    return getattr(data, reduction)() + 5 * getattr(reg, reduction)()


def points(dtype, n=20):
    g = torch.Generator().manual_seed(7)
    p = (0.02 + 0.96 * torch.rand(n, 3, generator=g, dtype=torch.float64)).to(dtype)
    y = (torch.rand(n, 3, generator=g, dtype=torch.float64) < 0.5).to(dtype)
    return p, y


def reference_grad(p, y, reduction, upstream=None):
    """The reference's value and gradient in p, in float64 at the given (possibly float32-rounded) points."""
    leaf = p.double().clone().requires_grad_()
    value = reference(leaf, y.double(), reduction)
    value.backward(torch.ones_like(value) if upstream is None else upstream.double())
    return value.detach(), leaf.grad


def close(got, want, dtype, tol=None):
    tol = tol or (1e-12 if dtype == torch.float64 else 2e-5)
    torch.testing.assert_close(torch.as_tensor(got).double(), want.double(), rtol=tol, atol=tol)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("reduction", REDUCTIONS, ids=str)
def test_each_term_reduced_on_its_own_matches_the_torch_reference(reduction, dtype):
    p, y = points(dtype)
    Loss = lf.compile(spec(), "torch")
    assert Loss().reduction is None  # the default: each term its own
    leaf = p.clone().requires_grad_()
    value = Loss(reduction=reduction)(leaf, y)
    upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    value.backward(upstream)
    want, want_grad = reference_grad(p, y, reduction, upstream)
    assert value.dtype == dtype and leaf.grad.dtype == dtype
    close(value.detach(), want, dtype)
    close(leaf.grad, want_grad, dtype)
    # NumPy: the gradient of the reduced loss (with "none", of the sum of the per-sample losses)
    module = lf.compile(spec(), "numpy")
    np_value, (np_grad,) = module.loss_and_grad(p.numpy(), y.numpy(), reduction=reduction)
    close(np_value, want, dtype)
    close(np_grad, reference_grad(p, y, reduction)[1], dtype)
    close(module.loss(p.numpy(), y.numpy(), reduction=reduction), want, dtype)


def test_the_terms_for_logging_are_each_reduced_as_their_own_spec():
    p, y = points(torch.float64)
    want = {"bce": F.binary_cross_entropy(p, y), "penalty": (p**2).sum()}
    for got in (lf.compile(spec(), "torch")().terms(p, y), lf.compile(spec(), "numpy").loss_terms(p.numpy(), y.numpy())):
        assert list(got) == ["bce", "penalty"]
        for name in want:
            close(got[name], want[name], torch.float64)
    # reduction="none" is the formula itself, per sample: it sums to the total only where every term sums
    none = lf.compile(spec(), "torch")(reduction="none")(p, y)
    close(none, F.binary_cross_entropy(p, y, reduction="none") + 5 * p**2, torch.float64)


def test_double_backward_and_gradcheck_follow_each_terms_reduction():
    p, y = points(torch.float64, n=4)
    loss = lf.compile(spec(), "torch")()
    assert torch.autograd.gradcheck(lambda a: loss(a, y), (p.clone().requires_grad_(),))
    assert torch.autograd.gradgradcheck(lambda a: loss(a, y), (p.clone().requires_grad_(),))
    leaf, ref_leaf = p.clone().requires_grad_(), p.clone().requires_grad_()
    (grad,) = torch.autograd.grad(loss(leaf, y), leaf, create_graph=True)
    (ref,) = torch.autograd.grad(reference(ref_leaf, y, None), ref_leaf, create_graph=True)
    close(grad, ref, torch.float64)
    # the second derivative of the clamped log, 1/p**2 and 1/(1 - p)**2 as written by each: measured 1.7e-11 apart
    close(torch.autograd.grad(grad.sum(), leaf)[0], torch.autograd.grad(ref.sum(), ref_leaf)[0], torch.float64, 1e-10)


def test_torch_func_grad_vmap_and_jvp_follow_each_terms_reduction():
    p, y = points(torch.float64)
    loss = lf.compile(spec(), "torch")()
    close(torch.func.grad(lambda a: loss(a, y))(p), reference_grad(p, y, None)[1], torch.float64)
    per_row = torch.func.vmap(torch.func.grad(lambda a, b: loss(a, b)))(p, y)  # one batch of 3 per row
    close(per_row, torch.func.vmap(torch.func.grad(lambda a, b: reference(a, b, None)))(p, y), torch.float64)
    tangent = torch.randn(p.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    _, change = torch.func.jvp(lambda a: loss(a, y), (p,), (tangent,))
    close(change, (reference_grad(p, y, None)[1] * tangent).sum(), torch.float64)


@pytest.mark.parametrize("reduction", [None, "none"], ids=str)
def test_the_chunked_cpu_path_follows_each_terms_reduction(monkeypatch, reduction):
    cls = lf.compile(spec(), "torch")
    monkeypatch.setattr(sys.modules[cls.__module__], "_CHUNK", 16)  # 300 x 3 elements: many chunks of 5 rows
    p, y = points(torch.float64, n=300)
    leaf = p.clone().requires_grad_()
    value = cls(reduction=reduction)(leaf, y)
    value.backward(torch.ones_like(value))
    want, want_grad = reference_grad(p, y, reduction)
    close(value.detach(), want, torch.float64)
    close(leaf.grad, want_grad, torch.float64)
    with torch.no_grad():
        close(cls(reduction=reduction)(p, y), want, torch.float64)


def test_fused_follows_each_terms_reduction():
    p, y = points(torch.float64)
    leaf = p.clone().requires_grad_()
    value = lf.compile(spec(), "torch")(fused=True)(leaf, y)
    value.backward()
    want, want_grad = reference_grad(p, y, None)
    close(value.detach(), want, torch.float64)
    close(leaf.grad, want_grad, torch.float64)


def test_the_generated_reduction_argument_defaults_to_each_terms_own_and_is_documented():
    for target in ("numpy", "torch"):
        source = lf.generate(spec(), target)
        assert 'reduction=None' in source and 'reduction or "mean"' in source and 'reduction or "sum"' in source
        assert "1.0 * bce (reduced by mean)" in source and "5.0 * penalty (reduced by sum)" in source
    with pytest.raises(ValueError, match=r"reduction must be one of None, 'mean'"):
        lf.compile(spec(), "torch")(reduction="avg")
    with pytest.raises(ValueError, match=r"reduction must be one of None, 'mean'"):
        lf.compile(spec(), "numpy").loss(np.full(3, 0.5), np.ones(3), reduction="avg")
    # a combine whose terms agree keeps the contract's default, "mean"
    agreed = lf.combine({"bce": (lf.builtin("bce"), 1.0), "penalty": (penalty().rename(), 5.0)}, reduction="mean")
    assert "reduction=None" not in lf.generate(agreed, "torch")


@pytest.mark.parametrize("reduction", [None, "sum", "none"], ids=str)
def test_a_weighted_mean_over_counted_samples_beside_a_summed_penalty_is_torchs(reduction):
    """Cross-entropy with ignored samples and per-class weights (a weighted mean over the samples that count)
    plus 1e-2 * a summed penalty on the logits, class indices: against F.cross_entropy, float64 to 1e-12."""
    logits_var = lf.builtin("cross_entropy").symbols["logits"]
    reg = lf.LossSpec(name="logit_l2", expr="sum(logits**2)", symbols={"logits": logits_var}, reduction="sum")
    combined = lf.combine({"ce": (lf.builtin("cross_entropy"), 1.0), "reg": (reg, 1e-2)})
    g = torch.Generator().manual_seed(4)
    logits = torch.randn(9, 5, generator=g, dtype=torch.float64)
    labels = torch.randint(0, 5, (9,), generator=g)
    labels[::3] = -100
    weight = 0.5 + torch.rand(5, generator=g, dtype=torch.float64)
    found = []
    for fn in (lambda z: lf.compile(combined, "torch")(weight=weight, reduction=reduction)(z, labels),
               lambda z: F.cross_entropy(z, labels, weight=weight, reduction="mean" if reduction is None else reduction)
               + 1e-2 * ((z**2).sum() if reduction is None else _reduced((z**2).sum(-1), reduction))):
        leaf = logits.clone().requires_grad_()
        value = fn(leaf)
        value.backward(torch.ones_like(value))
        found.append((value.detach(), leaf.grad))
    for got, want in zip(*found):
        close(got, want, torch.float64)


def _reduced(per_sample, reduction):
    return per_sample if reduction == "none" else getattr(per_sample, reduction)()
