"""Forward + backward on a CUDA device: generated modules (eager, fused=True) against torch's losses.

Run where a GPU is present (``python benchmarks/cuda_bench.py``); ``make bench`` runs on the CPU. The
cases are section 1's (``_cases.py``), float32, N = 2^22 and 2^24 elements, plus cross-entropy over
(2048, 32000) and (8192, 128256) logits with int64 class indices (language-model sizes). Each value and
gradient is checked against the reference first (float32, rtol 1e-4 of the largest element, as
section 1). Times are medians of alternated repetitions, each one a CUDA-synchronised batch of calls;
peak memory is ``torch.cuda.max_memory_allocated`` growth over one forward + backward. Ratios are
lossforge / reference (below 1: lossforge is faster or smaller). Nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import _timing as T  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from _cases import CASES, compilable, grads_of, lossforge_module, make_inputs, step  # noqa: E402

RTOL = 1e-4
LM_SIZES = [(2048, 32000), (8192, 128256)]


def _on_cuda(inputs):
    return tuple(a.cuda() for a in inputs)


def _timed(fns: dict, reps: int, calls: int = 10) -> dict[str, float]:
    """Median seconds per call of each function, alternated, each sample ``calls`` calls then a synchronise."""
    for fn in fns.values():
        for _ in range(3):
            fn()
    torch.cuda.synchronize()
    samples: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(reps):
        for name, fn in fns.items():
            torch.cuda.synchronize()
            start = time.perf_counter()
            for _ in range(calls):
                fn()
            torch.cuda.synchronize()
            samples[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(s) for name, s in samples.items()}


def _peak(run) -> int:
    """Bytes of CUDA memory one forward + backward allocates above what was allocated before it."""
    torch.cuda.synchronize()
    torch.cuda.reset_peak_memory_stats()
    before = torch.cuda.memory_allocated()
    run()
    torch.cuda.synchronize()
    return torch.cuda.max_memory_allocated() - before


def _check(name: str, runs: dict, where: str) -> list[str]:
    ref = runs["reference"]
    want = ref().item()
    out = []
    for label, run in runs.items():
        if label == "reference":
            continue
        found = [T.disagreement(run().item(), want, RTOL)]
        found += [T.disagreement(a.grad.cpu(), b.grad.cpu(), RTOL) for a, b in zip(run.wanted, ref.wanted)]
        out += [f"MISMATCH {name} {where} {label}: {problem}" for problem in found if problem]
    return out


def _row(name: str, size: str, times: dict, peaks: dict) -> list[list[str]]:
    rows = []
    for v in ("eager", "fused"):
        rows.append([name, size, v, T.seconds(times[v]), T.seconds(times["reference"]),
                     T.ratio(times[v], times["reference"]), T.seconds(times["compiled"]),
                     T.ratio(times[v], times["compiled"]), T.mib(peaks[v]), T.mib(peaks["reference"]),
                     T.ratio(peaks[v], peaks["reference"])])
    return rows


def _runs(name: str, reference, inputs, grads, compiled) -> dict:
    return {"eager": step(lossforge_module(name, False), inputs, grads),
            "fused": step(lossforge_module(name, True), inputs, grads),
            "reference": step(reference, inputs, grads),
            "compiled": step(compiled, inputs, grads)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=15)
    parser.add_argument("--sizes", default="22,24", help="log2 of N, comma-separated")
    parser.add_argument("--lm", default=",".join(f"{r}x{c}" for r, c in LM_SIZES),
                        help="language-model cross-entropy sizes, ROWSxCLASSES, comma-separated ('' for none)")
    args = parser.parse_args()
    if not torch.cuda.is_available():
        T.fail("no CUDA device: this benchmark runs on a GPU (make bench runs on the CPU)")
    print(f"lossforge CUDA benchmark on {torch.cuda.get_device_name(0)}, torch {torch.__version__}")
    rows, failures = [], []
    for log2 in (int(s) for s in args.sizes.split(",")):
        n = 2**log2
        for name, case in CASES.items():
            inputs, grads = _on_cuda(make_inputs(case.kind, n)), grads_of(name)
            runs = _runs(name, case.reference, inputs, grads, torch.compile(compilable(case), dynamic=False))
            failures += _check(name, runs, f"N=2^{log2}")
            rows += _row(name, f"2^{log2}", _timed(runs, args.reps), {k: _peak(r) for k, r in runs.items()})
        rows.append(None)
    lm = CASES["cross_entropy"]
    for n_rows, classes in (tuple(map(int, size.split("x"))) for size in args.lm.split(",") if size):
        inputs = _on_cuda(make_inputs("classes", n_rows * classes, classes))
        runs = _runs("cross_entropy", F.cross_entropy, inputs, grads_of("cross_entropy"),
                     torch.compile(compilable(lm), dynamic=False))
        failures += _check("cross_entropy", runs, f"({n_rows}, {classes})")
        rows += _row("cross_entropy", f"({n_rows}, {classes})", _timed(runs, max(3, args.reps // 3)),
                     {k: _peak(r) for k, r in runs.items()})
    T.table("CUDA forward + backward, float32 (median per call)",
            ["loss", "N", "lossforge", "lossforge", "reference", "lf/ref", "compile(ref)", "lf/compiled",
             "peak lf", "peak ref", "lf/ref"], rows, "lllrrrrrrrr",
            [f"{args.reps} alternated repetitions of 10 calls, synchronised; peak: max_memory_allocated growth",
             "reference: section 1's (torch.nn.functional or a composite); compile(ref): torch.compile of it"])
    if failures:
        T.fail("lossforge disagrees with the reference:\n" + "\n".join(failures))


if __name__ == "__main__":
    main()
