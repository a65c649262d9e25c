"""lossforge demo: the medical cost-sensitive loss, from spec to verified code.

Run with `make demo`: spec -> gradient -> check -> stabilize -> generate ->
verify -> the command line. Generated files go under $BUILD (default build/).
"""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import sympy
import torch

import lossforge as lf

HERE = Path(__file__).resolve().parent
BUILD = Path(os.environ.get("BUILD", "build")).resolve()
NAIVE_BCE = """
name = "naive_bce"
description = "Binary cross-entropy as first written: log(p) and log(1 - p), unguarded."
expr = "-(y * log(p) + (1 - y) * log(1 - p))"
[symbols]
p = { role = "input", domain = "probability" }
y = { role = "target", domain = "binary" }
"""


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

    section("4. Hazards: the naive BCE and the cost-sensitive spec")
    naive = lf.loads(NAIVE_BCE)
    print(lf.check(naive))
    print()
    print(lf.check(spec))

    section("5. Stabilize the naive BCE")
    safe = lf.stabilize(naive)
    fixed = lf.stabilize(naive, unsafe=True)
    print(f"original:        {naive.text}")
    print(f"safe rewrites:   {safe.text}")
    print(f"+ unsafe fixes:  {fixed.text}")
    print(lf.check(fixed))

    section("6. Generate, import and run both targets")
    BUILD.mkdir(parents=True, exist_ok=True)
    p = np.array([0.0, 0.02, 0.5, 0.98, 1.0])
    y = np.array([1.0, 1.0, 0.0, 1.0, 0.0])
    for target, suffix in (("numpy", "np"), ("torch", "torch")):
        path = BUILD / f"{spec.name}_{suffix}.py"
        path.write_text(lf.generate(spec, target), encoding="utf-8")
        module = _import(path)
        if target == "numpy":
            value, (grad,) = module.loss_and_grad(p, y)
            print(f"{path}: loss = {value:.6f}, grad = {np.array2string(grad, precision=4)}")
        else:
            pt = torch.tensor(p, requires_grad=True)
            value = module.Loss()(pt, torch.tensor(y))
            value.backward()
            print(f"{path}: loss = {value.item():.6f}, grad = {np.array2string(pt.grad.numpy(), precision=4)}")

    section("7. Verify: the chapter's MedicalLoss against the spec, then a correct version")
    sys.path.insert(0, str(HERE))
    from medical import MedicalLoss, weighted_bce

    print(lf.verify(spec))
    print()
    print(lf.verify(spec, against=MedicalLoss()))
    print()
    print("Why: the penalty mask.float().sum() * ratio is a step; its gradient is zero. As a spec:")
    penalty = lf.loads(NAIVE_BCE.replace('"naive_bce"', '"medical_penalty"').replace(
        'expr = "-(y * log(p) + (1 - y) * log(1 - p))"',
        'expr = "-(y*log(clamp(p, 1e-7, 1 - 1e-7)) + (1 - y)*log(clamp(1 - p, 1e-7, 1))) + 0.1*y*heaviside(0.5 - p)"'))
    print("\n".join(str(h) for h in lf.check(penalty).hazards if h.kind == "zero-gradient"))
    print()
    print(lf.verify(spec, against=weighted_bce))

    section("8. The command line")
    example = str(HERE / "cost_sensitive.toml")
    for args in (["check", example], ["gen", example, "--target", "numpy", "-o", str(BUILD / "cli_np.py")],
                 ["gen", example, "--target", "torch", "-o", str(BUILD / "cli_torch.py")],
                 ["verify", example],
                 ["plot", "mse", "mae", "huber", "-o", str(BUILD / "mse_mae_huber.png")]):
        print(f"$ lossforge {' '.join(args)}")
        done = subprocess.run([sys.executable, "-m", "lossforge", *args], capture_output=True, text=True)
        print(done.stdout + done.stderr, end="")
        if done.returncode != 0:
            raise SystemExit(f"lossforge {args[0]} exited {done.returncode}")
    print(f"\nfiles under {BUILD}:")
    for path in sorted(BUILD.iterdir()):
        print(f"  {path}")


def _import(path: Path):
    """Import a generated module from its file, as a user would."""
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


if __name__ == "__main__":
    main()
