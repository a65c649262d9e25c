"""Arrays declared ``broadcast`` (issue 13, GaussianNLLLoss's ``var``): given with the batch's last dimension
missing or 1 (one variance per row, a homoscedastic head), expanded to the batch, the gradient summed back.

References: torch.nn.GaussianNLLLoss with var of shape (N, D), (N, 1) and (N,), every reduction, full both ways,
values and the gradients of mean and var; float64 at 1e-12 (the same formula, summed in another order) and
float32 at 2e-5 (a few ulps of losses of order 10). The NumPy target against the same, in float64.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import lossforge as lf
from lossforge.errors import SpecError

SHAPES = [(6, 3), (6, 1), (6,)]
TOL = {torch.float64: 1e-12, torch.float32: 2e-5}


def _point(dtype, var_shape):
    g = torch.Generator().manual_seed(4)
    mean, target = (torch.randn(6, 3, generator=g, dtype=dtype) for _ in range(2))
    return mean, target, torch.rand(var_shape, generator=g, dtype=dtype) + 0.1


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("var_shape", SHAPES, ids=str)
def test_gaussian_nll_takes_torchs_var_shapes(var_shape, dtype):
    cls = lf.compile(lf.builtin("gaussian_nll"), "torch")
    args = _point(dtype, var_shape)
    for full in (False, True):
        for reduction in ("mean", "sum", "none"):
            results = []
            for module in (cls(full=full, reduction=reduction), torch.nn.GaussianNLLLoss(full=full, reduction=reduction)):
                leaves = [a.clone().requires_grad_(i != 1) for i, a in enumerate(args)]
                value = module(*leaves)
                upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
                results.append((value.detach(), *torch.autograd.grad((value * upstream).sum(), [leaves[0], leaves[2]])))
            for got, want in zip(*results):
                assert got.shape == want.shape and got.dtype == dtype
                torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype])


@pytest.mark.parametrize("var_shape", SHAPES, ids=str)
def test_numpy_sums_the_gradient_back_to_vars_shape(var_shape):
    module = lf.compile(lf.builtin("gaussian_nll"), "numpy")
    mean, target, var = _point(torch.float64, var_shape)
    for reduction in ("mean", "sum"):
        value, (grad_mean, grad_var) = module.loss_and_grad(mean.numpy(), target.numpy(), var.numpy(),
                                                            reduction=reduction)
        leaves = [mean.clone().requires_grad_(), var.clone().requires_grad_()]
        want = torch.nn.GaussianNLLLoss(reduction=reduction)(leaves[0], target, leaves[1])
        grads = torch.autograd.grad(want, leaves)
        assert grad_var.shape == var_shape
        np.testing.assert_allclose(value, want.item(), rtol=1e-12)
        np.testing.assert_allclose(grad_mean, grads[0].numpy(), rtol=1e-12, atol=1e-14)
        np.testing.assert_allclose(grad_var, grads[1].numpy(), rtol=1e-12, atol=1e-14)
        assert module.loss(mean.numpy(), target.numpy(), var.numpy(), reduction=reduction) == pytest.approx(value)


def test_a_broadcast_var_under_torch_func_and_compile():
    module = lf.compile(lf.builtin("gaussian_nll"), "torch")()
    mean, target, var = _point(torch.float64, (6, 1))
    want = torch.func.grad(lambda v: torch.nn.functional.gaussian_nll_loss(mean, target, v))(var)
    torch.testing.assert_close(torch.func.grad(lambda v: module(mean, target, v))(var), want)
    compiled = torch.compile(module, backend="aot_eager", fullgraph=True)
    leaf = var.clone().requires_grad_()
    compiled(mean, target, leaf).backward()
    torch.testing.assert_close(leaf.grad, want)


def test_a_shape_that_does_not_broadcast_is_named():
    module = lf.compile(lf.builtin("gaussian_nll"), "torch")()
    mean, target, _ = _point(torch.float64, (6, 3))
    for shape in [(6, 2), (3,), (1, 3)]:
        with pytest.raises(ValueError, match=r"shape mismatch: var has batch shape"):
            module(mean, target, torch.ones(shape, dtype=torch.float64))
    with pytest.raises(ValueError, match=r"shape mismatch: var"):
        lf.compile(lf.builtin("gaussian_nll"), "numpy").loss(mean.numpy(), target.numpy(), np.ones((6, 2)))


def test_the_key_is_spec_language_and_its_mistakes_are_named():
    spec = lf.builtin("gaussian_nll")
    assert spec.symbols["var"].broadcast and "broadcast = true" in lf.dumps(spec) and lf.loads(lf.dumps(spec)) == spec
    assert "last dimension missing or 1" in lf.compile(spec, "torch").__doc__
    with pytest.raises(SpecError, match="broadcast must be true or false") as info:
        lf.Var("input", broadcast="yes")
    assert info.value.token == "broadcast"
    with pytest.raises(SpecError, match="not to a param"):
        lf.Var("param", default=1.0, broadcast=True)
    with pytest.raises(SpecError, match="not to a vector"):
        lf.Var("input", axis="c", broadcast=True)
    with pytest.raises(SpecError, match=r"'x' declares broadcast: it takes the shape of the first array") as info:
        lf.LossSpec(name="first", expr="(x - y)**2", symbols={"x": lf.Var("input", broadcast=True),
                                                              "y": lf.Var("target")})
    assert info.value.token == "x"
    with pytest.raises(SpecError, match="in a spec without axes"):
        lf.LossSpec(name="axes", expr="sum(z)*w", symbols={"z": lf.Var("input", axis="c"),
                                                           "w": lf.Var("target", broadcast=True)})


def test_a_negative_var_is_refused_in_every_call_as_torch_refuses_it():
    """An array declared ``validate = true`` is checked without validate=True (torch's GaussianNLLLoss raises
    "var has negative entry/entries"); the other arrays only with it."""
    mean, target, var = _point(torch.float64, (6, 1))
    var[2, 0] = -0.5
    with pytest.raises(ValueError, match="var has negative"):
        torch.nn.GaussianNLLLoss()(mean, target, var)
    torch_module, numpy_module = lf.compile(lf.builtin("gaussian_nll"), "torch"), lf.compile(lf.builtin("gaussian_nll"), "numpy")
    for call in (lambda: torch_module()(mean, target, var),
                 lambda: numpy_module.loss(mean.numpy(), target.numpy(), var.numpy())):
        with pytest.raises(ValueError, match=r"^var\[2, 0\] = -0\.5 is outside its domain: a real number >= 0 "
                                             r"\(checked in every call, as torch checks it"):
            call()
    mean[0, 0] = float("nan")  # not declared validate: only validate=True looks at it
    var[2, 0] = 0.5
    assert torch_module()(mean, target, var).isnan()
    with pytest.raises(ValueError, match=r"^mean\[0, 0\] = nan is outside its domain"):
        torch_module(validate=True)(mean, target, var)
    spec = lf.builtin("gaussian_nll")
    assert spec.symbols["var"].validate and "validate = true" in lf.dumps(spec).split("[symbols]")[1]
    with pytest.raises(SpecError, match="validate on a symbol belongs to an input or target") as info:
        lf.Var("param", default=1.0, validate=True)
    assert info.value.token == "validate"


def test_a_combined_spec_spreads_var_to_its_own_terms_first_array():
    """Cross-entropy over (N, C) logits plus half a Gaussian NLL with one variance per row: var takes the shape of
    its own term's first array (mean), not the combined spec's (logits)."""
    spec = lf.combine({"ce": (lf.builtin("cross_entropy").rename(target="y"), 1.0),
                       "g": (lf.builtin("gaussian_nll"), 0.5)})
    g = torch.Generator().manual_seed(0)
    logits, mean, target = (torch.randn(6, k, generator=g, dtype=torch.float64) for k in (4, 3, 3))
    labels, var = torch.randint(0, 4, (6,), generator=g), torch.rand(6, 1, generator=g, dtype=torch.float64) + 0.1
    F = torch.nn.functional
    grads = []
    for ours in (True, False):
        leaves = [a.clone().requires_grad_() for a in (logits, mean, var)]
        z, m, v = leaves
        loss = (lf.compile(spec, "torch")()(z, labels, m, target, v) if ours
                else F.cross_entropy(z, labels) + 0.5 * F.gaussian_nll_loss(m, target, v))
        grads.append((loss.detach(), *torch.autograd.grad(loss, leaves)))
    for got, want in zip(*grads):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    value, (_, _, grad_var) = lf.compile(spec, "numpy").loss_and_grad(logits.numpy(), labels.numpy(), mean.numpy(),
                                                                       target.numpy(), var.numpy())
    assert value == pytest.approx(float(grads[1][0]), rel=1e-12) and grad_var.shape == (6, 1)
    np.testing.assert_allclose(grad_var, grads[1][3].numpy(), rtol=1e-12, atol=1e-14)
