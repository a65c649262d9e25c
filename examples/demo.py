"""lossforge demo: the medical cost-sensitive loss, from spec to gradient.

Run with `make demo`.
"""

from __future__ import annotations

from pathlib import Path

import sympy

import lossforge as lf

HERE = Path(__file__).resolve().parent


def section(title: str) -> None:
    print()
    print(title)
    print("=" * len(title))


def main() -> None:
    spec = lf.load(HERE / "cost_sensitive.toml")
    section(f"1. The spec: {spec.name}")
    print(spec.description)
    print("expr:", spec.text)
    for name, var in spec.symbols.items():
        extra = f", default {var.default}" if var.default is not None else ""
        print(f"  {name:<10} {var.role:<7} domain {var.domain.name}{extra}")

    section("2. The per-sample loss")
    print(sympy.pretty(spec.sympy, use_unicode=True, num_columns=110))

    section("3. Its symbolic gradient")
    for name, grad in spec.gradient().items():
        print(f"d loss / d {name} =")
        print(sympy.pretty(grad, use_unicode=True, num_columns=110))

    # -- stage: check / stabilize (issue 5) --

    # -- stage: generate / compile (issue 4) --

    # -- stage: verify (issue 7) --

    # -- stage: CLI (issue 8) --


if __name__ == "__main__":
    main()
