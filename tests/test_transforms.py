"""The generated Torch modules under torch's transforms and compilers, and as module state (issue 13).

For every built-in: ``torch.func.grad``, ``vmap`` (of the loss and of its
gradient), ``jvp``, ``torch.compile(fullgraph=True)`` (forward and backward
traced whole, AOT autograd), ``torch.export`` and autocast bf16 give what the
eager module gives; ``torch.jit.script`` raises an error that says what to use
instead. Params are 0-d float64 buffers: in ``state_dict``, moved by ``.to()``,
read again when changed. The references are the eager module itself, whose
values and gradients ``test_library.py`` checks against PyTorch: the same
operations run, so the tolerances are a few float64 roundings (1e-12), where
forward mode's contraction adds its own (1e-10).
"""

from __future__ import annotations

import functools
import warnings

import pytest
import torch

import lossforge as lf

from .library_db import ROWS

NAMES = list(lf.builtin_names())


@functools.cache
def _module(name):
    return lf.compile(lf.builtin(name), "torch")


def _args(name, seed=5, dtype=torch.float64):
    return ROWS[name].ordinary(torch.Generator().manual_seed(seed), dtype)


def _inputs(name):
    """Positions of the spec's inputs among its arrays."""
    spec = lf.builtin(name)
    return tuple(i for i, n in enumerate(spec.arrays) if spec.symbols[n].role == "input")


def _eager_grads(loss, args, positions):
    leaves = [a.clone().requires_grad_(i in positions) for i, a in enumerate(args)]
    value = loss(*leaves)
    grads = torch.autograd.grad(value, [leaves[i] for i in positions])
    return value.detach(), grads


def _close(a, b, rtol=1e-12):
    torch.testing.assert_close(a, b, rtol=rtol, atol=rtol)


@pytest.mark.parametrize("name", NAMES)
def test_torch_func_grad_vmap_and_jvp_give_the_eager_values(name):
    loss, args, positions = _module(name)(), _args(name), _inputs(name)
    value, grads = _eager_grads(loss, args, positions)

    # grad: the derived gradient, through the Function torch.func transforms
    found = torch.func.grad(lambda *a: loss(*a), argnums=positions)(*args)
    for got, want in zip(found, grads):
        _close(got, want)

    # vmap over two batches of arguments, of the loss and of its gradient
    other = _args(name, seed=6)
    stacked = [torch.stack(pair) for pair in zip(args, other)]
    _close(torch.func.vmap(lambda *a: loss(*a))(*stacked), torch.stack([value, loss(*other)]))
    per_sample = torch.func.vmap(torch.func.grad(lambda *a: loss(*a), argnums=positions))(*stacked)
    for got, want, want_other in zip(per_sample, grads, _eager_grads(loss, other, positions)[1]):
        _close(got, torch.stack([want, want_other]))

    # jvp: forward mode from the derived gradient (the Function's jvp), one tangent per input
    g = torch.Generator().manual_seed(7)
    tangents = [torch.randn(args[i].shape, generator=g, dtype=args[i].dtype) for i in positions]

    def of_inputs(*xs):
        full = list(args)
        for i, x in zip(positions, xs):
            full[i] = x
        return loss(*full)

    primal, tangent = torch.func.jvp(of_inputs, tuple(args[i] for i in positions), tuple(tangents))
    _close(primal, value)
    _close(tangent, sum((gr * t).sum() for gr, t in zip(grads, tangents)), rtol=1e-10)


@pytest.mark.parametrize("name", ["huber", "cross_entropy", "triplet"])
def test_jacrev_jacfwd_and_hessian(name):
    loss, args, positions = _module(name)(reduction="sum"), _args(name), _inputs(name)
    _, (grad, *_) = _eager_grads(loss, args, positions)
    first = positions[0]

    def of_first(x):
        return loss(*args[:first], x, *args[first + 1:])

    _close(torch.func.jacrev(of_first)(args[first]), grad)
    _close(torch.func.jacfwd(of_first)(args[first]), grad, rtol=1e-10)
    hessian = torch.func.hessian(of_first)(args[first])
    assert hessian.shape == args[first].shape * 2
    # the Hessian is the Jacobian of the eager gradient (autograd through the recomputed backward)
    expected = torch.autograd.functional.jacobian(
        lambda x: torch.autograd.grad(of_first(x), x, create_graph=True)[0], args[first].clone())
    _close(hessian, expected, rtol=1e-10)


@pytest.mark.parametrize("name", NAMES)
def test_compile_fullgraph_forward_and_backward(name):
    loss, positions = _module(name)(), _inputs(name)
    args = _args(name)
    value, grads = _eager_grads(loss, args, positions)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")  # whole graphs or an error, no breaks
    got_value, got_grads = _eager_grads(compiled, args, positions)
    _close(got_value, value)
    for got, want in zip(got_grads, grads):
        _close(got, want)
    with torch.no_grad():
        _close(compiled(*args), value)


@pytest.mark.parametrize("name", NAMES)
def test_export(name):
    loss, args = _module(name)(), _args(name)
    program = torch.export.export(loss, tuple(args))
    _close(program.module()(*args), loss(*args))
    assert sorted(program.graph_signature.buffers) == sorted(n for n, _ in loss.named_buffers())  # params as inputs


@pytest.mark.parametrize("name", NAMES)
def test_autocast_computes_in_float32_as_torch_losses_do(name):
    loss, positions = _module(name)(), _inputs(name)
    args = [a.to(torch.bfloat16) if a.is_floating_point() else a for a in _args(name, dtype=torch.float32)]
    leaves = [a.clone().requires_grad_(i in positions) for i, a in enumerate(args)]
    with torch.autocast("cpu", dtype=torch.bfloat16):
        value = loss(*leaves)
    assert value.dtype == torch.float32
    # the same as the float32 loss of the bf16 values, and the gradients flow back in bf16
    exact = loss(*(a.float() if a.is_floating_point() else a for a in args))
    _close(value, exact, rtol=1e-6)
    grads = torch.autograd.grad(value, [leaves[i] for i in positions])
    assert all(g.dtype == torch.bfloat16 for g in grads)
    with torch.autocast("cpu", dtype=torch.bfloat16):  # torch's own loss under autocast, for comparison
        assert torch.nn.functional.mse_loss(leaves[0], leaves[0] * 2).dtype == torch.float32


def test_torch_jit_script_says_what_to_use_instead():
    with pytest.raises(RuntimeError, match=r"torch.jit.script cannot compile MSELoss.*torch.compile"):
        torch.jit.script(_module("mse")())


# -- params as module state ----------------------------------------------------------------


def test_params_are_float64_buffers_in_state_dict_and_follow_to():
    loss = _module("triplet")(margin=0.5)
    state = loss.state_dict()
    assert list(state) == ["margin", "p", "eps", "swap"]
    assert state["margin"].dtype == torch.float64 and state["margin"].shape == () and float(state["margin"]) == 0.5
    assert loss.to(torch.float32).margin.dtype == torch.float32
    assert "margin=0.5" in repr(loss)


def test_a_changed_param_is_read_again_however_it_changes():
    loss = _module("huber")()
    x, y = torch.tensor([3.0, -0.5], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    by_delta = {d: float(_module("huber")(delta=d)(x, y)) for d in (1.0, 2.0, 0.5, 4.0)}
    assert float(loss(x, y)) == by_delta[1.0]
    loss.load_state_dict({"delta": torch.tensor(2.0)})
    assert float(loss(x, y)) == by_delta[2.0]
    loss.delta.fill_(0.5)  # in place
    assert float(loss(x, y)) == by_delta[0.5]
    loss.delta = torch.tensor(4.0, dtype=torch.float64)  # replaced
    assert float(loss(x, y)) == by_delta[4.0]
    with torch.inference_mode():  # inference tensors carry no version: read on every call
        frozen = _module("huber")(delta=2.0)
        assert float(frozen(x, y)) == by_delta[2.0]
        frozen.delta.fill_(0.5)
        assert float(frozen(x, y)) == by_delta[0.5]


def test_a_loaded_param_outside_its_domain_is_refused_with_validate():
    loss = _module("huber")(validate=True)
    with pytest.raises(ValueError, match=r"delta = 0.0 is outside its domain"):
        loss.load_state_dict({"delta": torch.tensor(0.0)})
    _module("huber")().load_state_dict({"delta": torch.tensor(0.0)})  # unchecked without validate


def test_a_param_that_requires_grad_is_refused_not_silently_detached():
    with pytest.raises(ValueError, match=r"delta: a tensor that requires grad was passed"):
        _module("huber")(delta=torch.tensor(2.0, requires_grad=True))
    with pytest.raises(ValueError, match=r"delta must be a scalar"):
        _module("huber")(delta=torch.ones(2))
    assert float(_module("huber")(delta=torch.tensor(2.0)).delta) == 2.0


# -- validation under the transforms and compilers ---------------------------------------------


def test_default_validation_holds_under_vmap_and_compile():
    loss = _module("bce")()  # validates by default, as BCELoss
    p = torch.tensor([[0.25, 0.75], [0.5, 1.5]], dtype=torch.float64)
    y = torch.tensor([[1.0, 0.0], [1.0, 0.0]], dtype=torch.float64)
    with pytest.raises(ValueError, match=r"p\[1, 1\] = 1.5 is outside its domain"):
        torch.func.vmap(loss)(p, y)  # every sample of the vmap is checked
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    assert torch.isfinite(compiled(p[:1], y[:1]))
    with pytest.raises(RuntimeError, match=r"p has a value outside its domain"):  # a device-side assert there
        compiled(p, y)


def test_class_indices_are_checked_under_compile_without_a_graph_break():
    loss = _module("cross_entropy")()
    z = torch.randn(4, 3, dtype=torch.float64)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    _close(compiled(z, torch.tensor([0, 2, 1, 1])), loss(z, torch.tensor([0, 2, 1, 1])))
    with pytest.raises(RuntimeError, match=r"target: class index out of range"):
        compiled(z, torch.tensor([0, 3, 1, 1]))


def test_fused_modules_run_eagerly_under_torch_func_without_a_warning():
    loss = _module("huber")(fused=True)
    x, y = _args("huber")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a compile attempt under the transform would warn and fall back
        grad = torch.func.grad(lambda a: loss(a, y))(x)
    _close(grad, _eager_grads(_module("huber")(), (x, y), (0,))[1][0])


# -- distributed training ---------------------------------------------------------------------

_DDP_SCRIPT = '''
import os, sys
import torch
import torch.distributed as dist
import torch.multiprocessing as mp

sys.path.insert(0, sys.argv[1])
import generated_ce, generated_huber  # noqa: E402


def batch():
    g = torch.Generator().manual_seed(0)
    return torch.randn(8, 4, generator=g), torch.randint(0, 3, (8,), generator=g), torch.randn(8, 3, generator=g)


def model():
    torch.manual_seed(1)
    return torch.nn.Linear(4, 3)


def losses(net, x, label, goal):
    out = net(x)
    return generated_ce.Loss(label_smoothing=0.1)(out, label) + generated_huber.Loss(delta=0.5)(out, goal)


def worker(rank, world, path):
    dist.init_process_group("gloo", init_method="file://" + path + "/rendezvous", rank=rank, world_size=world)
    net = torch.nn.parallel.DistributedDataParallel(model())
    x, label, goal = (part.chunk(world)[rank] for part in batch())
    losses(net, x, label, goal).backward()  # DDP averages the gradients over the ranks
    if rank == 0:
        torch.save([p.grad for p in net.module.parameters()], path + "/ddp.pt")
    dist.destroy_process_group()


if __name__ == "__main__":
    mp.spawn(worker, args=(2, sys.argv[1]), nprocs=2, join=True)
    net = model()
    losses(net, *batch()).backward()  # one process, the whole batch
    torch.save([p.grad for p in net.parameters()], sys.argv[1] + "/single.pt")
'''


def test_ddp_with_gloo_in_two_processes_gives_the_gradients_of_one_process(tmp_path):
    import subprocess
    import sys

    (tmp_path / "generated_ce.py").write_text(lf.generate(lf.builtin("cross_entropy"), "torch"))
    (tmp_path / "generated_huber.py").write_text(lf.generate(lf.builtin("huber"), "torch"))
    script = tmp_path / "ddp.py"
    script.write_text(_DDP_SCRIPT)
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    ddp, single = torch.load(tmp_path / "ddp.pt"), torch.load(tmp_path / "single.pt")
    assert len(ddp) == len(single) == 2
    for a, b in zip(ddp, single):  # float32: the mean of two half-batch means against one whole-batch mean
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


# -- learnable params ---------------------------------------------------------------------------

_EXAMPLES = __import__("pathlib").Path(__file__).resolve().parent.parent / "examples"


def _kendall_reference(pred, target, score, sign, s_reg, s_cls, reduction):
    per_sample = (torch.exp(-s_reg) * (pred - target) ** 2 + s_reg
                  + torch.exp(-s_cls) * torch.nn.functional.softplus(-sign * score) + s_cls)
    return per_sample.mean() if reduction == "mean" else per_sample.sum() if reduction == "sum" else per_sample


def _kendall_data(dtype=torch.float64):
    g = torch.Generator().manual_seed(0)
    pred, target, score = (torch.randn(6, 2, generator=g, dtype=dtype) * 2 for _ in range(3))
    return pred, target, score, torch.sign(torch.randn(6, 2, generator=g)).to(dtype)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
def test_learnable_params_get_their_derived_gradient_reduced_over_the_batch(reduction, dtype):
    spec = lf.load(_EXAMPLES / "uncertainty_weighting.toml")
    loss = lf.compile(spec, "torch")(reduction=reduction, s_reg=0.3, s_cls=-0.2).to(dtype)
    assert [n for n, _ in loss.named_parameters()] == ["s_reg", "s_cls"] and list(loss.state_dict()) == ["s_reg", "s_cls"]
    pred, target, score, sign = _kendall_data(dtype)
    leaves = [pred.clone().requires_grad_(), score.clone().requires_grad_()]
    value = loss(leaves[0], target, leaves[1], sign)
    upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(1), dtype=dtype)
    got = torch.autograd.grad((value * upstream).sum(), [*leaves, loss.s_reg, loss.s_cls])
    ref_leaves = [pred.clone().requires_grad_(), score.clone().requires_grad_()]
    s = [torch.tensor(0.3, dtype=dtype, requires_grad=True), torch.tensor(-0.2, dtype=dtype, requires_grad=True)]
    ref = _kendall_reference(ref_leaves[0], target, ref_leaves[1], sign, *s, reduction)
    want = torch.autograd.grad((ref * upstream).sum(), [*ref_leaves, *s])
    tol = 1e-12 if dtype == torch.float64 else 1e-5
    _close(value.detach(), ref.detach(), rtol=tol)
    for a, b in zip(got, want):
        assert a.dtype == dtype and a.shape == b.shape
        _close(a, b, rtol=tol)


def test_a_learnable_param_trains_and_works_under_torch_func_and_compile():
    spec = lf.load(_EXAMPLES / "uncertainty_weighting.toml")
    cls = lf.compile(spec, "torch")
    data = _kendall_data()
    loss = cls()
    optimizer = torch.optim.SGD(loss.parameters(), lr=0.5)
    values = []
    for _ in range(3):
        optimizer.zero_grad()
        value = loss(*data)
        value.backward()
        optimizer.step()
        values.append(float(value))
    assert values[0] > values[1] > values[2]  # gradient steps on s lower the loss
    # the value follows the updated parameter (no stale copy of it)
    _close(loss(*data), _kendall_reference(*data, loss.s_reg.detach(), loss.s_cls.detach(), "mean"))

    loss = cls(s_reg=0.3, s_cls=-0.2)
    loss(*data).backward()
    eager = (loss.s_reg.grad.clone(), loss.s_cls.grad.clone())
    found = torch.func.grad(lambda ps: torch.func.functional_call(loss, ps, data))(dict(loss.named_parameters()))
    _close(found["s_reg"], eager[0])
    _close(found["s_cls"], eager[1])
    loss.zero_grad()
    torch.compile(loss, fullgraph=True, backend="aot_eager")(*data).backward()
    _close(loss.s_reg.grad, eager[0])
    shared = torch.nn.Parameter(torch.tensor(0.5, dtype=torch.float64))
    assert cls(s_reg=shared).s_reg is shared  # a Parameter passed in is the one trained


def test_a_learnable_param_stepped_out_of_its_domain_is_refused_under_validate():
    spec = lf.load(_EXAMPLES / "uncertainty_weighting.toml")  # s_reg, s_cls in [-20, 20]
    cls = lf.compile(spec, "torch")
    data = _kendall_data()
    loss = cls(validate=True)
    torch.optim.SGD(loss.parameters(), lr=1.0)  # an optimizer holds the parameter; a big step moves it
    with torch.no_grad():
        loss.s_cls.add_(25.0)
    with pytest.raises(ValueError, match=r"s_cls.* = 25\.0? is outside its domain"):
        loss(*data)
    compiled = torch.compile(loss, fullgraph=True, backend="aot_eager")
    with pytest.raises(RuntimeError):  # a device-side assert under a compiler, as torch's own checks
        compiled(*data)
    with torch.no_grad():
        loss.s_cls.sub_(25.0)
    _close(loss(*data), _kendall_reference(*data, loss.s_reg.detach(), loss.s_cls.detach(), "mean"))
    unchecked = cls()
    with torch.no_grad():
        unchecked.s_cls.add_(25.0)
    assert torch.isfinite(unchecked(*data))  # validate=False (the default here): not checked, as documented
    combined = lf.compile(lf.combine({"tasks": (spec, 0.5), "l2": (lf.builtin("mse"), 2.0)}), "torch")(validate=True)
    with torch.no_grad():
        combined.s_reg.sub_(20.5)
    for call in (combined, combined.terms):
        with pytest.raises(ValueError, match=r"s_reg.* = -20\.5 is outside its domain"):
            call(*data)


def test_learnable_is_declared_on_params_only_and_named_in_gradient():
    with pytest.raises(lf.RoleError, match=r"only a param can be learnable, not an input"):
        lf.Var("input", learnable=True)
    spec = lf.load(_EXAMPLES / "uncertainty_weighting.toml")
    assert set(spec.gradient()) == {"pred", "score", "s_reg", "s_cls"}
    bce = lf.builtin("bce")
    with pytest.raises(lf.RoleError, match=r"'eps' is a param, not an input \(declare learnable = true\)"):
        bce.gradient("eps")
    # NumPy takes a learnable param as a number and returns the inputs' gradients
    module = lf.compile(spec, "numpy")
    value, grads = module.loss_and_grad(*(a.numpy() for a in _kendall_data()), s_reg=0.3, s_cls=-0.2)
    assert len(grads) == 2
    s = torch.tensor(0.3, dtype=torch.float64), torch.tensor(-0.2, dtype=torch.float64)
    _close(torch.tensor(value, dtype=torch.float64), _kendall_reference(*_kendall_data(), *s, "mean"))


def test_a_combined_loss_trains_the_learnable_params_of_its_terms():
    spec = lf.combine({"tasks": (lf.load(_EXAMPLES / "uncertainty_weighting.toml"), 0.5), "l2": (lf.builtin("mse"), 2.0)})
    loss = lf.compile(spec, "torch")(s_reg=0.25)
    pred, target, score, sign = _kendall_data()
    leaf = pred.clone().requires_grad_()
    loss(leaf, target, score, sign).backward()
    s = [torch.tensor(0.25, dtype=torch.float64, requires_grad=True), torch.zeros((), dtype=torch.float64, requires_grad=True)]
    ref_leaf = pred.clone().requires_grad_()
    ref = 0.5 * _kendall_reference(ref_leaf, target, score, sign, *s, "mean") + 2.0 * ((ref_leaf - target) ** 2).mean()
    ref.backward()
    _close(leaf.grad, ref_leaf.grad)
    _close(loss.s_reg.grad, s[0].grad)
    _close(loss.s_cls.grad, s[1].grad)
