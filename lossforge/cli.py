"""The command line: a thin layer over the public API.

Each command resolves its spec argument (a built-in name or a TOML file),
calls one public function and prints its result. Every user error exits 2
with a one-line message on stderr; a failed check or verification exits 1.

A spec file is shared like any document, so all text the CLI prints for a
person (stdout and stderr, error messages included) goes through
:func:`lossforge.text.terminal`: no control character of a spec reaches a
terminal raw. Files are read by :func:`_read_spec` and written by
:func:`_write_output` only, which turn every ``OSError`` into a one-line user
error naming the path and never write over an input spec.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
from collections.abc import Iterable
from pathlib import Path

import sympy

import lossforge as lf

from .analysis.hazards import KINDS
from .analysis.intervals import DTYPES
from .errors import LossforgeError, SpecError, UnknownNameError, did_you_mean
from .text import terminal

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {_one_line(message)}\n")
        raise SystemExit(EXIT_USAGE)


def _say(text: object = "", file=None) -> None:
    """Print ``text`` for a person: control characters spelled out (``\\x1b``), never raw."""
    print(terminal(text), file=file)


def _one_line(message: object) -> str:
    """The first line of an error message, made safe for a terminal."""
    lines = str(message).splitlines()
    return terminal(lines[0] if lines else "")


def _q(path: object) -> str:
    """A path quoted for a message, as the rest of lossforge quotes names."""
    return repr(str(path))


# -- files ------------------------------------------------------------------------


def _spec_file(ref: str) -> Path | None:
    """The path ``ref`` names, or None when it names a built-in."""
    path = Path(ref)
    if ref.endswith(".toml") or path.exists() or "/" in ref or os.sep in ref:
        return path
    return None


def _read_spec(path: Path):
    """Load the spec file ``path`` (``lf.load`` with messages that say how to fix a file error)."""
    where = _q(path)
    if path.is_dir():
        raise SpecError(f"cannot read {where}: it is a directory (name a .toml spec file)", token=str(path))
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        missing = next((p for p in reversed(path.parents) if not p.exists()), None)
        hint = f"no such directory {_q(missing)}" if missing is not None else "check the path"
        raise SpecError(
            f"no such spec file: {where} ({hint}; 'lossforge list' names the built-ins)", token=str(path)
        ) from None
    except PermissionError:
        raise SpecError(f"cannot read {where}: permission denied (check its permissions)", token=str(path)) from None
    except OSError as exc:
        raise SpecError(f"cannot read {where}: {exc.strerror or exc} (check the path)", token=str(path)) from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise SpecError(
            f"cannot read {where}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset {exc.start}); "
            "save it as UTF-8",
            token=str(path),
        ) from None
    try:
        return lf.loads(text, source=str(path))
    except LossforgeError as exc:
        if str(path) in str(exc):
            raise
        try:  # name the file too: "bad.toml: syntax error at column 5 ..."
            named = type(exc)(f"{path}: {exc}", token=exc.token)
        except TypeError:  # an error class with another signature: as it is
            raise exc from None
        raise named from None


#: The name standing for standard input, as for most command-line tools.
STDIN = "-"


def _resolve(ref: str):
    """A built-in name, ``-`` (a spec on standard input) or a path to a TOML spec."""
    if ref == STDIN:
        try:
            text = sys.stdin.read()
        except UnicodeDecodeError as exc:
            raise SpecError(f"cannot read standard input: not UTF-8 text ({exc.reason})", token=STDIN) from None
        return lf.loads(text, source="<stdin>")
    path = _spec_file(ref)
    return lf.builtin(ref) if path is None else _read_spec(path)


def _expanded(refs: Iterable[str]) -> list[str]:
    """``refs`` with each directory replaced by the ``.toml`` files under it, sorted (as ruff and mypy walk one);
    a directory with none is a user error naming it."""
    out = []
    for ref in refs:
        path = Path(ref)
        if ref != STDIN and path.is_dir() and path.suffix != ".toml":  # (a directory named x.toml: named as such)
            found = sorted(str(p) for p in path.rglob("*.toml") if p.is_file())
            if not found:
                raise SpecError(f"no .toml spec files under the directory {_q(path)}", token=ref)
            out += found
        else:
            out.append(ref)
    return out


def _spec_files(refs: Iterable[str]) -> list[Path]:
    """The spec files among ``refs`` (the inputs no output may replace)."""
    return [path for path in map(_spec_file, (r for r in refs if r != STDIN)) if path is not None]


def _same_file(a: Path, b: Path) -> bool:
    """Whether ``a`` is the existing file ``b`` (by inode, so also through a link or another spelling)."""
    try:
        return a.exists() and b.exists() and os.path.samefile(a, b)
    except OSError:
        return a.resolve() == b.resolve()


_ELSEWHERE = "write to another file"


def _check_output(output: str, inputs: Iterable[Path], elsewhere: str = _ELSEWHERE) -> Path:
    """``output`` as a path, once it is known not to be an input spec or an impossible place to write."""
    path = Path(output)
    where = _q(path)
    for spec in inputs:
        if _same_file(path, spec):
            raise LossforgeError(f"refusing to write {where}: it is the input spec {_q(spec)} ({elsewhere})",
                                 token=str(path))
    if path.is_dir():
        raise LossforgeError(f"cannot write {where}: it is a directory (name a file inside it)", token=str(path))
    parent = path.parent
    for above in (parent, *parent.parents):  # the nearest ancestor that exists must be a directory
        if above.exists():
            if not above.is_dir():
                raise LossforgeError(f"cannot write {where}: {_q(above)} is not a directory", token=str(path))
            break
    if not parent.exists():
        raise LossforgeError(f"cannot write {where}: no such directory {_q(parent)} (create it first)",
                             token=str(path))
    return path


def _write_output(output: str, data: str | bytes, inputs: Iterable[Path], elsewhere: str = _ELSEWHERE) -> Path:
    """Write ``data`` to ``output``: the one place the CLI writes a file; every failure is a user error."""
    inputs = list(inputs)
    path = _check_output(output, inputs, elsewhere)
    raw = data.encode("utf-8") if isinstance(data, str) else data
    try:
        path.write_bytes(raw)
    except PermissionError:
        target = path if path.exists() else path.parent
        raise LossforgeError(
            f"cannot write {_q(path)}: permission denied (check the permissions of {_q(target)}, or write elsewhere)",
            token=str(path),
        ) from None
    except OSError as exc:
        _check_output(output, inputs, elsewhere)  # it may have changed since: the precise message first
        raise LossforgeError(f"cannot write {_q(path)}: {exc.strerror or exc} (write elsewhere)",
                             token=str(path)) from None
    return path


def _pretty(expr: sympy.Basic) -> str:
    return sympy.pretty(expr, use_unicode=True, num_columns=100)


# -- commands ---------------------------------------------------------------------


#: The version of the JSON that ``--format json`` prints: raised when a field changes meaning or goes away
#: (fields may be added without it).
SCHEMA_VERSION = 1


def _json(payload: dict) -> None:
    """Print ``payload`` as JSON under its schema version (control characters as \\u001b, never raw)."""
    print(json.dumps({"schema_version": SCHEMA_VERSION, **payload}, indent=2, ensure_ascii=True))


def cmd_list(args: argparse.Namespace) -> int:
    names = lf.builtin_names()
    if args.format == "json":
        _json({"builtins": [{"name": n, "summary": lf.builtin(n).summary} for n in names]})
        return EXIT_OK
    width = max(map(len, names))
    for name in names:
        _say(f"{name:<{width}}  {lf.builtin(name).summary}")
    return EXIT_OK


def _spec_dict(spec) -> dict:
    """A spec as ``show --format json`` prints it: formula, symbols, gradients (spec-language text) and properties."""
    props = lf.properties(spec)
    return {
        "name": spec.name,
        "summary": spec.summary,
        "description": spec.description,
        "expr": spec.text,
        "reduction": spec.reduction,
        "reference": spec.reference,
        "stable_form": spec.stable_form,
        "symbols": {
            name: {"role": var.role, "domain": var.domain.name, "default": var.default, "axis": var.axis}
            for name, var in spec.symbols.items()
        },
        "gradients": {name: lf.language.to_text(grad) for name, grad in spec.gradient().items()},
        "properties": {key: {"value": getattr(props, key), "evidence": props.evidence[key]}
                       for key in props.SHOWN},
    }


def cmd_show(args: argparse.Namespace) -> int:
    spec = _resolve(args.spec)
    if args.format == "json":
        _json({"spec": args.spec, **_spec_dict(spec)})
        return EXIT_OK
    _say(f"{spec.name}: {spec.summary or spec.description}")
    _say()
    _say(f"  loss = {spec.text}")
    own = ", ".join(f"{term}: {kind}" for term, kind in spec.term_reductions.items())
    _say(f"  reduction = {spec.reduction}" if spec.reduction is not None else f"  reduction = each term its own ({own})")
    if spec.reference:
        _say(f"  reference: {spec.reference}")
    _say()
    _say("Symbols:")
    for name, var in spec.symbols.items():
        extra = f"default {var.default!r}" if var.default is not None else ""
        axis = f"axis {var.axis!r}" if var.axis else ""
        details = ", ".join(x for x in (f"domain {var.domain.name}", axis, extra) if x)
        _say(f"  {name:<14} {var.role:<7} {details}")
    _say()
    _say("Per-sample loss:")
    _say(_indent(_pretty(spec.sympy)))
    for name, grad in spec.gradient().items():
        _say()
        _say(f"d loss / d {name}:")
        _say(_indent(_pretty(grad)))
    props = lf.properties(spec)
    _say()
    _say("Properties:")
    _say(_indent(str(props), "  "))
    if spec.stable_form:
        _say()
        _say(f"Stable form: {spec.stable_form}")
    return EXIT_OK


def _indent(text: str, by: str = "    ") -> str:
    return "\n".join(by + line for line in text.splitlines())


def _hazard_dict(h) -> dict:
    """A finding as JSON: its fix structured (``safe``: whether it keeps the value exactly; ``expr``: the
    replacement, spec-language text; ``note``: what it does), and why it is accepted where it is."""
    fix = None if h.fix is None else {"safe": bool(h.fix.safe), "expr": lf.language.to_text(h.fix.replacement),
                                      "note": h.fix.description}
    return {
        "kind": h.kind,
        "severity": h.severity,
        "where": h.where,
        "expr": lf.language.to_text(h.expr),
        "message": h.message,
        "fix": fix,
        "accepted": bool(h.accepted),
        "reason": h.reason if h.accepted else None,
        "witness": dict(h.witness),
    }


def _kinds(values: list[str] | None, flag: str) -> set[str]:
    """The hazard kinds of ``--select``/``--ignore`` (comma-separated or repeated), each one known."""
    kinds = {k.strip() for v in values or () for k in v.split(",") if k.strip()}
    for kind in sorted(kinds):
        if kind not in KINDS:
            raise UnknownNameError(f"{flag}: unknown hazard kind {kind!r}{did_you_mean(kind, KINDS)} "
                                   f"(known: {', '.join(KINDS)})", token=kind)
    return kinds


def _failing(hazards, fail_on: str) -> bool:
    """Whether unaccepted findings fail the check: errors, and with ``--fail-on warning`` warnings too."""
    levels = {"error"} if fail_on == "error" else {"error", "warning"}
    return any(h.severity in levels and not h.accepted for h in hazards)


def cmd_check(args: argparse.Namespace) -> int:
    """Every spec in one run: a spec that cannot be read or parsed is reported with its path and the others are
    still checked. Exit 2 if any could not be read, else 1 if unaccepted findings fail, else 0."""
    select, ignore = _kinds(args.select, "--select"), _kinds(args.ignore, "--ignore")
    results, unreadable, failed = [], False, False
    for ref in _expanded(args.specs):
        try:
            spec = _resolve(ref)
            report = lf.check(spec, dtype=args.dtype)
        except LossforgeError as exc:
            unreadable = True
            results.append({"spec": ref, "error": _one_line(exc) or type(exc).__name__})
            continue
        hazards = [h for h in report.hazards if (not select or h.kind in select) and h.kind not in ignore]
        bad = _failing(hazards, args.fail_on)
        failed |= bad
        results.append({"spec": ref, "name": spec.name, "ok": not bad, "hazards": [_hazard_dict(h) for h in hazards]})
    if args.format == "json":
        _json({"results": results})
    else:
        for res in results:
            if "error" in res:  # as every user error: one line on stderr (its message names the file)
                sys.stderr.write(f"lossforge: error: {res['error']}\n")
                continue
            for h in res["hazards"]:
                tag = f" (accepted: {h['reason']})" if h["accepted"] else ""
                _say(f"{res['spec']}: {h['where']}: {h['kind']}: {h['severity']}{tag}: {h['message']}: {h['expr']}")
            status = "ok" if res["ok"] else "FAILED"
            _say(f"{res['spec']}: {status} ({len(res['hazards'])} finding{'s' * (len(res['hazards']) != 1)})")
    return EXIT_USAGE if unreadable else EXIT_FAIL if failed else EXIT_OK


_IN_PLACE = "stabilize never rewrites its input in place: write to another file, then move it over the original"


def _layout(inputs: list[Path]) -> str | None:
    """The text of the spec file stabilize read, whose comments and layout its output keeps (line endings
    as they are); None for a built-in or standard input, which have none to keep."""
    if not inputs:
        return None
    try:
        return inputs[0].read_bytes().decode("utf-8")
    except (OSError, UnicodeDecodeError):  # it was just read: a file that changed since is written as dumps writes it
        return None


def cmd_stabilize(args: argparse.Namespace) -> int:
    inputs = _spec_files([args.spec])
    spec = _resolve(args.spec)
    if args.output:  # before the work: never over the input, nor where no file can be
        _check_output(args.output, inputs, _IN_PLACE)
    result = lf.stabilize(spec, unsafe=args.unsafe)
    text = lf.dumps(result, layout=_layout(inputs))
    if args.output:
        written = _write_output(args.output, text, inputs, _IN_PLACE)
    else:
        sys.stdout.write(text)
    before = {(h.kind, h.where) for h in lf.check(spec).hazards}
    after = {(h.kind, h.where) for h in lf.check(result).hazards}
    out = sys.stderr if not args.output else sys.stdout
    if result.sympy == spec.sympy:
        _say("no changes", file=out)
    else:
        _say(f"- {spec.text}", file=out)
        _say(f"+ {result.text}", file=out)
    for kind, where in sorted(before - after):
        _say(f"fixed: {where}: {kind}", file=out)
    for kind, where in sorted(after & before):
        _say(f"remaining: {where}: {kind}", file=out)
    if args.output:
        _say(f"wrote {written}", file=out)
    return EXIT_OK


def cmd_gen(args: argparse.Namespace) -> int:
    inputs = _spec_files([args.spec])
    spec = _resolve(args.spec)
    if args.output:
        _check_output(args.output, inputs)
    source = lf.generate(spec, args.target)  # spec text in it is made inert by lossforge.text.inert
    if args.output:
        written = _write_output(args.output, source, inputs)
        _say(f"wrote {written}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    refs = list(args.specs) or (list(lf.builtin_names()) if args.all else [])
    if not refs:
        raise LossforgeError("name a built-in or a spec file, or pass --all", token="verify")
    refs = _expanded(refs)
    progress = sys.stderr.isatty() and len(refs) > 1
    ok, results = True, []
    for i, ref in enumerate(refs, 1):
        if progress:
            sys.stderr.write("\r" + terminal(f"[{i}/{len(refs)}] verifying {ref:<24}"))
            sys.stderr.flush()
        report = lf.verify(_resolve(ref))
        ok &= report.ok
        if progress:
            sys.stderr.write("\r" + " " * 50 + "\r")
        if args.format == "json":
            results.append({"spec": ref, "ok": report.ok, "rows": [
                {"name": r.name, "ok": r.ok, "max_error": _finite(r.max_error), "tolerance": _finite(r.tolerance),
                 "detail": r.detail, "reproduction": r.reproduction or None, "skipped": r.skipped}
                for r in report.rows]})
            continue
        _say(f"== {ref} ==")
        _say(report)
    if args.format == "json":
        _json({"results": results})
    return EXIT_OK if ok else EXIT_FAIL


def _finite(x: float) -> float | str:
    """A number as JSON holds it: inf and nan (which JSON lacks) as the strings "inf", "-inf", "nan"."""
    return x if math.isfinite(x) else str(x)


def cmd_doc(args: argparse.Namespace) -> int:
    inputs = _spec_files([args.spec])
    spec = _resolve(args.spec)
    if args.output:
        _check_output(args.output, inputs)
    text = lf.doc(spec, args.format)
    if args.output:
        _say(f"wrote {_write_output(args.output, text, inputs)}", file=sys.stderr)
    else:
        sys.stdout.write(terminal(text))
    return EXIT_OK


def cmd_explain(args: argparse.Namespace) -> int:
    _say(lf.explain(args.kind))
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import output_format, render  # rendering needs the optional matplotlib extra

    inputs = _spec_files(args.specs)
    specs = [_resolve(ref) for ref in args.specs]
    _check_output(args.output, inputs)
    fmt = output_format(args.output)  # before any work: .png, .pdf or .svg
    written = _write_output(args.output, render(specs, fmt, lo=args.lo, hi=args.hi), inputs)
    _say(f"wrote {written}", file=sys.stderr)
    return EXIT_OK


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lossforge", description="Losses written as mathematics, turned into code you can trust.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    parser.add_argument("--version", action="version", version=f"lossforge {lf.__version__}")

    def formats(p: argparse.ArgumentParser) -> None:
        p.add_argument("--format", choices=("text", "json"), default="text",
                       help=f"text for a person, or JSON for a tool (schema_version {SCHEMA_VERSION})")

    p = sub.add_parser("list", help="list the built-in losses")
    formats(p)
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="formula, symbols, gradients and properties of a loss")
    p.add_argument("spec", metavar="NAME|FILE|-")
    formats(p)
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check", help="report NaN/inf hazards (exit 1 on an unaccepted error, 2 on an unreadable spec)")
    p.add_argument("specs", metavar="NAME|FILE|DIR|-", nargs="+",
                   help="built-in names, spec files, directories (their .toml files) or - for standard input")
    formats(p)
    p.add_argument("--select", action="append", metavar="KIND", help="report only these hazard kinds (comma-separated)")
    p.add_argument("--ignore", action="append", metavar="KIND", help="leave out these hazard kinds (comma-separated)")
    p.add_argument("--fail-on", choices=("error", "warning"), default="error",
                   help="the least severity of an unaccepted finding that fails the check (default: error)")
    p.add_argument("--dtype", choices=tuple(DTYPES), default=None,
                   help="the floating type to reason in (default: float32's limits, which also cover float64)")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("stabilize", help="rewrite hazards into stable forms and write the spec as TOML")
    p.add_argument("spec", metavar="FILE|-")
    p.add_argument("-o", "--output", metavar="OUT")
    p.add_argument("--unsafe", action="store_true", help="also apply fixes that change values (clamps, eps)")
    p.set_defaults(func=cmd_stabilize)

    p = sub.add_parser("gen", help="generate a standalone NumPy, PyTorch or JAX module")
    p.add_argument("spec", metavar="NAME|FILE|-")
    p.add_argument("--target", required=True, metavar="numpy|torch|jax")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("verify", help="verify gradients and generated code (exit 1 on failure)")
    p.add_argument("specs", metavar="NAME|FILE|DIR|-", nargs="*")
    p.add_argument("--all", action="store_true", help="verify every built-in")
    formats(p)
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("doc", help="a loss's documentation card (formula, gradient, params, shapes, hazards, ...)")
    p.add_argument("spec", metavar="NAME|FILE|-")
    p.add_argument("--format", choices=("md", "rst", "latex"), default="md")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_doc)

    p = sub.add_parser("explain", help="the documentation of a hazard kind")
    p.add_argument("kind", metavar="KIND")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("plot", help="plot loss and gradient curves to a PNG, PDF or SVG")
    p.add_argument("specs", metavar="NAME|FILE", nargs="+")
    p.add_argument("-o", "--output", required=True, metavar="FILE", help="the file to write: .png, .pdf or .svg")
    p.add_argument("--lo", type=float, default=None, help="left end of the input range")
    p.add_argument("--hi", type=float, default=None, help="right end of the input range")
    p.set_defaults(func=cmd_plot)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return args.func(args)
    except LossforgeError as exc:
        message = _one_line(exc) or type(exc).__name__
        sys.stderr.write(f"lossforge: error: {message}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # `lossforge gen ... | head`
        return EXIT_OK
    except OSError as exc:  # a file error no command turned into a message: still one line, no traceback
        where = f"{_q(exc.filename)}: " if exc.filename else ""
        sys.stderr.write(f"lossforge: error: {_one_line(where + (exc.strerror or str(exc)))}\n")
        return EXIT_USAGE
