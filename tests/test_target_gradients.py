"""Gradients for targets (issue 13): a target of a continuous domain that requires grad gets its derived
gradient, as ``F.mse_loss`` or ``F.kl_div`` give one (distillation with a trainable teacher); a target that
does not require grad costs nothing; a one-hot target given as class probabilities is differentiated as torch's
CrossEntropyLoss differentiates it; a binary or sign target still gets a warning.

References: torch's own losses under autograd where they differentiate the target (float64, 1e-10: the same
formula), and ``torch.autograd.gradcheck`` (central differences, float64) for every built-in with such a target.
"""

from __future__ import annotations

import warnings

import pytest
import torch

import lossforge as lf

from .library_db import ROWS

F = torch.nn.functional
SMOOTH = [n for n in lf.builtin_names() if lf.builtin(n).smooth_targets]
TORCHS = {
    "mse": F.mse_loss, "mae": F.l1_loss, "huber": F.huber_loss, "smooth_l1": F.smooth_l1_loss,
    "bce_logits": F.binary_cross_entropy_with_logits, "kl_div": F.kl_div,
}


def _point(name):
    """An ordinary point in float64, away from kinks (the row's generator), targets made smooth and interior."""
    args = ROWS[name].ordinary(torch.Generator().manual_seed(5), torch.float64)
    # emd: histograms of equal mass put the last running sum at abs()'s kink, where no difference quotient holds
    return (args[0], 0.9 * args[1]) if name == "emd" else args


def test_the_smooth_targets_are_the_continuous_ones():
    # one-hot targets included: their rows may be class probabilities, which torch's CrossEntropyLoss differentiates
    assert set(SMOOTH) == {"bce", "bce_logits", "cross_entropy", "dice", "emd", "focal", "gaussian_nll", "huber",
                           "kl_div", "log_cosh", "mae", "mse", "multi_margin", "nll", "poisson_nll", "quantile",
                           "smooth_l1"}
    assert lf.builtin("hinge").smooth_targets == () and lf.builtin("soft_margin").smooth_targets == ()
    assert lf.builtin("cross_entropy").smooth_targets == ("target",)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", [(6, 5), (3, 5, 4)], ids=["(N, C)", "(N, C, d1)"])
def test_class_probability_targets_get_torchs_gradient(shape, dtype):
    """Soft labels through CrossEntropyLoss (a teacher trained through them): torch differentiates the target, so
    does the generated module, with weight and label smoothing, every reduction."""
    g = torch.Generator().manual_seed(3)
    logits = 3 * torch.randn(shape, generator=g, dtype=dtype)
    probs = torch.softmax(torch.randn(shape, generator=g, dtype=dtype), 1)
    weight = torch.rand(shape[1], generator=g, dtype=dtype) + 0.1
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    tol = 1e-10 if dtype == torch.float64 else 2e-5
    for kwargs in ({}, {"label_smoothing": 0.2}, {"weight": weight, "label_smoothing": 0.1},
                   {"weight": weight, "reduction": "sum"}, {"reduction": "none"}):
        grads = []
        for module in (cls(**kwargs), torch.nn.CrossEntropyLoss(**kwargs)):
            leaves = [logits.clone().requires_grad_(), probs.clone().requires_grad_()]
            value = module(*leaves)
            upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(2), dtype=dtype)
            grads.append(torch.autograd.grad((value * upstream).sum(), leaves))
        for got, want in zip(*grads):
            torch.testing.assert_close(got, want, rtol=tol, atol=tol, msg=lambda m, kw=kwargs: f"{kw}: {m}")


def test_class_indices_still_take_no_gradient_and_torch_func_differentiates_soft_labels():
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")()
    logits = torch.randn(4, 3, dtype=torch.float64)
    probs = torch.softmax(torch.randn(4, 3, dtype=torch.float64), -1)
    want = -torch.log_softmax(logits, -1) / 4  # d mean(-sum(t * log_softmax(z))) / dt
    torch.testing.assert_close(torch.func.grad(lambda t: cls(logits, t))(probs), want, rtol=1e-12, atol=1e-12)
    # class indices under torch.func: the logits' gradient, and none asked of the integers
    indices = torch.tensor([0, 2, 1, 1])
    got = torch.func.grad(lambda z: cls(z, indices))(logits)
    torch.testing.assert_close(got, torch.func.grad(lambda z: F.cross_entropy(z, indices))(logits))
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a one-hot target no longer warns: it is differentiated
        cls(logits.requires_grad_(), probs.clone().requires_grad_()).backward()


@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("name", sorted(TORCHS))
def test_target_gradients_match_torch(name, reduction):
    args = _point(name)
    cls = lf.compile(lf.builtin(name), "torch")
    ours = [a.clone().requires_grad_() for a in args]
    theirs = [a.clone().requires_grad_() for a in args]
    value, ref = cls(reduction=reduction)(*ours), TORCHS[name](*theirs, reduction=reduction)
    upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(2), dtype=value.dtype)
    for got, want in zip(torch.autograd.grad((value * upstream).sum(), ours),
                         torch.autograd.grad((ref * upstream).sum(), theirs)):
        torch.testing.assert_close(got, want, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("name", SMOOTH)
def test_target_gradients_pass_gradcheck(name):
    spec, args = lf.builtin(name), _point(name)
    module = lf.compile(spec, "torch")(validate=False)  # central differences step off a domain's end (t = 0)
    wanted = [i for i, a in enumerate(spec.arrays) if a in spec.smooth_targets or a in spec.inputs]
    leaves = [a.clone().requires_grad_(i in wanted) for i, a in enumerate(args)]
    assert torch.autograd.gradcheck(lambda *xs: module(*xs), leaves, eps=1e-7, atol=1e-6)


def test_a_target_that_does_not_require_grad_costs_no_gradient():
    module = lf.compile(lf.builtin("mse"), "torch")()
    pred, target = _point("mse")
    for wants in (False, True):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t) or t, lambda t: t):
            module(pred.clone().requires_grad_(), target.clone().requires_grad_(wants))
        # pred, target and the gradient of pred; the target's gradient only when it is wanted
        assert len(saved) == (4 if wants else 3)


def test_a_target_alone_that_requires_grad_gets_it_and_a_discrete_one_is_named():
    pred, target = _point("mse")
    target = target.clone().requires_grad_()
    lf.compile(lf.builtin("mse"), "torch")()(pred, target).backward()
    torch.testing.assert_close(target.grad, 2 * (target - pred).detach() / pred.numel())
    score, sign = ROWS["hinge"].ordinary(torch.Generator().manual_seed(1), torch.float64)
    with pytest.warns(UserWarning, match=r"'target': a target that requires grad gets no gradient .* discrete"):
        lf.compile(lf.builtin("hinge"), "torch")()(score, sign.requires_grad_())
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a smooth target: no warning
        lf.compile(lf.builtin("mse"), "torch")()(pred, target)


def test_target_gradients_under_torch_func_compile_and_double_backward():
    module = lf.compile(lf.builtin("kl_div"), "torch")(reduction="batchmean")
    logq, target = _point("kl_div")
    ref = torch.func.grad(lambda t: F.kl_div(logq, t, reduction="batchmean"))(target)
    torch.testing.assert_close(torch.func.grad(lambda t: module(logq, t))(target), ref, rtol=1e-10, atol=1e-12)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    leaf = target.clone().requires_grad_()
    compiled(logq, leaf).backward()
    torch.testing.assert_close(leaf.grad, ref, rtol=1e-10, atol=1e-12)
    mse = lf.compile(lf.builtin("mse"), "torch")()
    pred, y = _point("mse")
    assert torch.autograd.gradgradcheck(lambda a, b: mse(a, b), (pred.clone().requires_grad_(), y.clone().requires_grad_()))


def test_a_trainable_teacher_learns_through_the_target():
    """Distillation: the student's log-probabilities fixed, the teacher's logits trained toward them; the same
    steps as with torch's own kl_div (float32, 1e-5)."""
    torch.manual_seed(0)
    student = torch.randn(32, 5).log_softmax(-1)
    kl = lf.compile(lf.builtin("kl_div"), "torch")(reduction="batchmean")
    trained, losses = {}, {}
    for label, loss_fn in (("lossforge", kl), ("torch", lambda a, b: F.kl_div(a, b, reduction="batchmean"))):
        teacher = torch.zeros(32, 5, requires_grad=True)
        opt = torch.optim.SGD([teacher], lr=2.0)
        losses[label] = []
        for _ in range(100):
            opt.zero_grad()
            loss = loss_fn(student, teacher.softmax(-1))
            loss.backward()
            opt.step()
            losses[label].append(float(loss))
        trained[label] = teacher.detach()
    assert losses["lossforge"][-1] < 0.1 * losses["lossforge"][0]
    torch.testing.assert_close(trained["lossforge"], trained["torch"], rtol=1e-5, atol=1e-5)
