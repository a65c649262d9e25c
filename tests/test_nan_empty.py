"""NaN inputs and empty batches, in every built-in and every target, as torch does.

A NaN in an input element makes that sample's loss NaN (reduction "none"; hence a
NaN reduced loss) and the gradient of that element NaN, wherever the derivative
depends on the element's value at all; a NaN in a target element gives the NaN-ness
of the torch reference. Empty batches give NaN ("mean"), 0 ("sum") or an empty
array ("none"), with empty gradients and no warning; an empty class axis never
raises a raw ZeroDivisionError. The printing rewrites that make this so are exact
on every non-NaN value.
"""

from __future__ import annotations

import sys
import warnings

import numpy as np
import pytest
import sympy
import torch

import lossforge as lf
from lossforge.codegen.printers import NumpyLossPrinter, guard_where, nan_selects_varying

from .library_db import ROWS

NAMES = list(lf.builtin_names())
TARGETS = ["numpy", "torch", "jax"]
RTOL = 1e-12

#: (built-in, input) whose derivative at an element does not involve that element's value
#: (the loss is affine in it, or piecewise constant in it): a NaN there leaves the gradient
#: finite, in torch's reference as here. Everywhere else the gradient of a NaN element is NaN.
CONSTANT_GRADIENT = {
    ("wasserstein", "score"),  # -target * score
    ("nll", "logp"),  # -sum(target * logp)
    ("kl_div", "logq"),  # xlogy(t, t) - t * logq
    ("margin_ranking", "x1"),  # where(m >= 0, -target, 0): both branches constant
    ("margin_ranking", "x2"),
    ("hinge_embedding", "distance"),  # where(target > 0, 1, where(margin - d >= 0, -1, 0))
}


def _ordinary(name):
    g = torch.Generator().manual_seed(11)
    return ROWS[name].ordinary(g, torch.float64)


def _positions(spec):
    return [spec.arrays.index(n) for n in spec.inputs]


def _run(name, target, args, reduction="none", validate=False):
    """(value, input gradients of value.sum()) of lossforge's module, as float64 numpy arrays.

    Without the run-time domain check (``validate=False``): what is tested is how the loss itself
    treats a NaN; the built-ins that check by default, as torch's BCE does, refuse it instead.
    """
    spec = lf.builtin(name)
    if target == "numpy":
        module = lf.compile(spec, "numpy")
        arrays = [a.numpy() for a in args]
        value, grads = module.loss_and_grad(*arrays, reduction=reduction, validate=validate)
        np.testing.assert_allclose(module.loss(*arrays, reduction=reduction, validate=validate), value,
                                   rtol=RTOL, atol=0)
        return np.asarray(value), [np.asarray(g) for g in grads]
    positions = _positions(spec)
    if target == "jax":  # its custom_vjp through jax.value_and_grad, in float64 for this call only
        jax = pytest.importorskip("jax")
        module = lf.compile(spec, "jax")

        def total(*arrays):
            out = module.loss(*arrays, reduction=reduction, validate=validate)
            return out.sum(), out

        with jax.enable_x64(True):
            (_, value), grads = jax.value_and_grad(total, argnums=tuple(positions), has_aux=True)(
                *(a.numpy() for a in args))
            return np.asarray(value), [np.asarray(g) for g in grads]
    tensors = [a.clone().requires_grad_(i in positions) for i, a in enumerate(args)]
    value = lf.compile(spec, "torch")(reduction=reduction, validate=validate)(*tensors)
    (value.sum() if reduction == "none" else value).backward()
    return value.detach().numpy(), [tensors[i].grad.numpy() for i in positions]


def _reference(name, args):
    """The torch reference's per-sample loss and input gradients, or None where it refuses NaN."""
    spec = lf.builtin(name)
    positions = _positions(spec)
    tensors = [a.clone().requires_grad_(i in positions) for i, a in enumerate(args)]
    try:
        value = ROWS[name].reference(*tensors, reduction="none")
    except RuntimeError:  # F.binary_cross_entropy: "all elements of input should be between 0 and 1"
        return None
    value.sum().backward()
    return value.detach().numpy(), [tensors[i].grad.numpy() for i in positions]


def _with_nans(spec, args, k):
    """``args`` with one NaN in every other sample of argument ``k``; the NaN samples' mask."""
    out = [a.clone() for a in args]
    arg = out[k]
    vector = spec.symbols[spec.arrays[k]].axis is not None
    batch = arg.shape[:-1] if vector else arg.shape
    samples = torch.zeros(batch, dtype=torch.bool)
    samples.view(-1)[::2] = True
    flat = arg.reshape(-1, arg.shape[-1]) if vector else arg.reshape(-1)
    for i in torch.nonzero(samples.view(-1)).flatten().tolist():
        if vector:
            flat[i, i % arg.shape[-1]] = float("nan")  # hot and cold classes of a one-hot row alike
        else:
            flat[i] = float("nan")
    out[k] = flat.reshape(arg.shape)
    return out, samples.numpy()


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", NAMES)
def test_a_nan_element_gives_a_nan_loss_and_gradient_as_torch_does(name, target):
    spec = lf.builtin(name)
    args = _ordinary(name)
    clean_value, clean_grads = _run(name, target, args)
    assert not np.isnan(clean_value).any()
    for k, arg_name in enumerate(spec.arrays):
        var = spec.symbols[arg_name]
        nan_args, samples = _with_nans(spec, args, k)
        if var.domain.name == "sign":  # both signs meet a NaN elsewhere: both branches are exercised
            signs = {float(s) for s in args[k].numpy()[samples]}
            assert signs == {-1.0, 1.0}
        if var.validate:  # checked in every call (gaussian_nll's var): refused by name, where torch gives NaN
            with pytest.raises(ValueError, match=rf"^{arg_name}\[[0-9, ]+\] = nan is outside its domain.*every call"):
                _run(name, target, nan_args)
            continue
        with np.errstate(invalid="ignore"):
            value, grads = _run(name, target, nan_args)
        reference = _reference(name, nan_args)
        if spec.validate:  # checked by default, as torch's BCE: the NaN is refused by name, as torch refuses it
            assert reference is None
            with pytest.raises(ValueError, match=rf"^{arg_name}\[[0-9, ]+\] = nan is outside its domain"):
                _run(name, target, nan_args, validate=True)
        where = f"{name} [{target}], NaN in {arg_name}"
        if var.role == "input" or reference is None or var.domain.name == "onehot":
            # Inputs: every NaN sample (torch's nll ignores a NaN off the target class, and its
            # multi_margin compares `z > 0`, NaN-blind; lossforge never swallows a NaN input).
            # Targets whose reference refuses NaN, or reads a one-hot row through argmax: NaN.
            expected = samples
        else:
            expected = np.isnan(reference[0])
        np.testing.assert_array_equal(np.isnan(value), expected, err_msg=where)
        np.testing.assert_allclose(value[~samples], clean_value[~samples], rtol=RTOL, atol=0, err_msg=where)
        for reduction in ("mean", "sum"):
            with np.errstate(invalid="ignore"):
                reduced, _ = _run(name, target, nan_args, reduction)
            assert np.isnan(reduced) == expected.any(), f"{where}, reduction {reduction}"
        for j, input_name in enumerate(spec.inputs):
            clean_rows = ~samples[..., None] if grads[j].ndim > samples.ndim else ~samples
            clean_rows = np.broadcast_to(clean_rows, grads[j].shape)
            np.testing.assert_allclose(grads[j][clean_rows], clean_grads[j][clean_rows], rtol=RTOL, atol=0,
                                       err_msg=f"{where}: d/d{input_name}")
        if var.role != "input":
            continue
        j = spec.inputs.index(arg_name)
        at_nan = np.isnan(nan_args[k].numpy())
        if (name, arg_name) in CONSTANT_GRADIENT:
            np.testing.assert_array_equal(np.isnan(grads[j][at_nan]), np.isnan(reference[1][j][at_nan]), err_msg=where)
        else:
            assert np.isnan(grads[j][at_nan]).all(), f"{where}: gradient {grads[j][at_nan]}"


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", NAMES)
def test_an_empty_batch_gives_nan_mean_zero_sum_and_empty_arrays(name, target, reduction):
    spec = lf.builtin(name)
    args = [a[:0] for a in _ordinary(name)]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        value, grads = _run(name, target, args, reduction)
    if reduction == "mean":
        assert value.shape == () and np.isnan(value)
    elif reduction == "sum":
        assert value.shape == () and value == 0.0
    else:
        first = spec.symbols[spec.arrays[0]]
        assert value.shape == (tuple(args[0].shape[:-1]) if first.axis else tuple(args[0].shape))
    for grad, i in zip(grads, _positions(spec)):
        assert grad.shape == tuple(args[i].shape) and grad.size == 0


VECTOR_NAMES = [n for n in NAMES if any(lf.builtin(n).symbols[a].axis for a in lf.builtin(n).arrays)]


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", VECTOR_NAMES)
def test_an_empty_class_axis_is_nan_or_a_value_never_a_zero_division(name, target, reduction):
    spec = lf.builtin(name)
    args = [a[:2, :0] if spec.symbols[n].axis else a[:2] for a, n in zip(_ordinary(name), spec.arrays)]
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        value, grads = _run(name, target, args, reduction)
    assert value.shape == ((2,) if reduction == "none" else ())
    for grad, i in zip(grads, _positions(spec)):
        assert grad.shape == tuple(args[i].shape) == (2, 0)
    if name == "cross_entropy" and reduction == "mean":
        # torch divides the summed losses of class probabilities by numel / C, 0/0 with no classes (NaN);
        # lossforge averages the two samples' losses, each 0 (an empty sum)
        assert value == 0.0
        return
    try:
        reference = ROWS[name].reference(*args, reduction=reduction).numpy()
    except (RuntimeError, IndexError):  # argmax of an empty one-hot row: the adapter, not torch's loss
        return
    np.testing.assert_allclose(value, reference, rtol=RTOL, atol=0, equal_nan=True)


# -- the rewrites are exact ---------------------------------------------------------------------

X, Y, M = sympy.symbols("x y m", real=True)
ARRAYS = frozenset({X, Y})


def _numpy(expr):
    printer = NumpyLossPrinter()
    printer.array_names = frozenset({"x", "y"})
    helpers = {"_choose": lf.compile(lf.builtin("kl_div"), "numpy")._choose}  # a where on params alone
    return sympy.lambdify((X, Y, M), expr, modules=[{"np": np, **helpers}], printer=printer)


def _points():
    """Random points, ties of every comparison below (x - y == m, x == 0, y == eps), zeros, infinities."""
    rng = np.random.default_rng(5)
    x = np.concatenate([rng.normal(size=400) * 3, [0.0, -0.0, 0.5, 1.0, np.inf, -np.inf, 1e-300, -1e-300]])
    y = np.concatenate([rng.normal(size=400) * 3, [0.0, 0.0, 0.0, 0.5, 0.0, 0.0, 1e-6, 1e-6]])
    ties = rng.normal(size=100)
    return np.concatenate([x, ties + 0.25]), np.concatenate([y, ties])  # x - y == 0.25 == m exactly


#: (expression, NaN in x gives NaN, NaN in y gives NaN) after the rewrite; before it, a NaN in
#: the condition selected the constant branch.
REWRITTEN = [
    (lf.where(M + X - Y >= 0, M + X - Y, 0), True, True),  # margin / triplet: clamp_min, torch's tie gradient
    (lf.where(X - Y > M, X * Y, -1), True, True),
    (lf.where(X <= M, X**2, 2.0), True, False),
    (lf.where(Y >= 1e-6, Y, 1e-6), False, True),  # gaussian_nll's variance
    (lf.where(sympy.Eq(X, Y), X * Y, 0), True, True),
    (lf.where(sympy.Ne(X, 0), 0, X * Y), True, False),
    # hinge_embedding, nested: a NaN target selects the inner where (finite, as torch's reference)
    (lf.where(Y > 0, X, lf.where(M - X >= 0, M - X, 0)), True, False),
    (sympy.log(lf.where(Y >= 1e-6, Y, 1e-6)) + (X - Y) ** 2 / lf.where(Y >= 1e-6, Y, 1e-6), True, True),
]
LEFT_ALONE = [
    lf.where(X >= 0, X, Y),  # both branches vary
    lf.where(X >= 0, 1, 0),  # both constant
    lf.where(sympy.And(X >= 0, X <= 1), X, 0),  # not a single comparison
    lf.where(M >= 0, X, 0),  # a condition on params alone
    lf.where(X >= 0, 0, X),  # NaN already selects the varying branch
    lf.where(sympy.Eq(X, 0), 3, X - Y),  # `==` is false on NaN: selects X - Y already
    lf.where(sympy.Ne(X, 0), X, 0),  # `!=` is true on NaN: selects X already
    lf.where(X <= M, 2.0, X**2),
]
EXPRS = [e for e, _, _ in REWRITTEN] + LEFT_ALONE


def _same(a, b):
    a, b = np.broadcast_arrays(np.asarray(a, dtype=float), np.asarray(b, dtype=float))
    np.testing.assert_array_equal(a, b)  # equal values (zeros of either sign), NaN where NaN


@pytest.mark.parametrize("expr", EXPRS, ids=str)
def test_nan_selects_varying_is_exact_on_values_and_gradients(expr):
    x, y = _points()
    new = nan_selects_varying(expr, ARRAYS)
    with np.errstate(all="ignore"):
        _same(_numpy(new)(x, y, 0.25), _numpy(expr)(x, y, 0.25))
        for s in (X, Y):
            before, after = sympy.diff(expr, s), sympy.diff(new, s)
            _same(_numpy(after)(x, y, 0.25), _numpy(before)(x, y, 0.25))
            # render derives gradients from the loss before the rewrite, then rewrites each on its own
            _same(_numpy(nan_selects_varying(before, ARRAYS))(x, y, 0.25), _numpy(before)(x, y, 0.25))
    assert nan_selects_varying(new, ARRAYS) == new  # idempotent


@pytest.mark.parametrize("expr", LEFT_ALONE, ids=str)
def test_nan_selects_varying_leaves_near_misses_alone(expr):
    assert nan_selects_varying(expr, ARRAYS) == expr


@pytest.mark.parametrize(("expr", "nan_x", "nan_y"), REWRITTEN, ids=[str(e) for e, _, _ in REWRITTEN])
def test_nan_selects_varying_makes_a_nan_select_the_branch_that_carries_it(expr, nan_x, nan_y):
    assert nan_selects_varying(expr, ARRAYS) != expr
    nan, half = np.array([np.nan]), np.array([0.5])
    with np.errstate(invalid="ignore"):
        for x, y, expected in ((nan, half, nan_x), (half, nan, nan_y), (nan, nan, True)):
            assert np.isnan(_numpy(guard_where(expr, ARRAYS))(x, y, 0.25)).all() == expected, (x, y)


GUARDED = [
    lf.where(X > 0, sympy.log(X), sympy.log(-X + 1)),
    lf.where(X < 1e-6, -100, sympy.log(X)),  # the else-branch guard must keep a NaN
    lf.where(X >= 0, sympy.sqrt(X) / (Y**2 + 1), sympy.exp(-X)),
    lf.where(Y > 0, X, lf.where(X < 0, sympy.log(-X), lf.log1p(X))),
    lf.where(X - Y >= 0, lf.xlogy(Y, X), 1 / X),
]


@pytest.mark.parametrize("expr", GUARDED, ids=str)
def test_guard_where_is_exact_where_selected_and_keeps_nan_in_both_branches(expr):
    x, y = _points()
    x, y = np.concatenate([x, [np.nan, 0.5, np.nan]]), np.concatenate([y, [0.5, np.nan, np.nan]])
    guarded = _numpy(guard_where(expr, ARRAYS))
    with np.errstate(all="ignore"):
        plain = _numpy(nan_selects_varying(expr, ARRAYS))(x, y, 0.25)
        got = guarded(x, y, 0.25)
        # Equal wherever the unguarded form is not NaN, and NaN where a NaN operand selected a
        # varying branch (the unguarded form is NaN there too); never NaN from an untaken branch.
        ok = ~np.isnan(plain)
        _same(got[ok], plain[ok])
        nan_in = np.isnan(x) | np.isnan(y)
        np.testing.assert_array_equal(np.isnan(got[nan_in]), np.isnan(plain[nan_in]))
        for s in (X, Y):
            grad = sympy.diff(expr, s)
            g_plain = _numpy(nan_selects_varying(grad, ARRAYS))(x, y, 0.25)
            g_got = _numpy(guard_where(grad, ARRAYS))(x, y, 0.25)
            keep = ~np.isnan(g_plain)
            _same(np.broadcast_to(g_got, x.shape)[keep], np.broadcast_to(g_plain, x.shape)[keep])


def test_else_branch_guard_selects_its_argument_exactly_where_the_branch_is_selected():
    e = guard_where(lf.where(X < 1e-6, -100, sympy.log(X)), ARRAYS)
    (inner,) = [n for n in e.atoms(lf.where) if n != e]
    assert inner == lf.where(X < 1e-6, 1, X)  # not where(Not(x < 1e-6), x, 1), which is 1 at NaN
    assert np.isnan(_numpy(e)(np.array([np.nan]), 0.0, 0.0)).all()


# -- printed helpers: exact off NaN, NaN at NaN ---------------------------------------------------

SPECIAL = np.array([0.0, -0.0, 1e-320, -1e-320, 0.5, -0.5, 1.0, -1.0, 3e300, -3e300, np.inf, -np.inf, np.nan])


def _step_and_sign(target):
    spec = lf.LossSpec(name="step_sign", expr="heaviside(x) + 10 * sign(y)",
                       symbols={"x": lf.Var("input"), "y": lf.Var("input")}, reduction="none")
    return lf.compile(spec, target)


def test_heaviside_and_sign_are_exact_and_keep_nan_numpy():
    module = _step_and_sign("numpy")
    zero = np.zeros_like(SPECIAL)
    with np.errstate(invalid="ignore"):
        step = module.loss(SPECIAL, zero, reduction="none")
        sign = module.loss(zero, SPECIAL, reduction="none") / 10
    finite = ~np.isnan(SPECIAL)
    _same(step[finite], (SPECIAL[finite] > 0).astype(float))
    _same(sign[finite], np.sign(SPECIAL[finite]))
    assert np.isnan(step[-1]) and np.isnan(sign[-1])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32, torch.float16, torch.bfloat16])
def test_heaviside_and_sign_are_exact_and_keep_nan_torch(dtype):
    Loss = _step_and_sign("torch")
    special = torch.tensor(SPECIAL, dtype=dtype)
    zero = torch.zeros_like(special)
    finite = ~torch.isnan(special)
    step = Loss(reduction="none")(special, zero)
    sign = Loss(reduction="none")(zero, special) / 10
    assert torch.equal(step[finite], (special[finite] > 0).to(dtype))
    assert torch.equal(sign[finite], torch.sign(special[finite]))
    assert torch.isnan(step[-1]) and torch.isnan(sign[-1])
    helpers = sys.modules[Loss.__module__]
    for grad_mode in (False, True):  # the bit-blend select and torch.where
        with torch.set_grad_enabled(grad_mode):
            got = helpers._sign(special)
        assert torch.equal(got[finite], torch.sign(special[finite])) and torch.isnan(got[-1])


def test_numpy_mean_helpers_are_np_mean_to_the_bit():
    module = lf.compile(lf.builtin("multi_margin"), "numpy")
    rng = np.random.default_rng(2)
    for shape in ((7, 5), (3, 1), (4, 1000), (2, 3, 17)):
        a = rng.normal(size=shape) * 10.0 ** rng.integers(-5, 5, size=shape)
        assert np.array_equal(module._mean(a), np.mean(a, axis=-1, keepdims=True))
        assert module._reduce(a, "mean") == a.mean() and module._reduce(a, "sum") == a.sum()
    with warnings.catch_warnings(), np.errstate(all="raise"):
        warnings.simplefilter("error")
        assert np.isnan(module._mean(np.zeros((2, 0)))).all() and np.isnan(module._reduce(np.zeros(0), "mean"))
