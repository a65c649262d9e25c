"""Regenerate tests/golden/: one file per (built-in or example) x target.

Run `make golden` (python -m tests.regen_golden) after an intended change to
generated code, and review the diff: the golden files hold "same spec, same bytes".
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

import lossforge as lf

ROOT = Path(__file__).resolve().parent.parent
GOLDEN = ROOT / "tests" / "golden"
TARGETS = {"numpy": "np", "torch": "torch", "jax": "jax"}


#: Examples that build their spec in Python (a combine), by file stem: the function that returns it.
BUILT = {"medical": "medical_spec"}


def golden_specs() -> dict[str, lf.LossSpec]:
    """Every built-in, plus every example spec (as `example_<file stem>`): the TOML files, and the specs the
    examples of :data:`BUILT` build."""
    specs = {name: lf.builtin(name) for name in lf.builtin_names()}
    for path in sorted((ROOT / "examples").glob("*.toml")):
        specs[f"example_{path.stem}"] = lf.load(path)
    for stem, function in BUILT.items():
        specs[f"example_{stem}"] = getattr(example_module(stem), function)()
    return specs


def example_module(stem: str):
    """``examples/<stem>.py`` imported as a module (its ``main`` not run)."""
    found = importlib.util.spec_from_file_location(f"example_{stem}", ROOT / "examples" / f"{stem}.py")
    module = importlib.util.module_from_spec(found)
    found.loader.exec_module(module)
    return module


def golden_path(key: str, target: str) -> Path:
    return GOLDEN / f"{key}.{TARGETS[target]}.py"


def main() -> None:
    GOLDEN.mkdir(parents=True, exist_ok=True)
    for stale in GOLDEN.glob("*.py"):
        stale.unlink()
    count = 0
    for key, spec in golden_specs().items():
        for target in TARGETS:
            golden_path(key, target).write_text(lf.generate(spec, target), encoding="utf-8")
            count += 1
    print(f"wrote {count} golden files to {GOLDEN}")


if __name__ == "__main__":
    main()
