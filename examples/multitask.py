"""Multi-task loss: total = 1.0 * classification + 0.5 * box regression.

Two built-ins are combined with `lf.combine`; the box term's symbols are
renamed so they do not collide with the classifier's target. The generated
module returns the weighted total, its gradients, and each term's value for
logging.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

import lossforge as lf


def main() -> None:
    spec = lf.combine(
        {
            "cls": (lf.builtin("cross_entropy"), 1.0),
            "box": (lf.builtin("huber").rename(pred="box_pred", target="box_target"), 0.5),
        },
        name="detection",
    )
    print("arguments:", ", ".join(spec.arrays), "| params:", ", ".join(spec.params))
    print(lf.check(spec))
    Loss = lf.compile(spec, "torch")
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(8, 5, generator=g, requires_grad=True)
    labels = torch.randint(0, 5, (8,), generator=g)
    boxes = torch.randn(8, 4, generator=g, requires_grad=True)
    box_targets = torch.randn(8, 4, generator=g)
    criterion = Loss()
    total = criterion(logits, labels, boxes, box_targets)
    total.backward()
    want = F.cross_entropy(logits, labels) + 0.5 * F.huber_loss(boxes, box_targets)
    print(f"total {total.item():.6f} (torch: {want.item():.6f})")
    print("terms:", {k: round(v.item(), 6) for k, v in criterion.terms(logits, labels, boxes, box_targets).items()})
    assert abs(total.item() - want.item()) < 1e-5


if __name__ == "__main__":
    main()
