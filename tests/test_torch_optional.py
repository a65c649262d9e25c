"""torch is optional: without it verify and assert_matches run their NumPy rows (the torch rows say they need it),
and every use that needs it is a LossforgeError naming the extra to install."""

from __future__ import annotations

import sys

import numpy as np
import pytest

import lossforge as lf
from lossforge.testing import assert_matches
from lossforge.verify import NEEDS_TORCH, TORCH_ROWS


@pytest.fixture
def no_torch(monkeypatch):
    """A process where ``import torch`` fails, as where it is not installed."""
    for name in [m for m in sys.modules if m == "torch" or m.startswith("torch.")]:
        monkeypatch.setitem(sys.modules, name, None)
    monkeypatch.setitem(sys.modules, "torch", None)
    with pytest.raises(ImportError):
        import torch  # noqa: F401


def huber_numpy(pred, target):
    r = np.abs(pred - target)
    return np.mean(np.where(r < 1.0, 0.5 * r**2, r - 0.5))


def test_verify_runs_its_numpy_rows_without_torch(no_torch):
    report = lf.verify(lf.builtin("huber"))
    assert report.ok
    skipped = [r for r in report.rows if r.skipped]
    assert [r.name for r in skipped] == list(TORCH_ROWS) and all(r.detail == NEEDS_TORCH for r in skipped)
    run = [r for r in report.rows if not r.skipped]
    assert {r.name for r in run} >= {"gradient vs 30-digit central differences", "numpy float64 vs 30-digit evaluation",
                                     "finite at the domains' extremes"}
    assert "skip" in str(report) and "lossforge[torch]" in str(report)


def test_a_wrong_numpy_implementation_still_fails_without_torch(no_torch):
    assert_matches(lf.builtin("huber"), huber_numpy)
    with pytest.raises(AssertionError, match="FAIL"):
        assert_matches(lf.builtin("huber"), lambda p, t: huber_numpy(p, t) * 1.01)


def test_the_torch_target_without_torch_names_the_extra(no_torch):
    spec = lf.builtin("mse").rename(pred="pred_no_torch")  # a module this process has not compiled yet
    with pytest.raises(lf.RenderError, match=r"pip install 'lossforge\[torch\]'"):
        lf.compile(spec, "torch")
    assert "import torch" in lf.generate(spec, "torch")  # generating the source needs no torch
