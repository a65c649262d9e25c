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

from bisect import insort
from collections.abc import Callable, Iterable
from functools import cmp_to_key

import sympy

from . import budget

Query = Callable[[sympy.Basic], object]
Value = Callable[[sympy.Basic], sympy.Basic | None]


#: SymPy's canonical order of the factors of a product (what ``Mul.flatten`` sorts them by).
_CANONICAL = cmp_to_key(sympy.Basic.compare)


def _rebuilt(node: sympy.Basic, args: tuple, new: list) -> sympy.Basic:
    if all(a is b for a, b in zip(args, new)):
        return node
    return product(node, new) if type(node) is sympy.Mul else node.func(*new)


def _lone_factor(factor: sympy.Basic) -> bool:
    """Whether ``Mul.flatten`` keeps ``factor`` as it is, combining it with no factor but one of its base.

    A symbol, a sum or an applied function (not exp, which is a power of E),
    that is no number: ``flatten`` only appends it as its own base to the power 1.
    """
    return (factor.is_commutative and not factor.is_number
            and (factor.is_Symbol or factor.is_Add or (factor.is_Function and not isinstance(factor, sympy.exp))))


def product(node: sympy.Basic, new: list) -> sympy.Basic:
    """``Mul(*new)``, where ``new`` is the product ``node``'s factors with some changed, each maybe into a product.

    SymPy's ``Mul.flatten`` sorts all n factors again for every rebuild, and
    the gradients of a product of n factors are n such products (a product of
    200 sigmoids: 200 rebuilds of 200 factors in each pass). Where every changed
    factor is a number or a product of lone factors (:func:`_lone_factor`) whose
    bases are those of no other factor, ``flatten`` would keep each factor as it is, so
    here each is inserted at its place in SymPy's order among the unchanged
    ones (sorted already: ``node`` is canonical), and the numbers multiply the
    coefficient, which stays first. Anything else, and a result of fewer than
    three factors (where ``flatten`` distributes a number over a sum), is ``Mul(*new)``.
    """
    args = node.args
    if type(node) is not sympy.Mul or not node.is_commutative or len(new) != len(args):
        return sympy.Mul(*new)
    numbers, kept, put = [], [], []
    for a, b in zip(args, new):
        if a is b:
            kept.append(a)
            continue
        c, rest = b.as_coeff_Mul()
        if c is not sympy.S.One:
            numbers.append(c)
        if rest is not sympy.S.One:
            put.extend(sympy.Mul.make_args(rest))
    own = [kept.pop(0)] if kept and kept[0].is_Number else []
    if numbers and any(a.is_number for a in kept):  # 2*sqrt(2): flatten may combine numbers and numeric powers
        return sympy.Mul(*new)
    numbers += own
    coeff = numbers[0] * numbers[1] if len(numbers) == 2 else numbers[0] if numbers else sympy.S.One
    bases = {a.as_base_exp()[0] for a in kept}
    if (len(numbers) > 2 or not coeff.is_finite or coeff.is_zero  # (three floats: the order of rounding)
            or len(kept) + len(put) + (coeff is not sympy.S.One) < 3
            or not all(_lone_factor(b) and b not in bases for b in put) or len(set(put)) < len(put)):
        return sympy.Mul(*new)
    for b in put:
        insort(kept, b, key=_CANONICAL)
    if coeff is not sympy.S.One:
        kept.insert(0, coeff)
    return sympy.Mul._exec_constructor_postprocessors(sympy.Mul._from_args(kept, True))


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
