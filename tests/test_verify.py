"""Verification: every built-in verifies, and wrong implementations are caught."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

import lossforge as lf
from lossforge.errors import VerifyError
from lossforge.testing import assert_matches


@pytest.mark.parametrize("name", lf.builtin_names())
def test_every_builtin_verifies(name):
    report = lf.verify(lf.builtin(name))
    assert report.ok, str(report)
    names = [r.name for r in report.rows]
    assert any("central differences" in n for n in names)
    assert any("gradgradcheck" in n for n in names)
    assert any("finite" in n for n in names)
    assert all(r.tolerance >= 0 for r in report.rows)


def test_a_wrong_symbolic_gradient_would_be_caught_by_the_difference_row(monkeypatch):
    # Break the derivative of softplus (sigmoid(x) -> sigmoid(x)/2) and verify again.
    from lossforge import language as E

    spec = lf.LossSpec(name="sp_broken", expr="softplus(x) - t*x", symbols={"x": lf.Var("input"), "t": lf.Var("target")})
    monkeypatch.setattr(E.softplus, "fdiff", lambda self, argindex=1: E.sigmoid(self.args[0]) / 2)
    report = lf.verify(spec)
    row = next(r for r in report.rows if "central differences" in r.name)
    assert not row.ok and "spec = lf.loads(" in row.reproduction


# -- against a user's implementation ------------------------------------------------------


class WrongBackward(torch.autograd.Function):
    @staticmethod
    def forward(ctx, pred, target):
        ctx.save_for_backward(pred, target)
        return ((pred - target) ** 2).mean()

    @staticmethod
    def backward(ctx, grad):
        pred, target = ctx.saved_tensors
        return grad * (pred - target) / pred.numel(), None  # missing the factor 2


def medical_loss(fn_weight=5.0, ratio=0.1):
    """The chapter's MedicalLoss: BCE plus a penalty on missed positives that has no gradient."""

    def loss(pred, target):
        bce = F.binary_cross_entropy(pred, target)
        mask = (pred < 0.5) & (target == 1)
        return bce + mask.float().sum() * ratio

    return loss


@pytest.mark.parametrize(
    ("name", "fn", "failing"),
    [
        ("mse", WrongBackward.apply, "gradient"),
        ("mse", lambda p, t: 1.01 * F.mse_loss(p, t), "value"),
        ("smooth_l1", lambda p, t: F.huber_loss(p, t, delta=0.5), "value"),
        ("cost_sensitive_bce", medical_loss(), "value"),
        ("cost_sensitive_bce", medical_loss(), "gradient"),
        ("mse", lambda p, t: np.mean((p - t) ** 2) * 1.01, "value"),
        ("mse", lambda p, t: F.mse_loss(p, t, reduction="sum"), "batched"),
        ("mse", lambda p, t: F.mse_loss(p, t, reduction="none"), "batched"),
    ],
)
def test_wrong_implementations_are_caught(name, fn, failing):
    report = lf.verify(lf.builtin(name), against=fn)
    assert not report.ok
    bad = [r for r in report.rows if not r.ok]
    assert any(r.name.startswith(failing) for r in bad), str(report)
    text = str(report)
    assert "FAILED" in text


def test_medical_loss_fails_because_its_penalty_has_no_gradient():
    report = lf.verify(lf.builtin("cost_sensitive_bce"), against=medical_loss())
    grad_row = next(r for r in report.rows if r.name.startswith("gradient"))
    assert not grad_row.ok
    text = str(report)
    assert "import numpy as np" in text and "lf.builtin('cost_sensitive_bce')" in text
    assert "# lossforge:" in text


@pytest.mark.parametrize(
    ("name", "fn"),
    [
        ("mse", F.mse_loss),
        ("mse", torch.nn.MSELoss()),
        ("mse", lambda p, t: np.mean((p - t) ** 2)),
        ("bce", F.binary_cross_entropy),
        ("cross_entropy", F.cross_entropy),
        ("cross_entropy", lambda z, y: F.cross_entropy(z, y.argmax(-1))),
        ("nll", F.nll_loss),
        ("huber", F.huber_loss),
        ("cost_sensitive_bce", lambda p, t: F.binary_cross_entropy(p, t, weight=1 + 4 * t)),
        ("triplet", F.triplet_margin_loss),
    ],
)
def test_correct_implementations_pass(name, fn):
    report = lf.verify(lf.builtin(name), against=fn)
    assert report.ok, str(report)


def test_numpy_implementations_are_differentiated_numerically():
    report = lf.verify(lf.builtin("huber"), against=lambda p, t: np.mean(np.where(np.abs(p - t) < 1, (p - t) ** 2 / 2, np.abs(p - t) - 0.5)))
    assert report.ok, str(report)
    assert any("central differences" in r.name for r in report.rows)


def test_assert_matches_raises_with_the_report():
    assert_matches(lf.builtin("mse"), F.mse_loss)
    with pytest.raises(AssertionError, match="value vs"):
        assert_matches(lf.builtin("mse"), lambda p, t: 1.01 * F.mse_loss(p, t))


def test_uncallable_implementation_is_a_verify_error():
    with pytest.raises(VerifyError, match="'three_args'"):
        def three_args(a, b, c):
            return a
        lf.verify(lf.builtin("mse"), against=three_args)


@pytest.mark.parametrize("bad", [{"samples": 1}, {"tolerances": {"nope": 1.0}}])
def test_bad_options_name_themselves(bad):
    with pytest.raises(VerifyError):
        lf.verify(lf.builtin("mse"), **bad)


def test_report_str_is_a_table():
    text = str(lf.verify(lf.builtin("mse")))
    assert text.splitlines()[0] == "verify mse: ok"
    assert "max error" in text and "tolerance" in text and "pass" in text


@pytest.mark.parametrize(
    ("expr", "domains"),
    [
        ("log(x)", {"x": [-2.0, 3.0]}),  # complex in exact arithmetic below 0
        ("sqrt(sqrt(x))", {"x": "nonnegative"}),  # 1/0 in the gradient at 0
        ("tanh(log(x))*min(x/y, 1)", {"x": [-2.0, 3.0], "y": "positive"}),  # a complex value inside a min
        ("log(2/xlogy(y, x))", {"x": "nonnegative", "y": "nonnegative"}),  # written out: a 2/0 branch
    ],
)
def test_a_hazardous_spec_fails_its_report_instead_of_raising(expr, domains):
    symbols = {n: lf.Var("input", domain=d) for n, d in domains.items()}
    spec = lf.LossSpec(name="bad", expr=expr, symbols=symbols)
    report = lf.verify(spec)
    assert not report.ok
    assert not next(r for r in report.rows if r.name.startswith("finite")).ok
    lf.properties(spec)  # evaluates without raising as well
