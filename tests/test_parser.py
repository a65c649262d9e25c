"""The safe parser: what it accepts, what it refuses, and that it never evaluates."""

from __future__ import annotations

import builtins
import sys

import pytest
import sympy

import lossforge as lf
from lossforge import language as E
from lossforge.errors import LossforgeError, ParseError, UnsafeExpressionError

X, Y = sympy.symbols("x y", real=True)
Z = sympy.Symbol("z", real=True)
SYMS = {"x": X, "y": Y, "z": Z}
AXES = {"z": "c"}


def parse(text):
    return E.parse(text, SYMS, AXES)


# -- accepted -------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("x + y", X + Y),
        ("x - y*2", X - 2 * Y),
        ("x / y", X / Y),
        ("x ** 2", X**2),
        ("-x", -X),
        ("+x", X),
        ("exp(x) + log(y)", sympy.exp(X) + sympy.log(Y)),
        ("sqrt(x)", sympy.sqrt(X)),
        ("abs(x)", sympy.Abs(X)),
        ("tanh(x) * cosh(y)", sympy.tanh(X) * sympy.cosh(Y)),
        ("pi * e", sympy.pi * sympy.E),
        ("log1p(x) + expm1(y)", E.log1p(X) + E.expm1(Y)),
        ("xlogy(x, y)", E.xlogy(X, Y)),
        ("sigmoid(x) + softplus(y)", E.sigmoid(X) + E.softplus(Y)),
        ("max(x, 0) + min(x, y)", E.maximum(X, 0) + E.minimum(X, Y)),
        ("clamp(x, 0, 1)", E.clamp(X, 0, 1)),
        ("heaviside(x) + sign(y)", E.heaviside(X) + E.sign(Y)),
        ("where(x > 0, x, y)", E.where(X > 0, X, Y)),
        ("where(0 < x < 1, x, 0)", E.where(sympy.And(sympy.Lt(0, X), X < 1), X, 0)),
        ("where(x >= 0 and not (y == 1), x, y)", E.where(sympy.And(X >= 0, sympy.Ne(Y, 1)), X, Y)),
        ("where(x <= 0 or y != 0, 1, 2)", E.where(sympy.Or(X <= 0, sympy.Ne(Y, 0)), 1, 2)),
        ("sum(z) + mean(z) + logsumexp(z) + norm(z)", E.axis_sum(Z) + E.axis_mean(Z) + E.logsumexp(Z) + E.norm(Z)),
        ("sum(abs(cumsum(z)))", E.axis_sum(sympy.Abs(E.cumsum(Z)))),
        ("sum(z * x)", E.axis_sum(Z * X)),
        ("0.5 * x", x_half := X / 2),
        ("1e-7 + x", sympy.Float(1e-7) + X),
    ],
)
def test_accepts_the_spec_language(text, expected):
    assert parse(text) == expected


def test_dyadic_constants_stay_exact_and_others_are_floats():
    assert parse("0.25 * x").args[0] == sympy.Rational(1, 4)
    assert parse("0.1 * x").args[0] == sympy.Float(0.1)
    assert parse("2.0 * x") == 2 * X


def test_a_long_flat_sum_is_fine():
    text = " + ".join(f"{k}*x**{k % 5}" for k in range(1, 400))
    assert parse(text).is_Add


# -- refused, naming the token -----------------------------------------------


@pytest.mark.parametrize(
    ("text", "token", "cls"),
    [
        ("foo(x)", "foo", UnsafeExpressionError),
        ("tan(x)", "tan", UnsafeExpressionError),
        ("q + x", "q", ParseError),
        ("x.real", "x.real", UnsafeExpressionError),
        ("x[0]", "x[0]", UnsafeExpressionError),
        ("(lambda: x)", "lambda: x", UnsafeExpressionError),
        ("[x for x in y]", "[x for x in y]", UnsafeExpressionError),
        ("sum(z for z in y)", "(z for z in y)", UnsafeExpressionError),
        ("log(x, base=2)", "base", UnsafeExpressionError),
        ("log(x, **y)", "**", UnsafeExpressionError),
        ("'abc'", "'abc'", UnsafeExpressionError),
        ("x if y else 0", "x if y else 0", UnsafeExpressionError),
        ("{x: 1}", "{x: 1}", UnsafeExpressionError),
        ("[x, y]", "[x, y]", UnsafeExpressionError),
        ("{x, y}", "{x, y}", UnsafeExpressionError),
        ("(x, y)", "(x, y)", UnsafeExpressionError),
        ("x = 1", "= 1", ParseError),
        ("import os", "import os", ParseError),
        ("x; y", "; y", ParseError),
        ("x < y", "x < y", ParseError),
        ("x and y", "x and y", ParseError),
        ("x // y", "//", ParseError),
        ("x % y", "%", ParseError),
        ("x @ y", "@", ParseError),
        ("x & y", "&", ParseError),
        ("~x", "~", ParseError),
        ("where(x in y, 1, 0)", "in", ParseError),
        ("where(x, 1, 0)", "x", ParseError),
        ("log(x > 0)", "x > 0", ParseError),
        ("log(x, y)", "log", ParseError),
        ("clamp(x, 0)", "clamp", ParseError),
        ("max(x, y, 0)", "max", ParseError),
        ("exp", "exp", ParseError),
        ("x(y)", "x", ParseError),
        ("1e999 * x", "1e999", ParseError),
        ("1j * x", "1j", UnsafeExpressionError),
        ("True * x", "True", UnsafeExpressionError),
        ("x + λ", "λ", ParseError),
        ("__import__('os')", "__import__", UnsafeExpressionError),
        ("__builtins__", "__builtins__", UnsafeExpressionError),
        ("x.__class__.__bases__", "x.__class__.__bases__", UnsafeExpressionError),
        ("exec('1')", "exec", UnsafeExpressionError),
        ("eval('1')", "eval", UnsafeExpressionError),
        ("getattr(x, 'y')", "getattr", UnsafeExpressionError),
        ("f'{x}'", "f'{x}'", UnsafeExpressionError),
        ("(w := x)", "w := x", UnsafeExpressionError),
        ("", "", ParseError),
        ("z", "z", ParseError),
        ("z + x", "z", ParseError),
        ("sum(x)", "sum(x)", ParseError),
        ("cumsum(z)", "z", ParseError),
        ("where(x > 0, 1, 0) > 1", "where(x > 0, 1, 0) > 1", ParseError),
    ],
)
def test_refuses_naming_the_token(text, token, cls):
    with pytest.raises(cls) as info:
        parse(text)
    assert info.value.token == token
    assert repr(token)[1:-1] in str(info.value) or token in str(info.value)


def test_mixed_axes_are_refused():
    a, b = sympy.symbols("a b", real=True)
    with pytest.raises(ParseError, match="axes 'p' and 'q'"):
        E.parse("sum(a*b)", {"a": a, "b": b}, {"a": "p", "b": "q"})


# -- pathological input: refused quickly, never a RecursionError or a hang ----


@pytest.mark.parametrize(
    "text",
    [
        "(" * 10_000 + "x" + ")" * 10_000,
        "(" * 500 + "x" + ")" * 500,
        " + ".join(["x"] * 300_000),
        "-" * 15_000 + "x",
        "x" + "**x" * 5_000,
        "exp(" * 3_000 + "x" + ")" * 3_000,
        "+".join(["x"] * 5000),
        "x" + "*(x+" * 2000 + "x" + ")" * 2000,
    ],
)
def test_pathological_input_is_refused_not_recursed(text):
    # Refused by the length, bracket-depth or node bounds before any recursion;
    # how fast is measured in benchmarks/cost.py.
    with pytest.raises(ParseError):
        parse(text)


# -- never evaluated ------------------------------------------------------------


def _forbid(*_args, **_kwargs):
    raise AssertionError("eval/exec must never run on user text")


MALICIOUS = [
    "__import__('os').system('touch {sentinel}')",
    "exec(\"open('{sentinel}', 'w')\")",
    "eval(\"open('{sentinel}', 'w')\")",
    "open('{sentinel}', 'w')",
    "(lambda: open('{sentinel}', 'w'))()",
    "[open('{sentinel}', 'w') for _ in (1,)]",
    "x.__class__.__init__.__globals__['os'].system('touch {sentinel}')",
    "compile('1', '{sentinel}', 'eval')",
]


@pytest.mark.parametrize("template", MALICIOUS)
def test_malicious_text_is_refused_and_never_runs(template, tmp_path, monkeypatch):
    sentinel = tmp_path / "pwned"
    text = template.format(sentinel=sentinel)
    monkeypatch.setattr(builtins, "eval", _forbid)
    monkeypatch.setattr(builtins, "exec", _forbid)
    with pytest.raises(LossforgeError):
        parse(text)
    with pytest.raises(LossforgeError):
        lf.LossSpec(name="m", expr=text, symbols={"x": lf.Var("input")})
    assert not sentinel.exists()


def test_valid_specs_parse_without_eval_or_sympify_of_text(monkeypatch):
    real_sympify = sympy.sympify

    def guarded(a, *args, **kwargs):
        if isinstance(a, str):
            raise AssertionError(f"sympify called on text {a!r}")
        return real_sympify(a, *args, **kwargs)

    monkeypatch.setattr(builtins, "eval", _forbid)
    monkeypatch.setattr(builtins, "exec", _forbid)
    monkeypatch.setattr(sympy, "sympify", guarded)
    monkeypatch.setattr(sys.modules["sympy.core.sympify"], "sympify", guarded)
    spec = lf.load("examples/cost_sensitive.toml")
    assert spec.gradient()["p"].has(spec.symbol("fn_weight"))
    assert parse("where(x > 0, log(x), 0) + sum(z**2)").has(sympy.log(X))


# -- printing back -------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "-(x*log(clamp(y, 1e-7, 1 - 1e-7)))",
        "where(x > 0 and y <= 1, x**0.5, -y/3)",
        "max(0, 1 - x*y)**2 + min(x, y) + heaviside(x - 0.3)",
        "logsumexp(z*x) - sum(z)/mean(z) + norm(z - 1) + sum(abs(cumsum(z)))",
        "xlogy(x, y) + log1p(x) + expm1(y) + sign(x) + e**x + pi",
        "where(x == 1, 0, 1) + where(x != 2, 3, 4)",
        "where(not (x > 1), x, y)",
    ],
)
def test_to_text_round_trips(text):
    value = parse(text)
    assert parse(E.to_text(value)) == value


def test_to_text_writes_sympy_builtins_in_the_language():
    assert parse(E.to_text(sympy.Max(X, 0, Y))) == E.maximum(0, E.maximum(X, Y))
    assert E.to_text(sympy.Heaviside(X)) == "heaviside(x)"
    assert parse(E.to_text(sympy.Piecewise((X, X > 0), (-X, True)))) == E.where(X > 0, X, -X)


# -- symbol names ----------------------------------------------------------------


@pytest.mark.parametrize("name", ["lambda", "class", "match", "_", "__x", "pi", "e", "x-y", "1x", "é", ""])
def test_bad_symbol_names_are_refused_by_name(name):
    with pytest.raises(LossforgeError) as info:
        E.check_symbol_name(name)
    assert info.value.token == name


@pytest.mark.parametrize("name", ["x", "pred", "fn_weight", "_private", "x2", "np", "torch", "self", "loss"])
def test_plain_identifiers_are_symbol_names(name):
    assert E.check_symbol_name(name) == name


def test_a_symbol_may_share_a_function_name():
    mean = sympy.Symbol("mean", real=True)
    value = E.parse("mean(z) - mean", {"mean": mean, "z": Z}, AXES)
    assert value == E.axis_mean(Z) - mean
    assert E.parse(E.to_text(value), {"mean": mean, "z": Z}, AXES) == value


@pytest.mark.parametrize("text", ["x/0", "log(-1) + x", "sqrt(-2)*x", "x*0**-1", "xlogy(2, 0) + x",
                                  "xlogy(sigmoid(x), x - x)"])
def test_constant_nonsense_is_refused(text):
    with pytest.raises(ParseError):
        parse(text)


def test_a_comparison_with_an_infinite_side_is_refused_by_name():
    # xlogy(y, 0) with y > 0 is -inf; SymPy itself raises a TypeError on comparing it. The
    # infinite side is refused where it is built, by its own text.
    with pytest.raises(ParseError) as info:
        E.parse("where(xlogy(sigmoid(y), x - x) > 0, x, -x)", SYMS, AXES)
    assert info.value.token == "xlogy(sigmoid(y), x - x)"
    assert "not a finite number" in str(info.value)


def test_xlogy_of_one_is_zero():
    assert parse("xlogy(x, 1) + x") == X


def test_a_reduction_of_something_constant_along_its_axis_is_refused():
    # z/z is 1: norm(softplus(1)) has no axis left to reduce (and could not be printed as array code).
    with pytest.raises(ParseError) as info:
        parse("norm(softplus(z/z)) + x")
    assert info.value.token == "norm(softplus(z/z))"
