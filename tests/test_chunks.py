"""Eager CPU code runs a large batch chunk by chunk, and hands a gradient that carries the reduction's factor on
as it is: the same loss and gradients as the whole-batch code and as torch, for every reduction and layout.

``_CHUNK`` (about the elements of one chunk) is lowered here so that small arrays run in several chunks; values
are compared in float64 at 1e-12 (the same functions, only the summation is grouped by chunk).
"""

from __future__ import annotations

import functools
import sys

import pytest
import torch

import lossforge as lf

from .test_branches import _Ops

F = torch.nn.functional


def _chunky(monkeypatch, spec, chunk=64):
    """The spec's module class, and its generated module with ``_CHUNK = chunk`` for this test only (modules
    are cached: others see the default again)."""
    cls = lf.compile(lf.builtin(spec) if isinstance(spec, str) else spec, "torch")
    module = sys.modules[cls.__module__]
    monkeypatch.setattr(module, "_CHUNK", chunk)
    return cls, module


def _run(loss, *args, upstream=None):
    leaves = [a.clone().requires_grad_(a.is_floating_point()) for a in args]
    value = loss(*leaves)
    value.backward(upstream if upstream is not None else torch.ones_like(value))
    return value.detach(), [a.grad for a in leaves if a.is_floating_point()]


def _whole(module, loss, *args, **kwargs):
    chunk, module._CHUNK = module._CHUNK, 1 << 60
    try:
        return _run(loss, *args, **kwargs)
    finally:
        module._CHUNK = chunk


@pytest.mark.parametrize("reduction", ["mean", "sum", "none", "batchmean"])
@pytest.mark.parametrize("name", ["huber", "bce_logits", "focal", "log_cosh"])
def test_elementwise_losses_chunked_equal_the_whole_batch_and_torch(monkeypatch, name, reduction):
    cls, module = _chunky(monkeypatch, name)
    g = torch.Generator().manual_seed(0)
    x = 3 * torch.randn(1001, generator=g, dtype=torch.float64)  # 1001: the last chunk is shorter
    y = (torch.rand(1001, generator=g, dtype=torch.float64) < 0.5).double() if name != "huber" else torch.randn(
        1001, generator=g, dtype=torch.float64)
    loss = cls(reduction=reduction)
    upstream = torch.rand(1001, generator=g, dtype=torch.float64) if reduction == "none" else None
    chunked, whole = _run(loss, x, y, upstream=upstream), _whole(module, loss, x, y, upstream=upstream)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked[1][0], whole[1][0], rtol=1e-12, atol=1e-14)
    if name == "huber" and reduction != "batchmean":
        ref = _run(lambda a, b: F.huber_loss(a, b, reduction=reduction), x, y, upstream=upstream)
        torch.testing.assert_close(chunked[0], ref[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(chunked[1][0], ref[1][0], rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("weighted", [False, True])
def test_cross_entropy_with_ignored_samples_chunked_is_torchs(monkeypatch, weighted):
    """Class indices, ignore_index and a per-class weight: the weighted mean over the counted samples, chunked."""
    cls, module = _chunky(monkeypatch, "cross_entropy", chunk=40)
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(300, 7, generator=g, dtype=torch.float64)
    target = torch.randint(0, 7, (300,), generator=g)
    target[::5] = -100
    weight = torch.rand(7, generator=g, dtype=torch.float64) + 0.5 if weighted else None
    for reduction in ("mean", "sum", "none"):
        ours = _run(cls(weight=weight, reduction=reduction), logits, target)
        theirs = _run(torch.nn.CrossEntropyLoss(weight=weight, reduction=reduction), logits, target)
        torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(ours[1][0], theirs[1][0], rtol=1e-12, atol=1e-14)


def test_vector_losses_chunk_by_rows_and_a_broadcast_weight_runs_whole(monkeypatch):
    cls, module = _chunky(monkeypatch, "triplet", chunk=32)
    g = torch.Generator().manual_seed(2)
    a, p, n = (torch.randn(203, 4, generator=g, dtype=torch.float64) for _ in range(3))
    ours = _run(cls(swap=True), a, p, n)
    theirs = _run(torch.nn.TripletMarginLoss(swap=True), a, p, n)
    torch.testing.assert_close(ours[0], theirs[0], rtol=1e-12, atol=1e-12)
    for got, want in zip(ours[1], theirs[1]):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-14)
    bce, bce_module = _chunky(monkeypatch, "bce")
    rows = (torch.rand(500, 3, generator=g, dtype=torch.float64) * 0.98 + 0.01, torch.rand(500, 3, generator=g,
                                                                                          dtype=torch.float64))
    assert bce_module._chunk_rows(bce_module._EAGER[next(iter(bce_module._EAGER))][2], (*rows, None, 1e-12)) > 0
    weight = torch.rand(500, 3, generator=g, dtype=torch.float64)
    assert bce_module._chunk_rows(bce_module._EAGER[next(iter(bce_module._EAGER))][2], (*rows, weight, 1e-12)) == 0
    torch.testing.assert_close(_run(bce(weight=weight), *rows)[0],
                               _run(torch.nn.BCELoss(weight=weight), *rows)[0], rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("chunk, fused", [(64, False), (1 << 17, False), (1 << 17, True)],
                         ids=["chunked", "whole", "fused"])
def test_a_gradient_handed_on_as_it_is_stays_right_under_retain_graph_and_zero_grad(monkeypatch, chunk, fused):
    """After ``loss.backward()`` hands the saved gradient on (upstream 1: a mean's gradients carry its 1/n, chunked,
    whole or compiled), a second backward of the same graph recomputes it: in-place changes to the first ``.grad``
    (``zero_()``, accumulation) cannot reach it."""
    cls, module = _chunky(monkeypatch, "huber", chunk)
    monkeypatch.setattr(module, "_HANDED", 1000)  # a batch of 2000 is handed on (the default: 8192 samples)
    if fused:
        cls = functools.partial(cls, fused=True)
    g = torch.Generator().manual_seed(3)
    x, y = torch.randn(2000, generator=g, dtype=torch.float64), torch.randn(2000, generator=g, dtype=torch.float64)
    ref = x.clone().requires_grad_()
    F.huber_loss(ref, y).backward()
    want = ref.grad
    leaf = x.clone().requires_grad_()
    value = cls()(leaf, y)
    with _Ops() as ops:
        value.backward()
    # no pass over the gradient in backward: autograd takes the saved one as .grad (a detach, no copy)
    assert not [c for c in ops.calls if (2000,) in c[1] and c[0] != "detach"], ops.calls
    torch.testing.assert_close(leaf.grad, want, rtol=1e-12, atol=1e-15)
    leaf = x.clone().requires_grad_()
    value = cls()(leaf, y)
    value.backward(retain_graph=True)  # (the graph keeps the gradient: autograd copies it into .grad)
    torch.testing.assert_close(leaf.grad, want, rtol=1e-12, atol=1e-15)
    leaf.grad.zero_()
    value.backward(retain_graph=True)
    torch.testing.assert_close(leaf.grad, want, rtol=1e-12, atol=1e-15)
    value.backward(retain_graph=True)  # accumulates: twice the gradient
    torch.testing.assert_close(leaf.grad, 2 * want, rtol=1e-12, atol=1e-15)
    (3 * cls()(leaf, y)).backward()  # an upstream of 3: scaled, not handed on
    torch.testing.assert_close(leaf.grad, 5 * want, rtol=1e-12, atol=1e-15)
    # double backward (create_graph) differentiates the recomputed gradient
    leaf = x.clone().requires_grad_()
    (grad,) = torch.autograd.grad(cls()(leaf, y), leaf, create_graph=True)
    torch.testing.assert_close(grad, want, rtol=1e-12, atol=1e-15)
    assert grad.requires_grad


def test_a_combined_loss_and_a_learnable_param_chunked_equal_the_whole_batch(monkeypatch):
    huber = lf.builtin("huber")
    combined = lf.combine({"a": (huber, 0.5), "b": (lf.builtin("mse"), 2.0)})
    cls, module = _chunky(monkeypatch, combined)
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(777, generator=g, dtype=torch.float64), torch.randn(777, generator=g, dtype=torch.float64)
    chunked, whole = _run(cls(), x, y), _whole(module, cls(), x, y)
    torch.testing.assert_close(chunked[0], whole[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked[1][0], whole[1][0], rtol=1e-12, atol=1e-15)
    spec = lf.LossSpec(name="kendall", expr="exp(-s) * (x - y)**2 + s",
                       symbols={"x": {"role": "input"}, "y": {"role": "target"},
                                "s": {"role": "param", "default": 0.3, "learnable": True}})
    kcls, kmodule = _chunky(monkeypatch, spec)
    runs = []
    for chunk in (64, 1 << 60):
        monkeypatch.setattr(kmodule, "_CHUNK", chunk)
        loss = kcls()
        leaf = x.clone().requires_grad_()
        loss(leaf, y).backward()
        runs.append((leaf.grad, loss.s.grad))
    torch.testing.assert_close(runs[0][0], runs[1][0], rtol=1e-12, atol=1e-15)
    torch.testing.assert_close(runs[0][1], runs[1][1], rtol=1e-12, atol=1e-15)


def test_a_small_batch_multiplies_by_the_upstream_gradient_without_reading_it(monkeypatch):
    """Below ``_HANDED`` samples backward multiplies the saved gradient by the upstream gradient (one short pass)
    instead of reading it on the host to hand the gradient on: no item() in backward, and the same gradient."""
    cls, module = _chunky(monkeypatch, "huber")
    assert module._HANDED > 2000
    g = torch.Generator().manual_seed(4)
    x, y = torch.randn(2000, generator=g, dtype=torch.float64), torch.randn(2000, generator=g, dtype=torch.float64)
    ref = x.clone().requires_grad_()
    F.huber_loss(ref, y).backward()
    leaf = x.clone().requires_grad_()
    value = cls()(leaf, y)
    with _Ops() as ops:
        value.backward()
    assert [c[0] for c in ops.calls if (2000,) in c[1]] == ["mul", "detach"], ops.calls
    assert "_local_scalar_dense" not in ops.names, ops.calls
    torch.testing.assert_close(leaf.grad, ref.grad, rtol=1e-12, atol=1e-15)
