"""cocotb testbench of :class:`~zeroskip.sim.smoke.StreamAccumulator` (Verilator).

Stream ports of the converted Verilog: ``i__valid/i__ready/i__payload`` and
``o__valid/o__ready/o__payload``; ``clk`` and ``rst`` drive the ``sync`` domain. Widths are read
back from the DUT. Random idle cycles on the input and random back-pressure on the output are
test parameters; a protocol checker asserts that ``o.valid`` holds with a stable payload until
the transfer. Randomness comes from ``random``, which cocotb seeds from ``COCOTB_RANDOM_SEED``.
"""

from __future__ import annotations

import random

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge

from zeroskip.sim.smoke.accumulator import accumulate
from zeroskip.sim.streams import StreamSink, StreamSource


class TB:
    """Owns clock, reset, source and sink of one accumulator."""

    def __init__(self, dut, idle: float, backpressure: float):
        self.dut = dut
        self.width = len(dut.i__payload)
        self.acc_width = len(dut.o__payload)
        self.source = StreamSource(dut, "i", idle)
        self.sink = StreamSink(dut, "o", backpressure)
        Clock(dut.clk, 10, unit="ns").start()

    async def reset(self) -> None:
        self.dut.rst.value = 1
        await ClockCycles(self.dut.clk, 3)
        self.dut.rst.value = 0
        await RisingEdge(self.dut.clk)

    async def run(self, values: list[int]) -> None:
        await self.reset()
        sender = cocotb.start_soon(self.source.send(values))
        got = await self.sink.receive(len(values), max_cycles=50 * len(values) + 100)
        await sender
        want = accumulate(values, self.acc_width)
        assert got == want, f"first mismatch at {_first_diff(got, want)}: {got[:8]} vs {want[:8]}"
        # Nothing extra comes out once the input is exhausted.
        await ClockCycles(self.dut.clk, 5)
        await ReadOnly()
        assert not int(self.dut.o__valid.value), "spurious output after the last input"


def _first_diff(a: list[int], b: list[int]) -> int:
    diffs = (k for k, (x, y) in enumerate(zip(a, b, strict=False)) if x != y)
    return next(diffs, min(len(a), len(b)))


@cocotb.test()
@cocotb.parametrize(idle=[0.0, 0.5], backpressure=[0.0, 0.3, 0.8])
async def random_stream(dut, idle: float, backpressure: float) -> None:
    """Random values under random idle and back-pressure match the Python model."""
    tb = TB(dut, idle, backpressure)
    values = [random.getrandbits(tb.width) for _ in range(300)]
    await tb.run(values)


@cocotb.test()
async def wraps_around(dut) -> None:
    """Sums wrap modulo 2**acc_width (all-ones inputs, continuous flow)."""
    tb = TB(dut, 0.0, 0.0)
    count = (1 << (tb.acc_width - tb.width)) + 3
    await tb.run([(1 << tb.width) - 1] * count)
