"""Class indices for one-hot targets: gathered and scattered, never expanded to one-hot rows.

The indexed code of cross_entropy, nll and multi_margin is checked against the
one-hot code of the same module (float64, to 1e-12) and against torch's own
losses with class indices; the torch module saves no (N, C) matrix but its
gradient, and neither target builds one-hot rows.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossforge as lf
from lossforge import language as E
from lossforge.codegen.indices import indexed, pick, scatter

N, C = 37, 6
NAMES = ("cross_entropy", "nll", "multi_margin")


def _data(seed=0):
    g = torch.Generator().manual_seed(seed)
    z = torch.randn(N, C, generator=g, dtype=torch.float64) * 3
    i = torch.randint(0, C, (N,), generator=g)
    return z, i


def _first_input(name):
    spec = lf.builtin(name)
    return spec.inputs[0]


@pytest.mark.parametrize("name", NAMES)
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_torch_indices_equal_one_hot_rows(name, reduction):
    z, i = _data()
    z = torch.log_softmax(z, -1) if name == "nll" else z
    Loss = lf.compile(lf.builtin(name), "torch")
    assert "one_hot(" not in lf.generate(lf.builtin(name), "torch")
    za, zb = z.clone().requires_grad_(), z.clone().requires_grad_()
    by_index = Loss(reduction=reduction)(za, i)
    by_rows = Loss(reduction=reduction)(zb, F.one_hot(i, C).double())
    torch.testing.assert_close(by_index, by_rows, rtol=1e-12, atol=1e-12)
    (ga,) = torch.autograd.grad(by_index.sum(), za)
    (gb,) = torch.autograd.grad(by_rows.sum(), zb)
    torch.testing.assert_close(ga, gb, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("name", NAMES)
def test_numpy_indices_equal_one_hot_rows(name):
    z, i = (t.numpy() for t in _data(1))
    module = lf.compile(lf.builtin(name), "numpy")
    assert "np.eye(" not in lf.generate(lf.builtin(name), "numpy")
    value, (grad,) = module.loss_and_grad(z, i, reduction="sum")
    value_rows, (grad_rows,) = module.loss_and_grad(z, np.eye(C)[i], reduction="sum")
    np.testing.assert_allclose(value, value_rows, rtol=1e-12)
    np.testing.assert_allclose(grad, grad_rows, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(module.loss(z, i, reduction="none"), module.loss(z, np.eye(C)[i], reduction="none"),
                               rtol=1e-12)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("smoothing", [0.0, 0.1])
def test_cross_entropy_with_indices_matches_torch(dtype, smoothing):
    z, i = _data(2)
    z = z.to(dtype).requires_grad_()
    out = lf.compile(lf.builtin("cross_entropy"), "torch")(label_smoothing=smoothing)(z, i)
    ref_z = z.detach().clone().requires_grad_()
    ref = F.cross_entropy(ref_z, i, label_smoothing=smoothing)
    out.backward()
    ref.backward()
    tol = dict(rtol=4 * torch.finfo(dtype).eps, atol=4 * torch.finfo(dtype).eps)
    torch.testing.assert_close(out, ref, **tol)
    torch.testing.assert_close(z.grad, ref_z.grad, **tol)


def test_indexed_forward_saves_no_class_matrix_but_the_gradient():
    z, i = _data(3)
    z = z.requires_grad_()
    Loss = lf.compile(lf.builtin("cross_entropy"), "torch")
    for ignored in (False, True):
        saved = []
        with torch.autograd.graph.saved_tensors_hooks(lambda t, saved=saved: saved.append(t) or t, lambda t: t):
            Loss(ignore_index=int(i[0]) if ignored else -100)(z, i)
        # logits, the indices, which samples count (only where ignore_index is among them: else no mask is
        # made), the gradient: nothing else of (N, C)
        assert [tuple(t.shape) for t in saved] == [(N, C), (N,)] + [(N,)] * ignored + [(N, C)]
        assert saved[1].dtype == torch.int64 and (not ignored or saved[2].dtype == torch.bool)


def test_indexed_cross_entropy_double_backward():
    z, i = _data(4)
    z = z.requires_grad_()
    Loss = lf.compile(lf.builtin("cross_entropy"), "torch")
    assert torch.autograd.gradgradcheck(lambda a: Loss(label_smoothing=0.2)(a, i), (z,))


def test_out_of_range_indices_are_refused_by_name():
    z, i = _data(5)
    Loss = lf.compile(lf.builtin("cross_entropy"), "torch")
    with pytest.raises(ValueError, match=r"target: class index out of range \[0, 6\)"):
        Loss()(z, torch.full((N,), C))
    with pytest.raises(ValueError, match=r"target: class index out of range"):
        lf.compile(lf.builtin("cross_entropy"), "numpy").loss(z.numpy(), np.full(N, -1))


def test_indexed_needs_the_target_to_enter_linearly():
    import sympy

    z = sympy.Symbol("z", real=True)
    t = sympy.Symbol("t", nonnegative=True)
    vectors = frozenset({z, t})
    ce = E.logsumexp(z) - E.axis_sum(t * z)
    loss, grad = indexed((ce, sympy.exp(z - E.logsumexp(z)) - t), t, z, vectors)
    assert loss == E.logsumexp(z) - pick(z, t) and grad == scatter(sympy.exp(z - E.logsumexp(z)), -1, t, z)
    assert indexed((E.axis_sum(t**2 * z),), t, z, vectors) is None  # squared: no indexed form
    assert indexed((E.logsumexp(t * z),), t, z, vectors) is None  # inside a logsumexp: none either
