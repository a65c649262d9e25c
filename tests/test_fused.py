"""``fused=True``: the one-pass value and gradient compiled by torch.compile, with an eager fallback.

Compiling is slow on two CPU cores (seconds per dtype), so few specs are
compiled here: huber (clamp, select) in float32 and float64, on CPU always
and on CUDA where a device is present.
"""

from __future__ import annotations

import sys
import warnings

import pytest
import torch

import lossforge as lf

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _pair(device, dtype, n=1000):
    g = torch.Generator().manual_seed(3)
    x = (torch.randn(n, generator=g, dtype=torch.float64) * 2).to(device=device, dtype=dtype)
    y = torch.randn(n, generator=g, dtype=torch.float64).to(device=device, dtype=dtype)
    return x, y


@pytest.mark.parametrize("device", DEVICES)
def test_fused_equals_eager_in_float32_and_float64_and_any_batch_size(device):
    Loss = lf.compile(lf.builtin("huber"), "torch")
    fused, eager = Loss(fused=True), Loss()
    assert "fused=True" in repr(fused)
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)  # no fallback: the compiled kernel ran
        for dtype in (torch.float32, torch.float64):
            for n in (1000, 777, 0):
                x, y = _pair(device, dtype, n)
                xf, xe = x.clone().requires_grad_(), x.clone().requires_grad_()
                out_f, out_e = fused(xf, y), eager(xe, y)
                out_f.backward()
                out_e.backward()
                # inductor may fuse and reorder the arithmetic: a few ulps, not bits
                tol = dict(rtol=8 * torch.finfo(dtype).eps, atol=8 * torch.finfo(dtype).eps)
                torch.testing.assert_close(out_f, out_e, equal_nan=True, **tol)
                torch.testing.assert_close(xf.grad, xe.grad, **tol)
                with torch.no_grad():
                    torch.testing.assert_close(fused(x, y), out_e.detach(), equal_nan=True, **tol)


def test_fused_double_backward_takes_the_differentiable_path():
    Loss = lf.compile(lf.builtin("huber"), "torch")
    x, y = _pair("cpu", torch.float64, 50)
    x = x.requires_grad_()
    assert torch.autograd.gradcheck(lambda a: Loss(fused=True)(a, y), (x,))
    assert torch.autograd.gradgradcheck(lambda a: Loss(fused=True)(a, y), (x,))


def test_a_failing_compiler_falls_back_to_eager_with_one_warning(monkeypatch):
    spec = lf.LossSpec(name="fallback_probe", expr="(x - y)**2 + softplus(x)",
                       symbols={"x": lf.Var("input"), "y": lf.Var("target")})
    Loss = lf.compile(spec, "torch")
    module = sys.modules[Loss.__module__]

    def broken(fn, **kwargs):
        def run(*args):
            raise RuntimeError("no C++ compiler found")
        return run

    monkeypatch.setattr(module.torch, "compile", broken)
    x, y = _pair("cpu", torch.float32)
    with pytest.warns(RuntimeWarning, match="torch.compile failed for cpu torch.float32.*no C\\+\\+ compiler"):
        first = Loss(fused=True)(x.clone().requires_grad_(), y)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the second call runs eagerly, silently
        second = Loss(fused=True)(x, y)
    expected = Loss()(x, y)
    assert torch.equal(first.detach(), expected) and torch.equal(second, expected)


def test_fused_class_indices_and_every_reduction():
    # the reduction runs inside the compiled kernel; reducing again outside changes nothing
    g = torch.Generator().manual_seed(4)
    z, i = torch.randn(64, 10, generator=g), torch.randint(0, 10, (64,), generator=g)
    Loss = lf.compile(lf.builtin("cross_entropy"), "torch")
    with warnings.catch_warnings():
        warnings.simplefilter("error", RuntimeWarning)
        for reduction in ("mean", "sum", "none"):
            zf, ze = z.clone().requires_grad_(), z.clone().requires_grad_()
            out_f = Loss(reduction=reduction, fused=True)(zf, i)
            out_e = Loss(reduction=reduction)(ze, i)
            assert out_f.shape == out_e.shape
            out_f.sum().backward()
            out_e.sum().backward()
            tol = dict(rtol=1e-5, atol=1e-6)  # float32: inductor's reduction order differs from eager's
            torch.testing.assert_close(out_f, out_e, **tol)
            torch.testing.assert_close(zf.grad, ze.grad, **tol)
