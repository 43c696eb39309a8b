"""Drive the Verilated accelerator from Python: the simulation backend of zeroskip's host side.

:func:`run_cases` converts :class:`~zeroskip.hw.accel.Accelerator` for given parameters to
Verilog, compiles it with Verilator once per parameter set (cached under ``build/sim``), and runs
the cocotb testbench :mod:`zeroskip.sim.accel_tb` on a batch of cases. Each case is a packed
model, input vectors and (optionally) the reference outputs; the testbench compares every output
element and fails with the first mismatches. When a run fails it is repeated with waveform
tracing on, so the error names the seed and a waveform of the failing run.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..hw.accel import Accelerator
from ..spec import HwParams
from ..sw.image import encode_commands, load_commands
from ..sw.pack import PackedModel
from .runner import SimulationFailed, run_cocotb

__all__ = ["Case", "CaseResult", "run_cases", "SimulationFailed"]

TOPLEVEL = "zeroskip_accel"


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


def _job(cases: list[Case], params: HwParams, result: Path) -> dict:
    out = {"pes": params.pes, "result": str(result), "cases": []}
    for c in cases:
        # fin_lanes and mem_out_logic describe the hardware only: a model runs on any of them
        if not c.model.params.packs_like(params):
            raise ValueError(f"case {c.name!r} was packed for {c.model.params}, not {params}")
        inputs = np.asarray(c.inputs).reshape(len(c.inputs), -1)
        out_f = c.model.layers[-1].q.out_features
        layers = c.model.layers
        # generous cycle budget: every entry of every layer, plus overheads, plus stalls
        budget = int(sum(pl.n_entries + pl.q.in_features + pl.q.out_features + 64
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


def run_cases(params: HwParams, cases: list[Case], *, seed: int | None = None,
              counter_width: int = 32, name: str = "accel") -> list[CaseResult]:
    """Run ``cases`` on the Verilated accelerator built for ``params``.

    Raises :class:`~zeroskip.sim.runner.SimulationFailed` (an ``AssertionError``) naming the
    mismatching outputs, the seed and the waveform of the failing run.
    """
    with tempfile.TemporaryDirectory(prefix="zeroskip-job-") as tmp:
        result = Path(tmp) / "result.json"
        job_path = Path(tmp) / "job.json"
        job_path.write_text(json.dumps(_job(cases, params, result)))
        build_params = {**params.as_dict(), "counter_width": counter_width}

        def run(waves: bool, seed):
            return run_cocotb(lambda: Accelerator(params, counter_width), TOPLEVEL,
                              "zeroskip.sim.accel_tb", name=f"{name}{'-waves' if waves else ''}",
                              params={**build_params, "waves": waves},
                              extra_env={"ZEROSKIP_JOB": str(job_path)}, seed=seed, waves=waves)

        from .runner import _resolve_seed
        seed = _resolve_seed(seed)
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
