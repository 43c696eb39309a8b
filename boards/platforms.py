"""The boards zeroskip targets, and the PLL clocking every board top runs on.

``BOARDS`` maps a board name to a :class:`Board`: the ``amaranth-boards`` platform class (imported,
not forked), the target clock, the resource budgets, and the yosys/nextpnr options. A board top
does not request the board's input clock: :class:`PLLClockDomain` (added by
:func:`zeroskip.boards.build.build_board`) makes the ``sync`` domain at the target frequency
from the board oscillator and holds ``sync`` in reset until the PLL has locked.

Clocking:
    iCEBreaker  12 MHz pin 35 -> ``SB_PLL40_PAD`` -> 39.75 MHz (nearest to 40 MHz that the
                iCE40 PLL makes from 12 MHz; nextpnr checks timing at the real 39.75 MHz,
                report.json compares fmax with 40 MHz)
    ULX3S-85F   25 MHz pin G2 -> ``EHXPLLL`` -> 100 MHz
"""

from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction

from amaranth.hdl import ClockSignal, Const, Elaboratable, Instance, Module, Signal
from amaranth.lib import io
from amaranth.lib.cdc import ResetSynchronizer

__all__ = [
    "BOARDS",
    "Board",
    "PLLClockDomain",
    "ecp5_pll_params",
    "get_board",
    "ice40_pll_params",
]


@dataclass(frozen=True)
class Board:
    """What the build flow needs to know about one board.

    ``luts``/``dsps``/``brams`` are the device's totals (for the utilization in the report);
    ``spram`` is the iCE40UP5K's 256 Kbit single-port RAM count (0 elsewhere).
    """

    name: str
    title: str
    family: str  # "ice40" or "ecp5"
    platform_path: str  # "module:Class" in amaranth_boards
    clk_resource: str
    clk_in_mhz: float
    target_mhz: float
    luts: int
    dsps: int
    brams: int
    spram: int = 0
    synth_opts: tuple[str, ...] = ()
    nextpnr_opts: tuple[str, ...] = ()
    extra: dict = field(default_factory=dict)

    def platform(self):
        """A fresh instance of the board's ``amaranth-boards`` platform."""
        import importlib

        module, cls = self.platform_path.split(":")
        return getattr(importlib.import_module(module), cls)()

    def pll(self) -> dict:
        """PLL settings (``params`` and the achieved ``out_mhz``) for the target clock."""
        if self.family == "ice40":
            return ice40_pll_params(self.clk_in_mhz, self.target_mhz)
        if self.family == "ecp5":
            return ecp5_pll_params(self.clk_in_mhz, self.target_mhz)
        raise ValueError(f"Unknown FPGA family {self.family!r}")


BOARDS: dict[str, Board] = {
    "icebreaker": Board(
        name="icebreaker",
        title="iCEBreaker (iCE40UP5K-SG48)",
        family="ice40",
        platform_path="amaranth_boards.icebreaker:ICEBreakerPlatform",
        clk_resource="clk12",
        clk_in_mhz=12.0,
        target_mhz=40.0,
        luts=5280,
        dsps=8,
        brams=30,
        spram=4,
        synth_opts=("-dsp",),
    ),
    "ulx3s": Board(
        name="ulx3s",
        title="ULX3S-85F (LFE5U-85F-6BG381C)",
        family="ecp5",
        platform_path="amaranth_boards.ulx3s:ULX3S_85F_Platform",
        clk_resource="clk25",
        clk_in_mhz=25.0,
        target_mhz=100.0,
        luts=83640,
        dsps=156,
        brams=208,
    ),
}


def get_board(name: str) -> Board:
    """The :class:`Board` called ``name``; ``KeyError`` with the known names otherwise."""
    try:
        return BOARDS[name]
    except KeyError:
        raise KeyError(f"Unknown board {name!r}; known boards: {', '.join(BOARDS)}") from None


def ice40_pll_params(fin_mhz: float, fout_mhz: float) -> dict:
    """``SB_PLL40_*`` settings (SIMPLE feedback) whose output is nearest to ``fout_mhz``.

    Ranges from the iCE40 sysCLOCK PLL guide: PFD 10-133 MHz, VCO 533-1066 MHz, DIVQ 1-6.
    Among equally close results, one not above the target is preferred.
    """
    fin = Fraction(fin_mhz)
    best = None
    for divr in range(16):
        pfd = fin / (divr + 1)
        if not 10 <= pfd <= 133:
            continue
        for divf in range(128):
            vco = pfd * (divf + 1)
            if not 533 <= vco <= 1066:
                continue
            for divq in range(1, 7):
                fout = vco / 2**divq
                key = (abs(fout - Fraction(fout_mhz)), fout > fout_mhz)
                if best is None or key < best[0]:
                    best = (key, divr, divf, divq, pfd, fout)
    if best is None:
        raise ValueError(f"No iCE40 PLL setting makes {fout_mhz} MHz from {fin_mhz} MHz")
    _, divr, divf, divq, pfd, fout = best
    # Loop filter range by PFD frequency (as icepll chooses it).
    filter_range = next(r for r, top in enumerate((17, 26, 44, 66, 101, 1e9), 1) if pfd < top)
    return {
        "params": {
            "FEEDBACK_PATH": "SIMPLE",
            "DIVR": divr,
            "DIVF": divf,
            "DIVQ": divq,
            "FILTER_RANGE": filter_range,
        },
        "out_mhz": float(fout),
    }


def ecp5_pll_params(fin_mhz: float, fout_mhz: float) -> dict:
    """``EHXPLLL`` settings (feedback from CLKOP) whose CLKOP is nearest to ``fout_mhz``.

    Ranges: PFD 3.125-400 MHz, VCO 400-800 MHz; dividers 1-128 (CLKFB 1-80).
    """
    fin = Fraction(fin_mhz)
    best = None
    for clki_div in range(1, 129):
        pfd = fin / clki_div
        if not Fraction(3125, 1000) <= pfd <= 400:
            continue
        for clkfb_div in range(1, 81):
            fout = pfd * clkfb_div
            for clkop_div in range(1, 129):
                vco = fout * clkop_div
                if not 400 <= vco <= 800:
                    continue
                # prefer exact, then a VCO near the middle of its range
                key = (abs(fout - Fraction(fout_mhz)), abs(vco - 600))
                if best is None or key < best[0]:
                    best = (key, clki_div, clkfb_div, clkop_div, fout)
    if best is None:
        raise ValueError(f"No ECP5 PLL setting makes {fout_mhz} MHz from {fin_mhz} MHz")
    _, clki_div, clkfb_div, clkop_div, fout = best
    return {
        "params": {
            "CLKI_DIV": clki_div,
            "CLKFB_DIV": clkfb_div,
            "CLKOP_DIV": clkop_div,
            "CLKOP_CPHASE": clkop_div - 1,
            "CLKOP_FPHASE": 0,
        },
        "out_mhz": float(fout),
    }


class PLLClockDomain(Elaboratable):
    """Drives the ``sync`` domain's clock and reset at the board's target clock.

    The parent defines the domain (``m.domains.sync = ClockDomain("sync")``) and adds this
    module beside the top that uses it.

    ``sync`` is held in reset until the PLL reports lock (synchronized release), which on iCE40
    also covers the few microseconds after configuration when block RAM reads return zeros.
    No explicit constraint is added for ``sync``: nextpnr derives it from the board clock pin's
    constraint through the PLL (its log says "Derived frequency constraint of ... for net clk").

    Parameters
    ----------
    board : Board
    """

    def __init__(self, board: Board):
        if not isinstance(board, Board):
            raise TypeError(f"board must be a Board, not {board!r}")
        self.board = board
        self.pll = board.pll()
        self.out_mhz = self.pll["out_mhz"]

    def elaborate(self, platform):
        m = Module()
        clk_out = Signal()
        locked = Signal()
        params = self.pll["params"]
        if self.board.family == "ice40":
            # Pin 35 of the UP5K-SG48 is the PLL's dedicated input pad.
            clk_pad = platform.request(self.board.clk_resource, dir="-")
            m.submodules.pll = Instance(
                "SB_PLL40_PAD",
                p_FEEDBACK_PATH=params["FEEDBACK_PATH"],
                p_DIVR=Const(params["DIVR"], 4),
                p_DIVF=Const(params["DIVF"], 7),
                p_DIVQ=Const(params["DIVQ"], 3),
                p_FILTER_RANGE=Const(params["FILTER_RANGE"], 3),
                i_PACKAGEPIN=clk_pad.io,
                i_RESETB=Const(1),
                i_BYPASS=Const(0),
                o_PLLOUTGLOBAL=clk_out,
                o_LOCK=locked,
            )
        elif self.board.family == "ecp5":
            clk_pin = platform.request(self.board.clk_resource, dir="-")
            m.submodules.clk_buf = clk_buf = io.Buffer("i", clk_pin)
            clk_in = clk_buf.i
            m.submodules.pll = Instance(
                "EHXPLLL",
                a_FREQUENCY_PIN_CLKI=f"{self.board.clk_in_mhz:g}",
                a_FREQUENCY_PIN_CLKOP=f"{self.out_mhz:g}",
                a_ICP_CURRENT="12",
                a_LPF_RESISTOR="8",
                a_MFG_ENABLE_FILTEROPAMP="1",
                a_MFG_GMCREF_SEL="2",
                p_PLLRST_ENA="DISABLED",
                p_INTFB_WAKE="DISABLED",
                p_STDBY_ENABLE="DISABLED",
                p_DPHASE_SOURCE="DISABLED",
                p_OUTDIVIDER_MUXA="DIVA",
                p_OUTDIVIDER_MUXB="DIVB",
                p_OUTDIVIDER_MUXC="DIVC",
                p_OUTDIVIDER_MUXD="DIVD",
                p_CLKOP_ENABLE="ENABLED",
                p_FEEDBK_PATH="CLKOP",
                **{f"p_{k}": v for k, v in params.items()},
                i_CLKI=clk_in,
                i_CLKFB=clk_out,
                i_RST=Const(0),
                i_STDBY=Const(0),
                i_PHASESEL0=Const(0),
                i_PHASESEL1=Const(0),
                i_PHASEDIR=Const(0),
                i_PHASESTEP=Const(0),
                i_PHASELOADREG=Const(0),
                i_PLLWAKESYNC=Const(0),
                i_ENCLKOP=Const(0),
                o_CLKOP=clk_out,
                o_LOCK=locked,
            )
        else:
            raise ValueError(f"Unknown FPGA family {self.board.family!r}")
        m.d.comb += ClockSignal("sync").eq(clk_out)
        m.submodules.reset_sync = ResetSynchronizer(~locked, domain="sync")
        return m
