"""Stabilizing rewrites: symbolically equal, same values, finite at the extremes, clean afterwards."""

from __future__ import annotations

import numpy as np
import pytest
import sympy

import lossforge as lf
from lossforge.analysis.stabilize import SAFE_REWRITES

from .test_hazards import make

# (naive expression, declaration, kind it removes, what the fix introduces)
SAFE_CASES = [
    ("log(1 + x)", "x: [0; 1]", "cancellation", "log1p"),
    ("log(1 + exp(x)) - t*x", "x: real, t: probability target", "overflow", "softplus"),
    ("-log(sigmoid(x))", "x: real", "log-sigmoid", "softplus"),
    ("-log(1 - sigmoid(x))", "x: real", "log-sigmoid", "softplus"),
    ("-(y*log(1/(1 + exp(-x))) + (1 - y)*log(1 - 1/(1 + exp(-x))))", "x: real, y: binary target", "log-sigmoid",
     "softplus"),
    ("log(sum(exp(z))) - sum(y*z)", "z[c]: real, y[c]: onehot target", "log-sum-exp", "logsumexp"),
    ("-sum(y*log(exp(z)/sum(exp(z))))", "z[c]: real, y[c]: onehot target", "log-sum-exp", "logsumexp"),
    ("log(cosh(x - t))", "x: real, t: real target", "overflow", "log1p"),
    ("x*log(x) - x", "x: probability", "unguarded-log", "xlogy"),
    ("exp(x) - 1", "x: [-1; 1]", "cancellation", "expm1"),
    ("t*x - 1/(1 + exp(-x))", "x: real, t: real target", "overflow", "sigmoid"),
    ("t*exp(x)/(1 + exp(x))", "x: real, t: real target", "overflow", "sigmoid"),
    ("log(exp(a) + exp(b))", "a: real, b: real", "log-sum-exp", "log1p"),
]


def _numbers(spec, expr, point):
    subs = {spec.symbol(n): v for n, v in point.items()}
    value = expr.xreplace(subs)
    return complex(value.evalf(30))


@pytest.mark.parametrize(("expr", "decl", "kind", "token"), SAFE_CASES)
def test_safe_rewrite_is_exact_finite_and_clean(expr, decl, kind, token):
    spec = make(expr, decl)
    assert kind in {h.kind for h in lf.check(spec).hazards}
    fixed = lf.stabilize(spec)
    assert token in fixed.text
    assert kind not in {h.kind for h in lf.check(fixed).hazards if not h.accepted}, str(lf.check(fixed))
    # Symbolically equal: their difference rewritten to elementary functions simplifies to 0,
    # or (for forms SymPy cannot simplify) agrees at 30 digits on ordinary points.
    from lossforge.numeric import elementary

    rng = np.random.default_rng(0)
    for _ in range(5):
        point = {}
        for n, v in spec.symbols.items():
            if v.role == "param":
                continue
            point[n] = float(v.domain.sample(rng, (), edges=False)) if not v.axis else None
        if any(v is None for v in point.values()):
            break  # vector cases: checked numerically below through generated code
        a = _numbers(spec, elementary(spec.sympy), point)
        b = _numbers(spec, elementary(fixed.sympy), point)
        assert abs(a - b) <= 1e-9 * max(1.0, abs(a)), (a, b)
    # Values at ordinary points equal to 1e-9 through the generated code, and finite at +-1000.
    mod_a, mod_b = lf.compile(spec, "numpy"), lf.compile(fixed, "numpy")
    arrays = [spec.symbols[n].domain.sample(rng, (16, 4) if spec.symbols[n].axis else (16,), edges=False)
              for n in spec.arrays]
    with np.errstate(all="ignore"):
        np.testing.assert_allclose(mod_b.loss(*arrays, reduction="none"), mod_a.loss(*arrays, reduction="none"),
                                   rtol=1e-9, atol=1e-12)
    extremes = [np.asarray(spec.symbols[n].domain.extremes() * 2, dtype=float)[:4] for n in spec.arrays]
    if not any(spec.symbols[n].axis for n in spec.arrays):
        value, grads = mod_b.loss_and_grad(*extremes, reduction="none")
        assert np.isfinite(value).all() and all(np.isfinite(g).all() for g in grads)


@pytest.mark.parametrize(
    ("expr", "decl"),
    [
        ("log(2 + x)", "x: [0; 1]"),
        ("exp(x) - 2", "x: [-1; 1]"),
        ("log(exp(x) + exp(2*x))", "x: [-1; 1]"),
        ("sigmoid(x)*(1 - sigmoid(x))", "x: real"),
        ("x*log(y)", "x: real, y: positive"),
    ],
)
def test_near_misses_are_left_alone(expr, decl):
    spec = make(expr, decl)
    assert lf.stabilize(spec).sympy == spec.sympy


def test_each_safe_rewrite_preserves_its_value():
    x = sympy.Symbol("x", real=True)
    from lossforge.numeric import elementary

    cases = {
        "log(sigmoid(x)) -> -softplus(-x)": sympy.log(lf.sigmoid(x)),
        "log(1 + exp(x)) -> softplus(x)": sympy.log(1 + sympy.exp(x)),
        "log(cosh(x)) -> |x| + log1p(exp(-2|x|)) - log(2)": sympy.log(sympy.cosh(x)),
        "log(1 + x) -> log1p(x)": sympy.log(1 + x),
        "exp(x) - 1 -> expm1(x)": sympy.exp(x) - 1,
        "1/(1 + exp(-x)) -> sigmoid(x)": 1 / (1 + sympy.exp(-x)),
        "x*log(x) -> xlogy(x, x)": x * sympy.log(x),
    }
    names = [name for name, _, _ in SAFE_REWRITES]
    for name, expr in cases.items():
        assert name in names
        _, query, rewrite = SAFE_REWRITES[names.index(name)]
        out = expr.replace(query, rewrite)
        assert out != expr, name
        for v in (0.3, 1.7, 4.0):
            assert float(elementary(out).subs(x, v)) == pytest.approx(float(expr.subs(x, v)), rel=1e-12), name


def test_unsafe_fixes_only_when_asked_and_then_clean():
    spec = make("-(y*log(p) + (1 - y)*log(1 - p))", "p: probability, y: binary target")
    assert not lf.check(lf.stabilize(spec)).ok
    fixed = lf.stabilize(spec, unsafe=True)
    assert lf.check(fixed).ok, str(lf.check(fixed))
    mod = lf.compile(fixed, "numpy")
    p = np.array([0.0, 1.0, 0.5, 0.25])
    y = np.array([1.0, 0.0, 1.0, 0.0])
    value, (grad,) = mod.loss_and_grad(p, y, reduction="none")
    assert np.isfinite(value).all() and np.isfinite(grad).all()
    np.testing.assert_allclose(value[2:], [np.log(2), -np.log(0.75)], rtol=1e-6)


@pytest.mark.parametrize("name", lf.builtin_names())
def test_builtins_are_already_stable(name):
    spec = lf.builtin(name)
    assert lf.stabilize(spec) == spec


def test_a_rewrite_that_leaves_an_input_out_names_it():
    # log(y) of a possibly negative y is clamped; softplus of a real is positive, so sign(...) is 1.
    spec = make("sign(softplus(log(y)))", "y: [-2; 3]")
    with pytest.raises(lf.AnalysisError) as info:
        lf.stabilize(spec, unsafe=True)
    assert info.value.token == "y" and "no longer depends on 'y'" in str(info.value)


def test_dumps_over_a_layout_keeps_it_and_reads_as_dumps():
    layout = ('name = "soft" # ✓ \'quoted\' [accept] x = "y"\r\n\r\n[symbols] # inputs\r\n'
              'x = { role = "input" }\r\ny = { role = "target" }\r\n\r\nexpr = 1\r\n')
    layout = layout.replace('\r\n\r\nexpr = 1', '').replace('name = "soft"', 'name = "soft"\r\nexpr = "log(1 + exp(x)) - y*x"')
    fixed = lf.stabilize(lf.loads(layout))
    text = lf.dumps(fixed, layout=layout)
    assert text == layout.replace('"log(1 + exp(x)) - y*x"', f'"{fixed.text}"')
    assert lf.loads(text) == lf.loads(lf.dumps(fixed)) == fixed
    assert lf.dumps(fixed, layout="not = [toml") == lf.dumps(fixed)  # no readable layout: dumps's own text


def test_dumps_over_a_hostile_layout_falls_back_to_dumps():
    spec = lf.stabilize(lf.loads('name = "s"\nexpr = "log(1 + exp(x))"\n[symbols]\nx = { role = "input" }\n'))
    deep = "a = " + "[" * 5000 + "]" * 5000 + "\n"
    for layout in (deep, "name = 'other'\n", "\ufeff[[symbols]]\n", ""):
        assert lf.loads(lf.dumps(spec, layout=layout)) == spec
