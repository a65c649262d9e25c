"""Helpers shared by the benchmarks: alternated timing, agreement checks, tables, subprocesses.

Timing is the project's rule: the implementations compared run side by side in
one process, alternated (A, B, A, B, ...). Each repetition is a fixed number of
calls, sized once (after warm-up) so that one repetition takes about 30 ms, or
one call where a call takes longer; a repetition's time is measured with
time.perf_counter and divided by its calls, and the reported time is the median
over repetitions. Peak memory is measured in a fresh subprocess (`_child.py`),
which prints one JSON line.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
#: The wall time one repetition is sized to (seconds).
REPETITION_S = 0.03


def fail(message: str) -> None:
    """Print ``message`` as one clear line on stderr and exit non-zero."""
    sys.stdout.flush()
    print(f"BENCHMARK ABORTED: {message}", file=sys.stderr, flush=True)
    raise SystemExit(1)


# -- timing ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Timing:
    """The median seconds per call of one implementation, and how it was measured."""

    median: float
    calls: int  # per repetition
    reps: int


def calls_per_repetition(fn: Callable[[], object], target: float = REPETITION_S) -> int:
    """How many calls of (warmed-up) ``fn`` take about ``target`` seconds: at least 1."""
    start = time.perf_counter()
    fn()
    one = time.perf_counter() - start
    calls = max(1, int(target / max(one, 1e-7)))
    if calls == 1:
        return 1
    start = time.perf_counter()  # a trial repetition corrects the estimate from one short call
    for _ in range(calls):
        fn()
    return max(1, round(calls * target / (time.perf_counter() - start)))


def alternated(fns: dict[str, Callable[[], object]], reps: int, warmup: int = 2) -> dict[str, Timing]:
    """Median seconds per call of each function, the functions taking turns repetition by repetition."""
    for fn in fns.values():
        for _ in range(warmup):
            fn()
    calls = {name: calls_per_repetition(fn) for name, fn in fns.items()}
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            n = calls[name]
            start = time.perf_counter()
            for _ in range(n):
                fn()
            samples[name].append((time.perf_counter() - start) / n)
    return {name: Timing(statistics.median(s), calls[name], reps) for name, s in samples.items()}


# -- agreement --------------------------------------------------------------------------


def disagreement(got, want, rtol: float) -> str | None:
    """None if ``got`` matches ``want`` within ``rtol``, else what differs, in one line.

    The test is max|got - want| <= rtol * max|want| over all elements (for a scalar:
    the relative error). An element-wise relative test is not used: where a gradient
    is tiny (far in a tail, at a kink) the reference's own float32 rounding is larger
    than that element.
    """
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    if got.shape != want.shape:
        return f"shape {got.shape} != reference shape {want.shape}"
    if not (np.isfinite(got).all() and np.isfinite(want).all()):
        return f"non-finite values: {(~np.isfinite(got)).sum()} in lossforge, {(~np.isfinite(want)).sum()} in reference"
    err = np.abs(got - want)
    scale = float(np.abs(want).max()) if want.size else 0.0
    worst = int(err.argmax()) if err.size else 0
    if err.size == 0 or err.flat[worst] <= rtol * scale:
        return None
    return (f"max|lossforge - reference| = {err.flat[worst]:.3e} > rtol {rtol:g} * max|reference| {scale:.3e} "
            f"(worst at flat index {worst}: lossforge {got.flat[worst]:.9g}, reference {want.flat[worst]:.9g})")


def mismatches(label: str, got, want, rtol: float) -> list[str]:
    """One ``MISMATCH label: value|gradient: ...`` line for each of a ``(value, gradient)`` pair that disagrees."""
    return [f"MISMATCH {label}: {what}: {msg}"
            for what, msg in (("value", disagreement(got[0], want[0], rtol)),
                              ("gradient", disagreement(got[1], want[1], rtol))) if msg]


# -- formatting --------------------------------------------------------------------------


def seconds(value: float) -> str:
    """A duration with a unit chosen by its size: ``'12.34 ms'``."""
    for unit, scale in (("s", 1.0), ("ms", 1e-3), ("us", 1e-6)):
        if value >= scale or unit == "us":
            return f"{value / scale:.2f} {unit}"
    raise AssertionError("unreachable")


def mib(nbytes: float) -> str:
    return f"{nbytes / 2**20:.1f} MiB"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.2f}" if b else "-"


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[str] | None], align: str,
          notes: Sequence[str] = ()) -> None:
    """Print a fixed-width table: ``align`` is one ``l`` or ``r`` per column; a None row is a rule."""
    widths = [max([len(h)] + [len(r[i]) for r in rows if r is not None]) for i, h in enumerate(header)]

    def line(cells: Sequence[str]) -> str:
        return "  ".join(c.ljust(w) if a == "l" else c.rjust(w) for c, w, a in zip(cells, widths, align)).rstrip()

    rule = "  ".join("-" * w for w in widths)
    print(f"\n{title}\n{'=' * len(title)}")
    print(line(header))
    print(rule)
    for row in rows:
        print(rule if row is None else line(row))
    for note in notes:
        print(f"  {note}")
    sys.stdout.flush()


# -- environment and subprocesses --------------------------------------------------------


def _busy_and_own() -> tuple[float, float]:
    """CPU seconds all CPUs have been busy (/proc/stat), and those of this process and its waited-for children."""
    own = os.times()
    own_s = own.user + own.system + own.children_user + own.children_system
    try:
        with open("/proc/stat", encoding="ascii") as f:
            fields = [int(v) for v in f.readline().split()[1:]]
    except OSError:
        return float("nan"), own_s
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    return (sum(fields[:8]) - idle) / os.sysconf("SC_CLK_TCK"), own_s


OTHERS_NOTE = ("others: the share of the CPUs that other processes used while that row was timed "
               "(/proc/stat); where it is not near 0% the row is disturbed")


class OtherLoad:
    """Context manager: the share of all CPUs that other processes used while the block ran."""

    def __enter__(self) -> OtherLoad:
        self._start = (time.perf_counter(), *_busy_and_own())
        return self

    def __exit__(self, *exc) -> None:
        wall, busy, own = (b - a for a, b in zip(self._start, (time.perf_counter(), *_busy_and_own())))
        self.wall = wall
        self.share = max(0.0, busy - own) / (wall * (os.cpu_count() or 1))


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for text in f:
                if text.startswith("model name"):
                    return text.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def environment(threads: Sequence[int]) -> list[str]:
    """Lines naming what the numbers were measured on."""
    import sympy
    import torch

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    cuda = torch.cuda.get_device_name(0) if torch.cuda.is_available() else "not available"
    return [
        f"python {platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}, "
        f"sympy {sympy.__version__}",
        f"CPU: {cpu_model()} ({platform.machine()}, {cores} usable cores, torch CPU capability "
        f"{torch.backends.cpu.get_cpu_capability()}); CUDA: {cuda}",
        f"torch threads: default {torch.get_num_threads()} intra-op, {torch.get_num_interop_threads()} inter-op; "
        f"the torch timings set {' and then '.join(map(str, threads))} (torch.set_num_threads)",
        "dtype: torch float32 (sections 1-3), NumPy float64 (section 4)",
        f"timing: medians of alternated repetitions of ~{REPETITION_S * 1e3:.0f} ms (time.perf_counter); "
        "ratio = lossforge / reference, below 1 means lossforge is faster (or smaller)",
    ]


#: Runs the child from a shell that forks it: a process exec'd straight from this one starts with
#: this one's RSS (fork) or RSS high-water mark (vfork) as its ru_maxrss, the shell's child with the shell's.
_VIA_SHELL = ["/bin/sh", "-c", '"$0" "$@"; exit $?']


def run_child(*args: object, timeout: float = 900) -> dict:
    """Run ``_child.py args...`` in a fresh interpreter and return the JSON it prints last."""
    cmd = [*_VIA_SHELL, sys.executable, str(HERE / "_child.py"), *map(str, args)]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        fail(f"subprocess {' '.join(map(str, args))} ran past {timeout} s")
    if out.returncode != 0:
        fail(f"subprocess {' '.join(map(str, args))} exited {out.returncode}:\n{out.stdout[-2000:]}{out.stderr[-4000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])
