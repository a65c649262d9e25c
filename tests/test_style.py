"""The project's own code passes the linter it asks of generated code."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_project_is_ruff_clean():
    out = subprocess.run(
        [sys.executable, "-m", "ruff", "check", "--no-cache", "lossforge", "tests", "examples", "benchmarks"],
        capture_output=True, text=True, cwd=ROOT,
    )
    assert out.returncode == 0, out.stdout + out.stderr
