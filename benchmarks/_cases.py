"""The torch losses benchmarked: deterministic inputs, the reference of each, the lossforge module.

Each case is a built-in with its reference: a torch.nn.functional loss, or a
composite of torch operations (autograd backward) where torch has none. The
references use the built-ins' own parameter defaults; where the reference is a
torch.nn.functional call with defaults of its own, :func:`check_defaults`
checks that the two agree. Inputs come from a seeded torch.Generator and are
built in place (no temporaries that would raise a peak-memory measurement).
"""

from __future__ import annotations

import inspect
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F

import lossforge as lf

#: Row length of the (N/K, K)-shaped inputs: classes, embedding features, mask pixels.
K = 16


def params(name: str) -> dict[str, float]:
    """The built-in's param defaults, by name."""
    spec = lf.builtin(name)
    return {n: spec.symbols[n].default for n in spec.params}


# Each reference is a function of its own (not a functools.partial or a closure): torch.compile
# counts every partial of one function, and every shape, against one code object's recompile limit.
_FOCAL, _DICE, _COST = params("focal"), params("dice"), params("cost_sensitive_bce")


def focal(x, t):
    """torchvision.ops.sigmoid_focal_loss, reduction="mean"."""
    alpha, gamma = _FOCAL["alpha"], _FOCAL["gamma"]
    p = torch.sigmoid(x)
    ce = F.binary_cross_entropy_with_logits(x, t, reduction="none")
    p_t = p * t + (1 - p) * (1 - t)
    alpha_t = alpha * t + (1 - alpha) * (1 - t)
    return (alpha_t * (1 - p_t) ** gamma * ce).mean()


def dice(p, t):
    """dice.toml's formula over the last axis, averaged over rows."""
    smooth = _DICE["smooth"]
    return (1 - (2 * (p * t).sum(-1) + smooth) / (p.sum(-1) + t.sum(-1) + smooth)).mean()


def log_cosh(p, t):
    return torch.log(torch.cosh(p - t)).mean()


def cost_sensitive_bce(p, t):
    """F.binary_cross_entropy weighted fn_weight on positives, 1 on negatives (binary targets)."""
    return F.binary_cross_entropy(p, t, weight=_COST["fn_weight"] * t + (1 - t))


@dataclass(frozen=True)
class Case:
    name: str
    kind: str  # what the inputs are, see make_inputs
    reference: Callable
    label: str  # the reference, as a row names it


def _cases() -> dict[str, Case]:
    out = [
        Case("mse", "regression", F.mse_loss, "F.mse_loss"),
        Case("mae", "regression", F.l1_loss, "F.l1_loss"),
        Case("huber", "regression", F.huber_loss, "F.huber_loss"),
        Case("smooth_l1", "regression", F.smooth_l1_loss, "F.smooth_l1_loss"),
        Case("bce", "probability", F.binary_cross_entropy, "F.binary_cross_entropy"),
        Case("bce_logits", "logits", F.binary_cross_entropy_with_logits, "F.binary_cross_entropy_with_logits"),
        Case("cost_sensitive_bce", "probability", cost_sensitive_bce, "F.binary_cross_entropy(weight=)"),
        Case("cross_entropy", "classes", F.cross_entropy, "F.cross_entropy"),
        Case("triplet", "triplet", F.triplet_margin_loss, "F.triplet_margin_loss"),
        Case("focal", "logits", focal, "composite (torchvision)"),
        Case("dice", "mask", dice, "composite"),
        Case("log_cosh", "regression", log_cosh, "composite log(cosh(p - t))"),
    ]
    return {c.name: c for c in out}


CASES = _cases()


def check_defaults() -> list[str]:
    """Where a built-in's param default differs from its reference's default: one line each."""

    def default(fn, name):
        return inspect.signature(fn).parameters[name].default

    pairs = [  # (built-in, its param, the value the reference uses)
        ("huber", "delta", default(F.huber_loss, "delta")),
        ("smooth_l1", "beta", default(F.smooth_l1_loss, "beta")),
        ("cross_entropy", "label_smoothing", default(F.cross_entropy, "label_smoothing")),
        ("bce_logits", "pos_weight", 1.0),  # F's pos_weight=None weighs positives 1
        ("triplet", "margin", default(F.triplet_margin_loss, "margin")),
        ("triplet", "eps", default(F.triplet_margin_loss, "eps")),
        ("focal", "alpha", 0.25),  # torchvision.ops.sigmoid_focal_loss's defaults
        ("focal", "gamma", 2.0),
    ]
    out = [f"{loss}: param {p} defaults to {params(loss)[p]!r} but the reference uses {want!r}"
           for loss, p, want in pairs if params(loss)[p] != want]
    # The built-in is the Euclidean distance without swap: F's p=2, swap=False.
    for p, want in (("p", 2), ("swap", False)):
        if default(F.triplet_margin_loss, p) != want:
            out.append(f"triplet: F.triplet_margin_loss defaults to {p}={default(F.triplet_margin_loss, p)!r}, "
                       f"the built-in computes {p}={want!r}")
    return out


def make_inputs(kind: str, n: int, k: int = K, seed: int = 0) -> tuple[torch.Tensor, ...]:
    """float32 inputs of ``n`` elements in all (``(n // k, k)`` for the row-wise kinds)."""
    g = torch.Generator().manual_seed(seed)

    def normal(*shape):
        return torch.randn(*shape, generator=g)

    def binary(*shape):
        return torch.empty(*shape).bernoulli_(0.5, generator=g)

    rows = n // k
    if kind == "regression":
        return normal(n), normal(n)
    if kind == "logits":
        return normal(n).mul_(4), binary(n)
    if kind == "probability":  # in (0.01, 0.99)
        return torch.rand(n, generator=g).mul_(0.98).add_(0.01), binary(n)
    if kind == "classes":
        return normal(rows, k), torch.randint(0, k, (rows,), generator=g)
    if kind == "triplet":
        return normal(rows, k), normal(rows, k), normal(rows, k)
    if kind == "mask":
        return torch.rand(rows, k, generator=g), binary(rows, k)
    raise KeyError(kind)


def compilable(case: Case) -> Callable:
    """``case.reference`` behind a function with a code object of its own, for torch.compile.

    torch.compile wraps torch.nn.functional losses in one shared function, so that
    their compiled graphs would all count against one recompile limit (8).
    """
    fn = case.reference

    def call(*args):
        return fn(*args)

    call.__code__ = call.__code__.replace(co_name=f"{case.name}_reference")  # a new code object
    return call


def grads_of(name: str) -> tuple[int, ...]:
    """Positions of the arguments that are inputs (want a gradient), as the built-in declares them."""
    spec = lf.builtin(name)
    return tuple(i for i, a in enumerate(spec.arrays) if spec.symbols[a].role == "input")


def fused_available() -> bool:
    """Whether generated Torch modules take the ``fused=`` constructor flag."""
    try:
        lf.compile(lf.builtin("mse"), "torch")(fused=True)
    except TypeError:
        return False
    return True


def lossforge_module(name: str, fused: bool):
    cls = lf.compile(lf.builtin(name), "torch")
    return cls(fused=True) if fused else cls()


def step(fn: Callable, inputs: tuple[torch.Tensor, ...], grads: tuple[int, ...]):
    """One forward + backward of ``fn`` on its own copies of ``inputs``, as a function.

    Calling it sets the copies' ``.grad`` to None first (``zero_grad``'s default)
    and returns the loss; its ``leaves`` are the copies, ``wanted`` those with a
    gradient.
    """
    leaves = tuple(a.detach().clone().requires_grad_(i in grads) for i, a in enumerate(inputs))
    wanted = tuple(leaves[i] for i in grads)

    def run():
        for leaf in wanted:
            leaf.grad = None
        value = fn(*leaves)
        value.backward()
        return value

    run.leaves, run.wanted = leaves, wanted
    return run
