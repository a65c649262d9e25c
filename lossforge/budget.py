"""One size and time budget for every stage that can grow expressions.

A few bytes of spec text can stand for an expression SymPy cannot afford:
``(x0 + ... + x9)**30`` expands to 211 million terms, ``simplify`` of a
product holding 16 nested ``where`` took minutes, a gradient can repeat a
subexpression until its tree dwarfs its graph. Every stage that
builds or walks expressions (``derive``, ``stabilize``, ``check``,
``properties``, ``render``) therefore runs under one :class:`Budget`:

* ``nodes``: the largest *tree size* a stage accepts, summed over the
  expressions it is handed (the loss and its gradients). Tree size is what
  the tree walkers of lossforge and SymPy pay (``xreplace``, ``replace``, the
  hazard rules' walk, the printers without CSE, ``lambdify``); it is counted
  here with one memo entry per distinct node (object), so counting costs the
  size of the expression *graph*, never of the tree, and stops as soon as the
  limit is passed (81,000 nodes count in 8 ms). 40,000 is 100 times the
  largest built-in (cosine_embedding: 384 nodes) and 23 times the largest
  spec of the test suite (a 120-term sum: 1,702), and what the whole
  pipeline (derive, check, both targets' code) gets through in about a
  second: a product of 130 sigmoids of 130 inputs has 34,700 nodes, one of
  200 has 81,400 and takes 2-3 s, so it is refused, by derive, in 0.2 s.
* Compiling to 30-digit mpmath code (``properties``) costs 50-950 us a node
  and 13 ms an expression, where derive and check spend 9-20 us a node: there
  a node counts :data:`COMPILE_WEIGHT` times and an expression
  :data:`COMPILE_OVERHEAD` nodes (:func:`check_compiled`). The library's
  largest (cosine_embedding, written out over an axis) counts 18,834.
* ``seconds``: the wall time of one stage (20 s; the slowest built-in stage
  takes under 1 s). A deadline is checked between steps (:func:`tick`), so
  before any single SymPy call that can blow up (``simplify``, ``expand``,
  ``cse``, ``Poly``, ``lambdify``), its operand's size is checked first.

Exceeding either raises, naming the stage, the measured value and the limit:
:class:`DeriveError` in ``derive``, :class:`RenderError` in ``render``,
:class:`AnalysisError` elsewhere. ``DEFAULT`` is the one place the limits
live; :func:`limits` changes them for a block of code.

Equality of expressions is decided without expanding powers
(:func:`identically_zero`): SymPy's automatic canonicalisation first, then
products distributed over sums, only where the result is provably small.
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from dataclasses import dataclass

import sympy

from .errors import AnalysisError, DeriveError, LossforgeError, RenderError


@dataclass(frozen=True)
class Budget:
    """The most a stage may spend: ``nodes`` of expression tree, ``seconds`` of wall time."""

    nodes: int
    seconds: float


#: The budget every stage runs under unless :func:`limits` says otherwise.
DEFAULT = Budget(nodes=40_000, seconds=20.0)
#: The most terms a product may distribute into when deciding equality, or expand into anywhere.
EXPAND_TERMS = 2_000
#: What compiling with ``lambdify`` and evaluating in 30-digit mpmath costs, in nodes of the budget: per
#: node of the compiled tree, and per expression compiled (measured: 50-950 us a node and 13 ms an
#: expression, where the tree walks of derive and check take 9-20 us a node).
COMPILE_WEIGHT = 6
COMPILE_OVERHEAD = 150
#: The stages, in pipeline order; each names the error class it raises.
STAGES = {"derive": DeriveError, "stabilize": AnalysisError, "check": AnalysisError,
          "properties": AnalysisError, "render": RenderError}
ADVICE = ("split the loss into terms and add them with lf.combine, nest fewer where(), or raise the limit "
          "with lossforge.budget.limits(Budget(nodes=..., seconds=...))")

_budget: ContextVar[Budget] = ContextVar("lossforge_budget", default=DEFAULT)
#: The deadlines in force, outermost first: (stage, end time, seconds allowed).
_deadlines: ContextVar[tuple[tuple[str, float, float], ...]] = ContextVar("lossforge_deadlines", default=())


def current() -> Budget:
    """The budget in force."""
    return _budget.get()


@contextmanager
def limits(budget: Budget) -> Iterator[Budget]:
    """Run a block under ``budget`` instead of :data:`DEFAULT` (a bigger loss, or a test of the limit)."""
    if not isinstance(budget, Budget) or budget.nodes < 1 or not budget.seconds > 0:
        raise AnalysisError(f"a budget needs nodes >= 1 and seconds > 0, got {budget!r}", token="budget")
    token = _budget.set(budget)
    try:
        yield budget
    finally:
        _budget.reset(token)


def exceeded(stage: str, what: str) -> LossforgeError:
    """The error a stage raises when it passes its budget; ``what`` says by how much."""
    cls = STAGES.get(stage, AnalysisError)
    return cls(f"{stage} exceeded its budget: {what}; {ADVICE}", token=stage)


# -- size ---------------------------------------------------------------------------------


def _post_order(roots: list[sympy.Basic], memo: dict[int, int]) -> Iterator[tuple[sympy.Basic, tuple]]:
    """Each distinct node (by identity) under ``roots`` once, after its arguments, with its arguments.

    The caller stores a value for each node in ``memo`` (keyed by ``id``) before asking
    for the next: a node already there is not visited again. By identity, so no
    structural ``__eq__`` is paid; the walk holds every node it yields, so ids stay theirs.
    """
    keep: list[sympy.Basic] = []
    for root in roots:
        stack: list[tuple[sympy.Basic, tuple | None]] = [(root, None)]
        while stack:
            node, args = stack.pop()
            if id(node) in memo:
                continue
            if args is None:
                args = node.args
                stack.append((node, args))
                stack.extend((a, None) for a in args if id(a) not in memo)
                continue
            keep.append(node)
            yield node, args


def tree_size(*exprs: sympy.Basic, cap: int | None = None) -> int:
    """The total tree size of ``exprs`` (each node counted once per occurrence), at most ``cap + 1``.

    A memo keyed by node identity makes the cost the number of distinct nodes
    (objects), and the count stops once ``cap`` distinct nodes are seen,
    since the tree is then larger than ``cap`` already.
    """
    limit = math.inf if cap is None else cap
    memo: dict[int, int] = {}
    for node, args in _post_order([e for e in exprs if isinstance(e, sympy.Basic)], memo):
        memo[id(node)] = min(1 + sum(memo[id(a)] for a in args), limit + 1)
        if len(memo) > limit:
            return int(limit) + 1
    return int(min(sum(memo[id(e)] for e in exprs if isinstance(e, sympy.Basic)), limit + 1))


def check(stage: str, *exprs: sympy.Basic) -> int:
    """Raise :func:`exceeded` if ``exprs`` together pass the node budget; else return their tree size."""
    nodes = current().nodes
    size = tree_size(*exprs, cap=nodes)
    if size > nodes:
        raise exceeded(stage, f"its expressions have more than {nodes:,} nodes (limit {nodes:,} nodes)")
    tick()
    return size


def check_compiled(stage: str, *exprs: sympy.Basic, scale: int = 1) -> int:
    """:func:`check` for expressions about to be compiled and evaluated in mpmath, at their cost.

    One such node costs :data:`COMPILE_WEIGHT` nodes of the budget, and each
    expression :data:`COMPILE_OVERHEAD` more; ``scale`` is how many times
    larger the compiled form is (written out over an axis). Returns the cost.
    """
    nodes = current().nodes
    size = min(tree_size(*exprs, cap=nodes) * scale, nodes + 1)
    cost = COMPILE_WEIGHT * size + COMPILE_OVERHEAD * len(exprs)
    if cost > nodes:
        raise exceeded(stage, f"compiling its {len(exprs):,} expressions of {size:,} nodes counts as {cost:,} nodes "
                              f"({COMPILE_WEIGHT} a node, {COMPILE_OVERHEAD} an expression; limit {nodes:,} nodes)")
    tick()
    return cost


# -- time ---------------------------------------------------------------------------------


@contextmanager
def deadline(stage: str) -> Iterator[None]:
    """Give the block ``stage``'s time budget; :func:`tick` inside it raises once that has passed.

    Deadlines nest (``stabilize`` runs ``check``, which runs ``derive``): every
    one in force is checked, and the error names the stage whose time ran out.
    """
    seconds = current().seconds
    token = _deadlines.set(_deadlines.get() + ((stage, time.perf_counter() + seconds, seconds),))
    try:
        yield
    finally:
        _deadlines.reset(token)


def tick() -> None:
    """Raise :func:`exceeded` if a deadline in force has passed (cheap: call it inside loops)."""
    active = _deadlines.get()
    if active:
        now = time.perf_counter()
        for stage, end, seconds in active:
            if now > end:
                raise exceeded(stage, f"it ran for {seconds + now - end:.1f} s (limit {seconds:g} seconds)")


# -- expansion without blow-up ------------------------------------------------------------


def expanded_terms(expr: sympy.Basic, multinomial: bool = False, cap: int = EXPAND_TERMS) -> int:
    """An upper bound on the terms ``expand`` gives ``expr`` (at most ``cap + 1``), from its structure alone.

    A sum has the terms of its parts, a product their product; a power of a
    sum, with ``multinomial``, the multinomial count C(n + k - 1, k - 1); any
    other node is one term whose arguments are expanded on their own.
    The bound counts every node's own expansion, so it also bounds the work.
    """
    memo: dict[int, int] = {}
    work = 0
    for node, args in _post_order([expr], memo):
        parts = [memo[id(a)] for a in args]
        if node.is_Add:
            n = sum(parts)
        elif node.is_Mul:
            n = 1
            for p in parts:
                n = min(n * p, cap + 1)
        elif node.is_Pow and multinomial and node.exp.is_Integer and node.exp > 0 and parts[0] > 1:
            k, e = parts[0], int(node.exp)
            n = math.comb(e + k - 1, k - 1) if e <= cap else cap + 1
        else:
            n = 1  # its arguments are expanded on their own: counted in the work
        memo[id(node)] = n = min(n, cap + 1)
        work += n
        if work > cap:
            return cap + 1
    return min(max(memo[id(expr)], work), cap + 1)


#: expand() hints that distribute products over sums and nothing else.
_MUL_ONLY = dict(mul=True, multinomial=False, power_exp=False, power_base=False, log=False, basic=False)


def expand_mul(expr: sympy.Expr, cap: int = EXPAND_TERMS) -> sympy.Expr | None:
    """``expr`` with products distributed over sums (powers, exps and logs kept), or None if too large."""
    if expanded_terms(expr, cap=cap) > cap:
        return None
    return sympy.expand(expr, **_MUL_ONLY)


def identically_zero(expr: sympy.Expr, cap: int = EXPAND_TERMS) -> bool:
    """Whether ``expr`` is shown to be 0 without expanding powers: True is proof, False is "not shown".

    SymPy's automatic canonicalisation first (``x - x`` is already 0), then
    products distributed over sums, only when :func:`expanded_terms` bounds
    the result by ``cap`` terms.
    """
    if expr == 0:
        return True
    distributed = expand_mul(expr, cap)
    return distributed is not None and distributed == 0
