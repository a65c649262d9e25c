"""What lossforge's own stages cost: parse, check, verify, properties, generate.

Prints wall times, the first (cold: derivations and compiled modules not yet
cached) and the median of 5 more (warm), for the cases the issues name: a
pathological expression, check of a 120-term sum and of a 25-deep
composition, verify and properties of one built-in and of the whole library.
Then code generation from cold, each case in a fresh subprocess: every
built-in compiled for NumPy and then Torch, and a spec of K softplus terms for
K = 10, 30, 100, 300. Run with `python benchmarks/cost.py` (or as section 5 of
`benchmarks/run.py`); nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _timing as T  # noqa: E402

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


SOFTPLUS_TERMS = (10, 30, 100, 300)


def stage_costs(runs: int = 5) -> None:
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
    rows = []
    for label, fn in cases:
        cold, warm = cold_and_warm(fn, runs)
        rows.append([label, T.seconds(cold), T.seconds(warm)])
    T.table("5a. lossforge's own stages (wall time)", ["stage", "cold", f"warm (median of {runs})"], rows, "lrr",
            ["cold: the first call in this process (derivations and modules not yet cached)"])


def codegen_times() -> None:
    """Wall time to lf.compile from cold, each row in a fresh subprocess."""
    cases = [("whole library", T.run_child("codegen-library"))]
    cases += [(f"softplus, {k} terms", T.run_child("codegen-softplus", k)) for k in SOFTPLUS_TERMS]
    rows = [[label, str(r["count"]), T.seconds(r["import"]), T.seconds(r["numpy"]), T.seconds(r["torch"]),
             T.seconds(r["numpy"] + r["torch"])] for label, r in cases]
    T.table("5b. Code generation from cold: lf.compile, fresh subprocess per row (wall time)",
            ["specs", "count", "import lossforge", "numpy", "then torch", "numpy + torch"], rows, "lrrrrr",
            ["numpy and torch already imported; torch compiles after numpy, sharing its cached derivations",
             "softplus, K terms: softplus(x*1 + 0) + softplus(x*2 + 1) + ... + softplus(x*K + K-1)"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="2 warm runs instead of 5")
    args = parser.parse_args()
    stage_costs(2 if args.quick else 5)
    codegen_times()


if __name__ == "__main__":
    main()
