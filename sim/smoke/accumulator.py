"""A running-sum accumulator with ``amaranth.lib.stream`` input and output."""

from __future__ import annotations

from collections.abc import Iterable

from amaranth.hdl import Module, Signal, unsigned
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

__all__ = ["StreamAccumulator", "accumulate"]


def accumulate(values: Iterable[int], acc_width: int) -> list[int]:
    """Python model: the running sums of ``values`` modulo ``2**acc_width``."""
    out, acc = [], 0
    for value in values:
        acc = (acc + value) % (1 << acc_width)
        out.append(acc)
    return out


class StreamAccumulator(wiring.Component):
    """Emits the running sum of its input stream, one output per input.

    One register stage: an input is taken whenever the output register is empty or being
    emptied in the same cycle, so the component runs at one transfer per cycle and honours
    back-pressure without dropping data.

    Parameters
    ----------
    width : int
        Width of the input values.
    acc_width : int
        Width of the accumulator (sums wrap modulo ``2**acc_width``); at least ``width``.

    Members
    -------
    i : ``In(stream.Signature(unsigned(width)))``
    o : ``Out(stream.Signature(unsigned(acc_width)))``

    Raises
    ------
    TypeError
        If a width is not a positive integer or ``acc_width < width``.
    """

    def __init__(self, width: int = 8, acc_width: int = 16):
        if not isinstance(width, int) or width <= 0:
            raise TypeError(f"Input width must be a positive integer, not {width!r}")
        if not isinstance(acc_width, int) or acc_width < width:
            raise TypeError(
                f"Accumulator width must be an integer of at least {width}, not {acc_width!r}"
            )
        self.width = width
        self.acc_width = acc_width
        super().__init__(
            {
                "i": In(stream.Signature(unsigned(width))),
                "o": Out(stream.Signature(unsigned(acc_width))),
            }
        )

    def elaborate(self, platform):
        m = Module()
        acc = Signal(self.acc_width)
        total = acc + self.i.payload

        m.d.comb += self.i.ready.eq(~self.o.valid | self.o.ready)
        with m.If(self.o.valid & self.o.ready):
            m.d.sync += self.o.valid.eq(0)
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [
                acc.eq(total),
                self.o.payload.eq(total),
                self.o.valid.eq(1),
            ]
        return m
