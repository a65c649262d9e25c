"""Cheaper printed forms: the rewrite stage between the prepared expressions and the printers.

The loss and its gradients are rewritten together (a form shared between the
value and a gradient is the point of several rewrites), before the
double-where guards and CSE. Each rewrite is a :class:`Form`: mathematically
an identity on the domain it checks, so the printed code computes the same
function with fewer or cheaper kernels. ``tests/test_forms.py`` checks each
one symbolically and against mpmath at ordinary and extreme points.

A rewrite that changes rounding says so in its summary: ``1 - sigmoid(u)``
for ``sigmoid(-u)`` is torch's own form (``binary_cross_entropy_with_logits``
and torchvision's focal loss compute it so), exact to an absolute error of
one rounding of 1, never a NaN or an inf where the other form is finite.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import sympy

from .. import budget, walk
from ..language import clamp, sigmoid, softplus, where
from .printers import grouped


@dataclass(frozen=True)
class Bounds:
    """The bounds of symbols (from their domains) that a rewrite may rely on: symbol -> number, each side."""

    lower: dict
    upper: dict


@dataclass(frozen=True)
class Form:
    """One rewrite: its name, what it does, the node types it looks at, and how it rewrites one.

    ``rule(found, bounds)`` is given every node of ``types`` in the loss and its
    gradients (a form may depend on what else is computed) and returns the
    function from one such node to its replacement, or None to keep it.
    """

    name: str
    summary: str
    types: tuple[type, ...]
    rule: Callable[[set, Bounds], Callable[[sympy.Basic], sympy.Basic | None]]


def _nonnegative(expr: sympy.Expr, bounds: Bounds) -> bool:
    """Whether ``expr`` is provably >= 0, its symbols at or above their lower bounds (or, for an expression that
    falls as they grow, ``1 - 2*eps``, at or below their upper bounds)."""
    if expr.is_nonnegative:
        return True
    for side, sign in ((bounds.lower, 1), (bounds.upper, -1)):
        shifted = {s: side[s] + sign * sympy.Dummy(nonnegative=True) for s in expr.free_symbols if s in side}
        if shifted and expr.xreplace(shifted).is_nonnegative is True:
            return True
    return False


# -- clamp: a select between u and its bound -----------------------------------------


def _clamp_select(node: sympy.Basic, bounds: Bounds):
    """``where(|u| < d, k*u, k*d*sign(u))`` (or ``<=``) as ``k*clamp(u, -d, d)``, for d >= 0; else None."""
    parts = _bounded(node, bounds)
    if parts is None:
        return None
    u, d, a, b = parts
    k = _slope(a, u)
    if k is None or sympy.cancel(b - k * d * sympy.sign(u)) != 0:
        return None
    return k * clamp(u, -d, d)


def _bounded(node: sympy.Basic, bounds: Bounds):
    """``(u, d, a, b)`` of ``where(|u| < d, a, b)`` (or ``<=``) with d >= 0 and free of u; else None."""
    if not isinstance(node, where):
        return None
    cond, a, b = node.args
    if not isinstance(cond, (sympy.StrictLessThan, sympy.LessThan)) or not isinstance(cond.lhs, sympy.Abs):
        return None
    u, d = cond.lhs.args[0], cond.rhs
    if u.free_symbols & d.free_symbols or not _nonnegative(d, bounds):
        return None
    return u, d, a, b


def _slope(expr: sympy.Expr, u: sympy.Expr) -> sympy.Expr | None:
    """``expr / u``, if free of ``u`` (and of selects, signs and abs); else None."""
    k = sympy.cancel(expr / u)
    if k.free_symbols & u.free_symbols or k.has(sympy.sign, sympy.Abs, where):
        return None
    return k


def _huber_select(node: sympy.Basic, bounds: Bounds):
    """``where(|u| < d, k*u**2/2, k*d*(|u| - d/2))`` as ``k*c*(u - c/2)``, c = clamp(u, -d, d); else None.

    Inside the bound c = u and ``u*(u - u/2)`` is ``u**2/2`` to the bit (halving is exact);
    outside c = +-d and ``+-d*(u -+ d/2)`` is ``d*(|u| - d/2)`` to the bit. The clamp is the
    one the gradient computes (the clamp form), so the value costs a multiply-add more.
    """
    parts = _bounded(node, bounds)
    if parts is None:
        return None
    u, d, a, b = parts
    k = _slope(2 * a / u, u)
    if k is None or sympy.cancel(b - k * d * (sympy.Abs(u) - d / 2)) != 0:
        return None
    c = clamp(u, -d, d)
    return k * c * (grouped(u) - c / 2)  # u first, as one sum: (p - t) - c/2, not p - c/2 - t


def _clamps(found, bounds):
    def rewrite(node):
        return _clamp_select(node, bounds) or _huber_select(node, bounds)

    return rewrite


def _clamp_slopes(found, bounds):
    """``where(lo <= u <= hi, 1, 0)``, a clamp's slope, as ``where(clamp(u, lo, hi) == u, 1, 0)`` where the clamp is
    computed too and lo <= hi: one comparison with what is computed already for two comparisons and an ``and``.

    For lo <= hi the clamp returns u exactly where u lies in [lo, hi] and a bound elsewhere
    (a bound that equals u is inside). NaN is in neither (NaN == NaN is false), as before.
    """
    clamps = {(c.args[0], c.args[1], c.args[2]): c for c in found if isinstance(c, clamp)}

    def rewrite(node):
        if not isinstance(node, where):
            return None  # a clamp: looked at only to be found
        cond, a, b = node.args
        if (a, b) != (1, 0) or not isinstance(cond, sympy.And) or len(cond.args) != 2:
            return None
        sides = {}
        for c in cond.args:
            if isinstance(c, sympy.GreaterThan) and c.lhs.free_symbols:
                sides.setdefault("lo", (c.lhs, c.rhs))
            elif isinstance(c, sympy.LessThan) and c.lhs.free_symbols:
                sides.setdefault("hi", (c.lhs, c.rhs))
        if len(sides) != 2 or sides["lo"][0] != sides["hi"][0]:
            return None
        u, lo, hi = sides["lo"][0], sides["lo"][1], sides["hi"][1]
        c = clamps.get((u, lo, hi))
        if c is None or not _nonnegative(hi - lo, bounds):
            return None
        return where(sympy.Eq(c, u), sympy.S.One, sympy.S.Zero)

    return rewrite


# -- one sigmoid and one softplus per argument ---------------------------------------


def _mirrored(func, mirror):
    """The rule for ``func(-u)`` as ``mirror(func(u), u)`` where ``func(u)`` is computed too."""

    def rule(found, bounds):
        args = {n.args[0] for n in found if isinstance(n, func)}

        def rewrite(node):
            u = -node.args[0]
            return mirror(func(u), u) if node.args[0].could_extract_minus_sign() and u in args else None

        return rewrite

    return rule


# -- u**e from u**(e - 1) --------------------------------------------------------------


def _power_steps(found, bounds):
    """``u**e`` as ``(u**(e - 1))*u`` where ``u**(e - 1)`` is computed too and e - 1 >= 0.

    One power (an exp and a log per element) becomes a multiplication. At u = 0
    both forms are 0 (e >= 1), at inf both inf, NaN stays NaN. The product is
    kept apart (``grouped``) so that SymPy does not fold it back into ``u**e``.
    """
    have = {(p.base, p.exp) for p in found if isinstance(p, sympy.Pow) and not p.exp.is_Number}

    def rewrite(p):
        if p.exp.is_Number or (p.base, p.exp - 1) not in have or not _nonnegative(p.exp - 1, bounds):
            return None
        return grouped(p.base ** (p.exp - 1)) * p.base

    return rewrite


# -- tanh from its stable pieces -------------------------------------------------------


def _tanhs(found, bounds):
    """``sign(u) - 2*sign(u)*e/(e + 1)`` with ``e = exp(-2*|u|)`` as ``tanh(u)``: one kernel for six.

    It is the gradient of log_cosh's stable form ``|u| + log1p(exp(-2|u|)) - log 2``:
    ``sign(u)*(1 - e)/(1 + e)`` is ``sign(u)*tanh(|u|)``, which is ``tanh(u)``. Both are
    finite everywhere (e is in (0, 1]), 0 at u = 0, +-1 past |u| = 19 in float64; NaN stays NaN.
    """

    def matched(node):
        for s, rest in (node.args, node.args[::-1]):
            if isinstance(s, sympy.sign):
                e = sympy.exp(-2 * sympy.Abs(s.args[0]))
                if rest == -2 * s * e / (e + 1):
                    return sympy.tanh(s.args[0])
        return None

    def rewrite(node):
        if len(node.args) != 2:
            return None
        found = matched(node)
        if found is None and (mirror := -node).is_Add:  # a target's gradient: the same, negated
            found = matched(mirror)
            return None if found is None else -found
        return found

    return rewrite


# -- common numeric factors ----------------------------------------------------------


def _common_factors(found, bounds):
    """``2*p - 2*t`` as ``2*(p - t)``: one multiplication, and ``p - t`` is shared with the value.

    Exact for a power-of-two factor; for any other, the factored form rounds once where the
    expanded one rounds twice. SymPy distributes a number over a sum, so the sum is kept apart.
    """

    def rewrite(node):
        content, rest = node.primitive()
        return content * grouped(rest) if content not in (0, 1) and content.is_Rational else None

    return rewrite


# -- terms that cancel ------------------------------------------------------------------


def _monomials(expr: sympy.Expr, cap: int) -> list[sympy.Expr] | None:
    """The terms of ``expr`` with products distributed over sums, each as often as distributing makes it (nothing
    merged or cancelled yet: SymPy's ``expand`` would); function calls and powers whole. None past ``cap`` terms."""
    if expr.is_Add:
        out = []
        for a in expr.args:
            part = _monomials(a, cap - len(out))
            if part is None:
                return None
            out += part
        return out
    if expr.is_Mul:
        out = [sympy.S.One]
        for f in expr.args:
            part = _monomials(f, cap)
            if part is None or len(out) * len(part) > cap:
                return None
            out = [a * b for a in out for b in part]
        return out
    return [expr] if cap > 0 else None


def _cancelled(found, bounds):
    """``(1 - t)*s - t*(1 - s)`` as ``s - t``: a sum whose terms cancel once products are distributed over sums.

    Such sums come from the other forms (``sigmoid(-u)`` as ``1 - sigmoid(u)`` in
    bce_logits' gradient) and from folded defaults (a weight of 1). The distributed
    form is taken only where terms of different summands vanish and no two others
    merge: what is left is computed as before less the terms the floating point had
    to cancel. Merging is refused because it can lose digits: ``t*(1 - s) + (1 - t)*s``
    as ``t + s - 2*t*s`` is 1 - s at t = 1 computed as a difference of numbers near 2;
    so is a summand that cancels within itself (``(x - t)*(x + t)`` is not ``x**2 - t**2``).
    Function calls and powers are kept whole (their arguments are not distributed).
    """

    def rewrite(node):
        if not any(a.is_Mul and any(f.is_Add for f in a.args) for a in node.args):
            return None  # nothing to distribute
        groups: dict[sympy.Expr, dict[int, sympy.Expr]] = {}
        for i, term in enumerate(node.args):
            spread = _monomials(term, budget.EXPAND_TERMS)
            if spread is None:
                return None
            for monomial in spread:
                coefficient, rest = monomial.as_coeff_Mul()
                if i in groups.setdefault(rest, {}):
                    return None  # a term that cancels within itself, (x - t)*(x + t): its written form is the exact one
                groups[rest][i] = coefficient
        kept = [(rest, cs) for rest, cs in groups.items() if sum(cs.values()) != 0]
        if len(kept) == len(groups) or any(len(cs) > 1 for _, cs in kept):
            return None
        return sympy.Add(*(c * rest for rest, cs in kept for c in cs.values()))

    return rewrite


FORMS: tuple[Form, ...] = (
    Form("clamp", "where(|u| < d, k*u, k*d*sign(u)) -> k*clamp(u, -d, d), d >= 0: one kernel for a select, "
         "an abs, a comparison and a sign (huber, smooth_l1 gradients); where(|u| < d, k*u**2/2, "
         "k*d*(|u| - d/2)) -> k*c*(u - c/2), c = clamp(u, -d, d) (their values)", (where,), _clamps),
    Form("clamp-slope", "where(lo <= u <= hi, 1, 0) -> where(clamp(u, lo, hi) == u, 1, 0) where the clamp is "
         "computed too and lo <= hi: one comparison for three operations (bce's gradient)", (where, clamp),
         _clamp_slopes),
    Form("shared-sigmoid", "sigmoid(-u) -> 1 - sigmoid(u) where sigmoid(u) is computed too (torch's form)",
         (sigmoid,), _mirrored(sigmoid, lambda s, u: 1 - s)),
    Form("shared-softplus", "softplus(-u) -> softplus(u) - u where softplus(u) is computed too",
         (softplus,), _mirrored(softplus, lambda s, u: s - u)),
    Form("power-step", "u**e -> u**(e - 1)*u where u**(e - 1) is computed too and e >= 1", (sympy.Pow,),
         _power_steps),
    Form("tanh", "sign(u) - 2*sign(u)*e/(e + 1) -> tanh(u), e = exp(-2*|u|): log_cosh's gradient in one kernel",
         (sympy.Add,), _tanhs),
    Form("common-factor", "c*a + c*b -> c*(a + b) for a rational c", (sympy.Add,), _common_factors),
    Form("cancelled-terms", "(1 - t)*s - t*(1 - s) -> s - t: a sum whose terms cancel once products are "
         "distributed, where none of the others merge (function calls and powers kept whole)", (sympy.Add,),
         _cancelled),
)


def cheaper(exprs: tuple[sympy.Expr, ...], lower: dict | None = None, upper: dict | None = None
            ) -> tuple[sympy.Expr, ...]:
    """``exprs`` (a loss and its gradients) with every :data:`FORMS` rewrite applied.

    One walk collects the nodes every form looks at; each node takes the first
    form that rewrites it; then ``xreplace`` (which rebuilds only what changes)
    until nothing does: a rewritten node whose value holds another rewritten
    one takes one more pass per level of nesting. The nodes the rewrites made
    are then looked at in a new round, up to :data:`_ROUNDS`.
    """
    bounds = Bounds(lower or {}, upper or {})
    types = tuple({t for form in FORMS for t in form.types})
    exprs = tuple(exprs)
    seen: set = set()
    for _ in range(_ROUNDS):
        found = walk.atoms(exprs, *types)
        rules = [(form.types, form.rule(found, bounds)) for form in FORMS]
        mapping = {}
        for node in found - seen:  # a later round looks at the nodes the rewrites made
            for kinds, rewrite in rules:
                new = rewrite(node) if isinstance(node, kinds) else None
                if new is not None and new != node:
                    mapping[node] = new
                    break
        if not mapping:
            break
        seen |= found
        while mapping:
            budget.tick()
            new = walk.xreplace(exprs, mapping)
            if all(a is b for a, b in zip(new, exprs)):
                break
            exprs = new
    return exprs


#: Rounds of rewriting: the nodes one round makes may take a form too (``1 - sigmoid(u)`` from the shared-sigmoid
#: form, then cancelled terms), and a third round finds nothing in any built-in.
_ROUNDS = 3
