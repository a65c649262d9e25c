"""The elementwise functions of the spec language.

Each is a :class:`sympy.Function` subclass in the mould of
:mod:`sympy.codegen.cfunctions`: its derivative (``fdiff``), its assumptions
(read by the hazard analysis), a rewrite to elementary form and a docstring
saying why it exists. SymPy's own functions the spec language offers as they
are (``exp``, ``log``, ``tanh``, ``erf``, ``digamma`` ...) are named in
:mod:`lossforge.language.parser`'s vocabulary.
"""

from __future__ import annotations

import sympy
from sympy import Function, S
from sympy.codegen.cfunctions import expm1, log1p
from sympy.core.function import ArgumentIndexError
from sympy.core.logic import fuzzy_and, fuzzy_or

__all__ = [
    "sigmoid",
    "softplus",
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
    "log1p",
    "expm1",
    "quotient",
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


class quotient(Function):
    """``quotient(u, v) = u/v``, kept as one division so that a power of it is not distributed.

    Why it exists: SymPy writes ``((y - mu)/sigma)**2`` as ``(y - mu)**2 * sigma**-2``. In
    float32 at sigma = 1e-30 and y = mu that is 0 * inf = NaN, in the value and in both
    gradients, where the written form is (0/1e-30)**2 = 0. :mod:`lossforge.derive` puts
    the written form back (``derive.written_quotients``) before anything is analysed or printed;
    the analysis bounds it as ``u * v**-1`` and the printers print ``(u / v)``. It is not
    part of the spec language (its text is ``(u)/(v)``).
    """

    nargs = 2

    def fdiff(self, argindex=1):
        u, v = self.args
        if argindex == 1:
            return 1 / v
        if argindex == 2:
            return -quotient(u, v) / v  # -u/v**2 as (u/v)/v: no v**2 to underflow
        raise ArgumentIndexError(self, argindex)

    @classmethod
    def eval(cls, u, v):
        if (u.is_number and v.is_number) or v == 1 or u.is_zero:
            return u / v
        return None

    def _eval_rewrite_as_Mul(self, u, v, **kwargs):
        return u / v

    def _eval_is_extended_real(self):
        u, v = self.args
        return fuzzy_and([u.is_extended_real, v.is_extended_real, v.is_zero is False]) or None

