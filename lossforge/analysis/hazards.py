"""Hazard rules: where a loss or its gradient will produce NaN or inf.

One rule per kind, each a small final class in the shape of a linter rule: a
stable ``kind``, a ``severity``, a short message, a ``check`` that yields
located :class:`Hazard` values and, where one exists, a :class:`Fix` marked
*safe* (value-preserving) or *unsafe* (it changes values). The rule's
docstring is its documentation: ``lf.explain(kind)`` prints it. ``RULES`` is
the one ordered registry.

Rules run over the expressions that will be emitted: the loss and every
gradient (:func:`lossforge.derive.derive`), with lossforge's stable
primitives (``sigmoid``, ``softplus``, ``logsumexp``, ``xlogy``, ``clamp``)
taken as what the printers emit for them, and ``where`` as the double-where
pattern (a branch is analysed only where its condition holds).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from functools import cached_property

import sympy
from sympy.codegen.cfunctions import expm1, log1p

from .. import budget, display
from .. import language as E
from ..derive import derive, gradients
from ..errors import AnalysisError, UnknownNameError, did_you_mean
from ..spec import FrozenMap, LossSpec
from . import witness
from .intervals import DTYPES, FLOAT32, Bounds, Limits, as_float, bounds_for

ERROR, WARNING, INFO = "error", "warning", "info"
#: Value used by unsafe fixes (a float32-meaningful epsilon).
EPS = sympy.Float(1e-7)


@dataclass(frozen=True)
class Fix:
    """A rewrite of the offending subexpression; ``safe`` fixes preserve its value exactly."""

    replacement: sympy.Expr
    safe: bool
    description: str

    def __str__(self) -> str:
        return f"{'safe' if self.safe else 'unsafe'}: {self.description}: {E.to_text(self.replacement)}"


@dataclass(frozen=True)
class Hazard:
    """One finding: its kind, severity, location, offending subexpression and fix.

    ``witness`` is a point of the declared domains where it happens (symbol name -> value,
    :mod:`lossforge.analysis.witness`); empty where the search found none, which the message says.
    """

    kind: str
    severity: str
    where: str
    expr: sympy.Expr
    message: str
    fix: Fix | None = None
    accepted: bool = False
    reason: str = ""
    witness: FrozenMap = field(default_factory=FrozenMap)

    def __str__(self) -> str:
        tag = f" (accepted: {self.reason})" if self.accepted else ""
        return f"{self.where}: {self.kind}: {self.severity}: {self.message}: {E.to_text(self.expr)}{tag}"


@dataclass(frozen=True)
class Report:
    """The hazards of a spec; ``ok`` unless an unaccepted error remains."""

    spec: str
    hazards: tuple[Hazard, ...] = field(default_factory=tuple)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not any(h.severity == ERROR and not h.accepted for h in self.hazards)

    def kinds(self) -> set[str]:
        return {h.kind for h in self.hazards}

    def __str__(self) -> str:
        lines = [f"check {self.spec}: {'ok' if self.ok else 'FAILED'} ({len(self.hazards)} findings)"]
        for h in self.hazards:
            lines.append(f"  {h}")
            if h.fix is not None:
                lines.append(f"      fix ({h.fix})")
        return "\n".join(lines)

    def _repr_html_(self) -> str:
        """The findings as a table, for a notebook: each with where, kind, severity, message, expression, fix."""
        rows = [(h.where, h.kind, h.severity + (" (accepted)" if h.accepted else ""),
                 h.message + (f"; accepted: {h.reason}" if h.accepted else ""), display.Code(E.to_text(h.expr)),
                 display.Code(str(h.fix)) if h.fix is not None else "")
                for h in self.hazards]
        return display.table(f"check {self.spec} ({len(self.hazards)} findings)", self.ok,
                             ("where", "kind", "severity", "message", "expression", "fix"), rows)


@dataclass
class Context:
    """What a rule sees: the expression, where it is, the bounds, and the spec's inputs."""

    expr: sympy.Expr
    where: str
    bounds: Bounds
    inputs: frozenset
    vectors: frozenset

    def nodes(self, *types) -> Iterator[tuple[sympy.Basic, Bounds]]:
        """Subexpressions of the given types, each with the bounds valid at its position.

        Inside ``where(c, a, b)`` the branch ``a`` is seen with bounds narrowed
        by ``c`` (and ``b`` by ``not c``): the emitted double-where never
        evaluates a branch outside its condition.
        """
        return ((node, bounds) for node, bounds in self._visits if isinstance(node, types))

    @cached_property
    def _visits(self) -> tuple[tuple[sympy.Basic, Bounds], ...]:
        """Every distinct (node, bounds) pair, in pre-order: walked once, shared by all the rules.

        Each pair is visited once: a gradient repeats subexpressions (its tree can be
        far larger than its graph), and a rule's finding depends on the node and its
        bounds only.
        """
        stack = [(self.expr, self.bounds)]
        seen: set[tuple[int, int]] = set()
        out = []
        while stack:
            node, bounds = stack.pop()
            key = (id(node), id(bounds))
            if key in seen:
                continue
            seen.add(key)
            if len(seen) % 256 == 0:
                budget.tick()
            out.append((node, bounds))
            if isinstance(node, E.where):
                cond, yes, no = node.args
                stack.append((no, bounds.narrowed(sympy.Not(cond))))
                stack.append((yes, bounds.narrowed(cond)))
                stack.append((cond, bounds))
                continue
            stack.extend((arg, bounds) for arg in reversed(node.args))
        return tuple(out)

    def varies(self, expr: sympy.Basic) -> bool:
        return bool(expr.free_symbols & self.inputs)


class Rule:
    """Base of the rules: subclasses set ``kind``, ``severity``, ``message`` and ``check``."""

    kind: str = ""
    severity: str = ERROR
    message: str = ""
    in_gradients: bool = True

    def check(self, ctx: Context) -> Iterator[Hazard]:
        raise NotImplementedError

    #: Whether :meth:`fires_at` bounds the whole subexpression again (its cost grows with the node's size).
    rechecks = True

    def fires_at(self, ctx: Context, node: sympy.Basic, bounds: Bounds) -> bool:
        """Whether this rule still reports ``node`` with the symbols' bounds ``bounds`` (a witness's test)."""
        sub = Context(node, ctx.where, bounds, ctx.inputs, ctx.vectors)
        return any(h.expr == node for h in self.check(sub))

    def hazard(self, ctx: Context, node: sympy.Basic, fix: Fix | None = None, message: str | None = None) -> Hazard:
        return Hazard(self.kind, self.severity, ctx.where, node, message or self.message, fix)


# -- shape recognisers -------------------------------------------------------------------


def sigmoid_form(u: sympy.Expr) -> sympy.Expr | None:
    """x if ``u`` is sigmoid(x) in any common spelling, else None (1 - sigmoid(x) is sigmoid(-x))."""
    if isinstance(u, E.sigmoid):
        return u.args[0]
    if u.is_Add and len(u.args) == 2 and sympy.S.One in u.args:
        other = u - 1
        inner = sigmoid_form(-other)
        if inner is not None:
            return -inner
    if u.is_Pow and u.exp == -1 and u.base.is_Add and len(u.base.args) == 2 and sympy.S.One in u.base.args:
        rest = u.base - 1
        if isinstance(rest, sympy.exp):
            return -rest.args[0]
    found = sigmoid_factors(u)  # exp(x)/(1 + exp(x))
    if found is not None and found[1] == 1:
        return found[0]
    return None


def sigmoid_factors(u: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(x, rest) if the product ``u`` is ``rest * exp(x)/(1 + exp(x))``, else None."""
    if not u.is_Mul:
        return None
    for num in (a for a in u.args if isinstance(a, sympy.exp)):
        for den in (a for a in u.args if a.is_Pow and a.exp == -1):
            if budget.identically_zero(den.base - 1 - num):
                return num.args[0], u / (num * den)
    return None


def logaddexp(a: sympy.Expr, b: sympy.Expr) -> sympy.Expr:
    """``log(exp(a) + exp(b))`` in the form that exponentiates only non-positive numbers."""
    return E.maximum(a, b) + log1p(sympy.exp(-sympy.Abs(a - b)))


def one_plus(u: sympy.Expr) -> sympy.Expr | None:
    """x if ``u`` is 1 + x, else None."""
    if u.is_Add and sympy.S.One in u.args:
        return u - 1
    return None


def exp_minus_one(u: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(x, c) if ``u`` is c*(exp(x) - 1) for a number c: exp(x) - 1 (c = 1), 1 - exp(x) (c = -1), and the
    same scaled, as a gradient writes it (``exp(v)/2 - 1/2``, c = 1/2)."""
    if not u.is_Add or len(u.args) != 2:
        return None
    for term, constant in (u.args, reversed(u.args)):
        c = -constant
        if c.is_number and c != 0 and isinstance(term / c, sympy.exp):
            return (term / c).args[0], c
    return None


def softmax_form(u: sympy.Expr) -> tuple[sympy.Expr, sympy.Expr] | None:
    """(w, z) if ``u`` is exp(w)/sum(exp(z)): a softmax written without the max shift."""
    if not u.is_Mul:
        return None
    inverse = [a for a in u.args if a.is_Pow and a.exp == -1 and sum_of_exps(a.base) is not None]
    numer = [a for a in u.args if isinstance(a, sympy.exp)]
    if len(inverse) == 1 and len(numer) == 1 and len(u.args) == 2:
        return numer[0].args[0], sum_of_exps(inverse[0].base)
    return None


def exp_pair(u: sympy.Expr) -> bool:
    """``exp(a) + exp(b)``: the two-term log-sum-exp."""
    return u.is_Add and len(u.args) == 2 and all(isinstance(a, sympy.exp) for a in u.args)


def sum_of_exps(u: sympy.Expr) -> sympy.Expr | None:
    """z if ``u`` is sum(exp(z)) over an axis."""
    if isinstance(u, E.axis_sum) and isinstance(u.args[0], sympy.exp):
        return u.args[0].args[0]
    return None


# -- the rules -----------------------------------------------------------------------------


class UnguardedLog(Rule):
    """unguarded-log: the argument of a log can reach 0 or below.

    What it does:
        Finds ``log(u)`` (and ``xlogy(x, u)`` with x possibly nonzero) where the
        interval of ``u`` over the declared domains reaches 0 or below, including
        ``x*log(x)`` at x = 0 and ``log(1 - p)`` at p = 1, and ``log1p(u)`` with
        u reaching -1.

    Why is this bad?
        ``log(0) = -inf`` and ``log`` of a negative number is NaN; the gradient
        ``1/u`` is infinite. A probability reaches exactly 0 and 1 in floating
        point (float32 sigmoid returns 1.0 from 16.6 on).

    Example:
        ``-(y*log(p) + (1 - y)*log(1 - p))`` with p a probability.

    Use instead:
        ``log(clamp(p, eps, 1 - eps))``, or work from logits:
        ``y*softplus(-x) + (1 - y)*softplus(x)``; ``xlogy(x, x)`` for ``x*log(x)``.

    References:
        PyTorch clamps ``log`` at -100 inside ``F.binary_cross_entropy``.
    """

    kind = "unguarded-log"
    message = "log of a value that can reach 0"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.log, log1p, E.xlogy):
            if isinstance(node, log1p):
                u = node.args[0]
                if b(u).lo <= -1:
                    v = -u  # log1p(-p): cap p, which reads better than a floor on -p
                    guarded = -E.minimum(v, 1 - EPS) if v.could_extract_minus_sign() is False else E.maximum(u, EPS - 1)
                    yield self.hazard(ctx, node, Fix(log1p(guarded), False, "keep the argument above -1 + 1e-7"))
                continue
            if isinstance(node, E.xlogy):
                x, u = node.args
                if x == u and b(u).lo >= 0:
                    continue  # xlogy(x, x) is 0 at x = 0 and finite elsewhere
                if not b(u).positive and not (b(x).lo == b(x).hi == 0):
                    yield self.hazard(ctx, node)
                continue
            u = node.args[0]
            if (sigmoid_form(u) is not None or sum_of_exps(u) is not None or isinstance(u, sympy.cosh)
                    or exp_pair(u) or softmax_form(u) is not None):
                continue  # the more specific rules report these
            if not b(u).positive:
                yield self.hazard(ctx, node, self._fix(node, b))

    @staticmethod
    def _fix(node, b):
        u = node.args[0]
        if u.is_Mul and len(u.args) == 2 and u.args[0] == u.args[1]:
            return None
        if b(u).hi <= 1:
            return Fix(sympy.log(E.clamp(u, EPS, 1)), False, "clamp the argument to [1e-7, 1]")
        return Fix(sympy.log(E.maximum(u, EPS)), False, "keep the argument at least 1e-7")


class Overflow(Rule):
    """overflow: exp, cosh or a power can exceed the float range.

    What it does:
        Finds ``exp(u)`` or ``expm1(u)`` with u able to pass 88.7 (float32's
        limit; float64's is 709.8), ``cosh(u)`` with |u| past 89.4, and powers,
        quotients or products of finite factors whose magnitude can pass
        3.4e38, over the declared domains (±1000 for reals); ``lgamma``,
        ``digamma`` and the polygamma of their gradients on a positive
        argument that can pass it (``polygamma(1, x)``, digamma's gradient,
        is about 1/x**2: 1e60 at x = 1e-30).

    Why is this bad?
        The value becomes inf, and inf - inf or 0 * inf later gives NaN; the
        gradient of an overflowed term is inf or NaN as well.

    Example:
        ``log(1 + exp(x))``, ``1/(1 + exp(-x))``, ``log(cosh(x))`` for real x.

    Use instead:
        ``softplus(x)``, ``sigmoid(x)``, ``abs(x) + log1p(exp(-2*abs(x))) - log(2)``,
        ``logsumexp(z)``: forms that only exponentiate non-positive numbers.
        A quantity that is the rate itself (Poisson) can be ``[accept]``ed.

    References:
        float32 max 3.4028235e38 = exp(88.72); float64 max 1.798e308 = exp(709.78).
    """

    kind = "overflow"
    message = "can exceed the float range"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.exp, expm1, sympy.cosh, sympy.Pow, sympy.Mul, E.quotient, *_POLES):
            if isinstance(node, E.quotient):
                u, v = (b(a) for a in node.args)
                if math.isfinite(u.magnitude) and not v.reaches_zero and b(node).magnitude > b.limits.max:
                    yield self.hazard(ctx, node, None, "quotient can exceed the float range")
                continue
            if isinstance(node, _POLES):
                if _pole_argument(node, b).positive and b(node).magnitude > b.limits.max:
                    yield self.hazard(ctx, node, None, f"{_name(node)} can exceed the float range")
                continue
            if isinstance(node, sympy.Mul):
                if self._product_overflows(node, b):
                    yield self.hazard(ctx, node, None, "product can exceed the float range")
                continue
            if isinstance(node, (sympy.exp, expm1)):
                if E.softmax_argument(node.args[0]) is not None:
                    continue
                if b(node.args[0]).hi > b.limits.exp_max:
                    yield self.hazard(ctx, node, self._fix(ctx, node), f"{node.func.__name__} can overflow")
            elif isinstance(node, sympy.cosh):
                if b(node.args[0]).magnitude > b.limits.exp_max + 0.69:
                    yield self.hazard(ctx, node, None, "cosh can overflow")
            elif self._power_overflows(node, b):
                yield self.hazard(ctx, node, None, "power can exceed the float range")

    @staticmethod
    def _product_overflows(node: sympy.Mul, b: Bounds) -> bool:
        """Finite factors of independent symbols whose product passes the float range (cosh(z)/x, x = 1e-30).

        A large numerator and a large denominator that share a symbol are
        correlated (``sum(a*b)/norm(a)`` is small where ``1/norm(a)`` is large):
        their interval product overstates, so they are left to the rules of
        their own parts.
        """
        if b(node).magnitude <= b.limits.max or any(b(f).magnitude > b.limits.max for f in node.args):
            return False
        large = [f for f in node.args if b(f).magnitude > 1]  # bounded factors cannot make it overflow
        over = [f for f in large if f.is_Pow and f.exp.is_negative]
        under = set().union(*(_magnitude_symbols(f) for f in large if f not in over))
        return not any(_magnitude_symbols(f) & under for f in over)

    @staticmethod
    def _power_overflows(node: sympy.Pow, b: Bounds) -> bool:
        base = b(node.base)
        if not node.exp.is_number:  # mu**(-p), p a param: over the exponent's declared interval
            return math.isfinite(base.magnitude) and not base.reaches_zero and b(node).magnitude > b.limits.max
        if node.exp > 0:  # |base|**e, whatever the sign (a negative base is pow-domain's)
            if not math.isfinite(base.magnitude):
                return False  # the base is already inf: reported where it became so (a log, an exp)
            return base.magnitude > 0 and as_float(node.exp) * math.log(base.magnitude) > b.limits.exp_max
        return not base.reaches_zero and b(node).magnitude > b.limits.max  # 1/tiny; 1/0 is division's

    @staticmethod
    def _fix(ctx, node):
        # The enclosing spellings have safe rewrites; stabilize() applies them from the log/ratio upward.
        return None


_BOUNDED = (E.sign, sympy.sign, E.heaviside, E.sigmoid, sympy.tanh, sympy.erf, sympy.erfc, sympy.cos, sympy.sin,
            sympy.acos, sympy.atan)

#: Functions with poles at 0, -1, -2, ...: lgamma, and digamma with the polygamma of its gradients.
_POLES = (sympy.loggamma, sympy.polygamma)


def _pole_argument(node: sympy.Function, b: Bounds):
    """The bound of the argument whose poles ``node`` has (polygamma's second: its first is the order)."""
    return b(node.args[-1])


def _name(node: sympy.Function) -> str:
    """The spec-language name of a function node (``digamma`` for polygamma(0, x))."""
    if isinstance(node, sympy.polygamma):
        return "digamma" if node.args[0] == 0 else "polygamma"
    return getattr(node.func, "spec_name", node.func.__name__)


def _magnitude_symbols(expr: sympy.Expr) -> set:
    """The symbols that move the magnitude of ``expr``: not those seen only through a sign, step or sigmoid."""
    return expr.replace(lambda n: isinstance(n, _BOUNDED), lambda n: sympy.S.One).free_symbols


def _root_derivative(ctx, node: sympy.Pow) -> bool:
    """In a gradient, ``1/sqrt(u)`` or a negative power of a norm is the derivative of a sqrt or a norm:
    reported once, as sqrt-at-zero, not again as a division or a power."""
    return ctx.where != "loss" and (node.exp == -sympy.S.Half or isinstance(node.base, E.norm))


class DivisionByZero(Rule):
    """division-by-zero: a denominator can reach 0.

    What it does:
        Finds ``1/u`` (any negative power) where the interval of u contains 0,
        including a sigmoid or softplus that underflows to exactly 0 in float
        (sigmoid(x) = 0.0 below x = -104 in float32). In a gradient,
        ``1/sqrt(u)`` and ``1/norm(v)`` are the derivatives of a sqrt or a
        norm, and are reported as sqrt-at-zero instead. Also the hidden
        denominators: ``lgamma(u)`` and ``digamma(u)`` (and the polygamma of
        their gradients) whose argument can reach 0 or below, where their
        poles at 0, -1, -2, ... are (Gamma(u) = Gamma(u + 1)/u). A witness is
        exact where a float reaches the zero; ``1/cos(x)`` and ``1/sin(x)`` have
        none (no float is a multiple of pi/2), and ``1/(p + 1e-7)`` reaches 0
        only once the constant is rounded to the type: the bound reaches 0, and
        the message says that no point was found. Below the type's smallest
        normal a value is taken as 0 (float32 ``erfc(10)`` is a subnormal, which
        a kernel may flush): there the witness is exact where denormals are flushed.

    Why is this bad?
        ``1/0 = inf``, ``0/0 = NaN``; in a gradient the NaN reaches every weight.
        ``lgamma(0) = inf`` and ``digamma(0)`` is -inf or NaN, their gradients too.

    Example:
        ``1/(1 - p)`` with p a probability; ``target/sigmoid(x)``; ``lgamma(x)`` with x real.

    Use instead:
        Add a positive epsilon to a nonnegative denominator (``1/(s + eps)``), or
        rewrite so the ratio never forms (``softplus`` instead of ``log(1 + exp)``);
        give a gamma function's argument a positive domain (``nu`` positive, ``softplus(x) + eps``).

    References:
        IEEE 754: x/0 is ±inf for x != 0 and NaN for x = 0.
    """

    kind = "division-by-zero"
    message = "denominator can reach 0"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.Pow, E.quotient, *_POLES):
            if isinstance(node, E.quotient):
                if b(node.args[1]).reaches_zero:
                    yield self.hazard(ctx, node)
                continue
            if isinstance(node, _POLES):
                if not _pole_argument(node, b).positive:
                    yield self.hazard(ctx, node, None, f"{_name(node)} of a value that can reach a pole (0, -1, -2, ...)")
                continue
            exp = node.exp
            if _root_derivative(ctx, node):
                continue
            if exp.is_number and exp < 0 and b(node.base).reaches_zero:
                yield self.hazard(ctx, node, self._fix(node, b))

    @staticmethod
    def _fix(node, b):
        base = node.base
        if b(base).lo >= 0:
            return Fix(sympy.Pow(base + EPS, node.exp), False, "add 1e-7 to the nonnegative denominator")
        return None


class SqrtAtZero(Rule):
    """sqrt-at-zero: a sqrt argument can reach 0, so its gradient is infinite there.

    What it does:
        Finds ``sqrt(u)`` (and ``u**(-1/2)`` in a gradient) with u able to reach
        0, ``norm(v)`` with v able to be the zero vector (the norm's gradient
        ``v/norm(v)`` is 0/0 there), and ``acos(u)`` of an input with u able
        to reach -1 or 1 in float32 (its gradient ``-1/sqrt(1 - u**2)``).

    Why is this bad?
        d sqrt(u)/du = 1/(2 sqrt(u)) is infinite at 0; multiplied by a zero
        upstream gradient it becomes NaN. ``acos(1 - 1e-8)`` is ``acos(1.0)`` in
        float32, where the gradient is -inf.

    Example:
        ``sqrt(sum((a - b)**2))`` for equal embeddings; ``norm(a - b)``; ``acos(c)``
        for a cosine similarity c in [-1, 1].

    Use instead:
        ``sqrt(s + eps)``, or ``norm(a - b + eps)`` as ``F.pairwise_distance`` does;
        ``acos(clamp(c, -1 + eps, 1 - eps))`` with eps at least 1e-7 (float32's step below 1 is 6e-8).

    References:
        ``torch.nn.functional.pairwise_distance`` adds eps=1e-6 to the difference.
    """

    kind = "sqrt-at-zero"
    message = "sqrt of a value that can reach 0: infinite gradient"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.Pow, E.norm, sympy.acos):
            if isinstance(node, sympy.acos):
                u = node.args[0]
                if ctx.where == "loss" and ctx.varies(u) and _reaches_one(b(u), b.limits):
                    yield self.hazard(ctx, node, None, "acos of a value that can reach -1 or 1: infinite gradient")
                continue
            if isinstance(node, E.norm):
                if b(node).reaches_zero:  # a zero vector, or one whose squares underflow in float32
                    yield self.hazard(ctx, node, Fix(node.func(node.args[0] + EPS, *node.args[1:]), False, "add 1e-7 inside the norm"),
                                      "norm of a vector that can be 0: its gradient is 0/0")
                continue
            # In a gradient a sqrt is a value (x**1.5's 1.5*sqrt(x) is 0 at 0); its reciprocal is the
            # derivative of the loss's sqrt, infinite at 0.
            roots = (sympy.S.Half, -sympy.S.Half) if ctx.where == "loss" else (-sympy.S.Half,)
            if node.exp in roots and b(node.base).lo <= 0:
                fix = Fix(sympy.sqrt(node.base + EPS), False, "add 1e-7 under the sqrt") if node.exp > 0 else None
                yield self.hazard(ctx, node, fix)


def _reaches_one(x, limits: Limits) -> bool:
    """Whether a bound reaches -1 or 1 once its ends are rounded to the type (1 - 1e-8 is 1.0 in float32)."""
    return limits.round(x.hi) >= 1 or limits.round(x.lo) <= -1


class PowDomain(Rule):
    """pow-domain: a fractional power of a possibly negative base, or a negative power of a possibly zero base.

    What it does:
        Finds ``b**e`` with a non-integer e where b can be negative, and with a
        negative non-integer e where b can be 0 (including a symbolic exponent
        whose domain allows it, as ``(1 - p_t)**gamma`` with gamma < 1 has).
        The same real-domain error of a function: ``acos(u)`` with u able to
        leave [-1, 1].

    Why is this bad?
        A fractional power of a negative number is NaN; a negative power of 0 is inf;
        ``acos(1.0000001)`` is NaN.

    Example:
        ``x**0.5`` with x real; ``(1 - p)**(gamma - 1)`` with gamma in [0, 1); ``acos(x)`` with x real.

    Use instead:
        Restrict the base's domain, use ``abs(x)**e``, or declare the exponent's
        domain so the power cannot go negative (``gamma`` in ``[1, 10]``);
        ``acos(clamp(c, -1 + eps, 1 - eps))`` or an argument bounded by construction (``tanh``).

    References:
        C99 pow: pow(x, y) is NaN for finite x < 0 and finite non-integer y; acos(x)
        is NaN for |x| > 1.
    """

    kind = "pow-domain"
    message = "power outside its real domain"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.Pow, sympy.acos):
            if isinstance(node, sympy.acos):
                u = b(node.args[0])
                if u.lo < -1 or u.hi > 1:
                    yield self.hazard(ctx, node, None, "acos of a value that can leave [-1, 1]")
                continue
            exp = node.exp
            if exp.is_Integer:
                continue
            base, e = b(node.base), b(exp)
            if exp in (sympy.S.Half, -sympy.S.Half):  # sqrt: at 0 it is sqrt-at-zero's, below 0 NaN
                if base.lo < 0:
                    yield self.hazard(ctx, node, None, "sqrt of a value that can be negative")
                continue
            integral = exp.is_integer is True
            if base.lo < 0 and not integral:
                yield self.hazard(ctx, node, None, "fractional power of a value that can be negative")
            elif e.lo < 0 and base.reaches_zero and not _root_derivative(ctx, node):
                yield self.hazard(ctx, node, None, "negative power of a value that can be 0")


class LogSumExp(Rule):
    """log-sum-exp: ``log(sum(exp(..)))`` without the max shift.

    What it does:
        Finds ``log(sum(exp(z)))`` over an axis (and ``log(exp(a) + exp(b))``)
        where the exponents can overflow (above 88.7) or all underflow (below -87),
        and the log of a softmax written out, ``log(exp(z)/sum(exp(z)))``.

    Why is this bad?
        One logit above 88.7 makes the sum inf in float32; all logits below -87
        make it 0 and the log -inf. Either way the softmax gradient is NaN.

    Example:
        ``log(sum(exp(z))) - sum(y*z)`` with real logits.

    Use instead:
        ``logsumexp(z)``, which subtracts the maximum before exponentiating.

    References:
        ``torch.logsumexp``; ``scipy.special.logsumexp``.
    """

    kind = "log-sum-exp"
    message = "log(sum(exp(...))) without the max shift"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.log):
            u = node.args[0]
            z = sum_of_exps(u)
            soft = softmax_form(u)
            if soft is not None:
                yield self.hazard(ctx, node, Fix(soft[0] - E.logsumexp(soft[1]), True,
                                                 "log-softmax: w - logsumexp(z)"), "log of a softmax without the max shift")
            elif z is not None:
                zb = b(z)
                if zb.hi > b.limits.exp_max or zb.lo < b.limits.exp_min:
                    yield self.hazard(ctx, node, Fix(E.logsumexp(z), True, "logsumexp with the max shift"))
            elif exp_pair(u):
                a, c = (t.args[0] for t in u.args)
                if max(b(a).hi, b(c).hi) > b.limits.exp_max or max(b(a).lo, b(c).lo) < b.limits.exp_min:
                    yield self.hazard(ctx, node, Fix(logaddexp(a, c), True, "logaddexp: max + log1p(exp(-|a - b|))"))


class LogSigmoid(Rule):
    """log-sigmoid: ``log(sigmoid(x))``, ``log(1 - sigmoid(x))`` or their exp spellings.

    What it does:
        Finds the log of a sigmoid in any common spelling (``sigmoid(x)``,
        ``1 - sigmoid(x)``, ``1/(1 + exp(-x))``, ``exp(x)/(1 + exp(x))``) where the
        sigmoid can saturate to exactly 0 or 1 in float.

    Why is this bad?
        In float32, ``1 - sigmoid(x)`` is exactly 0 from x = 16.6 (float64: 36.7),
        and ``sigmoid(x)`` is 0 below -104: the log is -inf, the gradient NaN.

    Example:
        ``-(y*log(sigmoid(x)) + (1 - y)*log(1 - sigmoid(x)))``.

    Use instead:
        ``log(sigmoid(x)) = -softplus(-x)`` and ``log(1 - sigmoid(x)) = -softplus(x)``.

    References:
        optax.sigmoid_binary_cross_entropy: "log(1 - sigmoid(x)) = log_sigmoid(-x),
        the latter more numerically stable".
    """

    kind = "log-sigmoid"
    message = "log of a sigmoid that can saturate"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.log):
            x = sigmoid_form(node.args[0])
            if x is None:
                continue
            if b(node.args[0]).lo <= 0:  # saturated to exactly 0 in float32 (bounds model it)
                yield self.hazard(ctx, node, Fix(-E.softplus(-x), True, "log(sigmoid(x)) = -softplus(-x)"))


class ZeroGradient(Rule):
    """zero-gradient: a term whose gradient is zero almost everywhere, so training never sees it.

    What it does:
        Finds additive terms of the loss that depend on an input only through a
        step: ``heaviside``, ``sign``, ``where`` with constant branches (a
        comparison turned into a number), or the key of a ``sort_by`` (the order
        of targets by a prediction). Their gradient is zero everywhere it exists.

    Why is this bad?
        The term changes the value the user monitors but contributes nothing to
        the update: a penalty like ``mask.float().sum() * ratio`` on missed
        positives never teaches the model to avoid them.

    Example:
        ``bce + ratio*y*heaviside(0.5 - p)``.

    Use instead:
        Weight the differentiable term itself: ``-(fn_weight*y*log(p) + (1 - y)*log(1 - p))``.

    References:
        The "medical" cost-sensitive loss of the loss-design chapter.
    """

    kind = "zero-gradient"
    message = "term has zero gradient almost everywhere"
    in_gradients = False

    def check(self, ctx):
        inputs = {s.name: s for s in ctx.inputs}
        distributed = budget.expand_mul(ctx.expr)  # None where distributing would pass the budget
        # Distributing splits sign(x)*(1 - exp(-|x|)) into sign(x) - sign(x)*exp(-|x|): the terms that hold
        # the same steps are judged together, as the factor they were written with.
        groups: dict[frozenset, list] = {}
        for term in sympy.Add.make_args(ctx.expr if distributed is None else distributed):
            budget.tick()
            steps = frozenset(term.atoms(E.heaviside, E.sign, sympy.sign, E.where, E.axis_sort))  # a sort: a step in its key
            if steps and ctx.varies(term):
                groups.setdefault(steps, []).append(term)
        for terms in groups.values():
            term = sympy.Add(*terms)
            grads = gradients(term, inputs, set(ctx.vectors), stage="check")
            if all(g == 0 for g in grads.values()):
                yield self.hazard(ctx, term)

    rechecks = False

    def fires_at(self, ctx, node, bounds):
        return True  # the term's gradient is zero wherever it exists: any point of the domains shows it


class Cancellation(Rule):
    """cancellation: ``log(1 + x)``, ``exp(x) - 1`` and kin lose precision for small x.

    What it does:
        Finds ``log(1 + x)`` and ``c*(exp(x) - 1)`` (``1 - exp(x)``, and
        ``exp(x)/2 - 1/2`` as a gradient writes it) where x can be near 0, and
        ``x*log(x)`` (safe as ``xlogy(x, x)``). A log whose argument also holds a
        guard term (``log(1 - p + eps)``) is the eps idiom, not flagged. In a
        gradient, also a sum with two terms over a shared denominator that can
        pass 1/eps of the type (8.4e6 in float32) with opposite signs. Its
        witness is a point with a small nonzero x (where 1 + x rounds to 1), or
        where both terms are huge.

    Why is this bad?
        ``1 + 1e-10 == 1.0000000001`` keeps only 6 digits of x in float64 and none
        in float32; ``exp(1e-10) - 1`` likewise. The value and its gradient lose
        their relative precision. Two huge terms that are nearly equal leave only
        their rounding error: sMAPE's d/dpred at target 0, pred 1e-30 is
        2/(|p| + |t|) - 2|p - t|/(|p| + |t|)**2, each 2e30, exactly 0 apart, and
        -2.8e14 computed.

    Example:
        ``log(1 + r**2)``, ``exp(x) - 1``; ``2*abs(p - t)/(abs(p) + abs(t))``.

    Use instead:
        ``log1p(x)``, ``expm1(x)``: exact rewrites; the sum over its common
        denominator (the fix shows it), or an eps in the denominator.

    References:
        Goldberg, "What every computer scientist should know about floating-point
        arithmetic" (1991), on catastrophic cancellation.
    """

    kind = "cancellation"
    severity = WARNING
    message = "loses precision when the argument is near 0"

    def check(self, ctx):
        for node, b in ctx.nodes(sympy.log, sympy.Add):
            if isinstance(node, sympy.log):
                x = one_plus(node.args[0])
                if x is None or sigmoid_form(node.args[0]) is not None:
                    continue
                if isinstance(x, sympy.exp):
                    continue  # log(1 + exp(x)): reported as overflow, fixed as softplus
                if b(node.args[0]).lo <= 0:
                    continue  # log(1 - p) reaching 0: reported as unguarded-log
                if not all(ctx.varies(t) for t in sympy.Add.make_args(x)):
                    continue  # log(1 - p + eps): the eps-guard idiom, not a log(1 + x)
                if b(x).smallest_magnitude < 1e-3:
                    yield self.hazard(ctx, node, Fix(log1p(x), True, "log(1 + x) = log1p(x)"))
            else:
                if ctx.where != "loss" and self._huge_opposites(ctx, node, b):
                    yield self.hazard(ctx, node, self._combined(node), "terms that can be huge and nearly equal "
                                      "cancel: the difference loses its digits")
                    continue
                found = exp_minus_one(node)
                if found is None:
                    continue
                x, c = found
                if b(x).smallest_magnitude < 1e-3:
                    yield self.hazard(ctx, node, Fix(c * expm1(x), True, "exp(x) - 1 = expm1(x)"))

    @staticmethod
    def _huge_opposites(ctx, node: sympy.Add, b: Bounds) -> bool:
        """Two terms of a gradient's sum that can pass 1/eps with opposite signs over a shared denominator:
        huge together, so nearly equal where their exact difference is small (sMAPE's d/dpred at target 0,
        pred 1e-30: 2/(|p| + |t|) - 2|p - t|/(|p| + |t|)**2, each 2e30, exactly 0 apart)."""
        huge = 1 / b.limits.eps
        terms = [t for t in node.args if ctx.varies(t)]
        up = [t for t in terms if b(t).hi > huge]
        down = [t for t in terms if b(t).lo < -huge]
        return any(a is not c and _denominators(a) & _denominators(c) for a in up for c in down)

    @staticmethod
    def _combined(node: sympy.Add) -> Fix | None:
        """The sum over its common denominator, where that is small enough to form."""
        if len(node.args) > 8 or budget.tree_size(node, cap=2000) >= 2000:
            return None
        together = sympy.together(node)
        return Fix(together, True, "over a common denominator") if together != node else None

    def fires_at(self, ctx, node, bounds):
        """Precision is lost at a small nonzero argument (at exactly 0 the rounded value is exact); huge
        opposite terms are huge at the point."""
        if isinstance(node, sympy.log):
            x = one_plus(node.args[0])
        elif exp_minus_one(node) is not None:
            x = exp_minus_one(node)[0]
        else:
            return super().fires_at(ctx, node, bounds)
        x = bounds(x)
        return not x.lo == x.hi == 0 and super().fires_at(ctx, node, bounds)


def _unkeyed(expr: sympy.Basic) -> sympy.Basic:
    """``expr`` without its sorts' keys: what moves continuously with the inputs. Through a key alone (the
    sorted labels in ``max(sum(y) + cumsum(1 - sort_by(y, z)), 1)``) it is piecewise constant, never at a kink."""
    return expr.replace(lambda n: isinstance(n, E.axis_sort), lambda n: n.func(n.args[0], sympy.S.Zero, n.args[2]))


class NonDifferentiable(Rule):
    """non-differentiable: a kink (abs, max, min, clamp, piecewise, sort) where a subgradient convention is used.

    What it does:
        Lists ``abs``, ``max``, ``min``, ``clamp`` and ``where`` whose argument or
        condition depends on an input, and the axis operations ``amax``, ``amin``
        and ``sort``/``sort_by`` of an input (a kink where entries tie).

    Why is this bad?
        It usually is not: the loss is continuous, and at the kink lossforge uses
        PyTorch's conventions (``abs``/``relu``: 0, ``clamp``: 1 at the boundary,
        ``amax``: split evenly between ties, ``sort``: the stable order of ties).
        It is listed so that a reader knows where second-order methods see a jump.

    Example:
        ``abs(pred - target)``, ``max(0, margin - y*s)``.

    Use instead:
        Nothing is required; ``huber`` or ``softplus`` are smooth alternatives.

    References:
        Clarke, "Optimization and Nonsmooth Analysis" (1983): subgradients.
    """

    kind = "non-differentiable"
    severity = INFO
    message = "kink: a subgradient convention is used"
    in_gradients = False

    def check(self, ctx):
        steps_in_gradient = None
        unkeyed = _unkeyed if ctx.expr.has(E.axis_sort) else lambda e: e
        for node, _ in ctx.nodes(sympy.Abs, E.maximum, E.minimum, E.clamp, E.where, E.amax, E.amin, E.axis_sort):
            if isinstance(node, E.axis_sort):
                if not ctx.varies(node.key):  # ordered by a target's key: a fixed permutation, smooth
                    continue
            elif not ctx.varies(unkeyed(node.args[0] if isinstance(node, (E.where, E.clamp)) else node)):
                continue  # a where's condition, a clamp's argument, anything else itself
            if isinstance(node, E.where) and not ctx.varies(node.args[1]) and not ctx.varies(node.args[2]):
                # A step: alone it is zero-gradient's; times a varying factor (x*where(x > 0, 2, 1))
                # it reaches the gradient, whose jump there is a kink of the loss.
                if ctx.where != "loss":
                    continue
                if steps_in_gradient is None:
                    grads = gradients(ctx.expr, {s.name: s for s in ctx.inputs}, set(ctx.vectors), stage="check")
                    steps_in_gradient = {n for g in grads.values() for n in g.atoms(E.where)}
                if node not in steps_in_gradient:
                    continue
            yield self.hazard(ctx, node)

    rechecks = False

    def fires_at(self, ctx, node, bounds):
        """The kink is reached: the argument of ``abs``, ``a - b`` of a max or min, ``x - lo`` or ``x - hi``
        of a clamp, ``lhs - rhs`` of a ``where``'s comparison can be 0; the entries of an ``amax``, ``amin`` or
        sort tie (always reachable: a vector's entries share one interval)."""
        args = node.args
        if isinstance(node, (E.amax, E.amin, E.axis_sort)):
            return True
        if isinstance(node, sympy.Abs):
            gaps = [args[0]]
        elif isinstance(node, E.clamp):
            gaps = [args[0] - args[1], args[0] - args[2]]
        elif isinstance(node, E.where):
            gaps = [c.lhs - c.rhs for c in _conjuncts_of(args[0])]
        else:
            gaps = [args[0] - args[1]]
        return any(bounds(g).reaches_zero for g in gaps)


def _denominators(term: sympy.Expr) -> set:
    """The bases a term divides by (``v`` of ``u*v**-2``)."""
    factors = term.args if term.is_Mul else (term,)
    return {f.base for f in factors if f.is_Pow and f.exp.is_number and f.exp < 0}


def _conjuncts_of(cond: sympy.Basic) -> list:
    """The comparisons a condition is made of."""
    return [c for c in sympy.preorder_traversal(cond) if isinstance(c, sympy.core.relational.Relational)]


#: The one ordered registry of rules.
RULES: tuple[Rule, ...] = (
    UnguardedLog(),
    Overflow(),
    DivisionByZero(),
    SqrtAtZero(),
    PowDomain(),
    LogSumExp(),
    LogSigmoid(),
    ZeroGradient(),
    Cancellation(),
    NonDifferentiable(),
)
KINDS = tuple(r.kind for r in RULES)


def explain(kind: str) -> str:
    """The documentation of a hazard kind (its rule's docstring)."""
    for rule in RULES:
        if rule.kind == kind:
            return type(rule).__doc__.strip()
    raise UnknownNameError(f"unknown hazard kind {kind!r}{did_you_mean(kind, KINDS)} (known: {', '.join(KINDS)})",
                           token=str(kind))


def limits_of(dtype: str | None) -> Limits:
    """The floating type named ``dtype`` (None: float32's thresholds, which also cover float64)."""
    if dtype is None:
        return FLOAT32
    found = DTYPES.get(dtype) if isinstance(dtype, str) else None
    if found is None:
        raise UnknownNameError(f"unknown dtype {dtype!r} for check{did_you_mean(str(dtype), DTYPES)} "
                               f"(known: {', '.join(DTYPES)})", token=str(dtype))
    return found


def _witness_of(h: Hazard, ctx: Context, spec: LossSpec, work: list[int]) -> dict[str, float] | None:
    """A point of the domains where ``h`` happens, by name; {} where the search finds none, None where the
    check's witness work (``work[0]`` nodes left) does not cover a search over this subexpression."""
    rule = next(r for r in RULES if r.kind == h.kind)
    tries = witness.MAX_TRIES
    if rule.rechecks:
        size = budget.tree_size(h.expr, cap=witness.WORK)
        tries = min(tries, work[0] // max(size, 1))
        if tries < 4:
            return None
        work[0] -= tries * size
    table = spec.sympy_symbols
    pinnable = [table[n] for n, v in spec.symbols.items()
                if v.domain.name not in ("simplex", "onehot") and isinstance(v.default, (int, float, type(None)))]
    own = h.expr.free_symbols
    params = [s for s in pinnable if s in own and s.name in spec.params]
    order = params + [s for s in pinnable if s in own and s not in params] + [s for s in pinnable if s not in own]
    names = {s: n for n, s in table.items()}

    constants = tuple(sorted({as_float(a) for a in h.expr.atoms(sympy.Number) if a.is_finite}))

    def choices(symbol, bound, chosen):
        var = spec.symbols[names[symbol]]
        return witness.candidates(bound, var.domain.values, var.default, ctx.bounds, chosen, constants)

    tried = set()
    for node, b in ctx.nodes(type(h.expr)):
        if node != h.expr or id(b) in tried:
            continue
        tried.add(id(b))
        point = witness.find(lambda pinned, node=node: rule.fires_at(ctx, node, pinned), b, order, choices, tries)
        if point is not None:
            return {names[s]: v for s, v in point.items()}
    return {}


def _at(point: dict[str, float] | None, limits: Limits) -> str:
    if point is None:
        return "no witness searched: the expression is too large"
    if not point:
        return "no single point found: the bound may over-approximate"
    return "at " + ", ".join(f"{n} = {limits.text(v)}" for n, v in point.items())


def check(spec: LossSpec, dtype: str | None = None) -> Report:
    """Every hazard of the loss and of each gradient, over the declared domains, each with a witness.

    ``dtype`` names the floating type reasoned in (``"float16"``, ``"bfloat16"``, ``"float32"``,
    ``"float64"``); None, the default, uses float32's thresholds, which also cover float64.
    Runs under :mod:`lossforge.budget`: expressions past the node limit, or a
    check past its time limit, raise :class:`AnalysisError` naming the stage.
    """
    if not isinstance(spec, LossSpec):
        raise AnalysisError(f"check() needs a LossSpec, got {type(spec).__name__}", token=type(spec).__name__)
    limits = limits_of(dtype)
    for kind in spec.accept:
        if kind not in KINDS:
            raise UnknownNameError(f"[accept] names an unknown hazard kind {kind!r} (known: {', '.join(KINDS)})",
                                   token=str(kind))
    start = time.perf_counter()
    with budget.deadline("check"):
        exprs = derive(spec).exprs()
        budget.check("check", *exprs.values())
        bounds = bounds_for(spec, limits)
        table = spec.sympy_symbols
        inputs = frozenset(table[n] for n in spec.inputs)
        vectors = frozenset(table[n] for n, v in spec.symbols.items() if v.axis)
        found: dict[tuple[str, str, sympy.Basic], Hazard] = {}
        contexts = {}
        for where, expr in exprs.items():
            ctx = contexts[where] = Context(expr, where, bounds, inputs, vectors)
            for rule in RULES:
                if where != "loss" and not rule.in_gradients:
                    continue
                budget.tick()
                for h in rule.check(ctx):
                    found.setdefault((where, h.kind, h.expr), h)
        hazards, work = [], [witness.WORK]
        for h in found.values():
            point = _witness_of(h, contexts[h.where], spec, work)
            accepted = h.kind in spec.accept
            hazards.append(Hazard(h.kind, h.severity, h.where, h.expr, f"{h.message} ({_at(point, limits)})", h.fix,
                                  accepted, spec.accept.get(h.kind, ""), FrozenMap(point or {})))
    order = {w: i for i, w in enumerate(exprs)}
    hazards.sort(key=lambda h: (order[h.where], KINDS.index(h.kind), sympy.default_sort_key(h.expr)))
    return Report(spec.name, tuple(hazards), time.perf_counter() - start)
