"""Walks over expressions that visit each distinct node once.

SymPy's ``replace``, ``xreplace``, ``atoms`` and ``free_symbols`` walk a tree:
a node reached by k paths is visited k times. Gradients share their
subexpressions: those of a product of n factors are n products of the same
factors, n^2 paths to n + n distinct nodes, and the loss and every gradient go
through each rewrite together. These are the same operations with a memo keyed
by node over all the expressions of one call (a SymPy node hashes once and
compares by identity first), so a call costs the number of distinct nodes and
argument links, not of paths. The results are the expressions SymPy's own
methods give: nodes are rebuilt with ``node.func(*args)`` exactly where an
argument changed.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import sympy

from . import budget

Query = Callable[[sympy.Basic], object]
Value = Callable[[sympy.Basic], sympy.Basic | None]


def _rebuilt(node: sympy.Basic, args: tuple, new: list) -> sympy.Basic:
    return node if all(a is b for a, b in zip(args, new)) else node.func(*new)


def replace(exprs: Iterable[sympy.Basic], query: Query, value: Value) -> tuple[sympy.Basic, ...]:
    """``tuple(e.replace(query, value) for e in exprs)`` for callables, bottom up as SymPy's.

    Each node's arguments are rewritten first, then the node is rebuilt if one
    changed, then ``value`` replaces it if ``query`` holds and ``value`` gives
    something other than ``None`` or the node itself. As in SymPy's simultaneous
    mode, a rebuilt node that evaluates to one of its rewritten arguments is
    not asked again.
    """
    memo: dict[sympy.Basic, sympy.Basic] = {}

    def walk(node: sympy.Basic) -> sympy.Basic:
        found = memo.get(node)
        if found is not None:
            return found
        out = node
        args = getattr(node, "args", None)
        if args is not None:
            if args:
                new = [walk(a) for a in args]
                out = _rebuilt(node, args, new)
                if out is not node and any(out == a and a != n for a, n in zip(args, new)):
                    memo[node] = out
                    return out
            if query(out):
                v = value(out)
                if v is not None and v != out:
                    out = v
        memo[node] = out
        return out

    budget.tick()
    return tuple(walk(e) for e in exprs)


def xreplace(exprs: Iterable[sympy.Basic], rule: dict) -> tuple[sympy.Basic, ...]:
    """``tuple(e.xreplace(rule) for e in exprs)``: exact nodes replaced, top down, rebuilt where changed."""
    exprs = tuple(exprs)
    if not rule:
        return exprs
    memo: dict[sympy.Basic, sympy.Basic] = {}

    def walk(node: sympy.Basic) -> sympy.Basic:
        if node in rule:
            return rule[node]
        found = memo.get(node)
        if found is not None:
            return found
        args = getattr(node, "args", ())
        out = _rebuilt(node, args, [walk(a) for a in args]) if args else node
        memo[node] = out
        return out

    budget.tick()
    return tuple(walk(e) for e in exprs)


def atoms(exprs: Iterable[sympy.Basic], *types: type) -> set[sympy.Basic]:
    """Every node of ``exprs`` that is an instance of one of ``types`` (``Basic.atoms(*types)``)."""
    seen: set[sympy.Basic] = set()
    found: set[sympy.Basic] = set()
    stack = [e for e in exprs if isinstance(e, sympy.Basic)]
    while stack:
        node = stack.pop()
        if node in seen:
            continue
        seen.add(node)
        if isinstance(node, types):
            found.add(node)
        stack.extend(node.args)
    budget.tick()
    return found


_UNION_OF_ARGS: dict[type, bool] = {}


def _union_of_args(kind: type) -> bool:
    """Whether ``kind``'s free symbols are those of its arguments (``Basic``'s own rule, not overridden)."""
    found = _UNION_OF_ARGS.get(kind)
    if found is None:
        rule = next(k.__dict__["free_symbols"] for k in kind.__mro__ if "free_symbols" in k.__dict__)
        found = _UNION_OF_ARGS[kind] = rule is sympy.Basic.__dict__["free_symbols"]
    return found


def symbols_of() -> Callable[[sympy.Basic], frozenset]:
    """A memoized ``free_symbols``: ``f(node)`` is ``node.free_symbols``, each distinct node computed once.

    A node whose class has its own rule (a symbol; a derivative or lambda, which
    bind variables) is asked for its own.
    """
    memo: dict[sympy.Basic, frozenset] = {}

    def free(node: sympy.Basic) -> frozenset:
        found = memo.get(node)
        if found is None:
            if node.args and _union_of_args(type(node)):
                found = frozenset().union(*(free(a) for a in node.args))
            else:
                found = frozenset(node.free_symbols)
            memo[node] = found
        return found

    return free
