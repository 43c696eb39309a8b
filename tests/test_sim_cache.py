"""The simulator cache: one build per hardware configuration, keyed by the hardware's sources,
reused by every model and call without converting to Verilog or compiling again."""

from __future__ import annotations

import io
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zeroskip.sim import runner, verilated
from zeroskip.sim.verilated import ConsoleProgress, hw_source_files, hw_source_key
from zeroskip.spec import HwParams

ROOT = Path(__file__).resolve().parent.parent


def test_source_files_are_the_hardware_and_its_imports():
    files = {p.relative_to(ROOT).as_posix() for p in hw_source_files()}
    assert {"hw/accel.py", "hw/pe.py", "hw/scanner.py"} <= files
    import inspect
    assert Path(inspect.getfile(HwParams)).resolve().relative_to(ROOT).as_posix() in files
    # the packer, the quantizer, the simulation and the CLI make no hardware
    assert not files & {"sw/pack.py", "sw/quant.py", "sim/verilated.py", "zeroskip/cli.py",
                        "zeroskip/__init__.py", "zeroskip/api.py"}


def test_source_key_follows_params_counters_and_sources(monkeypatch, tmp_path):
    p = HwParams()
    key = hw_source_key(p)
    assert hw_source_key(HwParams()) == key
    assert hw_source_key(replace(p, pes=4)) != key
    assert hw_source_key(replace(p, fin_lanes=1)) != key        # hardware-only fields too
    assert hw_source_key(p, counter_width=24) != key
    # any byte of any hardware source file changes the key
    copies = []
    for f in hw_source_files():
        c = tmp_path / f.name
        c.write_bytes(f.read_bytes())
        copies.append(c)
    monkeypatch.setattr(verilated, "hw_source_files", lambda: tuple(copies))
    assert hw_source_key(p) == key
    copies[-1].write_bytes(copies[-1].read_bytes() + b"\n")
    assert hw_source_key(p) != key


def test_build_root_is_the_user_cache_unless_overridden(monkeypatch, tmp_path):
    from platformdirs import user_cache_dir
    monkeypatch.delenv("ZEROSKIP_SIM_BUILD", raising=False)
    root = runner.sim_build_root()
    assert root == Path(user_cache_dir("zeroskip")) / "sim"
    assert ROOT not in root.parents
    monkeypatch.setenv("ZEROSKIP_SIM_BUILD", str(tmp_path / "b"))
    assert runner.sim_build_root() == tmp_path / "b"


def test_console_progress_in_a_log():
    out = io.StringIO()
    p = ConsoleProgress(out, every=1e9)
    p("verilog", 0, 5, 0.0)
    p("verilog", 0, 5, 3.0)
    p("build", 0, 5, 0.0)
    p("build", 0, 5, 61.0)
    p("run", 2, 5, 0.5)
    p("run", 5, 5, 1.0)
    p.close()
    lines = out.getvalue().splitlines()
    assert lines[0].startswith("  converting the accelerator to Verilog") and \
        lines[0].endswith(", 0 s")
    assert lines[1].endswith(", 3 s")                       # how the conversion ended
    assert "first build takes a few minutes" in lines[2] and lines[2].endswith(", 0 s")
    assert lines[3].endswith(", 61 s")
    assert lines[4] == "  simulating: 2/5 inputs done, 0 s"
    assert lines[5] == "  simulating: 5/5 inputs done, 1 s"
    assert len(lines) == 6


@pytest.mark.sim
def test_second_run_neither_converts_nor_builds(sim_seed):
    """Two different models on one configuration: after the first run (which may build, or find
    the build of another test), the second converts nothing, compiles nothing and leaves the
    simulator executable untouched; the progress reaches every input."""
    from zeroskip.sim.cases import random_inputs, random_model
    from zeroskip.sim.verilated import Case, run_cases
    from zeroskip.sw.pack import pack_model
    from zeroskip.sw.ref import run_model

    params = HwParams()   # the configuration test_rtl_accel and test_cli build too
    rng = np.random.default_rng(7)

    def case(sizes):
        pm = pack_model(random_model(rng, sizes, [0.3] * (len(sizes) - 1)), params)
        x = random_inputs(rng, 3, sizes[0], 0.5)
        return Case(pm, x, run_model(pm, x).numpy(), name=str(sizes))

    run_cases(params, [case([20, 12])], seed=sim_seed)
    key = hw_source_key(params)
    build = runner.sim_build_root()
    exes = [p for p in build.glob("accel-*/zeroskip_accel")
            if (p.parent / "zeroskip-build.stamp").exists()]
    assert exes
    mtimes = {p: p.stat().st_mtime_ns for p in exes}
    before = dict(runner.stats)
    seen = []
    c2 = case([33, 17, 9])
    res = run_cases(params, [c2], seed=sim_seed,
                    progress=lambda phase, done, total, t: seen.append((phase, done, total)))
    assert runner.stats == before, "the second run converted or compiled again"
    assert {p: p.stat().st_mtime_ns for p in exes} == mtimes
    assert {ph for ph, _, _ in seen} == {"run"}
    assert seen[-1] == ("run", 3, 3)
    np.testing.assert_array_equal(res[0].outputs, c2.expected)
    assert hw_source_key(params) == key
