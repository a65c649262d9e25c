"""Hazard rules: one fixture per rule, bad cases that must fire, then near-misses that must not.

Cases are written as a spec would be: an expression and its symbols, in a
shorthand ``"x: real, p: probability, y: binary target, z[c]: real, eps=1e-7: positive"``
(a name, an optional ``[axis]``, an optional ``=default`` for params, a domain, and
``target``). Tests assert on kinds, never on message text.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import lossforge as lf
from lossforge.analysis.hazards import KINDS, RULES
from lossforge.analysis.intervals import of_domain
from lossforge.errors import UnknownNameError

from . import strategies


def make(expr: str, decl: str, accept=None) -> lf.LossSpec:
    symbols = {}
    for item in decl.split(","):
        head, dom = (part.strip() for part in item.split(":"))
        role = "input"
        if dom.endswith(" target"):
            dom, role = dom[: -len(" target")].strip(), "target"
        default = None
        if "=" in head:
            head, value = head.split("=")
            default, role = float(value), "param"
        axis = None
        if "[" in head:
            head, axis = head[:-1].split("[")
        if dom.startswith("["):
            dom = [float(v) for v in dom[1:-1].split(";")]
        symbols[head.strip()] = lf.Var(role, default=default, domain=dom, axis=axis)
    return lf.LossSpec(name="case", expr=expr, symbols=symbols, accept=accept or {})


def kinds(spec, severity=None) -> set[str]:
    return {h.kind for h in lf.check(spec).hazards if severity is None or h.severity == severity}


# kind -> (bad cases, OK near-misses); each case (expr, declaration)
FIXTURES = {
    "unguarded-log": (
        [
            ("-(y*log(p) + (1 - y)*log(1 - p))", "p: probability, y: binary target"),
            ("log(p)", "p: probability"),
            ("log(1 - p)", "p: probability"),
            ("log(x)", "x: nonnegative"),
            ("log(p + 1e-7)", "p: real"),
            ("log(x**2)", "x: real"),
            ("x*log(x)", "x: probability"),
            ("log(abs(x))", "x: real"),
            ("log(tanh(x))", "x: nonnegative"),
            ("log1p(-p)", "p: probability"),
            ("xlogy(t, x)", "x: real, t: probability target"),
            ("log(softplus(x))", "x: real"),
            ("log(x - t)", "x: real, t: real target"),
            ("log(1 - exp(-x))", "x: nonnegative"),
            ("t*log(t/p)", "p: probability, t: probability target"),
            ("log(p/(1 - p))", "p: probability"),
            ("log(norm(z))", "z[c]: real"),
            ("log(mean(z**2))", "z[c]: real"),
            ("-sum(t*log(p))", "p[c]: simplex, t[c]: onehot target"),
            ("log(x)", "x: binary"),
            ("where(x >= 1, log(x - 1), 0)", "x: real"),
            ("log(erfc(x))", "x: real"),  # erfc(x) is 0 in float32 from x = 9.2 on
            ("log(erfc(x))", "x: [0; 10]"),
            ("log(1 + erf(x))", "x: real"),  # erf(x) is -1.0 in float32 below x = -3.9
            ("log(erf(x))", "x: nonnegative"),
            ("log(acos(x))", "x: [-1; 1]"),  # acos(1) = 0
            ("log(sin(x))", "x: [0.5; 4]"),  # sin(pi) = 0
            ("log(lgamma(x))", "x: [1.5; 3]"),  # lgamma(2) = 0
        ],
        [
            ("log(clamp(p, eps, 1 - eps))", "p: probability, eps=1e-7: [1e-12; 0.1]"),
            ("log(p + eps)", "p: probability, eps=1e-7: positive"),
            ("log(p + 1e-7)", "p: probability"),
            ("log(x)", "x: positive"),
            ("log(1 + x**2)", "x: real"),
            ("log(exp(-abs(x)) + 1)", "x: real"),
            ("xlogy(t, t) - t*z", "z: real, t: probability target"),
            ("xlogy(p, p) + xlogy(1 - p, 1 - p)", "p: probability"),
            ("log(max(p, 1e-7))", "p: probability"),
            ("where(x > 0, log(x), 0)", "x: real"),
            ("log(2 + tanh(x))", "x: real"),
            ("where(x > 1, log(x - 1), 0)", "x: real"),
            ("where(x - t > 0, log(x - t), 0)", "x: real, t: real target"),
            ("-t*log(p)", "p: [0.001; 1], t: binary target"),
            ("log(sigmoid(x) + eps)", "x: real, eps=1e-6: [1e-6; 1]"),
            ("log(erfc(x))", "x: [-3; 3]"),
            ("log(erfc(x))", "x: [-100; 9]"),
            ("log(erf(x))", "x: positive"),  # erf(1e-30) = 1.1e-30, a float32 normal
            ("log(2 + cos(x))", "x: real"),
            ("log(acos(tanh(x)*0.5))", "x: real"),
            ("log(sin(x))", "x: [0.5; 3]"),
            ("log(atan(x))", "x: positive"),
            ("log(lgamma(x))", "x: [3; 10]"),
        ],
    ),
    "overflow": (
        [
            ("exp(x)", "x: real"),
            ("log(1 + exp(x))", "x: real"),
            ("1/(1 + exp(-x))", "x: real"),
            ("cosh(x)", "x: real"),
            ("exp(x) - t*x", "x: real, t: nonnegative target"),
            ("exp(exp(x))", "x: [0; 10]"),
            ("x**2/s", "x: real, s: [1e-30; 1]"),
            ("exp(x/2)", "x: [-1000; 1000]"),
            ("x**100", "x: real"),
            ("cosh(z)/x", "z: [0; 80], x: positive"),
            ("x + expm1(t)", "x: real, t: nonnegative target"),  # overflow of a target's own term  # 2.7e34 and 1e30, each finite: their product is not
            ("exp(x)", "x: [0; 100]"),
            ("exp(x**2)", "x: real"),
            ("sum(y*exp(z)/sum(exp(z)))", "z[c]: real, y[c]: onehot target"),
            ("exp(2*x)/(1 + exp(2*x))", "x: real"),
            ("digamma(x)", "x: positive"),  # its gradient polygamma(1, x) is 1e60 at x = 1e-30
            ("digamma(x)", "x: [1e-40; 1]"),  # digamma itself: -1e40
            ("lgamma(x)", "x: [1; 1e38]"),  # 8.4e38 at 1e37
            ("y*mu**(-p)", "mu: positive, y: real target, p=0.5: [0.1; 0.9]"),  # its gradient: mu**(-1.9) at 1e-30
            ("-y*mu**(1 - p)/(1 - p) + mu**(2 - p)/(2 - p)", "mu: positive, y: nonnegative target, p=1.5: [1.1; 1.9]"),
        ],
        [
            ("exp(-x**2)", "x: real"),
            ("exp(x)", "x: [0; 10]"),
            ("exp(-abs(x))", "x: real"),
            ("softplus(x)", "x: real"),
            ("sigmoid(x)", "x: real"),
            ("tanh(x)", "x: real"),
            ("x**4", "x: real"),
            ("cosh(x)", "x: [-5; 5]"),
            ("logsumexp(z) - sum(y*z)", "z[c]: real, y[c]: onehot target"),
            ("exp(p)", "p: probability"),
            ("sqrt(sum((a - b)**2) + 1e-6)", "a[f]: real, b[f]: real"),
            ("sum(a*b)/sqrt((sum(a**2) + 1e-12)*(sum(b**2) + 1e-12))", "a[f]: real, b[f]: real"),  # correlated
            ("sqrt(x - t)", "x: real, t: real target"),
            ("sum(y*exp(z - logsumexp(z)))", "z[c]: real, y[c]: onehot target"),
            ("(x - t)**2*exp(-v) + v", "x: real, t: real target, v: [-10; 10]"),
            ("where(x > 1, 1/(x - 1), 0)", "x: real"),
            ("(log1p(x) - log1p(t))**2", "x: real, t: nonnegative target"),  # its -inf is unguarded-log's
            ("digamma(x)", "x: [1e-6; 1e6]"),
            ("lgamma(x)", "x: positive"),  # lgamma(1e-30) = 69; its gradient digamma(1e-30) = -1e30
            ("lgamma(x)", "x: [1; 1e30]"),
            ("atan(x)", "x: real"),
            ("exp(erf(x)) + exp(cos(x))", "x: real"),
            ("exp(sum(y*z) - logsumexp(z))", "z[c]: real, y[c]: onehot target"),  # the argument is <= 0
            ("sum(y*exp(k*(z - logsumexp(z))))", "z[c]: real, y[c]: onehot target, k=0.5: [0.1; 1]"),
            ("y*mu**(-p)", "mu: [0.01; 100], y: real target, p=0.5: [0.1; 0.9]"),
        ],
    ),
    "division-by-zero": (
        [
            ("1/x", "x: real"),
            ("1/(1 - p)", "p: probability"),
            ("t/sigmoid(x)", "x: real, t: real target"),
            ("(x - t)**2/(x**2)", "x: real, t: real target"),
            ("x/sum(p)", "x: real, p[c]: probability"),
            ("1/softplus(x)", "x: real"),
            ("1/sqrt(x)", "x: nonnegative"),
            ("1/norm(z)", "z[c]: real"),
            ("sum(a*b)/(norm(a)*norm(b))", "a[f]: real, b[f]: real"),
            ("1/tanh(x)", "x: real"),
            ("sigmoid(x)**(-1)", "x: real"),
            ("(x - t)**2/v", "x: real, t: real target, v: nonnegative"),
            ("1/(p*(1 - p))", "p: probability"),
            ("lgamma(x)", "x: real"),  # poles at 0, -1, -2, ...
            ("lgamma(p)", "p: probability"),
            ("digamma(x)", "x: nonnegative"),
            ("lgamma(x - 1)", "x: positive"),
            ("1/cos(x)", "x: real"),
            ("1/sin(x)", "x: [-1; 1]"),
            ("1/erfc(x)", "x: real"),
            ("-log(erfc(x))", "x: [-3; 100]"),  # and its gradient: exp(-x**2)/erfc(x)
        ],
        [
            ("1/(x**2 + eps)", "x: real, eps=1e-6: [1e-6; 1]"),
            ("1/(1 + exp(-x))", "x: [-10; 10]"),
            ("t/(sigmoid(x) + 1)", "x: real, t: real target"),
            ("x/t", "x: real, t: sign target"),
            ("1/x", "x: [0.5; 2]"),
            ("1/sum(y)*x", "x: real, y[c]: onehot target"),
            ("where(x > 0, 1/x, 0)", "x: real"),
            ("where(x > 1, 1/(x - 1), 0)", "x: real"),
            ("where(x < -2, 1/(x + 2), 0)", "x: real"),
            ("sqrt(x)", "x: nonnegative"),
            ("norm(a - b)", "a[f]: real, b[f]: real"),
            ("x/(abs(x) + eps)", "x: real, eps=1e-6: [1e-6; 1]"),
            ("x**2/(2*s) + log(s)/2", "x: real, s: [0.01; 100]"),
            ("lgamma(x)", "x: positive"),
            ("lgamma(1 + x**2) + digamma(1 + p)", "x: real, p: probability"),
            ("1/cos(x)", "x: [-1; 1]"),
            ("1/(2 + sin(x))", "x: real"),
            ("1/erfc(x)", "x: [-3; 3]"),
            ("1/atan(x)", "x: [1; 10]"),
            ("1/(sum(p) + sum(t) - sum(p*t) + smooth)", "p[c]: probability, t[c]: probability target, smooth=1: [0.01; 10]"),
        ],
    ),
    "sqrt-at-zero": (
        [
            ("sqrt(x)", "x: nonnegative"),
            ("sqrt(sum((a - b)**2))", "a[f]: real, b[f]: real"),
            ("norm(a - b)", "a[f]: real, b[f]: real"),
            ("sqrt(x**2 + y**2)", "x: real, y: real"),
            ("sqrt(p)", "p: probability"),
            ("x**0.5", "x: nonnegative"),
            ("sqrt(1 - p**2)", "p: probability"),
            ("sum(a*b)/(norm(a)*norm(b) + 1e-8)", "a[f]: [-1; 1], b[f]: [-1; 1]"),
            ("where(t <= x, sqrt(x - t), 0)", "x: real, t: real target"),
            ("sqrt((x - t)**2 + eps**2)", "x: real, t: real target, eps=1e-3: positive"),  # 1e-30**2 == 0 in float32
            ("norm(z)", "z[c]: positive"),  # its squares underflow: norm([1e-30, 1e-30]) == 0 in float32
            ("acos(x)", "x: [-1; 1]"),  # d acos(x)/dx = -1/sqrt(1 - x**2) is infinite at +-1
            ("acos(tanh(x))", "x: real"),  # tanh(x) is 1.0 in float32 from x = 9
            ("acos(clamp(x, -1 + 1e-8, 1 - 1e-8))", "x: real"),  # 1 - 1e-8 is 1.0 in float32
            ("acos(p)", "p: probability"),
        ],
        [
            ("sqrt(x**2 + eps)", "x: real, eps=1e-6: [1e-6; 1]"),
            ("sqrt(s + 1e-6)", "s: nonnegative"),
            ("sqrt(x)", "x: [1; 4]"),
            ("sqrt(1 + x**2)", "x: real"),
            ("abs(x)", "x: real"),
            ("where(t < x, sqrt(x - t), 0)", "x: real, t: real target"),
            ("sqrt((x - t)**2 + eps**2)", "x: real, t: real target, eps=1e-3: [1e-6; 1]"),
            ("norm(z)", "z[c]: [1e-6; 1]"),
            ("acos(tanh(x)*0.5)", "x: real"),
            ("acos(clamp(x, -1 + eps, 1 - eps))", "x: real, eps=1e-7: [1e-7; 0.1]"),
            ("cos(acos(clamp(c, -1 + eps, 1 - eps)) + m)", "c: [-1; 1], m=0.5: [0; 1], eps=1e-7: [1e-7; 0.1]"),
            ("acos(p)", "p: [0; 0.999]"),
            ("acos(m)*x", "x: real, m=0.5: [-1; 1]"),  # a param's acos has no gradient
        ],
    ),
    "pow-domain": (
        [
            ("x**0.5 + x", "x: real"),
            ("x**1.5", "x: real"),
            ("p**(-0.5) + p**(-1.5)", "p: probability"),
            ("(1 - p)**gamma", "p: probability, gamma=0.5: [0; 5]"),
            ("x**g", "x: real, g=0.5: [0.1; 3]"),
            ("sqrt(x)", "x: real"),
            ("x**(1/3)", "x: real"),
            ("acos(x)", "x: real"),  # NaN outside [-1, 1]
            ("acos(2*tanh(x))", "x: real"),
            ("acos(2*p)", "p: probability"),
        ],
        [
            ("x**1.5", "x: nonnegative"),
            ("x**2 + x**3", "x: real"),
            ("(1 - p)**gamma", "p: probability, gamma=2: [1; 10]"),
            ("abs(x)**0.5 * 0 + x**2", "x: real"),
            ("s**(-1.5)", "s: [1; 10]"),
            ("acos(tanh(x)*0.5)", "x: real"),
            ("acos(clamp(x, -1, 1))", "x: real"),  # at +-1 it is sqrt-at-zero's, not NaN
            ("acos(cos(x))", "x: real"),
            ("acos(sin(x)*0.9)", "x: real"),
        ],
    ),
    "log-sum-exp": (
        [
            ("log(sum(exp(z))) - sum(y*z)", "z[c]: real, y[c]: onehot target"),
            ("log(exp(a) + exp(b))", "a: real, b: real"),
            ("log(sum(exp(z*x)))", "z[c]: real, x: real"),
            ("-sum(y*log(exp(z)/sum(exp(z))))", "z[c]: real, y[c]: onehot target"),
        ],
        [
            ("logsumexp(z) - sum(y*z)", "z[c]: real, y[c]: onehot target"),
            ("log(sum(exp(p)))", "p[c]: probability"),
            ("log(sum(exp(tanh(z))))", "z[c]: real"),
        ],
    ),
    "log-sigmoid": (
        [
            ("-(y*log(sigmoid(x)) + (1 - y)*log(1 - sigmoid(x)))", "x: real, y: binary target"),
            ("log(sigmoid(x))", "x: real"),
            ("log(1 - sigmoid(x))", "x: real"),
            ("log(1/(1 + exp(-x)))", "x: real"),
            ("log(exp(x)/(1 + exp(x)))", "x: real"),
        ],
        [
            ("y*softplus(-x) + (1 - y)*softplus(x)", "x: real, y: binary target"),
            ("log(sigmoid(x))", "x: [-5; 5]"),
            ("sigmoid(x)", "x: real"),
            ("-softplus(-x)", "x: real"),
            ("log(sigmoid(x))", "x: [-50; 50]"),  # sigmoid(-50) = 1.9e-22 > 0 in float32; it saturates below -103
        ],
    ),
    "zero-gradient": (
        [
            ("-(y*log(clamp(p, 1e-7, 1)) + (1 - y)*log(clamp(1 - p, 1e-7, 1))) + 0.1*y*heaviside(0.5 - p)",
             "p: probability, y: binary target"),
            ("heaviside(x)", "x: real"),
            ("(x - t)**2 + where(x > t, 1, 0)", "x: real, t: real target"),
            ("sign(x - t) + abs(x)", "x: real, t: real target"),
            ("sum(heaviside(z)*y) + sum(z**2)", "z[c]: real, y[c]: real target"),
        ],
        [
            ("sign(x)*x", "x: real"),
            ("where(x > 0, x, 0)", "x: real"),
            ("max(0, 1 - t*x)", "x: real, t: sign target"),
            ("heaviside(t)*x", "x: real, t: real target"),
            ("(x - t)**2 * where(t > 0, 2, 1)", "x: real, t: real target"),
            ("sign(x)*(1 - exp(-abs(x)))", "x: real"),  # distributed, sign(x) alone would have no gradient
            ("where(x > 0, 1, -1)*(1 - exp(-abs(x)))", "x: real"),
            ("where(x > 0, 1, -1)*u", "x: real, u: real"),
        ],
    ),
    "cancellation": (
        [
            ("log(1 + x)", "x: [0; 1]"),
            ("exp(x) - 1", "x: real"),
            ("1 - exp(-x**2)", "x: real"),
            ("log(1 + x**2)", "x: real"),
            ("exp(v)/2 - 1/2", "v: real"),  # as the gradient of exp(v)/2 - v/2 writes exp(v) - 1
            ("exp(v)/2 - v/2", "v: real"),  # its gradient warns as that of exp(v) - v does
        ],
        [
            ("log1p(x)", "x: [0; 1]"),
            ("exp(v)/2 - 1", "v: real"),
            ("expm1(x)", "x: real"),
            ("log(2 + x)", "x: [0; 1]"),
            ("exp(x) - 2", "x: real"),
            ("log(1 + x)", "x: [1; 10]"),
            ("log(1 - p + eps)", "p: probability, eps=1e-7: [1e-7; 1]"),
            ("-(y*log(p + eps) + (1 - y)*log(1 - p + eps))", "p: probability, y: binary target, eps=1e-7: [1e-7; 1]"),
        ],
    ),
    "non-differentiable": (
        [
            ("abs(x - t)", "x: real, t: real target"),
            ("max(0, 1 - t*x)", "x: real, t: sign target"),
            ("min(x, 1)", "x: real"),
            ("clamp(x, -1, 1)", "x: real"),
            ("where(abs(x) < 1, x**2/2, abs(x) - 0.5)", "x: real"),
            ("x*where(x > 0, 2, 1)", "x: real"),  # a step times a varying factor: its slope jumps
        ],
        [
            ("(x - t)**2", "x: real, t: real target"),
            ("softplus(x)", "x: real"),
            ("abs(t)*x", "x: real, t: real target"),
            ("where(t > 0, x, -x)", "x: real, t: real target"),
            ("where(t > 0, 2, 1)*x", "x: real, t: real target"),
        ],
    ),
}


def test_one_fixture_per_rule():
    assert set(FIXTURES) == set(KINDS)
    assert [r.kind for r in RULES] == list(KINDS)


@pytest.mark.parametrize(("kind", "expr", "decl"), [(k, e, d) for k, (bad, _) in FIXTURES.items() for e, d in bad])
def test_bad_cases_fire(kind, expr, decl):
    assert kind in kinds(make(expr, decl)), expr


@pytest.mark.parametrize(("kind", "expr", "decl"), [(k, e, d) for k, (_, ok) in FIXTURES.items() for e, d in ok])
def test_ok_near_misses_do_not_fire(kind, expr, decl):
    assert kind not in kinds(make(expr, decl)), expr


SAFE_IDIOMS = [
    ("log(clamp(p, eps, 1 - eps))", "p: probability, eps=1e-7: [1e-12; 0.1]"),
    ("y*softplus(-x) + (1 - y)*softplus(x)", "x: real, y: binary target"),
    ("logsumexp(z) - sum(y*z)", "z[c]: real, y[c]: onehot target"),
    ("sqrt(s + eps)", "s: nonnegative, eps=1e-6: [1e-6; 1]"),
    ("exp(-abs(x))", "x: real"),
    ("tanh(x)**2", "x: real"),
    ("sigmoid(x)*t", "x: real, t: real target"),
    ("abs(x) + log1p(exp(-2*abs(x))) - log(2)", "x: real"),
    ("-(y*log(p + eps) + (1 - y)*log(1 - p + eps))", "p: probability, y: binary target, eps=1e-7: [1e-7; 1]"),
    ("log(p + 1e-7)", "p: probability"),
    ("-softplus(-x)", "x: real"),
    ("(x - t)**2/(1 + x**2)", "x: real, t: real target"),
    ("exp(-softplus(x))", "x: real"),
    ("sum(y*(z - logsumexp(z)))", "z[c]: real, y[c]: onehot target"),
    ("sqrt(sum((a - b)**2) + 1e-6)", "a[f]: real, b[f]: real"),
    ("x/(abs(x) + eps)", "x: real, eps=1e-6: [1e-6; 1]"),
    ("exp(tanh(x))", "x: real"),
    ("sigmoid(x)*(1 - sigmoid(x))", "x: real"),
    ("where(x > 1, 1/(x - 1), 0)", "x: real"),
    ("log(erfc(x))", "x: [-3; 3]"),
    ("acos(tanh(x)*0.5)", "x: real"),
    ("lgamma(x)", "x: positive"),
    ("cos(x - t) + sin(x)*atan(x)", "x: real, t: real target"),
    ("erf(x - t)**2", "x: real, t: real target"),
]


@pytest.mark.parametrize(("expr", "decl"), SAFE_IDIOMS)
def test_known_safe_idioms_have_no_error_or_warning(expr, decl):
    report = lf.check(make(expr, decl))
    assert report.ok
    assert not [h for h in report.hazards if h.severity in ("error", "warning")], str(report)


def test_severities_follow_the_design():
    severity = {r.kind: r.severity for r in RULES}
    assert severity.pop("cancellation") == "warning"
    assert severity.pop("non-differentiable") == "info"
    assert set(severity.values()) == {"error"}
    report = lf.check(make("abs(x)", "x: real"))
    assert report.ok and report.hazards[0].severity == "info"


def test_hazards_are_located_in_loss_or_gradient():
    report = lf.check(make("sqrt(x)", "x: nonnegative"))
    wheres = {(h.where, h.kind) for h in report.hazards}
    assert ("loss", "sqrt-at-zero") in wheres and ("gradient[x]", "sqrt-at-zero") in wheres
    h = next(h for h in report.hazards if h.where == "loss")
    assert h.expr == sympy.sqrt(make("sqrt(x)", "x: nonnegative").symbol("x"))
    assert h.fix is not None and not h.fix.safe


def test_float_reasoning_one_minus_sigmoid():
    # 1 - sigmoid(x) is exactly 0 in float32 from x = 16.6: a log of it is hazardous on [0, 20], not on [0, 15].
    assert "log-sigmoid" in kinds(make("log(1 - sigmoid(x))", "x: [0; 20]"))
    assert "log-sigmoid" not in kinds(make("log(1 - sigmoid(x))", "x: [0; 15]"))
    # exp overflows float32 above 88.7
    assert "overflow" in kinds(make("exp(x)", "x: [0; 89]"))
    assert "overflow" not in kinds(make("exp(x)", "x: [0; 88]"))
    # products and powers underflow to 0 below float32's 1.4e-45: 1e-30 * 1e-30 == 0
    assert "unguarded-log" in kinds(make("log(x*y)", "x: positive, y: positive"))
    assert "unguarded-log" not in kinds(make("log(x*y)", "x: [1e-6; 1], y: [1e-6; 1]"))
    assert "division-by-zero" in kinds(make("1/(x*y + x*z)", "x: positive, y: positive, z: positive"))
    assert "division-by-zero" not in kinds(make("1/(x*y + x*z)", "x: [1e-6; 1], y: [1e-6; 1], z: [1e-6; 1]"))


def test_accepted_hazards_are_listed_but_do_not_fail():
    spec = make("exp(x) - t*x", "x: real, t: nonnegative target", accept={"overflow": "the rate itself"})
    report = lf.check(spec)
    assert report.ok
    assert all(h.accepted and h.reason == "the rate itself" for h in report.hazards if h.kind == "overflow")
    assert any(h.kind == "overflow" for h in report.hazards)


def test_unknown_accept_kind_is_named():
    spec = make("x**2", "x: real", accept={"overflw": "typo"})
    with pytest.raises(UnknownNameError) as info:
        lf.check(spec)
    assert info.value.token == "overflw"


@pytest.mark.parametrize("kind", KINDS)
def test_explain_has_the_sections(kind):
    text = lf.explain(kind)
    assert text.startswith(kind + ":")
    for section in ("What it does:", "Why is this bad?", "Example:", "Use instead:", "References:"):
        assert section in text


def test_explain_unknown_kind_names_it():
    with pytest.raises(UnknownNameError, match="'nan-everywhere'"):
        lf.explain("nan-everywhere")


@pytest.mark.parametrize("name", lf.builtin_names())
def test_every_builtin_checks_without_unaccepted_errors(name):
    report = lf.check(lf.builtin(name))
    assert report.ok, str(report)
    for h in report.hazards:
        if h.severity == "error":
            assert h.accepted and lf.builtin(name).accept[h.kind].strip()


def test_check_handles_big_and_deep_expressions():
    # Their cost is measured in benchmarks/cost.py, not asserted here.
    terms = " + ".join(f"w{k % 7}*log(1 + exp(x*{k % 11 + 1})) + (x - {k})**2" for k in range(60))
    spec = lf.LossSpec(name="big", expr=terms, symbols={"x": lf.Var("input"), **{f"w{k}": lf.Var("param", default=1.0) for k in range(7)}})
    assert len(sympy.Add.make_args(spec.sympy)) >= 120
    report = lf.check(spec)
    assert "overflow" in report.kinds()  # log(1 + exp(x*k)) over real x
    deep = "x"
    for k in range(25):
        deep = f"tanh({deep} + {k % 3})" if k % 2 else f"softplus({deep})*0.5"
    spec = lf.LossSpec(name="deep", expr=deep, symbols={"x": lf.Var("input")})
    assert lf.check(spec).ok


# -- soundness: a spec the checker calls clean is finite on every draw ----------------------

CLEAN_CANDIDATES = [
    *SAFE_IDIOMS,
    ("(x - t)**2", "x: real, t: real target"),
    ("where(abs(x - t) < 1, (x - t)**2/2, abs(x - t) - 0.5)", "x: real, t: real target"),
    ("exp(x)", "x: [0; 10]"),
    ("log(p + eps)", "p: probability, eps=1e-7: positive"),
    ("1/(x**2 + eps)", "x: real, eps=1e-6: [1e-6; 1]"),
    ("where(x > 0, x*log(x), 0)", "x: real"),
    ("log(2 + tanh(x))", "x: real"),
    ("xlogy(t, t) - t*z", "z: real, t: probability target"),
    ("log1p(p)", "p: probability"),
    ("max(0, 1 - t*x)**2", "x: real, t: sign target"),
    ("acos(clamp(x, -1 + eps, 1 - eps))", "x: real, eps=1e-7: [1e-7; 0.1]"),
    ("digamma(x)", "x: [1e-6; 1e6]"),
    ("-log(erfc(x)) + lgamma(1 + x**2)", "x: [-10; 9]"),
    ("where(x > 0, lgamma(x), 0)", "x: real"),  # the double where keeps lgamma's pole out of the other branch
    ("where(x < 5, log(erfc(x)), 0)", "x: real"),
]


def _finite_everywhere(spec, point: dict[str, float], dtype) -> bool:
    args = [np.asarray([point[n]], dtype=dtype) for n in spec.arrays]
    import torch

    module = lf.compile(spec, "torch")(reduction="sum")
    tensors = [torch.tensor(a, dtype=torch.float64 if dtype == np.float64 else torch.float32) for a in args]
    for t, n in zip(tensors, spec.arrays):
        t.requires_grad_(spec.symbols[n].role == "input")
    value = module(*tensors)
    value.backward()
    grads = [t.grad for t, n in zip(tensors, spec.arrays) if spec.symbols[n].role == "input"]
    with np.errstate(all="ignore"):
        nv, ng = lf.compile(spec, "numpy").loss_and_grad(*args, reduction="sum")
    return (math.isfinite(value.item()) and all(bool(g.isfinite().all()) for g in grads)
            and math.isfinite(float(nv)) and all(np.isfinite(g).all() for g in ng))


@pytest.mark.parametrize(("expr", "decl"), CLEAN_CANDIDATES)
@settings(max_examples=40)
@given(data=st.data())
def test_clean_specs_are_finite_at_every_draw(expr, decl, data):
    spec = make(expr, decl)
    report = lf.check(spec)
    assert report.ok
    if any(spec.symbols[n].axis for n in spec.arrays):
        return  # vector cases are covered by verify's extreme points
    # Draws reach every edge of the analysed range: ±1000 for reals, 1e-30 for positives.
    point = {}
    for n in spec.arrays:
        rng = of_domain(spec.symbols[n].domain)
        value = data.draw(strategies.scalar(spec.symbols[n].domain), label=n)
        point[n] = min(max(value, rng.lo), rng.hi)
    for dtype in (np.float64, np.float32):
        p = {n: float(dtype(v)) for n, v in point.items()}
        assert _finite_everywhere(spec, p, dtype), (expr, p, dtype)


def test_a_strict_condition_keeps_its_branch_finite_one_step_past_the_edge():
    # where(x > 1, 1/(x - 1), 0) is clean: x > 1 means x >= 1 + one ulp, so x - 1 is never 0.
    spec = make("where(x > 1, 1/(x - 1), 0)", "x: real")
    assert lf.check(spec).ok
    for dtype in (np.float64, np.float32):
        edge = float(np.nextafter(dtype(1), dtype(2)))
        assert _finite_everywhere(spec, {"x": edge}, dtype)
        assert _finite_everywhere(spec, {"x": 1.0}, dtype)
