"""Every example runs, as a user would run it."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


@pytest.mark.parametrize("name", ["medical", "focal_variant", "multitask"])
def test_example_runs(name):
    done = subprocess.run([sys.executable, str(EXAMPLES / f"{name}.py")], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stdout + done.stderr


def test_medical_example_shows_the_missing_gradient():
    done = subprocess.run([sys.executable, str(EXAMPLES / "medical.py")], capture_output=True, text=True, timeout=300)
    assert "zero-gradient" in done.stdout
    assert "verify cost_sensitive_bce: FAILED" in done.stdout and "verify cost_sensitive_bce: ok" in done.stdout


def test_demo_runs_end_to_end(tmp_path):
    env = {"BUILD": str(tmp_path), "PATH": "/usr/bin:/bin"}
    done = subprocess.run([sys.executable, str(EXAMPLES / "demo.py")], capture_output=True, text=True, timeout=600,
                          env=env)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr
    for name in ("cost_sensitive_bce_np.py", "cost_sensitive_bce_torch.py", "mse_mae_huber.png"):
        assert (tmp_path / name).exists()
