"""The command line: a thin layer over the public API.

Each command resolves its spec argument (a built-in name or a TOML file),
calls one public function and prints its result. Every user error exits 2
with a one-line message on stderr; a failed check or verification exits 1.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import sympy

import lossforge as lf

from .errors import LossforgeError

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


class _Parser(argparse.ArgumentParser):
    """argparse with a one-line error and exit status 2."""

    def error(self, message: str) -> None:  # type: ignore[override]
        sys.stderr.write(f"{self.prog}: error: {message}\n")
        raise SystemExit(EXIT_USAGE)


def _resolve(ref: str):
    """A built-in name or a path to a TOML spec."""
    path = Path(ref)
    if ref.endswith(".toml") or path.exists() or "/" in ref:
        return lf.load(path)
    return lf.builtin(ref)


def _pretty(expr: sympy.Basic) -> str:
    return sympy.pretty(expr, use_unicode=True, num_columns=100)


# -- commands ---------------------------------------------------------------------


def cmd_list(args: argparse.Namespace) -> int:
    names = lf.builtin_names()
    width = max(map(len, names))
    for name in names:
        print(f"{name:<{width}}  {lf.builtin(name).summary}")
    return EXIT_OK


def cmd_show(args: argparse.Namespace) -> int:
    spec = _resolve(args.spec)
    print(f"{spec.name}: {spec.summary or spec.description}")
    print()
    print(f"  loss = {spec.text}")
    print(f"  reduction = {spec.reduction}")
    if spec.reference:
        print(f"  reference: {spec.reference}")
    print()
    print("Symbols:")
    for name, var in spec.symbols.items():
        extra = f"default {var.default!r}" if var.default is not None else ""
        axis = f"axis {var.axis!r}" if var.axis else ""
        details = ", ".join(x for x in (f"domain {var.domain.name}", axis, extra) if x)
        print(f"  {name:<14} {var.role:<7} {details}")
    print()
    print("Per-sample loss:")
    print(_indent(_pretty(spec.sympy)))
    for name, grad in spec.gradient().items():
        print()
        print(f"d loss / d {name}:")
        print(_indent(_pretty(grad)))
    props = lf.properties(spec)
    print()
    print("Properties:")
    for key in ("convex", "bounded_gradient", "smoothness", "zero_at_target"):
        print(f"  {key:<17} {getattr(props, key)!s:<7} {props.evidence[key]}")
    if spec.stable_form:
        print()
        print(f"Stable form: {spec.stable_form}")
    return EXIT_OK


def _indent(text: str) -> str:
    return "\n".join("    " + line for line in text.splitlines())


def _hazard_dict(h) -> dict:
    return {
        "kind": h.kind,
        "severity": h.severity,
        "where": h.where,
        "expr": str(h.expr),
        "message": h.message,
        "fix": None if h.fix is None else str(h.fix),
        "accepted": bool(h.accepted),
    }


def cmd_check(args: argparse.Namespace) -> int:
    failed = False
    results = []
    for ref in args.specs:
        spec = _resolve(ref)
        report = lf.check(spec)
        failed |= not report.ok
        results.append({"spec": ref, "name": spec.name, "ok": report.ok,
                        "hazards": [_hazard_dict(h) for h in report.hazards]})
    if args.format == "json":
        print(json.dumps(results, indent=2))
    else:
        for res in results:
            for h in res["hazards"]:
                tag = " (accepted)" if h["accepted"] else ""
                print(f"{res['spec']}: {h['where']}: {h['kind']}: {h['severity']}{tag}: {h['message']}: {h['expr']}")
            status = "ok" if res["ok"] else "FAILED"
            print(f"{res['spec']}: {status} ({len(res['hazards'])} finding{'s' * (len(res['hazards']) != 1)})")
    return EXIT_OK if not failed else EXIT_FAIL


def cmd_stabilize(args: argparse.Namespace) -> int:
    spec = _resolve(args.spec)
    result = lf.stabilize(spec, unsafe=args.unsafe)
    text = lf.dumps(result)
    if args.output:
        Path(args.output).write_text(text, encoding="utf-8")
    else:
        sys.stdout.write(text)
    before = {(h.kind, h.where) for h in lf.check(spec).hazards}
    after = {(h.kind, h.where) for h in lf.check(result).hazards}
    out = sys.stderr if not args.output else sys.stdout
    if result.sympy == spec.sympy:
        print("no changes", file=out)
    else:
        print(f"- {spec.text}", file=out)
        print(f"+ {result.text}", file=out)
    for kind, where in sorted(before - after):
        print(f"fixed: {where}: {kind}", file=out)
    for kind, where in sorted(after & before):
        print(f"remaining: {where}: {kind}", file=out)
    if args.output:
        print(f"wrote {args.output}", file=out)
    return EXIT_OK


def cmd_gen(args: argparse.Namespace) -> int:
    spec = _resolve(args.spec)
    source = lf.generate(spec, args.target)
    if args.output:
        Path(args.output).write_text(source, encoding="utf-8")
        print(f"wrote {args.output}", file=sys.stderr)
    else:
        sys.stdout.write(source)
    return EXIT_OK


def cmd_verify(args: argparse.Namespace) -> int:
    refs = list(args.specs) or (list(lf.builtin_names()) if args.all else [])
    if not refs:
        raise LossforgeError("name a built-in or a spec file, or pass --all", token="verify")
    progress = sys.stderr.isatty() and len(refs) > 1
    ok = True
    for i, ref in enumerate(refs, 1):
        if progress:
            sys.stderr.write(f"\r[{i}/{len(refs)}] verifying {ref:<24}")
            sys.stderr.flush()
        report = lf.verify(_resolve(ref))
        ok &= report.ok
        if progress:
            sys.stderr.write("\r" + " " * 50 + "\r")
        print(f"== {ref} ==")
        print(report)
    return EXIT_OK if ok else EXIT_FAIL


def cmd_explain(args: argparse.Namespace) -> int:
    print(lf.explain(args.kind))
    return EXIT_OK


def cmd_plot(args: argparse.Namespace) -> int:
    from .plot import plot  # needs the optional matplotlib extra

    specs = [_resolve(ref) for ref in args.specs]
    path = plot(specs, args.output, lo=args.lo, hi=args.hi)
    print(f"wrote {path}", file=sys.stderr)
    return EXIT_OK


# -- parser -----------------------------------------------------------------------


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="lossforge", description="Losses written as mathematics, turned into code you can trust.")
    sub = parser.add_subparsers(dest="command", required=True, parser_class=_Parser, metavar="COMMAND")

    p = sub.add_parser("list", help="list the built-in losses")
    p.set_defaults(func=cmd_list)

    p = sub.add_parser("show", help="formula, symbols, gradients and properties of a loss")
    p.add_argument("spec", metavar="NAME|FILE")
    p.set_defaults(func=cmd_show)

    p = sub.add_parser("check", help="report NaN/inf hazards (exit 1 on an unaccepted error)")
    p.add_argument("specs", metavar="NAME|FILE", nargs="+")
    p.add_argument("--format", choices=("text", "json"), default="text")
    p.set_defaults(func=cmd_check)

    p = sub.add_parser("stabilize", help="rewrite hazards into stable forms and write the spec as TOML")
    p.add_argument("spec", metavar="FILE")
    p.add_argument("-o", "--output", metavar="OUT")
    p.add_argument("--unsafe", action="store_true", help="also apply fixes that change values (clamps, eps)")
    p.set_defaults(func=cmd_stabilize)

    p = sub.add_parser("gen", help="generate a standalone NumPy or PyTorch module")
    p.add_argument("spec", metavar="NAME|FILE")
    p.add_argument("--target", required=True, metavar="numpy|torch")
    p.add_argument("-o", "--output", metavar="FILE")
    p.set_defaults(func=cmd_gen)

    p = sub.add_parser("verify", help="verify gradients and generated code (exit 1 on failure)")
    p.add_argument("specs", metavar="NAME|FILE", nargs="*")
    p.add_argument("--all", action="store_true", help="verify every built-in")
    p.set_defaults(func=cmd_verify)

    p = sub.add_parser("explain", help="the documentation of a hazard kind")
    p.add_argument("kind", metavar="KIND")
    p.set_defaults(func=cmd_explain)

    p = sub.add_parser("plot", help="plot loss and gradient curves to a PNG")
    p.add_argument("specs", metavar="NAME|FILE", nargs="+")
    p.add_argument("-o", "--output", required=True, metavar="PNG")
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
        message = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        sys.stderr.write(f"lossforge: error: {message}\n")
        return EXIT_USAGE
    except BrokenPipeError:  # `lossforge gen ... | head`
        return EXIT_OK
