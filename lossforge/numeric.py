"""High-precision evaluation of a spec's expressions, the reference for float results.

Verification needs values it can trust more than the code under test. Here
the loss and its gradients are evaluated in mpmath at 30 significant digits
(by default): no overflow (``exp(1000)`` is an ordinary number), no
underflow, no cancellation at float64's scale. Axis operations are written
out element by element (:func:`expand`), lossforge's own functions are
rewritten into elementary ones (:func:`elementary`), and the result is turned
into mpmath code once with ``sympy.lambdify`` (our own parsed expression,
never user text) and cached.
"""

from __future__ import annotations

import math
from functools import lru_cache

import mpmath
import numpy as np
import sympy
from sympy.logic.boolalg import BooleanAtom

from . import budget
from . import language as E
from .derive import derive
from .spec import LossSpec


def element_symbol(sym: sympy.Symbol, k: int) -> sympy.Symbol:
    """The symbol for element ``k`` of a vector symbol (``z`` -> ``z_0``), same assumptions."""
    return sympy.Symbol(f"{sym.name}_{k}", **{a: v for a, v in sym.assumptions0.items() if v is not None})


def expand(expr: sympy.Expr, n: int, vectors: set[sympy.Symbol]) -> list[sympy.Expr]:
    """The ``n`` explicit elements of ``expr`` over vector symbols of length ``n``.

    ``sum(e)`` becomes ``e_0 + ... + e_{n-1}``, ``cumsum(e)`` the running
    sums, ``mean``/``logsumexp``/``norm``/``amax``/``logcumsumexp`` their
    written-out forms, a sort's element ``k`` a :class:`ranked` entry; a
    per-sample expression has ``n`` equal elements.
    """

    def row(e: sympy.Basic) -> list[sympy.Basic]:
        return [el(e, i) for i in range(n)]

    def share(e: sympy.Basic, m: sympy.Basic, k: int) -> sympy.Basic:
        hits = [sympy.Piecewise((1, sympy.Eq(x, el(m, k))), (0, True)) for x in row(e)]
        return hits[k] / sympy.Add(*hits)

    def el(e: sympy.Basic, k: int) -> sympy.Basic:
        if e in vectors:
            return element_symbol(e, k)
        if isinstance(e, E.axis_sum):
            return sympy.Add(*(el(e.args[0], i) for i in range(n)))
        if isinstance(e, E.axis_mean):
            return sympy.Add(*(el(e.args[0], i) for i in range(n))) / n
        if isinstance(e, E.logsumexp):
            return sympy.log(sympy.Add(*(sympy.exp(el(e.args[0], i)) for i in range(n))))
        if isinstance(e, E.norm) and len(e.args) == 1:
            return sympy.sqrt(sympy.Add(*(el(e.args[0], i) ** 2 for i in range(n))))
        if isinstance(e, E.norm):
            p = el(e.order, k)
            return sympy.Add(*(sympy.Abs(el(e.args[0], i)) ** p for i in range(n))) ** (1 / p)
        if isinstance(e, E.cumsum):
            return sympy.Add(*(el(e.args[0], i) for i in range(k + 1)))
        if isinstance(e, E.rev_cumsum):
            return sympy.Add(*(el(e.args[0], i) for i in range(k, n)))
        if isinstance(e, E.amax):
            return sympy.Max(*row(e.args[0]))
        if isinstance(e, E.amin):
            return sympy.Min(*row(e.args[0]))
        if isinstance(e, E.extremum_share):
            return share(*e.args, k)
        if isinstance(e, E.logcumsumexp):
            return sympy.log(sympy.Add(*(sympy.exp(el(e.args[0], i)) for i in range(k + 1))))
        if isinstance(e, E.logcumsumexp_adjoint):
            g, a, out = e.args
            return sympy.Add(*(el(g, j) * sympy.exp(el(a, k) - el(out, j)) for j in range(k, n)))
        if isinstance(e, E.flip):
            return el(e.args[0], n - 1 - k)
        if isinstance(e, (E.axis_sort, E.unsort)):
            values, key, descending = e.args
            return ranked(sympy.Integer(k), descending, sympy.S.One if isinstance(e, E.unsort) else sympy.S.Zero,
                          *row(key), *row(values))
        if isinstance(e, E.axis_size):
            return sympy.Integer(n)
        if isinstance(e, E.axis_ones):
            return sympy.S.One
        if not e.args:
            return e
        return e.func(*(el(a, k) for a in e.args))

    return [el(expr, k) for k in range(n)]


class ranked(sympy.Function):  # noqa: N801 - a SymPy function, lower case like SymPy's
    """``ranked(k, descending, inverse, key_0.., value_0..)``: entry ``k`` of the values sorted stably by the keys
    (``inverse``: the values put back through that permutation, a sort's gradient). Numbers only: the order is
    known once the keys are; :data:`_RANKED` evaluates it in mpmath and in NumPy."""


def _order(keys: list, descending) -> list[int]:
    """The stable permutation that sorts ``keys`` (NaN last), as the generated code's."""
    sign = -1 if descending else 1
    return sorted(range(len(keys)), key=lambda i: (1, 0) if mpmath.isnan(keys[i]) else (0, sign * keys[i]))


def _ranked_mp(k, descending, inverse, *rest):
    keys, values = rest[: len(rest) // 2], rest[len(rest) // 2:]
    order = _order(list(keys), descending)
    return values[order.index(int(k))] if inverse else values[order[int(k)]]


def _ranked_np(k, descending, inverse, *rest):
    keys, values = (np.stack(np.broadcast_arrays(*part)) for part in (rest[: len(rest) // 2], rest[len(rest) // 2:]))
    order = np.argsort(-keys if descending else keys, axis=0, kind="stable")  # one column per point
    at = np.argsort(order, axis=0)[int(k)] if inverse else order[int(k)]
    return np.take_along_axis(values, at[None], axis=0)[0]


_ELEMENTARY = {
    E.sigmoid: lambda x: 1 / (1 + sympy.exp(-x)),
    E.softplus: lambda x: sympy.log(1 + sympy.exp(x)),
    E.clamp: lambda x, lo, hi: sympy.Min(sympy.Max(x, lo), hi),
    E.xlogy: lambda x, y: sympy.Piecewise((0, sympy.Eq(x, 0)), (x * sympy.log(y), True)),
    E.heaviside: lambda x: sympy.Piecewise((1, x > 0), (0, True)),
    E.where: lambda c, a, b: sympy.Piecewise((a, c), (b, True)),
    E.maximum: lambda a, b: sympy.Max(a, b),
    E.minimum: lambda a, b: sympy.Min(a, b),
    E.log1p: lambda x: sympy.log(1 + x),
    E.expm1: lambda x: sympy.exp(x) - 1,
    E.quotient: lambda u, v: u / v,
}


def elementary(expr: sympy.Expr) -> sympy.Expr:
    """lossforge's functions rewritten into SymPy's elementary ones (exact, not stable: for mpmath)."""
    for func, rewrite in _ELEMENTARY.items():
        expr = expr.replace(lambda n, f=func: isinstance(n, f), lambda n, r=rewrite: r(*n.args))
    return expr


def evaluable(expr: sympy.Expr) -> sympy.Expr:
    """``elementary(expr)`` ready for lambdify: where writing it out exposes a constant 1/0, NaN there.

    Written out, ``2/xlogy(y, x)`` holds the branch ``2/0`` (y = 0): SymPy folds
    it to ``zoo``, which no printer can print, and may then fail to order it.
    Both become NaN, the IEEE value a caller sees as non-finite.
    """
    try:
        return elementary(expr).xreplace({sympy.zoo: sympy.nan})
    except TypeError:  # ordering an infinity or a NaN (zoo > 0) while rebuilding: undefined
        return sympy.nan


#: Beyond this argument exp and cosh are inf for any float (e**709.8 is float64's limit). mpmath would
#: compute exp(exp(6907)) exactly, for minutes; the reference only needs to know it is not finite.
_HUGE = mpmath.mpf(1e6)


def _capped(func, huge):
    """``func`` for mpmath, with ``huge(x)`` where x is past _HUGE; a complex x (a log of a negative) is NaN."""

    def capped(x):
        if isinstance(x, mpmath.mpc):
            return mpmath.nan
        return huge(x) if abs(x) > _HUGE else func(x)

    return capped


def _mp_lgamma(x):
    """``log|Gamma(x)|``, the spec language's lgamma: the real part of the principal log Gamma (a pole raises)."""
    return mpmath.re(mpmath.loggamma(x))


_MPMATH_CAPPED = {
    "exp": _capped(mpmath.exp, lambda x: mpmath.inf if x > 0 else mpmath.mpf(0)),
    "cosh": _capped(mpmath.cosh, lambda x: mpmath.inf),
    "sinh": _capped(mpmath.sinh, lambda x: mpmath.sign(x) * mpmath.inf),
    "lgamma": _mp_lgamma,
    "ranked": _ranked_mp,
}


def _elementwise(func):
    """A scalar function of floats as a NumPy function of arrays, NaN where it raises (a pole, a domain error)."""

    def scalar(*values):
        try:
            return float(func(*values))
        except (ValueError, ZeroDivisionError, OverflowError):
            return math.nan

    return np.vectorize(scalar, otypes=[float])


#: The special functions of the spec language in float64 NumPy without SciPy (an optional dependency):
#: the standard library's erf, erfc and lgamma, and mpmath's polygamma (digamma and its derivatives).
_NUMPY_SPECIAL = {
    "erf": _elementwise(math.erf),
    "erfc": _elementwise(math.erfc),
    "lgamma": _elementwise(math.lgamma),
    "polygamma": _elementwise(lambda n, x: mpmath.psi(int(n), x)),
    "ranked": _ranked_np,
}


def compiled(args: list[sympy.Symbol], expr: sympy.Expr, module: str):
    """``lambdify`` of :func:`evaluable`; an expression SymPy cannot print once written out is NaN everywhere."""
    modules = [_MPMATH_CAPPED, "mpmath"] if module == "mpmath" else [_NUMPY_SPECIAL, module]
    try:
        return sympy.lambdify(args, evaluable(expr), modules=modules)
    except TypeError:  # printing sorts factors, and a NaN factor cannot be ordered
        nan = mpmath.mpf("nan") if module == "mpmath" else float("nan")
        return lambda *values: nan


def _real(value) -> mpmath.mpf:
    """An mpmath result as a real: a complex one (the log of a negative number) is NaN, as in IEEE."""
    if isinstance(value, mpmath.mpc):
        return value.real if value.imag == 0 else mpmath.mpf("nan")
    return value


def _results(f, flat: list, count: int) -> list:
    """``f(*flat)`` as reals; an undefined point is NaN, so callers see a non-finite value.

    mpmath raises where IEEE arithmetic gives inf or NaN: on 1/0, and on
    comparing a complex intermediate (the log of a negative number inside a
    max) with a real one.
    """
    try:
        return [_real(v) for v in f(*flat)]
    except TypeError as exc:
        if not any(word in str(exc) for word in _COMPLEX_WORDS):
            raise  # a TypeError about anything else is a bug, not an undefined point
        return [mpmath.mpf("nan")] * count
    except (ZeroDivisionError, ValueError, OverflowError, MemoryError):
        # MemoryError: mpmath asked for exp(exp(1e33)), an overflow it tries to represent exactly
        return [mpmath.mpf("nan")] * count


#: What mpmath says when a complex intermediate meets an ordering (max, a comparison).
_COMPLEX_WORDS = ("complex", "mpc", "non-real", "NaN")


def at_defaults(spec: LossSpec, expr: sympy.Expr) -> sympy.Expr:
    """``expr`` with each ``where`` on params alone replaced by the branch the params' defaults take.

    Exact wherever the params are at their defaults, as every evaluation here
    is: an option left at its default (``p == 2``, ``swap = 0``) then costs
    nothing to write out, element by element, and its other branch is not
    compiled. A condition the defaults do not decide stays.
    """
    table = spec.sympy_symbols
    defaults = {table[n]: sympy.Float(spec.symbols[n].default) for n in spec.params if not spec.symbols[n].tensor}
    arrays = {table[n] for n in spec.arrays}

    def truth(cond: sympy.Basic) -> bool | None:
        if cond.free_symbols & arrays:
            return None
        try:
            value = cond.xreplace(defaults)
        except TypeError:  # a comparison of a constant that is not real (the log of a negative): undecided
            return None
        return bool(value) if isinstance(value, BooleanAtom) else None

    while found := {w: w.args[1 if side else 2] for w in expr.atoms(E.where)
                    if (side := truth(w.args[0])) is not None}:
        budget.tick()
        expr = expr.xreplace(found)
    return expr


class Evaluator:
    """Loss and gradients of a spec in mpmath, for vectors of length ``length``."""

    def __init__(self, spec: LossSpec, length: int = 4, dps: int = 30):
        self.spec, self.length, self.dps = spec, length, dps
        table = spec.sympy_symbols
        vectors = {table[n] for n, v in spec.symbols.items() if v.axis}
        self.args: list[sympy.Symbol] = []
        for name in (*spec.arrays, *spec.params):
            sym = table[name]
            self.args += [element_symbol(sym, k) for k in range(length)] if sym in vectors else [sym]
        derivation = derive(spec)
        self._loss = self._compile([expand(at_defaults(spec, derivation.loss), length, vectors)[0]])
        self._grads = [
            self._compile(expand(at_defaults(spec, derivation.gradients[n]), length,
                                 vectors)[: length if spec.symbols[n].axis else 1])
            for n in spec.inputs
        ]

    def _compile(self, exprs: list[sympy.Expr]):
        parts = []
        for e in exprs:
            budget.tick()  # under the caller's deadline (properties, verify)
            parts.append(compiled(self.args, e, "mpmath"))
        return lambda *flat: [part(*flat) for part in parts]

    def _flat(self, arrays: dict[str, np.ndarray], i: int, override: tuple[str, int, object] | None = None) -> list:
        out = []
        for name in self.spec.arrays:
            row = np.atleast_1d(np.asarray(arrays[name][i], dtype=float))
            values = [mpmath.mpf(float(v)) for v in row]
            if override is not None and override[0] == name:
                values[override[1]] = override[2]
            out += values
        for p in self.spec.params:  # at their defaults; a param on an axis (a weight per class) once per entry
            var = self.spec.symbols[p]
            out += [mpmath.mpf(var.default)] * (self.length if var.axis else 1)
        return out

    def __call__(self, arrays: dict[str, np.ndarray]) -> tuple[np.ndarray, list[np.ndarray]]:
        """Per-sample loss (n,) and one gradient array per input, each of its input's shape."""
        n = len(np.asarray(arrays[self.spec.arrays[0]]))
        loss = np.empty(n)
        grads = [np.empty(np.shape(arrays[name])) for name in self.spec.inputs]
        with mpmath.workdps(self.dps):
            for i in range(n):
                budget.tick()
                flat = self._flat(arrays, i)
                loss[i] = float(_results(self._loss, flat, 1)[0])
                for g, f in zip(grads, self._grads):
                    values = _results(f, flat, g.shape[1] if g.ndim > 1 else 1)
                    g[i] = [float(v) for v in values] if g.ndim > 1 else float(values[0])
        return loss, grads

    def central_differences(self, arrays: dict[str, np.ndarray], step: str = "1e-12") -> list[np.ndarray]:
        """Gradients by central differences of the loss, in the same precision."""
        out = [np.empty(np.shape(arrays[name])) for name in self.spec.inputs]
        n = len(np.asarray(arrays[self.spec.arrays[0]]))
        with mpmath.workdps(self.dps):
            h = mpmath.mpf(step)
            for g, name in zip(out, self.spec.inputs):
                for i in range(n):
                    row = np.atleast_1d(np.asarray(arrays[name][i], dtype=float))
                    for k, x in enumerate(row):
                        up = _results(self._loss, self._flat(arrays, i, (name, k, mpmath.mpf(float(x)) + h)), 1)[0]
                        down = _results(self._loss, self._flat(arrays, i, (name, k, mpmath.mpf(float(x)) - h)), 1)[0]
                        value = float((up - down) / (2 * h))
                        if g.ndim > 1:
                            g[i, k] = value
                        else:
                            g[i] = value
        return out


@lru_cache(maxsize=128)
def evaluator(spec: LossSpec, length: int = 4, dps: int = 30) -> Evaluator:
    """A cached :class:`Evaluator`."""
    return Evaluator(spec, length, dps)


def _length(spec: LossSpec, arrays: dict[str, np.ndarray]) -> int:
    lengths = {np.shape(arrays[n])[-1] for n in spec.arrays if spec.symbols[n].axis}
    return lengths.pop() if lengths else 1


def evaluate_batch(spec: LossSpec, arrays: dict[str, np.ndarray], dps: int = 30):
    """``(loss, grads)`` of every sample in ``arrays`` (name -> array), evaluated at ``dps`` digits."""
    return evaluator(spec, _length(spec, arrays), dps)(arrays)


def finite_difference_batch(spec: LossSpec, arrays: dict[str, np.ndarray], dps: int = 30) -> list[np.ndarray]:
    """Central-difference gradients of every sample, at ``dps`` digits."""
    return evaluator(spec, _length(spec, arrays), dps).central_differences(arrays)
