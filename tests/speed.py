"""How fast this machine runs lossforge's kind of work, against the machine the time bounds were set on.

The wall-clock bounds of the budget tests and of the hostile corpus are
stated for the 2-core CI machine they were set on. :func:`factor` scales them
on a slower (or busier) machine: a probe of the same kind of work as the
pipeline (SymPy differentiation and CSE, pure Python), best of three, divided
by that machine's time for it. Never below 1: a faster machine keeps the
stated bounds.
"""

from __future__ import annotations

import time
from functools import cache

#: The probe's best of three on the reference machine (AMD EPYC, 2 cores, idle), 2026-12-02.
REFERENCE_S = 0.42


def probe() -> float:
    """Seconds for a fixed piece of SymPy work, best of three, caches cleared each time."""
    import sympy
    from sympy.core.cache import clear_cache

    xs = sympy.symbols("p0:24")
    best = float("inf")
    for _ in range(3):
        clear_cache()
        start = time.perf_counter()
        e = sympy.Add(*(sympy.exp(a) * sympy.log(1 + b**2) for a, b in zip(xs, xs[1:])))
        sympy.cse([e.diff(s) for s in xs])
        best = min(best, time.perf_counter() - start)
    clear_cache()
    return best


@cache
def factor() -> float:
    """How many times slower than the reference machine this one runs now (at least 1)."""
    return max(1.0, probe() / REFERENCE_S)
