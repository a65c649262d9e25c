"""What lossforge's own stages cost: parse, check, verify, properties, generate.

Prints wall times, the first (cold: derivations and compiled modules not yet
cached) and the median of 5 more (warm), for the cases the issues name: a
pathological expression, check of a 120-term sum and of a 25-deep
composition, verify and properties of one built-in and of the whole library.
Run with `python benchmarks/cost.py`; nothing here is asserted in tests.
"""

from __future__ import annotations

import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lossforge as lf  # noqa: E402
from lossforge.codegen.render import generate  # noqa: E402


def cold_and_warm(fn, runs: int = 5) -> tuple[float, float]:
    times = []
    for _ in range(runs + 1):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return times[0], statistics.median(times[1:])


def refuse(text: str) -> None:
    try:
        lf.LossSpec(name="p", expr=text, symbols={"x": lf.Var("input")})
    except lf.LossforgeError:
        return
    raise AssertionError("accepted a pathological expression")


def main() -> None:
    big = " + ".join(f"w{k % 7}*log(1 + exp(x*{k % 11 + 1})) + (x - {k})**2" for k in range(60))
    big_spec = lf.LossSpec(name="big", expr=big,
                           symbols={"x": lf.Var("input"), **{f"w{k}": lf.Var("param", default=1.0) for k in range(7)}})
    deep = "x"
    for k in range(25):
        deep = f"tanh({deep} + {k % 3})" if k % 2 else f"softplus({deep})*0.5"
    deep_spec = lf.LossSpec(name="deep", expr=deep, symbols={"x": lf.Var("input")})
    names = lf.builtin_names()
    cases = [
        ("refuse 10,000 nested parentheses", lambda: refuse("(" * 10_000 + "x" + ")" * 10_000)),
        ("refuse a 300,000-term sum", lambda: refuse(" + ".join(["x"] * 300_000))),
        ("check: 120-term sum", lambda: lf.check(big_spec)),
        ("check: 25-deep composition", lambda: lf.check(deep_spec)),
        ("check: whole library", lambda: [lf.check(lf.builtin(n)) for n in names]),
        ("verify: focal", lambda: lf.verify(lf.builtin("focal"))),
        ("verify: whole library", lambda: [lf.verify(lf.builtin(n)) for n in names]),
        ("properties: whole library (uncached)", lambda: [lf.analysis.properties.properties.__wrapped__(lf.builtin(n))
                                                            for n in names]),
        ("generate: whole library, both targets (uncached)",
         lambda: [generate.__wrapped__(lf.builtin(n), t) for n in names for t in ("numpy", "torch")]),
    ]
    print(f"{'':<50} {'cold':>10} {'warm':>10}")
    for label, fn in cases:
        cold, warm = cold_and_warm(fn)
        print(f"{label:<50} {cold * 1e3:8.1f}ms {warm * 1e3:8.1f}ms")


if __name__ == "__main__":
    main()
