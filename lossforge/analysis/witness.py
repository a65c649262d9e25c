"""Witnesses: a point of the declared domains where a hazard happens.

A rule fires on the interval bounds of a subexpression. Its witness is found
by asking the same rule again with the symbols pinned, one at a time, to
single values (point intervals): a point at which the rule still fires is a
point where its condition holds, in the analysis's model of the floating
type (``exp(100)`` overflows float32, ``1e-30 * 1e-30`` underflows to 0,
float32 ``sigmoid(20)`` is exactly 1). So the rule's own test decides, once,
both whether a hazard exists and where: there is no second description of
a rule's condition to drift from the first.

The search is a depth-first walk over the symbols (those of the offending
subexpression first), each trying a short list of candidate values from its
bound: the param's default, ordinary values (0, ±1, 1/2, ±2, ±10, ±100),
the bound's ends, the least positive value, then powers of ten and a grid
inside. Interval reasoning over-approximates (a quotient of correlated
factors, a sum whose terms cancel), so a search can fail where the bound
fires; the hazard is then kept (the analysis stays sound) with an empty
witness, and its message says that no point was found. ``where`` branches
are searched in their narrowed bounds, so a witness satisfies the
conditions that lead to its subexpression.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator

import sympy

from .. import budget
from .intervals import Bound, Bounds

#: At most this many pinned re-checks per hazard: the search is a few milliseconds, never the check's cost.
MAX_TRIES = 160
#: The nodes a check's witness searches may bound in all (a re-check of a rule bounds its subexpression
#: afresh): a large expression's hazards get fewer tries, and past this none; their message says so.
WORK = 60_000
_ORDINARY = (0.0, 1.0, -1.0, 0.5, 2.0, -2.0, 100.0, -100.0, 10.0, -10.0)


def candidates(bound: Bound, values: tuple[float, ...] | None, default: float | None, bounds: Bounds,
               chosen: list[float], constants: tuple[float, ...] = ()) -> list[float]:
    """The values tried for one symbol, in order, each inside ``bound`` and representable in the type.

    ``chosen`` are the values already pinned for other symbols: ``v`` and ``1 - v`` for each are tried
    early, so a kink of ``clamp(p, eps, 1 - eps)`` is found at p = eps; ``constants`` are the numbers of
    the offending subexpression, tried with both signs (``1/(p + 1e-7)`` at p = -1e-7).
    """
    limits = bounds.limits
    if values is not None:
        raw = list(values)
    else:
        small = limits.positive_start
        lo, hi = bound.lo, bound.hi
        raw = [*_ORDINARY, *chosen, *(1 - v for v in chosen), *constants, *(-c for c in constants), lo, hi,
               small, -small]
        raw += [s * 10.0**k for k in range(-30, 4, 3) for s in (1.0, -1.0)]
        if math.isfinite(lo) and math.isfinite(hi) and hi > lo:
            raw += [lo + (hi - lo) * i / 16 for i in range(1, 16)]
        if default is not None:
            raw.insert(0, default)
    out: list[float] = []
    lo, hi = limits.round(bound.lo), limits.round(bound.hi)  # an end the type cannot hold: its nearest value
    for v in raw:
        v = limits.round(v)
        if not math.isfinite(v) or v < lo or v > hi or (v == 0 and bound.nonzero) or v in out:
            continue
        out.append(v)
    return out


def _pinned(env: dict, narrowed: Bounds) -> Bounds | None:
    """Bounds with the symbols of ``env``; a subexpression a condition pins (``x - t`` above 0 in
    ``where(x > t, ...)``) is recomputed from them and kept where the condition says, None where the
    point leaves it."""
    symbols = {k: v for k, v in env.items() if isinstance(k, sympy.Symbol)}
    plain = Bounds(symbols, narrowed.simplex, narrowed.limits)
    for key, want in narrowed.env.items():
        if isinstance(key, sympy.Symbol):
            continue
        got = plain(key)
        lo, hi = max(got.lo, want.lo), min(got.hi, want.hi)
        if lo > hi or (want.nonzero and lo == hi == 0):
            return None
        symbols[key] = Bound(lo, hi, want.nonzero or got.nonzero or lo > 0 or hi < 0)
    return Bounds(symbols, narrowed.simplex, narrowed.limits)


def find(fires: Callable[[Bounds], bool], bounds: Bounds, order: list[sympy.Symbol],
         choices: Callable[[sympy.Symbol, Bound, list[float]], list[float]],
         max_tries: int = MAX_TRIES) -> dict[sympy.Symbol, float] | None:
    """A point (each symbol of ``order`` pinned) at which ``fires`` holds, or None if the search finds none.

    ``fires(bounds)`` is the rule's own test at the offending subexpression; ``bounds`` are the bounds at
    its position (narrowed by the conditions of the ``where`` around it).
    """
    tries = [MAX_TRIES - max_tries]

    def walk(env: dict, rest: list[sympy.Symbol], chosen: list[float]) -> Iterator[dict]:
        if not rest:
            yield env
            return
        symbol, later = rest[0], rest[1:]
        for value in choices(symbol, env.get(symbol, bounds(symbol)), chosen):
            if tries[0] >= MAX_TRIES:
                return
            tries[0] += 1
            budget.tick()
            trial = _pinned({**env, symbol: Bound(value, value, value != 0)}, bounds)
            if trial is not None and fires(trial):
                yield from walk(trial.env, later, [*chosen, value])

    for env in walk(dict(bounds.env), order, []):
        return {s: env[s].lo for s in order}
    return None
