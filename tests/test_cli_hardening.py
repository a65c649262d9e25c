"""The CLI against hostile or mistaken input: file errors, the input spec as output, plot formats, terminal escapes.

Most tests call :func:`lossforge.cli.main` in-process (fast); the few that need a
real process (no traceback at all reaches a user) use the ``run`` helper of
``test_cli``.
"""

from __future__ import annotations

import json
import os
import sys
from pathlib import Path

import pytest

from lossforge.cli import main
from lossforge.errors import LossforgeError, SpecError

from .test_cli import NAIVE, run

ESC = "\x1b"
AS_ROOT = hasattr(os, "geteuid") and os.geteuid() == 0
SOFT = 'name = "soft"\nexpr = "log(1 + exp(x)) - y*x"\n[symbols]\nx = { role = "input" }\ny = { role = "target" }\n'
#: A spec whose every text field carries a terminal escape (ESC, C1 CSI, a bidi override), written as TOML escapes.
HOSTILE = r'''name = "soft"
description = "desc \u001b[2J\u009b31m \u202e end"
summary = "sum \u001b]0;owned\u0007"
formula = "form \u001b[31m"
reference = "ref \u001b[1m"
stable_form = "stable \u001b[5m"
expr = "log(1 + exp(x)) - y*x"
[symbols]
x = { role = "input" }
y = { role = "target" }
[accept]
overflow = "reason \u001b[41m"
'''


def cli(capsys, *args: str) -> tuple[int, str, str]:
    """``lossforge ARGS`` in-process: (exit code, stdout, stderr)."""
    try:
        code = main([str(a) for a in args])
    except SystemExit as exc:  # argparse
        code = exc.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *words: str) -> str:
    assert code == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert lines[0].startswith("lossforge: error: "), lines[0]
    assert "Traceback" not in err
    for word in words:
        assert word in lines[0], (word, lines[0])
    return lines[0]


def spec_file(tmp_path: Path, name: str = "s.toml", text: str = SOFT) -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


# -- 1. file errors ---------------------------------------------------------------


@pytest.mark.parametrize("command", ["gen", "stabilize", "plot"])
@pytest.mark.parametrize("case", ["directory", "missing-parent", "parent-is-a-file"])
def test_file_errors_on_output_exit_2_with_one_line(capsys, tmp_path, command, case):
    src = spec_file(tmp_path)
    before = src.read_bytes()
    name = "x.png" if command == "plot" else "x.py"
    out, words = {
        "directory": (tmp_path / "adir.png", ("is a directory",)),
        "missing-parent": (tmp_path / "out" / name, ("no such directory", repr(str(tmp_path / "out")), "create it")),
        "parent-is-a-file": (src / name, ("is not a directory", repr(str(src)))),
    }[case]
    if case == "directory":
        out.mkdir()
    extra = {"gen": ("--target", "numpy"), "stabilize": (), "plot": ()}[command]
    code, _, err = cli(capsys, command, src, *extra, "-o", out)
    assert_one_line_error(code, err, repr(str(out)), *words)
    assert src.read_bytes() == before
    if case == "directory":
        assert not list(out.iterdir())


def test_file_errors_on_an_unwritable_output(capsys, tmp_path):
    if AS_ROOT:  # chmod does not stop root: a place no one can create a file instead
        out = Path("/proc/x.py")
    else:
        locked = tmp_path / "locked"
        locked.mkdir()
        locked.chmod(0o500)
        out = locked / "x.py"
    try:
        code, _, err = cli(capsys, "gen", "mse", "--target", "numpy", "-o", out)
    finally:
        if not AS_ROOT:
            out.parent.chmod(0o700)
    line = assert_one_line_error(code, err, repr(str(out)), "cannot write")
    if not AS_ROOT:
        assert "permission denied" in line
    assert not out.exists()


def test_file_errors_on_any_oserror_while_writing(capsys, tmp_path, monkeypatch):
    def fail(self, data):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(Path, "write_bytes", fail)
    out = tmp_path / "x.py"
    code, _, err = cli(capsys, "gen", "mse", "--target", "numpy", "-o", out)
    assert_one_line_error(code, err, repr(str(out)), "No space left on device")


@pytest.mark.parametrize("case", ["missing", "missing-directory", "directory", "not-utf8", "unreadable"])
def test_file_errors_on_a_spec_exit_2_with_one_line(capsys, tmp_path, monkeypatch, case):
    words: tuple[str, ...] = ()
    if case == "missing":
        path, words = tmp_path / "gone.toml", ("no such spec file",)
    elif case == "missing-directory":
        path, words = tmp_path / "nodir" / "s.toml", ("no such directory", repr(str(tmp_path / "nodir")))
    elif case == "directory":
        path, words = tmp_path / "specs.toml", ("is a directory", ".toml spec file")
        path.mkdir()
    elif case == "not-utf8":
        path, words = tmp_path / "latin1.toml", ("not UTF-8", "0xe9", "save it as UTF-8")
        path.write_bytes('name = "caf\u00e9"\n'.encode("latin-1"))
    else:
        path, words = spec_file(tmp_path), ("permission denied",)
        path.chmod(0)
        if AS_ROOT:  # chmod does not stop root: the read fails as it would for anyone else
            real = Path.read_bytes

            def denied(self):
                if self == path:
                    raise PermissionError(13, "Permission denied", str(self))
                return real(self)

            monkeypatch.setattr(Path, "read_bytes", denied)
    try:
        for args in (("show", path), ("check", path), ("gen", path, "--target", "numpy"), ("stabilize", path)):
            code, out, err = cli(capsys, *args)
            assert_one_line_error(code, err, repr(str(path)), *words)
            assert out == ""
    finally:
        if case == "unreadable":
            path.chmod(0o600)


def test_file_errors_a_directory_without_toml_suffix_is_not_a_builtin(capsys, tmp_path):
    code, _, err = cli(capsys, "show", tmp_path)
    assert_one_line_error(code, err, repr(str(tmp_path)), "is a directory")


# -- 2. never overwrite the input spec ------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("gen", "{src}", "--target", "torch", "-o", "{src}"),
        ("gen", "{src}", "--target", "numpy", "-o", "{other}"),  # another spelling of the same file
        ("gen", "{src}", "--target", "numpy", "-o", "{link}"),  # a link to it
        ("stabilize", "{src}", "-o", "{src}"),
        ("stabilize", "{src}", "-o", "{other}"),
        ("plot", "mse", "{src}", "-o", "{src}"),
        ("plot", "{png}", "-o", "{png}"),  # a spec file that happens to end in .png
    ],
)
def test_never_overwrite_the_input_spec(capsys, tmp_path, args):
    src = spec_file(tmp_path)
    png = spec_file(tmp_path, "spec.png")
    link = tmp_path / "link.py"
    link.symlink_to(src)
    other = tmp_path / "." / "sub" / ".." / "s.toml"
    (tmp_path / "sub").mkdir()
    names = {"src": src, "png": png, "link": link, "other": other}
    before = {p: p.read_bytes() for p in (src, png)}
    argv = [a.format(**names) for a in args]
    code, out, err = cli(capsys, *argv)
    line = assert_one_line_error(code, err, "refusing to write", argv[-1] if "{other}" not in args else "s.toml")
    assert "input spec" in line
    if args[0] == "stabilize":
        assert "in place" in line and "move" in line
    assert out == ""
    assert {p: p.read_bytes() for p in (src, png)} == before


def test_never_overwrite_the_input_spec_but_other_outputs_work(capsys, tmp_path):
    src = spec_file(tmp_path)
    before = src.read_bytes()
    dest = tmp_path / "stable.toml"
    code, out, err = cli(capsys, "stabilize", src, "-o", dest)
    assert code == 0, err
    assert f"wrote {dest}" in out and "softplus" in dest.read_text()
    code, _, err = cli(capsys, "gen", src, "--target", "numpy", "-o", tmp_path / "s.py")
    assert code == 0 and err.strip() == f"wrote {tmp_path / 's.py'}"
    assert src.read_bytes() == before


# -- 3. plot -o ---------------------------------------------------------------------


@pytest.mark.parametrize("name", ["adir", "x.txt", "x.jpg", "x.eps", "x.toml"])
def test_plot_output_needs_png_pdf_or_svg(capsys, tmp_path, name):
    out = tmp_path / name
    code, _, err = cli(capsys, "plot", "mse", "-o", out)
    line = assert_one_line_error(code, err, repr(str(out)), ".png", ".pdf", ".svg")
    assert ("no extension" in line) if "." not in name else (Path(name).suffix in line)
    assert not list(tmp_path.iterdir())  # neither the file nor a suffixed sibling


@pytest.mark.parametrize(("name", "magic"), [("c.svg", b"<?xml"), ("c.pdf", b"%PDF"), ("C.PNG", b"\x89PNG")])
def test_plot_output_names_exactly_the_file_written(capsys, tmp_path, name, magic):
    out = tmp_path / name
    code, stdout, err = cli(capsys, "plot", "mse", "huber", "-o", out)
    assert code == 0, err
    assert err.strip() == f"wrote {out}"
    assert [p.name for p in tmp_path.iterdir()] == [name]
    assert out.read_bytes().startswith(magic) and stdout == ""


def test_plot_output_python_api_raises_a_lossforge_error_and_writes_the_path(tmp_path):
    import lossforge as lf
    from lossforge.plot import plot

    with pytest.raises(SpecError, match=r"x\.txt.*\.png, \.pdf, \.svg") as info:
        plot([lf.builtin("mse")], tmp_path / "x.txt")
    assert isinstance(info.value, ValueError) and isinstance(info.value, LossforgeError)
    with pytest.raises(SpecError, match="no extension"):
        plot([lf.builtin("mse")], tmp_path / "adir")
    out = tmp_path / "new" / "c.png"  # the Python API still creates a missing parent
    assert type(plot([lf.builtin("mse")], out)).__name__ == "Figure"
    assert out.read_bytes()[:4] == b"\x89PNG" and sorted(p.name for p in tmp_path.iterdir()) == ["new"]


# -- 4. terminal injection ------------------------------------------------------------


def assert_inert(*streams: str) -> None:
    for text in streams:
        assert ESC not in text and "\x9b" not in text and "\u202e" not in text and "\x07" not in text, text


def test_terminal_injection_show_prints_text_fields_escaped(capsys, tmp_path):
    src = spec_file(tmp_path, text=HOSTILE)
    code, out, err = cli(capsys, "show", src)
    assert code == 0, err
    assert_inert(out, err)
    for spelled in ("sum \\x1b]0;owned\\x07", "ref \\x1b[1m", "stable \\x1b[5m"):
        assert spelled in out, spelled


def test_terminal_injection_check_text_and_json(capsys, tmp_path):
    src = spec_file(tmp_path, f"evil{ESC}[2J.toml", NAIVE + '[accept]\nunguarded-log = "on purpose \\u001b[41m"\n')
    code, out, err = cli(capsys, "check", src)
    assert code in (0, 1), err
    assert_inert(out, err)
    assert "evil\\x1b[2J.toml" in out and "(accepted: on purpose \\x1b[41m)" in out
    code, out, err = cli(capsys, "check", "--format", "json", src)
    assert code in (0, 1), err
    assert_inert(out, err)
    assert "\\u001b" in out and json.loads(out)["results"][0]["spec"] == str(src)  # escaped in JSON, the same text read back


def test_terminal_injection_stabilize_toml_and_diff(capsys, tmp_path):
    import tomllib

    src = spec_file(tmp_path, text=HOSTILE)
    code, out, err = cli(capsys, "stabilize", src)
    assert code == 0, err
    assert_inert(out, err)
    assert "\\u001b" in out and "\\u009b" in out and "\\u202e" in out  # TOML's own escapes
    data = tomllib.loads(out)
    assert data["description"] == "desc \x1b[2J\x9b31m \u202e end" and data["formula"] == "form \x1b[31m"
    assert err.startswith("- ") and "+ " in err
    dest = tmp_path / "stable.toml"
    code, out, err = cli(capsys, "stabilize", src, "-o", dest)
    assert code == 0 and ESC not in dest.read_text() and tomllib.loads(dest.read_text())["reference"] == "ref \x1b[1m"
    assert_inert(out, err)


def test_terminal_injection_gen_to_stdout_is_inert(capsys, tmp_path):
    src = spec_file(tmp_path, text=HOSTILE)
    for target in ("numpy", "torch"):
        code, out, err = cli(capsys, "gen", src, "--target", target)
        assert code == 0, err
        assert_inert(out, err)


def test_terminal_injection_in_error_messages(capsys, tmp_path):
    bad = spec_file(tmp_path, "bad.toml", 'name = "x"\nexpr = "p + \\u001b[2J"\n[symbols]\np = { role = "input" }\n')
    code, out, err = cli(capsys, "show", bad)
    assert_one_line_error(code, err, "bad.toml", "\\x1b")
    assert_inert(out, err)
    missing = tmp_path / f"gone{ESC}[2J.toml"
    for args in (("show", missing), ("gen", "mse", "--target", "numpy", "-o", tmp_path / f"no{ESC}]0;t\x07" / "x.py"),
                 ("list", f"--bogus{ESC}[2J"), ("show", f"nope{ESC}[2J")):
        code, out, err = cli(capsys, *args)
        assert_one_line_error(code, err, "\\x1b")
        assert_inert(out, err)


# -- 5. no traceback from file handling ---------------------------------------------------


def test_no_traceback_from_file_handling_in_a_real_process(tmp_path):
    adir = tmp_path / "specs.toml"
    adir.mkdir()
    latin = tmp_path / "latin1.toml"
    latin.write_bytes(b"name = \"caf\xe9\"\n")
    src = spec_file(tmp_path)
    before = src.read_bytes()
    cases = [
        (("show", str(adir)), str(adir)),
        (("check", str(latin)), str(latin)),
        (("gen", str(src), "--target", "numpy", "-o", str(tmp_path)), str(tmp_path)),
        (("gen", str(src), "--target", "numpy", "-o", str(tmp_path / "out" / "x.py")), "out"),
        (("gen", str(src), "--target", "torch", "-o", str(src)), str(src)),
        (("plot", "mse", "-o", str(tmp_path / "x.txt")), "x.txt"),
    ]
    for args, word in cases:
        proc = run(*args)
        assert proc.returncode == 2, proc
        lines = proc.stderr.strip().splitlines()
        assert len(lines) == 1 and word in lines[0], proc.stderr
        assert "Traceback" not in proc.stderr + proc.stdout
        assert "Error:" not in lines[0]  # no exception class name leaks either
    assert src.read_bytes() == before


@pytest.mark.parametrize("exc", [IsADirectoryError(21, "Is a directory", "x"), PermissionError(13, "denied", "y"),
                                 OSError(5, "Input/output error")])
def test_no_traceback_from_an_oserror_no_command_expected(capsys, monkeypatch, exc):
    import lossforge.cli as cli_module

    def boom(args):
        raise exc

    monkeypatch.setattr(sys.modules["lossforge"], "builtin_names", lambda: boom(None))
    code, out, err = cli(capsys, "list")
    assert_one_line_error(code, err, exc.strerror)
    assert cli_module.EXIT_USAGE == 2 and out == ""
