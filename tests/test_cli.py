"""The command line, run as a subprocess like a user runs it."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = str(ROOT / "examples" / "cost_sensitive.toml")
NAIVE = """\
name = "naive_bce"
expr = "-(y * log(p) + (1 - y) * log(1 - p))"
[symbols]
p = { role = "input", domain = "probability" }
y = { role = "target", domain = "binary" }
"""


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    return subprocess.run(
        [sys.executable, "-m", "lossforge", *args], capture_output=True, text=True, cwd=cwd or ROOT, env=env,
        timeout=300,
    )


def assert_user_error(proc: subprocess.CompletedProcess, *words: str) -> None:
    assert proc.returncode == 2, proc
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], lines[0]


def test_list_names_every_builtin_with_a_summary():
    proc = run("list")
    assert proc.returncode == 0
    lines = proc.stdout.strip().splitlines()
    assert len(lines) == 25
    names = [line.split()[0] for line in lines]
    assert "mse" in names and "emd" in names
    assert all(len(line.split(maxsplit=1)) == 2 for line in lines)


def test_console_script_and_module_agree():
    script = Path(sys.executable).parent / "lossforge"
    assert script.exists()
    proc = subprocess.run([str(script), "list"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0 and proc.stdout == run("list").stdout


def test_show_prints_formula_params_gradient_and_properties():
    proc = run("show", "huber")
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    for word in ("huber", "delta", "default 1.0", "d loss / d pred", "convex", "bounded_gradient", "smoothness"):
        assert word in out, word
    assert "midpoint convexity held" in out  # each property with its evidence


def test_check_text_output_is_linter_like_and_exit_codes(tmp_path):
    naive = tmp_path / "naive.toml"
    naive.write_text(NAIVE)
    proc = run("check", str(naive))
    assert proc.returncode == 1
    assert f"{naive}: loss: unguarded-log:" in proc.stdout or f"{naive}: gradient[p]: " in proc.stdout
    clean = run("check", EXAMPLE)
    assert clean.returncode == 0, clean.stdout


def test_check_json_schema(tmp_path):
    naive = tmp_path / "naive.toml"
    naive.write_text(NAIVE)
    proc = run("check", "--format", "json", str(naive), "mse")
    assert proc.returncode == 1
    payload = json.loads(proc.stdout)
    assert payload["schema_version"] == 1
    data = payload["results"]
    assert [d["spec"] for d in data] == [str(naive), "mse"]
    assert data[0]["ok"] is False and data[1]["ok"] is True
    hazard = data[0]["hazards"][0]
    assert set(hazard) == {"kind", "severity", "where", "expr", "message", "fix", "accepted", "reason", "witness"}
    assert isinstance(hazard["accepted"], bool)
    assert all(isinstance(v, float) for v in hazard["witness"].values()) and hazard["witness"]
    assert any(h["kind"] == "unguarded-log" for h in data[0]["hazards"])
    fix = next(h["fix"] for h in data[0]["hazards"] if h["fix"])  # structured: a tool can apply it
    assert set(fix) == {"safe", "expr", "note"} and isinstance(fix["safe"], bool) and "(" in fix["expr"]


def test_check_dtype_reasons_in_that_type(tmp_path):
    spec = tmp_path / "exp.toml"
    spec.write_text('name = "e"\nexpr = "exp(x)"\n[symbols]\nx = { role = "input", domain = "[0, 20]" }\n')
    assert run("check", str(spec)).returncode == 0
    assert run("check", "--dtype", "float32", str(spec)).returncode == 0
    proc = run("check", "--dtype", "float16", "--format", "json", str(spec))
    assert proc.returncode == 1
    hazard = json.loads(proc.stdout)["results"][0]["hazards"][0]
    assert hazard["kind"] == "overflow" and hazard["witness"] == {"x": 20.0}
    text = run("check", "--dtype", "float16", str(spec))
    assert text.returncode == 1 and "at x = 20" in text.stdout
    assert_user_error(run("check", "--dtype", "float8", str(spec)), "float8")


def test_stabilize_writes_a_spec_and_lists_changes(tmp_path):
    src = tmp_path / "soft.toml"
    src.write_text(
        'name = "soft"\nexpr = "log(1 + exp(x)) - y*x"\n[symbols]\nx = { role = "input" }\ny = { role = "target" }\n'
    )
    out = tmp_path / "stable.toml"
    proc = run("stabilize", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "softplus" in out.read_text()
    assert "fixed:" in proc.stdout
    assert run("check", str(out)).returncode == 0


def test_gen_writes_both_targets(tmp_path):
    for target in ("numpy", "torch"):
        dest = tmp_path / f"loss_{target}.py"
        proc = run("gen", EXAMPLE, "--target", target, "-o", str(dest))
        assert proc.returncode == 0, proc.stderr
        text = dest.read_text()
        assert f"import {target}" in text and "lossforge" not in text.split('"""')[0].replace("lossforge", "", 1)
    proc = run("gen", "mse", "--target", "numpy")
    assert proc.returncode == 0 and "def loss_and_grad" in proc.stdout


def test_verify_passes_a_builtin_and_prints_the_table():
    proc = run("verify", "mse")
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "gradcheck" in proc.stdout and "pass" in proc.stdout


def test_explain_prints_the_rule_documentation():
    proc = run("explain", "unguarded-log")
    assert proc.returncode == 0
    for section in ("What it does", "Why is this bad?", "Example", "Use instead"):
        assert section in proc.stdout


def test_plot_writes_a_real_png(tmp_path):
    out = tmp_path / "curves.png"
    proc = run("plot", "mse", "mae", "huber", "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    data = out.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("show", "nope"), ("nope",)),
        (("show", "missing.toml"), ("missing.toml",)),
        (("gen", "mse", "--target", "tensorflow"), ("tensorflow",)),
        (("explain", "no-such-kind"), ("no-such-kind",)),
        (("check", "nope"), ("nope",)),
        (("verify",), ("--all",)),
        (("frobnicate",), ("frobnicate",)),
        (("gen", "mse"), ("--target",)),
    ],
)
def test_user_errors_exit_2_with_one_line(args, words):
    assert_user_error(run(*args), *words)


def test_malformed_and_unsafe_specs_are_user_errors(tmp_path):
    bad = tmp_path / "bad.toml"
    bad.write_text('name = "x"\nexpr = "p +"\n[symbols]\np = { role = "input" }\n')
    assert_user_error(run("check", str(bad)), "bad.toml" if False else "syntax")
    evil = tmp_path / "evil.toml"
    evil.write_text('name = "x"\nexpr = "__import__(\'os\').system(\'true\')"\n[symbols]\np = { role = "input" }\n')
    assert_user_error(run("gen", str(evil), "--target", "numpy"), "__import__")
    broken = tmp_path / "broken.toml"
    broken.write_text("name = \n")
    assert_user_error(run("show", str(broken)), "broken.toml")


@pytest.mark.parametrize("command", ["list", "show", "check", "stabilize", "gen", "verify", "explain", "plot"])
def test_every_command_has_help(command):
    proc = run(command, "--help")
    assert proc.returncode == 0 and "usage: lossforge" in proc.stdout


def test_verify_shows_progress_on_a_terminal_only():
    import pty

    master, slave = pty.openpty()
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run([sys.executable, "-m", "lossforge", "verify", "mse", "mae"], stdout=subprocess.PIPE,
                          stderr=slave, cwd=ROOT, env=env, timeout=300, text=True)
    os.close(slave)
    seen = b""
    try:
        while chunk := os.read(master, 4096):
            seen += chunk
    except OSError:  # the terminal is closed once everything is read
        pass
    os.close(master)
    assert proc.returncode == 0
    assert "[1/2] verifying mse" in seen.decode() and "[2/2] verifying mae" in seen.decode()
    assert "== mse ==" in proc.stdout and "== mae ==" in proc.stdout
    piped = run("verify", "mse", "mae")
    assert piped.returncode == 0 and "verifying" not in piped.stderr


COMMENTED = """\
# A softplus loss, written by hand.
# [symbols] x = { role = "param" }   <- a comment that looks like TOML, and "quotes" \\ backslashes

name = "soft"          # trailing comment
reduction = "sum"

expr = "log(1 + exp(x)) - y*x"   # the naive form
description = "λ ≥ 0 — ünïcode kept"

# inputs below, in the user's order
[symbols]
y = { role = "target" }   # target first
x = { role = "input", domain = "real" }
"""


def _stabilized(tmp_path: Path, text: str, newline: str = "\n") -> tuple[str, str]:
    src = tmp_path / "soft.toml"
    src.write_bytes(text.replace("\n", newline).encode("utf-8"))
    out = tmp_path / "stable.toml"
    proc = run("stabilize", str(src), "-o", str(out))
    assert proc.returncode == 0, proc.stderr
    return src.read_bytes().decode("utf-8"), out.read_bytes().decode("utf-8")


def _changed_lines(before: str, after: str) -> list[str]:
    import difflib

    return [line for line in difflib.ndiff(before.splitlines(keepends=True), after.splitlines(keepends=True))
            if line[:1] in "+-"]


def test_stabilize_keeps_comments_blank_lines_and_key_order(tmp_path):
    import lossforge as lf

    before, after = _stabilized(tmp_path, COMMENTED)
    assert _changed_lines(before, after) == [
        '- expr = "log(1 + exp(x)) - y*x"   # the naive form\n',
        '+ expr = "-x*y + softplus(x)"   # the naive form\n',
    ]
    today = lf.loads(lf.dumps(lf.stabilize(lf.loads(before))))  # what stabilize wrote before layouts were kept
    assert lf.loads(after) == today


def test_stabilize_keeps_crlf_line_endings(tmp_path):
    before, after = _stabilized(tmp_path, COMMENTED, newline="\r\n")
    assert after.count("\r\n") == after.count("\n") == before.count("\r\n")
    assert _changed_lines(before, after) == [
        '- expr = "log(1 + exp(x)) - y*x"   # the naive form\r\n',
        '+ expr = "-x*y + softplus(x)"   # the naive form\r\n',
    ]


def test_stabilize_keeps_a_multiline_expr_multiline(tmp_path):
    import lossforge as lf

    text = COMMENTED.replace('expr = "log(1 + exp(x)) - y*x"   # the naive form', 'expr = """\nlog(1 + exp(x))\n  - y*x"""')
    before, after = _stabilized(tmp_path, text)
    assert sorted(_changed_lines(before, after)) == sorted(['+ -x*y + softplus(x)"""\n', '- log(1 + exp(x))\n', '-   - y*x"""\n'])
    assert 'expr = """\n-x*y + softplus(x)"""\n' in after
    assert lf.loads(after) == lf.loads(lf.dumps(lf.stabilize(lf.loads(before))))


def test_stabilize_of_a_builtin_or_stdin_writes_as_dumps(tmp_path):
    import lossforge as lf

    out = tmp_path / "bce.toml"
    assert run("stabilize", "bce", "-o", str(out)).returncode == 0
    assert out.read_text() == lf.dumps(lf.stabilize(lf.builtin("bce")))
    env = {k: v for k, v in os.environ.items() if not k.startswith("PYTEST")}
    proc = subprocess.run([sys.executable, "-m", "lossforge", "stabilize", "-"], input=COMMENTED, text=True,
                          capture_output=True, cwd=ROOT, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout == lf.dumps(lf.stabilize(lf.loads(COMMENTED)))


def test_stabilize_with_a_layout_still_refuses_its_input(tmp_path):
    src = tmp_path / "soft.toml"
    src.write_text(COMMENTED)
    assert_user_error(run("stabilize", str(src), "-o", str(src)), "refusing", "input spec")
    assert src.read_text() == COMMENTED
