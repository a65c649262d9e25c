"""Printers for generated code: SymPy's NumPy, Torch and JAX printers, plus lossforge's functions.

SymPy's dispatch walks the expression; these classes only add a
``_print_<Function>`` method per lossforge function and fix the SymPy 1.14
defects a loss must not inherit:

* ``Max(0, x)`` printed as Python's ``max`` (NumPyPrinter) or ``torch.max``
  (which reduces, it is not elementwise): here ``maximum``/``minimum`` print
  as ``np.maximum``/``torch.maximum`` (``torch.clamp`` against a number);
* ``Heaviside`` printed as ``torch.heaviside`` (no autograd) with H(0) = 1/2:
  here the step is ``sign(max(x, 0))`` (NumPy) or ``ceil(clamp(x, 0, 1))`` (Torch),
  H(0) = 0, and a NaN stays NaN (a cast comparison ``(x > 0)`` would make it 0);
* ``torch.sign(nan)`` is 0: the Torch ``sign`` is the generated ``_sign`` helper,
  which keeps a NaN (``np.sign`` already does);
* the length of an axis, in ``1/n`` (the local weight of ``mean``), printed as a
  Python int: an empty axis raised ``ZeroDivisionError``; here it is ``(n or nan)``,
  and NumPy's ``mean`` over an axis is the generated ``_mean`` helper (np.mean's
  sum and division, the same bits; NaN and no "Mean of empty slice" warning on
  an empty axis);
* no ``log1p``/``expm1``/``logaddexp`` in the Torch printer;
* ``erf``, ``erfc`` and ``loggamma`` printed as ``math.erf`` (scalars only) by
  NumPyPrinter, ``polygamma`` not at all; here they are ``scipy.special``'s
  ``erf``, ``erfc``, ``gammaln``, ``psi`` and ``polygamma`` (NumPy has none of
  them), registered in SymPy's own ``module_imports``: :meth:`imports` is what
  the generated module imports beyond its framework, so only a module that uses
  one of them imports SciPy. Torch has ``torch.erfc`` and ``torch.polygamma``,
  which SymPy's TorchPrinter does not print;
* ``Piecewise`` printed as an eager select whose untaken branch poisons
  gradients with NaN: here every ``where`` is first rewritten by
  :func:`guard_where` (the double-where pattern) and then printed as one
  ``np.where``/``torch.where``.

Numbers print with ``repr`` (17 significant digits), never SymPy's 15.
"""

from __future__ import annotations

from functools import lru_cache

import sympy
from sympy.core.function import _coeff_isneg
from sympy.printing.numpy import JaxPrinter, NumPyPrinter
from sympy.printing.precedence import PRECEDENCE
from sympy.printing.pytorch import TorchPrinter

from .. import walk
from ..language import (
    axis_mean,
    axis_size,
    axis_sum,
    clamp,
    cumsum,
    expm1,
    heaviside,
    log1p,
    logsumexp,
    maximum,
    minimum,
    norm,
    quotient,
    rev_cumsum,
    sigmoid,
    softmax_argument,
    softplus,
    where,
    xlogy,
)

# -- the double-where rewrite ---------------------------------------------------------

#: Functions whose argument can make them non-finite, and a value where they are finite.
_GUARDED_CALLS = ((sympy.log, 1), (log1p, 0), (sympy.exp, 0), (sympy.cosh, 0), (expm1, 0), (sympy.acos, 0),
                  (sympy.loggamma, 1))


def _needs_guard_pow(node: sympy.Basic) -> bool:
    exp = node.exp
    return bool(exp.is_negative or not exp.is_integer)


def _guarded(expr: sympy.Expr, arrays: frozenset) -> sympy.Expr:
    """``expr`` with every risky argument inside a ``where`` branch replaced by a safe value
    wherever that branch is not selected.

    One walk, top down, carrying the selections that lead to each node (outermost first):
    a branch nested in others is guarded by all of them, innermost inside. A then-branch
    is selected where its ``cond`` is true, so its guard is ``where(cond, arg, safe)``; an
    else-branch where ``cond`` is *not true*, which for a NaN operand (every comparison
    but ``!=`` is false) is not the same as where ``Not(cond)`` is true, so its guard is
    ``where(cond, safe, arg)``, never ``where(Not(cond), arg, safe)``. Each (node,
    selections) pair is rewritten once, so nested ``where`` cost the size of the result.
    """

    free = walk.symbols_of()

    def varies(arg: sympy.Basic) -> bool:
        return bool(free(arg) & arrays)

    def keep(arg: sympy.Basic, safe, selections: tuple) -> sympy.Basic:
        for cond, taken in reversed(selections):
            arg = where(cond, arg, safe) if taken else where(cond, safe, arg)
        return arg

    def risky(node: sympy.Basic) -> bool:
        if isinstance(node, tuple(f for f, _ in _GUARDED_CALLS)):
            return varies(node.args[0])
        if isinstance(node, sympy.Pow):
            return _needs_guard_pow(node) and varies(node.base)
        if isinstance(node, (xlogy, sympy.polygamma, quotient)):
            return varies(node.args[1])
        return False

    def guard(node: sympy.Basic, args: list, selections: tuple) -> sympy.Basic:
        for func, safe in _GUARDED_CALLS:
            if isinstance(node, func):
                return func(keep(args[0], safe, selections), evaluate=False)
        if isinstance(node, sympy.Pow):
            return sympy.Pow(keep(args[0], 1, selections), args[1], evaluate=False)
        return node.func(args[0], keep(args[1], 1, selections))  # xlogy, polygamma, quotient: the second

    memo: dict = {}

    def visit(node: sympy.Basic, selections: tuple) -> sympy.Basic:
        key = (node, selections)
        if key in memo:
            return memo[key]
        if isinstance(node, where):
            cond = visit(node.args[0], selections)  # guarded as the enclosing branches say, and its guards too
            out = where(cond, visit(node.args[1], (*selections, (cond, True))),
                        visit(node.args[2], (*selections, (cond, False))))
        elif not node.args or not selections and not node.has(where):
            out = node
        else:
            args = [visit(arg, selections) for arg in node.args]
            if selections and risky(node):
                out = guard(node, args, selections)
            else:
                out = node if all(x is y for x, y in zip(args, node.args)) else node.func(*args)
        memo[key] = out
        return out

    return visit(expr, ())


# -- the NaN-propagating select -------------------------------------------------------

#: Orderings: a NaN operand makes them false, and their negations (``~Ge(u, v)`` is ``Lt(u, v)``) too.
_ORDERINGS = (sympy.StrictLessThan, sympy.LessThan, sympy.StrictGreaterThan, sympy.GreaterThan)


def nan_selects_varying(expr: sympy.Expr, arrays: frozenset) -> sympy.Expr:
    """Every ``where`` whose NaN case picks a constant branch, rewritten to pick the varying one.

    ``where(m >= 0, m, 0)`` (the clamp_min of hinge, triplet and margin losses) selects 0
    where ``m`` is NaN, because a comparison with NaN is false: the NaN is swallowed,
    where torch's loss is NaN. For a condition that is one comparison, a NaN operand
    makes ``<, <=, >, >=, ==`` false and ``!=`` true. Where the branch it then selects
    is constant with respect to the arrays and the other branch varies:

    * an ordering is negated and the branches exchanged, ``where(m < 0, 0, m)``: its
      negation is again false on NaN, so a NaN now selects ``m``, which carries it;
    * ``where(u == v, a, c)`` becomes ``where((u < v) | (u > v), c, a)`` and
      ``where(u != v, c, b)`` becomes ``where((u < v) | (u > v), c, b)``: ``==`` and ``!=``
      negate into each other, which a NaN makes true and false in turn, so only the
      two orderings (both false on NaN) send it to the varying branch.

    Wherever no operand is NaN, ``u < v`` is exactly ``not (u >= v)`` and ``u != v``
    exactly ``(u < v) | (u > v)`` (ties, zeros of either sign and infinities
    included), so the value is unchanged. The gradients (derived from the loss before
    any rewrite, ``where(c, da, db)``) are rewritten on their own by the same rule, which
    is exact for them too: ``where(m >= 0, d, 0)`` becomes ``where(m < 0, 0, d)``, and a
    NaN reaches ``d``. Left alone: conditions made of ``And``/``Or``, conditions on
    params alone, selects between two constants (``where(m >= 0, 1, 0)``, the gradient
    of a clamp: no branch carries the NaN) or two varying branches, and those whose NaN
    case already selects the varying branch. Nested ``where`` are rewritten inside out,
    each by its own condition.
    """

    free = walk.symbols_of()

    def varies(node: sympy.Basic) -> bool:
        return bool(free(node) & arrays)

    def nan_picks(node: where) -> tuple[sympy.Basic, sympy.Basic] | None:
        """(the branch a NaN operand selects, the other), or None for a condition not handled."""
        cond, a, b = node.args
        if not isinstance(cond, sympy.core.relational.Relational) or not varies(cond):
            return None
        if isinstance(cond, (*_ORDERINGS, sympy.Equality)):
            return b, a
        if isinstance(cond, sympy.Unequality):
            return a, b
        return None

    def swappable(node: sympy.Basic) -> bool:
        if not isinstance(node, where):
            return False
        picks = nan_picks(node)
        return picks is not None and not varies(picks[0]) and varies(picks[1])

    def swap(node: where) -> sympy.Basic:
        cond, a, b = node.args
        if isinstance(cond, _ORDERINGS):
            return where(cond.negated, b, a)
        differ = sympy.Or(sympy.Lt(cond.lhs, cond.rhs), sympy.Gt(cond.lhs, cond.rhs))
        return where(differ, b, a) if isinstance(cond, sympy.Equality) else where(differ, a, b)

    return walk.replace((expr,), swappable, swap)[0]


def guard_where(expr: sympy.Expr, arrays: frozenset) -> sympy.Expr:
    """The NaN-propagating select, then the double-where pattern, applied to every ``where`` in ``expr``.

    First :func:`nan_selects_varying`, so that a NaN selects the branch that carries it.
    Then, in ``where(c, a, b)`` both branches are evaluated; where c is false, a
    ``log(x)`` in ``a`` may be ``log(0)``. Its value is discarded, but in
    a derivative of the selection it still enters as ``0 * inf = nan``. So the
    arguments of every such function (``log``, ``sqrt``, division, ``exp`` ...)
    inside a branch are replaced by a value where they are finite, under the
    branch's own selection: ``where(c, log(where(c, x, 1)), b)``, and in the
    else-branch ``where(c, a, log(where(c, 1, x)))`` (selected where c is not true,
    NaN included, see :func:`_guarded`). The result equals ``expr`` wherever it
    is selected, NaN operands included. ``arrays`` are the symbols that vary per
    element: an argument made only of params needs no guard.
    """

    return _guarded(nan_selects_varying(expr, arrays), arrays)


class grouped(sympy.Function):
    """Parentheses SymPy keeps: the per-element part of a sum, evaluated first.

    SymPy sorts ``anchor - positive + eps`` into ``anchor + eps - positive``
    and CSE may then share ``anchor + eps``; in float32 at |anchor| = 1000,
    ``anchor + 1e-6 == anchor``, so the eps is lost. Wrapping the per-element
    terms keeps ``(anchor - positive) + eps``, the order a user (and
    ``F.pairwise_distance``) writes. Only the printers see this function.
    """

    nargs = 1


class as_tensor(sympy.Function):  # noqa: N801 - a SymPy function, lower case like SymPy's
    """A scalar made of params and constants, as a tensor of the working dtype and device.

    Python floats stand for params, and ``torch.exp(0.7)`` is a TypeError: a
    torch function of params alone gets its argument through this wrapper.
    Only the Torch printer sees it.
    """

    nargs = 1


class softmax(sympy.Function):  # noqa: N801 - a SymPy function, lower case like SymPy's
    """``exp(u - logsumexp(u))`` over the axis, kept whole so that CSE cannot split it.

    Printed as one softmax (``torch.softmax``, the NumPy helper
    ``exp(u - max)/sum``): exact at the largest entries, where ``u - logsumexp(u)``
    would round away the digits of a huge u. Only the printers see it.
    """

    nargs = 1


class log_softmax(sympy.Function):  # noqa: N801 - a SymPy function, lower case like SymPy's
    """``u - logsumexp(u)`` over the axis, as one kernel (``torch.log_softmax``). Only the printers see it."""

    nargs = 1


def softmaxes(expr: sympy.Tuple, exp_log_softmax: bool = True) -> sympy.Tuple:
    """Every ``exp(u - logsumexp(u))`` in the expressions as :class:`softmax`; where the value picks
    ``logsumexp(u) - pick(u, i)`` (cross-entropy at a class index), that and the softmax from one
    :class:`log_softmax` (``-pick(log_softmax(u), i)`` and, with ``exp_log_softmax``, ``exp(log_softmax(u))``,
    torch's own forms)."""
    found: dict[sympy.Basic, sympy.Expr | None] = {}  # each exp's softmax argument, asked once

    def is_softmax(node: sympy.Basic) -> bool:
        if not isinstance(node, sympy.exp):
            return False
        if node not in found:
            found[node] = softmax_argument(node.args[0])
        return found[node] is not None

    return _log_softmaxes(walk.replace((expr,), is_softmax, lambda n: softmax(found[n]))[0], exp_log_softmax)


def _log_softmaxes(exprs: sympy.Tuple, exp_log_softmax: bool = True) -> sympy.Tuple:
    """:func:`softmaxes`' second step: ``logsumexp(u) - pick(u, i)`` as ``-pick(log_softmax(u), i)``, and then
    ``softmax(u)`` as ``exp(log_softmax(u))``. One ``log_softmax`` kernel costs half of torch's
    ``logsumexp`` (a composite of eight), and its ``exp`` a third of a ``softmax``. A ``logsumexp(u)`` needed
    elsewhere stays (a branch that needs it, cross-entropy's label smoothing, computes it there). Without
    ``exp_log_softmax`` the softmax stays one (XLA fuses one ``exp(u - max)`` into both, where the ``exp`` of a
    log_softmax would be a second pass of exponentials)."""
    from .indices import pick  # (indices prints nothing; it imports from here)

    def paired(node: sympy.Basic) -> bool:
        return node.is_Add and any(isinstance(t, logsumexp) for t in node.args) and any(
            isinstance(-t, pick) for t in node.args)

    def picked(node: sympy.Add) -> sympy.Expr:
        terms = list(node.args)
        for lse in [t for t in terms if isinstance(t, logsumexp)]:
            mate = next((t for t in terms if isinstance(-t, pick) and (-t).args[0] == lse.args[0]), None)
            if mate is not None:
                terms.remove(lse)
                terms.remove(mate)
                terms.append(-pick(log_softmax(lse.args[0]), (-mate).args[1]))
        return sympy.Add(*terms)

    exprs = walk.replace((exprs,), paired, picked)[0]
    logs = {n.args[0] for n in exprs.atoms(log_softmax)}
    if not logs or not exp_log_softmax:
        return exprs
    return walk.replace((exprs,), lambda n: isinstance(n, softmax) and n.args[0] in logs,
                        lambda n: sympy.exp(log_softmax(n.args[0])))[0]


def group_sums(expr: sympy.Expr, arrays: frozenset) -> sympy.Expr:
    """Group the per-element terms of every sum that also adds constants or params."""

    free = walk.symbols_of()

    def mixed(node: sympy.Basic) -> bool:
        if not node.is_Add:
            return False
        varying = [t for t in node.args if free(t) & arrays]
        return len(varying) >= 2 and len(varying) < len(node.args)

    def split(node: sympy.Add) -> sympy.Expr:
        varying = [t for t in node.args if free(t) & arrays]
        rest = [t for t in node.args if not free(t) & arrays]
        return sympy.Add(grouped(sympy.Add(*varying)), *rest)

    return walk.replace((expr,), mixed, split)[0]


def sympy_builtins_to_lossforge(expr: sympy.Expr) -> sympy.Expr:
    """SymPy's Max/Min/Heaviside/Piecewise in lossforge's elementwise spellings."""

    def piecewise(node):
        out = sympy.nan
        for value, cond in reversed(node.args):
            out = value if cond is sympy.true else where(cond, value, out)
        return out

    def nested(func):
        def build(node):
            out = node.args[-1]
            for arg in reversed(node.args[:-1]):
                out = func(arg, out)
            return out

        return build

    return (
        expr.replace(lambda n: isinstance(n, sympy.Piecewise), piecewise)
        .replace(lambda n: isinstance(n, sympy.Max), nested(maximum))
        .replace(lambda n: isinstance(n, sympy.Min), nested(minimum))
        .replace(lambda n: isinstance(n, sympy.Heaviside), lambda n: heaviside(n.args[0]))
    )


# -- printers ------------------------------------------------------------------------


#: The most terms of a sum printed in SymPy's reading order (see ``_as_ordered_terms``).
SORTED_TERMS = 16


@lru_cache(maxsize=4096)
def _ordered_terms(expr: sympy.Expr, order: str | None) -> tuple:
    """SymPy's ``expr.as_ordered_terms(order)``, once for every target that prints ``expr``.

    Its ordering evaluates each numeric coefficient (``complex(coeff)``): the
    largest single cost of printing a long sum.
    """
    return tuple(expr.as_ordered_terms(order=order))


class _LossPrinterMixin:
    """What both printers share: numbers, comparisons, axis sizes and the arrays' names."""

    #: Set by the renderer: names of vector (axis) symbols, for ``axis_size``.
    vector_names: frozenset = frozenset()
    #: Set by the renderer: names of every array symbol (not params).
    array_names: frozenset = frozenset()
    #: Filled while printing: module-level helpers the printed code calls.
    helpers: set
    #: Whether a softmax beside a log_softmax of the same vector is printed as ``exp(log_softmax(u))``
    #: (:func:`softmaxes`): one kernel's output and a cheap ``exp`` where log_softmax is its own kernel.
    exp_log_softmax: bool = True

    def __init__(self, settings=None):
        super().__init__(settings)
        self._free = walk.symbols_of()  # each node's free symbols, asked once per printer

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"({self._print(expr.lhs)} {op} {self._print(expr.rhs)})"

    # Conditions on arrays combine elementwise (& | ~); conditions on params alone are Python
    # bools, where ~True is -2 (truthy): they combine with and/or/not.
    def _print_And(self, expr):
        word = " & " if self._has_arrays(expr) else " and "
        return "(" + word.join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        word = " | " if self._has_arrays(expr) else " or "
        return "(" + word.join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        return f"({'~' if self._has_arrays(expr) else 'not '}{self._print(expr.args[0])})"

    def _as_ordered_terms(self, expr, order=None):
        """Terms of a sum: those that vary per element first, constants and params last.

        Evaluated left to right, ``anchor + eps - positive`` loses ``eps`` in
        float32 when anchor is large (1000 + 1e-6 == 1000); ``anchor -
        positive + eps`` keeps it, as ``F.pairwise_distance`` does. A sum of more
        than :data:`SORTED_TERMS` terms keeps SymPy's canonical order of its
        arguments (deterministic too): sorting it for reading costs more than
        the rest of its printing.

        A sum that would start with a negated term starts with the first positive
        one instead: ``1 - t``, one operation, not ``-t + 1``, a negation and an
        addition. Swapping the first two terms never changes the value (IEEE
        addition is commutative and negation exact).
        """
        order = "none" if len(expr.args) > SORTED_TERMS else order or self.order
        terms = super()._as_ordered_terms(expr, order) if order in ("none", "old") else _ordered_terms(expr, order)
        terms = sorted(terms, key=lambda t: not self._has_arrays(t))
        if len(terms) > 1 and _coeff_isneg(terms[0]) and not _coeff_isneg(terms[1]):
            terms[0], terms[1] = terms[1], terms[0]
        return terms

    def _has_arrays(self, expr: sympy.Basic) -> bool:
        return any(s.name in self.array_names for s in self._free(expr))

    #: The packages the generated module imports itself (``import numpy as np``, ``import torch``).
    own_modules: tuple[str, ...] = ()

    def imports(self) -> frozenset[str]:
        """The modules the printed code calls into beyond the target's own (``scipy.special``): each
        ``_module_format`` of a qualified name registers its module in SymPy's ``module_imports``."""
        return frozenset(m for m in self.module_imports if m.split(".")[0] not in self.own_modules)

    def _call(self, fqn: str, *args) -> str:
        """``fqn(args...)``, its module registered for :meth:`imports`."""
        return f"{self._module_format(fqn)}({', '.join(self._print(a) for a in args)})"

    def _print_quotient(self, expr):
        u, v = (self.parenthesize(a, PRECEDENCE["Mul"]) for a in expr.args)
        return f"({u} / {v})"

    def _print_grouped(self, expr):
        inner = self._print(expr.args[0])
        return inner if expr.args[0].is_Atom else f"({inner})"

    def _axis_anchor(self, expr) -> str:
        """The first vector named in ``expr``: its last dimension is the axis."""
        return sorted(s.name for s in expr.free_symbols if s.name in self.vector_names)[0]

    def _print_norm(self, expr):
        if len(expr.args) == 2:  # the p-norm: p = 2 picks the Euclidean form at run time
            return self._print(expr.written())
        return self._euclidean(self._print(expr.args[0]))

    def _print_axis_size(self, expr):
        # ``or nan``: a Python int 0 would make ``1/n`` a ZeroDivisionError; NaN is what a mean
        # over an empty axis is (and the gradient it weighs is empty there anyway).
        return f"({self._axis_anchor(expr.args[0])}.shape[-1] or {self._nan})"

    def _print_axis_ones(self, expr):
        return f"{self._fn('ones_like')}({self._axis_anchor(expr.args[0])})"

    def _helper(self, name: str, *args) -> str:
        """A call of the generated helper ``name`` (each target's template defines it); strings print as they are."""
        self.helpers.add(name)
        return f"{name}({', '.join(a if isinstance(a, str) else self._print(a) for a in args)})"

    def _print_extremum_share(self, expr):
        return self._helper("_share", *expr.args)

    def _print_logcumsumexp_adjoint(self, expr):
        return self._helper("_logcumsumexp_grad", *expr.args)

    def _print_axis_sort(self, expr):
        e, key, descending = expr.args
        if key == e:
            return self._sorted(self._print(e), bool(descending))
        return self._helper("_sort_by", e, key, repr(bool(descending)))

    def _print_unsort(self, expr):
        g, key, descending = expr.args
        return self._helper("_unsort", g, key, repr(bool(descending)))

    def _print_where(self, expr):
        cond, a, b = expr.args
        if self._has_arrays(cond):
            return self._where(self._print(cond), a, b)
        # On params alone the condition is one bool: only the branch it picks runs (each in a lambda).
        self.helpers.add("_choose")
        return f"_choose({self._print(cond)}, lambda: {self._branch(a, b)}, lambda: {self._branch(b, a)})"

    def _branch(self, branch, other) -> str:
        """A branch of a ``where`` on params alone."""
        return self._print(branch)

    def _print_Piecewise(self, expr):
        return self._print(sympy_builtins_to_lossforge(expr))

    def _print_Max(self, expr):
        return self._print(sympy_builtins_to_lossforge(expr))

    _print_Min = _print_Max
    _print_Heaviside = _print_Max

    def _print_log1p(self, expr):
        return f"{self._fn('log1p')}({self._print(expr.args[0])})"

    def _print_expm1(self, expr):
        return f"{self._fn('expm1')}({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"{self._fn('sign')}({self._print(expr.args[0])})"

    def _print_Abs(self, expr):
        return f"{self._fn('abs')}({self._print(expr.args[0])})"

    def _print_pick(self, expr):
        self.helpers.add("_pick")
        return f"_pick({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_scatter(self, expr):
        self.helpers.add("_scatter")
        return "_scatter(" + ", ".join(self._print(a) for a in expr.args) + ")"

    def _print_Exp1(self, expr):
        return repr(float(sympy.E))

    def _print_Pi(self, expr):
        return repr(float(sympy.pi))


class _ArrayLossPrinterMixin(_LossPrinterMixin):
    """What the NumPy-like printers share (NumPy, JAX): each call spelled through ``_fn``, the array module's
    own name (``np.``, ``jnp.``); a subclass prints only what its module spells differently."""

    #: The array module as the generated code names it, and its full name (SymPy's ``_module``).
    _short: str
    _long: str

    def __init__(self, settings=None):
        super().__init__({"allow_unknown_functions": False, **(settings or {})})
        self.helpers = set()

    def _module_format(self, fqn, register=True):
        if fqn.startswith(self._long + "."):
            fqn = self._short + "." + fqn[len(self._long) + 1 :]
        return super()._module_format(fqn, register)

    def _fn(self, name: str) -> str:
        return f"{self._short}.{name}"

    @property
    def own_modules(self) -> tuple[str, ...]:
        return (self._short,)

    @property
    def _nan(self) -> str:
        return f"{self._short}.nan"

    def _print_Pow(self, expr, rational=False):
        return self._hprint_Pow(expr, rational=rational, sqrt=self._fn("sqrt"))

    def _where(self, cond: str, a, b) -> str:
        return f"{self._fn('where')}({cond}, {self._print(a)}, {self._print(b)})"

    def _print_axis_sum(self, expr):
        return f"{self._fn('sum')}({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _euclidean(self, text: str) -> str:
        return f"{self._fn('sqrt')}({self._fn('sum')}({self._fn('square')}({text}), axis=-1, keepdims=True))"

    def _print_cumsum(self, expr):
        return f"{self._fn('cumsum')}({self._print(expr.args[0])}, axis=-1)"

    def _print_rev_cumsum(self, expr):
        flip, cumsum = self._fn("flip"), self._fn("cumsum")
        return f"{flip}({cumsum}({flip}({self._print(expr.args[0])}, axis=-1), axis=-1), axis=-1)"

    def _print_amax(self, expr):
        return f"{self._fn('max')}({self._print(expr.args[0])}, axis=-1, keepdims=True, initial=-{self._fn('inf')})"

    def _print_amin(self, expr):
        return f"{self._fn('min')}({self._print(expr.args[0])}, axis=-1, keepdims=True, initial={self._fn('inf')})"

    def _print_logcumsumexp(self, expr):
        return f"{self._fn('logaddexp')}.accumulate({self._print(expr.args[0])}, axis=-1)"

    def _print_flip(self, expr):
        return f"{self._fn('flip')}({self._print(expr.args[0])}, axis=-1)"

    def _sorted(self, text: str, descending: bool) -> str:
        flip, sort = self._fn("flip"), self._fn("sort")
        return f"{flip}({sort}({text}, axis=-1), axis=-1)" if descending else f"{sort}({text}, axis=-1)"

    def _print_clamp(self, expr):
        x, lo, hi = (self._print(a) for a in expr.args)
        return f"{self._fn('clip')}({x}, {lo}, {hi})"

    def _print_xlogy(self, expr):
        x, y = expr.args
        px, py = self._print(x), self._print(y)
        where = self._fn("where")
        return f"{where}({px} == 0, 0.0, {px} * {self._fn('log')}({where}({px} == 0, 1.0, {py})))"

    def _print_heaviside(self, expr):
        # 1 where x > 0, 0 where x <= 0 (inf included), NaN where x is NaN.
        return f"{self._fn('sign')}({self._fn('maximum')}({self._print(expr.args[0])}, 0.0))"

    def _print_maximum(self, expr):
        return f"{self._fn('maximum')}({self._print(expr.args[0])}, {self._print(expr.args[1])})"

    def _print_minimum(self, expr):
        return f"{self._fn('minimum')}({self._print(expr.args[0])}, {self._print(expr.args[1])})"


class NumpyLossPrinter(_ArrayLossPrinterMixin, NumPyPrinter):
    """NumPy code for lossforge expressions (``import numpy as np``).

    Arrays carry the axis as their last dimension; reductions keep it
    (``keepdims=True``) so that per-sample values broadcast against vectors.
    """

    _short, _long = "np", "numpy"

    def _print_erf(self, expr):
        return self._call("scipy.special.erf", *expr.args)

    def _print_erfc(self, expr):
        return self._call("scipy.special.erfc", *expr.args)

    def _print_lgamma(self, expr):
        return self._call("scipy.special.gammaln", *expr.args)

    _print_loggamma = _print_lgamma  # SymPy's own, a renamed subclass does not reach (Printer._print)

    def _print_polygamma(self, expr):
        n, x = expr.args
        if n == 0:
            return self._call("scipy.special.psi", x)
        return self._call("scipy.special.polygamma", n, x)

    def _print_sigmoid(self, expr):
        self.helpers.add("_sigmoid")
        return f"_sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        self.helpers.add("_softplus")
        return f"_softplus({self._print(expr.args[0])})"

    def _print_logsumexp(self, expr):
        self.helpers.add("_logsumexp")
        return f"_logsumexp({self._print(expr.args[0])})"

    def _print_softmax(self, expr):
        self.helpers.add("_softmax")
        return f"_softmax({self._print(expr.args[0])})"

    def _print_log_softmax(self, expr):
        self.helpers.add("_log_softmax")
        return f"_log_softmax({self._print(expr.args[0])})"

    def _print_axis_mean(self, expr):
        # np.mean's own sum and division (the same bits), with no warning on an empty axis.
        self.helpers.add("_mean")
        return f"_mean({self._print(expr.args[0])})"


class JaxLossPrinter(_ArrayLossPrinterMixin, JaxPrinter):
    """JAX code for lossforge expressions (``import jax``, ``import jax.numpy as jnp``).

    NumPy's spellings (the axis last, ``keepdims=True``), with ``jax.nn`` for the
    functions NumPy has no kernel for and ``jax.scipy.special`` for the special
    functions. Every operation is a differentiable jax op, so the generated
    backward (a ``jax.custom_vjp``) can itself be differentiated. Python floats
    stand for constants and params: JAX types them weakly, so results keep the
    arrays' dtype (float32, or float64 under ``jax_enable_x64``).
    """

    _short, _long = "jnp", "jax.numpy"
    #: A softmax beside a log_softmax of the same vector stays a softmax: both are printed over one shift
    #: (``_top``), so XLA computes ``exp(u - max)`` once for the two (see :func:`softmaxes`).
    exp_log_softmax = False

    @property
    def own_modules(self) -> tuple[str, ...]:
        return ("jnp", "jax")  # ``import jax`` brings jax.nn and jax.scipy.special

    def _print_erf(self, expr):
        return self._call("jax.scipy.special.erf", *expr.args)

    def _print_erfc(self, expr):
        return self._call("jax.scipy.special.erfc", *expr.args)

    def _print_lgamma(self, expr):
        return self._call("jax.scipy.special.gammaln", *expr.args)

    _print_loggamma = _print_lgamma

    def _print_polygamma(self, expr):
        n, x = expr.args
        if n == 0:
            return self._call("jax.scipy.special.digamma", x)
        return f"{self._module_format('jax.scipy.special.polygamma')}({int(n)}, {self._print(x)})"

    def _print_sigmoid(self, expr):
        return f"jax.nn.sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        return f"jax.nn.softplus({self._print(expr.args[0])})"

    def _print_logsumexp(self, expr):
        return f"jax.nn.logsumexp({self._print(expr.args[0])}, axis=-1, keepdims=True)"

    def _print_softmax(self, expr):
        self.helpers.add("_softmax")
        return f"_softmax({self._print(expr.args[0])})"

    def _print_log_softmax(self, expr):
        self.helpers.add("_log_softmax")
        return f"_log_softmax({self._print(expr.args[0])})"

    def _print_axis_mean(self, expr):
        return f"jnp.mean({self._print(expr.args[0])}, axis=-1, keepdims=True)"


def _enclosed(text: str) -> bool:
    """Whether printed ``text`` is one operand as it is: a name, or one pair of parentheses around it all."""
    if text.isidentifier():
        return True
    if not text.startswith("("):
        return False
    depth = 0
    for i, char in enumerate(text):
        depth += char == "("
        depth -= char == ")"
        if depth == 0:
            return i == len(text) - 1
    return False


class TorchLossPrinter(_LossPrinterMixin, TorchPrinter):
    """PyTorch code for lossforge expressions (``import torch``).

    Every operation is a differentiable torch op, so a backward built from
    this code can itself be differentiated (double backward). Python floats
    stand for constants and params, so results keep the inputs' dtype and
    device; ``dtype`` and ``device`` are locals of the generated function.
    """

    def __init__(self, settings=None):
        super().__init__(settings)
        self.helpers = set()

    def doprint(self, expr, assign_to=None):
        return super().doprint(self._params_as_tensors(expr), assign_to)

    def _params_as_tensors(self, expr: sympy.Expr) -> sympy.Expr:
        """Arguments of torch calls on params alone (``exp(w)``, ``w**0.5``) wrapped in :class:`as_tensor`."""

        def of_params(node: sympy.Basic) -> bool:
            if node.is_number or self._has_arrays(node) or not self._free(node):
                return False
            if isinstance(node, sympy.Pow):
                return not node.exp.is_integer
            return isinstance(node, sympy.Function) and not isinstance(node, (where, as_tensor, grouped))

        def wrap(node: sympy.Basic) -> sympy.Basic:
            return node.func(*(as_tensor(a) if not a.is_number else a for a in node.args), evaluate=False)

        return walk.replace((expr,), of_params, wrap)[0]

    def _print_as_tensor(self, expr):
        return self._tensor(expr.args[0])

    # A condition on params alone: Python logic on floats eagerly, tensor logic under a compiler (where the
    # params are the buffers): & and | serve both; not and the branch (_choose) are helpers that look.
    def _branch(self, branch, other) -> str:
        # A number beside a tensor branch is a tensor too: CSE may compute a branch's operations outside it.
        return self._tensor(branch) if self._has_arrays(other) and not self._has_arrays(branch) else self._print(branch)

    def _print_And(self, expr):
        if self._has_arrays(expr):
            return super()._print_And(expr)
        return "(" + " & ".join(self._print(a) for a in expr.args) + ")"

    def _print_Or(self, expr):
        if self._has_arrays(expr):
            return super()._print_Or(expr)
        return "(" + " | ".join(self._print(a) for a in expr.args) + ")"

    def _print_Not(self, expr):
        if self._has_arrays(expr):
            return super()._print_Not(expr)
        self.helpers.add("_not")
        return f"_not({self._print(expr.args[0])})"

    _nan = 'float("nan")'
    own_modules = ("torch",)

    def _fn(self, name: str) -> str:
        return f"torch.{name}"

    def _print_erfc(self, expr):
        return self._call("torch.erfc", *expr.args)

    def _print_lgamma(self, expr):
        return self._call("torch.lgamma", *expr.args)

    def _print_acos(self, expr):  # SymPy's TorchPrinter knows sympy.acos by class, not its subclass
        return self._call("torch.acos", *expr.args)

    def _print_polygamma(self, expr):
        n, x = expr.args
        if n == 0:
            return self._call("torch.digamma", x)
        return f"{self._module_format('torch.polygamma')}({int(n)}, {self._print(x)})"

    def _print_sign(self, expr):
        self.helpers.add("_sign")
        return f"_sign({self._print(expr.args[0])})"

    def _print_Pow(self, expr, rational=False):
        return self._hprint_Pow(expr, rational=rational, sqrt="torch.sqrt")

    def _tensor(self, expr) -> str:
        """A tensor operand: constants become tensors of the working dtype and device."""
        text = self._print(expr)
        if self._has_arrays(expr):
            return text
        if isinstance(expr, sympy.logic.boolalg.BooleanAtom):
            return f"_constant({text}, torch.bool, device)"
        return f"_constant({text}, dtype, device)"

    def _where(self, cond: str, a, b) -> str:
        if a == 1 and b == 0:  # an indicator (a clamp's or a hinge's slope): the bools as numbers, one kernel for three
            return f"{cond if _enclosed(cond) else f'({cond})'}.to(dtype)"
        pa = self._tensor(a) if not (self._has_arrays(a) or self._has_arrays(b)) else self._print(a)
        return f"torch.where({cond}, {pa}, {self._print(b)})"

    def _print_sigmoid(self, expr):
        return f"torch.sigmoid({self._print(expr.args[0])})"

    def _print_softplus(self, expr):
        # One fused kernel. Above the threshold softplus(x) is x: log1p(exp(-40)) = 4e-18 is
        # below float64's resolution of 40, so the switch is exact in every dtype (the default
        # threshold of 20 is not, in float64).
        return f"torch.nn.functional.softplus({self._print(expr.args[0])}, beta=1.0, threshold=40.0)"

    def _print_softmax(self, expr):
        return f"torch.softmax({self._print(expr.args[0])}, dim=-1)"

    def _print_log_softmax(self, expr):
        return f"torch.log_softmax({self._print(expr.args[0])}, dim=-1)"

    def _print_logsumexp(self, expr):
        return f"torch.logsumexp({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _print_axis_sum(self, expr):
        return f"torch.sum({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _print_axis_mean(self, expr):
        return f"torch.mean({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _euclidean(self, text: str) -> str:
        return f"torch.sqrt(torch.sum(torch.square({text}), dim=-1, keepdim=True))"

    def _print_cumsum(self, expr):
        return f"torch.cumsum({self._print(expr.args[0])}, dim=-1)"

    def _print_rev_cumsum(self, expr):
        return f"torch.flip(torch.cumsum(torch.flip({self._print(expr.args[0])}, (-1,)), dim=-1), (-1,))"

    def _print_amax(self, expr):
        return f"torch.amax({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _print_amin(self, expr):
        return f"torch.amin({self._print(expr.args[0])}, dim=-1, keepdim=True)"

    def _print_logcumsumexp(self, expr):
        return f"torch.logcumsumexp({self._print(expr.args[0])}, dim=-1)"

    def _print_flip(self, expr):
        return f"torch.flip({self._print(expr.args[0])}, (-1,))"

    def _sorted(self, text: str, descending: bool) -> str:
        return f"torch.sort({text}, dim=-1, descending={descending}).values"

    def _print_clamp(self, expr):
        x, lo, hi = expr.args
        if not (self._has_arrays(lo) or self._has_arrays(hi)):
            return f"torch.clamp({self._print(x)}, {self._print(lo)}, {self._print(hi)})"
        return f"torch.minimum(torch.maximum({self._tensor(x)}, {self._tensor(lo)}), {self._tensor(hi)})"

    def _print_xlogy(self, expr):
        x, y = expr.args
        return f"torch.xlogy({self._tensor(x)}, {self._print(y)})"

    def _print_heaviside(self, expr):
        # 1 where x > 0, 0 where x <= 0 (inf included), NaN where x is NaN; zero gradient.
        return f"torch.ceil(torch.clamp({self._print(expr.args[0])}, 0.0, 1.0))"

    def _extremum(self, expr, name: str, bound: str) -> str:
        a, b = expr.args
        if not self._has_arrays(a) and (self._has_arrays(b) or a.is_number):
            a, b = b, a  # the clamped operand is a tensor: the array, else the (wrapped) param
        if not self._has_arrays(b):
            return f"torch.clamp({self._print(a)}, {bound}={self._print(b)})"
        return f"torch.{name}({self._print(a)}, {self._print(b)})"

    def _print_maximum(self, expr):
        return self._extremum(expr, "maximum", "min")

    def _print_minimum(self, expr):
        return self._extremum(expr, "minimum", "max")


__all__ = [
    "JaxLossPrinter",
    "NumpyLossPrinter",
    "as_tensor",
    "TorchLossPrinter",
    "guard_where",
    "nan_selects_varying",
    "sympy_builtins_to_lossforge",
    "axis_mean",
    "axis_size",
    "axis_sum",
    "clamp",
    "cumsum",
    "logsumexp",
    "norm",
    "rev_cumsum",
    "sigmoid",
    "softplus",
]
