"""The spec model and its TOML form."""

from __future__ import annotations

import dataclasses
import math
import re
from pathlib import Path

import pytest
import sympy
from hypothesis import given
from hypothesis import strategies as st

import lossforge as lf
from lossforge.domains import CATALOGUE, domain_of
from lossforge.errors import DomainError, LossforgeError, RoleError, SpecError

from . import strategies

V = lf.Var
ROOT = Path(__file__).resolve().parent.parent


def mse(**changes):
    kwargs = dict(name="mse", expr="(pred - target)**2", symbols={"pred": V("input"), "target": V("target")})
    kwargs.update(changes)
    return lf.LossSpec(**kwargs)


# -- Var -------------------------------------------------------------------------


def test_var_normalises_domain_and_default():
    v = V("param", default=2, domain="positive")
    assert v.default == 2.0 and isinstance(v.default, float)
    assert v.domain is CATALOGUE["positive"]
    assert V("input", domain=(0, 10)).domain == V("input", domain="[0, 10]").domain


@pytest.mark.parametrize(
    ("kwargs", "cls", "token"),
    [
        ({"role": "inptu"}, RoleError, "inptu"),
        ({"role": "input", "domain": "postive"}, DomainError, "postive"),
        ({"role": "input", "domain": "[1, 0]"}, DomainError, "[1.0, 0.0]"),
        ({"role": "input", "domain": (0, math.inf)}, DomainError, "inf"),
        ({"role": "param"}, SpecError, "default"),
        ({"role": "param", "default": "big"}, SpecError, "'big'"),
        ({"role": "param", "default": -1.0, "domain": "positive"}, DomainError, "-1.0"),
        ({"role": "param", "default": 2.0, "domain": "probability"}, DomainError, "2.0"),
        ({"role": "input", "default": 1.0}, RoleError, "default"),
        ({"role": "param", "default": 1.0, "axis": "c"}, RoleError, "c"),
        ({"role": "target", "domain": "onehot"}, DomainError, "onehot"),
        ({"role": "input", "axis": "my axis"}, SpecError, "my axis"),
    ],
)
def test_var_errors_name_the_token(kwargs, cls, token):
    with pytest.raises(cls) as info:
        V(**kwargs)
    assert info.value.token == token
    assert token in str(info.value)


def test_var_is_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        V("input").role = "target"


# -- LossSpec --------------------------------------------------------------------


def test_declaration_order_is_kept():
    spec = lf.LossSpec(
        name="o",
        expr="b*t + a",
        symbols={"t": V("target"), "b": V("input"), "w": V("param", default=1.0), "a": V("input")},
    )
    assert list(spec.symbols) == ["t", "b", "w", "a"]
    assert spec.arrays == ("t", "b", "a")
    assert spec.inputs == ("b", "a") and spec.targets == ("t",) and spec.params == ("w",)


def test_symbols_get_their_domain_assumptions():
    spec = lf.load(ROOT / "examples/cost_sensitive.toml")
    assert spec.symbol("eps").is_positive
    assert spec.symbol("p").is_nonnegative
    assert spec.symbol("y").is_integer


def test_spec_accepts_a_sympy_expression():
    pred, target = sympy.symbols("pred target")
    spec = mse(expr=(pred - target) ** 2)
    assert spec == mse()
    assert spec.text == "(pred - target)**2"


@pytest.mark.parametrize(
    ("changes", "cls", "token"),
    [
        ({"name": "my loss"}, SpecError, "my loss"),
        ({"name": "1st"}, SpecError, "1st"),
        ({"reduction": "avg"}, SpecError, "avg"),
        ({"expr": "(pred - targte)**2"}, SpecError, "targte"),
        ({"expr": 3}, SpecError, "expr"),
        ({"expr": "pred**2"}, SpecError, "target"),
        ({"symbols": {}}, SpecError, "symbols"),
        ({"symbols": {"pred": V("target"), "target": V("target")}}, RoleError, "input"),
        ({"symbols": {"pred": V("input"), "target": {"role": "target", "dommain": "real"}}}, SpecError, "dommain"),
        ({"symbols": {"pred": V("input"), "target": {"domain": "real"}}}, RoleError, "target"),
        ({"symbols": {"pred": V("input"), "target": {"role": "label"}}}, RoleError, "label"),
        ({"symbols": {"pred": V("input"), "target": 5}}, SpecError, "target"),
        ({"symbols": {"pred": V("input"), "target": V("target"), "lambda": V("param", default=1.0)}}, SpecError, "lambda"),
        ({"accept": {"overflow": ""}}, SpecError, "overflow"),
        ({"description": 5}, SpecError, "description"),
    ],
)
def test_spec_errors_name_the_token(changes, cls, token):
    with pytest.raises(cls) as info:
        mse(**changes)
    assert info.value.token == token
    assert token in str(info.value)


def test_sympy_expression_with_undeclared_symbol_names_it():
    pred, other = sympy.symbols("pred other")
    with pytest.raises(SpecError, match="'other'"):
        mse(expr=(pred - other) ** 2)


def test_sympy_expression_with_foreign_function_names_it():
    pred, target = sympy.symbols("pred target")
    with pytest.raises(LossforgeError, match="'tan'"):
        mse(expr=sympy.tan(pred - target))


def test_spec_is_a_frozen_hashable_value():
    a, b = mse(), mse()
    assert a == b and hash(a) == hash(b)
    assert a != mse(reduction="sum")
    with pytest.raises(dataclasses.FrozenInstanceError):
        a.name = "x"
    assert len({a, b}) == 1


def test_rename_keeps_order_domain_and_meaning():
    spec = lf.load(ROOT / "examples/cost_sensitive.toml").rename(p="prob", y="label")
    assert list(spec.symbols) == ["prob", "label", "fn_weight", "eps"]
    assert spec.symbols["prob"].domain.name == "probability"
    assert spec.sympy.has(spec.symbol("prob")) and "p" not in spec.symbols
    with pytest.raises(SpecError, match="'nope'"):
        spec.rename(nope="x")
    with pytest.raises(SpecError, match="'label'"):
        spec.rename(prob="label")


def test_digest_is_stable_and_content_based():
    assert mse().digest() == mse().digest()
    assert mse().digest() != mse(reduction="sum").digest()
    assert re.fullmatch(r"[0-9a-f]{16}", mse().digest())


# -- TOML ------------------------------------------------------------------------


def test_load_the_example():
    spec = lf.load(ROOT / "examples/cost_sensitive.toml")
    assert spec.name == "cost_sensitive_bce"
    assert spec.symbols["fn_weight"].default == 5.0
    assert spec.symbols["eps"].default == 1e-7


def test_dumps_round_trips_intervals_accept_terms_and_text_fields():
    spec = lf.LossSpec(
        name="rich",
        expr="w*(p - t)**2 + exp(s)",
        symbols={"p": V("input", domain=[-1, 2.5]), "t": V("target"), "s": V("input", domain="[0, 10]"),
                 "w": V("param", default=0.25, domain="nonnegative")},
        reduction="sum",
        description='A "quoted"\nmulti-line\tdescription \\ with backslash',
        accept={"overflow": "exp(s) stays below e**10 on [0, 10]"},
        summary="s", formula="f", reference="r", stable_form="sf",
        terms={"sq": (1.0, "w*(p - t)**2"), "ex": (1.0, "exp(s)")},
    )
    text = lf.dumps(spec)
    assert "domain = [-1.0, 2.5]" in text
    assert "[accept]" in text and "[terms]" in text
    assert lf.loads(text) == spec
    assert lf.dumps(lf.loads(text)) == text


@pytest.mark.parametrize(
    ("text", "token"),
    [
        ('name = "x"\nexpr = "p"\n[symbols]\np = { role = "input" ', "<string>"),
        ('name = "x"\n[symbols]\np = { role = "input" }', "expr"),
        ('expr = "p"\n[symbols]\np = { role = "input" }', "name"),
        ('name = "x"\nexpr = "p"', "symbols"),
        ('name = "x"\nexpr = "p"\nreductoin = "sum"\n[symbols]\np = { role = "input" }', "reductoin"),
        ('name = "x"\nexpr = "p"\nsymbols = 3', "symbols"),
        ('name = "x"\nexpr = 3\n[symbols]\np = { role = "input" }', "expr"),
        ('name = "x"\nexpr = "p"\naccept = 1\n[symbols]\np = { role = "input" }', "accept"),
        ('name = "x"\nexpr = "p"\n[symbols]\np = { role = "input", axis = 3 }', "3"),
        ('name = "x"\nexpr = "p"\n[symbols]\np = { role = "input" }\n[terms]\na = 1', "a"),
        ('name = "x"\nexpr = "p**2"\n[symbols]\np = { role = "input" }\n[terms]\na = { weight = 1.0, expr = "p" }', "terms"),
    ],
)
def test_loads_errors_name_the_token(text, token):
    with pytest.raises(SpecError) as info:
        lf.loads(text)
    assert info.value.token == token


def test_load_missing_file_names_it(tmp_path):
    missing = tmp_path / "nope.toml"
    with pytest.raises(SpecError, match="nope.toml"):
        lf.load(missing)


def test_load_errors_name_the_file(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nexpr = "p + q"\n[symbols]\np = { role = "input" }\n')
    with pytest.raises(LossforgeError, match="'q'"):
        lf.load(bad)
    bad.write_text("name = \n")
    with pytest.raises(SpecError, match="bad.toml"):
        lf.load(bad)


# -- round trip for every spec (Hypothesis) ------------------------------------

_NAMES = ["p", "t", "w", "q", "eps"]
_SCALAR_DOMAINS = [d for d in CATALOGUE if not CATALOGUE[d].vector]


@st.composite
def specs(draw):
    """Random valid specs: random expressions, roles, domains (intervals too), accept tables."""
    domains = {}
    for name in _NAMES[:3]:
        choice = draw(st.sampled_from([*_SCALAR_DOMAINS, "interval"]))
        if choice == "interval":
            lo = draw(st.floats(-100, 100, allow_nan=False))
            hi = draw(st.floats(lo, 200, allow_nan=False))
            domains[name] = (lo, hi)
        else:
            domains[name] = choice
    w_dom = domain_of(domains["w"])
    w_default = draw(strategies.scalar(w_dom).filter(w_dom.contains))
    atoms = st.sampled_from(["p", "t", "w", "1", "0.5", "2.5e-3", "pi", "e"])

    def extend(inner):
        unary = st.sampled_from(["exp", "log", "sigmoid", "softplus", "abs", "tanh", "sqrt", "log1p", "sign"])
        return st.one_of(
            st.tuples(inner, st.sampled_from(["+", "-", "*", "/", "**"]), inner).map(lambda a: f"({a[0]} {a[1]} {a[2]})"),
            st.tuples(unary, inner).map(lambda a: f"{a[0]}({a[1]})"),
            st.tuples(inner, inner).map(lambda a: f"max({a[0]}, {a[1]})"),
            st.tuples(inner, inner, inner).map(lambda a: f"clamp({a[0]}, {a[1]}, {a[2]})"),
            st.tuples(inner, inner, inner).map(lambda a: f"where({a[0]} > {a[1]}, {a[1]}, {a[2]})"),
            st.tuples(inner, inner).map(lambda a: f"xlogy({a[0]}, {a[1]})"),
        )

    body = draw(st.recursive(atoms, extend, max_leaves=8))
    expr = f"{body} + p*t"  # every input and target appears
    accept = draw(st.dictionaries(st.sampled_from(["overflow", "unguarded-log", "cancellation"]),
                                  st.text(min_size=1, max_size=20).filter(str.strip), max_size=2))
    reduction = draw(st.sampled_from(["mean", "sum", "none"]))
    return lf.LossSpec(
        name="random_spec",
        expr=expr,
        symbols={"p": V("input", domain=domains["p"]), "t": V("target", domain=domains["t"]),
                 "w": V("param", default=w_default, domain=domains["w"])},
        reduction=reduction,
        accept=accept,
        description=draw(st.text(max_size=30)),
    )


@given(specs())
def test_loads_dumps_round_trip(spec):
    text = lf.dumps(spec)
    back = lf.loads(text)
    assert back == spec
    assert lf.dumps(back) == text


@given(specs())
def test_sympy_built_spec_round_trips_through_toml(spec):
    from_sympy = dataclasses.replace(spec, expr=spec.sympy)
    assert from_sympy.sympy == spec.sympy
    assert lf.loads(lf.dumps(from_sympy)) == from_sympy
    # Equal mathematics written differently is another spec (caches are keyed by the text).
    assert (from_sympy == spec) == (from_sympy.text == spec.text)


# -- domains ----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(CATALOGUE))
def test_every_domain_has_assumptions_an_interval_and_its_edges(name):
    dom = CATALOGUE[name]
    assert dom.assumptions()["real"] is True
    assert dom.lo <= dom.hi
    for point in dom.extremes():
        assert dom.contains(point), (name, point)


def test_probability_includes_both_ends_and_positive_excludes_zero():
    prob, pos = CATALOGUE["probability"], CATALOGUE["positive"]
    assert prob.contains(0.0) and prob.contains(1.0) and not prob.contains(math.nextafter(1.0, 2.0))
    assert not pos.contains(0.0) and pos.contains(5e-324)
    assert pos.assumptions()["positive"] and CATALOGUE["nonnegative"].assumptions()["nonnegative"]
    assert domain_of([2, 3]).assumptions()["positive"]
    assert domain_of([-3, -2]).assumptions()["negative"]


@pytest.mark.parametrize("name", [d for d in _SCALAR_DOMAINS])
@given(data=st.data())
def test_strategies_stay_inside_their_domain(name, data):
    value = data.draw(strategies.scalar(name))
    assert CATALOGUE[name].contains(value)
