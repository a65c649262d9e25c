"""Class indices for a one-hot target: the loss and gradients without an (N, C) one-hot matrix.

A one-hot vector ``t`` on an axis usually enters a loss linearly: cross-entropy's
``sum(t*z)``, label smoothing's ``mean(z)``, the gradient ``softmax(z) - t``.
Given its class index ``i`` instead, ``sum(g0 + t*g1)`` is ``sum(g0) + g1[i]``
(:class:`pick`) and an elementwise ``A + t*B`` is ``A`` with ``B[i]`` added at
``i`` (:class:`scatter`). :func:`indexed` rewrites the prepared expressions so;
where ``t`` enters any other way (inside a logsumexp, squared, under a
function) there is no such form and the generated code builds the one-hot
rows from the indices as before.
"""

from __future__ import annotations

import sympy

from .. import budget
from ..language import AXIS_OPERATIONS, AxisFunction, axis_mean, axis_size, axis_sum, where


class pick(sympy.Function):  # noqa: N801 - a SymPy function, lower case like SymPy's
    """``pick(g, i)``: the entry of the axis vector ``g`` at class index ``i``, per sample (axis kept, length 1)."""

    nargs = 2


class scatter(sympy.Function):  # noqa: N801 - a SymPy function, lower case like SymPy's
    """``scatter(a, b, i, like)``: ``a + onehot(i)*b`` along the axis of ``like``, with ``b`` per sample."""

    nargs = 4


def _linear(expr: sympy.Expr, t: sympy.Symbol):
    """``(g0, g1)`` with ``expr == g0 + t*g1`` and neither holding ``t``; None if ``expr`` is not linear in ``t``."""
    slope = sympy.diff(expr, t)
    if t in slope.free_symbols:
        return None
    return expr.xreplace({t: sympy.S.Zero}), slope


def _indexed_one(expr: sympy.Expr, t: sympy.Symbol, index: sympy.Symbol, mate: sympy.Symbol, vectors: frozenset):
    """One expression in terms of ``index`` (not ``t``), or None."""

    def picked(g: sympy.Expr) -> sympy.Expr:
        """``g`` at the class index. Picking commutes with sums, products and powers, so a product of
        per-class factors (``weight*logits``) is gathered factor by factor, never formed over every class; a
        reduction over the axis, an axis length and an entry already picked are one value per sample, the same
        at every class."""
        if (not g.free_symbols & vectors or isinstance(g, (axis_size, pick))
                or (isinstance(g, AxisFunction) and g.reduces)):
            return g
        if isinstance(g, (sympy.Add, sympy.Mul, sympy.Pow)):
            return g.func(*map(picked, g.args))
        if isinstance(g, where) and not g.args[0].free_symbols & vectors:  # a condition the same at every class
            return where(g.args[0], picked(g.args[1]), picked(g.args[2]))
        return pick(g, index)

    # 1. Reductions over the axis that hold t, innermost first.
    while True:
        budget.tick()
        inner = [n for n in expr.atoms(*AXIS_OPERATIONS) if t in n.free_symbols
                 and not any(t in a.free_symbols for a in n.args[0].atoms(*AXIS_OPERATIONS))]
        if not inner:
            break
        mapping = {}
        for node in inner:
            if not isinstance(node, (axis_sum, axis_mean)):
                return None
            parts = _linear(node.args[0], t)
            if parts is None:
                return None
            g0, g1 = parts
            rest = node.func(g0) if g0 != 0 else sympy.S.Zero
            mapping[node] = rest + (picked(g1) if node.func is axis_sum else picked(g1) / axis_size(mate))
        expr = expr.xreplace(mapping)
    # 2. What is left of t is elementwise: a + t*b.
    if t in expr.free_symbols:
        parts = _linear(expr, t)
        if parts is None:
            return None
        a, b = parts
        expr = scatter(a, picked(b), index, mate)
    return expr


def indexed(exprs: tuple[sympy.Expr, ...], t: sympy.Symbol, mate: sympy.Symbol,
            vectors: frozenset) -> tuple[sympy.Expr, ...] | None:
    """``exprs`` (a loss and its gradients) with the one-hot ``t`` given as class indices, or None.

    ``mate`` is a vector on the same axis (its length is the number of classes);
    ``vectors`` the vector symbols. In the result the symbol ``t`` stands for the
    integer indices and appears only as the index of :class:`pick` and :class:`scatter`.
    """
    index = sympy.Dummy("index")  # t's place while t itself is differentiated away
    out = []
    for e in exprs:
        new = _indexed_one(e, t, index, mate, vectors - {t})
        if new is None:
            return None
        out.append(new)
    return tuple(e.xreplace({index: t}) for e in out)
