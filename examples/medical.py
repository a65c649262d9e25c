"""The chapter's medical cost-sensitive loss, end to end.

The chapter's `MedicalLoss` adds a penalty `mask.float().sum() * ratio` for
missed positives to a BCE. The penalty changes the value but has no gradient,
so training never sees it. lossforge finds that twice: `lf.check` reports the
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


def main() -> None:
    spec = lf.load(HERE / "cost_sensitive.toml")
    penalty = lf.loads(
        """
name = "medical_penalty"
expr = "-(y*log(clamp(p, 1e-7, 1 - 1e-7)) + (1 - y)*log(clamp(1 - p, 1e-7, 1))) + 0.1*y*heaviside(0.5 - p)"
[symbols]
p = { role = "input", domain = "probability" }
y = { role = "target", domain = "binary" }
"""
    )
    print("The MedicalLoss penalty, written as a spec:")
    print(lf.check(penalty))
    print()
    report = lf.verify(spec, against=MedicalLoss())
    print("MedicalLoss against the cost-sensitive spec:")
    print(report)
    print()
    fixed = lf.verify(spec, against=weighted_bce)
    print("Weighted BCE against the cost-sensitive spec:")
    print(fixed)
    assert not report.ok and fixed.ok


if __name__ == "__main__":
    main()
