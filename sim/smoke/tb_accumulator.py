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


class StreamSource:
    """Drives ``<prefix>__valid/payload``; idles with probability ``idle`` before each item."""

    def __init__(self, dut, prefix: str, idle: float):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.idle = idle
        self.valid.value = 0

    async def send(self, values: list[int]) -> None:
        for value in values:
            while random.random() < self.idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = value
            await ReadOnly()
            while not int(self.ready.value):
                await RisingEdge(self.clk)
                await ReadOnly()
            await RisingEdge(self.clk)  # the transfer happens at this edge
        self.valid.value = 0


class StreamSink:
    """Takes items from ``<prefix>__*``, deasserting ``ready`` with probability ``backpressure``.

    Also checks the stream rule: once ``valid`` is high it stays high, with the same payload,
    until the transfer.
    """

    def __init__(self, dut, prefix: str, backpressure: float):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.backpressure = backpressure
        self.items: list[int] = []
        self.ready.value = 0

    async def receive(self, count: int, max_cycles: int) -> list[int]:
        pending = None  # payload offered but not taken in the previous cycle
        for _cycle in range(max_cycles):
            self.ready.value = int(random.random() >= self.backpressure)
            await ReadOnly()
            valid = int(self.valid.value)
            if pending is not None:
                assert valid, "valid dropped before the transfer"
                assert int(self.payload.value) == pending, "payload changed while valid"
            if valid and int(self.ready.value):
                self.items.append(int(self.payload.value))
                pending = None
            elif valid:
                pending = int(self.payload.value)
            await RisingEdge(self.clk)
            if len(self.items) == count:
                self.ready.value = 0
                return self.items
        raise AssertionError(f"timeout: {len(self.items)} of {count} outputs in {max_cycles}")


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
