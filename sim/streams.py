"""Shared cocotb drivers for ``amaranth.lib.stream`` ports of converted Verilog.

A stream port ``x`` of an Amaranth component becomes ``x__valid``, ``x__ready`` and
``x__payload`` in Verilog. :class:`StreamSource` drives one with optional random idle cycles;
:class:`StreamSink` takes from one with optional random back-pressure and checks the stream
rule (once ``valid`` is high it stays high, with the same payload, until the transfer).
Randomness comes from ``random``, which cocotb seeds from its ``--seed``.
"""

from __future__ import annotations

import random

from cocotb.triggers import ReadOnly, RisingEdge

__all__ = ["StreamSource", "StreamSink", "StreamTimeout"]


class StreamTimeout(AssertionError):
    pass


class StreamSource:
    """Drives ``<prefix>__valid/payload``; idles with probability ``idle`` before each item."""

    def __init__(self, dut, prefix: str, idle: float = 0.0):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.idle = idle
        self.prefix = prefix
        self.valid.value = 0

    async def send(self, values, max_wait: int = 1_000_000) -> None:
        idle = self.idle
        for value in values:
            while idle and random.random() < idle:
                self.valid.value = 0
                await RisingEdge(self.clk)
            self.valid.value = 1
            self.payload.value = int(value)
            waited = 0
            await ReadOnly()
            while not self.ready.value:
                waited += 1
                if waited > max_wait:
                    raise StreamTimeout(f"{self.prefix}: not ready for {max_wait} cycles")
                await RisingEdge(self.clk)
                await ReadOnly()
            await RisingEdge(self.clk)  # the transfer happens at this edge
        self.valid.value = 0


class StreamSink:
    """Takes items from ``<prefix>__*``, holding ``ready`` low with probability
    ``backpressure`` each cycle; checks that a pending item is neither dropped nor changed."""

    def __init__(self, dut, prefix: str, backpressure: float = 0.0, signed: bool = False):
        self.clk = dut.clk
        self.valid = getattr(dut, f"{prefix}__valid")
        self.ready = getattr(dut, f"{prefix}__ready")
        self.payload = getattr(dut, f"{prefix}__payload")
        self.backpressure = backpressure
        self.signed = signed
        self.prefix = prefix
        self.ready.value = 0

    def _value(self) -> int:
        v = self.payload.value
        return v.to_signed() if self.signed else v.to_unsigned()

    async def receive(self, count: int, max_cycles: int) -> list[int]:
        items: list[int] = []
        pending = None
        for _ in range(max_cycles):
            if len(items) == count:
                break
            take = not (self.backpressure and random.random() < self.backpressure)
            self.ready.value = int(take)
            await ReadOnly()
            valid = bool(self.valid.value)
            if pending is not None:
                assert valid, f"{self.prefix}: valid dropped before the transfer"
                assert self._value() == pending, f"{self.prefix}: payload changed while valid"
            if valid and take:
                items.append(self._value())
                pending = None
            elif valid:
                pending = self._value()
            await RisingEdge(self.clk)
        else:
            raise StreamTimeout(f"{self.prefix}: {len(items)} of {count} items in {max_cycles} "
                                "cycles")
        self.ready.value = 0
        return items
