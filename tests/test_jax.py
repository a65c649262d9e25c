"""The JAX target: a ``jax.custom_vjp`` per spec, against the NumPy target, optax, torch and the 30-digit reference.

Tolerances: in float64 the JAX code evaluates the same printed formulas as the NumPy code, XLA only fusing and
reordering them, so values agree to 1e-9 relative and gradients to 1e-8 (what the brief of the target asks; the
errors measured are below 1e-15). float32 is judged against NumPy's float64 at 1e-4 relative (float32 resolves
6e-8; sums over a batch and transcendental chains lose a few hundred ulps).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch

import lossforge as lf

from .library_db import ROWS

jax = pytest.importorskip("jax")
jnp = pytest.importorskip("jax.numpy")
jax.config.update("jax_enable_x64", True)  # float64 arrays stay float64; float32 ones stay float32

VALUE_RTOL, GRAD_RTOL = 1e-9, 1e-8
F32_RTOL = 1e-4
#: Losses whose ordinary points sit on a kink, where float32 and float64 rounding pick different subgradients.
KINK_AT_ORDINARY = {"emd": "cumsum(p - q) ends at 0 (both histograms sum to 1): the sign there follows the rounding"}


def _cases(name: str):
    row = ROWS[name]
    cases = [("ordinary", row.ordinary(torch.Generator().manual_seed(0), torch.float64))] + row.extremes(torch.float64)
    return [(label, [t.numpy() for t in tensors]) for label, tensors in cases]


def _inputs(spec: lf.LossSpec) -> tuple[int, ...]:
    return tuple(spec.arrays.index(n) for n in spec.inputs)


def _jitted(module, spec, reduction, **params):
    """``jax.jit(jax.value_and_grad(...))`` of the loss (its sum with ``reduction="none"``), and its value."""

    def total(*arrays):
        out = module.loss(*arrays, reduction=reduction, **params)
        return out.sum(), out

    return jax.jit(jax.value_and_grad(total, argnums=_inputs(spec), has_aux=True))


def _close(got, want, rtol, atol=1e-12):
    np.testing.assert_allclose(np.asarray(got, dtype=np.float64), want, rtol=rtol, atol=atol, equal_nan=False)


@pytest.mark.parametrize("name", lf.builtin_names())
def test_jit_matches_numpy_in_float64_at_ordinary_and_extreme_points(name):
    spec = lf.builtin(name)
    npm, jm = lf.compile(spec, "numpy"), lf.compile(spec, "jax")
    for label, arrays in _cases(name):
        # "none" (the gradient of the sum) at every point; "mean" and the row's own params at the ordinary one
        for reduction, params in (("none", {}), ("mean", ROWS[name].params))[: 2 if label == "ordinary" else 1]:
            want, want_grads = npm.loss_and_grad(*arrays, reduction=reduction, **params)
            (_, value), grads = _jitted(jm, spec, reduction, **params)(*arrays)
            assert value.dtype == jnp.float64, (label, reduction)
            _close(value, want, VALUE_RTOL)
            for g, w in zip(grads, want_grads):
                assert np.isfinite(np.asarray(g)).all() == np.isfinite(w).all(), (label, reduction)
                _close(g, w, GRAD_RTOL)
            if label != "ordinary":
                continue
            total, direct = jm.loss_and_grad(*arrays, reduction=reduction, **params)  # the same, outside jit
            _close(total, want, VALUE_RTOL)
            for g, w in zip(direct, want_grads):
                _close(g, w, GRAD_RTOL)


@pytest.mark.parametrize("name", lf.builtin_names())
def test_float32_stays_float32_and_is_finite_where_float64_is(name):
    spec = lf.builtin(name)
    npm, jm = lf.compile(spec, "numpy"), lf.compile(spec, "jax")
    for label, arrays64 in _cases(name):
        arrays32 = [a.astype(np.float32) if a.dtype == np.float64 else a for a in arrays64]
        want, want_grads = npm.loss_and_grad(*arrays64, reduction="none")
        (_, value), grads = _jitted(jm, spec, "none")(*arrays32)
        assert value.dtype == jnp.float32 and all(g.dtype == jnp.float32 for g in grads), label
        assert (np.isfinite(value) == np.isfinite(want)).all(), label
        for g, w in zip(grads, want_grads):
            assert (np.isfinite(g) == np.isfinite(w)).all(), label
        if label == "ordinary":  # extreme points are exact in neither dtype's last digits: finiteness is the claim
            _close(value, want, F32_RTOL, atol=1e-5)
            for g, w in zip(grads, want_grads if name not in KINK_AT_ORDINARY else ()):
                _close(g, w, F32_RTOL, atol=1e-5)


def test_bce_logits_at_logits_of_1000_and_triplet_at_equal_embeddings_have_torchs_gradients():
    x = np.array([1000.0, -1000.0, 0.0, 30.0], dtype=np.float32)
    t = np.array([0.0, 1.0, 1.0, 0.0], dtype=np.float32)
    grad = jax.jit(jax.grad(lf.compile(lf.builtin("bce_logits"), "jax").loss))(x, t)
    xt = torch.tensor(x, requires_grad=True)
    torch.nn.functional.binary_cross_entropy_with_logits(xt, torch.tensor(t)).backward()
    np.testing.assert_allclose(grad, xt.grad.numpy(), rtol=1e-6)  # [1/4, -1/4, -1/8, 1/4]: exact in float32

    a = np.ones((3, 4), dtype=np.float32)
    n = -a
    grads = jax.jit(jax.grad(lf.compile(lf.builtin("triplet"), "jax").loss, argnums=(0, 1, 2)))(a, a, n)
    ts = [torch.tensor(v, requires_grad=True) for v in (a, a, n)]
    torch.nn.functional.triplet_margin_loss(*ts, margin=1.0).backward()  # the loss is 0: anchor far from negative
    for g, tt in zip(grads, ts):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, tt.grad.numpy(), atol=1e-6)
    grads = jax.grad(lf.compile(lf.builtin("triplet"), "jax").loss, argnums=(0, 1, 2))(a, a, a)  # all three equal
    ts = [torch.tensor(a, requires_grad=True) for _ in range(3)]
    torch.nn.functional.triplet_margin_loss(*ts, margin=1.0).backward()
    for g, tt in zip(grads, ts):
        assert np.isfinite(g).all()
        np.testing.assert_allclose(g, tt.grad.numpy(), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("name", ["mse", "log_cosh", "bce_logits", "cross_entropy", "focal", "triplet"])
def test_grad_of_grad_matches_torch_double_backward_of_the_reference(name):
    # d/dx sum(upstream * dL/dx), with a non-unit upstream so that every second derivative enters
    spec, row = lf.builtin(name), ROWS[name]
    _, arrays = _cases(name)[0]
    jm = lf.compile(spec, "jax")
    first = spec.arrays.index(spec.inputs[0])
    upstream = np.linspace(0.5, 1.5, arrays[first].size).reshape(arrays[first].shape)

    def inner(x):
        args = list(arrays)
        args[first] = x
        return jnp.sum(jax.grad(lambda y: jm.loss(*args[:first], y, *args[first + 1:]))(x) * upstream)

    got = jax.jit(jax.grad(inner))(arrays[first])
    ts = [torch.tensor(a) for a in arrays]
    ts[first].requires_grad_(True)
    (g,) = torch.autograd.grad(row.reference(*ts, reduction="mean"), ts[first], create_graph=True)
    (want,) = torch.autograd.grad((g * torch.tensor(upstream)).sum(), ts[first])
    assert np.isfinite(got).all()
    np.testing.assert_allclose(got, want.numpy(), rtol=1e-8, atol=1e-12)


def test_vmap_over_rows_is_the_loss_of_each_row():
    spec = lf.builtin("cross_entropy")
    jm = lf.compile(spec, "jax")
    z = np.random.default_rng(0).normal(size=(6, 5, 4))
    y = np.random.default_rng(1).integers(0, 4, size=(6, 5))
    per_batch = jax.vmap(jm.loss)(z, y)
    grads = jax.vmap(jax.grad(jm.loss))(z, y)
    npm = lf.compile(spec, "numpy")
    for i in range(6):
        value, (grad,) = npm.loss_and_grad(z[i], y[i])
        _close(per_batch[i], value, VALUE_RTOL)
        _close(grads[i], grad, GRAD_RTOL)


def test_integer_labels_as_optax_with_integer_labels_and_ignore_index():
    optax = pytest.importorskip("optax")
    jm = lf.compile(lf.builtin("cross_entropy"), "jax")
    z = np.random.default_rng(2).normal(size=(8, 5)) * 3
    y = np.array([0, 4, 2, 2, 1, 3, 0, 4])
    want = optax.softmax_cross_entropy_with_integer_labels(z, y)
    _close(jax.jit(lambda a, b: jm.loss(a, b, reduction="none"))(z, y), np.asarray(want), 1e-12)
    grad = jax.jit(jax.grad(jm.loss))(z, y)
    _close(grad, np.asarray(jax.grad(lambda a: optax.softmax_cross_entropy_with_integer_labels(a, y).mean())(z)), 1e-12)
    # torch's ignore_index: a left-out sample counts in neither the sum nor the mean's count
    y_ignored = np.where(np.arange(8) % 3 == 0, -100, y)
    zt = torch.tensor(z, requires_grad=True)
    ref = torch.nn.functional.cross_entropy(zt, torch.tensor(y_ignored))
    ref.backward()
    value, grad = jax.jit(jax.value_and_grad(jm.loss))(z, y_ignored)
    _close(value, ref.item(), 1e-12)
    _close(grad, zt.grad.numpy(), 1e-12)


def test_against_optax_losses():
    optax = pytest.importorskip("optax")
    rng = np.random.default_rng(3)
    x, t = rng.normal(size=(64,)) * 4, rng.normal(size=(64,)) * 2
    y = (rng.random(64) < 0.5).astype(np.float64)
    checks = [
        ("bce_logits", (x, y), {}, lambda a: optax.sigmoid_binary_cross_entropy(a, y).mean()),
        ("huber", (x, t), {"delta": 1.5}, lambda a: optax.huber_loss(a, t, delta=1.5).mean()),
        ("mse", (x, t), {}, lambda a: 2 * optax.l2_loss(a, t).mean()),  # optax's l2_loss is half the square
    ]
    for name, arrays, params, ref in checks:
        jm = lf.compile(lf.builtin(name), "jax")
        value, grad = jax.jit(jax.value_and_grad(lambda a, b, jm=jm, params=params: jm.loss(a, b, **params)))(*arrays)
        want, want_grad = jax.value_and_grad(ref)(arrays[0])
        _close(value, float(want), 1e-12)
        _close(grad, np.asarray(want_grad), 1e-12)


def test_user_spec_and_combined_spec_match_numpy():
    user = lf.LossSpec(name="pseudo_huber", expr="delta**2 * (sqrt(1 + ((pred - target) / delta)**2) - 1)",
                       symbols={"pred": lf.Var("input"), "target": lf.Var("target"),
                                "delta": lf.Var("param", default=1.0, domain="positive")})
    combined = lf.combine({"cls": (lf.builtin("cross_entropy"), 1.0), "reg": (lf.builtin("mse").rename(target="goal"), 0.5)})
    rng = np.random.default_rng(4)
    p, t = rng.normal(size=(7, 3)), rng.normal(size=(7, 3))
    z, y = rng.normal(size=(7, 4)), rng.integers(0, 4, size=7)
    for spec, arrays, params in ((user, (p, t), {"delta": 0.7}), (combined, None, {})):
        if arrays is None:
            arrays = tuple({"logits": z, "target": y, "pred": p, "goal": t}[n] for n in spec.arrays)
        npm, jm = lf.compile(spec, "numpy"), lf.compile(spec, "jax")
        want, want_grads = npm.loss_and_grad(*arrays, **params)
        value, grads = jax.jit(jax.value_and_grad(lambda *a, jm=jm, params=params: jm.loss(*a, **params),
                                                  argnums=_inputs(spec)))(*arrays)
        _close(value, want, VALUE_RTOL)
        for g, w in zip(grads, want_grads):
            _close(g, w, GRAD_RTOL)


def test_a_condition_on_params_through_jax_functions_is_decided_while_tracing():
    # log(w) > 0 is computed by jnp.log: under jit it is still a number, so only the branch taken is traced
    spec = lf.LossSpec(name="switch", expr="where(log(w) > 0, (x - y)**2, sigmoid(sigmoid(x)) * y)",
                       symbols={"x": lf.Var("input"), "y": lf.Var("target"),
                                "w": lf.Var("param", default=2.0, domain="positive")})
    npm, jm = lf.compile(spec, "numpy"), lf.compile(spec, "jax")
    x, y = np.linspace(-2.0, 3.0, 6), np.linspace(1.0, -1.0, 6)
    for w in (2.0, 0.5):
        want, (want_grad,) = npm.loss_and_grad(x, y, w=w)
        value, grad = jax.jit(jax.value_and_grad(lambda a, b, w=w: jm.loss(a, b, w=w)))(x, y)
        _close(value, want, VALUE_RTOL)
        _close(grad, want_grad, GRAD_RTOL)
        traced = str(jax.make_jaxpr(lambda a, b, w=w: jm.loss(a, b, w=w))(x, y))
        assert ("logistic" in traced) == (w < 1)  # the sigmoid branch only where it is taken


def test_the_backward_is_the_derived_gradient_not_autodiff_of_the_forward():
    # the custom_vjp's jaxpr holds the printed gradient (a sigmoid), not the transpose of the softplus forward
    jm = lf.compile(lf.builtin("bce_logits"), "jax")
    x, t = jnp.zeros(4), jnp.ones(4)
    assert isinstance(jm._reduced, jax.custom_vjp)
    text = str(jax.make_jaxpr(jax.grad(jm.loss))(x, t))
    assert "logistic" in text


def test_errors_name_the_param_the_array_and_the_value():
    jm = lf.compile(lf.builtin("huber"), "jax")
    x = jnp.ones(3)
    with pytest.raises(TypeError, match="delta is a traced value"):
        jax.jit(lambda d: jm.loss(x, x, delta=d))(1.0)
    with pytest.raises(ValueError, match=r"shape mismatch: target"):
        jm.loss(x, jnp.ones(4))
    with pytest.raises(ValueError, match=r"delta = -1.0 is outside its domain"):
        jm.loss(x, x, delta=-1.0, validate=True)
    with pytest.raises(ValueError, match="reduction must be one of"):
        jm.loss(x, x, reduction="avg")
    # under a trace no element can be read: a value outside its domain makes the loss NaN, never a wrong number
    nll = lf.compile(lf.builtin("gaussian_nll"), "jax")  # validates var in every call, as torch does
    with pytest.raises(ValueError, match=r"var\[1\] = -1.0 is outside its domain"):
        nll.loss(x, x, jnp.array([1.0, -1.0, 1.0]))
    assert math.isnan(jax.jit(nll.loss)(x, x, jnp.array([1.0, -1.0, 1.0])))
    assert math.isfinite(jax.jit(nll.loss)(x, x, jnp.array([1.0, 2.0, 1.0])))
    ce = lf.compile(lf.builtin("cross_entropy"), "jax")
    with pytest.raises(ValueError, match=r"target: class index out of range \[0, 4\)"):
        ce.loss(jnp.zeros((2, 4)), jnp.array([1, 4]))
    assert math.isnan(jax.jit(ce.loss)(jnp.zeros((2, 4)), jnp.array([1, 4])))


def test_cli_generates_the_jax_module(tmp_path):
    from lossforge.cli import main

    out = tmp_path / "focal_jax.py"
    assert main(["gen", "focal", "--target", "jax", "-o", str(out)]) == 0
    assert out.read_text() == lf.generate(lf.builtin("focal"), "jax")
