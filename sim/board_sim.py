"""The simulated board: a board top under Verilator, bridged to a pseudo-terminal.

:func:`build_board_sim` converts :func:`zeroskip.boards.tops.make_top` (the real top: UART
receiver and transmitter, host link, accelerator) to Verilog with a small UART divisor, and
compiles it with ``sim/board_main.cpp`` into one executable (cached under
``build/sim/board-<board>-<hash>/``; Verilator takes a minute or two the first time).
:class:`SimBoard` starts it: the program opens a pty and prints its slave path, so the host
driver talks to it with pyserial exactly as to a real board (``serial.Serial(path)``). The
bridge can inject faults (:class:`Faults`); :meth:`SimBoard.close` returns their counts.
"""

from __future__ import annotations

import hashlib
import json
import os
import select
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from .runner import _digest, _locked, ensure_verilator, sim_build_root

__all__ = ["Faults", "SimBoard", "build_board_sim", "SIM_DIVISOR"]

#: UART clock cycles per bit in simulation (the real boards use 345 and 868 at 115200 baud).
SIM_DIVISOR = 8
_MAIN = Path(__file__).with_name("board_main.cpp")
_TOP = "zeroskip_board"
_RECIPE = 2


@dataclass(frozen=True)
class Faults:
    """Per-byte probabilities of the faults the bridge injects (both directions, except
    ``reset``: per byte from the host, the board's reset is held for 4 cycles)."""

    flip: float = 0.0
    drop: float = 0.0
    dup: float = 0.0
    delay: float = 0.0
    reset: float = 0.0

    def __post_init__(self):
        for k, v in asdict(self).items():
            if not (isinstance(v, (int, float)) and 0.0 <= v <= 1.0):
                raise ValueError(f"fault probability {k} must be in [0, 1], not {v!r}")


def board_sim_key(board: str, divisor: int = SIM_DIVISOR) -> str:
    """Digest naming one compiled simulated board: the Python files its top's Verilog is made
    from (:func:`~zeroskip.sim.verilated.hw_source_files` of ``zeroskip.boards.tops``), the
    bridge's C++ source, the board and the divisor. Reading files only, so a cached simulator
    starts without converting the top to Verilog again."""
    import amaranth

    from .verilated import hw_source_files

    h = hashlib.sha256(_digest(_RECIPE, board, divisor, amaranth.__version__).encode())
    for path in (*hw_source_files("zeroskip.boards.tops"), _MAIN):
        h.update(b"\0" + path.name.encode() + b"\0" + path.read_bytes())
    return h.hexdigest()


def build_board_sim(board: str, divisor: int = SIM_DIVISOR) -> Path:
    """The simulator executable for ``board`` (compiled once per top and divisor)."""
    path = sim_build_root() / f"board-{board}-{board_sim_key(board, divisor)[:12]}"
    exe = path / "obj" / "zsboard"
    with _locked(path / ".lock"):
        if exe.exists():
            return exe
        from amaranth.back import verilog

        from ..boards.tops import make_top

        top, _ = make_top(board, divisor=divisor)
        text = verilog.convert(top, name=_TOP,
                               ports=[top.rx, top.tx, top.led_busy, top.led_error])
        ensure_verilator()
        path.mkdir(parents=True, exist_ok=True)
        (path / f"{_TOP}.v").write_text(text)
        cmd = ["verilator", "--cc", "--exe", "--build", "-j", "2", "-Wno-fatal", "--top-module",
               _TOP, "--Mdir", str(path / "obj"), "-o", "zsboard", "-O3",
               "--x-assign", "fast", "--x-initial", "fast",
               "-CFLAGS", f"-O1 -DVTOP=V{_TOP} -DVTOP_HEADER='\"V{_TOP}.h\"'",
               "-MAKEFLAGS", "CFG_CXXFLAGS_PCH_I=-include",
               str(path / f"{_TOP}.v"), str(_MAIN)]
        log = path / "build.log"
        with open(log, "w") as fh:
            res = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT)
        if res.returncode != 0 or not exe.exists():
            tail = "\n".join(log.read_text(errors="replace").splitlines()[-30:])
            raise RuntimeError(f"Verilator build of the {board} board failed; log: {log}\n{tail}")
    return exe


class SimBoard:
    """A running simulated board: ``port`` is the pty path to open with pyserial.

    Parameters
    ----------
    board : str
        ``icebreaker`` or ``ulx3s`` (the top of :func:`~zeroskip.boards.tops.make_top`).
    faults : Faults
        Faults to inject (none by default).
    seed : int
        Seed of the fault generator.
    """

    def __init__(self, board: str, faults: Faults | None = None, seed: int = 1,
                 divisor: int = SIM_DIVISOR):
        self.board = board
        self.faults = faults or Faults()
        exe = build_board_sim(board, divisor)
        fd, self._stats = tempfile.mkstemp(prefix="zsboard-", suffix=".json")
        os.close(fd)
        args = [str(exe), "--divisor", str(divisor), "--seed", str(seed), "--stats", self._stats]
        for k, v in asdict(self.faults).items():
            args += [f"--{k}", repr(float(v))]
        self._proc = subprocess.Popen(args, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL)
        ready, _, _ = select.select([self._proc.stdout], [], [], 30)
        line = self._proc.stdout.readline().decode().strip() if ready else ""
        if not line.startswith("/dev/"):
            self._proc.kill()
            raise RuntimeError(f"the simulated {board} board did not start (got {line!r})")
        self.port = line
        self.stats: dict | None = None

    def close(self) -> dict:
        """Stop the simulator; the fault counts (``flip_in``, ``drop_out``, ``resets``, ...)."""
        if self.stats is not None:
            return self.stats
        self._proc.terminate()
        try:
            self._proc.wait(10)
        except subprocess.TimeoutExpired:
            self._proc.kill()
            self._proc.wait()
        try:
            self.stats = json.loads(Path(self._stats).read_text() or "{}")
        except (OSError, ValueError):
            self.stats = {}
        finally:
            Path(self._stats).unlink(missing_ok=True)
        return self.stats

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __del__(self):
        proc = getattr(self, "_proc", None)
        if proc is not None and proc.poll() is None:
            proc.kill()


def _smoke(board: str = "icebreaker") -> None:  # pragma: no cover - manual check
    import serial

    from ..spec import T_INFO, FrameParser, encode_frame

    with SimBoard(board) as sb:
        s = serial.Serial(sb.port, timeout=0.5)
        t = time.time()
        s.write(encode_frame(T_INFO, 7))
        p = FrameParser()
        got = []
        while not got and time.time() - t < 5:
            got = p.feed(s.read(256))
        print(got, time.time() - t)
