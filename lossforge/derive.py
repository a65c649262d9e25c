"""Symbolic gradients, through elementwise functions and axis operations.

Without axis symbols a gradient is just SymPy's ``diff``: every function knows
its own derivative (``fdiff``). With them, the loss is a tree of *axis nodes*
(``sum``, ``mean``, ``logsumexp``, ``norm``, ``amax``, ``amin``, ``cumsum``,
``logcumsumexp``, ``flip``, ``sort``) over elementwise
expressions. Forward-mode ``diff`` through such a node is wrong as soon as a
reduced value is used again inside another reduction (``sum(y*(z -
logsumexp(z)))``), so this module does reverse mode over the axis nodes only:

1. each axis node, innermost first, is replaced by a placeholder symbol;
2. the upstream gradient (adjoint) of each placeholder is accumulated from the
   outermost expression down, with SymPy's ``diff`` for every local partial;
3. a reduction hands its adjoint to its argument multiplied by its *local
   weight* (the function's own ``fdiff``: 1 for ``sum``, the softmax for
   ``logsumexp`` ...); a vector operation hands down its vector-Jacobian
   product (:meth:`AxisFunction.adjoint`: the reverse cumulative sum for
   ``cumsum``, the inverse permutation for ``sort``), the upstream given the
   axis first where it is one value per sample (``sum(cumsum(z))``);
4. a per-sample scalar receiving gradient from a vector expression sums it
   over the axis.

The result for a vector input is an elementwise expression (one entry per
element of the axis), for a scalar input one value per sample: both print
directly as vectorised array code.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import sympy
from sympy.core.function import ArgumentIndexError

from . import budget, walk
from .errors import DeriveError
from .language import (
    AXIS_OPERATIONS,
    axis_ones,
    axis_size,
    axis_sum,
    not_real,
    power,
    quotient,
    real_abs,
    where,
)
from .spec import FrozenMap, LossSpec


@dataclass(frozen=True)
class Derivation:
    """A spec's loss and its gradients, as SymPy expressions.

    ``loss`` is the per-sample loss; ``gradients`` maps each input name to the
    derivative of the per-sample loss with respect to one element of it, and each
    learnable param to the per-sample derivative (reduction scaling is the
    generated code's job).
    """

    spec: LossSpec
    loss: sympy.Expr
    gradients: FrozenMap

    def exprs(self) -> dict[str, sympy.Expr]:
        """``{"loss": ..., "gradient[NAME]": ...}``, the names the analysis reports."""
        out = {"loss": self.loss}
        out.update({f"gradient[{n}]": g for n, g in self.gradients.items()})
        return out


def _placeholder(index: int, vector: bool) -> sympy.Symbol:
    # '__' names cannot collide with user symbols (expr.check_symbol_name).
    return sympy.Symbol(f"__{'vec' if vector else 'red'}{index}", real=True)


#: SymPy's own rules for an applied function and a power, which :func:`_differentiator` follows step for step.
_CHAIN_RULE = sympy.Function._eval_derivative
_POWER_RULE = sympy.Pow._eval_derivative


def _partial(expr: sympy.Function, index: int) -> sympy.Expr:
    """``expr``'s derivative in its ``index``-th argument, as SymPy's chain rule takes it."""
    try:
        return expr.fdiff(index)
    except ArgumentIndexError:
        return sympy.Function.fdiff(expr, index)


def _differentiator():
    """``diff(expr, var)``, memoized per (node, var), with sums, products, functions and powers taken apart here.

    SymPy differentiates an n-factor product through the general Leibniz rule,
    differentiating every factor (through ``Derivative``'s machinery) for
    every variable: a product of 200 sigmoids costs 200 x 200 of those per
    gradient. Here only the factors that hold ``var`` are differentiated, and
    each distinct subexpression once per variable; the terms are built exactly
    as SymPy builds them (the factors in order, the derivative in its place),
    so the result is the same expression. An applied function and a power
    follow SymPy's own chain and power rules (``Function._eval_derivative``,
    ``Pow._eval_derivative``) with this memoized ``diff`` for their arguments,
    where SymPy would build a ``Derivative`` for each (a 300-term sum of
    softplus: 0.8 s of 1.5 s to generate). A ``where`` takes its own rule
    (:meth:`where.derivative`) with this ``diff`` for its branches: through
    SymPy's, 16 nested ones cost a ``Derivative`` per branch and level. Anything
    else is SymPy's ``diff``.
    """
    memo: dict[tuple[sympy.Basic, sympy.Symbol], sympy.Expr] = {}
    symbols_of = walk.symbols_of()

    def diff(expr: sympy.Expr, var: sympy.Symbol) -> sympy.Expr:
        if var not in symbols_of(expr):
            return sympy.S.Zero
        key = (expr, var)
        found = memo.get(key)
        if found is not None:
            return found
        budget.tick()
        if expr == var:
            found = sympy.S.One
        elif expr.is_Add:
            found = sympy.Add(*(diff(a, var) for a in expr.args))
        elif expr.is_Mul:
            args = expr.args
            terms = []
            for i, a in enumerate(args):
                d = diff(a, var)
                if d != 0:
                    terms.append(walk.product(expr, [*args[:i], d, *args[i + 1:]]))
            found = sympy.Add(*terms)
        elif isinstance(expr, sympy.Function) and type(expr)._eval_derivative is _CHAIN_RULE:
            found = sympy.Add(*(_partial(expr, i) * d for i, a in enumerate(expr.args, 1)
                                if not (d := diff(a, var)).is_zero))
        elif isinstance(expr, where):
            found = expr.derivative(lambda branch: diff(branch, var))
        elif expr.is_Pow and type(expr)._eval_derivative is _POWER_RULE:
            base, exp = expr.args
            found = expr * (diff(exp, var) * sympy.log(base) + diff(base, var) * exp / base)
        else:
            found = sympy.diff(expr, var)
        memo[key] = found
        return found

    return diff


def gradients(loss: sympy.Expr, inputs: dict[str, sympy.Symbol], vectors: set[sympy.Symbol],
              stage: str = "derive") -> dict[str, sympy.Expr]:
    """Per-element gradients of ``loss`` with respect to ``inputs``.

    ``vectors`` is the set of symbols that stand for an element of a vector.
    The size of the result is checked against :mod:`lossforge.budget` before
    each whole-tree rewrite (an excess raised as ``stage``'s), and the time between steps.
    """
    diff = _differentiator()
    # Symbolic powers differentiate as e*b**(e-1), not SymPy's b**e*e/b (nan at b = 0);
    # abs of an argument SymPy cannot prove real as sign(u)*du, not through re/im.
    loss = loss.replace(lambda n: n.is_Pow and not n.exp.is_number, lambda n: power(*n.args))
    loss = loss.replace(lambda n: isinstance(n, sympy.Abs) and not n.args[0].is_extended_real,
                        lambda n: real_abs(n.args[0]))

    # 1. Replace axis nodes by placeholders, innermost first.
    nodes: list[tuple[sympy.Symbol, type, tuple[sympy.Expr, ...]]] = []  # (placeholder, operation, its args)
    top = loss
    while True:
        inner = [n for n in top.atoms(*AXIS_OPERATIONS) if not any(a.has(*AXIS_OPERATIONS) for a in n.args)]
        if not inner:
            break
        mapping = {}
        for node in sorted(inner, key=sympy.default_sort_key):
            holder = _placeholder(len(nodes), vector=not node.func.reduces)
            nodes.append((holder, node.func, node.args))
            mapping[node] = holder
        top = top.xreplace(mapping)
    vector_like = set(vectors) | {h for h, f, _ in nodes if not f.reduces}
    targets = set(inputs.values())

    # 2-4. Reverse accumulation over the placeholders, outermost first.
    adjoint: dict[sympy.Symbol, sympy.Expr] = {}

    def anchored(expr: sympy.Expr):
        """A vector symbol of ``expr`` (its axis), else ``expr`` itself (the renderer anchors that)."""
        anchors = sorted(expr.free_symbols & set(vectors), key=sympy.default_sort_key)
        return anchors[0] if anchors else expr

    def push(expr: sympy.Expr, upstream: sympy.Expr, elementwise: bool) -> None:
        for var in expr.free_symbols:
            if var not in targets and var not in adjoint_keys:
                continue
            budget.tick()
            part = upstream * diff(expr, var)
            if part == 0:
                continue
            if elementwise and var not in vector_like:
                # A per-sample value feeds every element: sum its parts over the axis (a part that is
                # the same for every element, as in mean(z - x), sums to that part times the length).
                sizes = {n: sympy.S.One for n in part.atoms(axis_size)}  # a length is the same for every element
                varies = part.xreplace(sizes).free_symbols & vector_like
                part = axis_sum(part) if varies else part * axis_size(anchored(expr))
            adjoint[var] = adjoint.get(var, sympy.S.Zero) + part

    adjoint_keys = {h for h, _, _ in nodes}
    push(top, sympy.S.One, elementwise=False)
    for holder, func, args in reversed(nodes):
        arg = args[0]  # the elementwise argument; the rest (a norm's order, a sort's key) are not differentiated
        upstream = adjoint.get(holder)
        if upstream is None:
            continue
        if not func.reduces and not upstream.free_symbols & vector_like:
            upstream = upstream * axis_ones(anchored(arg))  # sum(cumsum(z)): give the constant the axis
        node = func(*args)
        push(arg, node.adjoint(upstream).xreplace({node: holder}), elementwise=True)

    # Put the axis nodes back (each placeholder's full expression): tree walks, so sizes are checked first.
    found = {name: adjoint.get(sym, sympy.S.Zero) for name, sym in inputs.items()}
    budget.check(stage, *found.values())
    full: dict[sympy.Symbol, sympy.Expr] = {}
    for holder, func, args in nodes:
        full[holder] = func(*(a.xreplace(full) for a in args))
    found = {name: grad.xreplace(full) for name, grad in found.items()}
    budget.check(stage, *found.values())
    grads = written_quotients(_real_form(sympy.Tuple(*found.values())))  # one walk over what they share
    (grads,) = walk.replace((grads,), _has_proportional_terms, _collected)
    return dict(zip(found, grads.args))


def _paired_quotient(term: sympy.Basic) -> tuple[sympy.Expr, sympy.Expr, int, int] | None:
    """(u, v, k, n) if the product holds ``u**k`` and ``v**-n`` with integers n >= 2 and k = n, or
    1 <= k < n for a sum u (a residual, ``(y - mu)*sigma**-2``); u and v not numbers."""
    if not term.is_Mul:
        return None
    downs = [(f.base, int(-f.exp)) for f in term.args
             if f.is_Pow and f.exp.is_Integer and f.exp <= -2 and not f.base.is_number]
    if not downs:
        return None
    for f in term.args:
        u, k = (f.base, f.exp) if f.is_Pow else (f, sympy.S.One)
        if u.is_number or not k.is_Integer or k < 1:
            continue
        for v, n in downs:
            if v != u and (k == n or (u.is_Add and k < n)):
                return u, v, int(k), n
    return None


def _as_quotient(term: sympy.Mul) -> sympy.Expr:
    u, v, k, n = _paired_quotient(term)
    rest = list(term.args)
    rest.remove(u**k)
    rest.remove(v ** (-n))
    return sympy.Mul(*rest) * quotient(u, v) ** k * v ** (k - n)


def written_quotients(expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with each ``u**n * v**-n`` (n >= 2) as ``quotient(u, v)**n``, and a sum's ``u**k * v**-n``
    (k < n) as ``quotient(u, v)**k * v**(k - n)``: the power of a quotient as written, where SymPy's
    canonical form overflows (v**-n) or underflows (u**n) before the two meet, 0 * inf = NaN at u = 0."""
    previous = None
    while previous is not expr:  # a product may hold two pairs
        previous = expr
        (expr,) = walk.replace((expr,), lambda n: _paired_quotient(n) is not None, _as_quotient)
    # Where quotient(u, v) is present, u*v**-1 is that quotient too: terms that are the same value
    # then are the same expression, and SymPy cancels them (-erf(z)*(y - mu)/sigma + erf(z)*quotient(y - mu, sigma)).
    known = {(q.args[0], q.args[1] ** -1): q for q in walk.atoms((expr,), quotient)}

    def unified(term: sympy.Mul) -> sympy.Expr | None:
        for (u, inverse), q in known.items():
            if u in term.args and inverse in term.args:
                rest = list(term.args)
                rest.remove(u)
                rest.remove(inverse)
                return sympy.Mul(*rest) * q
        return None

    if known:
        (expr,) = walk.replace((expr,), lambda n: n.is_Mul, unified)
    return expr


def _proportional_split(term: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr, sympy.Expr] | None:
    """(c, a, rest) with ``term == c*a*rest``, c a number and a the term's one sum, in a sign-normal form
    (``2*mu - 2*y`` and ``y - mu`` both give a = ``mu - y``); None for a term without exactly one sum."""
    if not term.is_Mul:
        return None
    sums = [f for f in term.args if f.is_Add and not f.is_number]
    if len(sums) != 1:
        return None
    content, a = sums[0].primitive()
    if a.could_extract_minus_sign():
        content, a = -content, -a
    numbers = sympy.Mul(*[f for f in term.args if f.is_number])
    rest = sympy.Mul(*[f for f in term.args if not f.is_number and f is not sums[0]])
    return numbers * content, a, rest


def _proportional_groups(add: sympy.Add) -> dict:
    groups: dict = {}
    for term in add.args:
        split = _proportional_split(term)
        key = (term, None) if split is None else (split[1], split[2])
        groups.setdefault(key, []).append((term, split))
    return groups


def _has_proportional_terms(node: sympy.Basic) -> bool:
    return node.is_Add and len(node.args) > 1 and any(len(g) > 1 for g in _proportional_groups(node).values())


def _collected(node: sympy.Add) -> sympy.Expr:
    """``node`` with terms that differ only by a number in their sum collected into one.

    SymPy's own collection misses ``-(y - mu)*R - (2*mu - 2*y)*R/2``, two terms that are each other's
    negatives: in a gradient where R is huge (the Gaussian CRPS at sigma = 1e-30, R ~ 1/sigma**2) their
    float sum is a catastrophic cancellation (-1.1e15 in float32 where the exact value is 0). Collected,
    they are 0, exactly as written. A term without one sum factor is left as it is.
    """
    out = []
    for (a, rest), members in _proportional_groups(node).items():
        if rest is None or len(members) == 1:
            out.extend(term for term, _ in members)
            continue
        out.append(sympy.Add(*(split[0] for _, split in members)) * a * rest)
    return sympy.Add(*out)


def _real_form(grad: sympy.Expr) -> sympy.Expr:
    """Powers and abs back from :class:`power` and :class:`real_abs`; any ``re(u)`` as u, ``im(u)`` as 0.

    Every quantity of a loss is real, or inf/NaN where a hazard is, never
    complex; SymPy may still produce ``re``/``im`` where it cannot prove that.
    """
    present = {type(n) for n in walk.atoms((grad,), power, real_abs, sympy.im, sympy.re)}  # one walk, not four
    if power in present:
        (grad,) = walk.replace((grad,), lambda n: isinstance(n, power), lambda n: n.args[0] ** n.args[1])
    if real_abs in present:
        (grad,) = walk.replace((grad,), lambda n: isinstance(n, real_abs), lambda n: sympy.Abs(n.args[0]))
    if present & {power, real_abs}:  # a rebuilt power or Abs may evaluate to re/im
        present |= {type(n) for n in walk.atoms((grad,), sympy.im, sympy.re)}
    if any(issubclass(t, (sympy.im, sympy.re)) for t in present):
        (grad,) = walk.replace(walk.replace((grad,), lambda n: isinstance(n, sympy.im), lambda n: sympy.S.Zero),
                               lambda n: isinstance(n, sympy.re), lambda n: n.args[0])
    return grad


@lru_cache(maxsize=256)
def derive(spec: LossSpec) -> Derivation:
    """Differentiate a spec: its per-sample loss and one gradient per input.

    Runs under :mod:`lossforge.budget`: a loss or gradient past its node
    limit, or a derivation past its time limit, raises :class:`DeriveError`.
    """
    table = spec.sympy_symbols
    vectors = {table[n] for n, v in spec.symbols.items() if v.axis is not None}
    inputs = {n: table[n] for n in spec.differentiated}
    with budget.deadline("derive"):
        budget.check("derive", spec.sympy)
        loss = written_quotients(spec.sympy)  # ((y - mu)/sigma)**2 as written, not SymPy's (y - mu)**2*sigma**-2
        grads = gradients(loss, inputs, vectors)
        budget.check("derive", loss, *grads.values())
    bad = not_real(sympy.Tuple(*grads.values())) is not None  # one walk; then the gradient is named
    for name, grad in grads.items() if bad else ():
        if (what := not_real(grad)) is not None:
            raise DeriveError(
                f"the gradient with respect to {name!r} holds {what} as written: a derivative is taken at a "
                f"constant singular point (such as xlogy(x, 0) or sqrt(0)); gradient: {grad}",
                token=name,
            )
    return Derivation(spec=spec, loss=loss, gradients=FrozenMap(grads))
