"""``validate=True``: every array and param checked against its declared domain at run time.

For every built-in and both targets: in-domain values pass and give the same loss
as without the check; one value outside an array's domain (or a NaN) raises a
ValueError naming the array, the element and the domain; a param outside its
domain raises naming the param. ``bce`` and ``cost_sensitive_bce`` check by
default, as torch's ``BCELoss`` does; every other built-in does not.
"""

from __future__ import annotations

import math
import re

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossforge as lf
from lossforge.errors import SpecError

from .library_db import ROWS

NAMES = list(lf.builtin_names())
TARGETS = ["numpy", "torch"]
CHECKED_BY_DEFAULT = {"bce", "cost_sensitive_bce"}  # torch's binary_cross_entropy checks [0, 1]


def _ordinary(name):
    return ROWS[name].ordinary(torch.Generator().manual_seed(5), torch.float64)


def _outside(domain, inside: float) -> float:
    """A value outside ``domain`` (``inside`` is one that is in it)."""
    if domain.values is not None:  # binary, sign, onehot: a value between the members
        return 0.5 if domain.name != "sign" else 0.0
    if domain.vector:  # simplex: the row no longer sums to 1
        return inside + 0.25 if inside <= 0.5 else inside - 0.25
    if math.isfinite(domain.hi):
        return domain.hi + 1.0
    if math.isfinite(domain.lo):
        return domain.lo - 1.0
    return math.inf  # real: any finite number


def _call(name, target, args, validate=None, **params):
    """The reduced loss of the built-in on ``args`` (float64 numpy arrays or tensors)."""
    spec = lf.builtin(name)
    flag = {} if validate is None else {"validate": validate}
    if target == "numpy":
        return float(lf.compile(spec, "numpy").loss(*(a.numpy() for a in args), **params, **flag))
    return float(lf.compile(spec, "torch")(**params, **flag)(*args))


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", NAMES)
def test_in_domain_values_pass_and_each_array_outside_its_domain_is_named(name, target):
    spec = lf.builtin(name)
    args = _ordinary(name)
    plain = _call(name, target, args, validate=False)
    assert _call(name, target, args, validate=True) == plain
    for k, arg in enumerate(spec.arrays):
        domain = spec.symbols[arg].domain
        if not args[k].is_floating_point() or not args[k].numel():  # class indices: checked by _prepare always
            continue
        for bad in (_outside(domain, float(args[k].reshape(-1)[0])), math.nan):
            changed = list(args)
            changed[k] = args[k].clone()
            changed[k].reshape(-1)[0] = bad
            with pytest.raises(ValueError) as info:
                _call(name, target, changed, validate=True)
            message = str(info.value)
            assert re.match(rf"{arg}(\[[0-9, ]+\])? = ", message), message
            assert domain.description in message and "validate=False" in message
            if not domain.vector:  # a simplex row is named by one of its elements
                assert f"= {bad!r}" in message, message


@pytest.mark.parametrize("target", TARGETS)
@pytest.mark.parametrize("name", [n for n in NAMES if lf.builtin(n).params])
def test_each_param_outside_its_domain_is_named(name, target):
    spec = lf.builtin(name)
    args = _ordinary(name)
    for param in spec.params:
        var = spec.symbols[param]
        bad = _outside(var.domain, var.default)
        with pytest.raises(ValueError, match=rf"^{param} = {re.escape(repr(bad))} is outside its domain"):
            _call(name, target, args, validate=True, **{param: bad})
        if target == "torch":  # a number (a tensor param too, given as one) is checked when the module takes it
            with pytest.raises(ValueError, match=rf"^{param} = {re.escape(repr(bad))} is outside its domain: "
                                                 r".*\(a param is checked when it is set"):
                _call(name, target, args, validate=False, **{param: bad})
            continue
        with np.errstate(all="ignore"):  # unchecked: no error from the check (the loss may be NaN there)
            _call(name, target, args, validate=False, **{param: bad})


@pytest.mark.parametrize("target", TARGETS)
def test_bce_checks_by_default_as_torch_does(target):
    p, t = torch.tensor([0.25, 1.5], dtype=torch.float64), torch.tensor([0.0, 1.0], dtype=torch.float64)
    with pytest.raises(RuntimeError, match="between 0 and 1"):
        F.binary_cross_entropy(p, t)
    for name in CHECKED_BY_DEFAULT:
        with pytest.raises(ValueError, match=r"^p\[1\] = 1\.5 is outside its domain"):
            _call(name, target, (p, t))
        assert math.isfinite(_call(name, target, (p, t), validate=False))
    assert {n for n in NAMES if lf.builtin(n).validate} == CHECKED_BY_DEFAULT


def test_the_flag_is_keyword_only_shown_in_repr_and_documented():
    mse, bce = lf.compile(lf.builtin("mse"), "torch"), lf.compile(lf.builtin("bce"), "torch")
    assert "validate" not in repr(mse()) and "validate=True" in repr(mse(validate=True))
    assert "validate" not in repr(bce()) and "validate=False" in repr(bce(validate=False))
    assert mse().validate is False and bce().validate is True
    assert "validate (bool, optional)" in mse.__doc__ and "Default: ``True``" in bce.__doc__.split("validate (")[1]
    module = lf.compile(lf.builtin("mse"), "numpy")
    with pytest.raises(TypeError):
        module.loss(np.zeros(2), np.zeros(2), "mean", True)  # validate is keyword-only
    with pytest.raises(TypeError):
        mse(None, None, "mean", True)  # MSELoss(size_average, reduce, reduction), then keywords only


def test_a_param_is_checked_when_the_module_is_built_and_when_it_is_set():
    """As torch refuses CrossEntropyLoss(label_smoothing=1.5) or HuberLoss(delta=0): a number outside its domain is
    refused when the module takes it (once, no cost per call), with validate=True or without; a tensor param's
    elements only under validate=True (a pass over it)."""
    with pytest.raises(ValueError, match=r"^eps = 0\.0 is outside its domain: a real number in \[1e-30, 0\.5\]"):
        lf.compile(lf.builtin("bce"), "torch")(eps=0.0)
    for name, param, bad in (("cross_entropy", "label_smoothing", 1.5), ("huber", "delta", 0.0),
                             ("multi_margin", "p", 3.0)):
        cls = lf.compile(lf.builtin(name), "torch")
        with pytest.raises(ValueError, match=rf"^{param} = {bad!r} is outside its domain.*checked when it is set"):
            cls(validate=False, **{param: bad})
        module = cls()
        with pytest.raises(ValueError, match=rf"^{param} = {bad!r} is outside its domain"):
            setattr(module, param, bad)
    huber = lf.compile(lf.builtin("huber"), "torch")()
    pred, target = torch.tensor([0.0, 3.0], dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    huber.delta = 2.0  # set as on torch's module: the buffer again, in state_dict, used by the next call
    assert isinstance(huber.delta, torch.Tensor) and huber.state_dict()["delta"].item() == 2.0
    assert float(huber(pred, target)) == float(torch.nn.HuberLoss(delta=2.0)(pred, target))
    assert "delta=2.0" in repr(huber)
    weighted = lf.compile(lf.builtin("cross_entropy"), "torch")(ignore_index=0)
    assert "ignore_index=0," in repr(weighted)  # a class index shown as torch shows it
    weighted.weight = torch.tensor([1.0, 2.0])
    assert list(weighted.state_dict()) == ["weight", "ignore_index", "label_smoothing"]
    weighted.weight = None  # absent again, as torch's weight=None
    assert "weight" not in weighted.state_dict()


def test_spec_files_carry_the_default_and_combined_specs_keep_it():
    text = lf.dumps(lf.builtin("bce"))
    assert "validate = true" in text and lf.loads(text) == lf.builtin("bce")
    assert "validate" not in lf.dumps(lf.builtin("mse"))
    assert lf.loads(text.replace("validate = true\n", "")) != lf.builtin("bce")  # part of the spec's identity
    with pytest.raises(SpecError, match="validate must be true or false") as info:
        lf.loads(text.replace("validate = true", 'validate = "yes"'))
    assert info.value.token == "validate"
    square = lf.LossSpec(name="square", expr="(p - target)**2", symbols={"p": lf.Var("input", domain="probability"),
                                                                         "target": lf.Var("target", domain="probability")})
    both = lf.combine({"a": (lf.builtin("bce"), 1.0), "b": (square, 0.5)})
    assert both.validate
    with pytest.raises(ValueError, match=r"^p\[0\] = 2\.0"):
        lf.compile(both, "torch")()(torch.tensor([2.0]), torch.tensor([1.0]))


def test_a_symbol_named_validate_keeps_its_value():
    spec = lf.LossSpec(name="named", expr="validate*(x - y)**2",
                       symbols={"x": lf.Var("input"), "y": lf.Var("target"),
                                "validate": lf.Var("param", default=3.0, domain="positive")})
    x, y = np.array([1.0, 2.0]), np.array([0.0, 0.0])
    assert lf.compile(spec, "numpy").loss(x, y, validate_=2.0, validate=True) == 5.0
    module = lf.compile(spec, "torch")(validate_=2.0, validate=True)
    assert float(module(torch.tensor(x), torch.tensor(y))) == 5.0
    with pytest.raises(ValueError, match=r"^validate_ = -1\.0 is outside its domain"):
        lf.compile(spec, "torch")(validate_=-1.0, validate=True)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device on this machine")
def test_on_cuda_the_check_is_a_device_side_assert_without_host_sync():
    # A failed device-side assert poisons the process's CUDA context: it runs in a child process.
    import subprocess
    import sys
    import textwrap

    code = textwrap.dedent("""
        import torch, lossforge as lf
        bce = lf.compile(lf.builtin("bce"), "torch")()
        p, t = torch.tensor([0.25, 0.5], device="cuda"), torch.tensor([0.0, 1.0], device="cuda")
        print("ok", float(bce(p, t)))
        torch.cuda.set_sync_debug_mode("error")  # any host sync inside the forward raises
        bce(p, t)
        torch.cuda.set_sync_debug_mode(0)
        bce(torch.tensor([1.5, 0.5], device="cuda"), t)
        torch.cuda.synchronize()
        print("not refused")
    """)
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.stdout.startswith("ok "), run.stderr
    assert "not refused" not in run.stdout and "assert" in run.stderr.lower(), run.stderr
