"""Generated PyTorch modules against torch: speed, peak memory, a language-model cross-entropy.

Section 1 times one forward + backward (float32, CPU) of each built-in's
generated module, eager and (where the constructor takes it) ``fused=True``,
against its reference (a torch.nn.functional loss or a torch composite, see
``_cases.py``), eager and under ``torch.compile`` (compiled once per loss,
``dynamic=False``; compile time is excluded: each shape is called once before
timing). Section 2 measures the peak memory of one forward + backward, each in a
fresh subprocess: the bytes saved for backward (saved_tensors_hooks) and the
growth of ru_maxrss (CUDA: of max_memory_allocated). Section 3 does both for
cross-entropy over a (2048, 32000) logit matrix. Before anything is timed, the
lossforge value and input gradients are checked against the reference's (rtol
1e-4, see ``_timing.disagreement``); a mismatch aborts the run.
"""

from __future__ import annotations

import logging
import time

import _timing as T
import torch
from _cases import CASES, Case, K, check_defaults, compilable, grads_of, lossforge_module, make_inputs, step

import lossforge as lf

RTOL = 1e-4
#: Losses whose peak memory section 2 measures.
MEMORY_LOSSES = ("focal", "log_cosh", "dice", "bce_logits", "huber", "cross_entropy")
LM_ROWS, LM_CLASSES = 2048, 32_000


class _RecompileLimit(logging.Handler):
    """Records torch._dynamo's "hit config.recompile_limit" warnings: past it, a function runs uncompiled."""

    def __init__(self) -> None:
        super().__init__(logging.WARNING)
        self.hits: list[str] = []
        logging.getLogger("torch._dynamo.convert_frame").addHandler(self)

    def emit(self, record: logging.LogRecord) -> None:
        text = record.getMessage()
        if "recompile_limit" in text:
            self.hits.append(" ".join(line.strip() for line in text.splitlines()[:2]))

    def notes(self) -> list[str]:
        return [f"WARNING: torch.compile hit its recompile limit, that function then runs uncompiled: {hit}"
                for hit in dict.fromkeys(self.hits)]


RECOMPILES = _RecompileLimit()


def _float64_errors(module, case: Case, inputs, grads) -> str:
    """How far lossforge and the reference each are from the reference run in float64."""
    wide = tuple(x.double() if x.is_floating_point() else x for x in inputs)
    exact_run = step(case.reference, wide, grads)
    exact = exact_run().item()
    parts = []
    for label, fn in (("lossforge", module), ("reference", case.reference)):
        run = step(fn, inputs, grads)
        value = run().item()
        grad_err = max(float((a.grad.double() - b.grad).abs().max()) for a, b in zip(run.wanted, exact_run.wanted))
        parts.append(f"{label}: value error {abs(value - exact):.3e}, max gradient error {grad_err:.3e}")
    return "against the reference in float64: " + "; ".join(parts)


def check(case: Case, module, label: str, inputs, where: str) -> list[str]:
    """Lines naming where ``module``'s value or input gradients differ from the reference's."""
    grads = grads_of(case.name)
    names = [a for i, a in enumerate(lf.builtin(case.name).arrays) if i in grads]
    ref_run, lf_run = step(case.reference, inputs, grads), step(module, inputs, grads)
    found = [("value", T.disagreement(lf_run().item(), ref_run().item(), RTOL))]
    found += [(f"gradient of {n}", T.disagreement(a.grad, b.grad, RTOL))
              for n, a, b in zip(names, lf_run.wanted, ref_run.wanted)]
    out = [f"MISMATCH {case.name} {where}, lossforge {label} vs {case.label}: {what}: {msg}"
           for what, msg in found if msg]
    if out:
        out.append(f"  {case.name} {where}: {_float64_errors(module, case, inputs, grads)}")
    return out


def _variants(fused: bool) -> tuple[str, ...]:
    return ("eager", "fused") if fused else ("eager",)


def _fused_note(fused: bool) -> list[str]:
    return [] if fused else ["fused: not measured (--no-fused)"]


def _log2(n: int) -> str:
    return f"2^{n.bit_length() - 1}" if n & (n - 1) == 0 else str(n)


def speed(sizes: list[int], threads: list[int], reps: int, fused: bool) -> None:
    """Section 1: forward + backward times, every loss, size and thread count."""
    problems = check_defaults()
    if problems:
        T.fail("; ".join(problems))
    variants = _variants(fused)
    modules = {name: {v: lossforge_module(name, v == "fused") for v in variants} for name in CASES}
    compiled = {name: torch.compile(compilable(case), dynamic=False) for name, case in CASES.items()}
    torch.set_num_threads(threads[0])
    failures = []
    for n in sizes:  # every check before any timing: a benchmark of a wrong loss is worthless
        for name, case in CASES.items():
            inputs = make_inputs(case.kind, n)
            for v in variants:
                failures += check(case, modules[name][v], v, inputs, f"N={n}")
    if failures:
        T.fail("lossforge disagrees with the reference:\n" + "\n".join(failures))
    rows, compile_s = [], 0.0
    for n in sizes:
        for t in threads:
            torch.set_num_threads(t)
            for name, case in CASES.items():
                inputs, grads = make_inputs(case.kind, n), grads_of(name)
                fns = {"eager": step(modules[name]["eager"], inputs, grads),
                       "reference": step(case.reference, inputs, grads)}
                if fused:
                    fns["fused"] = step(modules[name]["fused"], inputs, grads)
                    fns["fused"]()  # compiles on the first call
                fns["compiled"] = step(compiled[name], inputs, grads)
                start = time.perf_counter()
                fns["compiled"]()  # compiles for this shape
                compile_s += time.perf_counter() - start
                with T.OtherLoad() as load:
                    res = T.alternated(fns, reps)
                for v in variants:
                    for ref, ref_label in (("reference", case.label), ("compiled", f"torch.compile({case.label})")):
                        rows.append([name, _log2(n), str(t), v, ref_label, T.seconds(res[v].median),
                                     T.seconds(res[ref].median), T.ratio(res[v].median, res[ref].median),
                                     f"{load.share:.0%}"])
            rows.append(None)
    notes = [f"{reps} repetitions each; inputs (N,) or (N/{K}, {K}); cross_entropy targets are int64 class indices",
             f"first calls of the torch.compile'd references (compiling, per shape; excluded): {compile_s:.1f} s in all",
             T.OTHERS_NOTE, *RECOMPILES.notes(), *_fused_note(fused)]
    T.table("1. Torch forward + backward, float32, CPU (median per call)",
            ["loss", "N", "threads", "lossforge", "reference", "lossforge", "reference", "lf/ref", "others"],
            rows[:-1], "lllllrrrr", notes)


def _peak_rows(name: str, label: str, res: dict, ref: dict, difference: bool) -> list[list[str]]:
    """Rows of one lossforge variant's memory against the reference's."""
    measures = [("saved for backward", "saved"), ("saved, not the inputs", "saved_new"), (ref["peak_kind"], "peak")]
    out = []
    for what, key in measures:
        row = [name, what, f"lossforge {res['impl']}", label, T.mib(res[key]), T.mib(ref[key]),
               T.ratio(res[key], ref[key])]
        if difference:
            row += [f"{(res[key] - ref[key]) / 2**20:+.1f} MiB", ""]
        out.append(row)
    return out


def _device() -> str:
    return "cuda" if torch.cuda.is_available() else "cpu"


def _peak(name: str, impl: str, n: int, k: int, unreset: list[str]) -> dict:
    """One fresh subprocess's measurement (see _child.peak); ``name`` goes to ``unreset`` if its peak was not reset."""
    res = T.run_child("peak", name, impl, n, k, _device())
    if not res["reset"]:
        unreset.append(f"{name} {impl}")
    return res


def _unreset_note(unreset: list[str]) -> list[str]:
    if not unreset:
        return []
    return [f"WARNING: ru_maxrss stayed above the current RSS when reset ({', '.join(unreset)}): that growth "
            "is undercounted"]


def memory(n: int, fused: bool) -> None:
    """Section 2: peak memory of one forward + backward, each case in a fresh subprocess."""
    rows, unreset, variants = [], [], _variants(fused)
    for name in MEMORY_LOSSES:
        case = CASES[name]
        ref = _peak(name, "reference", n, K, unreset)
        for v in variants:
            rows += _peak_rows(name, case.label, _peak(name, v, n, K, unreset), ref, difference=False)
        rows.append(None)
    notes = [f"N = {_log2(n)} elements, float32, device {_device()}, 1 thread; each case in a fresh subprocess, "
             "after a warm-up at a small size",
             "saved for backward: distinct storages packed by torch.autograd.graph.saved_tensors_hooks",
             "peak growth: ru_maxrss after - before one forward + backward (inputs already allocated; the peak "
             "is reset to the current RSS first via /proc/self/clear_refs); CUDA: max_memory_allocated",
             *_unreset_note(unreset)]
    T.table("2. Peak memory of one forward + backward", ["loss", "measure", "lossforge", "reference",
            "lossforge", "reference", "lf/ref"], rows[:-1], "llllrrr", notes)


def language_model(reps: int, fused: bool, threads: list[int]) -> None:
    """Section 3: cross-entropy over a (2048, 32000) logit matrix, int64 targets."""
    case, n, variants = CASES["cross_entropy"], LM_ROWS * LM_CLASSES, _variants(fused)
    inputs, grads = make_inputs(case.kind, n, LM_CLASSES), grads_of(case.name)
    modules = {v: lossforge_module(case.name, v == "fused") for v in variants}
    torch.set_num_threads(threads[0])
    failures = [line for v in variants for line in check(case, modules[v], v, inputs, f"({LM_ROWS}, {LM_CLASSES})")]
    if failures:
        T.fail("lossforge disagrees with the reference:\n" + "\n".join(failures))
    fns = {"eager": step(modules["eager"], inputs, grads), "reference": step(case.reference, inputs, grads)}
    if fused:
        fns["fused"] = step(modules["fused"], inputs, grads)
    del inputs
    label, rows, unreset = f"cross_entropy ({LM_ROWS} x {LM_CLASSES})", [], []
    for t in threads:
        torch.set_num_threads(t)
        with T.OtherLoad() as load:
            res = T.alternated(fns, reps, warmup=1)
        for v in variants:
            a, b = res[v].median, res["reference"].median
            rows.append([label, f"forward + backward, {t} thread{'s' if t > 1 else ''}", f"lossforge {v}", case.label,
                         T.seconds(a), T.seconds(b), T.ratio(a, b), f"{(a - b) * 1e3:+.1f} ms", f"{load.share:.0%}"])
    fns.clear()
    ref = _peak(case.name, "reference", n, LM_CLASSES, unreset)
    for v in variants:
        rows += _peak_rows(label, case.label, _peak(case.name, v, n, LM_CLASSES, unreset), ref, difference=True)
    notes = [f"float32 logits, int64 targets; time: {reps} alternated repetitions of 1 call; memory: fresh "
             "subprocesses, as in section 2 (1 thread)", T.OTHERS_NOTE, *_unreset_note(unreset),
             *RECOMPILES.notes(), *_fused_note(fused)]
    T.table("3. Language-model cross-entropy", ["loss", "measure", "lossforge", "reference", "lossforge",
            "reference", "lf/ref", "difference", "others"], rows, "llllrrrrr", notes)
