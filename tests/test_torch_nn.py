"""Built-ins as drop-in replacements for their ``torch.nn`` counterparts (issue 13, names and signatures).

Each built-in whose spec names a torch class (``[torch] class``) is built
exactly as torch's module is built: no arguments, every argument positional in
torch's order, the same as keywords, and torch's deprecated ``size_average`` /
``reduce`` (with torch's warning). The value and the gradients of the inputs and
of the targets torch differentiates (continuous ones: a trainable teacher's) are
compared with the torch module in float64 and float32, at ordinary points for every reduction
and at the row's extreme points. Tolerances are test_library.py's: 1e-7 in
float64 and 2e-4 in float32 (different but equivalent formulas round differently;
float32's bound is a few hundred ulps of losses of order 10).
"""

from __future__ import annotations

import inspect
import itertools
import warnings

import numpy as np
import pytest
import torch

import lossforge as lf

from .library_db import ROWS

TOL = {torch.float64: 1e-7, torch.float32: 2e-4}
DROP_IN = {n: lf.builtin(n).torch_class for n in lf.builtin_names() if lf.builtin(n).torch_class}


def _constructions(name, dtype=torch.float64):
    """``(label, args, kwargs)`` ways to build the module, as a torch user would (a tensor param as a tensor)."""
    spec, row = lf.builtin(name), ROWS[name]
    params = {n: row.params.get(n, spec.symbols[n].default) for n in spec.params}
    params = {n: (torch.tensor(v, dtype=dtype) if n in row.params else None) if spec.symbols[n].tensor  # absent
              else int(v) if n in spec.class_index_params else v for n, v in params.items()}
    torchs = inspect.signature(getattr(torch.nn, spec.torch_class)).parameters
    params = {n: bool(v) if n in torchs and isinstance(torchs[n].default, bool) else v  # log_target=False
              for n, v in params.items()}
    out = [("defaults", (), {})]
    for reduction in ("mean", "sum", "none"):
        values = {**params, "reduction": reduction, "size_average": None, "reduce": None}
        named = {n: values[n] for n in (*spec.params, "reduction") if n in torchs}  # (BCELoss has no eps)
        out.append((f"positional {reduction}", tuple(values[n] for n in spec.torch_args),
                    {n: v for n, v in named.items() if n not in spec.torch_args}))
        out.append((f"keywords {reduction}", (), named))
    if "reduce" in spec.torch_args:
        out += [("size_average=False", (), {"size_average": False}), ("reduce=False", (), {"reduce": False})]
    return out


def _run(module, args, positions):
    leaves = [a.clone().requires_grad_(i in positions) for i, a in enumerate(args)]
    value = module(*leaves)
    upstream = 0.5 + torch.rand(value.shape, generator=torch.Generator().manual_seed(7), dtype=value.dtype)
    grads = torch.autograd.grad((value * upstream).sum(), [leaves[i] for i in positions])
    return value.detach(), grads


def _same_as_torch(ours, theirs, args, dtype, where=None):
    """Our module and torch's give the same value and gradient of the first argument (the input)."""
    mine, (value, grads) = _run(ours, args, [0]), _run(theirs, args, [0])
    torch.testing.assert_close(mine[0], value, rtol=TOL[dtype], atol=TOL[dtype], msg=where)
    torch.testing.assert_close(mine[1][0], grads[0], rtol=TOL[dtype], atol=TOL[dtype], msg=where)


def _both(name, args, kwargs):
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ours = lf.compile(lf.builtin(name), "torch")(*args, **kwargs)
        mine = [str(w.message) for w in caught]
        caught.clear()
        theirs = getattr(torch.nn, DROP_IN[name])(*args, **kwargs)
        assert mine == [str(w.message) for w in caught]  # torch's deprecation warning, word for word
    return ours, theirs


def test_every_torch_class_named_is_torchs():
    assert set(DROP_IN.values()) == {"MSELoss", "L1Loss", "HuberLoss", "SmoothL1Loss", "SoftMarginLoss",
                                     "MarginRankingLoss", "HingeEmbeddingLoss", "CosineEmbeddingLoss",
                                     "GaussianNLLLoss", "BCELoss", "BCEWithLogitsLoss", "KLDivLoss", "PoissonNLLLoss",
                                     "CrossEntropyLoss", "NLLLoss", "MultiMarginLoss", "TripletMarginLoss"}
    for name, cls in DROP_IN.items():
        module = lf.compile(lf.builtin(name), "torch")
        assert module.__name__ == cls
        ours = list(inspect.signature(module).parameters.values())
        theirs = [p for p in inspect.signature(getattr(torch.nn, cls)).parameters.values()]
        # torch's arguments in torch's order, kind and default; then the spec's own params (BCELoss's eps)
        # and fused and validate, keyword-only
        assert [(p.name, p.kind, p.default) for p in ours[:len(theirs)]] == [
            (p.name, p.kind, p.default) for p in theirs]
        own = [n for n in lf.builtin(name).params if n not in {p.name for p in theirs}]
        assert [p.name for p in ours[len(theirs):]] == [*own, "fused", "validate"]
        assert all(p.kind is p.KEYWORD_ONLY for p in ours[len(theirs):])


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
@pytest.mark.parametrize("name", sorted(DROP_IN))
def test_built_as_torch_builds_it_gives_torchs_loss_and_gradients(name, dtype):
    spec, row = lf.builtin(name), ROWS[name]
    # the inputs, then the targets torch differentiates (a trainable teacher's); not one-hot targets, which the
    # table gives as class indices (integers: test_target_gradients.py differentiates class probabilities)
    positions = [spec.arrays.index(n) for n in (*spec.inputs, *spec.smooth_targets)
                 if spec.symbols[n].domain.name != "onehot"]
    points = [("ordinary", row.ordinary(torch.Generator().manual_seed(11), dtype))]
    points += row.extremes(dtype) if row.compare_extremes else []
    # a one-hot target as a torch user gives it: class indices (NLLLoss takes nothing else)
    onehot = [i for i, n in enumerate(spec.arrays) if spec.symbols[n].domain.name == "onehot"]
    points = [(label, tuple(a.argmax(-1) if i in onehot else a for i, a in enumerate(args))) for label, args in points]
    for label, args, kwargs in _constructions(name, dtype):
        ours, theirs = _both(name, args, kwargs)
        assert ours.reduction == theirs.reduction, label
        for point, tensors in points:
            mine, (value, grads) = _run(ours, tensors, positions), _run(theirs, tensors, positions)
            where = f"{name} {label} at {point}"
            assert mine[0].dtype == dtype and mine[0].shape == value.shape, where
            ok = torch.isfinite(value)  # where torch overflows (soft_margin at 1000) lossforge stays finite
            assert torch.isfinite(mine[0]).all(), where
            torch.testing.assert_close(mine[0][ok], value[ok], rtol=TOL[dtype], atol=TOL[dtype],
                                       msg=lambda m, where=where: f"{where}: {m}")
            if point != "ordinary" and not row.compare_extreme_grads:
                continue
            assert len(mine[1]) == len(positions)
            for got, want in zip(mine[1], grads):
                ok = torch.isfinite(want)
                torch.testing.assert_close(got[ok], want[ok], rtol=TOL[dtype], atol=TOL[dtype],
                                           msg=lambda m, where=where: f"{where}, gradient: {m}")


def test_a_user_spec_names_its_class_and_argument_order():
    spec = lf.loads('''
name = "scaled_l2"
expr = "gain * (p - t)**2 + shift"
[symbols]
p = { role = "input" }
t = { role = "target" }
gain = { role = "param", default = 2.0 }
shift = { role = "param", default = 0.0 }
[torch]
class = "ScaledL2Loss"
args = ["gain", "reduction"]
''')
    assert lf.loads(lf.dumps(spec)) == spec and spec.torch_args == ("gain", "reduction")
    cls = lf.compile(spec, "torch")
    assert cls.__name__ == "ScaledL2Loss"
    assert str(inspect.signature(cls)) == ("(gain: 'float' = 2.0, reduction: 'str' = 'mean', *, shift: 'float' = 0.0, "
                                           "fused: 'bool' = False, validate: 'bool' = False) -> 'None'")
    p, t = torch.tensor([1.0, 3.0]), torch.tensor([0.0, 1.0])
    assert cls(3.0, "sum", shift=1.0)(p, t).item() == 3.0 * (1 + 4) + 2 * 1.0
    assert "gain (float, optional)" in cls.__doc__.split("reduction (str")[0]  # documented in that order
    assert spec.rename(gain="scale").torch_args == ("scale", "reduction")  # a renamed param, renamed here too


@pytest.mark.parametrize(("table", "message"), [
    ('class = "1Loss"', r"\[torch\] class '1Loss' is not a public Python class name"),
    ('class = "_Hidden"', r"not a public Python class name"),
    ('args = ["gamma"]', r"\[torch\] args: 'gamma' is neither a param of the spec nor one of reduction"),
    ('args = ["reduction", "reduction"]', r"'reduction' is listed twice"),
    ('args = ["reduce", "reduction"]', r"size_average and reduce come together"),
    ('args = "reduction"', r"\[torch\] args must be a list"),
    ('klass = "X"', r"\[torch\] takes class and args only, got 'klass'"),
])
def test_a_bad_torch_table_is_refused_by_name(table, message):
    text = f'name = "l"\nexpr = "(p - t)**2"\n[symbols]\np = {{ role = "input" }}\nt = {{ role = "target" }}\n[torch]\n{table}\n'
    with pytest.raises(lf.SpecError, match=message):
        lf.loads(text)


def test_a_class_named_like_the_generated_codes_own_names_is_refused():
    spec = lf.LossSpec(name="l", expr="(p - t)**2", symbols={"p": lf.Var("input"), "t": lf.Var("target")},
                       torch_class="torch")
    with pytest.raises(lf.RenderError, match=r"\[torch\] class 'torch' is a name the generated code uses itself"):
        lf.generate(spec, "torch")


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_bce_drop_ins_take_torchs_weight_and_pos_weight_tensors(dtype):
    g = torch.Generator().manual_seed(3)
    logits = torch.randn(8, 4, generator=g, dtype=torch.float64).to(dtype) * 3
    target = torch.rand(8, 4, generator=g, dtype=torch.float64).to(dtype)
    weight = torch.rand(8, 1, generator=g, dtype=torch.float64).to(dtype)
    pos_weight = (0.5 + 3 * torch.rand(4, generator=g, dtype=torch.float64)).to(dtype)
    p = torch.sigmoid(logits)
    cases = [
        ("bce", (p, target), {"weight": weight}, torch.nn.BCELoss(weight=weight)),
        ("bce", (p, target), {"weight": weight[:, 0].reshape(8, 1).expand(8, 4).contiguous()},
         torch.nn.BCELoss(weight.expand(8, 4))),
        ("bce_logits", (logits, target), {"weight": weight, "pos_weight": pos_weight},
         torch.nn.BCEWithLogitsLoss(weight=weight, pos_weight=pos_weight)),
        ("bce_logits", (logits, target), {"pos_weight": pos_weight}, torch.nn.BCEWithLogitsLoss(pos_weight=pos_weight)),
    ]
    for name, args, kwargs, theirs in cases:
        for reduction in ("mean", "sum", "none"):
            ours = lf.compile(lf.builtin(name), "torch")(reduction=reduction, **kwargs)
            theirs.reduction = reduction
            _same_as_torch(ours, theirs, args, dtype)
    assert list(lf.compile(lf.builtin("bce_logits"), "torch")(pos_weight=pos_weight).state_dict()) == ["pos_weight"]


@pytest.mark.parametrize("name", ["mse", "cross_entropy", "huber"])
def test_batchmean_is_the_sum_divided_by_the_first_dimension_in_both_targets(name):
    spec, row = lf.builtin(name), ROWS[name]
    args = row.ordinary(torch.Generator().manual_seed(5), torch.float64)
    positions = [spec.arrays.index(n) for n in spec.inputs]
    value, grads = _run(lf.compile(spec, "torch")(reduction="batchmean"), args, positions)
    total, sum_grads = _run(lf.compile(spec, "torch")(reduction="sum"), args, positions)
    rows = args[0].shape[0]
    torch.testing.assert_close(value, total / rows, rtol=1e-12, atol=0)
    for got, want in zip(grads, sum_grads):
        torch.testing.assert_close(got, want / rows, rtol=1e-12, atol=0)
    module = lf.compile(spec, "numpy")
    arrays = [a.numpy() for a in args]
    got, np_grads = module.loss_and_grad(*arrays, reduction="batchmean")
    want, np_sum_grads = module.loss_and_grad(*arrays, reduction="sum")
    assert abs(got - want / rows) <= 1e-12 * abs(want)
    for g, s in zip(np_grads, np_sum_grads):
        torch.testing.assert_close(torch.as_tensor(g), torch.as_tensor(s) / rows, rtol=1e-12, atol=0)
    empty = [a[:0] for a in args]
    assert torch.isnan(lf.compile(spec, "torch")(reduction="batchmean")(*empty))
    assert np.isnan(module.loss(*(a.numpy() for a in empty), reduction="batchmean"))


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_kl_div_is_torchs_kldivloss_with_batchmean_and_log_target(dtype):
    g = torch.Generator().manual_seed(4)
    logq = torch.log_softmax(torch.randn(6, 5, generator=g, dtype=torch.float64), -1).to(dtype)
    target = torch.softmax(torch.randn(6, 5, generator=g, dtype=torch.float64) * 2, -1).to(dtype)
    target[0, :2] = 0.0  # zeros in the target: 0 * log(0) is 0
    cls = lf.compile(lf.builtin("kl_div"), "torch")
    for log_target in (False, True):
        given = torch.log(target.clamp_min(1e-30)) if log_target else target
        for reduction in ("mean", "batchmean", "sum", "none"):
            ours = cls(None, None, reduction, log_target)  # torch's positional order
            theirs = torch.nn.KLDivLoss(reduction=reduction, log_target=log_target)
            _same_as_torch(ours, theirs, (logq, given), dtype)
        compiled = torch.compile(cls(reduction="batchmean", log_target=log_target), fullgraph=True,
                                 backend="aot_eager")
        torch.testing.assert_close(compiled(logq, given), torch.nn.KLDivLoss(reduction="batchmean",
                                                                            log_target=log_target)(logq, given),
                                   rtol=TOL[dtype], atol=TOL[dtype])
    module = lf.compile(lf.builtin("kl_div"), "numpy")
    want = torch.nn.functional.kl_div(logq.double(), target.double(), reduction="batchmean")
    assert abs(module.loss(logq.double().numpy(), target.double().numpy(), "batchmean") - want.item()) <= 1e-12


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_poisson_nll_is_torchs_poissonnllloss_with_log_input_and_full(dtype):
    g = torch.Generator().manual_seed(6)
    log_rate = torch.randn(6, 4, generator=g, dtype=torch.float64).to(dtype)
    target = torch.poisson(torch.full((6, 4), 2.5, dtype=torch.float64), generator=g).to(dtype)
    target[0] = torch.tensor([0.0, 1.0, 2.0, 7.0], dtype=dtype)  # Stirling's term only where target > 1
    cls = lf.compile(lf.builtin("poisson_nll"), "torch")
    for log_input in (True, False):
        pred = log_rate if log_input else torch.exp(log_rate)  # the rate itself, >= 0
        for full in (False, True):
            for reduction in ("mean", "sum", "none"):
                ours = cls(log_input, full, None, 1e-8, None, reduction)  # torch's positional order
                theirs = torch.nn.PoissonNLLLoss(log_input, full, None, 1e-8, None, reduction)
                _same_as_torch(ours, theirs, (pred, target), dtype, f"log_input={log_input} full={full} {reduction}")
            compiled = torch.compile(cls(log_input=log_input, full=full), fullgraph=True, backend="aot_eager")
            torch.testing.assert_close(compiled(pred, target), torch.nn.PoissonNLLLoss(log_input, full)(pred, target),
                                       rtol=TOL[dtype], atol=TOL[dtype])
    module = lf.compile(lf.builtin("poisson_nll"), "numpy")
    want = torch.nn.functional.poisson_nll_loss(log_rate.double().exp(), target.double(), log_input=False, full=True)
    got = module.loss(log_rate.double().exp().numpy(), target.double().numpy(), log_input=0.0, full=1.0)
    assert abs(got - want.item()) <= 1e-12 * abs(want.item())


def test_a_target_that_requires_grad_gets_torchs_gradient_without_a_warning():
    # torch's huber_loss differentiates its target too (tests/test_target_gradients.py covers every built-in)
    module = lf.compile(lf.builtin("huber"), "torch")()
    pred, target = torch.randn(5, requires_grad=True), torch.randn(5, requires_grad=True)
    ref_pred, ref_target = pred.detach().clone().requires_grad_(), target.detach().clone().requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        module(pred, target).backward()
    torch.nn.HuberLoss()(ref_pred, ref_target).backward()
    torch.testing.assert_close(target.grad, ref_target.grad)
    torch.testing.assert_close(pred.grad, ref_pred.grad)


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_triplet_takes_torchs_p_and_swap_in_both_targets(dtype):
    """TripletMarginLoss(margin, p, eps, swap): every p-norm order and the distance swap, values and the
    gradients of all three embeddings, against torch; the NumPy target against torch in float64."""
    module = lf.compile(lf.builtin("triplet"), "torch")
    numpy_module = lf.compile(lf.builtin("triplet"), "numpy")
    g = torch.Generator().manual_seed(5)
    args = tuple(torch.randn(9, 6, generator=g, dtype=dtype) for _ in range(3))
    args = (args[0], args[1], args[0] + 0.3 * args[2])  # near negatives: the swap and the hinge both matter
    for p, swap, reduction in itertools.product((1.0, 1.5, 2.0, 3.0), (False, True), ("mean", "none")):
        where = f"p={p} swap={swap} {reduction}"
        ours = module(0.5, p, 1e-6, swap, reduction=reduction)
        theirs = torch.nn.TripletMarginLoss(0.5, p, 1e-6, swap, reduction=reduction)
        mine, (value, grads) = _run(ours, args, [0, 1, 2]), _run(theirs, args, [0, 1, 2])
        torch.testing.assert_close(mine[0], value, rtol=TOL[dtype], atol=TOL[dtype], msg=where)
        for got, want in zip(mine[1], grads):
            torch.testing.assert_close(got, want, rtol=TOL[dtype], atol=TOL[dtype], msg=where)
        if dtype is torch.float64:
            value_np, grads_np = numpy_module.loss_and_grad(*(a.numpy() for a in args), reduction="sum", margin=0.5,
                                                            p=p, swap=float(swap))
            total = theirs.__class__(0.5, p, 1e-6, swap, reduction="sum")
            leaves = [a.clone().requires_grad_() for a in args]
            want = total(*leaves)
            torch.testing.assert_close(torch.as_tensor(value_np), want.detach(), rtol=1e-10, atol=1e-10, msg=where)
            for got, expected in zip(grads_np, torch.autograd.grad(want, leaves)):
                torch.testing.assert_close(torch.as_tensor(got), expected, rtol=1e-10, atol=1e-10, msg=where)
