"""The README's examples run verbatim, from a folder of their own (never the repository's root)."""

from __future__ import annotations

import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
SAVED_AS = re.compile(r"Save this one as `([^`]+\.toml)`")


def blocks(lang: str) -> list[str]:
    return re.findall(rf"```{lang}\n(.*?)```", README.read_text(encoding="utf-8"), flags=re.S)


def python_blocks() -> list[str]:
    return blocks("python")


def shell_blocks() -> list[str]:
    """The sh/bash/shell/console blocks that run lossforge."""
    out = []
    for lang in ("sh", "bash", "shell", "console"):
        out += [b for b in blocks(lang) if re.search(r"^\$?\s*lossforge\b", b, flags=re.M)]
    return out


def readme_files(folder: Path) -> None:
    """Write into ``folder`` the files the README tells its reader to save: each TOML spec it names."""
    text = README.read_text(encoding="utf-8")
    for match in SAVED_AS.finditer(text):
        spec = re.search(r"```toml\n(.*?)```", text[match.end():], flags=re.S).group(1)
        (folder / match.group(1)).write_text(spec, encoding="utf-8")


def _needs(module: str) -> None:
    if importlib.util.find_spec(module) is None:
        pytest.skip(f"the README block needs the optional {module}")


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    env["PYTHONPATH"] = os.pathsep.join([str(ROOT), *filter(None, [env.get("PYTHONPATH")])])  # this checkout's lossforge
    return env


@pytest.fixture
def elsewhere(tmp_path, monkeypatch):
    """A fresh folder as cwd, holding only what the README says to save."""
    monkeypatch.chdir(tmp_path)
    readme_files(tmp_path)
    return tmp_path


def test_readme_names_the_two_commands_first():
    first_block = blocks("sh")[0]
    assert [line.split()[0:2] for line in first_block.strip().splitlines()] == [["make", "demo"], ["make", "test"]]


def test_readme_names_no_repository_file_in_a_block():
    for block in python_blocks() + shell_blocks():
        assert "examples/" not in block, block  # the blocks run where the reader is, not in a clone


def test_readme_example_runs(capsys, elsewhere):
    namespace: dict = {}
    for block in python_blocks():
        if "import jax" in block:  # the JAX target's example: test_readme_jax_example_runs
            continue
        if "import torch" in block:  # the torch examples: test_readme_torch_examples_run
            continue
        exec(compile(block, str(README), "exec"), namespace)  # our own README, not user text
    out = capsys.readouterr().out
    assert "w*(2*pred - 2*target)" in out
    assert "-y + exp(z - logsumexp(z))" in out


@pytest.mark.parametrize("index", [i for i, b in enumerate(python_blocks()) if "import torch" in b])
def test_readme_torch_examples_run(index, elsewhere):
    _needs("torch")
    block = python_blocks()[index]
    exec(compile(block, str(README), "exec"), {})  # our own README, not user text


def test_readme_jax_example_runs(elsewhere):
    _needs("jax")
    (block,) = [b for b in python_blocks() if "import jax" in b]
    namespace: dict = {}
    exec(compile(block, str(README), "exec"), namespace)  # our own README, not user text
    assert namespace["per_row"].shape == (4,) and namespace["grad_z"].shape == (4, 10)


def test_readme_saves_every_toml_spec_it_shows():
    assert len(SAVED_AS.findall(README.read_text(encoding="utf-8"))) == len(blocks("toml")) >= 1


@pytest.mark.parametrize("index", range(len(blocks("toml"))))
def test_readme_toml_specs_pass_check(index, tmp_path):
    spec = tmp_path / "spec.toml"
    spec.write_text(blocks("toml")[index], encoding="utf-8")
    proc = subprocess.run([sys.executable, "-m", "lossforge", "check", str(spec)], capture_output=True, text=True,
                          cwd=tmp_path, env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def _commands() -> list[str]:
    out = []
    for block in shell_blocks():
        for line in block.splitlines():
            line = line.split(" #", 1)[0].strip().removeprefix("$ ")
            if line.startswith("lossforge "):
                out.append(line)
    return out


@pytest.mark.parametrize("line", _commands())
def test_readme_commands_run(line, elsewhere):
    if " plot " in f" {line} ":
        _needs("matplotlib")
    if " --target torch" in line or line.startswith("lossforge verify"):
        _needs("torch")
    argv = shlex.split(line)
    if argv[1] in ("stabilize", "gen", "plot"):  # each writes a file of its own: none is there before
        out = argv[argv.index("-o") + 1]
        assert not (elsewhere / out).exists()
    proc = subprocess.run([sys.executable, "-m", *argv], capture_output=True, text=True, cwd=elsewhere,
                          env=_env(), timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    if argv[1] in ("stabilize", "gen", "plot"):
        assert (elsewhere / out).stat().st_size > 0


def test_readme_names_only_examples_the_repository_has():
    named = set(re.findall(r"`(examples/[\w./-]+)`", README.read_text(encoding="utf-8")))
    assert named and all((ROOT / name).is_file() for name in named), sorted(n for n in named if not (ROOT / n).is_file())
    assert "not installed with the package" in README.read_text(encoding="utf-8")  # the README says where they are
