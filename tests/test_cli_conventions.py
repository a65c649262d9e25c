"""The CLI's conventions, as ruff, mypy and pytest keep them: --version, - for standard input, directories and
several files in one run, exit codes, --select/--ignore/--fail-on, JSON with a schema version, "did you mean"."""

from __future__ import annotations

import io
import json

import pytest

import lossforge as lf
from lossforge.cli import SCHEMA_VERSION, main

NAIVE = """\
name = "naive_bce"
expr = "-(y * log(p) + (1 - y) * log(1 - p))"
[symbols]
p = { role = "input", domain = "probability" }
y = { role = "target", domain = "binary" }
"""
CLEAN = """\
name = "sq"
expr = "(p - y)**2"
[symbols]
p = { role = "input" }
y = { role = "target" }
"""
#: A cancellation warning and nothing worse: clean under --fail-on error, failed under --fail-on warning.
WARNS = """\
name = "warns"
expr = "exp(s) - s"
[symbols]
s = { role = "input", domain = "[-10, 10]" }
"""


def cli(capsys, *args, stdin: str | None = None, monkeypatch=None) -> tuple[int, str, str]:
    if stdin is not None:
        monkeypatch.setattr("sys.stdin", io.StringIO(stdin))
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse: --version, usage errors
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_version(capsys):
    code, out, _ = cli(capsys, "--version")
    assert code == 0 and out.strip() == f"lossforge {lf.__version__}"


def test_a_spec_on_standard_input(capsys, monkeypatch):
    code, out, err = cli(capsys, "check", "-", stdin=NAIVE, monkeypatch=monkeypatch)
    assert code == 1 and "-: loss: unguarded-log" in out, err
    code, out, _ = cli(capsys, "show", "-", "--format", "json", stdin=CLEAN, monkeypatch=monkeypatch)
    assert code == 0 and json.loads(out)["name"] == "sq"
    code, out, _ = cli(capsys, "gen", "-", "--target", "numpy", stdin=CLEAN, monkeypatch=monkeypatch)
    assert code == 0 and "def loss_and_grad(" in out
    code, _, err = cli(capsys, "check", "-", stdin="name = \n", monkeypatch=monkeypatch)
    assert code == 2 and err.startswith("lossforge: error: ") and "<stdin>" in err and len(err.splitlines()) == 1


def test_directories_and_several_files_in_one_run(capsys, tmp_path):
    (tmp_path / "a_naive.toml").write_text(NAIVE)
    nested = tmp_path / "more"
    nested.mkdir()
    (nested / "clean.toml").write_text(CLEAN)
    (tmp_path / "notes.txt").write_text("not a spec")
    code, out, err = cli(capsys, "check", tmp_path)
    assert code == 1, err  # an unaccepted error, every file readable
    reported = [line.split(": ")[0] for line in out.splitlines() if ": ok (" in line or ": FAILED (" in line]
    assert reported == [str(tmp_path / "a_naive.toml"), str(nested / "clean.toml")]  # sorted, recursive, .toml only
    bad = tmp_path / "broken.toml"
    bad.write_text('name = "b"\nexpr = "p +"\n[symbols]\np = { role = "input" }\n')
    code, out, err = cli(capsys, "check", bad, "mse", tmp_path / "gone.toml", nested / "clean.toml")
    assert code == 2  # a spec that could not be read or parsed: 2, after all the others were checked
    assert "mse: ok" in out and f"{nested / 'clean.toml'}: ok" in out
    lines = err.splitlines()
    assert len(lines) == 2 and all(line.startswith("lossforge: error: ") for line in lines)
    assert str(bad) in lines[0] and "syntax" in lines[0] and "gone.toml" in lines[1]
    empty = tmp_path / "empty"
    empty.mkdir()
    code, _, err = cli(capsys, "check", empty)
    assert code == 2 and "no .toml spec files" in err


def test_select_ignore_and_fail_on(capsys, tmp_path):
    naive, warns = tmp_path / "naive.toml", tmp_path / "warns.toml"
    naive.write_text(NAIVE)
    warns.write_text(WARNS)
    code, out, _ = cli(capsys, "check", naive, "--select", "division-by-zero")
    kinds = {line.split(": ")[2] for line in out.splitlines() if line.count(": ") >= 3}
    assert kinds == {"division-by-zero"} and code == 1
    code, out, _ = cli(capsys, "check", naive, "--ignore", "unguarded-log,division-by-zero")
    assert "unguarded-log" not in out and "division-by-zero" not in out
    assert lf.check(lf.load(warns)).ok  # a warning only
    code, out, _ = cli(capsys, "check", warns)
    assert code == 0 and "warning" in out
    code, out, _ = cli(capsys, "check", warns, "--fail-on", "warning")
    assert code == 1 and "FAILED" in out
    code, _, err = cli(capsys, "check", naive, "--select", "overflw")
    assert code == 2 and "did you mean overflow?" in err


@pytest.mark.parametrize("command", [("list",), ("show", "huber"), ("check", "mse", "bce"), ("verify", "mse")])
def test_json_has_a_schema_version_for_every_command(capsys, command):
    code, out, err = cli(capsys, *command, "--format", "json")
    assert code == 0, err
    payload = json.loads(out)
    assert payload["schema_version"] == SCHEMA_VERSION
    if command[0] == "list":
        assert {"name": "mse", "summary": lf.builtin("mse").summary} in payload["builtins"]
    elif command[0] == "show":
        assert payload["symbols"]["delta"] == {"role": "param", "domain": "positive", "default": 1.0, "axis": None}
        assert set(payload["gradients"]) == {"pred"} and payload["properties"]["convex"]["value"] is True
    elif command[0] == "check":
        assert [r["name"] for r in payload["results"]] == ["mse", "bce"]
    else:
        (result,) = payload["results"]
        assert result["ok"] is True and result["rows"] and all(set(r) >= {"name", "ok", "max_error"}
                                                                  for r in result["rows"])


def test_accept_reasons_reach_the_json(capsys, tmp_path):
    src = tmp_path / "accepted.toml"
    src.write_text(NAIVE + '[accept]\nunguarded-log = "p never reaches 0 here: it comes from a clamp upstream"\n')
    code, out, _ = cli(capsys, "check", src, "--format", "json")
    hazards = json.loads(out)["results"][0]["hazards"]
    accepted = [h for h in hazards if h["kind"] == "unguarded-log"]
    assert accepted and all(h["accepted"] and "clamp upstream" in h["reason"] for h in accepted)


@pytest.mark.parametrize(
    ("args", "words"),
    [
        (("show", "hubr"), ("did you mean huber",)),
        (("explain", "overflw"), ("did you mean overflow",)),
    ],
)
def test_did_you_mean(capsys, args, words):
    code, _, err = cli(capsys, *args)
    assert code == 2 and len(err.splitlines()) == 1
    assert all(w in err for w in words), err


def test_did_you_mean_for_functions_and_symbols(capsys, tmp_path):
    src = tmp_path / "typo.toml"
    src.write_text(CLEAN.replace("(p - y)**2", "sigmod(p) - y"))
    code, _, err = cli(capsys, "check", src)
    assert code == 2 and "unknown function 'sigmod' (did you mean sigmoid" in err
    src.write_text(CLEAN.replace("(p - y)**2", "(p - yy)**2"))
    code, _, err = cli(capsys, "check", src)
    assert code == 2 and "undeclared name 'yy' (did you mean y?)" in err
