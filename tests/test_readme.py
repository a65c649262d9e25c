"""The README's Python example runs verbatim."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

README = Path(__file__).resolve().parent.parent / "README.md"


def python_blocks() -> list[str]:
    return re.findall(r"```python\n(.*?)```", README.read_text(), flags=re.S)


def test_readme_names_the_two_commands_first():
    text = README.read_text()
    first_block = re.search(r"```sh\n(.*?)```", text, flags=re.S).group(1)
    assert [line.split()[0:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]


def test_readme_example_runs(capsys, monkeypatch):
    monkeypatch.chdir(README.parent)  # the examples use paths relative to the repository
    blocks = python_blocks()
    assert blocks, "README has no python example"
    namespace: dict = {}
    for block in blocks:
        if "import jax" in block:  # the JAX target's example: test_readme_jax_example_runs
            continue
        exec(compile(block, str(README), "exec"), namespace)  # our own README, not user text
    out = capsys.readouterr().out
    assert "w*(2*pred - 2*target)" in out
    assert "-y + exp(z - logsumexp(z))" in out


def test_readme_jax_example_runs(monkeypatch):
    pytest.importorskip("jax")
    monkeypatch.chdir(README.parent)
    (block,) = [b for b in python_blocks() if "import jax" in b]
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # our own README, not user text
    assert namespace["per_row"].shape == (4,) and namespace["grad_z"].shape == (4, 10)
