"""Symbolic gradients against independent differentiation.

The reference is a central finite difference evaluated in 40-digit
arithmetic (mpmath through SymPy's evalf) on the *expanded* loss, in which
every axis operation is written out element by element (tests/elementwise.py).
It shares no code with lossforge's reverse-mode axis handling, and at 40
digits a step of 1e-12 leaves a truncation error near 1e-24, so agreement to
1e-12 relative is a real check, not a tolerance chosen to pass.
"""

from __future__ import annotations

import random

import pytest
import sympy

import lossforge as lf
from lossforge.errors import RoleError

from .elementwise import element_symbol, expand

DPS = 40
STEP = sympy.Float("1e-12", DPS)
N = 3  # vector length used for axis symbols

V = lf.Var


def _spec(expr, **symbols):
    return lf.LossSpec(name="t", expr=expr, symbols=symbols)


CASES = {
    "mse": _spec("(pred - target)**2", pred=V("input"), target=V("target")),
    "many_functions": _spec(
        "sigmoid(a*b) + log1p(exp(-abs(a))) + tanh(b)*cosh(a/10) + softplus(a - 2*b) + sign(b)",
        a=V("input"),
        b=V("input"),
    ),
    "cost_sensitive": lf.load("examples/cost_sensitive.toml"),
    "huber_where": _spec(
        "where(abs(p - t) <= delta, (p - t)**2/2, delta*(abs(p - t) - delta/2))",
        p=V("input"),
        t=V("target"),
        delta=V("param", default=1.0, domain="positive"),
    ),
    "xlogy_expm1": _spec(
        "xlogy(t, q) + expm1(x/5) - log(q)", q=V("input", domain="positive"), t=V("target"), x=V("input")
    ),
    "max_min": _spec("max(0, m - s*t)**2 + min(s, t)", s=V("input"), t=V("target"), m=V("param", default=1.0)),
    "sqrt_eps": _spec("sqrt(x**2 + eps)", x=V("input"), eps=V("param", default=1e-3, domain="positive")),
    "clamp_params": _spec(
        "clamp(x, lo, hi)**2 * x", x=V("input"), lo=V("param", default=-0.5), hi=V("param", default=0.5)
    ),
    "softmax_ce": _spec("logsumexp(z) - sum(y*z)", z=V("input", axis="c"), y=V("target", axis="c")),
    "nll_of_log_softmax": _spec("-sum(y*(z - logsumexp(z)))", z=V("input", axis="c"), y=V("target", axis="c")),
    "pairwise_norm": _spec("norm(a - b + eps)", a=V("input", axis="f"), b=V("input", axis="f"), eps=V("param", default=1e-6)),
    "dice": _spec(
        "1 - (2*sum(p*t) + smooth)/(sum(p) + sum(t) + smooth)",
        p=V("input", axis="px"),
        t=V("target", axis="px"),
        smooth=V("param", default=1.0, domain="positive"),
    ),
    "emd": _spec("sum(abs(cumsum(p - q)))", p=V("input", axis="bin"), q=V("target", axis="bin")),
    "scalar_inside_reduction": _spec(
        "mean(z**2)*x + sum(z*sum(z)) + sum(z*sigmoid(x))", z=V("input", axis="c"), x=V("input")
    ),
    "cumsum_of_constant_upstream": _spec("x*sum(cumsum(z)) + sum(cumsum(softplus(z)))", z=V("input", axis="c"),
                                         x=V("input")),
    "per_sample_inside_mean": _spec("mean(z - x)**2 + x*sum(z)", z=V("input", axis="c"), x=V("input")),
    "nested_cumsum": _spec("sum(cumsum(cumsum(z))**2) + logsumexp(cumsum(z))", z=V("input", axis="c")),
    "cosine": _spec("sum(a*b)/(norm(a)*norm(b))", a=V("input", axis="f"), b=V("input", axis="f")),
}


def _point(spec: lf.LossSpec, rng: random.Random) -> dict[sympy.Symbol, sympy.Float]:
    """Random values for every (expanded) symbol, inside each domain, away from kinks."""
    out = {}
    for name, var in spec.symbols.items():
        sym = spec.symbol(name)
        dom = var.domain
        elems = [element_symbol(sym, k) for k in range(N)] if var.axis else [sym]
        for e in elems:
            if var.role == "param":
                value = var.default
            elif dom.values is not None:
                value = rng.choice(dom.values)
            elif dom.name in ("positive", "nonnegative"):
                value = rng.uniform(0.2, 3.0)
            elif dom.name in ("probability", "simplex"):
                value = rng.uniform(0.05, 0.95)
            else:
                value = rng.uniform(-2.5, 2.5)
            out[e] = sympy.Float(value, DPS)
    return out


def _elements(spec: lf.LossSpec, expr: sympy.Expr) -> list[sympy.Expr]:
    vectors = {spec.symbol(n) for n, v in spec.symbols.items() if v.axis}
    return expand(expr, N, vectors)


def _num(expr: sympy.Expr, point) -> sympy.Float:
    value = expr.xreplace(point).evalf(DPS)
    assert value.is_number, f"did not evaluate to a number: {value}"
    return value


@pytest.mark.parametrize("case", sorted(CASES))
def test_gradient_matches_high_precision_finite_differences(case):
    spec = CASES[case]
    rng = random.Random(case)
    loss = _elements(spec, spec.sympy)[0]
    grads = spec.gradient()
    assert list(grads) == list(spec.inputs)
    for _ in range(3):
        point = _point(spec, rng)
        for name, grad in grads.items():
            var = spec.symbols[name]
            sym = spec.symbol(name)
            grad_elems = _elements(spec, grad)
            for k in range(N if var.axis else 1):
                e = element_symbol(sym, k) if var.axis else sym
                up = {**point, e: point[e] + STEP}
                down = {**point, e: point[e] - STEP}
                fd = (_num(loss, up) - _num(loss, down)) / (2 * STEP)
                got = _num(grad_elems[k], point)
                assert abs(got - fd) <= 1e-12 * max(1, abs(fd)), (case, name, k, got, fd)


def test_softmax_cross_entropy_gradient_is_softmax_minus_target():
    spec = CASES["softmax_ce"]
    z, y = spec.symbol("z"), spec.symbol("y")
    expected = sympy.exp(z - lf.logsumexp(z)) - y
    assert sympy.simplify(spec.gradient()["z"] - expected) == 0


def test_nested_reduction_keeps_the_sum_of_the_target():
    # -sum(y*(z - lse(z))) = sum(y)*lse(z) - sum(y*z): the softmax term is scaled by sum(y), not by y.
    spec = CASES["nll_of_log_softmax"]
    z, y = spec.symbol("z"), spec.symbol("y")
    expected = lf.axis_sum(y) * sympy.exp(z - lf.logsumexp(z)) - y
    assert sympy.expand(spec.gradient()["z"] - expected) == 0


def test_emd_gradient_is_reverse_cumsum_of_sign():
    spec = CASES["emd"]
    p, q = spec.symbol("p"), spec.symbol("q")
    assert spec.gradient()["p"] == lf.language.rev_cumsum(sympy.sign(lf.cumsum(p - q)))


def test_one_gradient_per_input_in_declaration_order():
    spec = _spec("a*t + b**2 + c", b=V("input"), t=V("target"), a=V("input"), c=V("param", default=1.0))
    assert list(spec.gradient()) == ["b", "a"]
    assert spec.gradient("a") == {"a": spec.symbol("t")}


@pytest.mark.parametrize(("name", "role"), [("t", "target"), ("c", "param")])
def test_gradient_for_a_non_input_names_it(name, role):
    spec = _spec("a*t + c", a=V("input"), t=V("target"), c=V("param", default=1.0))
    with pytest.raises(RoleError, match=f"'{name}' is a {role}") as info:
        spec.gradient(name)
    assert info.value.token == name


def test_gradient_for_an_unknown_symbol_names_it():
    spec = _spec("a**2", a=V("input"))
    with pytest.raises(RoleError, match="'zz'"):
        spec.gradient(["a", "zz"])


def test_constants_stay_symbols():
    spec = lf.load("examples/cost_sensitive.toml")
    eps = spec.symbol("eps")
    assert spec.sympy.has(eps)
    assert spec.sympy.has(1 - eps)  # not folded into 0.9999999
    assert spec.gradient()["p"].has(eps)


def test_step_functions_have_zero_derivative():
    spec = _spec("heaviside(x) + sign(x) + where(x > 0, 1, 0)", x=V("input"))
    assert spec.gradient()["x"] == 0


def test_clamp_and_max_follow_torch_subgradients():
    x = sympy.Symbol("x", real=True)
    at_bound = lf.clamp(x, 0, 1).diff(x).subs(x, 0)
    assert at_bound == 1  # torch.clamp passes gradient at the boundary
    relu_at_zero = lf.maximum(0, x).diff(x).subs(x, 0)
    assert relu_at_zero == 0  # torch.relu: subgradient 0 at the kink
    assert sympy.Abs(x).diff(x).subs(x, 0) == 0


def test_a_gradient_at_a_constant_singular_point_is_refused_by_name():
    # xlogy(x, 0) is 0 at x = 0 and -inf elsewhere: its derivative in x holds log(0).
    spec = lf.LossSpec(name="s", expr="x**2 + xlogy(x, 0)", symbols={"x": lf.Var("input")})
    with pytest.raises(lf.DeriveError) as info:
        spec.gradient()
    assert info.value.token == "x" and "'x'" in str(info.value)
    with pytest.raises(lf.LossforgeError):
        lf.check(spec)


def test_extremum_ties_follow_torch():
    # Against a constant: relu's subgradient, 0 at the tie.
    relu = lf.LossSpec(name="r", expr="max(x, 0)", symbols={"x": lf.Var("input")})
    assert relu.gradient()["x"].subs(relu.symbol("x"), 0) == 0
    # Two varying arguments share the tie, as torch.maximum; a whole region of ties stays right.
    both = lf.LossSpec(name="b", expr="max(x, y)", symbols={"x": lf.Var("input"), "y": lf.Var("input")})
    g = both.gradient()
    point = {both.symbol("x"): 1.5, both.symbol("y"): 1.5}
    assert g["x"].subs(point) == sympy.Rational(1, 2) and g["y"].subs(point) == sympy.Rational(1, 2)
    region = lf.LossSpec(name="c", expr="min(max(x, y), x)", symbols={"x": lf.Var("input"), "y": lf.Var("input")})
    g = region.gradient()
    point = {region.symbol("x"): 2.0, region.symbol("y"): -1.0}  # min(max(x, y), x) = x here
    assert g["x"].subs(point) == 1 and g["y"].subs(point) == 0


def test_abs_of_an_argument_sympy_cannot_prove_real_differentiates_as_sign():
    # SymPy would write d|u| through re(u) and im(u), 0/0 at u = 0 and torch.imag on real tensors.
    spec = lf.LossSpec(name="a", expr="abs(xlogy(p, p) + 0.2)", symbols={"p": lf.Var("input", domain="probability")})
    grad = spec.gradient()["p"]
    assert not grad.has(sympy.re, sympy.im)
    p = spec.symbol("p")
    # at p = 1/2, u = 0.5*log(0.5) + 0.2 < 0: the slope is -(log(p) + 1)
    assert grad.subs(p, sympy.Rational(1, 2)).evalf() == pytest.approx(-float(sympy.log(0.5) + 1))
    assert lf.verify(spec).ok
