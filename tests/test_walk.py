"""``lossforge.walk``: the memoized walks give exactly what SymPy's own methods give, at the cost of the graph."""

from __future__ import annotations

import time

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
