"""The built-in library as a database: one row per loss.

Each row says how to call the reference (PyTorch's own function, torchvision's
focal formula, or the stated formula written in plain torch), how to draw
ordinary arguments, which extreme points to try, and which comparisons are
meaningful there. Adding a loss = one TOML file + one row here.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

Tensor = torch.Tensor


def reduce(x: Tensor, reduction: str) -> Tensor:
    if reduction == "mean":
        return x.mean()
    if reduction == "sum":
        return x.sum()
    return x


@dataclass(frozen=True)
class Row:
    name: str
    #: reference(*tensors, reduction=..., **params) -> reduced loss
    reference: Callable[..., Tensor]
    #: ordinary(generator, dtype) -> tuple of tensors, in the spec's positional order
    ordinary: Callable[[torch.Generator, torch.dtype], tuple[Tensor, ...]]
    #: extremes(dtype) -> list of (label, tensors)
    extremes: Callable[[torch.dtype], list[tuple[str, tuple[Tensor, ...]]]]
    #: compare values with the reference at extreme points where the reference is finite
    compare_extremes: bool = True
    #: compare gradients at extreme points (off where PyTorch's subgradient at a tie differs)
    compare_extreme_grads: bool = True
    #: non-default params to exercise
    params: dict[str, float] = field(default_factory=dict)
    note: str = ""


B = (6, 3)  # batch shape of elementwise losses
N, K = 5, 4  # batch and axis length of vector losses


def _randn(g, dtype, *shape):
    return torch.randn(*shape, generator=g, dtype=dtype)


def _rand(g, dtype, *shape, lo=0.0, hi=1.0):
    return lo + (hi - lo) * torch.rand(*shape, generator=g, dtype=dtype)


def _sign(g, dtype, *shape):
    return torch.where(torch.rand(*shape, generator=g) < 0.5, -1.0, 1.0).to(dtype)


def _onehot(g, dtype, n=N, k=K):
    idx = torch.randint(0, k, (n,), generator=g)
    return F.one_hot(idx, k).to(dtype)


def _t(values, dtype):
    return torch.tensor(values, dtype=dtype)


def regression(g, dtype):
    return _randn(g, dtype, *B) * 3, _randn(g, dtype, *B) * 3


def regression_extremes(dtype):
    big = _t([[1000.0, -1000.0, 100.0], [-100.0, 0.0, 1e-8]], dtype)
    return [
        ("zero residual", (big, big.clone())),
        ("huge residual", (big, -big)),
        ("zeros", (torch.zeros(2, 3, dtype=dtype), torch.zeros(2, 3, dtype=dtype))),
    ]


def logits_binary(g, dtype):
    return _randn(g, dtype, *B) * 4, (torch.rand(*B, generator=g) < 0.5).to(dtype)


def logits_extremes(dtype):
    x = _t([[100.0, -100.0, 1000.0, -1000.0, 0.0, 30.0]], dtype)
    return [("target 1", (x, torch.ones_like(x))), ("target 0", (x, torch.zeros_like(x))),
            ("target 0.5", (x, torch.full_like(x, 0.5)))]


def probs_binary(g, dtype):
    return _rand(g, dtype, *B, lo=0.02, hi=0.98), (torch.rand(*B, generator=g) < 0.5).to(dtype)


def probs_extremes(dtype):
    p = _t([[0.0, 1.0, 0.0, 1.0, 1e-12, 1 - 1e-7]], dtype)
    y = _t([[0.0, 1.0, 1.0, 0.0, 1.0, 0.0]], dtype)
    return [("p exactly 0 and 1", (p, y))]


def score_sign(g, dtype):
    return _randn(g, dtype, *B) * 2, _sign(g, dtype, *B)


def score_sign_extremes(dtype):
    s = _t([[1000.0, -1000.0, 100.0, -100.0, 0.0, 1.0]], dtype)
    return [("target +1", (s, torch.ones_like(s))), ("target -1", (s, -torch.ones_like(s)))]


def class_logits(g, dtype):
    return _randn(g, dtype, N, K) * 3, _onehot(g, dtype)


def class_logits_extremes(dtype):
    z = _t([[1000.0, -1000.0, 0.0, 5.0], [-100.0, 100.0, 100.0, -1000.0], [0.0, 0.0, 0.0, 0.0]], dtype)
    y = F.one_hot(torch.tensor([1, 0, 2]), K).to(dtype)
    return [("logits of +-1000", (z, y))]


def log_probs(g, dtype):
    z, y = class_logits(g, dtype)
    return torch.log_softmax(z, -1), y


def simplex(g, dtype, n=N, k=K):
    return torch.softmax(_randn(g, dtype, n, k) * 2, -1)


def kl_args(g, dtype):
    return torch.log_softmax(_randn(g, dtype, N, K), -1), simplex(g, dtype)


def kl_extremes(dtype):
    logq = torch.log_softmax(_t([[1000.0, -1000.0, 0.0, 0.0], [0.0, 0.0, 0.0, 0.0]], dtype), -1)
    target = _t([[1.0, 0.0, 0.0, 0.0], [0.25, 0.25, 0.5, 0.0]], dtype)
    return [("target with zeros", (logq.clamp(min=-1e4), target))]


def pairs_sign(g, dtype):
    return _randn(g, dtype, *B), _randn(g, dtype, *B), _sign(g, dtype, *B)


def pairs_sign_extremes(dtype):
    a = _t([[1000.0, -1000.0, 0.0, 3.0]], dtype)
    return [("equal", (a, a.clone(), torch.ones_like(a))), ("opposite", (a, -a, -torch.ones_like(a)))]


def distance_sign(g, dtype):
    return _rand(g, dtype, *B, lo=0.0, hi=3.0), _sign(g, dtype, *B)


def embeddings_sign(g, dtype):
    return _randn(g, dtype, N, K), _randn(g, dtype, N, K), _sign(g, dtype, N)


def embeddings_sign_extremes(dtype):
    z = torch.zeros(2, K, dtype=dtype)
    e = _t([[1.0, 2.0, 3.0, 4.0], [1000.0, -1000.0, 0.0, 1.0]], dtype)
    return [
        ("zero vectors", (z, z.clone(), _t([1.0, -1.0], dtype))),
        ("one zero vector", (z, e, _t([1.0, -1.0], dtype))),
        ("equal embeddings", (e, e.clone(), _t([1.0, -1.0], dtype))),
    ]


def triplet_args(g, dtype):
    return _randn(g, dtype, N, K), _randn(g, dtype, N, K), _randn(g, dtype, N, K)


def triplet_extremes(dtype):
    e = _t([[1.0, 2.0, 3.0, 4.0], [1000.0, -1000.0, 0.0, 1.0]], dtype)
    z = torch.zeros(2, K, dtype=dtype)
    return [("equal embeddings", (e, e.clone(), e.clone())), ("zero vectors", (z, z.clone(), z.clone())),
            ("positive equals anchor", (e, e.clone(), -e))]


def poisson_args(g, dtype):
    return _randn(g, dtype, *B), torch.poisson(_rand(g, torch.float64, *B, lo=0.0, hi=5.0), generator=g).to(dtype)


def poisson_extremes(dtype):
    x = _t([[-1000.0, -100.0, 0.0, 50.0]], dtype)
    return [("very small rates", (x, _t([[0.0, 3.0, 0.0, 2.0]], dtype)))]


def gaussian_args(g, dtype):
    return _randn(g, dtype, *B), _randn(g, dtype, *B), _rand(g, dtype, *B, lo=0.1, hi=3.0)


def gaussian_extremes(dtype):
    m = _t([[0.0, 1.0, -1.0, 1000.0]], dtype)
    return [("zero variance", (m, m * 0.5, torch.zeros_like(m))),
            ("variance at eps", (m, m.clone(), torch.full_like(m, 1e-6)))]


def dice_args(g, dtype):
    return _rand(g, dtype, N, K), (torch.rand(N, K, generator=g) < 0.5).to(dtype)


def dice_extremes(dtype):
    z = torch.zeros(2, K, dtype=dtype)
    o = torch.ones(2, K, dtype=dtype)
    return [("empty masks", (z, z.clone())), ("full masks", (o, o.clone())), ("disjoint", (o, z))]


def emd_args(g, dtype):
    return simplex(g, dtype), simplex(g, dtype)


def emd_extremes(dtype):
    a = F.one_hot(torch.tensor([0, 3]), K).to(dtype)
    return [("equal histograms", (a, a.clone())), ("opposite vertices", (a, a.flip(-1)))]


# -- references -------------------------------------------------------------------


def focal_reference(logits, target, reduction="mean", alpha=0.25, gamma=2.0):
    """torchvision.ops.sigmoid_focal_loss, as written there."""
    p = torch.sigmoid(logits)
    ce = F.binary_cross_entropy_with_logits(logits, target, reduction="none")
    p_t = p * target + (1 - p) * (1 - target)
    loss = ce * ((1 - p_t) ** gamma)
    alpha_t = alpha * target + (1 - alpha) * (1 - target)
    return reduce(alpha_t * loss, reduction)


def kl_reference(logq, target, reduction="mean", log_target=0.0):
    return F.kl_div(logq, target, reduction=reduction, log_target=bool(log_target))


def dice_reference(p, target, reduction="mean", smooth=1.0):
    inter = (p * target).sum(-1)
    return reduce(1 - (2 * inter + smooth) / (p.sum(-1) + target.sum(-1) + smooth), reduction)


ROWS: dict[str, Row] = {
    r.name: r
    for r in [
        Row("mse", lambda p, t, reduction: F.mse_loss(p, t, reduction=reduction), regression, regression_extremes),
        Row("mae", lambda p, t, reduction: F.l1_loss(p, t, reduction=reduction), regression, regression_extremes),
        Row(
            "huber",
            lambda p, t, reduction, delta=1.0: F.huber_loss(p, t, reduction=reduction, delta=delta),
            regression,
            regression_extremes,
            params={"delta": 2.5},
        ),
        Row(
            "smooth_l1",
            lambda p, t, reduction, beta=1.0: F.smooth_l1_loss(p, t, reduction=reduction, beta=beta),
            regression,
            regression_extremes,
            params={"beta": 0.5},
        ),
        Row(
            "log_cosh",
            lambda p, t, reduction: reduce(torch.log(torch.cosh(p - t)), reduction),
            regression,
            regression_extremes,
            note="the reference overflows at residuals beyond 710: compared only where it is finite",
        ),
        Row(
            "quantile",
            lambda p, t, reduction, tau=0.5: reduce(torch.maximum(tau * (t - p), (tau - 1) * (t - p)), reduction),
            regression,
            regression_extremes,
            params={"tau": 0.9},
            note="at a zero residual both torch.maximum and lossforge split the gradient 0.5/0.5 between the branches",
        ),
        Row(
            "bce",
            lambda p, t, reduction: F.binary_cross_entropy(p, t, reduction=reduction),
            probs_binary,
            probs_extremes,
            compare_extremes=False,
            note="PyTorch clamps each log at -100, lossforge clamps p to [eps, 1 - eps]: equal only inside",
        ),
        Row(
            "bce_logits",
            lambda x, t, reduction, pos_weight=1.0: F.binary_cross_entropy_with_logits(
                x, t, reduction=reduction, pos_weight=torch.tensor(pos_weight, dtype=x.dtype)
            ),
            logits_binary,
            logits_extremes,
            params={"pos_weight": 3.0},
        ),
        Row(
            "cost_sensitive_bce",
            lambda p, t, reduction, fn_weight=5.0: F.binary_cross_entropy(
                p, t, weight=1 + (fn_weight - 1) * t, reduction=reduction
            ),
            probs_binary,
            probs_extremes,
            compare_extremes=False,
            params={"fn_weight": 7.0},
        ),
        Row(
            "cross_entropy",
            # one-hot rows as torch's class probabilities: with a weight, the mean is over samples (torch's rule
            # for probabilities; class indices get the weighted mean, tested in test_torch_nn.py)
            lambda z, y, reduction, label_smoothing=0.0, weight=None, ignore_index=-100: F.cross_entropy(
                z, y, reduction=reduction, label_smoothing=label_smoothing,
                weight=None if weight is None else torch.as_tensor(weight, dtype=z.dtype),
            ),
            class_logits,
            class_logits_extremes,
            params={"label_smoothing": 0.1, "weight": (0.5, 1.0, 2.0, 3.0)},
        ),
        Row(
            "nll",
            lambda lp, y, reduction: F.nll_loss(lp, y.argmax(-1), reduction=reduction),
            log_probs,
            class_logits_extremes,
        ),
        Row("kl_div", kl_reference, kl_args, kl_extremes),
        Row(
            "hinge",
            lambda s, t, reduction, margin=1.0: reduce(torch.relu(margin - t * s), reduction),
            score_sign,
            score_sign_extremes,
            params={"margin": 0.5},
        ),
        Row(
            "multi_margin",
            lambda s, y, reduction, p=1.0, margin=1.0, weight=None: F.multi_margin_loss(
                s, y.argmax(-1), p=int(p), margin=margin, reduction=reduction,
                weight=None if weight is None else torch.as_tensor(weight, dtype=s.dtype),
            ),
            class_logits,
            class_logits_extremes,
            params={"p": 2.0, "margin": 2.0, "weight": (0.5, 1.0, 2.0, 3.0)},
        ),
        Row(
            "soft_margin",
            lambda s, t, reduction: F.soft_margin_loss(s, t, reduction=reduction),
            score_sign,
            score_sign_extremes,
        ),
        Row(
            "margin_ranking",
            lambda a, b, t, reduction, margin=0.0: F.margin_ranking_loss(a, b, t, margin=margin, reduction=reduction),
            pairs_sign,
            pairs_sign_extremes,
            params={"margin": 0.3},
        ),
        Row(
            "hinge_embedding",
            lambda d, t, reduction, margin=1.0: F.hinge_embedding_loss(d, t, margin=margin, reduction=reduction),
            distance_sign,
            score_sign_extremes,
            params={"margin": 2.0},
        ),
        Row(
            "cosine_embedding",
            lambda a, b, t, reduction, margin=0.0: F.cosine_embedding_loss(a, b, t, margin=margin, reduction=reduction),
            embeddings_sign,
            embeddings_sign_extremes,
            params={"margin": 0.2},
        ),
        Row(
            "triplet",
            lambda a, pos, n, reduction, margin=1.0, p=2.0, eps=1e-6, swap=0.0: F.triplet_margin_loss(
                a, pos, n, margin=margin, p=p, eps=eps, swap=bool(swap), reduction=reduction
            ),
            triplet_args,
            triplet_extremes,
            params={"margin": 0.5, "p": 3.0, "swap": 1.0},
        ),
        Row("focal", focal_reference, logits_binary, logits_extremes, params={"alpha": 0.4, "gamma": 3.0}),
        Row(
            "poisson_nll",
            lambda x, t, reduction, log_input=1.0, full=0.0, eps=1e-8: F.poisson_nll_loss(
                x, t, log_input=bool(log_input), full=bool(full), eps=eps, reduction=reduction),
            poisson_args,
            poisson_extremes,
        ),
        Row(
            "gaussian_nll",
            lambda m, t, v, reduction, eps=1e-6, full=0.0: F.gaussian_nll_loss(m, t, v, full=bool(full), eps=eps,
                                                                               reduction=reduction),
            gaussian_args,
            gaussian_extremes,
            compare_extreme_grads=False,
            params={"full": 1.0},
            note="PyTorch's clamp of var runs under no_grad (gradient passes below eps); lossforge's gradient there is 0",
        ),
        Row("dice", dice_reference, dice_args, dice_extremes, params={"smooth": 0.5}),
        Row(
            "wasserstein",
            lambda s, t, reduction: reduce(-t * s, reduction),
            score_sign,
            score_sign_extremes,
        ),
        Row(
            "emd",
            lambda p, q, reduction: reduce(torch.cumsum(p - q, -1).abs().sum(-1), reduction),
            emd_args,
            emd_extremes,
            compare_extreme_grads=False,
            note="at equal histograms abs() is at its kink: torch and lossforge both give 0, checked by finiteness only",
        ),
    ]
}
