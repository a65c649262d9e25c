"""``lossforge.walk``: the memoized walks give exactly what SymPy's own methods give, at the cost of the graph."""

from __future__ import annotations

import time

import pytest
import sympy
from hypothesis import given, settings
from hypothesis import strategies as st

import lossforge as lf
from lossforge import walk

X, Y, Z = sympy.symbols("x y z", real=True)
LEAVES = (X, Y, Z, sympy.Integer(2), sympy.Rational(1, 3), sympy.Float(0.5), sympy.Integer(-1))


def _tree(draw_leaf, children):
    return st.one_of(
        st.builds(lambda a, b: a + b, children, children),
        st.builds(lambda a, b: a * b, children, children),
        st.builds(lambda a: a**2, children),
        st.builds(sympy.exp, children),
        st.builds(lf.sigmoid, children),
        st.builds(lambda a, b: lf.where(a > 0, a, b), children, children),
        st.builds(lambda a: sympy.Derivative(sympy.Function("f")(a, Z), Z), children),
    )


EXPRS = st.recursive(st.sampled_from(LEAVES), lambda c: _tree(None, c), max_leaves=12)


@settings(max_examples=150, deadline=None)
@given(EXPRS, EXPRS)
def test_each_walk_equals_sympys(a, b):
    exprs = (a, b, a * b)
    query = lambda n: isinstance(n, (sympy.exp, lf.sigmoid)) or n == X  # noqa: E731
    value = lambda n: Y if n == X else n.func(n.args[0] + 1)  # noqa: E731
    assert walk.replace(exprs, query, value) == tuple(e.replace(query, value) for e in exprs)
    rule = {X: Z + 1, sympy.Integer(2): Y}
    assert walk.xreplace(exprs, rule) == tuple(e.xreplace(rule) for e in exprs)
    for types in ((sympy.Symbol,), (sympy.exp, sympy.Pow), (lf.where, sympy.Number)):
        assert walk.atoms(exprs, *types) == set().union(*(e.atoms(*types) for e in exprs))
    free = walk.symbols_of()
    for e in exprs:
        for node in sympy.preorder_traversal(e):
            assert free(node) == node.free_symbols  # a Derivative's bound variable included as SymPy counts it


def test_an_unchanged_expression_is_returned_itself():
    e = sympy.exp(X) * lf.sigmoid(Y) + Z
    (same,) = walk.replace((e,), lambda n: isinstance(n, sympy.log), lambda n: n.args[0])
    assert same is e
    assert walk.xreplace((e,), {sympy.log(X): Y})[0] is e
    assert walk.xreplace((e,), {})[0] is e


def test_the_cost_is_the_graph_not_the_tree():
    # 30 levels of a node used twice: 2**30 paths to a few dozen distinct nodes. SymPy's tree walks would
    # not finish; each of these visits every distinct node once.
    e = X
    for i in range(30):
        e = lf.where(X > i, e, -e) if i % 2 else sympy.exp(e) * lf.sigmoid(e)
    start = time.perf_counter()
    assert walk.atoms((e,), sympy.Symbol) == {X}
    assert walk.symbols_of()(e) == {X}
    (swapped,) = walk.xreplace((e,), {X: Y})
    assert walk.atoms((swapped,), sympy.Symbol) == {Y}
    (back,) = walk.replace((swapped,), lambda n: n == Y, lambda n: X)
    assert back == e
    assert time.perf_counter() - start < 5.0  # a bound on runaway, not a speed claim: the walks take milliseconds


FACTORS = st.one_of(
    st.sampled_from((X, Y, Z, X + 1, Y - Z, sympy.Integer(2), sympy.Integer(-1), sympy.Rational(1, 3),
                     sympy.Float(0.1), sympy.Float(3.0), sympy.Float(1.0), sympy.sqrt(2), sympy.S.Zero, sympy.oo,
                     sympy.I, sympy.pi)),
    st.builds(lf.sigmoid, st.sampled_from((X, Y, -X, X * Y))),
    st.builds(sympy.exp, st.sampled_from((X, -Y))),
    st.builds(lambda a: a**2, st.sampled_from((X, Y, X + 1))),
    st.builds(lambda a: 1 / a, st.sampled_from((X, Z))),
)


@settings(max_examples=600, deadline=None)
@given(st.lists(FACTORS, min_size=2, max_size=9), st.data())
def test_a_rebuilt_product_is_the_product_sympy_builds(factors, data):
    # walk.product puts changed factors in place instead of sorting them all again: it must give Mul's own
    # expression, argument for argument, for every kind of change (numbers, products, powers, equal bases).
    node = sympy.Mul(*factors)
    if not node.is_Mul:
        return
    args = node.args
    new = list(args)
    numbers = st.sampled_from((sympy.Integer(3), sympy.Rational(-1, 2), sympy.Float(0.7), sympy.Float(1.3)))
    for i in data.draw(st.lists(st.integers(0, len(args) - 1), max_size=4)):
        new[i] = data.draw(st.one_of(FACTORS, st.builds(lambda a, b: a * b, FACTORS, FACTORS),
                                     st.builds(lambda a, c: a * c, FACTORS, numbers)))
    built, expected = walk.product(node, new), sympy.Mul(*new)
    assert built == expected and built.args == expected.args, (node, new)
    assert type(built) is type(expected)


W = sympy.Symbol("w", real=True)


@pytest.mark.parametrize("node, changes", [
    # three coefficients (each factor times a float): the order of rounding
    (sympy.Float(0.1) * X * Y * Z * W, {1: lambda a: sympy.Float(0.7) * a, 2: lambda a: sympy.Float(1.3) * a}),
    (2 * X * Y * Z, {1: lambda a: sympy.Rational(1, 2) * lf.sigmoid(a)}),  # the coefficient becomes 1
    (sympy.sqrt(2) * X * Y * Z, {1: lambda a: 2 * a}),  # a number beside a numeric power
    (3 * X * Y * (Z + 1), {1: lambda a: Z + 1}),  # a factor equal to another
    (X * Y * lf.sigmoid(Z), {2: lambda a: sympy.exp(Z), 1: lambda a: sympy.exp(X)}),  # powers of E combine
    (-X * Y * Z, {1: lambda a: sympy.S.Zero}),
    (X * Y * Z, {0: lambda a: Y * Z}),  # the new bases are those of unchanged factors
    (X * Y * Z * W, {0: lambda a: -lf.sigmoid(a), 3: lambda a: sympy.Float(2.5)}),
    (X * Y * Z * W, {1: lambda a: sympy.Float(0.5) * lf.sigmoid(a), 2: lambda a: 2 * (a + 1)}),
])
def test_a_rebuilt_product_in_the_cases_flatten_treats_apart(node, changes):
    new = [changes[i](a) if i in changes else a for i, a in enumerate(node.args)]
    built, expected = walk.product(node, new), sympy.Mul(*new)
    assert built == expected and built.args == expected.args


def test_the_gradients_of_a_long_product_are_built_without_sorting_every_factor_again():
    xs = sympy.symbols("x0:300", real=True)
    node = sympy.Mul(*map(lf.sigmoid, xs))
    changes = []
    for i in range(0, 300, 7):
        new = list(node.args)
        new[i] = lf.sigmoid(xs[i]) * lf.sigmoid(-xs[i])
        changes.append((new, sympy.Mul(*new)))
    calls = []
    original = sympy.Mul.flatten.__func__

    def counted(cls, seq):
        calls.append(len(seq))
        return original(cls, seq)

    sympy.Mul.flatten = classmethod(counted)
    try:
        built = [walk.product(node, new) for new, _ in changes]
    finally:
        sympy.Mul.flatten = classmethod(original)
    assert [b.args for b in built] == [e.args for _, e in changes]
    assert max(calls, default=0) < 10, calls  # flatten saw none of the 300 factors again
