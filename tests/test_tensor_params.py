"""Tensor params: a param declared ``tensor = true`` may be an array that broadcasts to the batch.

Checked against torch's own weighted losses (``F.binary_cross_entropy_with_logits`` with
``weight`` and ``pos_weight``) and against the written formula under autograd, in both
targets, float64 (1e-12 relative: the same operations, in another order) and float32
(1e-5: a few roundings of float32).
"""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

import lossforge as lf

F = torch.nn.functional
TOL = {torch.float64: 1e-12, torch.float32: 1e-5}

WEIGHTED_BCE = lf.LossSpec(
    name="weighted_bce_logits",
    expr="weight * (pos_weight * target * softplus(-logits) + (1 - target) * softplus(logits))",
    symbols={
        "logits": lf.Var("input"),
        "target": lf.Var("target", domain="probability"),
        "pos_weight": lf.Var("param", default=1.0, domain="positive", tensor=True),
        "weight": lf.Var("param", default=1.0, domain="nonnegative", tensor=True),
    },
)


def _close(a, b, dtype=torch.float64):
    a, b = (torch.as_tensor(v, dtype=torch.float64) for v in (a, b))
    assert a.shape == b.shape, (a.shape, b.shape)
    torch.testing.assert_close(a, b, rtol=TOL[dtype], atol=TOL[dtype])


def _data(dtype, shape=(6, 3)):
    g = torch.Generator().manual_seed(0)
    x = (torch.randn(shape, generator=g, dtype=torch.float64) * 3).to(dtype)
    t = torch.rand(shape, generator=g, dtype=torch.float64).to(dtype)
    return x, t


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shapes", [((3,), (6, 1)), ((3,), (6, 3)), ((1, 3), (3,)), ((), ()), (None, (6, 3))],
                         ids=["pos_C-weight_N1", "pos_C-weight_NC", "pos_1C-weight_C", "0d", "pos_float"])
def test_tensor_params_match_torchs_weighted_bce_with_logits(shapes, reduction, dtype):
    x, t = _data(dtype)
    g = torch.Generator().manual_seed(1)
    pos_shape, weight_shape = shapes
    pos = 2.5 if pos_shape is None else 0.25 + 3 * torch.rand(pos_shape, generator=g, dtype=torch.float64)
    weight = torch.rand(weight_shape, generator=g, dtype=torch.float64)
    loss = lf.compile(WEIGHTED_BCE, "torch")(reduction=reduction, pos_weight=pos, weight=weight)
    leaf, ref_leaf = x.clone().requires_grad_(), x.clone().requires_grad_()
    value = loss(leaf, t)
    ref = F.binary_cross_entropy_with_logits(ref_leaf, t, weight=weight.to(dtype), reduction=reduction,
                                             pos_weight=torch.as_tensor(pos, dtype=dtype))
    assert value.dtype == dtype
    _close(value.detach(), ref.detach(), dtype)
    upstream = torch.rand(value.shape, generator=g, dtype=torch.float64).to(dtype)
    (got,) = torch.autograd.grad((value * upstream).sum(), leaf)
    (want,) = torch.autograd.grad((ref * upstream).sum(), ref_leaf)
    _close(got, want, dtype)
    # NumPy: the same values and gradients in float64
    module = lf.compile(WEIGHTED_BCE, "numpy")
    pos_np = pos if isinstance(pos, float) else pos.numpy()
    x64, t64 = x.double().numpy(), t.double().numpy()
    total, (grad,) = module.loss_and_grad(x64, t64, reduction=reduction, pos_weight=pos_np, weight=weight.numpy())
    leaf64 = torch.tensor(x64, requires_grad=True)
    ref64 = F.binary_cross_entropy_with_logits(leaf64, torch.tensor(t64), weight=weight, reduction=reduction,
                                               pos_weight=torch.as_tensor(pos, dtype=torch.float64))
    (ref64 * upstream.double()).sum().backward() if reduction == "none" else ref64.backward()
    _close(total, ref64.detach())
    _close(module.loss(x64, t64, reduction, pos_np, weight.numpy()), ref64.detach())
    # loss_and_grad with "none" returns the gradient of the sum of the losses
    if reduction == "none":
        ones = torch.tensor(x64, requires_grad=True)
        F.binary_cross_entropy_with_logits(ones, torch.tensor(t64), weight=weight, reduction="sum",
                                           pos_weight=torch.as_tensor(pos, dtype=torch.float64)).backward()
        _close(grad, ones.grad)
    else:
        _close(grad, leaf64.grad)


def test_a_tensor_param_is_module_state_and_runs_under_compile_fused_and_torch_func():
    x, t = _data(torch.float32)
    pos = torch.tensor([0.5, 2.0, 3.0], dtype=torch.float64)
    cls = lf.compile(WEIGHTED_BCE, "torch")
    loss = cls(pos_weight=pos)
    assert list(loss.state_dict()) == ["pos_weight"]  # weight absent: None, as torch's own buffers
    assert loss.pos_weight.shape == (3,) and loss.pos_weight.dtype == torch.float64
    assert loss.pos_weight is not pos  # a copy: the caller's tensor may change later
    assert "pos_weight=<tensor of shape (3,)>" in repr(loss) and "weight=None" in repr(loss)
    want = F.binary_cross_entropy_with_logits(x, t, pos_weight=pos.float())
    _close(loss(x, t), want, torch.float32)
    leaf = x.clone().requires_grad_()
    torch.compile(loss, fullgraph=True, backend="aot_eager")(leaf, t).backward()
    ref_leaf = x.clone().requires_grad_()
    F.binary_cross_entropy_with_logits(ref_leaf, t, pos_weight=pos.float()).backward()
    _close(leaf.grad, ref_leaf.grad, torch.float32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # compiled, not the eager fallback (which warns so)
        fused = cls(pos_weight=pos, fused=True)(x, t)
    _close(fused, want, torch.float32)
    grad = torch.func.grad(lambda z: loss(z, t))(x)
    _close(grad, ref_leaf.grad, torch.float32)
    per_row = torch.func.vmap(lambda z, y: loss(z, y))(x, t)  # each row its own batch of 3: pos_weight broadcasts
    _close(per_row, torch.stack([F.binary_cross_entropy_with_logits(a, b, pos_weight=pos.float())
                                 for a, b in zip(x, t)]), torch.float32)


def test_a_tensor_param_that_does_not_broadcast_to_the_batch_is_refused_by_name():
    x, t = _data(torch.float64)
    for bad in (torch.ones(4), torch.ones(2, 6, 3), torch.ones(6, 2)):
        with pytest.raises(ValueError, match=r"pos_weight has shape .* which does not broadcast to the shape "
                                             r"\(6, 3\)"):
            lf.compile(WEIGHTED_BCE, "torch")(pos_weight=bad)(x, t)
        with pytest.raises(ValueError, match=r"pos_weight has shape"):
            lf.compile(WEIGHTED_BCE, "numpy").loss(x.numpy(), t.numpy(), pos_weight=bad.numpy())


def test_a_tensor_param_is_checked_element_by_element_under_validate():
    x, t = _data(torch.float64)
    bad = torch.tensor([1.0, -0.5, 2.0])
    with pytest.raises(ValueError, match=r"pos_weight\[1\] = -0.5 is outside its domain"):
        lf.compile(WEIGHTED_BCE, "torch")(pos_weight=bad, validate=True)
    assert torch.isfinite(lf.compile(WEIGHTED_BCE, "torch")(pos_weight=bad)(x, t))  # not checked without validate
    with pytest.raises(ValueError, match=r"weight\[2, 0\] = nan is outside its domain"):
        weight = torch.ones(6, 1)
        weight[2, 0] = float("nan")
        lf.compile(WEIGHTED_BCE, "numpy").loss(x.numpy(), t.numpy(), weight=weight.numpy(), validate=True)


def test_tensor_params_in_a_loss_over_an_axis_and_in_a_condition():
    # A per-sample weight (shape (N,)) on a loss over the class axis: the weight gets the axis as a unit.
    spec = lf.LossSpec(
        name="weighted_soft_ce",
        expr="w * (logsumexp(z) - sum(t * z)) + where(w > 0.5, 0.1 * sum(z**2), 0)",
        symbols={"z": lf.Var("input", axis="class"), "t": lf.Var("target", domain="simplex", axis="class"),
                 "w": lf.Var("param", default=1.0, domain="nonnegative", tensor=True)},
    )
    g = torch.Generator().manual_seed(2)
    z = torch.randn(5, 4, generator=g, dtype=torch.float64)
    t = torch.softmax(torch.randn(5, 4, generator=g, dtype=torch.float64), -1)
    w = torch.tensor([0.0, 0.25, 0.75, 1.0, 2.0], dtype=torch.float64)

    def reference(z):
        per_sample = w * (torch.logsumexp(z, -1) - (t * z).sum(-1)) + torch.where(w > 0.5, 0.1 * (z**2).sum(-1), 0.0)
        return per_sample.mean()

    leaf, ref_leaf = z.clone().requires_grad_(), z.clone().requires_grad_()
    value = lf.compile(spec, "torch")(w=w)(leaf, t)
    value.backward()
    ref = reference(ref_leaf)
    ref.backward()
    _close(value.detach(), ref.detach())
    _close(leaf.grad, ref_leaf.grad)
    total, (grad,) = lf.compile(spec, "numpy").loss_and_grad(z.numpy(), t.numpy(), w=w.numpy())
    _close(total, ref.detach())
    _close(grad, ref_leaf.grad)


def test_tensor_is_declared_on_params_only_and_round_trips_through_toml():
    with pytest.raises(lf.RoleError, match=r"only a param is declared tensor, not an input"):
        lf.Var("input", tensor=True)
    with pytest.raises(lf.RoleError, match=r"declare it learnable or tensor, not both"):
        lf.Var("param", default=1.0, learnable=True, tensor=True)
    with pytest.raises(lf.SpecError, match=r"tensor must be true or false"):
        lf.Var("param", default=1.0, tensor="yes")
    text = lf.dumps(WEIGHTED_BCE)
    assert 'pos_weight = { role = "param", default = 1.0, domain = "positive", tensor = true }' in text
    assert lf.loads(text) == WEIGHTED_BCE
    assert lf.loads(text.replace(", tensor = true", "")) != WEIGHTED_BCE  # part of the spec's identity
    docs = " ".join(lf.compile(WEIGHTED_BCE, "torch").__doc__.split())  # its lines wrapped within 88 columns
    assert "pos_weight (float or Tensor, optional): domain positive, each element; it broadcasts to the batch" in docs
    assert "Default: ``None`` (absent: as 1.0, with no operation for it in the code)" in docs
    assert "(float or array, optional)" in lf.compile(WEIGHTED_BCE, "numpy").__doc__
    np.testing.assert_allclose(lf.compile(WEIGHTED_BCE, "numpy").loss(np.zeros(3), np.ones(3)), np.log(2.0))


def test_absent_tensor_params_are_folded_into_the_code():
    # weight=None (torch's default) runs functions with the default folded in: no multiplication by 1.
    x, t = _data(torch.float64)
    cls = lf.compile(WEIGHTED_BCE, "torch")
    absent, ones = cls(), cls(pos_weight=1.0, weight=torch.ones(6, 3))
    assert list(absent.state_dict()) == [] and absent.weight is None
    leaves = [x.clone().requires_grad_() for _ in range(3)]
    values = [absent(leaves[0], t), ones(leaves[1], t),
              F.binary_cross_entropy_with_logits(leaves[2], t)]
    for v in values:
        v.backward()
    for v, leaf in zip(values, leaves):
        _close(v.detach(), values[2].detach())
        _close(leaf.grad, leaves[2].grad)
    _close(cls(weight=torch.full((6, 1), 0.5))(x, t), 0.5 * values[2].detach())  # one given, one absent
    source = lf.generate(WEIGHTED_BCE, "torch")
    folded = source[source.index("def _weighted_bce_logits_folded_value("):
                    source.index("def _weighted_bce_logits_targeted_value(")]
    assert "weight*" not in folded.replace("pos_weight", "")  # neither param is read where both are absent
    assert '("weighted_bce_logits", False, pos_weight is None and weight is None, targeted)' in source
    module = lf.compile(WEIGHTED_BCE, "numpy")
    np.testing.assert_allclose(module.loss(x.numpy(), t.numpy()), values[2].item(), rtol=1e-12)
    np.testing.assert_allclose(module.loss(x.numpy(), t.numpy(), weight=np.full(3, 2.0)), 2 * values[2].item(),
                               rtol=1e-12)
    with pytest.raises(ValueError, match=r"weight\[0\] = -1.0"):
        module.loss(x.numpy(), t.numpy(), weight=np.full(3, -1.0), validate=True)
