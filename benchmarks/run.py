"""Generated PyTorch modules against torch.nn.functional, side by side.

For each loss: median wall time of forward + backward (torch.utils.benchmark,
which reports the median of many runs after warm-up), the bytes of tensors
saved for backward (counted with torch.autograd.graph.saved_tensors_hooks:
this is what drives a loss's peak memory in training), and the ratios
lossforge / reference. Run with `make bench`; the numbers are printed, never
asserted in tests.
"""

from __future__ import annotations

import argparse
import platform
import sys
from pathlib import Path

import torch
import torch.nn.functional as F
from torch.utils import benchmark

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

import lossforge as lf  # noqa: E402

N, K = 65_536, 16


def _inputs(name: str, dtype):
    g = torch.Generator().manual_seed(0)
    if name in ("mse", "mae", "huber", "smooth_l1", "log_cosh"):
        return (torch.randn(N, generator=g, dtype=dtype), torch.randn(N, generator=g, dtype=dtype)), (0,)
    if name in ("bce_logits", "focal"):
        return (torch.randn(N, generator=g, dtype=dtype) * 4, (torch.rand(N, generator=g) < 0.5).to(dtype)), (0,)
    if name == "bce":
        return (torch.rand(N, generator=g, dtype=dtype).clamp(0.01, 0.99), (torch.rand(N, generator=g) < 0.5).to(dtype)), (0,)
    if name == "cross_entropy":
        return (torch.randn(N // K, K, generator=g, dtype=dtype), torch.randint(0, K, (N // K,), generator=g)), (0,)
    if name == "triplet":
        a, p, n = (torch.randn(N // K, K, generator=g, dtype=dtype) for _ in range(3))
        return (a, p, n), (0, 1, 2)
    raise KeyError(name)


def _focal(x, t, alpha=0.25, gamma=2.0):
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    return ((alpha * t + (1 - alpha) * (1 - t)) * ce * (1 - p_t) ** gamma).mean()


REFERENCES = {
    "mse": F.mse_loss,
    "mae": F.l1_loss,
    "huber": F.huber_loss,
    "smooth_l1": F.smooth_l1_loss,
    "log_cosh": lambda p, t: torch.log(torch.cosh(p - t)).mean(),
    "bce": F.binary_cross_entropy,
    "bce_logits": F.binary_cross_entropy_with_logits,
    "focal": _focal,
    "cross_entropy": F.cross_entropy,
    "triplet": F.triplet_margin_loss,
}


def _step(fn, args, grads_of):
    leaves = [a.detach().clone().requires_grad_(i in grads_of) for i, a in enumerate(args)]

    def run():
        for leaf in leaves:
            leaf.grad = None
        fn(*leaves).backward()

    return run, leaves


def saved_bytes(fn, args, grads_of) -> int:
    total = 0

    def pack(t):
        nonlocal total
        total += t.numel() * t.element_size()
        return t

    run, _ = _step(fn, args, grads_of)
    with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
        run()
    return total


def median_seconds(fn, args, grads_of, min_run_time: float) -> float:
    run, _ = _step(fn, args, grads_of)
    timer = benchmark.Timer(stmt="run()", globals={"run": run})
    return timer.blocked_autorange(min_run_time=min_run_time).median


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--min-run-time", type=float, default=0.5)
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    args = parser.parse_args()
    dtype = getattr(torch, args.dtype)
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, {platform.machine()}, 1 thread, {args.dtype}, N = {N}")
    print(f"{'loss':<15}{'lossforge':>12}{'reference':>12}{'time ratio':>12}{'saved lf':>12}{'saved ref':>12}{'mem ratio':>11}")
    for name, ref in REFERENCES.items():
        module = lf.compile(lf.builtin(name), "torch")()
        tensors, grads_of = _inputs(name, dtype)
        t_lf = median_seconds(module, tensors, grads_of, args.min_run_time)
        t_ref = median_seconds(ref, tensors, grads_of, args.min_run_time)
        m_lf = saved_bytes(module, tensors, grads_of)
        m_ref = saved_bytes(ref, tensors, grads_of)
        mem_ratio = f"{m_lf / m_ref:.2f}" if m_ref else "-"
        print(f"{name:<15}{t_lf * 1e3:>10.3f}ms{t_ref * 1e3:>10.3f}ms{t_lf / t_ref:>12.2f}"
              f"{m_lf / 1024:>10.0f}KB{m_ref / 1024:>10.0f}KB{mem_ratio:>11}")


if __name__ == "__main__":
    main()
