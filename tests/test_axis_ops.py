"""The axis operations amax, amin, logcumsumexp, flip and sort/sort_by, and the losses they let a spec write.

Each operation is checked, values and gradients, in both targets (NumPy computes in float64 whatever its input;
Torch in float64 and float32), against torch's own operation under autograd (``torch.amax``/``torch.amin``,
``torch.logcumsumexp``, ``torch.flip``, ``torch.sort``/``torch.argsort`` + ``gather``) and against the
30-digit reference (:mod:`lossforge.numeric`) at the same points, ordinary and extreme: ties for amax, scores
of +-100 and +-1e4 for logcumsumexp, repeated keys for a sort.

Tolerances, as ``|got - ref| <= rtol*|ref| + atol``:

* amax, amin, flip and the sorts compute nothing but a comparison, a count and a division (the share of a tie):
  they are held to exact equality with torch, and to 1 ulp (of their dtype) of the 30-digit reference (plus 1e-16 absolute for a
  gradient: the reference holds a share such as 1/5 once as a float64 constant, so 1/5 - 1/5 is 1.1e-17 there);
* logcumsumexp of weights ``y`` of both signs: the weighted sum and the gradient's ``sum_{k >= i} y_k * w_ik``
  cancel, and each weight ``w_ik = exp(z_i - out_k)`` carries the rounding of ``out_k = logcumsumexp(z)_k``
  (a relative error of ``eps*|out_k|``: 1e-12 in float64 and 1e-3 in float32 at 1e4, in torch's own autograd of
  ``torch.logcumsumexp`` exactly as here, which computes the same way). Value and gradient entries are held to
  ``4 eps * sum |y|*(1 + |out|)`` absolute per row; measured at most 0.65 of it (float64) and 0.48 (float32), the
  same as torch's.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch

import lossforge as lf
from lossforge import language as E
from lossforge.analysis.intervals import bounds_for
from lossforge.errors import ParseError, UnsafeExpressionError
from lossforge.numeric import evaluate_batch
from tests.test_functions import assert_close, example, run_reference, run_targets

EPS = {np.float64: float(np.finfo(np.float64).eps), np.float32: float(np.finfo(np.float32).eps)}


def _spec(expr: str, **targets: str) -> lf.LossSpec:
    symbols = {"z": lf.Var("input", axis="c")}
    symbols.update({name: lf.Var("target", axis="c", domain=dom) for name, dom in targets.items()})
    return lf.LossSpec(name="axis_op", expr=expr, symbols=symbols, reduction="sum")


def _in_dtype(arrays, dtype):
    return [np.asarray(a, dtype=dtype).astype(np.float64) for a in arrays]


def _exact(spec, arrays):
    """The 30-digit reference's per-sample values and gradients of the spec's inputs."""
    value, grads = evaluate_batch(spec, dict(zip(spec.arrays, arrays)))
    return value, grads


# -- amax and amin ------------------------------------------------------------------------------------------------

RNG = np.random.default_rng(7)
#: Ordinary rows, then ties: two at the max, all equal, two at +-1e4, three at the min, and huge entries.
EXTREMUM_Z = np.concatenate([RNG.normal(0, 3, (6, 5)), [
    [1.0, 3.0, 3.0, 0.0, -1.0],
    [2.0, 2.0, 2.0, 2.0, 2.0],
    [-1e4, 1e4, 5.0, 1e4, 0.0],
    [-3.0, -3.0, 7.0, -3.0, 1.0],
    [1e30, -1e30, 0.0, 1.0, 2.0],
]])
EXTREMUM_Y = np.concatenate([RNG.normal(0, 1, (6, 5)), np.ones((5, 5))])

EXTREMA = [
    ("amax(z)", lambda z: torch.amax(z, -1)),
    ("amin(z)", lambda z: torch.amin(z, -1)),
    ("amax(y*z) - amin(z)", lambda z, y: torch.amax(y * z, -1) - torch.amin(z, -1)),
]


@pytest.mark.parametrize("expr, reference", EXTREMA, ids=[e for e, _ in EXTREMA])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_amax_amin_split_ties_as_torch_amax_does(expr, reference, dtype):
    spec = _spec(expr, y="real") if "y" in expr else _spec(expr)
    arrays = _in_dtype([EXTREMUM_Z, EXTREMUM_Y][: len(spec.arrays)], dtype)
    ref_value, ref_grads = run_reference(reference, spec, arrays, dtype)
    exact_value, exact_grads = _exact(spec, arrays)
    for target, (value, grads) in run_targets(spec, arrays, dtype).items():
        assert_close(value, ref_value, 0, 0, f"{expr} {target} value vs torch")
        assert_close(grads[0], ref_grads[0], 0, 0, f"{expr} {target} gradient vs torch")
        assert_close(value, exact_value, EPS[dtype], 0, f"{expr} {target} value vs 30 digits")
        assert_close(grads[0], exact_grads[0], EPS[dtype], 1e-16, f"{expr} {target} gradient vs 30 digits")
    if expr == "amax(z)":  # the shares themselves: 1/2 at a tie of two, 1/5 where all five tie
        np.testing.assert_array_equal(ref_grads[0][6], [0, 0.5, 0.5, 0, 0])
        np.testing.assert_array_equal(ref_grads[0][7], [float(np.asarray(1, dtype) / dtype(5))] * 5)


def test_amax_of_nan_is_nan_with_a_nan_gradient():
    spec = _spec("amax(z)")
    z = np.array([[1.0, np.nan, 2.0]])
    value, (grad,) = lf.compile(spec, "numpy").loss_and_grad(z, reduction="none")
    assert np.isnan(value).all() and np.isnan(grad).all()
    t = torch.tensor(z, requires_grad=True)
    out = lf.compile(spec, "torch")(reduction="sum")(t)
    out.backward()
    assert torch.isnan(out) and torch.isnan(t.grad).all()


# -- logcumsumexp ---------------------------------------------------------------------------------------------------

LCSE_Z = np.concatenate([RNG.normal(0, 3, (6, 5)), [
    [100.0, -100.0, 100.0, -100.0, 0.0],
    [-100.0, -100.0, -100.0, -100.0, -100.0],
    [1e4, -1e4, 0.0, 1e4, -1e4],
    [-1e4, -1e4 + 1, -1e4 + 2, -1e4, -1e4],
    [-1e4, 1e4, -1e4, 1e4, -1e4],
]])
LCSE_Y = np.concatenate([RNG.normal(0, 1, (9, 5)), [[0.0, 1.0, -2.0, 0.0, 3.0], [1.0, 0.0, 0.0, 0.0, -1.0]]])


def _lcse_scale(z, y, dtype):
    """The absolute tolerance of a row's value and of each of its gradient entries: 4 eps times
    ``sum |y|*(1 + |logcumsumexp(z)|)``."""
    scale = 4 * EPS[dtype] * np.sum(np.abs(y) * (1 + np.abs(np.logaddexp.accumulate(z, axis=-1))), axis=-1)
    return scale, scale[:, None] * np.ones_like(z)


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_logcumsumexp_matches_torch_and_30_digits_at_100_and_1e4(dtype):
    spec = _spec("sum(y*logcumsumexp(z))", y="real")
    z, y = _in_dtype([LCSE_Z, LCSE_Y], dtype)
    exact_value, (exact_grad,) = _exact(spec, [z, y])
    ref_value, (ref_grad,) = run_reference(lambda z, y: (y * torch.logcumsumexp(z, -1)).sum(-1), spec, [z, y], dtype)
    value_atol, grad_atol = _lcse_scale(z, y, dtype)
    assert_close(ref_value, exact_value, 0, value_atol, "torch.logcumsumexp vs 30 digits")
    assert_close(ref_grad, exact_grad, 0, grad_atol, "torch.logcumsumexp's autograd vs 30 digits")
    for target, (value, (grad,)) in run_targets(spec, [z, y], dtype).items():
        assert np.isfinite(value).all() and np.isfinite(grad).all()
        assert_close(value, exact_value, 0, value_atol, f"{target} {dtype.__name__} value vs 30 digits")
        assert_close(grad, exact_grad, 0, grad_atol, f"{target} {dtype.__name__} gradient vs 30 digits")
    # NumPy's running log-sum-exp, the other stable spelling, agrees with the generated value
    np.testing.assert_allclose(lf.compile(spec, "numpy").loss(z, y, reduction="none"),
                               np.sum(y * np.logaddexp.accumulate(z, axis=-1), axis=-1), rtol=1e-14,
                               atol=float(np.max(value_atol)))


def test_logcumsumexp_written_out_is_reported_and_is_infinite_in_float32():
    naive = _spec("sum(y*log(cumsum(exp(z))))", y="real")
    assert "overflow" in lf.check(naive).kinds()
    assert lf.check(_spec("sum(y*logcumsumexp(z))", y="real")).hazards == ()
    # exp(100) is inf in float32, and exp(-110) is 0 (its smallest subnormal is exp(-103.3)): log(0) = -inf
    z = torch.tensor([[100.0, -100.0, 100.0, -100.0, 0.0], [-110.0] * 5], dtype=torch.float32)
    written_out = torch.log(torch.cumsum(torch.exp(z), -1))
    assert torch.isinf(written_out[0]).any() and torch.isinf(written_out[1]).all()
    stable = lf.compile(_spec("sum(y*logcumsumexp(z))", y="real"), "torch")(reduction="none")
    assert torch.isfinite(stable(z, torch.ones_like(z))).all()


def test_the_gradient_of_logcumsumexp_is_its_prefix_softmax_summed_backwards():
    # sum_{k >= i} g_k * exp(z_i - logcumsumexp(z)_k), in mpmath, for one row with weights of both signs
    spec = _spec("sum(y*logcumsumexp(z))", y="real")
    z, y = np.array([[0.3, -1.2, 2.5, 0.0]]), np.array([[1.0, -2.0, 0.5, 3.0]])
    with mpmath.workdps(30):
        zs = [mpmath.mpf(v) for v in z[0]]
        prefix = [mpmath.log(sum(mpmath.exp(v) for v in zs[: k + 1])) for k in range(4)]
        want = [float(sum(y[0, k] * mpmath.exp(zs[i] - prefix[k]) for k in range(i, 4))) for i in range(4)]
    _, (grad,) = lf.compile(spec, "numpy").loss_and_grad(z, y, reduction="sum")
    np.testing.assert_allclose(grad[0], want, rtol=1e-15)


# -- flip and sort ----------------------------------------------------------------------------------------------------

SORT_Z = np.concatenate([RNG.normal(0, 3, (5, 5)), [
    [1.0, 0.0, 1.0, 0.0, 2.0],
    [3.0, 3.0, 3.0, 3.0, 3.0],
    [1e30, -1e4, 1e4, -1e30, 0.0],
]])
#: Keys with repeats: ties keep their order along the axis.
SORT_K = np.concatenate([RNG.normal(0, 1, (5, 5)), [[1.0, 0.0, 1.0, 0.0, 1.0], [2.0] * 5, [0.0, 1.0, 0.0, 1.0, 0.0]]])
SORT_Y = np.tile([1.0, 2.0, 3.0, 4.0, 5.0], (8, 1))  # weight by position: the gradient shows the permutation


def _by_key(z, k, descending):
    return torch.gather(z, -1, torch.argsort(k, dim=-1, descending=descending, stable=True))


SORTS = [
    ("sum(y*sort(z))", lambda z, y: (y * torch.sort(z, dim=-1, stable=True).values).sum(-1)),
    ("sum(y*sort(z, descending=True))",
     lambda z, y: (y * torch.sort(z, dim=-1, descending=True, stable=True).values).sum(-1)),
    ("sum(y*sort_by(z, k))", lambda z, y, k: (y * _by_key(z, k, False)).sum(-1)),
    ("sum(y*sort_by(z, k, descending=True))", lambda z, y, k: (y * _by_key(z, k, True)).sum(-1)),
    ("sum(y*flip(z))", lambda z, y: (y * torch.flip(z, (-1,))).sum(-1)),
]


@pytest.mark.parametrize("expr, reference", SORTS, ids=[e for e, _ in SORTS])
@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_sorts_route_the_gradient_through_the_inverse_permutation(expr, reference, dtype):
    spec = _spec(expr, y="real", k="real") if "k" in expr else _spec(expr, y="real")
    arrays = _in_dtype([SORT_Z, SORT_Y, SORT_K][: len(spec.arrays)], dtype)
    ref_value, (ref_grad,) = run_reference(reference, spec, arrays, dtype)
    exact_value, (exact_grad,) = _exact(spec, arrays)
    # the gradient is a permutation of the weights, exactly; the value a weighted sum, which rounds (and cancels)
    # as any sum of the same products: 4 eps of the sum of their magnitudes
    np.testing.assert_array_equal(ref_grad, exact_grad)
    atol = 4 * EPS[dtype] * np.sum(np.abs(arrays[0] * arrays[1]), axis=-1)
    for target, (value, (grad,)) in run_targets(spec, arrays, dtype).items():
        np.testing.assert_array_equal(grad, ref_grad, f"{expr} {target} gradient")
        assert_close(value, ref_value, 4 * EPS[dtype], atol, f"{expr} {target} value vs torch")
        assert_close(value, exact_value, 4 * EPS[dtype], atol, f"{expr} {target} value vs 30 digits")


def test_repeated_keys_keep_their_order():
    # keys 1, 0, 1, 0: ascending takes the positions 1, 3, 0, 2; descending 0, 2, 1, 3 (not 2, 0, 3, 1)
    z, k, y = np.array([[10.0, 20.0, 30.0, 40.0]]), np.array([[1.0, 0.0, 1.0, 0.0]]), np.array([[1.0, 2.0, 3.0, 4.0]])
    for descending, order in ((False, [1, 3, 0, 2]), (True, [0, 2, 1, 3])):
        spec = _spec(f"sum(y*sort_by(z, k, descending={descending}))", y="real", k="real")
        want_value = float(np.sum(y[0] * z[0, order]))
        want_grad = np.empty(4)
        want_grad[order] = y[0]
        value, (grad,) = lf.compile(spec, "numpy").loss_and_grad(z, y, k, reduction="sum")
        assert value == want_value and np.array_equal(grad[0], want_grad)
        t = torch.tensor(z, requires_grad=True)
        out = lf.compile(spec, "torch")(reduction="sum")(t, torch.tensor(y), torch.tensor(k))
        out.backward()
        assert out.item() == want_value and np.array_equal(t.grad[0].numpy(), want_grad)
        exact_value, (exact_grad,) = _exact(spec, [z, y, k])
        assert exact_value[0] == want_value and np.array_equal(exact_grad[0], want_grad)


# -- the language: parsing, printing back, the analysis ---------------------------------------------------------------

@pytest.mark.parametrize("text", ["amax(z) - amin(z)", "sum(logcumsumexp(z))", "sum(y*sort(z, descending=True))",
                                  "sum(y*sort_by(z, y))", "sum(y*sort_by(z, y, descending=True))",
                                  "sum(flip(z)*y)"])
def test_parse_and_print_back(text):
    spec = _spec(text, y="real") if "y" in text else _spec(text)
    again = lf.LossSpec(name="again", expr=E.to_text(spec.sympy), symbols=spec.symbols, reduction="sum")
    assert again.sympy == spec.sympy


@pytest.mark.parametrize("text, error, token", [
    ("sum(sort(z, reverse=True))", UnsafeExpressionError, "reverse"),
    ("sum(sort(z, descending=1))", ParseError, "1"),
    ("sum(sort(z, descending=exec('1')))", ParseError, "exec('1')"),
    ("sum(sort(z, descending=True, descending=False))", ParseError, "descending"),
    ("sum(sort(z, **k))", UnsafeExpressionError, "**"),
    ("sum(sort_by(z, w))", ParseError, "w"),
    ("amax(w)", None, None),
    ("sum(z*amax(1.0))", ParseError, "amax(1.0)"),
    ("sum(logcumsumexp(z, z))", ParseError, "logcumsumexp"),
    ("logcumsumexp(z)", ParseError, "z"),
    ("sum(exp(z, descending=True))", UnsafeExpressionError, "descending"),
])
def test_mistakes_are_refused_naming_the_token(text, error, token):
    symbols = {"z": lf.Var("input", axis="c"), "w": lf.Var("input", axis="d")}
    if error is None:  # a reduction over another axis than z's is fine on its own
        lf.LossSpec(name="ok", expr=text, symbols={"w": symbols["w"]})
        return
    with pytest.raises(error) as info:
        lf.LossSpec(name="bad", expr=text, symbols=symbols)
    assert info.value.token == token
    if token == "reverse":
        assert "descending=True" in str(info.value)


def test_intervals_are_those_of_the_entries():
    spec = lf.LossSpec(name="b", expr="amax(z) + amin(z) + sum(sort(z)) + sum(flip(z))",
                       symbols={"z": lf.Var("input", axis="c", domain="[-2, 3]")})
    bounds = bounds_for(spec)
    z = spec.symbol("z")
    for node in (E.amax(z), E.amin(z), E.axis_sort(z, z, 1), E.flip(z), E.unsort(z, z, 0)):
        got = bounds(node)
        assert (got.lo, got.hi) == (-2.0, 3.0), node
    share = bounds(E.extremum_share(z, E.amax(z)))
    assert (share.lo, share.hi) == (0.0, 1.0)


@pytest.mark.parametrize("text, domain, kinds", [
    ("log(amax(z))", "positive", set()),
    ("log(amax(z))", "real", {"unguarded-log", "division-by-zero"}),
    ("log(amin(z))", "nonnegative", {"unguarded-log", "division-by-zero"}),
    ("1/amax(z)", "real", {"division-by-zero"}),
    ("sum(log(sort(z)))", "positive", set()),
    ("sum(log(sort(z)))", "real", {"unguarded-log", "division-by-zero"}),
    ("exp(amax(z))", "real", {"overflow"}),
    ("sum(exp(logcumsumexp(z)))", "real", {"overflow"}),
    ("sum(logcumsumexp(z))", "real", set()),
])
def test_the_analysis_is_sound_through_the_new_operations(text, domain, kinds):
    spec = lf.LossSpec(name="h", expr=text, symbols={"z": lf.Var("input", axis="c", domain=domain)})
    found = {h.kind for h in lf.check(spec).hazards if h.severity != "info"}
    assert found == kinds


def test_kinks_are_listed_where_the_order_moves_with_the_input():
    def infos(text):
        spec = _spec(text, y="real")
        return [h.expr.func for h in lf.check(spec).hazards if h.kind == "non-differentiable"]

    assert infos("amax(z) + sum(y*z)") == [E.amax]
    assert infos("sum(y*sort(z))") == [E.axis_sort]
    assert infos("sum(logcumsumexp(sort_by(z, y)))") == []  # ordered by a target: one fixed permutation
    # the labels ordered by a prediction alone: the term's gradient is zero everywhere (a step)
    assert "zero-gradient" in lf.check(_spec("sum(y*sort_by(y, z))", y="real")).kinds()


# -- the examples: Crammer-Singer, ListMLE, Lovasz hinge, each against a torch implementation written here ---------


def crammer_singer_reference(z, labels, margin=1.0):
    """max(0, margin + max_{j != y} z_j - z_y): the wrong classes' best score through a masked torch.amax."""
    true = torch.gather(z, -1, labels[..., None])[..., 0]
    wrong = z.masked_fill(torch.nn.functional.one_hot(labels, z.shape[-1]).bool(), -torch.inf)
    return torch.clamp(margin + torch.amax(wrong, -1) - true, min=0.0)


def test_crammer_singer_against_its_torch_implementation():
    spec = example("crammer_singer")
    rng = np.random.default_rng(5)
    z = rng.normal(0, 2, (12, 5))
    z[0] = [0.5, 2.0, 2.0, -1.0, 0.0]  # two wrong classes tie at the maximum: each takes half
    z[1] = [1e4, -1e4, 3.0, 1e4 - 0.5, 0.0]
    z[2] = [-1e4, 1e4, 1e4, 0.0, -1e4]
    labels = rng.integers(0, 5, 12)
    labels[:3] = [0, 0, 3]
    onehot = np.eye(5)[labels]
    for dtype in (np.float64, np.float32):
        arrays = [np.asarray(z, dtype=dtype).astype(np.float64), onehot]
        ref_value, (ref_grad,) = run_reference(lambda z, y: crammer_singer_reference(z, y.argmax(-1)), spec, arrays,
                                               dtype)
        assert ref_grad[0, 1] == ref_grad[0, 2] == 0.5
        exact_value, (exact_grad,) = _exact(spec, arrays)
        # the value is one sum and one max: exact in both but for the rounding of margin + z_j - z_y (atol:
        # 2 eps of the largest score); the gradient is a share, 0, +-1/2 or +-1, exactly
        atol = 2 * EPS[dtype] * np.max(np.abs(arrays[0]), axis=-1)
        for target, (value, (grad,)) in run_targets(spec, arrays, dtype).items():
            assert_close(value, ref_value, 0, atol, f"crammer-singer {target} {dtype.__name__} value")
            assert_close(value, exact_value, 0, atol, f"crammer-singer {target} {dtype.__name__} value vs 30 digits")
            np.testing.assert_array_equal(grad, ref_grad)
            np.testing.assert_array_equal(grad, exact_grad)
    by_index = lf.compile(spec, "torch")(reduction="none")(torch.tensor(z), torch.tensor(labels))
    np.testing.assert_array_equal(by_index.numpy(), crammer_singer_reference(torch.tensor(z), torch.tensor(labels)))


def listmle_reference(s, y):
    """ListMLE as learning-to-rank code writes it: the scores sorted by relevance (stably, most relevant first),
    shifted by their maximum, and each suffix's sum of exps by a flipped cumulative sum."""
    ranked = torch.gather(s, -1, torch.argsort(y, dim=-1, descending=True, stable=True))
    shifted = ranked - torch.amax(ranked, -1, keepdim=True).detach()
    suffix = torch.flip(torch.cumsum(torch.flip(torch.exp(shifted), (-1,)), -1), (-1,))
    return (torch.log(suffix) - shifted).sum(-1)


def mp_listmle(s, y):
    """The same in mpmath, at 30 digits: sum_k log(sum_{j >= k} exp(s_(j))) - s_(k) in the relevance order."""
    order = sorted(range(len(s)), key=lambda i: -y[i])  # Python's sort is stable
    ranked = [mpmath.mpf(float(s[i])) for i in order]
    with mpmath.workdps(30):
        return float(sum(mpmath.log(sum(mpmath.exp(v) for v in ranked[k:])) - ranked[k] for k in range(len(s))))


def _listmle_points():
    rng = np.random.default_rng(9)
    s = rng.normal(0, 2, (10, 6))
    y = rng.integers(0, 4, (10, 6)).astype(float)  # repeated relevance in every row: ties keep the list order
    s[6] = [100.0, -100.0, 100.0, -100.0, 0.0, 50.0]
    s[7] = [-100.0, -100.0, 100.0, 100.0, -100.0, 100.0]
    s[8] = [1e4, -1e4, 0.0, 1e4, -1e4, 5.0]
    s[9] = [-1e4, -1e4, -1e4, -1e4, -1e4, -1e4]
    return s, y


@pytest.mark.parametrize("name", ["listmle", "listmle_sorted"])
def test_listmle_against_its_torch_implementation_finite_at_100_and_1e4(name):
    spec = example(name)
    s, y = _listmle_points()
    if name == "listmle_sorted":  # the same lists, given in their relevance order
        order = np.argsort(-y, axis=-1, kind="stable")
        s, y = np.take_along_axis(s, order, -1), np.tile(-np.arange(6.0), (len(s), 1))
    for dtype in (np.float64, np.float32):
        s32 = np.asarray(s, dtype=dtype).astype(np.float64)
        arrays = [s32, y] if name == "listmle" else [s32]
        reference = listmle_reference if name == "listmle" else (lambda s: listmle_reference(s, -torch.arange(6.0).expand_as(s)))
        # the reference in float64 at the dtype's points: exact enough up to +-100 (at 1e4 its exp underflows)
        ref_value, (ref_grad,) = run_reference(reference, spec, [a[:8] for a in arrays], np.float64)
        exact = np.array([mp_listmle(row, rel) for row, rel in zip(s32, y)])
        scale = 8 * EPS[dtype] * np.sum(np.abs(s32) + 1, axis=-1)  # the terms that cancel: every score and log
        for target, (value, (grad,)) in run_targets(spec, arrays, dtype).items():
            assert np.isfinite(value).all() and np.isfinite(grad).all(), (target, dtype)
            assert_close(value, exact, 0, scale, f"{name} {target} {dtype.__name__} value vs mpmath")
            assert_close(value[:8], ref_value, 0, scale[:8], f"{name} {target} {dtype.__name__} value vs torch")
            # each gradient entry is a sum of softmax weights minus 1: held to 8 eps of the row's scale of scores
            assert_close(grad[:8], ref_grad, 0, scale[:8, None] * np.ones_like(ref_grad), f"{name} {target} grad")
    # written as torch code usually is, the same loss is not finite in float32 at +-100: log(0) of a sum of exps
    # that underflowed (exp(-200) is 0 there)
    naive = listmle_reference(torch.tensor(s[6:8], dtype=torch.float32), torch.tensor(y[6:8], dtype=torch.float32))
    assert not torch.isfinite(naive).all()


def lovasz_hinge_flat(logits, labels):
    """Berman et al.'s binary Lovasz hinge of one image's flattened pixels, written here after their paper's code:
    the errors sorted in decreasing order, dotted with the Lovasz extension's gradient of the Jaccard loss."""
    signs = 2.0 * labels - 1.0
    errors = 1.0 - logits * signs
    errors_sorted, perm = torch.sort(errors, dim=0, descending=True, stable=True)
    gt_sorted = labels[perm]
    gts = gt_sorted.sum()
    intersection = gts - gt_sorted.cumsum(0)
    union = gts + (1.0 - gt_sorted).cumsum(0)
    jaccard = 1.0 - intersection / union
    weights = torch.cat([jaccard[:1], jaccard[1:] - jaccard[:-1]])
    return torch.dot(torch.relu(errors_sorted), weights)


def lovasz_reference(z, y):
    return torch.stack([lovasz_hinge_flat(zi, yi) for zi, yi in zip(z, y)])


def test_lovasz_hinge_against_berman_et_al():
    spec = example("lovasz_hinge")
    rng = np.random.default_rng(13)
    z = rng.normal(0, 2, (10, 7))
    y = (rng.random((10, 7)) < 0.4).astype(float)
    y[0], y[1] = 0.0, 1.0  # no positive pixel (every union is still at least 1), every pixel positive
    z[2], y[2] = [1.0, 1.0, 1.0, -1.0, -1.0, 0.0, 0.0], [1, 1, 0, 0, 0, 1, 0]  # errors that tie
    z[3] = [1e4, -1e4, 3.0, -3.0, 1e4, 0.5, -0.5]
    for dtype in (np.float64, np.float32):
        arrays = [np.asarray(z, dtype=dtype).astype(np.float64), y]
        ref_value, (ref_grad,) = run_reference(lovasz_reference, spec, arrays, np.float64)
        exact_value, (exact_grad,) = _exact(spec, arrays)
        # sums of n products of errors and Jaccard weights (computed as (k + 1)/union here, 1 - I/U there)
        atol = 16 * EPS[dtype] * np.sum(np.abs(arrays[0]) + 1, axis=-1)
        for target, (value, (grad,)) in run_targets(spec, arrays, dtype).items():
            assert_close(value, ref_value, 0, atol, f"lovasz {target} {dtype.__name__} value")
            assert_close(value, exact_value, 0, atol, f"lovasz {target} {dtype.__name__} value vs 30 digits")
            assert_close(grad, ref_grad, 0, 16 * EPS[dtype], f"lovasz {target} {dtype.__name__} gradient")
            assert_close(grad, exact_grad, 0, 16 * EPS[dtype], f"lovasz {target} {dtype.__name__} grad vs 30 digits")


def test_the_examples_check_clean_with_their_kinks_listed():
    kinks = {"crammer_singer": {E.amax}, "listmle": set(), "listmle_sorted": set(),
             "lovasz_hinge": {E.axis_sort, E.maximum}}
    for name, funcs in kinks.items():
        report = lf.check(example(name))
        assert report.ok, name
        assert {h.kind for h in report.hazards} <= {"non-differentiable"}, name
        assert {h.expr.func for h in report.hazards} == funcs, name


@pytest.mark.parametrize("name", ["crammer_singer", "listmle", "listmle_sorted", "lovasz_hinge"])
def test_the_examples_verify(name):
    # both targets against the 30-digit reference and each other, torch's gradcheck and gradgradcheck of the
    # derived backward (the logcumsumexp gradient's log of a zero part is finite, so its double backward is too)
    report = lf.verify(example(name))
    assert report.ok, [row for row in report.rows if not row.ok]
    assert any("gradgradcheck" in row.name for row in report.rows)
