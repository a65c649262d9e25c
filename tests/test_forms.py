"""The cheaper printed forms (``lossforge/codegen/forms.py``): each rewrite exact, each one applied.

Exact means: the rewritten expression equals the original symbolically, and
numerically against mpmath (50 digits) at ordinary and extreme points, in
float64, within the absolute error the form's summary states (one rounding
of the largest term, 4 ulps of 1 here) and with NaN where the original is NaN.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy

import lossforge as lf
from lossforge import language as E
from lossforge.codegen import forms
from lossforge.codegen.printers import grouped

x = sympy.Symbol("x", real=True)
t = sympy.Symbol("t", real=True)
d = sympy.Symbol("d", positive=True)
g = sympy.Symbol("g", positive=True)

POINTS = [-745.0, -40.0, -20.5, -3.0, -1.0, -1e-8, 0.0, 1e-8, 0.5, 1.0, 3.0, 20.5, 40.0, 700.0]


def _plain(expr):
    """The expression with the printers' grouping removed, for SymPy to compare."""
    return expr.replace(lambda n: isinstance(n, grouped), lambda n: n.args[0])


def _rewritten(expr, lower=None):
    (out,) = forms.cheaper((expr,), lower or {})
    return out


#: sigmoid and softplus as stable NumPy, as the printers write them.
_FUNCTIONS = {"sigmoid": lambda v: np.exp(-np.logaddexp(0.0, -v)), "softplus": lambda v: np.logaddexp(0.0, v),
              "clamp": np.clip}


def _value(expr, point, module):
    args = {x: point, t: 0.25, d: 1.5, g: 2.5}
    if module == "mpmath":
        with mpmath.workdps(50):
            return float(_plain(expr).rewrite(sympy.exp).evalf(50, subs={s: sympy.Float(v, 50) for s, v in args.items()}))
    fn = sympy.lambdify((x, t, d, g), _plain(expr), [_FUNCTIONS, "numpy"])
    with np.errstate(all="ignore"):
        return float(fn(*(np.float64(args[s]) for s in (x, t, d, g))))


def _exact_everywhere(before, after):
    assert after != before, "the form was not applied"
    assert sympy.simplify(_plain(after).rewrite(sympy.exp) - before.rewrite(sympy.exp)) == 0
    for p in POINTS:
        exact = _value(before, p, "mpmath")
        got = _value(after, p, "numpy")
        assert got == pytest.approx(exact, rel=1e-12, abs=4 * np.finfo(np.float64).eps), p


def test_clamp_replaces_the_bounded_select():
    before = E.where(sympy.Abs(x - t) < d, x - t, d * sympy.sign(x - t))
    after = _rewritten(before)
    assert after in (E.clamp(x - t, -d, d), -E.clamp(t - x, -d, d))  # clamp is odd: the same bits either way
    scaled = E.where(sympy.Abs(x) <= d, x / d, sympy.sign(x))  # smooth_l1's gradient: k = 1/d
    assert _rewritten(scaled) in (E.clamp(x, -d, d) / d, -E.clamp(-x, -d, d) / d)
    for e, out in ((before, after), (scaled, _rewritten(scaled))):
        fb = sympy.lambdify((x, t, d), e.rewrite(sympy.Piecewise), "numpy")
        fa = sympy.lambdify((x, t, d), _plain(out), [_FUNCTIONS, "numpy"])
        for p in [*POINTS, math.inf, -math.inf, 1.5, -1.5, 1.75]:
            assert fa(p, 0.25, 1.5) == fb(p, 0.25, 1.5), p  # the same float, bit for bit


def test_the_huber_select_is_the_clamp_times_a_half_step():
    for k in (sympy.S.One, 1 / d):  # huber, smooth_l1 (beta = d)
        before = E.where(sympy.Abs(x - t) < d, k * (x - t) ** 2 / 2, k * d * (sympy.Abs(x - t) - d / 2))
        after = _rewritten(before)
        assert not after.has(E.where) and after.has(E.clamp)
        fb = sympy.lambdify((x, t, d), before.rewrite(sympy.Piecewise), "numpy")
        fa = sympy.lambdify((x, t, d), _plain(after), [_FUNCTIONS, "numpy"])
        for p in [*POINTS, math.inf, -math.inf, 1.5, -1.5, 1.75, 1e8]:
            exact = _value(before, p, "mpmath") if math.isfinite(p) else fb(p, 0.25, 1.5)
            assert fa(p, 0.25, 1.5) == pytest.approx(exact, rel=2 * np.finfo(np.float64).eps), p
            assert fa(p, 0.25, 1.5) == pytest.approx(fb(p, 0.25, 1.5), rel=2 * np.finfo(np.float64).eps), p
        with np.errstate(invalid="ignore"):
            assert math.isnan(fa(math.nan, 0.25, 1.5))


def test_clamp_needs_a_bound_known_nonnegative_and_a_matching_branch():
    free = sympy.Symbol("free", real=True)  # may be negative: where(|u| < -1, ...) is never the clamp
    assert _rewritten(E.where(sympy.Abs(x) < free, x, free * sympy.sign(x))).has(E.where)
    assert _rewritten(E.where(sympy.Abs(x) < free, x, free * sympy.sign(x)), {free: sympy.Float(0.0)}).has(E.clamp)
    assert _rewritten(E.where(sympy.Abs(x) < d, x, 2 * d * sympy.sign(x))).has(E.where)  # not continuous: kept
    assert _rewritten(E.where(sympy.Abs(x) < d, x**2, d * sympy.sign(x))).has(E.where)


def test_one_sigmoid_per_argument():
    before = t * E.sigmoid(-x) + (1 - t) * E.sigmoid(x)
    after = _rewritten(before)
    assert after.atoms(E.sigmoid) == {E.sigmoid(x)}
    _exact_everywhere(before, after)
    alone = E.sigmoid(-x)  # nothing to share: kept
    assert _rewritten(alone) == alone


def test_one_softplus_per_argument():
    before = t * E.softplus(-x) + (1 - t) * E.softplus(x)
    after = _rewritten(before)
    assert after.atoms(E.softplus) == {E.softplus(x)}
    # softplus(x) - x loses softplus(-x) below one ulp of x (x = 40: 4e-18 against 40): an absolute
    # error of one rounding of x, as torch's binary_cross_entropy_with_logits has
    for p in POINTS:
        exact, got = _value(before, p, "mpmath"), _value(after, p, "numpy")
        assert got == pytest.approx(exact, rel=1e-12, abs=2 * abs(p) * np.finfo(np.float64).eps), p


def test_power_step_shares_the_lower_power():
    u = E.sigmoid(x)
    before = u**g * t + u ** (g - 1) * (1 - t)
    after = _rewritten(before, {g: sympy.Float(1.0)})
    assert len([p for p in _plain(after).atoms(sympy.Pow) if not p.exp.is_Number]) == 1
    _exact_everywhere(before, after)
    assert _rewritten(before) == before  # g - 1 may be negative (0**(g - 1) is inf): kept


def test_common_factor_is_taken_out_and_shared():
    before = 2 * x - 2 * t
    after = _rewritten(before)
    assert after == 2 * grouped(x - t)
    _exact_everywhere(before, after)


def test_a_clamps_slope_compares_with_the_clamp():
    eps = sympy.Symbol("eps", positive=True)
    c = E.clamp(x, eps, 1 - eps)
    before = t * E.where(sympy.And(x >= eps, x <= 1 - eps), 1, 0) / c + sympy.log(c)
    (after,) = forms.cheaper((before,), {eps: sympy.Float(1e-30)}, {eps: sympy.Float(0.5)})
    assert after.has(sympy.Eq(c, x)) and not after.has(sympy.And)
    fb = sympy.lambdify((x, t, eps), before.rewrite(sympy.Piecewise), "numpy")
    fa = sympy.lambdify((x, t, eps), after.rewrite(sympy.Piecewise), "numpy")
    for e in (1e-7, 0.25, 0.5):  # lo = hi at eps = 0.5: the one point inside, u = 0.5
        for p in [-1.0, 0.0, 1e-8, 1e-7, 0.25, 0.5, 1 - 1e-7, 1.0, 2.0, math.inf, -math.inf]:
            assert fa(p, 0.25, e) == fb(p, 0.25, e), (p, e)  # the same float, bit for bit
    with np.errstate(invalid="ignore"):
        assert math.isnan(fa(math.nan, 0.25, 0.25)) and math.isnan(fb(math.nan, 0.25, 0.25))
    # without an upper bound on eps, lo <= hi is not known (eps = 0.6: no u is inside, but clamp returns 0.4 = u at 0.4)
    assert forms.cheaper((before,), {eps: sympy.Float(1e-30)})[0] == before
    assert _rewritten(t * E.where(sympy.And(x >= eps, x <= 1 - eps), 1, 0)).has(sympy.And)  # no clamp computed


def test_terms_that_cancel_are_dropped():
    # bce_logits' gradient once sigmoid(-x) is 1 - sigmoid(x): the t*sigmoid(x) terms cancel
    before = (1 - t) * E.sigmoid(x) - t * E.sigmoid(-x)
    after = _rewritten(before)
    assert _plain(after) == E.sigmoid(x) - t
    _exact_everywhere(before, after)
    value = t * E.softplus(-x) + (1 - t) * E.softplus(x)  # its value: softplus(x) - t*x, one softplus
    assert _plain(_rewritten(value)) == E.softplus(x) - t * x
    # heaviside(tau*(t - x) - (t - x)*(tau - 1)), quantile's, is heaviside(t - x): a function's argument too
    tau = sympy.Symbol("tau", positive=True)
    assert _rewritten(E.heaviside(tau * (t - x) - (t - x) * (tau - 1))) == E.heaviside(t - x)


def test_terms_that_would_merge_are_kept():
    # t*(1 - s) + (1 - t)*s distributed is t + s - 2*t*s: at t = 1 it is 1 - s as a difference of numbers near 2
    # (s = 1 - 1e-9: 1e-9 with an error of 2e-16, where the written form computes 1 - s exactly), so it stays
    s = E.sigmoid(x)
    before = t * (1 - s) + (1 - t) * s
    assert _rewritten(before) == before
    assert _rewritten((x - t) * (x + t) + 1) == (x - t) * (x + t) + 1  # x**2 - t**2 would cancel digits
    with_function = E.softplus(x * (1 + t) - x * t) + t  # distributing never reaches inside a call ...
    assert _rewritten(with_function).has(E.softplus(x))  # ... but the argument is a sum of its own: rewritten


def test_log_coshs_gradient_is_one_tanh():
    e = sympy.exp(-2 * sympy.Abs(x))
    before = sympy.sign(x) - 2 * sympy.sign(x) * e / (e + 1)
    after = _rewritten(before)
    assert after == sympy.tanh(x)
    y = sympy.Symbol("y", positive=True)  # SymPy proves it case by case: x > 0, x < 0 (and x = 0: both 0)
    for side in (y, -y):
        assert sympy.simplify((after - before).subs(x, side).rewrite(sympy.exp)) == 0
    assert (after - before).subs(x, 0) == 0
    for p in POINTS:
        exact, got = _value(before, p, "mpmath"), _value(after, p, "numpy")
        assert got == pytest.approx(exact, rel=1e-12, abs=4 * np.finfo(np.float64).eps), p
    assert _rewritten(-before) == -sympy.tanh(x)  # a target's gradient
    assert _rewritten(sympy.sign(x) - 2 * sympy.sign(x) * e / (e + 2)) != sympy.tanh(x)  # not the pattern: kept
    code = lf.generate(lf.builtin("log_cosh"), "torch").split("def _log_cosh_targeted_value_and_grads(")[1]
    code = code.split("return value, grads")[0]
    assert code.count("torch.tanh(") == 1 and "_sign(" not in code  # one tanh, shared by both gradients


def test_forms_are_in_the_generated_code():
    src = {n: lf.generate(lf.builtin(n), "torch") for n in ("huber", "smooth_l1", "bce_logits", "focal", "mse")}
    assert "torch.clamp(" in src["huber"] and "_sign(" not in src["huber"] and "torch.where(" not in src["huber"]
    assert "torch.clamp(" in src["smooth_l1"]
    for name in ("bce_logits", "focal"):
        code = src[name].split(f"def _{name}_value_and_grads(")[1].split("return value, grads")[0]
        assert code.count("torch.sigmoid(") == 1 and code.count("functional.softplus(") == 1, name
    joint = src["focal"].split("def _focal_value_and_grads(")[1].split("return value, grads")[0]
    assert joint.count("** (gamma - 1)") == 1 and "**gamma" not in joint and "** gamma" not in joint
    assert "2*(_t0)" not in src["mse"] and "_times(2, _t0, scale)" in src["mse"]  # the factor joins the 2


def test_every_form_is_named_and_described():
    names = [f.name for f in forms.FORMS]
    assert len(set(names)) == len(names) >= 5
    assert all(f.summary and f.types for f in forms.FORMS)
