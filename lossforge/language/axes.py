"""The axis operations of the spec language.

Axis (vector) symbols stand for one element of their vector; the axis
operations ``sum``, ``mean``, ``logsumexp``, ``norm``, ``amax``, ``amin`` reduce
an elementwise expression over the axis to one value per sample, and
``cumsum``, ``logcumsumexp``, ``flip`` and ``sort``/``sort_by`` map it to
another vector along the axis (its running sums, its running log-sum-exps, its
entries reversed, its entries in order). :mod:`lossforge.derive` differentiates through them: a reduction by its
local weight (``fdiff``), a vector operation by its :meth:`AxisFunction.adjoint`.
"""

from __future__ import annotations

import sympy
from sympy import Function, S
from sympy.core.function import ArgumentIndexError

from .. import budget
from .functions import _is_real, sign, where

__all__ = [
    "AxisFunction",
    "VectorFunction",
    "AXIS_OPERATIONS",
    "axis_sum",
    "axis_mean",
    "logsumexp",
    "norm",
    "cumsum",
    "rev_cumsum",
    "amax",
    "amin",
    "extremum_share",
    "logcumsumexp",
    "logcumsumexp_adjoint",
    "flip",
    "axis_sort",
    "unsort",
    "axis_size",
    "axis_ones",
    "power",
    "real_abs",
    "softmax_argument",
]



class AxisFunction(Function):
    """An operation over the axis of the vector symbols in its argument.

    ``fdiff`` of a reduction is its *local weight*: the derivative of the
    reduced value with respect to one element of its argument, itself an
    elementwise expression. :mod:`lossforge.derive` multiplies the upstream
    gradient by it.
    """

    nargs = 1
    reduces = True

    def _eval_is_extended_real(self):
        return _is_real(self.args[0])

    def adjoint(self, upstream: sympy.Expr) -> sympy.Expr:
        """The gradient this operation hands its (first) argument, given the ``upstream`` gradient of its value.

        A reduction multiplies by its local weight; a :class:`VectorFunction` (``reduces = False``) overrides this
        with its vector-Jacobian product, whose ``upstream`` always runs along the axis.
        """
        return upstream * self.fdiff(1)


class VectorFunction(AxisFunction):
    """An axis operation whose value is a vector along the axis (``cumsum``, ``sort`` ...), not one per sample.

    It has no local weight: its gradient is its :meth:`~AxisFunction.adjoint`, a vector-Jacobian product.
    """

    reduces = False

    def fdiff(self, argindex=1):
        raise ArgumentIndexError(self, argindex)


class _EntriesSign:
    """The sign facts of an axis operation whose value is made of its argument's entries (a sum, a max, a sort)."""

    def _eval_is_positive(self):
        return self.args[0].is_positive

    def _eval_is_nonnegative(self):
        return self.args[0].is_nonnegative


class axis_sum(_EntriesSign, AxisFunction):
    """``sum(e)``: the sum of an elementwise expression over its axis."""

    spec_name = "sum"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return S.One


class axis_mean(_EntriesSign, AxisFunction):
    """``mean(e)``: the mean of an elementwise expression over its axis."""

    spec_name = "mean"

    @classmethod
    def eval(cls, x):
        """The mean of a constant is that constant: a per-class weight folded to its default (``mean(weight)``
        with ``weight`` absent) leaves no reduction behind."""
        if x.is_number:
            return x
        return None

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return 1 / axis_size(self.args[0])


class logsumexp(AxisFunction):
    """``logsumexp(e) = log(sum(exp(e)))`` over the axis, with the max shift.

    Why it exists: written out, ``exp`` overflows as soon as one logit passes
    709 (float64) or 88.7 (float32). The printed form subtracts the maximum
    first. Its local weight is the softmax ``exp(e - logsumexp(e))``, which is
    finite for every input.
    """

    spec_name = "logsumexp"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sympy.exp(self.args[0] - self)

    def _eval_rewrite_as_log(self, e, **kwargs):
        return sympy.log(axis_sum(sympy.exp(e)))


def softmax_argument(arg: sympy.Expr) -> sympy.Expr | None:
    """``u`` if ``arg`` is ``u - logsumexp(u)``: then ``exp(arg)`` is the softmax of u.

    The softmax lies in [0, 1] whatever u is (the analysis reads that), and
    prints as one fused call where the framework has one (``torch.softmax``).
    The test expands ``arg`` minus a term in full, multinomials included: a softmax
    argument is a short sum, and one past the expansion budget is not recognised
    (its exp is then bounded and printed as any exp: wider, still sound).
    """
    terms = sympy.Add.make_args(arg)
    if not any(isinstance(-t, logsumexp) for t in terms):
        return None
    if budget.expanded_terms(arg, multinomial=True) > budget.EXPAND_TERMS:
        return None
    for term in terms:
        if isinstance(-term, logsumexp) and sympy.expand(arg - term - (-term).args[0]) == 0:
            return (-term).args[0]
    return None


class norm(AxisFunction):
    """``norm(e) = sqrt(sum(e**2))``, the Euclidean norm over the axis; ``norm(e, p)`` the p-norm.

    ``norm(e, p) = sum(abs(e)**p)**(1/p)`` for an order ``p`` of params and
    numbers alone (``torch.linalg.vector_norm``'s ``ord``, ``F.pairwise_distance``'s
    ``p``); ``norm(e, 2)`` is ``norm(e)``. The order is not differentiated: it
    is an option, never a learnable param.

    Its local weight is ``e / norm(e)`` (``sign(e)*abs(e)**(p - 1)/norm(e, p)**(p - 1)``),
    0/0 at the zero vector: add an eps inside (``norm(a - b + eps)``, as
    ``F.pairwise_distance``) where the zero vector is reachable. The hazard
    analysis reports it as ``sqrt-at-zero``.
    """

    spec_name = "norm"
    nargs = (1, 2)

    @classmethod
    def eval(cls, e, p=None):
        if p is not None and p == 2:
            return cls(e)
        return None

    @property
    def order(self) -> sympy.Expr:
        """The norm's order ``p`` (2 for the Euclidean norm)."""
        return self.args[1] if len(self.args) == 2 else sympy.Integer(2)

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        if len(self.args) == 1:
            return self.args[0] / self
        e, p = self.args
        # p = 2 (the default of every p-norm option) as the Euclidean norm's e/norm(e): one pass, no powers
        return where(sympy.Eq(p, 2), e / self, sign(e) * sympy.Abs(e) ** (p - 1) / self ** (p - 1))

    def _eval_rewrite_as_sqrt(self, e, p=None, **kwargs):
        if p is not None:
            return axis_sum(sympy.Abs(e) ** p) ** (1 / p)
        return sympy.sqrt(axis_sum(e**2))

    def written(self) -> sympy.Expr:
        """The p-norm as the printers write it: the Euclidean norm where p = 2, else ``sum(abs(e)**p)**(1/p)``
        (``torch.linalg.vector_norm`` takes its order as a number; here p may be a tensor)."""
        e, p = self.args
        return where(sympy.Eq(p, 2), norm(e), self.rewrite(sympy.sqrt))

    def _eval_is_nonnegative(self):
        return True


class cumsum(VectorFunction):
    """``cumsum(e)``: the running sum along the axis (a vector, not a reduction).

    Its Jacobian is lower triangular, so its gradient is the reverse cumulative
    sum of the upstream gradient (:class:`rev_cumsum`); :mod:`lossforge.derive`
    applies it.
    """

    spec_name = "cumsum"

    def adjoint(self, upstream):
        return rev_cumsum(upstream)


class rev_cumsum(VectorFunction):
    """The reverse cumulative sum along the axis: the adjoint of :class:`cumsum`.

    Appears only in gradients; it is not part of the spec language.
    """


class _extremum(_EntriesSign, AxisFunction):
    """The largest (:class:`amax`) or smallest (:class:`amin`) entry of an elementwise expression over its axis.

    Its local weight is :class:`extremum_share`: ``1/k`` at each of the ``k`` entries equal to the extremum, 0
    elsewhere, so tied entries split the gradient evenly, as the gradient of ``torch.amax``/``torch.amin`` does
    (``torch.max(x, dim)``'s gives all of it to one index). An entry's interval is the result's.
    """

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return extremum_share(self.args[0], self)

    def _eval_is_negative(self):
        return self.args[0].is_negative


class amax(_extremum):
    """``amax(e)``: the largest entry along the axis (``torch.amax``, ``np.max``)."""

    spec_name = "amax"


class amin(_extremum):
    """``amin(e)``: the smallest entry along the axis (``torch.amin``, ``np.min``)."""

    spec_name = "amin"


class extremum_share(VectorFunction):
    """``extremum_share(e, m)``: ``[e == m] / sum([e == m])``, the share of the gradient of ``m = amax(e)``
    (or ``amin(e)``) that each entry of ``e`` receives: in [0, 1], 1 at a unique extremum.

    Appears only in gradients; it is not part of the spec language. The count is at least 1 wherever ``e`` is
    not NaN (the extremum is one of the entries), so the division is never by zero there.
    """

    nargs = 2

    def _eval_is_nonnegative(self):
        return True


class logcumsumexp(VectorFunction):
    """``logcumsumexp(e)``: the running log-sum-exp along the axis, ``log(cumsum(exp(e)))`` without overflow.

    Why it exists: written out, ``cumsum(exp(e))`` overflows past 88.7 in float32 (and its log is -inf below
    -103), ListMLE's scores of +-100 among them; ``torch.logcumsumexp`` and ``np.logaddexp.accumulate`` add in
    the log domain. A vector, not a reduction. Its gradient is ``sum_{k >= i} g_k exp(e_i - y_k)``, the reverse
    cumulative sum of the upstream gradient ``g`` times the softmax over each prefix; :class:`logcumsumexp_adjoint`
    computes it in the log domain, so no exp of a large positive number is ever formed.
    """

    spec_name = "logcumsumexp"

    def adjoint(self, upstream):
        return logcumsumexp_adjoint(upstream, self.args[0], self)

    def _eval_rewrite_as_log(self, e, **kwargs):
        return sympy.log(cumsum(sympy.exp(e)))


class logcumsumexp_adjoint(VectorFunction):
    """``logcumsumexp_adjoint(g, e, y)``: ``sum_{k >= i} g_k exp(e_i - y_k)`` with ``y = logcumsumexp(e)``.

    Computed as ``torch.logcumsumexp``'s own backward computes it: the positive and negative parts of ``g``
    apart, each as ``exp(e_i + revlogcumsumexp(log|g_k| - y_k))``, whose exponent is at most ``log sum |g|``
    (``e_i <= y_k`` for ``k >= i``). At most ``sum |g|`` in magnitude. Appears only in gradients.
    """

    nargs = 3


class flip(_EntriesSign, VectorFunction):
    """``flip(e)``: the entries of e in reverse order along the axis (``torch.flip``, ``np.flip``).

    A vector; its gradient is the upstream gradient flipped back. With it a cumulation runs from the end:
    ``flip(logcumsumexp(flip(s)))`` is the log-sum-exp of each suffix, ListMLE's denominators on a list in
    ranking order.
    """

    spec_name = "flip"

    def adjoint(self, upstream):
        return flip(upstream)


class axis_sort(_EntriesSign, VectorFunction):
    """``sort(e)``, ``sort_by(e, key)``: the entries of ``e`` in the order of ``key`` (ascending, or
    ``descending=True``) along the axis; ``sort(e)`` orders ``e`` by itself.

    The order is stable: entries of equal key keep their order along the axis (``torch.sort(stable=True)``,
    ``np.argsort(kind="stable")``), so a ``sort_by`` with repeated keys is one definite permutation, the same in
    both targets. The permutation is piecewise constant: the key is not differentiated, and the gradient is
    the upstream gradient routed back through the inverse permutation (:class:`unsort`), as ``torch.sort``'s
    is. The result's entries are ``e``'s entries, with their interval.
    """

    spec_name = "sort"
    nargs = 3

    @property
    def key(self) -> sympy.Expr:
        return self.args[1]

    @property
    def descending(self) -> bool:
        return bool(self.args[2])

    def adjoint(self, upstream):
        return unsort(upstream, *self.args[1:])


class unsort(VectorFunction):
    """``unsort(g, key, descending)``: ``g`` put back through the inverse of the permutation that sorts ``key``
    (stably): the adjoint of :class:`axis_sort`. Appears only in gradients."""

    nargs = 3


class _AxisConstant(Function):
    """A positive integer (or a vector of them) made of the axis of its argument alone: constant for gradients."""

    nargs = 1

    def _eval_derivative(self, s):
        return S.Zero

    def _eval_is_integer(self):
        return True

    def _eval_is_positive(self):
        return True


class axis_size(_AxisConstant):
    """The length of the axis of a vector expression (a positive integer).

    Appears in the local weight of ``mean``; it is constant for gradients.
    """


class axis_ones(_AxisConstant):
    """A vector of ones along the axis of ``e``.

    Appears only in gradients: the adjoint of ``cumsum`` receives a constant
    or per-sample upstream gradient (``sum(cumsum(z))``), and the reverse
    cumulative sum of it needs the axis to run along. Not part of the spec
    language.
    """


class power(Function):
    """``power(b, e) = b**e`` for a symbolic exponent, differentiated as e*b**(e - 1).

    Why it exists: SymPy differentiates ``b**e`` with a symbolic ``e`` as
    ``b**e * e / b``, which is ``0 * inf = nan`` where ``b = 0`` even when the
    derivative is 0 (the focal loss at a perfectly classified example).
    :mod:`lossforge.derive` differentiates through this function instead and
    turns it back into a power; it is not part of the spec language.
    """

    nargs = 2

    def fdiff(self, argindex=1):
        b, e = self.args
        if argindex == 1:
            return e * power(b, e - 1)
        if argindex == 2:
            return power(b, e) * sympy.log(b)
        raise ArgumentIndexError(self, argindex)

    def _eval_rewrite_as_Pow(self, b, e, **kwargs):
        return sympy.Pow(b, e)

    def _eval_is_extended_real(self):
        b, e = self.args
        return True if b.is_nonnegative and e.is_extended_real else None


class real_abs(Function):
    """``abs(u)`` of a u that is real (or inf/NaN), differentiated as ``sign(u) * du``.

    Why it exists: SymPy cannot always prove an argument real (``log(x)`` for
    a real x, ``xlogy(p, p)``) and then differentiates ``abs`` through
    ``re``/``im`` as ``u*du/|u|``: 0/0 at u = 0, and ``torch.imag`` of a real
    tensor is an error. A loss is real everywhere it is finite, so
    :mod:`lossforge.derive` differentiates through this function and turns it
    back into ``Abs``; it is not part of the spec language.
    """

    nargs = 1

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sign(self.args[0])


#: The axis operations the spec language offers, by spec name.
AXIS_OPERATIONS: tuple[type[AxisFunction], ...] = (axis_sum, axis_mean, logsumexp, norm, cumsum, amax, amin,
                                                    logcumsumexp, flip, axis_sort)
