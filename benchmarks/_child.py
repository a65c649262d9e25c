"""One measurement in a fresh interpreter, printed as one JSON line (run by ``_timing.run_child``).

``peak LOSS IMPL N K DEVICE``: the memory of one forward + backward of the
built-in LOSS's lossforge module (IMPL ``eager`` or ``fused``) or of its
reference (``reference``), on inputs of N elements (rows of K): the growth of
ru_maxrss (or, on CUDA, of max_memory_allocated) over that one call, and the
bytes saved for backward. ``codegen-library``: wall time to compile every
built-in for NumPy, then for Torch, caches cold. ``codegen-softplus K``: the
same for a spec of K softplus terms.
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import numpy  # noqa: E402, F401 - imported before the clock starts, as a user's program has it
import torch  # noqa: E402


def _reset_peak() -> bool:
    """Reset the RSS high-water mark (ru_maxrss) to the current RSS (Linux 4.0+): whether it now is."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        with open("/proc/self/statm", encoding="ascii") as f:
            current = int(f.read().split()[1]) * resource.getpagesize()
    except OSError:
        return False
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 <= current + 4 * 2**20


def _saved_bytes(run, leaves) -> tuple[int, int]:
    """Bytes of the distinct storages saved for backward by ``run()``: all, and those not of ``leaves``."""
    storages: dict[int, int] = {}

    def pack(t):
        s = t.untyped_storage()
        storages[s.data_ptr()] = s.nbytes()
        return t

    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    inputs = {leaf.untyped_storage().data_ptr() for leaf in leaves}
    return sum(storages.values()), sum(b for p, b in storages.items() if p not in inputs)


def peak(name: str, impl: str, n: str, k: str, device: str) -> dict:
    from _cases import CASES, grads_of, lossforge_module, make_inputs, step

    torch.set_num_threads(1)
    n, k, case, grads = int(n), int(k), CASES[name], grads_of(name)
    fn = case.reference if impl == "reference" else lossforge_module(name, impl == "fused")
    step(fn, tuple(x.to(device) for x in make_inputs(case.kind, 64 * k, k)), grads)()  # warm-up
    run = step(fn, tuple(x.to(device) for x in make_inputs(case.kind, n, k)), grads)  # holds only its copies
    gc.collect()
    if device == "cuda":
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        before, reset = torch.cuda.memory_allocated(), True
        run()
        torch.cuda.synchronize()
        after, kind = torch.cuda.max_memory_allocated(), "peak CUDA allocated growth"
    else:
        reset = _reset_peak()
        before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        run()
        after, kind = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "peak RSS growth"
    saved, saved_new = _saved_bytes(run, run.leaves)
    return {"impl": impl, "peak": after - before, "peak_kind": kind, "reset": reset, "saved": saved,
            "saved_new": saved_new}


def codegen(specs) -> dict:
    """Wall seconds to import lossforge, then to compile ``specs()`` for NumPy, then for Torch."""
    start = time.perf_counter()
    import lossforge as lf

    out = {"import": time.perf_counter() - start}
    items = specs(lf)
    for target in ("numpy", "torch"):
        start = time.perf_counter()
        for spec in items:
            lf.compile(spec, target)
        out[target] = time.perf_counter() - start
    out["count"] = len(items)
    return out


def softplus_terms(k: int):
    def specs(lf):
        text = " + ".join(f"softplus(x*{i + 1} + {i})" for i in range(k))
        return [lf.LossSpec(name=f"softplus_{k}", expr=text, symbols={"x": lf.Var("input")})]

    return specs


def main(argv: list[str]) -> None:
    command, *args = argv
    if command == "peak":
        result = peak(*args)
    elif command == "codegen-library":
        result = codegen(lambda lf: [lf.builtin(name) for name in lf.builtin_names()])
    elif command == "codegen-softplus":
        result = codegen(softplus_terms(int(args[0])))
    else:
        raise SystemExit(f"unknown command {command!r}")
    print(json.dumps(result))


if __name__ == "__main__":
    main(sys.argv[1:])
