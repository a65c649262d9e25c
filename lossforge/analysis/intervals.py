"""Interval bounds of expressions, in floating point.

Each symbol starts from its domain's interval (``domains.py``); bounds then
propagate through the expression, one function per SymPy class registered
with :func:`functools.singledispatch` (SymPy's own class hierarchy does the
dispatch, as in its printers). These choices make this *float* reasoning:

* an unbounded end stands for ±1000 (``REAL_EXTREME``), the magnitude the
  analysis promises finiteness for, and ``positive`` starts at 1e-30, not at
  the smallest subnormal;
* functions that saturate are bounded with their float32 values: sigmoid(x)
  is exactly 1.0 from x = 16.6 and exactly 0.0 below x = -104, softplus(x) is
  0.0 below x = -104, so ``1 - sigmoid(x)`` and ``log(softplus(x))`` can be
  exactly 0 and -inf;
* overflow thresholds are float32's (exp overflows above 88.72), which also
  covers float64; every limit (range, smallest subnormal and normal, eps,
  the rounding of a saturating function) is read from one :class:`Limits`
  value held by the :class:`Bounds`, so ``lf.check(spec, dtype="float16")``
  reasons with float16's instead (exp overflows above 11.09);
* products and powers underflow as float32 does: a magnitude below its
  smallest subnormal (1.4e-45) may be exactly 0, so ``eps**2`` with eps
  down to 1e-30 can be 0 and ``sqrt(r**2 + eps**2)`` can be sqrt(0);
* an axis is at most 1e13 elements long, so sums over it stay bounded;
* a strict condition ``x > c`` (in a ``where``) keeps x at least one float64
  step above c, and ``x > t`` pins ``x - t`` above 0 as well;
* every operation is total: a result beyond float64 saturates to ±inf (Python's
  ``float ** int``, ``math.exp``, ``math.cosh`` and ``math.expm1`` raise
  ``OverflowError`` instead), a constant beyond float64 is ±inf, and an
  undefined combination (inf - inf, 0 * inf) widens to the whole line.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import singledispatch

import mpmath
import numpy as np
import sympy
from sympy.codegen.cfunctions import expm1, log1p

from .. import language as E
from ..domains import REAL_EXTREME, Domain

#: Largest finite float32, and the largest argument exp takes without overflowing.
FLOAT_MAX = float(np.finfo(np.float32).max)
FLOAT64_MAX = float(np.finfo(np.float64).max)
EXP_MAX = math.log(FLOAT_MAX)  # 88.72
#: The smallest magnitude the analysis treats as a value of "positive" (or of x > 0).
TINY = 1e-30
INF = math.inf
#: The longest axis the analysis allows for: 1e13 elements is beyond any memory (log(1e13) = 29.9).
AXIS_MAX = 1e13


def _bfloat16(x: float) -> float:
    """``x`` rounded to bfloat16 (float32's top 16 bits, round half to even), as torch rounds it."""
    with np.errstate(all="ignore"):
        bits = np.array([x], dtype=np.float32).view(np.uint32)
    if not np.isfinite(x):
        return float(np.float32(x))
    bits = (bits + np.uint32(0x7FFF) + ((bits >> np.uint32(16)) & np.uint32(1))) & np.uint32(0xFFFF0000)
    return float(bits.view(np.float32)[0])


@dataclass(frozen=True)
class Limits:
    """The floating type the analysis reasons in: its range, its smallest numbers and its rounding.

    ``lf.check(spec, dtype=...)`` picks one by name; the default is float32's,
    whose thresholds are also safe for float64. A function a framework
    computes in a narrower type (float16, bfloat16) is computed in float32
    and rounded, as torch does on CPU and CUDA; float64 computes in float64.
    """

    name: str
    max: float  # the largest finite value
    tiny: float  # the smallest subnormal: a smaller magnitude rounds to 0
    normal: float  # the smallest normal: a result below it may be flushed to 0
    eps: float  # the step from 1 to the next value

    @property
    def exp_max(self) -> float:
        """The largest argument exp takes without overflowing (88.72 in float32, 11.09 in float16)."""
        return math.log(self.max)

    @property
    def exp_min(self) -> float:
        """Below this argument exp is below the smallest normal (-87.3 in float32)."""
        return math.log(self.normal)

    @property
    def positive_start(self) -> float:
        """The least value of "positive" the analysis promises finiteness from: 1e-30, or the type's least."""
        return max(TINY, self.tiny)

    def round(self, x: float) -> float:
        """``x`` rounded to this type (beyond its range: ±inf)."""
        with np.errstate(all="ignore"):
            if self.name == "bfloat16":
                return _bfloat16(x)
            return float(np.dtype(self.name).type(x))

    def text(self, x: float) -> str:
        """``x`` in the shortest digits that read back to the same value of this type."""
        if self.name == "float64":
            return repr(float(x))
        return str(np.float32(x) if self.name == "bfloat16" else np.dtype(self.name).type(x))

    def compute(self, func, x: float) -> float:
        """``func`` of ``x`` in the type a framework computes it in, rounded to this type."""
        wide = np.float64 if self.name == "float64" else np.float32
        with np.errstate(all="ignore"):
            return self.round(float(func(wide(self.round(x)))))


#: The floating types ``lf.check`` reasons in, by name.
DTYPES: dict[str, Limits] = {
    **{n: Limits(n, float(np.finfo(n).max), float(np.finfo(n).smallest_subnormal), float(np.finfo(n).tiny),
                 float(np.finfo(n).eps)) for n in ("float16", "float32", "float64")},
    # bfloat16: float32's exponent with 8 significant bits (numpy has no such type)
    "bfloat16": Limits("bfloat16", 3.3895313892515355e38, 2.0**-133, 2.0**-126, 2.0**-7),
}
#: The default: float32's thresholds, which also cover float64.
FLOAT32 = DTYPES["float32"]


@dataclass(frozen=True)
class Bound:
    """A closed interval [lo, hi]; ``nonzero`` when 0 itself is excluded (a sign, an open end)."""

    lo: float
    hi: float
    nonzero: bool = False

    @property
    def reaches_zero(self) -> bool:
        return self.lo <= 0 <= self.hi and not self.nonzero

    @property
    def positive(self) -> bool:
        """Every value is > 0 (an interval starting at 0 with 0 excluded counts)."""
        return self.lo > 0 or (self.lo == 0 and self.nonzero)

    @property
    def magnitude(self) -> float:
        return max(abs(self.lo), abs(self.hi))

    @property
    def smallest_magnitude(self) -> float:
        if self.lo <= 0 <= self.hi:
            return 0.0
        return min(abs(self.lo), abs(self.hi))

    def hull(self, other: Bound) -> Bound:
        return Bound(min(self.lo, other.lo), max(self.hi, other.hi), self.nonzero and other.nonzero)


REAL = Bound(-INF, INF)


def of_domain(dom: Domain, limits: Limits = FLOAT32) -> Bound:
    """The analysed interval of a domain, in the floating type ``limits``."""
    lo = -REAL_EXTREME if dom.lo == -INF else dom.lo
    hi = REAL_EXTREME if dom.hi == INF else dom.hi
    if dom.lo_open and dom.lo == 0:
        lo = limits.positive_start
    nonzero = dom.values is not None and 0 not in dom.values
    return Bound(lo, hi, nonzero or lo > 0 or hi < 0)


def _sigmoid(x: float, limits: Limits) -> float:
    return limits.compute(lambda v: 1 / (1 + np.exp(-v)), x)


def _softplus(x: float, limits: Limits) -> float:
    return limits.compute(lambda v: np.logaddexp(v.dtype.type(0), v), x)


def _mul(a: float, b: float) -> float:
    if a == 0 or b == 0:
        return 0.0
    return a * b


def _sorted(values) -> tuple[float, float]:
    vals = [v for v in values if not math.isnan(v)]
    return (min(vals), max(vals)) if vals else (-INF, INF)


def _exp(x: float) -> float:
    return math.exp(x) if x < 709 else INF  # nan stays nan, -inf gives 0


def _ipow(x: float, n: int) -> float:
    """``x**n`` for an integer n >= 0, saturating to ±inf where Python's float power raises."""
    if n == 0:
        return 1.0
    try:
        return x**n
    except OverflowError:
        return -INF if x < 0 and n % 2 else INF
    except ZeroDivisionError:  # not reached for n >= 0; kept total
        return INF


def as_float(value: sympy.Basic) -> float:
    """A SymPy constant as a float, ±inf beyond float64's range (an Integer of 400 digits)."""
    try:
        return float(value)
    except OverflowError:
        return INF if value > 0 else -INF


class Bounds:
    """Bounds of every subexpression of an analysed expression, memoized.

    ``env`` maps symbols to their bounds; ``narrowed`` returns a copy whose
    symbols are restricted by a condition (the branch of a ``where``).
    """

    def __init__(self, env: dict[sympy.Basic, Bound], simplex: frozenset = frozenset(), limits: Limits = FLOAT32):
        self.env = env  # symbols, and subexpressions pinned by a condition (``1 - p != 0``)
        self.simplex = simplex  # symbols whose rows sum to 1 (simplex, onehot)
        self.limits = limits  # the floating type reasoned in
        self._memo: dict[sympy.Basic, Bound] = {k: v for k, v in env.items() if not isinstance(k, sympy.Symbol)}
        self._narrowed: dict[sympy.Basic, Bounds] = {}

    def __call__(self, expr: sympy.Basic) -> Bound:
        found = self._memo.get(expr)
        if found is None:
            found = _bound(expr, self)
            self._memo[expr] = found
        return found

    def narrowed(self, cond: sympy.Basic) -> Bounds:
        """The same bounds where ``cond`` holds (simple comparisons of a symbol with a constant).

        Kept per condition, so the branches of a repeated ``where`` share one
        memo (a gradient repeats its ``where`` nodes many times over).
        """
        found = self._narrowed.get(cond)
        if found is None:
            env = dict(self.env)
            for rel in _conjuncts(cond):
                _narrow(env, rel, self)
            found = self._narrowed[cond] = Bounds(env, self.simplex, self.limits)
        return found


def _conjuncts(cond: sympy.Basic) -> list[sympy.Basic]:
    if isinstance(cond, sympy.And):
        return [c for a in cond.args for c in _conjuncts(a)]
    if isinstance(cond, sympy.Not):
        return [c.negated for c in _conjuncts(cond.args[0]) if isinstance(c, sympy.core.relational.Relational)]
    return [cond]


_FLIPPED = {"<": ">", "<=": ">=", ">": "<", ">=": "<=", "==": "==", "!=": "!="}


def _above(lo: float, limits: Limits) -> float:
    """The least float64 strictly above ``lo`` (TINY above 0): the bound a strict ``x > lo`` gives.

    Past a nonzero ``lo`` it is one float64 step, which is below float32's
    step, so the bound holds in both; ``x - lo`` is then nonzero (Sterbenz).
    """
    if lo == 0:
        return limits.positive_start
    return math.nextafter(lo, INF) if math.isfinite(lo) else lo


def _narrow(env: dict, rel: sympy.Basic, bounds: Bounds) -> None:
    if not isinstance(rel, sympy.core.relational.Relational):
        return
    lhs, rhs, op = rel.lhs, rel.rhs, rel.rel_op
    if lhs.is_number and not rhs.is_number:
        lhs, rhs = rhs, lhs
        op = _FLIPPED[op]
    if isinstance(lhs, sympy.Symbol) and lhs not in env:
        return
    if not rhs.is_number and op in (">", ">=", "<", "<="):  # x > t also pins x - t > 0 and t - x < 0
        _narrow(env, sympy.Rel(lhs - rhs, 0, op), bounds)
        _narrow(env, sympy.Rel(rhs - lhs, 0, _FLIPPED[op]), bounds)
    cur, lim = (env[lhs] if lhs in env else bounds(lhs)), bounds(rhs)
    if op in (">", ">="):
        lo = max(cur.lo, lim.lo)
        if op == ">":
            lo = _above(lo, bounds.limits)
        env[lhs] = Bound(lo, cur.hi, cur.nonzero or lo > 0)
    elif op in ("<", "<="):
        hi = min(cur.hi, lim.hi)
        if op == "<":
            hi = -_above(-hi, bounds.limits)
        env[lhs] = Bound(cur.lo, hi, cur.nonzero or hi < 0)
    elif op == "!=" and lim.lo == lim.hi == 0:
        env[lhs] = Bound(cur.lo, cur.hi, True)
    elif op == "==":
        env[lhs] = Bound(max(cur.lo, lim.lo), min(cur.hi, lim.hi), cur.nonzero)


# -- one bound function per SymPy class ------------------------------------------------


@singledispatch
def _bound(expr: sympy.Basic, b: Bounds) -> Bound:
    return REAL  # unknown construct: no claim


@_bound.register
def _(expr: sympy.Symbol, b: Bounds) -> Bound:
    return b.env.get(expr, REAL)


@_bound.register
def _(expr: sympy.Number, b: Bounds) -> Bound:
    if not expr.is_finite:  # oo, zoo, nan: no claim
        return REAL
    v = as_float(expr)
    return Bound(v, v, v != 0)


@_bound.register
def _(expr: sympy.NumberSymbol, b: Bounds) -> Bound:
    v = as_float(expr)
    return Bound(v, v, True)


@_bound.register
def _(expr: sympy.Add, b: Bounds) -> Bound:
    lo = hi = 0.0
    for arg in _paired_sums(expr.args, b):
        x = b(arg)
        lo, hi = lo + x.lo, hi + x.hi
    lo = -INF if math.isnan(lo) else lo
    hi = INF if math.isnan(hi) else hi
    if _below_logsumexp(expr, b):
        hi = min(hi, 0.0)
    nonzero = lo > 0 or hi < 0
    return Bound(lo, hi, nonzero)


def _paired_sums(terms: tuple, b: Bounds) -> list:
    """The terms of a sum with each ``sum(u) - sum(u*v)`` (u >= 0, v in [0, 1]) taken as ``sum(u*(1 - v))``.

    Bounded one by one, sum(p) + sum(t) - sum(p*t) + smooth (soft Jaccard, p and t in [0, 1]) spans 0;
    paired, it is at least smooth. In floating point too: each rounded u*v is at most u, and a rounded
    sum is monotone in its elements, so the rounded difference is not negative.
    """
    sums = [t for t in terms if isinstance(t, E.axis_sum)]
    if not sums or len(terms) > 16:
        return list(terms)
    out, used = [], set()
    for t in terms:
        if not (isinstance(-t, E.axis_sum) and (-t).args[0].is_Mul):
            continue
        product = (-t).args[0]
        for u in sums:
            if id(u) in used:
                continue
            v = sympy.Mul(*[f for f in product.args if f != u.args[0]]) if u.args[0] in product.args else None
            if v is None or product != u.args[0] * v or b(u.args[0]).lo < 0 or not 0 <= b(v).lo <= b(v).hi <= 1:
                continue
            used.update((id(u), id(t)))
            out.append(E.axis_sum(u.args[0] * (1 - v)))
            break
    return out + [t for t in terms if id(t) not in used]


def _below_logsumexp(expr: sympy.Add, b: Bounds) -> bool:
    """``expr`` is ``a - logsumexp(z)`` with a at most max(z): z itself, or ``sum(w*z)`` with w on the simplex."""
    for t in expr.args:
        if not (t.is_Mul and len(t.args) == 2 and t.args[0] == -1 and isinstance(t.args[1], E.logsumexp)):
            continue
        z, rest = t.args[1].args[0], expr - t
        if rest == z:
            return True
        if isinstance(rest, E.axis_sum) and rest.args[0].is_Mul:
            weights = _weights_on_simplex(rest.args[0], b)
            if weights is not None and weights == z:
                return True
    return False


def _least(x: Bound) -> float:
    """The least magnitude of a nonzero bound; one that spans 0 is a sign-like set {lo, hi}."""
    return min(abs(x.lo), abs(x.hi))


def _underflowed(x: Bound, least: float, b: Bounds) -> Bound:
    """``x`` with 0 added when its least magnitude rounds to 0 in the type (float32: below 1.4e-45)."""
    if least < b.limits.tiny and not x.reaches_zero:
        return Bound(min(x.lo, 0.0), max(x.hi, 0.0), False)
    return x


@_bound.register
def _(expr: sympy.Mul, b: Bounds) -> Bound:
    out, least = Bound(1.0, 1.0, True), 1.0
    for arg in expr.args:
        x = b(arg)
        lo, hi = _sorted([_mul(out.lo, x.lo), _mul(out.lo, x.hi), _mul(out.hi, x.lo), _mul(out.hi, x.hi)])
        out, least = Bound(lo, hi, out.nonzero and x.nonzero), _mul(least, _least(x))
    return _underflowed(out, 0.0 if math.isnan(least) else least, b)


@_bound.register
def _(expr: sympy.Pow, b: Bounds) -> Bound:
    base, exp = b(expr.base), expr.exp
    if exp.is_Integer:
        n = int(exp)
        if n >= 0:
            lo, hi = _sorted([_ipow(base.lo, n), _ipow(base.hi, n)])  # monotone in each sign
            if n % 2 == 0 and base.lo <= 0 <= base.hi:
                lo = 0.0
            return _underflowed(Bound(lo, hi, base.nonzero), _ipow(_least(base), n), b)
        if base.reaches_zero or base.smallest_magnitude == 0:
            return REAL
        inv = Bound(*_sorted([1 / base.lo, 1 / base.hi]), True) if base.lo > 0 or base.hi < 0 else REAL
        return _pow_inverse(inv, -n, b)
    e = b(exp)
    if base.lo < 0:
        return REAL
    corners = []
    for x in (base.lo, base.hi):
        for y in (e.lo, e.hi):
            if x == 0 and y < 0:
                corners.append(INF)
            elif x == 0:
                corners.append(0.0)
            else:
                t = y * math.log(x)  # x > 0 here: log is total; inf * 0 is nan
                corners.append(INF if math.isnan(t) else _exp(t))
    lo, hi = _sorted(corners)
    return _underflowed(Bound(lo, hi, base.lo > 0), lo, b)


def _pow_inverse(inv: Bound, n: int, b: Bounds) -> Bound:
    lo, hi = _sorted([_ipow(inv.lo, n), _ipow(inv.hi, n)])
    if n % 2 == 0 and inv.lo <= 0 <= inv.hi:
        lo = 0.0
    return _underflowed(Bound(lo, hi, True), _ipow(_least(inv), n), b)


@_bound.register
def _(expr: E.quotient, b: Bounds) -> Bound:
    u, v = expr.args
    return b(u * v**-1)


@_bound.register
def _(expr: sympy.exp, b: Bounds) -> Bound:
    if E.softmax_argument(expr.args[0]) is not None:
        return Bound(0.0, 1.0)
    x = b(expr.args[0])
    lo = _exp(x.lo) if x.lo > -745 else 0.0
    return Bound(lo, _exp(x.hi), x.lo > b.limits.exp_min)


@_bound.register
def _(expr: sympy.log, b: Bounds) -> Bound:
    x = b(expr.args[0])
    lo = math.log(x.lo) if x.lo > 0 else -INF
    hi = math.log(x.hi) if 0 < x.hi < INF else (INF if x.hi == INF else -INF)
    return Bound(lo, hi)


@_bound.register
def _(expr: log1p, b: Bounds) -> Bound:
    x = b(expr.args[0])
    lo = math.log1p(x.lo) if x.lo > -1 else -INF
    hi = math.log1p(x.hi) if -1 < x.hi < INF else (INF if x.hi == INF else -INF)
    return Bound(lo, hi, x.nonzero)


@_bound.register
def _(expr: expm1, b: Bounds) -> Bound:
    x = b(expr.args[0])
    lo = math.expm1(max(x.lo, -745)) if x.lo < 709 else INF
    return Bound(lo, _exp(x.hi) - 1 if x.hi < 709 else INF, x.nonzero)


@_bound.register
def _(expr: sympy.Abs, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(x.smallest_magnitude, x.magnitude, x.nonzero)


@_bound.register
def _(expr: sympy.sign, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(-1.0 if x.lo < 0 else (0.0 if x.lo == 0 else 1.0), 1.0 if x.hi > 0 else (0.0 if x.hi == 0 else -1.0))


@_bound.register
def _(expr: sympy.tanh, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(math.tanh(x.lo), math.tanh(x.hi), x.nonzero)


@_bound.register
def _(expr: sympy.cosh, b: Bounds) -> Bound:
    x = b(expr.args[0])
    top = x.magnitude
    return Bound(math.cosh(x.smallest_magnitude) if x.smallest_magnitude < 709 else INF,
                 math.cosh(top) if top < 709 else INF, True)


def _enclose(b: Bounds, lo: float, hi: float, floor: float, ceiling: float, nonzero: bool = False) -> Bound:
    """[lo, hi] widened by four ulps of the type (float32: 2**-21 relative), so each end encloses a result that
    is off by one or two, and kept in the function's range [floor, ceiling]; an end below the type's smallest
    normal in magnitude (float32: 1.18e-38) is moved out to 0 (the value may be flushed to 0: denormals off,
    vectorised kernels)."""
    slack, normal = 4 * b.limits.eps, b.limits.normal

    def out(v: float, away: float) -> float:
        v = v + away * slack * max(abs(v), normal)
        return (min if away < 0 else max)(v, 0.0) if abs(v) < normal else v

    lo, hi = max(floor, out(lo, -1.0)), min(ceiling, out(hi, 1.0))
    return Bound(lo, hi, nonzero or lo > 0 or hi < 0)


@_bound.register
def _(expr: sympy.erf, b: Bounds) -> Bound:
    x = b(expr.args[0])  # increasing; float32 rounds it to exactly +-1 from |x| = 3.9 on
    return _enclose(b, math.erf(x.lo), math.erf(x.hi), -1.0, 1.0, x.nonzero and _least(x) > b.limits.normal)


@_bound.register
def _(expr: sympy.erfc, b: Bounds) -> Bound:
    x = b(expr.args[0])  # decreasing; 0 in float32 (below its smallest normal) from x = 9.2 on
    return _enclose(b, math.erfc(x.hi), math.erfc(x.lo), 0.0, 2.0)


def _cos_bound(b: Bounds, lo: float, hi: float, shift: float) -> Bound:
    """The bound of cos(x - shift) for x in [lo, hi]: its ends, and 1, -1 and 0 where the interval holds a
    multiple of 2*pi, an odd multiple of pi or an odd multiple of pi/2 (the argument shifted)."""
    if not (math.isfinite(lo) and math.isfinite(hi)) or hi - lo >= 2 * math.pi:
        return Bound(-1.0, 1.0)
    a, c = lo - shift, hi - shift
    ends = [math.cos(a), math.cos(c)]

    def holds(offset: float, period: float) -> bool:  # some offset + k*period in [a, c], with a margin
        k = math.ceil((a - 1e-9 - offset) / period)
        return offset + k * period <= c + 1e-9

    top = 1.0 if holds(0.0, 2 * math.pi) else max(ends)
    bottom = -1.0 if holds(math.pi, 2 * math.pi) else min(ends)
    return _enclose(b, bottom, top, -1.0, 1.0, not holds(math.pi / 2, math.pi))


@_bound.register
def _(expr: sympy.cos, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return _cos_bound(b, x.lo, x.hi, 0.0)


@_bound.register
def _(expr: sympy.sin, b: Bounds) -> Bound:
    x = b(expr.args[0])  # sin(x) = cos(x - pi/2)
    return _cos_bound(b, x.lo, x.hi, math.pi / 2)


@_bound.register
def _(expr: sympy.acos, b: Bounds) -> Bound:
    x = b(expr.args[0])  # decreasing on [-1, 1]; outside it NaN, which pow-domain reports at this node
    lo, hi = min(max(x.lo, -1.0), 1.0), min(max(x.hi, -1.0), 1.0)
    return _enclose(b, math.acos(hi), math.acos(lo), 0.0, math.pi, b.limits.round(hi) < 1)


@_bound.register
def _(expr: sympy.atan, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return _enclose(b, math.atan(x.lo), math.atan(x.hi), -math.pi / 2, math.pi / 2, x.nonzero)


#: Where lgamma has its minimum on the positive reals (it decreases before, increases after), and its value.
LGAMMA_ARGMIN = 1.4616321449683623
LGAMMA_MIN = -0.12148629053584961


def _lgamma(x: float) -> float:
    return math.lgamma(x) if x < 1e305 else INF


@_bound.register
def _(expr: sympy.loggamma, b: Bounds) -> Bound:
    x = b(expr.args[0])
    if not x.positive:
        return REAL  # a pole at 0, -1, -2, ...: division-by-zero reports it
    ends = [_lgamma(max(x.lo, 5e-324)), _lgamma(x.hi)]
    lo = LGAMMA_MIN if x.lo <= LGAMMA_ARGMIN <= x.hi else min(ends)
    return _enclose(b, lo, max(ends), LGAMMA_MIN, INF)


def _polygamma(n: int, x: float) -> float:
    if x == INF:
        return INF if n == 0 else 0.0
    value = mpmath.psi(n, mpmath.mpf(x))
    return float(value) if abs(value) < FLOAT64_MAX else math.copysign(INF, float(mpmath.sign(value)))


@_bound.register
def _(expr: sympy.polygamma, b: Bounds) -> Bound:
    order, arg = expr.args
    x = b(arg)
    if not (order.is_Integer and order >= 0) or not x.positive:
        return REAL  # digamma's poles: division-by-zero reports them
    n = int(order)
    lo, hi = _polygamma(n, max(x.lo, b.limits.tiny)), _polygamma(n, x.hi)
    # digamma increases; polygamma(n) for n >= 1 has the sign (-1)**(n + 1) and a magnitude that decreases
    if n % 2 == 1:
        lo, hi = hi, lo
    return _enclose(b, lo, hi, -INF, INF)


@_bound.register
def _(expr: E.sigmoid, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(_sigmoid(x.lo, b.limits), _sigmoid(x.hi, b.limits), x.lo > math.log(b.limits.tiny))


@_bound.register
def _(expr: E.softplus, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(_softplus(x.lo, b.limits), _softplus(x.hi, b.limits) if x.hi < 1e30 else INF,
                 x.lo > math.log(b.limits.tiny))


@_bound.register
def _(expr: E.clamp, b: Bounds) -> Bound:
    x, lo, hi = (b(a) for a in expr.args)
    out_lo = min(max(x.lo, lo.lo), hi.lo)
    out_hi = min(max(x.hi, lo.hi), hi.hi)
    return Bound(out_lo, out_hi, out_lo > 0 or out_hi < 0)


@_bound.register
def _(expr: E.maximum, b: Bounds) -> Bound:
    x, y = (b(a) for a in expr.args)
    lo = max(x.lo, y.lo)
    return Bound(lo, max(x.hi, y.hi), lo > 0)


@_bound.register
def _(expr: E.minimum, b: Bounds) -> Bound:
    x, y = (b(a) for a in expr.args)
    hi = min(x.hi, y.hi)
    return Bound(min(x.lo, y.lo), hi, hi < 0)


@_bound.register
def _(expr: E.heaviside, b: Bounds) -> Bound:
    return Bound(0.0, 1.0)


@_bound.register
def _(expr: E.where, b: Bounds) -> Bound:
    cond, yes, no = expr.args
    return b.narrowed(cond)(yes).hull(b.narrowed(sympy.Not(cond))(no))


@_bound.register
def _(expr: E.xlogy, b: Bounds) -> Bound:
    x, y = (b(a) for a in expr.args)
    if y.lo <= 0:
        return REAL
    ly = Bound(math.log(y.lo), math.log(y.hi) if y.hi < INF else INF)
    lo, hi = _sorted([_mul(x.lo, ly.lo), _mul(x.lo, ly.hi), _mul(x.hi, ly.lo), _mul(x.hi, ly.hi)])
    return Bound(lo, hi)


def _weights_on_simplex(arg: sympy.Expr, b: Bounds) -> sympy.Expr | None:
    """``y*e`` with y a simplex/one-hot symbol: sum(y*e) is a convex combination of e."""
    if isinstance(arg, sympy.Symbol) and arg in b.simplex:
        return sympy.S.One
    if arg.is_Mul:
        for factor in arg.args:
            if factor in b.simplex:
                return arg / factor
    return None


@_bound.register
def _(expr: E.axis_sum, b: Bounds) -> Bound:
    arg = expr.args[0]
    rest = _weights_on_simplex(arg, b)
    if rest is not None:
        return b(rest)
    x = b(arg)
    if x.lo == x.hi == 0:
        return x
    return Bound(x.lo if x.lo >= 0 else x.lo * AXIS_MAX, x.hi if x.hi <= 0 else x.hi * AXIS_MAX,
                 x.nonzero and (x.lo > 0 or x.hi < 0))


@_bound.register
def _(expr: E.axis_mean, b: Bounds) -> Bound:
    return b(expr.args[0])


@_bound.register
def _(expr: E.logsumexp, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(x.lo, x.hi + math.log(AXIS_MAX))


@_bound.register
def _(expr: E.norm, b: Bounds) -> Bound:
    x = b(expr.args[0])  # its powers underflow in float32 as a product does: norm([1e-30]) == 0
    p = b(expr.order)
    if p.lo < 1:  # not a norm: below 1 the bound below is no longer max|e|
        return Bound(0.0, INF)
    least = _least(x)
    smallest = least**p.hi if least < 1 else least
    # max|e| <= norm(e, p) <= n**(1/p) * max|e| for p >= 1
    return _underflowed(Bound(x.smallest_magnitude, x.magnitude * AXIS_MAX ** (1 / p.lo), x.nonzero), smallest, b)


@_bound.register
def _(expr: E.cumsum, b: Bounds) -> Bound:
    x = b(expr.args[0])
    return Bound(min(x.lo, x.lo * AXIS_MAX), max(x.hi, x.hi * AXIS_MAX))


_bound.register(E.rev_cumsum, _bound.dispatch(E.cumsum))


@_bound.register
def _(expr: E.amax | E.amin | E.axis_sort | E.flip, b: Bounds) -> Bound:
    return b(expr.args[0])  # one of the entries (a max, a min) or all of them (sorted, flipped): their interval


@_bound.register
def _(expr: E.unsort, b: Bounds) -> Bound:
    return b(expr.args[0])  # the same entries, back in their places


@_bound.register
def _(expr: E.extremum_share, b: Bounds) -> Bound:
    return Bound(0.0, 1.0)


@_bound.register
def _(expr: E.logcumsumexp, b: Bounds) -> Bound:
    return _bound.dispatch(E.logsumexp)(expr, b)  # each entry is the logsumexp of a prefix


@_bound.register
def _(expr: E.logcumsumexp_adjoint, b: Bounds) -> Bound:
    g = b(expr.args[0])  # sum_{k >= i} g_k * w_k with every w_k in [0, 1]: a sum of at most AXIS_MAX parts of g
    return Bound(min(g.lo, 0.0) * AXIS_MAX, max(g.hi, 0.0) * AXIS_MAX)


@_bound.register
def _(expr: E.axis_size, b: Bounds) -> Bound:
    return Bound(1.0, AXIS_MAX, True)


@_bound.register
def _(expr: E.axis_ones, b: Bounds) -> Bound:
    return Bound(1.0, 1.0, True)


def bounds_for(spec, limits: Limits = FLOAT32) -> Bounds:
    """The starting bounds of a spec's symbols (their declared domains), in the floating type ``limits``."""
    table = spec.sympy_symbols
    env = {table[n]: of_domain(v.domain, limits) for n, v in spec.symbols.items()}
    simplex = frozenset(table[n] for n, v in spec.symbols.items() if v.domain.name in ("simplex", "onehot"))
    return Bounds(env, simplex, limits)
