"""A user's own focal-loss variant: separate focusing for positives and negatives.

Asymmetric focal loss (as used for multi-label classification) focuses hard
negatives with gamma_neg and positives with gamma_pos. Written as a spec from
logits, it is checked, verified and generated like a built-in.
"""

from __future__ import annotations

import torch

import lossforge as lf

SPEC = """
name = "asymmetric_focal"
description = "Focal loss with separate focusing exponents for positives and negatives."
expr = "y*sigmoid(-x)**gamma_pos*softplus(-x) + (1 - y)*sigmoid(x)**gamma_neg*softplus(x)"
reduction = "mean"

[symbols]
x         = { role = "input" }
y         = { role = "target", domain = "probability" }
gamma_pos = { role = "param", default = 1.0, domain = "[1, 10]" }
gamma_neg = { role = "param", default = 4.0, domain = "[1, 10]" }
"""


def reference(x, y, gamma_pos=1.0, gamma_neg=4.0):
    """The same loss written naively in torch, for comparison."""
    p = torch.sigmoid(x)
    return (-(y * (1 - p) ** gamma_pos * torch.log(p) + (1 - y) * p**gamma_neg * torch.log(1 - p))).mean()


def main() -> None:
    spec = lf.loads(SPEC)
    print(lf.check(spec))
    print(lf.verify(spec))
    print(lf.verify(spec, against=reference))
    x = torch.tensor([-1000.0, -30.0, 0.0, 30.0, 1000.0], requires_grad=True)
    y = torch.tensor([1.0, 1.0, 0.0, 0.0, 1.0])
    value = lf.compile(spec, "torch")()(x, y)
    value.backward()
    naive = reference(x.detach().requires_grad_(), y)
    print(f"lossforge at logits of +-1000: {value.item():.6g}, gradient finite: {bool(torch.isfinite(x.grad).all())}")
    print(f"naive torch at the same points: {naive.item()}")
    assert torch.isfinite(value) and torch.isfinite(x.grad).all()


if __name__ == "__main__":
    main()
