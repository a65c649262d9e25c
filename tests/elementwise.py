"""An independent, test-only meaning for axis operations: explicit elements.

``expand(expr, n)`` rewrites an expression over vector symbols into the list
of its ``n`` explicit elements, each an ordinary scalar SymPy expression over
symbols ``z_0 ... z_{n-1}``: ``sum(e)`` becomes ``e_0 + ... + e_{n-1}``,
``cumsum(e)`` the running sums, and so on. Differentiating the expanded loss
with SymPy's plain ``diff`` is a check of lossforge's reverse-mode axis
handling that shares none of its code.
"""

from __future__ import annotations

import sympy

from lossforge import expr as E


def element_symbol(sym: sympy.Symbol, k: int) -> sympy.Symbol:
    return sympy.Symbol(f"{sym.name}_{k}", **{a: v for a, v in sym.assumptions0.items() if v is not None})


def expand(expr: sympy.Expr, n: int, vectors: set[sympy.Symbol]) -> list[sympy.Expr]:
    """The ``n`` elements of ``expr`` (all equal when it is per-sample scalar)."""

    def el(e: sympy.Basic, k: int) -> sympy.Basic:
        if e in vectors:
            return element_symbol(e, k)
        if isinstance(e, E.axis_sum):
            return sympy.Add(*(el(e.args[0], i) for i in range(n)))
        if isinstance(e, E.axis_mean):
            return sympy.Add(*(el(e.args[0], i) for i in range(n))) / n
        if isinstance(e, E.logsumexp):
            return sympy.log(sympy.Add(*(sympy.exp(el(e.args[0], i)) for i in range(n))))
        if isinstance(e, E.norm):
            return sympy.sqrt(sympy.Add(*(el(e.args[0], i) ** 2 for i in range(n))))
        if isinstance(e, E.cumsum):
            return sympy.Add(*(el(e.args[0], i) for i in range(k + 1)))
        if isinstance(e, E.rev_cumsum):
            return sympy.Add(*(el(e.args[0], i) for i in range(k, n)))
        if isinstance(e, E.axis_size):
            return sympy.Integer(n)
        if not e.args:
            return e
        return e.func(*(el(a, k) for a in e.args))

    return [el(expr, k) for k in range(n)]
