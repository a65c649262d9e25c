"""CrossEntropyLoss and NLLLoss as torch builds them (issue 13): per-class ``weight``, ``ignore_index``,
torch's ``(N, C, d1, ...)`` layout, and the spec language that expresses them (``dim``, ``ignore_index``,
``mean_weight``, a tensor param on an axis).

Compared with ``torch.nn.CrossEntropyLoss`` / ``NLLLoss`` on values and input gradients, every combination of
weight, ignore_index, label smoothing, reduction and layout; in float64 at 1e-10 (the same sums in another
order) and float32 at 2e-5 (losses of order 1, a few roundings); the NumPy target against torch in float64.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest
import torch

import lossforge as lf

F = torch.nn.functional
TOL = {torch.float64: 1e-10, torch.float32: 2e-5}
C = 5
SHAPES = {"(N, C)": ((7, C), (7,)), "(C,)": ((C,), ()), "(N, C, d1, d2)": ((3, C, 4, 2), (3, 4, 2))}


def _case(shape, dtype, seed=0):
    g = torch.Generator().manual_seed(seed)
    logits_shape, index_shape = SHAPES[shape]
    x = 3 * torch.randn(*logits_shape, generator=g, dtype=dtype)
    y = torch.randint(0, C, index_shape, generator=g)
    if y.numel() > 2:
        y.view(-1)[1] = 2  # at least one sample of class 2, for ignore_index=2
    return x, y


def _grad(module, x, y):
    x = x.clone().requires_grad_()
    value = module(x, y)
    upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(3), dtype=value.dtype)
    (grad,) = torch.autograd.grad((value * upstream).sum(), x)
    return value.detach(), grad


def _compare(ours, theirs, x, y, dtype, where):
    (mine, gmine), (ref, gref) = _grad(ours, x, y), _grad(theirs, x, y)
    assert mine.shape == ref.shape and mine.dtype == dtype, where
    torch.testing.assert_close(mine, ref, rtol=TOL[dtype], atol=TOL[dtype], equal_nan=True, msg=where)
    torch.testing.assert_close(gmine, gref, rtol=TOL[dtype], atol=TOL[dtype], msg=where)


OPTIONS = list(itertools.product(["mean", "sum", "none"], [False, True], [-100, 2]))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_class_indices_with_weight_and_ignore_index_match_torch(name, shape, dtype):
    cls = lf.compile(lf.builtin(name), "torch")
    torchs = torch.nn.CrossEntropyLoss if name == "cross_entropy" else torch.nn.NLLLoss
    x, y = _case(shape, dtype)
    if name == "nll":
        x = x.log_softmax(1 if x.ndim > 1 else 0)
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], dtype=dtype)
    for reduction, weighted, ignore in OPTIONS:
        for smoothing in ([0.0, 0.2] if name == "cross_entropy" else [0.0]):
            kwargs = {"weight": weight if weighted else None, "ignore_index": ignore, "reduction": reduction}
            kwargs |= {"label_smoothing": smoothing} if smoothing else {}
            where = f"{name} {shape} {kwargs}"
            _compare(cls(**kwargs), torchs(**kwargs), x, y, dtype, where)
            # positionally, in torch's order: weight, size_average, ignore_index, reduce, reduction
            _compare(cls(kwargs["weight"], None, ignore, None, reduction, *([smoothing] if smoothing else [])),
                     torchs(**kwargs), x, y, dtype, where + " positional")


@pytest.mark.parametrize("shape", list(SHAPES))
@pytest.mark.parametrize("name", ["cross_entropy", "nll"])
def test_numpy_target_matches_torch_with_weight_and_ignore_index(name, shape):
    mod = lf.compile(lf.builtin(name), "numpy")
    x, y = _case(shape, torch.float64, seed=1)
    if name == "nll":
        x = x.log_softmax(1 if x.ndim > 1 else 0)
    weight = np.array([0.5, 1.0, 2.0, 3.0, 0.25])
    for reduction, weighted, ignore in OPTIONS:
        kwargs = {"weight": weight if weighted else None, "ignore_index": ignore}
        ref_x = x.clone().requires_grad_()
        ref = getattr(F, "cross_entropy" if name == "cross_entropy" else "nll_loss")(
            ref_x, y, weight=torch.as_tensor(weight) if weighted else None, ignore_index=ignore, reduction=reduction)
        ref.sum().backward()
        value, (grad,) = mod.loss_and_grad(x.numpy(), y.numpy(), reduction=reduction, **kwargs)
        np.testing.assert_allclose(value, ref.detach().numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(grad, ref_x.grad.numpy(), rtol=1e-10, atol=1e-12)
        np.testing.assert_allclose(mod.loss(x.numpy(), y.numpy(), reduction=reduction, **kwargs), value, rtol=1e-12)


def test_class_probabilities_in_torchs_layout_match_torch():
    """Soft targets of shape (N, C, d1): weighted per class, the mean over samples (torch's rule for them)."""
    g = torch.Generator().manual_seed(5)
    x = torch.randn(4, C, 3, generator=g, dtype=torch.float64)
    target = torch.softmax(torch.randn(4, C, 3, generator=g, dtype=torch.float64), 1)
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], dtype=torch.float64)
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    for reduction in ("mean", "sum", "none"):
        kwargs = {"weight": weight, "label_smoothing": 0.1, "reduction": reduction}
        _compare(cls(**kwargs), torch.nn.CrossEntropyLoss(**kwargs), x, target, torch.float64, str(kwargs))


def test_every_sample_ignored_gives_torchs_nan_mean_and_zero_gradient():
    x = torch.randn(4, C, dtype=torch.float64, requires_grad=True)
    y = torch.full((4,), -100)
    for module in (lf.compile(lf.builtin("cross_entropy"), "torch")(),
                   lf.compile(lf.builtin("cross_entropy"), "torch")(weight=torch.ones(C, dtype=torch.float64))):
        value = module(x, y)
        assert torch.isnan(value) and torch.isnan(F.cross_entropy(x, y))
        (grad,) = torch.autograd.grad(value, x)
        assert torch.equal(grad.abs(), torch.zeros_like(grad))
        assert module.__class__(reduction="sum")(x, y).item() == 0.0


def test_weight_and_ignore_index_under_compile_fused_and_torch_func():
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], dtype=torch.float64)
    x, y = _case("(N, C, d1, d2)", torch.float64, seed=2)
    y.view(-1)[0] = -1
    ref = F.cross_entropy(x, y, weight=weight, ignore_index=-1, label_smoothing=0.1)
    module = cls(weight, ignore_index=-1, label_smoothing=0.1)
    compiled = torch.compile(module, fullgraph=True, backend="aot_eager")
    fused = cls(weight, ignore_index=-1, label_smoothing=0.1, fused=True)
    for each in (module, compiled, fused):
        _compare(each, lambda a, b: F.cross_entropy(a, b, weight=weight, ignore_index=-1, label_smoothing=0.1),
                 x, y, torch.float64, repr(each))
    grad = torch.func.grad(lambda z: module(z, y))(x)
    torch.testing.assert_close(grad, torch.autograd.grad(F.cross_entropy(
        x.requires_grad_(), y, weight=weight, ignore_index=-1, label_smoothing=0.1), x)[0], rtol=1e-10, atol=1e-12)
    batch = torch.stack([x.detach(), 2 * x.detach()])
    torch.testing.assert_close(torch.func.vmap(lambda z: module(z, y))(batch), torch.stack(
        [ref.detach(), F.cross_entropy(2 * x.detach(), y, weight=weight, ignore_index=-1, label_smoothing=0.1)]))


def test_the_weight_is_module_state_and_a_wrong_length_is_named():
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25])
    module = cls(weight)
    assert torch.equal(module.state_dict()["weight"], weight.double()) and "weight" not in cls().state_dict()
    x, y = _case("(N, C)", torch.float32)
    assert module.to(torch.float64).weight.dtype == torch.float64
    torch.testing.assert_close(module(x, y), F.cross_entropy(x, y, weight=weight), rtol=2e-5, atol=2e-5)
    with pytest.raises(ValueError, match=r"weight has shape \(4,\): one value per class needs 5 entries"):
        cls(torch.ones(4))(x, y)
    with pytest.raises(ValueError, match=r"weight\[2\] = -1\.0 is outside its domain"):
        cls(torch.tensor([1.0, 1.0, -1.0, 1.0, 1.0]), validate=True)(x, y)
    with pytest.raises(ValueError, match=r"target: class index out of range"):
        cls(ignore_index=0)(x, torch.full((7,), -100))  # -100 is not ignored here
    # one number for every class: the same loss as no weight, and a weighted mean that divides by it too
    torch.testing.assert_close(cls(torch.tensor(2.0))(x, y), F.cross_entropy(x, y))


def _spec(target, **extra):
    symbols = {"z": lf.Var("input", axis="k"), "t": lf.Var("target", domain="onehot", axis="k", **target),
               "ignore": lf.Var("param", default=-1), "w": lf.Var("param", default=1.0, tensor=True, axis="k")}
    return lf.LossSpec(name="mine", expr="sum(w * t * (logsumexp(z) - z))", symbols=symbols | extra)


def test_a_users_spec_declares_them_and_they_round_trip_through_toml():
    spec = _spec({"dim": 1, "ignore_index": "ignore", "mean_weight": "w"}, z=lf.Var("input", axis="k", dim=1))
    assert lf.loads(lf.dumps(spec)) == spec
    assert 'ignore_index = "ignore"' in lf.dumps(spec) and "dim = 1" in lf.dumps(spec)
    renamed = spec.rename(ignore="skip", w="class_weight")
    assert renamed.symbols["t"].ignore_index == "skip" and renamed.symbols["t"].mean_weight == "class_weight"
    x, y = _case("(N, C, d1, d2)", torch.float64)
    weight = torch.arange(1.0, C + 1, dtype=torch.float64)
    for target in ("torch", "numpy"):
        mod = lf.compile(renamed, target)
        value = (mod(class_weight=weight, skip=2)(x, y) if target == "torch"
                 else mod.loss(x.numpy(), y.numpy(), class_weight=weight.numpy(), skip=2))
        assert float(value) == pytest.approx(F.cross_entropy(x, y, weight=weight, ignore_index=2).item(), rel=1e-12)


@pytest.mark.parametrize(("target", "extra", "message", "token"), [
    ({"ignore_index": "nothing"}, {}, r"ignore_index = 'nothing' must name a scalar param", "nothing"),
    ({"ignore_index": "w"}, {}, r"ignore_index = 'w' must name a scalar param with an integer default", "w"),
    ({"mean_weight": "ignore"}, {}, r"mean_weight = 'ignore' must name a tensor param on axis 'k'", "ignore"),
    ({"ignore_index": "half"}, {"half": lf.Var("param", default=0.5)}, r"integer default", "half"),
    ({"dim": 1}, {}, r"'t' declares dim 1 for axis 'k' but 'z' declares None", "t"),
])
def test_spec_mistakes_are_named(target, extra, message, token):
    with pytest.raises(lf.LossforgeError, match=message) as info:
        _spec(target, **extra)
    assert info.value.token == token


def test_var_level_mistakes_are_named():
    with pytest.raises(lf.LossforgeError, match="belongs to a one-hot target") as info:
        lf.Var("input", axis="k", ignore_index="i")
    assert info.value.token == "ignore_index"
    with pytest.raises(lf.LossforgeError, match="dim places an array's axis"):
        lf.Var("param", default=1.0, tensor=True, axis="k", dim=1)
    with pytest.raises(lf.LossforgeError, match="dim must be an integer from 0 to 8"):
        lf.Var("input", axis="k", dim=-1)
    with pytest.raises(lf.LossforgeError, match="a param has an axis only if it is a tensor"):
        lf.Var("param", default=1.0, axis="k")


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_weight_and_ignore_index_match_torch_with_no_host_sync():
    cls = lf.compile(lf.builtin("cross_entropy"), "torch")
    x, y = _case("(N, C, d1, d2)", torch.float32, seed=4)
    y.view(-1)[0] = -100
    x, y = x.cuda(), y.cuda()
    weight = torch.tensor([0.5, 1.0, 2.0, 3.0, 0.25], device="cuda")
    reference = torch.nn.CrossEntropyLoss(weight, label_smoothing=0.1)
    for fused in (False, True):
        module = cls(weight, label_smoothing=0.1, fused=fused)
        _compare(module, reference, x, y, torch.float32, f"cuda fused={fused}")
    module = cls(weight, label_smoothing=0.1)
    leaf = x.clone().requires_grad_()
    torch.cuda.set_sync_debug_mode("error")  # any host sync in forward or backward raises
    try:
        module(leaf, y).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    assert leaf.grad.device.type == "cuda"


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_the_defaults_make_no_host_sync_either():
    """torch's defaults (no weight, no smoothing, ignore_index=-100), the module moved to the GPU: the scatter of
    -1 at each class index is filled on the device, not copied from the host (which waits for the GPU)."""
    module = lf.compile(lf.builtin("cross_entropy"), "torch")().cuda()
    x = torch.randn(256, 10, device="cuda", requires_grad=True)
    y = torch.randint(0, 10, (256,), device="cuda")
    module(x, y).backward()  # the first call reads the params once
    torch.cuda.set_sync_debug_mode("error")
    try:
        module(x, y).backward()
    finally:
        torch.cuda.set_sync_debug_mode(0)
    ref = x.detach().clone().requires_grad_()
    torch.nn.functional.cross_entropy(ref, y).backward()
    torch.testing.assert_close(x.grad, 2 * ref.grad)


def test_a_combined_loss_keeps_each_terms_weighted_mean_and_ignored_samples():
    """Multi-task: weighted cross-entropy with ignored samples plus half an MSE, each term reduced on its own."""
    spec = lf.combine({"cls": (lf.builtin("cross_entropy"), 1.0),
                       "reg": (lf.builtin("mse").rename(pred="box", target="box_target"), 0.5)})
    g = torch.Generator().manual_seed(0)
    z, y = torch.randn(8, 4, generator=g, dtype=torch.float64), torch.randint(0, 4, (8,), generator=g)
    y[2] = -1
    box, box_target = torch.randn(8, generator=g, dtype=torch.float64), torch.randn(8, generator=g, dtype=torch.float64)
    weight = torch.tensor([1.0, 2.0, 3.0, 4.0], dtype=torch.float64)
    leaves = [z.clone().requires_grad_(), box.clone().requires_grad_()]
    ref_leaves = [z.clone().requires_grad_(), box.clone().requires_grad_()]
    module = lf.compile(spec, "torch")(weight=weight, ignore_index=-1)
    value = module(leaves[0], y, leaves[1], box_target)
    ref = F.cross_entropy(ref_leaves[0], y, weight=weight, ignore_index=-1) + 0.5 * F.mse_loss(ref_leaves[1], box_target)
    torch.testing.assert_close(value, ref, rtol=1e-12, atol=1e-12)
    ref_grads = torch.autograd.grad(ref, ref_leaves)
    for got, want in zip(torch.autograd.grad(value, leaves), ref_grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    terms = module.terms(z, y, box, box_target)
    torch.testing.assert_close(terms["cls"], F.cross_entropy(z, y, weight=weight, ignore_index=-1))
    mod = lf.compile(spec, "numpy")
    total, grads = mod.loss_and_grad(z.numpy(), y.numpy(), box.numpy(), box_target.numpy(), weight=weight.numpy(),
                                     ignore_index=-1)
    assert total == pytest.approx(ref.item(), rel=1e-12)
    for got, want in zip(grads, ref_grads):
        np.testing.assert_allclose(got, want.numpy(), rtol=1e-12, atol=1e-14)
