"""Every example runs, as a user would run it; the example losses match hand-written torch references."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import lossforge as lf

from .regen_golden import example_module

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["medical", "focal_variant", "multitask"])
def test_example_runs(name):
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_medical_example_shows_the_missing_gradient():
    done = subprocess.run([sys.executable, str(EXAMPLES / "medical.py")], capture_output=True, text=True, timeout=300)
    assert "zero-gradient" in done.stdout
    assert "verify cost_sensitive_bce: FAILED" in done.stdout and "verify cost_sensitive_bce: ok" in done.stdout


def test_demo_runs_end_to_end(tmp_path):
    env = {"BUILD": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "demo.py")], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    for name in ("cost_sensitive_bce_np.py", "cost_sensitive_bce_torch.py", "mse_mae_huber.png"):
        assert (tmp_path / name).exists()


# -- the example losses against hand-written torch references ----------------------------------------------------

F = torch.nn.functional
DTYPES = pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])


def _close(got, want, tol):
    torch.testing.assert_close(torch.as_tensor(got).double(), torch.as_tensor(want).double(), rtol=tol, atol=tol)


def clip_reference(logits, labels):
    """CLIP's training code: F.cross_entropy of the logits per image and per text, averaged."""
    return (F.cross_entropy(logits, labels) + F.cross_entropy(logits.T, labels)) / 2


@DTYPES
@pytest.mark.parametrize("onehot", [False, True], ids=["indices", "onehot"])
def test_clip_is_the_symmetric_cross_entropy_of_torch(dtype, onehot):
    """Values and gradients through the model (embeddings and the scale) against F.cross_entropy both ways.

    float64 to 1e-12 (the same sums in another order). float32: logits of up to 100 (a scale of 100 on cosines)
    make losses near 30 whose float32 rounding is 2e-6 of it; both sides compute in float32 from the same
    embeddings, compared at 1e-5 relative."""
    spec = lf.load(EXAMPLES / "clip.toml")
    loss = lf.compile(spec, "torch")()
    g = torch.Generator().manual_seed(3)
    img0, txt0 = (F.normalize(torch.randn(12, 32, generator=g, dtype=torch.float64), dim=-1).to(dtype) for _ in "it")
    labels = torch.arange(12)
    target = F.one_hot(labels, 12).to(dtype) if onehot else labels
    found = []
    for fn in (lambda z: loss(z, z.T, target), lambda z: clip_reference(z, labels)):
        img, txt = img0.clone().requires_grad_(), txt0.clone().requires_grad_()
        scale = torch.tensor(100.0, dtype=dtype, requires_grad=True)
        value = fn(scale * img @ txt.T)
        value.backward()
        found.append((value.detach(), img.grad, txt.grad, scale.grad))
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    for got, want in zip(*found):
        assert got.dtype == dtype
        _close(got, want, tol)
    # NumPy: the gradients of the two arguments, which the model adds back into the one matrix
    logits = (100 * img0 @ txt0.T).double()
    value, (grad_image, grad_text) = lf.compile(spec, "numpy").loss_and_grad(logits.numpy(), logits.T.numpy(),
                                                                             target.numpy())
    leaf = logits.clone().requires_grad_()
    want = clip_reference(leaf, labels)
    want.backward()
    _close(value, want.detach(), 1e-12)
    _close(grad_image + grad_text.T, leaf.grad, 1e-12)


@DTYPES
def test_medical_loss_as_a_combine_is_the_chapters_and_is_flagged_zero_gradient(dtype):
    """The combine of mean BCE and the summed count of missed positives: the chapter's MedicalLoss in value and
    gradient (float64 to 1e-12 against a reference that counts in the inputs' dtype; float32 to 1e-5, a sum of 64
    rounded logs), its gradient the BCE's alone, and lf.check reports the count as zero-gradient."""
    medical = example_module("medical")
    spec = medical.medical_spec(ratio=0.1)
    assert spec.reduction is None and dict(spec.term_reductions) == {"bce": "mean", "missed": "sum"}
    report = lf.check(spec)
    assert "zero-gradient" in [h.kind for h in report.hazards] and not report.ok
    g = torch.Generator().manual_seed(5)
    p0 = (0.01 + 0.98 * torch.rand(64, generator=g, dtype=torch.float64)).to(dtype)
    p0[:2] = torch.tensor([0.4999, 0.5001], dtype=dtype)  # either side of the threshold (0.5 itself: not missed)
    y = (torch.rand(64, generator=g, dtype=torch.float64) < 0.4).to(dtype)
    y[:2] = 1.0

    def reference(p):
        return F.binary_cross_entropy(p, y) + 0.1 * ((p < 0.5) & (y == 1)).to(p.dtype).sum()

    tol = 1e-12 if dtype == torch.float64 else 1e-5
    ours, ref = p0.clone().requires_grad_(), p0.clone().requires_grad_()
    value, want = lf.compile(spec, "torch")()(ours, y), reference(ref)
    value.backward()
    want.backward()
    _close(value.detach(), want.detach(), tol)
    _close(ours.grad, ref.grad, tol)
    bce = p0.clone().requires_grad_()
    F.binary_cross_entropy(bce, y).backward()
    _close(ours.grad, bce.grad, tol)  # the count adds nothing to the gradient: training never sees it
    np_value, (np_grad,) = lf.compile(spec, "numpy").loss_and_grad(p0.numpy(), y.numpy())
    _close(np_value, want.detach(), tol)
    _close(np_grad, ref.grad, tol)
    # the chapter's own module counts in float32 (mask.float()): 0.1 * count is 1e-8 relative from the exact one
    chapter = medical.MedicalLoss(threshold=0.5, ratio=0.1)(p0.double(), y.double())
    _close(lf.compile(spec, "torch")()(p0.double(), y.double()), chapter, 1e-7)


def test_uncertainty_weighting_beside_a_summed_decay_trains_its_log_variances():
    """Kendall's uncertainty weighting (a mean) plus 1e-3 * a summed L2 decay on the regression output: the
    learnable log-variances' gradients and the inputs' against a hand-written torch reference, float64 to
    1e-12. (The example alone is tested against its reference in test_transforms, every reduction and dtype.)"""
    tasks = lf.load(EXAMPLES / "uncertainty_weighting.toml")
    decay = lf.LossSpec(name="decay", expr="pred**2", symbols={"pred": lf.Var("input")}, reduction="sum")
    spec = lf.combine({"tasks": (tasks, 1.0), "decay": (decay, 1e-3)})
    loss = lf.compile(spec, "torch")(s_reg=0.3, s_cls=-0.2)
    g = torch.Generator().manual_seed(0)
    pred, target, score = (2 * torch.randn(6, 2, generator=g, dtype=torch.float64) for _ in range(3))
    sign = torch.sign(torch.randn(6, 2, generator=g, dtype=torch.float64))
    leaves = [pred.clone().requires_grad_(), score.clone().requires_grad_()]
    got = torch.autograd.grad(loss(leaves[0], target, leaves[1], sign), [*leaves, loss.s_reg, loss.s_cls])
    ref_leaves = [pred.clone().requires_grad_(), score.clone().requires_grad_()]
    s_reg, s_cls = (torch.tensor(v, dtype=torch.float64, requires_grad=True) for v in (0.3, -0.2))
    per_sample = (torch.exp(-s_reg) * (ref_leaves[0] - target) ** 2 + s_reg
                  + torch.exp(-s_cls) * F.softplus(-sign * ref_leaves[1]) + s_cls)
    want = per_sample.mean() + 1e-3 * (ref_leaves[0] ** 2).sum()
    for a, b in zip(got, torch.autograd.grad(want, [*ref_leaves, s_reg, s_cls])):
        _close(a, b, 1e-12)
    _close(np.asarray(lf.compile(spec, "numpy").loss(pred.numpy(), target.numpy(), score.numpy(), sign.numpy(),
                                                     s_reg=0.3, s_cls=-0.2)), want.detach(), 1e-12)
