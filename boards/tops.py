"""Board tops: the accelerator behind a UART host link (protocol version 2).

    UART rx pin ─► UARTRx ─► HostLink ─► load / act_in ─► Accelerator (reset by the link:
    UART tx pin ◄─ UARTTx ◄─ HostLink ◄─ result, counters ◄──┘        RESET, watchdog)

LED 0 shows ``busy``; LED 1 latches a UART framing error, overrun or watchdog (until reset).
The tops run in ``sync``, which :func:`zeroskip.boards.build.build_board` makes with the
board's PLL; they never request the board clock. The link protocol is described in
:mod:`zeroskip.hw.link` and ``docs/boards.md``.

:data:`BOARD_PARAMS` holds the accelerator parameters chosen per board (the largest PE count
that fits and meets timing, see ``docs/boards.md``); :func:`make_top` is what
``python -m zeroskip.boards.build`` builds.
"""

from __future__ import annotations

from amaranth.hdl import Elaboratable, Module, ResetInserter, Signal
from amaranth.lib import io

from ..hw.accel import Accelerator
from ..hw.link import HostLink, connect_accelerator
from ..hw.uart import UARTRx, UARTTx, uart_divisor
from ..spec import BOARD_IDS, HwParams
from .platforms import get_board

__all__ = ["BOARD_PARAMS", "BOARD_COUNTER_WIDTH", "DEFAULT_BAUD", "AcceleratorTop", "make_top"]

DEFAULT_BAUD = 115200

#: Accelerator parameters per board.
BOARD_PARAMS: dict[str, HwParams] = {
    # 2 PEs: 3 SB_MAC16 per PE (MAC + requantization), 28 of 30 EBR (ptr_mem has two read
    # ports, so it is stored twice), about 4100 of 5280 LCs. One finalization lane (a second
    # needs a second requantizer: 2 more SB_MAC16 per PE, and twice the accumulator EBR).
    # mem_out_logic: the iCE40's block RAM outputs may drive a little logic at 40 MHz.
    # 24-bit accumulators: with at most 256 inputs per layer, 256 * 128 * 255 < 2**23, so only
    # a huge bias can overflow them, and the packer refuses such a model with a clear error.
    "icebreaker": HwParams(pes=2, index_bits=6, acc_width=24, entry_depth=1024, ptr_depth=256,
                           row_depth=256, act_depth=256, max_layers=4, fifo_depth=4,
                           fin_lanes=1, mem_out_logic=1, conv=0),
    # 8 PEs, one finalization lane: the largest configuration measured to meet 100 MHz (8 PEs:
    # 107.4 MHz; 8 PEs with fin_lanes=2: 92-93; 12 PEs: 89.5; 20 fits the FPGA but reaches ~58
    # after placement; docs/boards.md). About 9 DP16KD per PE (entries 2, pointers 2 x 2,
    # bias, requant, accumulators), 3 MULT18X18D per PE; 16K entries in all.
    "ulx3s": HwParams(pes=8, index_bits=6, entry_depth=2048, ptr_depth=2048, row_depth=256,
                      act_depth=1024, max_layers=8, fifo_depth=8, fin_lanes=1),
}

#: Performance counter width per board (narrower counters save logic on the iCE40).
BOARD_COUNTER_WIDTH: dict[str, int] = {"icebreaker": 24, "ulx3s": 32}


class AcceleratorTop(Elaboratable):
    """Accelerator + :class:`HostLink` + UART, on a board's ``uart`` 0 and LEDs 0 and 1.

    Parameters
    ----------
    params : HwParams
    clk_hz : float
        Frequency of ``sync`` (for the UART divisor).
    baud : int
        UART baud rate (8N1).
    counter_width : int
        Width of the performance counters (8..32).
    board : str
        The board name INFO reports (a value of :data:`zeroskip.spec.BOARD_IDS`).
    divisor : int or None
        UART clock divisor; default ``uart_divisor(clk_hz, baud)``. Simulation passes a small
        one (the frame timeout follows it), so the UART RTL runs at a few cycles per bit.

    Attributes
    ----------
    rx, tx, led_busy, led_error : Signal
        The pins, when elaborated without a platform (for simulation).
    accel, link, uart_rx, uart_tx : the submodules.

    Raises
    ------
    ValueError
        If the baud rate cannot be made from ``clk_hz`` (see :func:`uart_divisor`).
    """

    def __init__(self, params: HwParams, *, clk_hz: float, baud: int = DEFAULT_BAUD,
                 counter_width: int = 32, board: str = "generic", divisor: int | None = None):
        self.params = params
        self.baud = baud
        self.divisor = uart_divisor(clk_hz, baud) if divisor is None else divisor
        ids = {v: k for k, v in BOARD_IDS.items()}
        if board not in ids:
            raise ValueError(f"board must be one of {sorted(ids)}, not {board!r}")
        self.accel = Accelerator(params, counter_width=counter_width)
        # a frame whose bytes stop for 200 bit times is dropped (17 ms at 115200 baud)
        self.link = HostLink(params, counter_width=counter_width, board_id=ids[board],
                             clk_hz=int(clk_hz), divisor=self.divisor,
                             frame_timeout=200 * self.divisor)
        self.uart_rx = UARTRx(divisor=self.divisor)
        self.uart_tx = UARTTx(divisor=self.divisor)
        self.rx = Signal(init=1)
        self.tx = Signal(init=1)
        self.led_busy = Signal()
        self.led_error = Signal()

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = ResetInserter(self.link.accel_rst)(self.accel)
        m.submodules.link = self.link
        m.submodules.uart_rx = self.uart_rx
        m.submodules.uart_tx = self.uart_tx
        connect_accelerator(m, self.link, self.accel)
        m.d.comb += [
            self.link.host_in.payload.eq(self.uart_rx.o.payload),
            self.link.host_in.valid.eq(self.uart_rx.o.valid),
            self.uart_rx.o.ready.eq(self.link.host_in.ready),
            self.uart_tx.i.payload.eq(self.link.host_out.payload),
            self.uart_tx.i.valid.eq(self.link.host_out.valid),
            self.link.host_out.ready.eq(self.uart_tx.i.ready),
            self.uart_rx.rx.eq(self.rx),
            self.tx.eq(self.uart_tx.tx),
            self.led_busy.eq(self.accel.busy),
        ]
        with m.If(self.uart_rx.framing_error | self.uart_rx.overrun | self.link.watchdog):
            m.d.sync += self.led_error.eq(1)

        if platform is not None:
            uart = platform.request("uart", 0, dir="-")
            m.submodules.rx_buf = rx_buf = io.Buffer("i", uart.rx)
            m.submodules.tx_buf = tx_buf = io.Buffer("o", uart.tx)
            m.d.comb += [self.rx.eq(rx_buf.i), tx_buf.o.eq(self.tx)]
            for k, sig in enumerate((self.led_busy, self.led_error)):
                m.submodules[f"led{k}"] = led = io.Buffer("o", platform.request("led", k, dir="-"))
                m.d.comb += led.o.eq(sig)
        return m


def make_top(board: str, *, params: HwParams | None = None, baud: int = DEFAULT_BAUD,
             counter_width: int | None = None,
             divisor: int | None = None) -> tuple[AcceleratorTop, dict]:
    """The top for ``board`` and its info (``pes``, ``params``, ``baud``, ...) for report.json.

    ``params``/``counter_width`` default to :data:`BOARD_PARAMS` / :data:`BOARD_COUNTER_WIDTH`.
    """
    spec = get_board(board)
    params = params or BOARD_PARAMS[spec.name]
    counter_width = counter_width or BOARD_COUNTER_WIDTH[spec.name]
    clk_hz = spec.pll()["out_mhz"] * 1e6
    top = AcceleratorTop(params, clk_hz=clk_hz, baud=baud, counter_width=counter_width,
                         board=spec.name, divisor=divisor)
    info = {
        "top": "AcceleratorTop (UART HostLink v2 + Accelerator)",
        "protocol": 2,
        "pes": params.pes,
        "params": params.as_dict(),
        "counter_width": counter_width,
        "baud": baud,
        "uart_divisor": top.divisor,
    }
    return top, info
