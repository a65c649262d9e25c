"""``norm(e, p)``: the p-norm over an axis, for an order of numbers and params alone.

Checked against ``torch.linalg.vector_norm`` (values and gradients, float64 at 1e-10: the same formula in
another order of operations) in both targets, against the 30-digit evaluation through ``verify``, and in the
parser, the spec rules, the interval analysis and the hazard rules that read it.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy
import torch

import lossforge as lf
from lossforge import language as E
from lossforge.analysis import intervals
from lossforge.errors import ParseError, SpecError


def _spec(expr="norm(x - y, p)", p=None, **extra):
    symbols = {"x": {"role": "input", "axis": "f"}, "y": {"role": "target", "axis": "f"},
               "p": p or {"role": "param", "default": 3.0, "domain": "[1, 8]"}, **extra}
    return lf.LossSpec(name="pnorm", expr=expr, symbols=symbols, reduction="sum")


def test_norm_of_order_2_is_the_euclidean_norm_and_an_order_is_kept():
    x = sympy.Symbol("x")
    assert E.parse("norm(x, 2)", {"x": x}, {"x": "f"}) == E.norm(x)
    p = sympy.Symbol("p")
    node = E.parse("norm(x, p)", {"x": x, "p": p}, {"x": "f"})
    assert node.args == (x, p) and node.order == p and E.norm(x).order == 2
    assert E.to_text(node) == "norm(x, p)"


@pytest.mark.parametrize("text, token, message", [
    ("norm(x - y, p, p)", "norm", "takes 1 or 2 arguments, got 3"),
    ("norm(x - y, x)", "x", "must be a number or a param, not a vector"),
])
def test_a_wrong_call_is_refused_naming_the_token(text, token, message):
    with pytest.raises(ParseError) as info:
        _spec(text)
    assert info.value.token == token and message in str(info.value)


def test_an_order_must_be_an_option_not_an_input_or_a_learnable_param():
    with pytest.raises(SpecError) as info:
        _spec("norm(x - y, s)", s={"role": "input"}, p={"role": "param", "default": 2.0})
    assert info.value.token == "s" and "an order is an option" in str(info.value)
    with pytest.raises(SpecError) as info:
        _spec(p={"role": "param", "default": 2.0, "learnable": True})
    assert info.value.token == "p" and "learnable" in str(info.value)


@pytest.mark.parametrize("p", [1.0, 1.5, 2.0, 3.0, 7.0])
def test_both_targets_give_torchs_vector_norm_and_its_gradient(p):
    spec = _spec()
    g = torch.Generator().manual_seed(int(p * 10))
    x, y = torch.randn(6, 5, generator=g, dtype=torch.float64), torch.randn(6, 5, generator=g, dtype=torch.float64)
    leaf = x.clone().requires_grad_()
    ours = lf.compile(spec, "torch")(reduction="sum", p=p)(leaf, y)
    ours.backward()
    ref_leaf = x.clone().requires_grad_()
    ref = torch.linalg.vector_norm(ref_leaf - y, ord=p, dim=-1).sum()
    ref.backward()
    torch.testing.assert_close(ours.detach(), ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_leaf.grad, rtol=1e-10, atol=1e-12)
    value, (grad,) = lf.compile(spec, "numpy").loss_and_grad(x.numpy(), y.numpy(), reduction="sum", p=p)
    np.testing.assert_allclose(value, ref.item(), rtol=1e-10)
    np.testing.assert_allclose(grad, ref_leaf.grad.numpy(), rtol=1e-10, atol=1e-12)


def test_verify_checks_a_p_norm_against_the_30_digit_reference():
    spec = _spec("norm(x - y + 1e-6, p)")  # the eps keeps the zero vector out (sqrt-at-zero otherwise)
    assert lf.verify(spec).ok


def test_intervals_bound_a_p_norm_between_the_largest_entry_and_n_to_the_1_over_p_times_it():
    x = sympy.Symbol("x")
    p = sympy.Symbol("p")
    b = intervals.Bounds({x: intervals.Bound(1.0, 3.0, True), p: intervals.Bound(2.0, 4.0)})
    bound = b(E.norm(x, p))
    assert bound.lo == 1.0 and bound.hi == pytest.approx(3.0 * intervals.AXIS_MAX ** 0.5) and bound.positive
    # its powers underflow in float32 as a product does: 1e-12**4 is 0
    small = intervals.Bounds({x: intervals.Bound(1e-12, 1e-11, True), p: intervals.Bound(2.0, 4.0)})
    assert small(E.norm(x, p)).reaches_zero
    below_one = intervals.Bounds({x: intervals.Bound(1.0, 3.0, True), p: intervals.Bound(0.5, 4.0)})
    assert below_one(E.norm(x, p)).hi == intervals.INF


def test_a_p_norm_that_can_be_the_zero_vector_is_sqrt_at_zero_with_a_fix_that_keeps_its_order():
    report = lf.check(_spec())
    found = [h for h in report.hazards if h.kind == "sqrt-at-zero"]
    assert found and all(h.fix is not None and ", p)" in E.to_text(h.fix.replacement) for h in found)
    assert not [h for h in report.hazards if h.kind in ("pow-domain", "division-by-zero")]  # reported once
