"""An option left at its default costs nothing: what only one branch of a ``where`` on params alone uses is
computed only when that branch is taken (``render._in_branches``), in eager mode, and the loss is the same
under a compiler, where both branches run.

The operations a call runs are recorded with a ``TorchDispatchMode``; values are compared with torch's own
modules in float64 (1e-10: the same formula).
"""

from __future__ import annotations

import pytest
import sympy
import torch
from torch.utils._python_dispatch import TorchDispatchMode

import lossforge as lf
from lossforge.codegen import render
from lossforge.language import where

F = torch.nn.functional


class _Ops(TorchDispatchMode):
    """The names of the aten operations run inside it."""

    def __init__(self):
        super().__init__()
        self.names = set()
        self.calls = []  # (name, the shapes of its tensor arguments)

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        self.names.add(func.overloadpacket.__name__)
        self.calls.append((func.overloadpacket.__name__, [tuple(a.shape) for a in args if isinstance(a, torch.Tensor)]))
        return func(*args, **(kwargs or {}))


def _ops(module, *args):
    leaves = [a.clone().requires_grad_(i == 0) for i, a in enumerate(args)]
    with _Ops() as ops:
        value = module(*leaves)
        value.backward()
    return ops.names, value.detach(), leaves[0].grad


def test_poisson_nll_computes_stirlings_term_only_with_full():
    cls = lf.compile(lf.builtin("poisson_nll"), "torch")
    g = torch.Generator().manual_seed(0)
    pred, target = torch.randn(50, generator=g, dtype=torch.float64), 3 * torch.rand(50, generator=g, dtype=torch.float64)
    for full in (False, True):
        names, value, grad = _ops(cls(full=full), pred, target)
        # the comparison target <= 1 too: a condition is guarded as a value is
        assert ("xlogy" in names) is full and ("log" in names) is full and ("le" in names) is full, sorted(names)
        ref_pred = pred.clone().requires_grad_()
        ref = F.poisson_nll_loss(ref_pred, target, full=full)
        ref.backward()
        torch.testing.assert_close(value, ref.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, ref_pred.grad, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("p", [1, 2])
def test_multi_margin_raises_to_a_power_only_when_p_is_not_1(p):
    cls = lf.compile(lf.builtin("multi_margin"), "torch")
    g = torch.Generator().manual_seed(1)
    scores, target = torch.randn(20, 5, generator=g, dtype=torch.float64), torch.randint(0, 5, (20,), generator=g)
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], dtype=torch.float64)
    for kwargs in ({"p": p}, {"p": p, "weight": weight, "margin": 0.5}):
        names, value, grad = _ops(cls(**kwargs), scores, target)
        assert ("pow" in names) is (p == 2), sorted(names)
        ref_scores = scores.clone().requires_grad_()
        ref = torch.nn.MultiMarginLoss(**kwargs)(ref_scores, target)
        ref.backward()
        torch.testing.assert_close(value, ref.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(grad, ref_scores.grad, rtol=1e-10, atol=1e-12)
        compiled = torch.compile(cls(**kwargs), fullgraph=True, backend="aot_eager")  # both branches run there
        torch.testing.assert_close(compiled(scores, target), ref.detach(), rtol=1e-10, atol=1e-12)


def test_a_temporary_both_branches_use_stays_and_one_branchs_is_guarded():
    p, x = sympy.symbols("p x")
    t0, t1, t2 = sympy.symbols("_t0 _t1 _t2")
    cond = sympy.Eq(p, 1)
    replacements = [(t0, sympy.exp(x)), (t1, sympy.sin(x) * t0), (t2, sympy.log(x))]
    exprs = [where(cond, t0, t1) + t2, where(cond, 2 * t0, 3 * t1)]
    new, out = render._in_branches(replacements, exprs, frozenset({"x"}))
    assert out == exprs
    assert dict(new)[t0] == sympy.exp(x)  # both branches of p == 1 use it
    assert dict(new)[t1] == where(cond, 0, sympy.sin(x) * t0)  # only p != 1 does: computed there alone
    assert dict(new)[t2] == sympy.log(x)  # used outside any branch
    # a temporary inside a guarded one, used nowhere else, is guarded in turn; inside, the condition is known
    replacements = [(t0, sympy.exp(x)), (t1, where(cond, 5, t0 + 1))]
    new, _ = render._in_branches(replacements, [where(cond, x, t1)], frozenset({"x"}))
    assert dict(new)[t1] == where(cond, 0, t0 + 1) and dict(new)[t0] == where(cond, 0, sympy.exp(x))


def test_a_temporary_is_guarded_by_every_choice_its_uses_sit_in():
    """Two conditions on params: a temporary only the (p == 2, swap) branch uses is computed under both; a
    condition only one branch uses is false in the other; one that is another temporary once known is that one."""
    p, s, x = sympy.symbols("p s x")
    t0, t1, t2, t3 = sympy.symbols("_t0 _t1 _t2 _t3")
    two, swap = sympy.Eq(p, 2), s > 0
    replacements = [(t0, sympy.exp(x)), (t1, x > t0), (t2, where(two, t0, 1)), (t3, sympy.log(x))]
    exprs = [where(swap, where(two, where(t1, t2, 0), t3), t3)]
    new, out = render._in_branches(replacements, exprs, frozenset({"x"}))
    new = dict(new)
    assert new[t0] == where(sympy.And(two, swap), sympy.exp(x), 0)
    assert new[t1] == where(sympy.And(two, swap), x > t0, sympy.false)  # a condition: false when not taken
    assert t2 not in new and out == [where(swap, where(two, where(t1, t0, 0), t3), t3)]  # t2 is t0 there
    assert new[t3] == sympy.log(x)  # both sides of swap use it


@pytest.mark.parametrize("p, swap", [(2.0, False), (2.0, True), (3.0, False), (1.0, True)])
def test_triplet_computes_a_p_norm_and_the_swap_distance_only_when_asked(p, swap):
    """At p = 2 no power and no abs runs; without swap no minimum (the third distance is not computed). Under
    torch.compile(fullgraph=True), where p and swap are tensors and both branches run, torch's values still."""
    cls = lf.compile(lf.builtin("triplet"), "torch")
    g = torch.Generator().manual_seed(3)
    a, pos, n = (torch.randn(12, 5, generator=g, dtype=torch.float64) for _ in range(3))
    names, value, grad = _ops(cls(p=p, swap=swap), a, pos, n)
    assert ("abs" in names) is (p != 2), sorted(names)  # (torch.square runs as pow: abs marks a p-norm)
    assert ("minimum" in names) is swap, sorted(names)
    ref_a = a.clone().requires_grad_()
    ref = torch.nn.TripletMarginLoss(p=p, swap=swap)(ref_a, pos, n)
    ref.backward()
    torch.testing.assert_close(value, ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(grad, ref_a.grad, rtol=1e-10, atol=1e-12)
    compiled = torch.compile(cls(p=p, swap=swap), fullgraph=True, backend="aot_eager")
    leaf = a.clone().requires_grad_()
    out = compiled(leaf, pos, n)
    out.backward()
    torch.testing.assert_close(out.detach(), ref.detach(), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref_a.grad, rtol=1e-10, atol=1e-12)


def test_cross_entropy_at_its_defaults_takes_no_mean_and_no_subtraction_over_the_logits():
    """Split on label_smoothing > 0 at the top, the default branch is logsumexp, the gathered logit, softmax and
    the scatter of -1: no mean over the classes, no subtraction of 0/C, no multiplication by 1."""
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    g = torch.Generator().manual_seed(2)
    logits, target = torch.randn(30, 7, generator=g, dtype=torch.float64), torch.randint(0, 7, (30,), generator=g)
    for smoothing in (0.0, 0.1):
        with _Ops() as ops:
            leaf = logits.clone().requires_grad_()
            value = cls(label_smoothing=smoothing)(leaf, target)
            value.backward()
        # (a mean over the classes: the batch's own mean is the reduction, where no sample is ignored)
        assert any(name == "mean" and (30, 7) in shapes for name, shapes in ops.calls) is (smoothing > 0), ops.calls
        # the value and the softmax from one log_softmax (torch's forms); a logsumexp at most for the smoothing term
        # (the cancelled-terms form writes that term from the log_softmax already computed)
        assert "_log_softmax" in ops.names and (smoothing > 0 or "logsumexp" not in ops.names), sorted(ops.names)
        over_logits = [name for name, shapes in ops.calls if name in ("sub", "add", "mul") and (30, 7) in shapes]
        # at the default, the elementwise passes over the logits are the gradient's reduction factor (1/n) in the
        # forward and backward's upstream gradient (a batch this small is multiplied: reading the upstream
        # gradient on the host costs more); smoothing costs more (the softmax less smoothing/C, at least)
        assert over_logits == ["mul", "mul"] if smoothing == 0 else len(over_logits) > 2, ops.calls
        ref = logits.clone().requires_grad_()
        F.cross_entropy(ref, target, label_smoothing=smoothing).backward()
        torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-10, atol=1e-12)


def test_cross_entropy_at_huge_logits_is_exact_in_both_targets():
    """-log_softmax picked at the class index, and its exp as the softmax: exact where logits are 1e8 apart from
    their maximum by little (the shift comes first, as torch's log_softmax), in float64 at 1e-12."""
    logits = torch.tensor([[1e8, 1e8 + 1.0, 1e8 - 2.0], [-5.0, 0.0, 30.0]], dtype=torch.float64)
    target = torch.tensor([0, 1])
    ref = logits.clone().requires_grad_()
    want = F.cross_entropy(ref, target, reduction="sum")
    want.backward()
    leaf = logits.clone().requires_grad_()
    value = lf.compile(lf.builtin("cross_entropy"), "torch")(reduction="sum")(leaf, target)
    value.backward()
    torch.testing.assert_close(value, want, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-12, atol=1e-14)
    numpy_value, (numpy_grad,) = lf.compile(lf.builtin("cross_entropy"), "numpy").loss_and_grad(
        logits.numpy(), target.numpy(), reduction="sum")
    assert abs(numpy_value - want.item()) <= 1e-12 * abs(want.item())
    torch.testing.assert_close(torch.as_tensor(numpy_grad), ref.grad, rtol=1e-12, atol=1e-14)


def test_cross_entropy_with_no_sample_ignored_runs_without_a_mask():
    """Eagerly on the CPU the class-index range check reads the least and greatest index: where ignore_index is
    outside them (torch's -100) no sample is left out, and no mask is made or applied (no ``ne``, no ``where``);
    where it is among them the mask runs, and both match torch."""
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    g = torch.Generator().manual_seed(3)
    logits, target = torch.randn(30, 7, generator=g, dtype=torch.float64), torch.randint(0, 7, (30,), generator=g)
    for ignore in (-100, 7, int(target[0])):
        with _Ops() as ops:
            leaf = logits.clone().requires_grad_()
            value = cls(ignore_index=ignore)(leaf, target)
            value.backward()
        masked = ignore == int(target[0])
        assert ("ne" in ops.names) is masked and ("where" in ops.names) is masked, sorted(ops.names)
        ref = logits.clone().requires_grad_()
        expected = F.cross_entropy(ref, target, ignore_index=ignore)
        expected.backward()
        torch.testing.assert_close(value.detach(), expected.detach(), rtol=1e-10, atol=1e-12)
        torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-10, atol=1e-12)
    with pytest.raises(ValueError, match=r"class index out of range \[0, 7\), got -1"):
        cls()(logits, torch.full((30,), -1))  # not ignored (-100 is): still refused, from the same bounds


def test_bce_gradient_takes_its_clamp_indicators_as_numbers():
    """``where(inside, 1, 0)`` is printed as the condition converted to the dtype: one kernel, no fill."""
    cls = lf.compile(lf.builtin("bce"), "torch")
    g = torch.Generator().manual_seed(4)
    p, t = torch.rand(40, generator=g, dtype=torch.float64), torch.rand(40, generator=g, dtype=torch.float64)
    names, value, grad = _ops(cls(), p, t)
    assert "where" not in names and "full" not in names, sorted(names)
    ref = p.clone().requires_grad_()
    F.binary_cross_entropy(ref, t).backward()
    torch.testing.assert_close(grad, ref.grad, rtol=1e-10, atol=1e-12)


def test_a_shared_constant_is_never_handed_out():
    """Constants are filled once per value, dtype and device and shared between calls; a loss that is one of them
    (here 1, the branch k > 0 does not take) returns a copy, so that writing to it changes no later call."""
    spec = lf.LossSpec(name="flat", expr="where(k > 0, (pred - target)**2, 1)", reduction="none",
                       symbols={"pred": lf.Var("input"), "target": lf.Var("target"), "k": lf.Var("param", default=0.0)})
    loss = lf.compile(spec, "torch")(reduction="none")
    pred, target = torch.zeros(1, requires_grad=True), torch.zeros(1)
    first = loss(pred, target)
    with torch.no_grad():
        first.mul_(5)
    assert loss(pred, target).tolist() == [1.0] and first.tolist() == [5.0]
