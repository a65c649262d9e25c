"""The chapter's medical cost-sensitive loss, end to end.

The chapter's `MedicalLoss` adds a penalty `mask.float().sum() * ratio` for
missed positives to a mean BCE. Written in lossforge it is a combine of two
specs that reduce differently: the built-in `bce` (a mean) and the count of
missed positives (a sum), each keeping its own reduction. The generated module
gives the chapter's values and gradients; and the penalty has no gradient, so
training never sees it. lossforge finds that twice: `lf.check` reports the
step as `zero-gradient`, and `lf.verify` shows the implementation disagrees
with the proper cost-sensitive spec on gradients. The fix weights the
differentiable term itself.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F

import lossforge as lf

HERE = Path(__file__).resolve().parent


class MedicalLoss(torch.nn.Module):
    """The chapter's version: BCE plus a thresholded count of missed positives."""

    def __init__(self, threshold: float = 0.5, ratio: float = 0.1):
        super().__init__()
        self.threshold, self.ratio = threshold, ratio

    def forward(self, pred, target):
        bce = F.binary_cross_entropy(pred, target)
        mask = (pred < self.threshold) & (target == 1)
        return bce + mask.float().sum() * self.ratio


def weighted_bce(pred, target, fn_weight: float = 5.0):
    """The correct version: a missed positive costs fn_weight times a false alarm."""
    return F.binary_cross_entropy(pred, target, weight=1 + (fn_weight - 1) * target)


#: The chapter's penalty as a spec: one per missed positive (a positive predicted below the threshold), summed.
MISSED = """
name = "missed_positives"
expr = "target * heaviside(threshold - p)"
reduction = "sum"

[symbols]
p         = { role = "input",  domain = "probability" }
target    = { role = "target", domain = "probability" }
threshold = { role = "param",  default = 0.5, domain = "probability" }
"""


def medical_spec(ratio: float = 0.1) -> lf.LossSpec:
    """The chapter's MedicalLoss as lossforge writes it: mean BCE + ratio * (count of missed positives)."""
    return lf.combine({"bce": (lf.builtin("bce"), 1.0), "missed": (lf.loads(MISSED), ratio)}, name="medical")


def main() -> None:
    medical = medical_spec()
    print("The MedicalLoss as a combine of bce (mean) and the missed-positive count (sum):")
    print(lf.check(medical))
    print()
    g = torch.Generator().manual_seed(0)
    pred = torch.rand(64, generator=g, dtype=torch.float64).requires_grad_()
    target = (torch.rand(64, generator=g, dtype=torch.float64) < 0.3).double()
    ours = lf.compile(medical, "torch")()
    value = ours(pred, target)
    (grad,) = torch.autograd.grad(value, pred)
    want = MedicalLoss()(pred, target)
    (want_grad,) = torch.autograd.grad(want, pred)
    # (the chapter counts in float32, mask.float(): 0.1 * count is 2e-8 from the float64 one)
    print(f"generated {value.item():.9f}, chapter's {want.item():.9f}; terms:",
          {k: round(v.item(), 6) for k, v in ours.terms(pred, target).items()})
    print("the gradient is the BCE's alone (the count adds none):",
          bool(torch.allclose(grad, want_grad, rtol=1e-12, atol=1e-15)))
    print()
    spec = lf.load(HERE / "cost_sensitive.toml")
    report = lf.verify(spec, against=MedicalLoss())
    print("MedicalLoss against the cost-sensitive spec:")
    print(report)
    print()
    fixed = lf.verify(spec, against=weighted_bce)
    print("Weighted BCE against the cost-sensitive spec:")
    print(fixed)
    assert not report.ok and fixed.ok
    assert abs(value.item() - want.item()) <= 1e-7 * want.item()


if __name__ == "__main__":
    main()
