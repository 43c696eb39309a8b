"""Drive the Verilated accelerator from Python: the simulation backend of zeroskip's host side.

:func:`run_cases` converts :class:`~zeroskip.hw.accel.Accelerator` for given parameters to
Verilog, compiles it with Verilator once per parameter set (cached under ``build/sim``), and runs
the cocotb testbench :mod:`zeroskip.sim.accel_tb` on a batch of cases. Each case is a packed
model, input vectors and (optionally) the reference outputs; the testbench compares every output
element and fails with the first mismatches. When a run fails it is repeated with waveform
tracing on, so the error names the seed and a waveform of the failing run.
"""

from __future__ import annotations

import ast
import functools
import hashlib
import importlib.util
import json
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..spec import HwParams
from ..sw.cycles import computed_pixels
from ..sw.image import encode_commands, load_commands
from ..sw.pack import PackedModel, unsupported_layer
from .runner import SimulationFailed, run_cocotb

__all__ = ["Case", "CaseResult", "run_cases", "SimulationFailed", "hw_source_key",
           "hw_source_files", "RunProgress", "ConsoleProgress"]

TOPLEVEL = "zeroskip_accel"
_HW_TOP = "zeroskip.hw.accel"


def _imported_modules(name: str) -> set[str]:
    """The ``zeroskip`` modules that module ``name`` imports (read from its source, not run)."""
    spec = importlib.util.find_spec(name)
    if spec is None or not spec.origin or not spec.origin.endswith(".py"):
        return set()
    tree = ast.parse(Path(spec.origin).read_text(), spec.origin)
    package = name if spec.submodule_search_locations else name.rpartition(".")[0]
    found: set[str] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found.update(a.name for a in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")
                base = base[:len(base) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            found.add(mod)
            # ``from ..sw import params`` imports a submodule
            found.update(f"{mod}.{a.name}" for a in node.names)
    out = set()
    for mod in found:
        if mod.split(".")[0] != "zeroskip":
            continue
        try:
            if importlib.util.find_spec(mod) is not None:
                out.add(mod)
        except (ImportError, ValueError):
            pass  # ``from pkg import name`` where name is not a module
    return out


@functools.cache
def hw_source_files(top: str = _HW_TOP) -> tuple[Path, ...]:
    """The Python files the accelerator's Verilog is made from: ``top`` and every ``zeroskip``
    module it imports, transitively (read from the ``import`` statements; the parent packages'
    ``__init__`` files are left out unless imported by name: they do not make hardware)."""
    seen: set[str] = set()
    todo = [top]
    while todo:
        mod = todo.pop()
        if mod in seen:
            continue
        seen.add(mod)
        todo.extend(_imported_modules(mod) - seen)
    files = set()
    for mod in seen:
        spec = importlib.util.find_spec(mod)
        if spec is not None and spec.origin and spec.origin.endswith(".py"):
            files.add(Path(spec.origin).resolve())
    return tuple(sorted(files))


def hw_source_key(params: HwParams, counter_width: int = 32) -> str:
    """Digest naming one compiled accelerator: its source files, parameters and counter width.

    Any edit to a file of :func:`hw_source_files` (or other parameters) gives another key, so a
    stale simulator is never reused; the same key means the Verilog would be the same.
    """
    h = hashlib.sha256()
    h.update(json.dumps({"params": params.as_dict(), "counter_width": counter_width},
                        sort_keys=True).encode())
    for path in hw_source_files():
        h.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


@dataclass
class Case:
    model: PackedModel
    inputs: np.ndarray                      # (N, in) uint8 codes
    expected: np.ndarray | None = None      # (N, out) reference outputs
    idle: float = 0.0
    backpressure: float = 0.0
    skip_zero_acts: bool = True
    name: str = ""


@dataclass
class CaseResult:
    outputs: np.ndarray                     # (N, out) in the model's original output order
    counters: list[dict] = field(default_factory=list)


def _job(cases: list[Case], params: HwParams, result: Path, progress: Path | None = None) -> dict:
    out = {"pes": params.pes, "result": str(result), "cases": [],
           "progress": None if progress is None else str(progress)}
    for c in cases:
        # fin_lanes, mem_out_logic and conv describe the hardware only: a model runs on any
        # of them (conv=0 hardware: if it has no conv layer)
        if not c.model.params.packs_like(params):
            raise ValueError(f"case {c.name!r} was packed for {c.model.params}, not {params}")
        why = unsupported_layer([pl.q for pl in c.model.layers], params)
        if why is not None:
            raise ValueError(f"case {c.name!r}: {why}")
        inputs = np.asarray(c.inputs).reshape(len(c.inputs), -1)
        out_f = c.model.layers[-1].q.out_features
        layers = c.model.layers
        # generous cycle budget: every entry of every layer, plus overheads, plus stalls
        # (per conv pixel the hardware computes)
        budget = int(sum((pl.n_entries + pl.q.in_features + pl.q.out_features + 64)
                         * computed_pixels(pl.q.geom)
                         for pl in layers) * 4 / max(1e-3, 1 - max(c.idle, c.backpressure))
                     ) + 10_000
        out["cases"].append({
            "name": c.name,
            "words": encode_commands(params, load_commands(c.model, c.skip_zero_acts)),
            "inputs": inputs.astype(int).tolist(),
            # the hardware emits the last layer's rows in hardware order
            "expected": None if c.expected is None else c.model.to_hw_order(
                np.asarray(c.expected).astype(int).reshape(len(inputs), out_f)).tolist(),
            "out_features": out_f,
            "idle": float(c.idle),
            "backpressure": float(c.backpressure),
            "max_cycles": budget,
        })
    return out


#: ``progress(phase, done, total, elapsed)``: ``phase`` is ``"verilog"`` (Amaranth to Verilog),
#: ``"build"`` (Verilator; minutes the first time for a configuration) or ``"run"`` (``done`` of
#: ``total`` inputs simulated); called about twice a second.
RunProgress = Callable[[str, int, int, float], None]


class ConsoleProgress:
    """A :data:`RunProgress` that writes one status line per phase to ``stream`` (stderr).

    On a terminal the line is redrawn in place; elsewhere (logs, CI) a phase prints when it
    starts and then every ``every`` seconds, so a log shows that a long build is alive.
    """

    _TEXT = {
        "verilog": "converting the accelerator to Verilog (once per hardware configuration)",
        "build": "compiling the simulator with Verilator (once per hardware configuration; "
                 "the first build takes a few minutes)",
    }

    def __init__(self, stream=None, every: float = 15.0):
        self.stream = stream or sys.stderr
        self.tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self.every = every
        self.phase: str | None = None
        self.pending: str | None = None   # a line not printed yet (not on a terminal)
        self.last = 0.0

    def __call__(self, phase: str, done: int, total: int, elapsed: float) -> None:
        if phase == "run":
            text = f"simulating: {done}/{total} inputs done"
        else:
            text = self._TEXT.get(phase, phase)
        line = f"  {text}, {elapsed:.0f} s"
        now = time.monotonic()
        if self.tty:
            if self.phase is not None and phase != self.phase:
                self.stream.write("\n")
            self.stream.write("\r" + line + "\x1b[K")
            self.pending = None
        elif phase != self.phase or now - self.last >= self.every:
            if self.pending is not None and phase != self.phase:
                self.stream.write(self.pending + "\n")  # how the previous phase ended
            if phase == self.phase and phase != "run":
                line = f"  ... {elapsed:.0f} s"
            self.stream.write(line + "\n")
            self.last, self.pending = now, None
        else:
            self.pending = line
        self.phase = phase
        self.stream.flush()

    def close(self) -> None:
        """End the status line: a newline on a terminal, the last state elsewhere."""
        if self.tty and self.phase is not None:
            self.stream.write("\n")
        elif self.pending is not None:
            self.stream.write(self.pending + "\n")
        self.stream.flush()
        self.phase, self.pending = None, None


def run_cases(params: HwParams, cases: list[Case], *, seed: int | None = None,
              counter_width: int = 32, name: str = "accel",
              progress: RunProgress | None = None, quiet: bool = False) -> list[CaseResult]:
    """Run ``cases`` on the Verilated accelerator built for ``params``.

    The simulator for ``params`` and ``counter_width`` is compiled the first time only (see the
    module docstring); ``progress`` (:data:`RunProgress`) hears about the build and the run;
    ``quiet`` leaves out the line naming the build directory and the seed (a failure still
    names them).

    Raises :class:`~zeroskip.sim.runner.SimulationFailed` (an ``AssertionError``) naming the
    mismatching outputs, the seed and the waveform of the failing run.
    """
    total = sum(len(c.inputs) for c in cases)
    with tempfile.TemporaryDirectory(prefix="zeroskip-job-") as tmp:
        result = Path(tmp) / "result.json"
        job_path = Path(tmp) / "job.json"
        progress_path = Path(tmp) / "progress"
        job_path.write_text(json.dumps(_job(cases, params, result, progress_path)))
        build_params = {**params.as_dict(), "counter_width": counter_width}
        key = hw_source_key(params, counter_width)

        def report(phase: str, elapsed: float) -> None:
            if progress is None:
                return
            if phase == "test":
                try:
                    done = int(progress_path.read_text() or 0)
                except (OSError, ValueError):
                    done = 0
                progress("run", done, total, elapsed)
            else:
                progress(phase, 0, total, elapsed)

        def make():
            from ..hw.accel import Accelerator
            return Accelerator(params, counter_width)

        def run(waves: bool, seed):
            return run_cocotb(make, TOPLEVEL,
                              "zeroskip.sim.accel_tb", name=f"{name}{'-waves' if waves else ''}",
                              params={**build_params, "waves": waves},
                              extra_env={"ZEROSKIP_JOB": str(job_path)}, seed=seed, waves=waves,
                              source_key=key, progress=report,
                              run_dir=None if waves else Path(tmp) / "run",
                              quiet=quiet)

        from .runner import resolve_seed
        seed = resolve_seed(seed)
        try:
            run(False, seed)
        except SimulationFailed as first:
            try:
                run(True, seed)
            except SimulationFailed as traced:
                raise traced from None
            raise first from None  # not reproduced with tracing on: report the original
        data = json.loads(result.read_text())
    return [CaseResult(c.model.from_hw_order(np.asarray(r["outputs"], dtype=np.int64)),
                       r["counters"]) for c, r in zip(cases, data["cases"])]
