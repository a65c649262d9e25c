"""Every benchmark `make bench` runs, printed as fixed-width tables, one per section.

1. Torch forward + backward, float32, CPU, N = 2^8, 2^16, 2^22, 1 then 2
   threads: generated modules (eager, fused) against torch.nn.functional or a
   torch composite, eager and torch.compile'd (torch_bench.py).
2. Peak memory of one forward + backward at N = 2^23, fresh subprocesses.
3. Language-model cross-entropy, (2048, 32000) logits: time (1 then 2 threads)
   and peak memory.
4. NumPy float64, N = 2^21: loss_and_grad against sympy.lambdify of the naive
   formula and against hand-written NumPy (numpy_bench.py).
5. lossforge's own stage costs and code generation time (cost.py).
6. JAX float32, 2^20 elements: jax.jit(jax.value_and_grad(...)) of the
   generated JAX modules against optax's own losses (jax_bench.py; skipped
   where jax or optax is not installed).

torch.compile compiles in-process (TORCHINDUCTOR_COMPILE_THREADS=1 unless set).
The last table gives each section's wall time and the share of the CPUs other
processes used meanwhile. Every lossforge value and gradient is checked against its reference before it
is timed; a mismatch aborts the run (exit status 1). Times are medians of
alternated repetitions (see _timing.py); ratios are lossforge / reference, below
1 meaning lossforge is faster or smaller. Nothing here is asserted in tests.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
# torch.compile compiles in this process: no pool of compile workers competing with the timings.
os.environ.setdefault("TORCHINDUCTOR_COMPILE_THREADS", "1")

import _timing as T  # noqa: E402
import cost  # noqa: E402
import numpy_bench  # noqa: E402
import torch  # noqa: E402
import torch_bench  # noqa: E402
from _cases import fused_available  # noqa: E402

THREADS = [1, 2]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--quick", action="store_true", help="N = 2^16 only in section 1, fewer repetitions")
    parser.add_argument("--no-fused", action="store_true", help="skip the fused=True modules")
    parser.add_argument("--sections", default="1,2,3,4,5,6", help="comma-separated sections to run (default: all)")
    args = parser.parse_args()
    sections = {int(s) for s in args.sections.split(",")}
    fused = not args.no_fused
    if fused and not fused_available():
        T.fail("the generated Torch modules take no fused= constructor flag yet: run with --no-fused")
    sizes = [2**16] if args.quick else [2**8, 2**16, 2**22]
    threads = [t for t in THREADS if t <= torch.get_num_threads()] or [1]
    print("lossforge benchmarks" + (" (--quick)" if args.quick else "") + (" (--no-fused)" if args.no_fused else ""))
    for line in T.environment(threads):
        print(f"  {line}")
    steps = {
        1: ("torch forward + backward", lambda: torch_bench.speed(sizes, threads, 5 if args.quick else 15, fused)),
        2: ("peak memory", lambda: torch_bench.memory(2**23, fused)),
        3: ("language-model cross-entropy", lambda: torch_bench.language_model(3 if args.quick else 7, fused,
                                                                               threads)),
        4: ("NumPy", lambda: numpy_bench.numpy_speed(5 if args.quick else 11)),
        5: ("lossforge's own costs", lambda: (cost.stage_costs(2 if args.quick else 5), cost.codegen_times())),
        6: ("JAX against optax", lambda: _jax_section(5 if args.quick else 11)),
    }
    walls = []
    with T.OtherLoad() as total:
        for number, (label, run) in steps.items():
            if number in sections:
                with T.OtherLoad() as load:
                    run()
                walls.append([f"{number}. {label}", T.seconds(load.wall), f"{load.share:.0%}"])
    walls.append(["total", T.seconds(total.wall), f"{total.share:.0%}"])
    T.table("Wall time per section", ["section", "wall", "CPU used by other processes"], walls, "lrr",
            ["other processes: CPU time of the whole machine (/proc/stat) less this run's own, as a share of all "
             "CPUs; where it is not near 0% the timings were disturbed"])


def _jax_section(reps: int) -> None:
    try:
        import jax  # noqa: F401
        import optax  # noqa: F401
    except ImportError as exc:
        print(f"\n6. JAX against optax: skipped ({exc.name} is not installed: pip install 'lossforge[jax,dev]')")
        return
    import jax_bench

    jax_bench.jax_speed(reps)


if __name__ == "__main__":
    main()
