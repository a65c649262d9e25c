"""The hostile corpus (``tests/hostile_corpus.py``) run through the whole pipeline, entry by entry.

For each entry, in a worker process: build the spec (``LossSpec``, ``lf.loads``
or ``lf.combine``), ``lf.stabilize`` where the entry asks, ``lf.check``,
``lf.generate`` for both targets, ``ast.parse`` of each source, ``lf.compile``
of both (that is where spec text would execute if it could), then evaluate
the NumPy and Torch losses and gradients at a fixed point. The entry passes if

* the outcome is the one it states: accepted and correct (values and gradients
  finite, NumPy and Torch agreeing, equal to its reference, text fields verbatim
  in both docstrings), or refused with exactly its ``LossforgeError`` subclass
  and a message naming its construct;
* no other exception escaped (its raw type is reported);
* the whole pipeline took at most its entry's ``seconds`` (2 s but for two large specs) of the worker's CPU
  time (the reference machine of ``tests/speed.py``, scaled by the worker's measured :func:`speed.factor`; CPU
  time, so that other processes' load stretches only the wall clock, which :data:`HARD_S` bounds);
* the worker's peak RSS stayed under :data:`MAX_RSS` bytes;
* the sentinel file was never created.

Why workers: an entry that hangs (or allocates without bound) must fail by
name rather than stop the suite. Each pytest process (one per xdist worker)
starts one worker process and hands it entry ids on stdin; the worker answers
one JSON line per entry, with its own peak RSS. An entry that runs past
:data:`HARD_S` seconds is killed with its worker, which is restarted for the
next entry.
"""

from __future__ import annotations

import ast
import inspect
import json
import os
import resource
import select
import subprocess
import sys
import tempfile
import time
import traceback
from collections import Counter
from pathlib import Path

import pytest

from . import hostile_corpus as hc
from . import speed

ROOT = Path(__file__).resolve().parent.parent
#: An entry still running after this long is killed (and fails, named).
HARD_S = 12.0
#: The most memory one process may reach.
MAX_RSS = 1 << 30
#: Close enough for values computed two ways in float64.
RTOL, ATOL = 1e-9, 1e-12
TARGETS = ("numpy", "torch")
#: Every character Python, ``str.splitlines`` or an editor may take for a line break, but ``\n``.
LINE_BREAKS = frozenset("\r\x0b\x0c\x1c\x1d\x1e\x85\u2028\u2029")


# --------------------------------------------------------------------------------------
# One entry, in process (the worker runs this)
# --------------------------------------------------------------------------------------


def _vars(symbols):
    import lossforge as lf

    return {name: lf.Var(role, default=default, domain=domain, axis=axis)
            for name, role, default, domain, axis in symbols}


def build_spec(entry: hc.Entry):
    """The spec an entry describes (any refusal is raised from here)."""
    import lossforge as lf

    kind = entry.kind
    if kind == "toml":
        return lf.loads(entry.hostile)
    if kind == "combine":
        terms = {}
        for i, t in enumerate(entry.hostile):
            spec = lf.LossSpec(name=f"term{i}", expr=t.expr, symbols=_vars(t.symbols), reduction=t.reduction)
            terms[t.name] = (spec, t.weight) if t.pair else (t.weight,)
        return lf.combine(terms)
    name = entry.hostile if (kind == "name" and entry.field == "spec") else "hostile"
    if kind == "expr":
        return lf.LossSpec(name=name, expr=entry.hostile, symbols=_vars(entry.symbols))
    if kind == "text":
        return lf.LossSpec(name=name, expr=entry.expr, symbols=_vars(entry.symbols), **{entry.field: entry.hostile})
    if kind == "name":
        return lf.LossSpec(name=name, expr=entry.expr, symbols=_vars(entry.symbols))
    if kind == "terms":
        return lf.LossSpec(name=name, expr=entry.expr, symbols=_vars(entry.symbols),
                           terms={t: (w, e) for t, w, e in entry.hostile})
    if kind == "default":
        symbols = _vars(entry.symbols)
        symbols["w"] = lf.Var("param", default=entry.hostile, domain=entry.field or "real")
        return lf.LossSpec(name=name, expr=entry.expr, symbols=symbols)
    raise AssertionError(f"unknown kind {kind!r}")


def _first_line(exc: BaseException) -> str:
    text = str(exc)
    return text.split("\n", 1)[0][:300]


def _close(a, b) -> bool:
    import numpy as np

    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return a.shape == b.shape and bool(np.all(np.abs(a - b) <= ATOL + RTOL * np.maximum(np.abs(a), np.abs(b))))


def source_problems(spec, target: str, source: str) -> list[str]:
    out = []
    breaks = sorted({repr(c) for c in set(source) & LINE_BREAKS})
    if breaks:
        out.append(f"{target}: the source has line breaks other than \\n: {', '.join(breaks)}")
    lines = source.split("\n")
    body = next((i for i, line in enumerate(lines) if not line.startswith("#")), len(lines))
    if not lines[body].startswith('"""'):
        out.append(f"{target}: the comment header is followed by {lines[body][:60]!r}, not the docstring")
    # the header: the "Generated by" comment, then the formula, each wrapped at spaces into comment lines
    start = next((i for i, line in enumerate(lines[:body]) if line.startswith("# Formula:")), body)
    formula = lines[start:body]
    want = f"# Formula: {' '.join(spec.text.split())}".rstrip()
    joined = " ".join(line.removeprefix("# ") for line in formula)
    if not formula or f"# {joined}".rstrip() != want:
        out.append(f"{target}: the formula header is {[f[:80] for f in formula[:3]]!r}, not {want[:80]!r} wrapped")
    return out


def _keywords(fn, spec, params: dict, by_spec_name: bool) -> dict:
    """The generated code's keyword for each param, in declaration order, with the entry's values."""
    if by_spec_name:
        return dict(params)
    names = [n for n, p in inspect.signature(fn).parameters.items() if p.kind is not p.KEYWORD_ONLY]  # not fused=
    after = names[names.index("reduction") + 1:] if "reduction" in names else []
    if len(after) != len(spec.params):
        raise AssertionError(f"signature {names} does not end with one keyword per param {list(spec.params)}")
    kw = dict(zip(spec.params, after))
    return {kw[n]: v for n, v in params.items()}


def _evaluate(entry: hc.Entry, spec, module, loss_class, problems: list[str]) -> None:
    import numpy as np
    import torch

    point = {**hc.DEFAULT_POINT, **dict(entry.point)}
    arrays = {}
    for j, name in enumerate(spec.arrays):
        values = point.get(name)
        arrays[name] = (np.asarray(values, dtype=np.float64) if values is not None
                        else np.asarray(hc.DEFAULT_POINT["x"], dtype=np.float64) + 0.25 * j)
    params = {n: spec.symbols[n].default for n in spec.params}
    params.update(dict(entry.params))
    given = dict(entry.params)
    inputs = list(spec.inputs)

    try:
        kw = _keywords(module.loss, spec, given, entry.spec_keywords)
        value = module.loss(*(arrays[n] for n in spec.arrays), **kw)
        value2, grads = module.loss_and_grad(*(arrays[n] for n in spec.arrays), **kw)
    except Exception as exc:  # noqa: BLE001 - reported by type
        problems.append(f"numpy: {type(exc).__name__}: {_first_line(exc)}")
        return
    value = np.asarray(value, dtype=np.float64)
    if value.shape != () or not np.isfinite(value):
        problems.append(f"numpy: loss is {value!r}, not a finite scalar")
    if not _close(value, value2):
        problems.append(f"numpy: loss {value!r} != loss_and_grad's {value2!r}")
    if len(grads) != len(inputs):
        problems.append(f"numpy: {len(grads)} gradients for {len(inputs)} inputs")
        return
    for n, g in zip(inputs, grads):
        if np.shape(g) != arrays[n].shape or not np.all(np.isfinite(g)):
            problems.append(f"numpy: gradient of {n} is {np.asarray(g)!r}")

    reference = entry.reference
    if callable(reference):
        with np.errstate(all="ignore"):
            expected = float(np.mean(reference(np, {**arrays, **params})))
        if not _close(value, expected):
            problems.append(f"numpy: loss {float(value)!r}, reference {expected!r}")
    elif reference is not None and not _close(value, reference):
        problems.append(f"numpy: loss {float(value)!r}, reference {reference!r}")

    try:
        module_kw = _keywords(loss_class.__init__, spec, given, entry.spec_keywords)
        criterion = loss_class(**module_kw)
        tensors = {n: torch.tensor(arrays[n], dtype=torch.float64, requires_grad=n in inputs) for n in spec.arrays}
        out = criterion(*(tensors[n] for n in spec.arrays))
        out.backward()
        with torch.no_grad():
            criterion.eval()
            evaluated = criterion(*(tensors[n] for n in spec.arrays))
            still_training = criterion.training
            criterion.train()
            trained = criterion(*(tensors[n] for n in spec.arrays))
            training = criterion.training
    except Exception as exc:  # noqa: BLE001 - reported by type
        problems.append(f"torch: {type(exc).__name__}: {_first_line(exc)}")
        return
    if not _close(out.detach().numpy(), value):
        problems.append(f"torch: loss {out.item()!r} != numpy's {float(value)!r}")
    if still_training is not False or training is not True:
        problems.append(f"torch: .eval()/.train() set training to {still_training!r}/{training!r}")
    if not (_close(evaluated.numpy(), out.detach().numpy()) and _close(trained.numpy(), out.detach().numpy())):
        problems.append(f"torch: loss changes with the module's mode: {out.item()!r}, eval {evaluated.item()!r}, "
                        f"train {trained.item()!r}")
    for n, g in zip(inputs, grads):
        tg = tensors[n].grad
        if tg is None or not _close(tg.numpy(), g):
            problems.append(f"torch: gradient of {n} {None if tg is None else tg.numpy()!r} != numpy's {g!r}")

    if entry.grad_reference and callable(reference):
        ref = {n: torch.tensor(arrays[n], dtype=torch.float64, requires_grad=n in inputs) for n in spec.arrays}
        total = reference(torch, {**ref, **params}).mean()
        total.backward()
        for n, g in zip(inputs, grads):
            if ref[n].grad is None or not _close(g, ref[n].grad.numpy()):
                problems.append(f"gradient of {n}: {g!r}, autograd of the reference "
                                f"{None if ref[n].grad is None else ref[n].grad.numpy()!r}")


def run_entry(entry: hc.Entry) -> dict:
    """Run one entry's pipeline; never raises. The result is JSON-serialisable."""
    import lossforge as lf

    res: dict = {"id": entry.id, "outcome": None, "type": None, "message": None, "token": None,
                 "check": None, "problems": []}
    problems: list[str] = res["problems"]
    start, cpu = time.perf_counter(), time.process_time()
    try:
        spec = build_spec(entry)
        if entry.stabilize:
            spec = lf.stabilize(spec)
        try:
            report = lf.check(spec)
            res["check"] = f"ok={report.ok}" if isinstance(report, lf.Report) else repr(type(report))
            if not isinstance(report, lf.Report):
                problems.append(f"lf.check returned {type(report).__name__}, not a Report")
        except lf.LossforgeError as exc:  # allowed: a refusal to analyse, by name
            res["check"] = f"{type(exc).__name__}: {_first_line(exc)}"
        sources = {t: lf.generate(spec, t) for t in TARGETS}
        for t, source in sources.items():
            ast.parse(source)
            problems.extend(source_problems(spec, t, source))
        module = lf.compile(spec, "numpy")
        loss_class = lf.compile(spec, "torch")
        res["outcome"] = "accepted"
        if entry.accept:
            _evaluate(entry, spec, module, loss_class, problems)
            field, text = ((entry.field, entry.hostile) if entry.kind == "text"
                           else (entry.field, entry.text) if entry.text is not None else (None, None))
            if field:
                if getattr(spec, field) != text:
                    problems.append(f"spec.{field} is {getattr(spec, field)[:80]!r}, not the text given")
                for t, doc in (("numpy", module.__doc__), ("torch", loss_class.__doc__)):
                    if hc.docstring_form(text, field, t) not in (doc or ""):
                        problems.append(f"{t}: the docstring does not hold the {field} text verbatim")
    except lf.LossforgeError as exc:
        res.update(outcome="refused", type=type(exc).__name__, message=str(exc),
                   token=None if exc.token is None else str(exc.token)[:200])
    except Exception as exc:  # noqa: BLE001 - a raw exception is the finding
        frame = traceback.extract_tb(exc.__traceback__)[-1]
        res.update(outcome="raw", type=type(exc).__name__, message=_first_line(exc),
                   where=f"{Path(frame.filename).name}:{frame.lineno} in {frame.name}")
    res["seconds"] = time.perf_counter() - start
    res["cpu"] = time.process_time() - cpu  # what the entry cost: other processes' load does not count
    res["sentinel"] = hc.SENTINEL.exists()
    res["created"] = sorted(os.listdir(hc.SENTINEL_DIR)) if hc.SENTINEL_DIR.is_dir() else []
    res["maxrss"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # bytes (Linux counts KiB)
    return res


def worker_main() -> None:
    """Answer entry ids read from stdin with one JSON line each (on the original stdout)."""
    results = os.fdopen(os.dup(1), "w", buffering=1)
    os.dup2(2, 1)  # whatever else is printed goes to stderr
    sys.stdout = sys.stderr
    import numpy as np
    import torch

    import lossforge as lf

    torch.set_num_threads(1)
    warm = lf.LossSpec(name="warm", expr="(x - y)**2", symbols={"x": lf.Var("input"), "y": lf.Var("target")})
    lf.check(warm)
    lf.compile(warm, "numpy").loss(np.zeros(2), np.ones(2))
    lf.compile(warm, "torch")()(torch.zeros(2), torch.ones(2))
    results.write(f"ready {speed.factor()!r}\n")
    for line in sys.stdin:
        ident = line.strip()
        if ident:
            results.write(json.dumps(run_entry(hc.BY_ID[ident])) + "\n")


# --------------------------------------------------------------------------------------
# The pytest side: one worker per pytest process
# --------------------------------------------------------------------------------------


class Worker:
    """A worker process fed entry ids; killed and restarted when an entry runs past HARD_S."""

    def __init__(self) -> None:
        self.proc: subprocess.Popen | None = None
        self.buffer = b""
        self.log = tempfile.TemporaryFile()
        self.started = 0
        self.factor = 1.0  # how much slower than the reference machine (tests/speed.py), measured at start

    def _start(self) -> None:
        env = dict(os.environ)
        env[hc.SENTINEL_ENV] = str(hc.SENTINEL_DIR)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (str(ROOT), env.get("PYTHONPATH")) if p)
        env.setdefault("OMP_NUM_THREADS", "1")
        self.log.seek(0)
        self.log.truncate()
        self.buffer = b""
        self.proc = subprocess.Popen(
            [sys.executable, "-c", "from tests.test_hostile import worker_main; worker_main()"],
            cwd=ROOT, env=env, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self.log,
        )
        self.started += 1
        line = self._readline(180.0)
        if not (line or "").startswith("ready "):
            raise RuntimeError(f"the hostile-corpus worker did not start: {line!r}; {self._log_tail()}")
        self.factor = float(line.split()[1])

    def _readline(self, timeout: float) -> str | None:
        """One line from the worker; None on timeout; '' once it has exited."""
        end = time.monotonic() + timeout
        fd = self.proc.stdout.fileno()
        while b"\n" not in self.buffer:
            left = end - time.monotonic()
            if left <= 0:
                return None
            ready, _, _ = select.select([fd], [], [], left)
            if ready:
                chunk = os.read(fd, 1 << 16)
                if not chunk:
                    return ""
                self.buffer += chunk
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.decode()

    def _log_tail(self) -> str:
        self.log.seek(0)
        return self.log.read().decode(errors="replace")[-1500:]

    def kill(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None

    def close(self) -> None:
        if self.proc is not None:
            try:
                self.proc.stdin.close()
                self.proc.wait(timeout=30)
            except (OSError, subprocess.TimeoutExpired):
                pass
            self.kill()
        self.log.close()

    def run(self, ident: str) -> dict:
        if self.proc is None:
            self._start()
        self.proc.stdin.write(ident.encode() + b"\n")
        self.proc.stdin.flush()
        line = self._readline(HARD_S * self.factor)
        if line is None:
            self.kill()
            return {"id": ident, "outcome": "timeout"}
        if line == "":
            rc = self.proc.wait()
            self.proc = None
            return {"id": ident, "outcome": "crash", "rc": rc, "log": self._log_tail()}
        return {**json.loads(line), "factor": self.factor}


@pytest.fixture(scope="module")
def worker():
    w = Worker()
    yield w
    w.close()


def judge(entry: hc.Entry, r: dict) -> list[str]:
    """Every way the result ``r`` misses what ``entry`` states (empty: it passes)."""
    out = []
    if r["outcome"] == "timeout":
        return [f"still running after {HARD_S:g} s (bound {entry.seconds:g} s): killed"]
    if r["outcome"] == "crash":
        return [f"the worker process died (exit {r['rc']}): {r['log']}"]
    if r["sentinel"] or r["created"]:
        out.append(f"CODE RAN: the sentinel directory holds {r['created']}")
    if r["outcome"] == "raw":
        out.append(f"raw {r['type']} escaped ({r['where']}): {r['message']}")
    if r["cpu"] > entry.seconds * r["factor"]:  # CPU time: a loaded machine stretches the wall clock only
        out.append(f"took {r['cpu']:.2f} s of CPU ({r['seconds']:.2f} s wall; bound {entry.seconds:g} s on the "
                   f"reference machine, {entry.seconds * r['factor']:.2f} s on this one)")
    if r["maxrss"] >= MAX_RSS:
        out.append(f"peak RSS of its process reached {r['maxrss'] / 2**20:.0f} MiB (limit {MAX_RSS / 2**20:.0f} MiB)")
    if entry.accept:
        if r["outcome"] == "refused":
            out.append(f"expected acceptance, refused: {r['type']}: {r['message'][:300]}")
        out.extend(r["problems"])
    elif r["outcome"] == "accepted":
        out.append(f"expected {entry.error} naming {entry.names!r}, but it was accepted")
        out.extend(r["problems"])
    elif r["outcome"] == "refused":
        if r["type"] != entry.error:
            out.append(f"expected {entry.error}, got {r['type']}: {r['message'][:300]}")
        if entry.names not in r["message"]:
            out.append(f"the message does not name {entry.names!r}: {r['message'][:300]}")
    return out


@pytest.mark.parametrize("entry", hc.CORPUS, ids=[e.id for e in hc.CORPUS])
def test_hostile_entry(worker, entry):
    result = worker.run(entry.id)
    problems = judge(entry, result)
    assert not hc.SENTINEL.exists(), f"CODE RAN: {hc.SENTINEL} exists"
    assert not problems, f"{entry.id}: " + " | ".join(problems)


# --------------------------------------------------------------------------------------
# The corpus itself
# --------------------------------------------------------------------------------------


def test_corpus_has_every_class_and_at_least_200_entries():
    import lossforge as lf

    kinds = Counter(e.kind for e in hc.CORPUS)
    assert len(hc.CORPUS) >= 200, kinds
    assert set(kinds) == set(hc.KINDS), kinds
    assert len({e.id for e in hc.CORPUS}) == len(hc.CORPUS)
    texts = {(e.field, e.hostile) for e in hc.CORPUS if e.kind == "text"}
    assert texts == {(f, t) for f in hc.TEXT_FIELDS for _, t in hc.text_payloads()}
    for e in hc.CORPUS:
        if e.error:
            cls = getattr(lf, e.error, None)
            assert isinstance(cls, type) and issubclass(cls, lf.LossforgeError), (e.id, e.error)


def test_the_payloads_do_run_where_text_is_not_inert(tmp_path):
    # The corpus is only worth something if its payloads would act: pasted raw into a
    # docstring or a comment, they do create their sentinel.
    canary = tmp_path / "CANARY"
    payloads = dict(hc.text_payloads(canary))
    exec(compile('"""' + payloads["close-newline-code"] + '\n"""', "<naive docstring>", "exec"), {})  # noqa: S102
    assert canary.exists()
    canary.unlink()
    exec(compile("# " + payloads["cr-code"] + "\n", "<naive comment>", "exec"), {})  # noqa: S102
    assert canary.exists()


def test_docstring_form_matches_a_plain_generated_docstring():
    import lossforge as lf

    s = lf.LossSpec(name="hostile", expr="(x - y)**2", symbols={"x": lf.Var("input"), "y": lf.Var("target")},
                    reference="first\n\nthird", description="one\ntwo")
    for target, doc in (("numpy", lf.compile(s, "numpy").__doc__), ("torch", lf.compile(s, "torch").__doc__)):
        assert hc.docstring_form("first\n\nthird", "reference", target) in doc
        assert hc.docstring_form("one\ntwo", "description", target) in doc
