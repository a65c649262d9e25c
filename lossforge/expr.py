"""The spec language: lossforge's own SymPy functions and the safe parser.

Two things live here and nowhere else:

* the functions a loss may use, each a :class:`sympy.Function` subclass in the
  mould of :mod:`sympy.codegen.cfunctions`: its derivative (``fdiff``), its
  assumptions (read by the hazard analysis), a rewrite to elementary form and a
  docstring saying why it exists;
* :func:`parse`, which turns spec-language text into a SymPy expression by
  walking Python's ``ast`` under a whitelist. User text is never given to
  ``eval``, ``exec``, ``sympify`` or ``parse_expr``.

Axis (vector) symbols stand for one element of their vector; the axis
operations ``sum``, ``mean``, ``logsumexp``, ``norm`` reduce an elementwise
expression over the axis to one value per sample, and ``cumsum`` maps it to the
vector of its running sums. :mod:`lossforge.derive` differentiates through them.
"""

from __future__ import annotations

import ast
import keyword
import math
import sys
from collections.abc import Mapping
from fractions import Fraction

import sympy
from sympy import Function, S
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core.function import ArgumentIndexError
from sympy.core.logic import fuzzy_and, fuzzy_or
from sympy.logic.boolalg import BooleanAtom, BooleanFunction
from sympy.printing.str import StrPrinter

from . import budget, walk
from .errors import ParseError, SpecError, UnsafeExpressionError

__all__ = [
    "sigmoid",
    "softplus",
    "logsumexp",
    "clamp",
    "xlogy",
    "heaviside",
    "where",
    "maximum",
    "minimum",
    "sign",
    "erfc",
    "acos",
    "lgamma",
    "axis_sum",
    "axis_mean",
    "norm",
    "cumsum",
    "rev_cumsum",
    "axis_size",
    "axis_ones",
    "log1p",
    "expm1",
    "parse",
    "to_text",
    "check_symbol_name",
    "softmax_argument",
    "not_real",
    "finite_float",
]


def _agree(facts) -> bool | None:
    """True if every fact is True, False if every one is False, else unknown.

    Lazy: the facts after the first unknown or disagreeing one are never asked (asking
    is what costs, through the branches of nested where).
    """
    agreed = None
    for i, fact in enumerate(facts):
        if fact is None or (i and fact is not agreed):
            return None
        agreed = fact
    return agreed


def _is_real(*args: sympy.Basic) -> bool | None:
    return fuzzy_and(a.is_extended_real for a in args)


# --------------------------------------------------------------------------
# Elementwise functions
# --------------------------------------------------------------------------


class sigmoid(Function):
    """The logistic function ``1 / (1 + exp(-x))``.

    Why it exists: written out, ``1/(1 + exp(-x))`` overflows ``exp`` for
    x < -709 in float64 (-88 in float32) and its derivative
    ``exp(-x)/(1 + exp(-x))**2`` becomes ``inf/inf = nan``. As a function of its
    own it prints as the framework's stable sigmoid, and its derivative is kept
    as ``sigmoid(x) * sigmoid(-x)``, which never forms ``1 - sigmoid(x)`` (that
    difference is exactly 0 in float32 from x = 16.6 on).
    """

    nargs = 1
    spec_name = "sigmoid"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        x = self.args[0]
        return sigmoid(x) * sigmoid(-x)

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return S.Half
        if x.is_Number:
            return 1 / (1 + sympy.exp(-x))
        return None

    def _eval_rewrite_as_exp(self, x, **kwargs):
        return 1 / (1 + sympy.exp(-x))

    _eval_rewrite_as_tractable = _eval_rewrite_as_exp

    def _eval_is_extended_real(self):
        return _is_real(self.args[0])

    def _eval_is_positive(self):
        return _is_real(self.args[0])

    def _eval_is_finite(self):
        return _is_real(self.args[0])


class softplus(Function):
    """``log(1 + exp(x))``, the smooth ReLU, as one stable function.

    Why it exists: written out it overflows for x > 709 (float64) and loses all
    precision for x < -37. The stable form ``max(x, 0) + log1p(exp(-|x|))`` is
    what printers emit; its derivative is ``sigmoid(x)``. ``log(sigmoid(x))``
    equals ``-softplus(-x)``: this is how log-sigmoid stays finite.
    """

    nargs = 1
    spec_name = "softplus"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sigmoid(self.args[0])

    @classmethod
    def eval(cls, x):
        if x.is_zero:
            return sympy.log(2)
        if x.is_Number:
            return sympy.log(1 + sympy.exp(x))
        return None

    def _eval_rewrite_as_log(self, x, **kwargs):
        return sympy.log(1 + sympy.exp(x))

    _eval_rewrite_as_tractable = _eval_rewrite_as_log

    def _eval_is_extended_real(self):
        return _is_real(self.args[0])

    def _eval_is_positive(self):
        return _is_real(self.args[0])

    def _eval_is_finite(self):
        return _is_real(self.args[0])


class clamp(Function):
    """``clamp(x, lo, hi)``: x limited to ``[lo, hi]``, as ``torch.clamp``.

    Why it exists: guarding a log as ``log(clamp(p, eps, 1 - eps))`` is the
    idiom PyTorch's own BCE uses. Its derivative follows torch: 1 where
    ``lo <= x <= hi`` (the boundary included), 0 outside; the gradient reaching
    ``lo`` or ``hi`` is 1 where x is below or above them.
    """

    nargs = 3
    spec_name = "clamp"

    def fdiff(self, argindex=1):
        x, lo, hi = self.args
        if argindex == 1:
            return where(sympy.And(x >= lo, x <= hi), S.One, S.Zero)
        if argindex == 2:
            return where(x < lo, S.One, S.Zero)
        if argindex == 3:
            return where(x > hi, S.One, S.Zero)
        raise ArgumentIndexError(self, argindex)

    @classmethod
    def eval(cls, x, lo, hi):
        if x.is_Number and lo.is_Number and hi.is_Number:
            return min(max(x, lo), hi)
        return None

    def _eval_rewrite_as_Piecewise(self, x, lo, hi, **kwargs):
        return sympy.Min(sympy.Max(x, lo), hi)

    def _eval_is_extended_real(self):
        return _is_real(*self.args)

    def _eval_is_positive(self):
        x, lo, hi = self.args
        if lo.is_positive and hi.is_positive:
            return True
        return None

    def _eval_is_nonnegative(self):
        x, lo, hi = self.args
        if lo.is_nonnegative and hi.is_nonnegative:
            return True
        return None

    def _eval_is_finite(self):
        x, lo, hi = self.args
        return fuzzy_and([lo.is_finite, hi.is_finite]) or None


class xlogy(Function):
    """``x * log(y)``, defined as 0 where ``x == 0`` (even when ``y == 0``).

    Why it exists: entropy-like terms ``t * log(t)`` and ``t * log(q)`` are 0 at
    ``t = 0`` by convention, but ``0 * log(0) = 0 * -inf = nan`` in floating
    point. Its derivative follows ``torch.xlogy``: ``log(y)`` for x (0 where
    x is 0) and ``x / y`` for y (0 where x is 0).
    """

    nargs = 2
    spec_name = "xlogy"

    def fdiff(self, argindex=1):
        x, y = self.args
        if argindex == 1:
            return where(sympy.Ne(x, 0), sympy.log(y), S.Zero)
        if argindex == 2:
            return where(sympy.Eq(x, 0), S.Zero, x / y)
        raise ArgumentIndexError(self, argindex)

    @classmethod
    def eval(cls, x, y):
        if x.is_zero:
            return S.Zero
        if y == 1:
            return S.Zero
        if (x.is_Number or x.is_zero is False) and y.is_Number:
            return x * sympy.log(y)  # xlogy(2, 0) is -inf: the parser refuses it by name
        return None

    def _eval_rewrite_as_log(self, x, y, **kwargs):
        return x * sympy.log(y)

    def _eval_is_extended_real(self):
        x, y = self.args  # log(0) = -inf is extended real, and xlogy(0, 0) = 0
        return fuzzy_and([x.is_extended_real, y.is_extended_nonnegative]) or None


class heaviside(Function):
    """The unit step: 1 where ``x > 0``, else 0 (so ``heaviside(0) == 0``).

    Why it exists: SymPy's ``Heaviside(0)`` is 1/2 and ``torch.heaviside`` has no
    autograd. This one has a fixed convention and a zero derivative, which is
    exactly why the hazard analysis reports a loss term built from it as
    ``zero-gradient``: training never sees it.
    """

    nargs = 1
    spec_name = "heaviside"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return S.Zero

    @classmethod
    def eval(cls, x):
        if x.is_positive:
            return S.One
        if x.is_nonpositive:
            return S.Zero
        return None

    def _eval_rewrite_as_Piecewise(self, x, **kwargs):
        return sympy.Piecewise((S.One, x > 0), (S.Zero, True))

    def _eval_is_extended_real(self):
        return True

    def _eval_is_nonnegative(self):
        return True

    def _eval_is_finite(self):
        return True


class sign(sympy.sign):
    """``sign(x)`` in {-1, 0, 1}, with derivative 0.

    Why it exists: SymPy's ``sign`` differentiates to ``2*DiracDelta(x)``,
    which no framework can evaluate. Frameworks treat its gradient as 0, and so
    does lossforge (the hazard analysis flags a loss that depends on it).
    """

    spec_name = "sign"

    def _eval_derivative(self, x):
        return S.Zero


class erfc(sympy.erfc):
    """The complementary error function ``erfc(x) = 1 - erf(x)``, kept as written.

    Why it exists: SymPy evaluates ``erfc(-x)`` to ``2 - erfc(x)``, which is
    ``2 - 2 = 0`` wherever the written ``erfc(-x)`` is a tiny positive number
    (x = -10: 2.1e-45): the normal CDF ``erfc(-z/sqrt(2))/2`` would lose every
    digit of its lower tail and its log would be -inf. This one keeps its
    argument as written; numbers still evaluate. Derivative, assumptions and
    the rest are SymPy's (``-2*exp(-x**2)/sqrt(pi)``). The analysis knows that
    float32's erfc(x) reaches 0 from x = 9.2 (below its smallest normal) on.
    """

    spec_name = "erfc"

    @classmethod
    def eval(cls, arg):
        if arg.is_Number:
            return sympy.erfc(arg)
        return None


class acos(sympy.acos):
    """The inverse cosine on [-1, 1], differentiated as ``-1/sqrt((1 - x)*(1 + x))``.

    Why it exists: SymPy's (and torch's autograd's) derivative ``-1/sqrt(1 - x**2)``
    forms ``1 - x**2`` after rounding ``x**2``: near x = +-1, where angular-margin
    losses clamp a cosine, that difference keeps only the digits of x**2 beyond
    the rounding (float32 at x = 0.999: 3e-5 relative error; float64 at 1 - 1e-7:
    2e-11). ``1 - x`` is exact there (Sterbenz) and ``1 + x`` loses nothing, so
    the product keeps full precision. Value, assumptions and evaluation are SymPy's.
    """

    spec_name = "acos"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        x = self.args[0]
        return -1 / sympy.sqrt((1 - x) * (1 + x))


class lgamma(sympy.loggamma):
    """``lgamma(x) = log|Gamma(x)|``, as ``torch.lgamma`` and ``scipy.special.gammaln``.

    Why it exists: SymPy's ``loggamma`` is the principal branch of log Gamma,
    complex for negative arguments; the frameworks' ``lgamma`` is the log of
    the absolute value, real wherever Gamma has no pole. This one is that
    function: real for a real argument (``+inf`` at the poles 0, -1, -2, ...,
    which the hazard analysis reports as ``division-by-zero``), derivative
    ``digamma(x)`` (SymPy's ``polygamma(0, x)``), numbers evaluated as
    ``log|Gamma(x)|``.
    """

    spec_name = "lgamma"

    @classmethod
    def eval(cls, x):
        if not x.is_Number:
            return None
        if x.is_integer and x.is_nonpositive:
            return S.Infinity  # a pole: the parser refuses the constant by name
        if x.is_positive:
            return sympy.loggamma(x)
        return sympy.log(sympy.Abs(sympy.gamma(x)))

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return sympy.polygamma(0, self.args[0])

    def _eval_is_real(self):
        x = self.args[0]
        return True if fuzzy_and([x.is_positive, x.is_finite]) else None

    def _eval_is_extended_real(self):
        return _is_real(self.args[0])

    def _eval_is_finite(self):
        x = self.args[0]
        return True if fuzzy_and([x.is_positive, x.is_finite]) else None


class where(Function):
    """``where(cond, a, b)``: a where cond holds, else b, elementwise.

    Why it exists: it is the only place a comparison may appear. Its derivative
    is ``where(cond, da, db)``: the condition itself carries no gradient.
    Printers emit it with the double-where pattern so that the untaken branch
    never poisons a value or a gradient with NaN.
    """

    nargs = 3
    is_commutative = True  # as every quantity of a loss; SymPy would ask both branches, all the way down
    spec_name = "where"

    @classmethod
    def eval(cls, cond, a, b):
        if cond is S.true:
            return a
        if cond is S.false:
            return b
        if a == b:
            return a
        return None

    def _eval_derivative(self, s):
        return self.derivative(lambda e: e.diff(s))

    def derivative(self, d):
        """The derivative, ``d`` differentiating each branch: the condition carries no gradient."""
        cond, a, b = self.args
        return where(cond, d(a), d(b))

    def _eval_rewrite_as_Piecewise(self, cond, a, b, **kwargs):
        return sympy.Piecewise((a, cond), (b, True))

    # A fact holds for where(...) when it holds for both branches, and fails
    # when it fails for both; otherwise it depends on the condition.
    def _eval_is_extended_real(self):
        return _agree(a.is_extended_real for a in self.args[1:])

    def _eval_is_positive(self):
        return _agree(a.is_positive for a in self.args[1:])

    def _eval_is_nonnegative(self):
        return _agree(a.is_nonnegative for a in self.args[1:])

    def _eval_is_zero(self):
        return _agree(a.is_zero for a in self.args[1:])

    def _eval_is_finite(self):
        return _agree(a.is_finite for a in self.args[1:])


class _Extremum(Function):
    """Shared body of :class:`maximum` and :class:`minimum`.

    ``_sign`` is +1 for the maximum and -1 for the minimum: argument ``a``
    wins where ``_sign*(a - b) > 0``; ``_any`` combines the arguments' facts
    (a maximum is positive if either argument is, a minimum only if both are).
    """

    nargs = 2
    _pick = staticmethod(max)
    _sign = 1
    _any = staticmethod(fuzzy_or)

    @classmethod
    def eval(cls, a, b):
        if a.is_Number and b.is_Number:
            return S.NaN if S.NaN in (a, b) else cls._pick(a, b)
        if a == b:
            return a
        return None

    def fdiff(self, argindex=1):
        a, b = self.args
        if argindex not in (1, 2):
            raise ArgumentIndexError(self, argindex)
        mine, other = (a, b) if argindex == 1 else (b, a)
        wins = heaviside(self._sign * (mine - other))
        if a.is_number or b.is_number:
            return wins  # against a constant (max(0, x)): relu's subgradient, 0 at the tie
        # Two varying arguments share the tie evenly, as torch.maximum does; where they
        # coincide on a whole region (min(max(x, y), x)) the gradient is then still right.
        return where(sympy.Eq(a, b), S.Half, wins)

    def _eval_is_extended_real(self):
        return _is_real(*self.args)

    def _eval_is_finite(self):
        return fuzzy_and(a.is_finite for a in self.args)

    def _eval_is_positive(self):
        return self._any(a.is_positive for a in self.args)

    def _eval_is_nonnegative(self):
        return self._any(a.is_nonnegative for a in self.args)


class maximum(_Extremum):
    """Elementwise ``max(a, b)``.

    Why it exists: SymPy's ``Max`` prints as Python's ``max`` (which fails on
    arrays) and differentiates to ``Heaviside(a - b)`` with the value 1/2 at the
    tie. Here the derivative is ``heaviside(a - b)`` against a constant, so
    ``max(0, x)`` has the ReLU subgradient 0 at x = 0, as ``torch.relu``; two
    varying arguments share a tie half and half, as ``torch.maximum``.
    """

    spec_name = "max"

    def _eval_rewrite_as_Max(self, a, b, **kwargs):
        return sympy.Max(a, b)


class minimum(_Extremum):
    """Elementwise ``min(a, b)``; at a tie the same convention as :class:`maximum`."""

    spec_name = "min"
    _pick = staticmethod(min)
    _sign = -1
    _any = staticmethod(fuzzy_and)

    def _eval_rewrite_as_Min(self, a, b, **kwargs):
        return sympy.Min(a, b)


# --------------------------------------------------------------------------
# Axis operations
# --------------------------------------------------------------------------


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


class axis_sum(AxisFunction):
    """``sum(e)``: the sum of an elementwise expression over its axis."""

    spec_name = "sum"

    def fdiff(self, argindex=1):
        if argindex != 1:
            raise ArgumentIndexError(self, argindex)
        return S.One

    def _eval_is_positive(self):
        return self.args[0].is_positive

    def _eval_is_nonnegative(self):
        return self.args[0].is_nonnegative


class axis_mean(AxisFunction):
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

    def _eval_is_positive(self):
        return self.args[0].is_positive

    def _eval_is_nonnegative(self):
        return self.args[0].is_nonnegative


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


class cumsum(AxisFunction):
    """``cumsum(e)``: the running sum along the axis (a vector, not a reduction).

    Its Jacobian is lower triangular, so its gradient is the reverse cumulative
    sum of the upstream gradient (:class:`rev_cumsum`); :mod:`lossforge.derive`
    applies it.
    """

    spec_name = "cumsum"
    reduces = False

    def fdiff(self, argindex=1):
        raise ArgumentIndexError(self, argindex)


class rev_cumsum(AxisFunction):
    """The reverse cumulative sum along the axis: the adjoint of :class:`cumsum`.

    Appears only in gradients; it is not part of the spec language.
    """

    reduces = False

    def fdiff(self, argindex=1):
        raise ArgumentIndexError(self, argindex)


class axis_size(Function):
    """The length of the axis of a vector expression (a positive integer).

    Appears in the local weight of ``mean``; it is constant for gradients.
    """

    nargs = 1

    def _eval_derivative(self, s):
        return S.Zero

    def _eval_is_integer(self):
        return True

    def _eval_is_positive(self):
        return True


class axis_ones(Function):
    """A vector of ones along the axis of ``e``.

    Appears only in gradients: the adjoint of ``cumsum`` receives a constant
    or per-sample upstream gradient (``sum(cumsum(z))``), and the reverse
    cumulative sum of it needs the axis to run along. Not part of the spec
    language.
    """

    nargs = 1

    def _eval_derivative(self, s):
        return S.Zero

    def _eval_is_integer(self):
        return True

    def _eval_is_positive(self):
        return True


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
AXIS_OPERATIONS: tuple[type[AxisFunction], ...] = (axis_sum, axis_mean, logsumexp, norm, cumsum)

# --------------------------------------------------------------------------
# The vocabulary of the spec language
# --------------------------------------------------------------------------

#: Every function the spec language offers: name -> (SymPy callable, arity: a count or the counts it accepts).
FUNCTIONS: dict[str, tuple[object, int]] = {
    "exp": (sympy.exp, 1),
    "log": (sympy.log, 1),
    "log1p": (log1p, 1),
    "expm1": (expm1, 1),
    "xlogy": (xlogy, 2),
    "sqrt": (sympy.sqrt, 1),
    "abs": (sympy.Abs, 1),
    "sign": (sign, 1),
    "max": (maximum, 2),
    "min": (minimum, 2),
    "clamp": (clamp, 3),
    "sigmoid": (sigmoid, 1),
    "softplus": (softplus, 1),
    "tanh": (sympy.tanh, 1),
    "cosh": (sympy.cosh, 1),
    "cos": (sympy.cos, 1),
    "sin": (sympy.sin, 1),
    "acos": (acos, 1),
    "atan": (sympy.atan, 1),
    "erf": (sympy.erf, 1),
    "erfc": (erfc, 1),
    "lgamma": (lgamma, 1),
    "digamma": (sympy.digamma, 1),
    "heaviside": (heaviside, 1),
    "where": (where, 3),
    **{op.spec_name: (op, 1) for op in AXIS_OPERATIONS},
    "norm": (norm, (1, 2)),
}

#: Named constants of the spec language.
CONSTANTS: dict[str, sympy.Expr] = {"pi": sympy.pi, "e": sympy.E}

#: Bounds that keep pathological text from exhausting time or the stack.
MAX_CHARS = 20_000
MAX_NODES = 6_000
MAX_DEPTH = 80
#: The deepest a where() may sit inside the branches or conditions of others. Each level's
#: derivative and NaN guards hold every level inside it (16 levels: 1,600 nodes whose SymPy
#: facts and rebuilds cost a second; 12: half of that); a piecewise loss of many
#: pieces reads as well as a sum of where(cond_k, piece_k, 0).
MAX_WHERE_DEPTH = 12

_COMPARE = {
    ast.Lt: sympy.Lt,
    ast.LtE: sympy.Le,
    ast.Gt: sympy.Gt,
    ast.GtE: sympy.Ge,
    ast.Eq: sympy.Eq,
    ast.NotEq: sympy.Ne,
}

_BINOP_TOKENS = {
    ast.FloorDiv: "//",
    ast.Mod: "%",
    ast.MatMult: "@",
    ast.BitAnd: "&",
    ast.BitOr: "|",
    ast.BitXor: "^",
    ast.LShift: "<<",
    ast.RShift: ">>",
}

_NODE_WORDS = {
    ast.Attribute: "attribute access",
    ast.Subscript: "subscript",
    ast.Lambda: "lambda",
    ast.ListComp: "comprehension",
    ast.SetComp: "comprehension",
    ast.DictComp: "comprehension",
    ast.GeneratorExp: "comprehension",
    ast.IfExp: "conditional expression (use where(cond, a, b))",
    ast.Dict: "dict literal",
    ast.List: "list literal",
    ast.Set: "set literal",
    ast.Tuple: "tuple",
    ast.Starred: "starred argument",
    ast.JoinedStr: "f-string",
    ast.NamedExpr: "assignment expression",
    ast.Await: "await",
    ast.Yield: "yield",
    ast.YieldFrom: "yield",
    ast.Slice: "slice",
}


def check_symbol_name(name: object) -> str:
    """Return ``name`` if it can name a symbol, else raise naming it.

    A symbol name is a plain ASCII identifier that is not a Python keyword,
    does not start with ``__`` and does not shadow a constant of the spec
    language. It may share a function's name (``mean`` is ``gaussian_nll``'s
    argument, as in PyTorch): a name followed by ``(`` is always the function.
    """
    if not isinstance(name, str):
        raise SpecError(f"symbol name {name!r} is not a string", token=repr(name))
    if not name.isascii() or not name.isidentifier():
        raise SpecError(f"symbol name {name!r} is not a plain ASCII identifier", token=name)
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise SpecError(f"symbol name {name!r} is a Python keyword", token=name)
    if name.startswith("__"):
        raise SpecError(f"symbol name {name!r} starts with '__', which lossforge reserves", token=name)
    if name in CONSTANTS:
        raise SpecError(f"symbol name {name!r} shadows the spec language's constant {name!r}", token=name)
    return name


# --------------------------------------------------------------------------
# The parser
# --------------------------------------------------------------------------


#: The largest finite float64, and the natural logs of the float64 range (overflow, underflow to 0).
FLOAT_MAX = sys.float_info.max
_LOG_MAX = math.log(FLOAT_MAX)
_LOG_MIN = math.log(5e-324)
#: Integers beyond this are not exact in float64: they are kept as floats, as the generated code computes them.
_EXACT_INT = 2**53


def finite_float(value: object) -> float | None:
    """``value`` as a finite float if it is a real number (not a bool) that fits float64, else None.

    Unlike ``float()`` it never raises: a 400-digit integer is simply not a float64.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    if isinstance(value, int) and abs(value) > FLOAT_MAX:
        return None
    out = float(value)
    return out if math.isfinite(out) else None


def _number(value: object, token: str) -> sympy.Expr:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise UnsafeExpressionError(f"constant {token} is not a number", token=token)
    if finite_float(value) is None:
        digits = f" ({len(str(abs(value)))} digits)" if isinstance(value, int) else ""
        raise ParseError(f"constant {token[:40]}{digits} is beyond float64's range (about 1.8e308)", token=token[:40])
    if isinstance(value, int):
        return sympy.Integer(value) if abs(value) <= _EXACT_INT else sympy.Float(float(value))
    exact = Fraction(value)
    if exact.denominator <= 1024 and abs(value) <= _EXACT_INT:  # integers and short dyadic fractions stay exact
        return sympy.Rational(exact.numerator, exact.denominator)
    return sympy.Float(value)


class _Converter:
    """Turns a whitelisted ``ast`` into SymPy, tracking each node's axis."""

    def __init__(self, text: str, symbols: Mapping[str, sympy.Symbol], axes: Mapping[str, str | None]):
        self.text = text
        self.symbols = symbols
        self.axes = axes

    def token(self, node: ast.AST) -> str:
        segment = ast.get_source_segment(self.text, node)
        return segment if segment else type(node).__name__

    def fail(self, node: ast.AST, what: str, cls: type[ParseError] = ParseError) -> ParseError:
        tok = self.token(node)
        return cls(f"{what}: {tok!r} (column {getattr(node, 'col_offset', 0) + 1})", token=tok)

    def merge(self, node: ast.AST, *axes: str | None) -> str | None:
        named = {a for a in axes if a is not None}
        if len(named) > 1:
            a, b = sorted(named)
            raise self.fail(node, f"mixes vectors over axes {a!r} and {b!r}")
        return named.pop() if named else None

    def convert(self, node: ast.AST, in_cond: bool = False) -> tuple[sympy.Basic, str | None]:
        value, axis = self._convert(node, in_cond)
        return self.bounded(node, value), axis

    def bounded(self, node: ast.AST, value: sympy.Basic) -> sympy.Basic:
        """``value`` once its constants are known to be real float64 numbers.

        Nodes are checked as they are built, innermost first, so every constant
        reaching SymPy's evaluation has arguments in float64's range and costs
        microseconds (``exp(exp(10))`` is refused, never ``exp`` of it). Only the
        node itself and its direct arguments can be new constants: everything
        below was checked when it was built. Exact integers past 2**53 become
        floats, as the generated code holds them.
        """
        if _is_condition(value):
            return value
        parts = (value, *value.args) if not value.is_Atom else (value,)
        for part in parts:
            if part.is_number:
                self.constant(node, part)
        huge = {p: sympy.Float(float(p)) for p in parts if p.is_Integer and abs(p) > _EXACT_INT}
        return value.xreplace(huge) if huge else value

    def constant(self, node: ast.AST, value: sympy.Expr) -> None:
        """Refuse a constant that is not a finite real float64 number, naming it."""
        if value.is_Rational:
            if value.is_Integer and abs(value) <= _EXACT_INT:
                return
            size = abs(value.p).bit_length() - value.q.bit_length()
            if size > 1024:
                raise self.fail(node, "this constant is beyond float64's range (about 1.8e308)")
            return
        approx = value.evalf(17)
        if not approx.is_number or approx.free_symbols or approx.has(sympy.Function):
            return  # lossforge's own functions of constants (softplus(pi)) stay symbolic, bounded by their arguments
        if approx.has(S.NaN, S.ComplexInfinity, S.Infinity, S.NegativeInfinity):
            raise self.fail(node, "this constant is not a finite number (e.g. a division by zero or log(0))")
        re_part, im_part = approx.as_real_imag()
        if im_part != 0:
            raise self.fail(node, f"this constant is complex ({approx}): use a real expression, "
                                  "e.g. -(8**(1/3)) instead of (-8)**(1/3)")
        if abs(re_part) > FLOAT_MAX:
            raise self.fail(node, f"this constant is about {sympy.Float(re_part, 3)}, beyond float64's range (1.8e308)")

    def _convert(self, node: ast.AST, in_cond: bool = False) -> tuple[sympy.Basic, str | None]:
        if isinstance(node, ast.Expression):
            return self.convert(node.body, in_cond)
        if isinstance(node, ast.Constant):
            return _number(node.value, self.token(node)), None
        if isinstance(node, ast.Name):
            return self.name(node)
        if isinstance(node, ast.BinOp):
            return self.binop(node, in_cond)
        if isinstance(node, ast.UnaryOp):
            return self.unary(node, in_cond)
        if isinstance(node, ast.Call):
            return self.call(node)
        if isinstance(node, ast.Compare):
            return self.compare(node, in_cond)
        if isinstance(node, ast.BoolOp):
            if not in_cond:
                raise self.fail(node, "'and'/'or' are only allowed inside where(...)")
            parts = [self.convert(v, True) for v in node.values]
            for (value, _), sub in zip(parts, node.values):
                if not _is_condition(value):
                    word = "and" if isinstance(node.op, ast.And) else "or"
                    raise self.fail(sub, f"each side of {word!r} must be a comparison (x > 0 {word} y < 1)")
            op = sympy.And if isinstance(node.op, ast.And) else sympy.Or
            return op(*(p for p, _ in parts)), self.merge(node, *(a for _, a in parts))
        word = _NODE_WORDS.get(type(node))
        if word is None:
            word = f"{type(node).__name__} is not part of the spec language"
        else:
            word = f"{word} is not allowed"
        raise self.fail(node, word, UnsafeExpressionError)

    def name(self, node: ast.Name) -> tuple[sympy.Basic, str | None]:
        ident = node.id
        if ident in self.symbols:
            return self.symbols[ident], self.axes.get(ident)
        if ident in CONSTANTS:
            return CONSTANTS[ident], None
        if ident in FUNCTIONS:
            raise self.fail(node, f"function {ident!r} used without a call")
        if ident.startswith("__"):
            raise self.fail(node, f"name {ident!r} is not allowed", UnsafeExpressionError)
        raise ParseError(f"undeclared name {ident!r}: declare it in [symbols]", token=ident)

    def binop(self, node: ast.BinOp, in_cond: bool) -> tuple[sympy.Basic, str | None]:
        op = type(node.op)
        if op in _BINOP_TOKENS:
            tok = _BINOP_TOKENS[op]
            raise ParseError(f"operator {tok!r} is not part of the spec language", token=tok)
        # Walk a left-leaning chain of + - (or * /) iteratively: a long sum
        # must not cost one Python frame per term.
        group = (ast.Add, ast.Sub) if op in (ast.Add, ast.Sub) else (ast.Mult, ast.Div)
        chain: list[tuple[type, ast.AST]] = []
        cur: ast.AST = node
        while isinstance(cur, ast.BinOp) and isinstance(cur.op, group):
            chain.append((type(cur.op), cur.right))
            cur = cur.left
        if op is ast.Pow:
            base, a1 = self.convert(node.left, in_cond)
            expo, a2 = self.convert(node.right, in_cond)
            self.power_fits(node, base, expo)
            return sympy.Pow(base, expo), self.merge(node, a1, a2)
        acc, axis = self.convert(cur, in_cond)
        terms = [acc]
        axes = [axis]
        for kind, right in reversed(chain):
            value, a = self.convert(right, in_cond)
            axes.append(a)
            if kind is ast.Sub:
                value = -value
            elif kind is ast.Div:
                value = 1 / value
            terms.append(value)
        combine = sympy.Add if group[0] is ast.Add else sympy.Mul
        return combine(*terms), self.merge(node, *axes)

    def power_fits(self, node: ast.AST, base: sympy.Basic, expo: sympy.Basic) -> None:
        """Refuse a constant power whose value is beyond float64, before SymPy computes it.

        ``9**9**9`` is an integer of 370 million digits: SymPy would compute it
        exactly. Its size is known from logarithms in microseconds.
        """
        if not (base.is_number and expo.is_number) or _is_condition(base) or _is_condition(expo):
            return
        b, e = abs(float(base.evalf(17))), float(expo.evalf(17))
        if b in (0.0, 1.0):
            return
        size = e * math.log(b)
        if size > _LOG_MAX:
            raise self.fail(node, f"this power is about 10**{size / math.log(10):.4g}, beyond float64's range "
                                  "(1.8e308)")
        if size < _LOG_MIN:
            raise self.fail(node, f"this power is about 10**{size / math.log(10):.4g}, which float64 rounds to 0: "
                                  "write 0")

    def unary(self, node: ast.UnaryOp, in_cond: bool) -> tuple[sympy.Basic, str | None]:
        value, axis = self.convert(node.operand, in_cond)
        if isinstance(node.op, ast.USub):
            return -value, axis
        if isinstance(node.op, ast.UAdd):
            return value, axis
        if isinstance(node.op, ast.Not) and in_cond:
            if not _is_condition(value):
                raise self.fail(node.operand, "'not' needs a comparison (not (x > 0))")
            return sympy.Not(value), axis
        tok = {ast.Not: "not", ast.Invert: "~"}[type(node.op)]
        raise ParseError(f"operator {tok!r} is not allowed here", token=tok)

    def compare(self, node: ast.Compare, in_cond: bool) -> tuple[sympy.Basic, str | None]:
        if not in_cond:
            raise self.fail(node, "comparisons are only allowed inside where(...)")
        left, axis = self.convert(node.left, True)
        axes = [axis]
        parts = []
        for op, comp in zip(node.ops, node.comparators):
            if type(op) not in _COMPARE:
                tok = {ast.Is: "is", ast.IsNot: "is not", ast.In: "in", ast.NotIn: "not in"}[type(op)]
                raise ParseError(f"comparison {tok!r} is not part of the spec language", token=tok)
            right, a = self.convert(comp, True)
            axes.append(a)
            for side in (left, right):
                if (what := not_real(side)) is not None:
                    raise self.fail(node, f"a side of this comparison evaluates to {what}")
            parts.append(_COMPARE[type(op)](left, right))
            left = right
        return sympy.And(*parts), self.merge(node, *axes)

    def call(self, node: ast.Call) -> tuple[sympy.Basic, str | None]:
        if not isinstance(node.func, ast.Name):
            raise self.fail(node.func, "only the spec language's functions can be called", UnsafeExpressionError)
        fname = node.func.id
        if fname not in FUNCTIONS:
            if fname in self.symbols:
                raise ParseError(f"symbol {fname!r} is not a function", token=fname)
            raise UnsafeExpressionError(f"unknown function {fname!r}", token=fname)
        if node.keywords:
            kw = node.keywords[0].arg or "**"
            raise UnsafeExpressionError(f"keyword argument {kw!r} in call to {fname!r} is not allowed", token=kw)
        func, arity = FUNCTIONS[fname]
        counts = arity if isinstance(arity, tuple) else (arity,)
        if len(node.args) not in counts:
            said = " or ".join(map(str, counts))
            raise ParseError(
                f"function {fname!r} takes {said} argument{'s' if counts != (1,) else ''}, got {len(node.args)}",
                token=fname,
            )
        if fname == "where":
            cond, ca = self.convert(node.args[0], True)
            a, aa = self.convert(node.args[1])
            b, ab = self.convert(node.args[2])
            if not _is_condition(cond):
                raise self.fail(node.args[0], "the first argument of where(...) must be a comparison")
            return where(cond, a, b), self.merge(node, ca, aa, ab)
        args = [self.convert(a) for a in node.args]
        for arg, sub in zip(args, node.args):
            if _is_condition(arg[0]):
                raise self.fail(sub, f"a comparison cannot be an argument of {fname!r}")
        if isinstance(func, type) and issubclass(func, AxisFunction):
            (value, axis), *options = args
            for (_, on), sub in zip(options, node.args[1:]):
                if on is not None:
                    raise self.fail(sub, f"the order of {fname}() must be a number or a param, not a vector")
            if axis is None:
                raise self.fail(node, f"{fname}() needs a vector (axis) argument")
            if not any(self.axes.get(s.name) == axis for s in value.free_symbols):
                raise self.fail(node, f"{fname}() needs an argument that varies along its axis; this one is {value}")
            return func(value, *(o for o, _ in options)), (axis if not func.reduces else None)
        values = [v for v, _ in args]
        return func(*values), self.merge(node, *(a for _, a in args))


#: Values a real loss (or a gradient) must never hold, with the words for them.
_NOT_REAL = {
    S.ComplexInfinity: "an infinity",
    S.Infinity: "an infinity",
    S.NegativeInfinity: "an infinity",
    S.NaN: "nan",
    S.ImaginaryUnit: "a complex number",
}


def not_real(expr: sympy.Basic) -> str | None:
    """The words for a value no real loss (or gradient) may hold, if ``expr`` holds one (zoo, oo, nan, I)."""
    present = {n for n in walk.atoms((expr,), sympy.Atom) if n in _NOT_REAL}  # one walk over distinct nodes
    return next((what for bad, what in _NOT_REAL.items() if bad in present), None)


#: Characters refused in expression text before parsing: (character, what it is, the fix).
_NOT_IN_TEXT = (
    ("#", "a '#' comment", "put comments in the TOML file, outside the expression string"),
    ("\\", "a backslash (line continuation)",
     "in a TOML multi-line string (\"\"\"...\"\"\") the expression may break lines anywhere without one"),
    ("\0", "a NUL character", "remove it"),
)


_WHITESPACE = str.maketrans("\n\r\t\f\v", "     ")


def _is_condition(value: sympy.Basic) -> bool:
    """Whether a converted node is a truth value (a comparison or a combination of them)."""
    return isinstance(value, (sympy.core.relational.Relational, BooleanFunction, BooleanAtom))


def _depth(tree: ast.AST) -> int:
    """Nesting depth, counting a left-leaning chain of + - or * / as one level."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    nodes = 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES:
            return MAX_DEPTH + 1
        deepest = max(deepest, depth)
        for child in ast.iter_child_nodes(node):
            same_chain = (
                isinstance(node, ast.BinOp)
                and child is node.left
                and isinstance(child, ast.BinOp)
                and {type(node.op), type(child.op)} <= {ast.Add, ast.Sub}
                or isinstance(node, ast.BinOp)
                and child is node.left
                and isinstance(child, ast.BinOp)
                and {type(node.op), type(child.op)} <= {ast.Mult, ast.Div}
            )
            stack.append((child, depth if same_chain else depth + 1))
    return deepest


def _where_depth(tree: ast.AST) -> int:
    """How deep ``where()`` calls nest in ``tree``: one alone is 1, one in a branch or condition of another 2."""
    deepest = 0
    stack: list[tuple[ast.AST, int]] = [(tree, 0)]
    while stack:
        node, depth = stack.pop()
        if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "where":
            depth += 1
            deepest = max(deepest, depth)
        stack.extend((child, depth) for child in ast.iter_child_nodes(node))
    return deepest


def parse(
    text: str,
    symbols: Mapping[str, sympy.Symbol],
    axes: Mapping[str, str | None] | None = None,
) -> sympy.Expr:
    """Parse spec-language ``text`` into a SymPy expression over ``symbols``.

    ``axes`` maps each vector symbol's name to its axis. The result is one
    value per sample: a vector symbol must sit inside an axis reduction.
    Raises :class:`ParseError` (or :class:`UnsafeExpressionError`) naming the
    offending token. Nothing in ``text`` is ever evaluated.
    """
    axes = dict(axes or {})
    if not isinstance(text, str):
        raise ParseError(f"expression must be a string, got {type(text).__name__}", token=repr(text))
    if len(text) > MAX_CHARS:
        raise ParseError(
            f"expression is {len(text)} characters long; the limit is {MAX_CHARS}", token=text[:20] + "..."
        )
    if not text.strip():
        raise ParseError("expression is empty", token="")
    for ch in text:
        if not ch.isascii():
            raise ParseError(f"non-ASCII character {ch!r} in expression", token=ch)
    for bad, what, fix in _NOT_IN_TEXT:
        if bad in text:
            raise ParseError(f"{what} at column {text.index(bad) + 1} is not part of the spec language: {fix}",
                             token=bad)
    depth = 0
    for ch in text:
        if ch in "([{":
            depth += 1
            if depth > MAX_DEPTH:
                raise ParseError(f"expression nests deeper than {MAX_DEPTH} brackets", token=ch)
        elif ch in ")]}":
            depth -= 1
    # A TOML multi-line expression may break lines anywhere: in the spec language a line
    # break is a space (one character for one, so columns in messages stay right).
    text = text.translate(_WHITESPACE)
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except SyntaxError as exc:
        if "Exceeds the limit" in str(exc.msg):
            raise ParseError("an integer constant has more than 4300 digits, far beyond float64's range",
                             token=text[:20]) from None
        bad = ""
        if exc.text and exc.offset:
            bad = exc.text[exc.offset - 1 : exc.offset + 9].strip()
        raise ParseError(f"syntax error at column {exc.offset}: {exc.msg} near {bad!r}", token=bad) from None
    except ValueError as exc:  # Python refuses integer literals of more than 4300 digits
        raise ParseError(f"a constant in the expression is too long ({exc})", token=text[:20]) from None
    except (RecursionError, MemoryError) as exc:
        raise ParseError(
            f"expression is nested too deeply to parse ({type(exc).__name__})", token=text[:20]
        ) from None
    if _depth(tree) > MAX_DEPTH:
        raise ParseError(
            f"expression is nested deeper than {MAX_DEPTH} levels or has more than {MAX_NODES} nodes",
            token=text[:20],
        )
    nested = _where_depth(tree)
    if nested > MAX_WHERE_DEPTH:
        raise ParseError(
            f"where() is nested {nested} deep (in the branches or conditions of other where() calls); the limit is "
            f"{MAX_WHERE_DEPTH}: every level's gradient and NaN guards hold all the levels inside it. Write the "
            f"pieces as a sum of where(cond_k, piece_k, 0), or split the loss into terms with lf.combine",
            token="where",
        )
    converter = _Converter(text.strip(), symbols, axes)
    value, axis = converter.convert(tree)
    if _is_condition(value):
        raise ParseError("the loss is a comparison, not a number: use where(cond, a, b)", token=text.strip())
    if (what := not_real(value)) is not None:
        raise ParseError(f"the expression evaluates to {what} (e.g. a division by zero or log of a negative constant)",
                         token=text.strip())
    if axis is not None:
        vec = sorted(n for n, a in axes.items() if a == axis and symbols[n] in value.free_symbols)
        name = vec[0] if vec else axis
        raise ParseError(
            f"the loss is a vector over axis {axis!r} (through {name!r}): reduce it with sum(), mean(), "
            "logsumexp() or norm()",
            token=name,
        )
    return value


# --------------------------------------------------------------------------
# Printing back to the spec language
# --------------------------------------------------------------------------


class SpecPrinter(StrPrinter):
    """Prints a SymPy expression in the spec language, so that :func:`parse` reads it back."""

    def _print_Function(self, expr):
        name = getattr(expr.func, "spec_name", None)
        if name is None:
            return super()._print_Function(expr)
        return f"{name}({', '.join(self._print(a) for a in expr.args)})"

    def _print_Float(self, expr):
        return repr(float(expr))

    def _print_Exp1(self, expr):
        return "e"

    def _print_Abs(self, expr):
        return f"abs({self._print(expr.args[0])})"

    def _print_sign(self, expr):
        return f"sign({self._print(expr.args[0])})"

    def _print_Heaviside(self, expr):
        return f"heaviside({self._print(expr.args[0])})"

    def _print_polygamma(self, expr):
        n, x = expr.args
        if n == 0:
            return f"digamma({self._print(x)})"
        return super()._print_Function(expr)  # polygamma(1, x) appears in gradients only

    def _print_loggamma(self, expr):  # SymPy's own, for a constant argument lgamma evaluated to it
        return f"lgamma({self._print(expr.args[0])})"

    def _nested(self, name, args):
        out = self._print(args[-1])
        for a in reversed(args[:-1]):
            out = f"{name}({self._print(a)}, {out})"
        return out

    def _print_Max(self, expr):
        return self._nested("max", expr.args)

    def _print_Min(self, expr):
        return self._nested("min", expr.args)

    def _print_Piecewise(self, expr):
        *pieces, (last, cond) = expr.args
        out = self._print(last) if cond is S.true else f"where({self._print(cond)}, {self._print(last)}, nan)"
        for value, cond in reversed(pieces):
            out = f"where({self._print(cond)}, {self._print(value)}, {out})"
        return out

    def _print_Relational(self, expr):
        op = {"==": "==", "!=": "!=", "<": "<", "<=": "<=", ">": ">", ">=": ">="}[expr.rel_op]
        return f"{self.parenthesize(expr.lhs, 0)} {op} {self.parenthesize(expr.rhs, 0)}"

    def _print_And(self, expr):
        return " and ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Or(self, expr):
        return " or ".join(f"({self._print(a)})" for a in expr.args)

    def _print_Not(self, expr):
        return f"not ({self._print(expr.args[0])})"


def to_text(expr: sympy.Basic) -> str:
    """The spec-language text of a SymPy expression."""
    return SpecPrinter({"order": "none"}).doprint(expr)
