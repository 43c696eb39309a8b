"""8N1 UART receiver and transmitter with ``amaranth.lib.stream`` byte interfaces.

Both run in ``sync`` and count ``divisor`` clock cycles per bit (``divisor = clk_hz / baud``,
rounded; :func:`uart_divisor` computes and checks it). One frame is a start bit (0), eight data
bits LSB first and one stop bit (1); the line idles high.

:class:`UARTRx` synchronizes the line with two flip-flops, waits half a bit after the falling
edge of the start bit, checks that the start bit is still low (a shorter glitch is ignored) and
then samples every bit in its middle. A frame whose stop bit reads 0 is a framing error: the
byte is dropped, ``framing_error`` pulses, and the receiver waits for the line to go high
before it looks for the next start bit (so a held break gives one error, not a stream of them).
The received byte waits in a one-byte buffer; a byte that completes while the previous one was
not yet taken is dropped and pulses ``overrun``.
"""


from amaranth.hdl import Cat, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.cdc import FFSynchronizer
from amaranth.lib.wiring import In, Out

__all__ = ["UARTRx", "UARTTx", "uart_divisor"]

#: Smallest supported divisor: mid-bit sampling needs a few cycles per bit.
MIN_DIVISOR = 4


def uart_divisor(clk_hz: float, baud: float, *, tolerance: float = 0.02) -> int:
    """Clock cycles per bit for ``baud`` at ``clk_hz``.

    Raises
    ------
    ValueError
        If the rates are not positive, the divisor is below :data:`MIN_DIVISOR`, or the rounded
        divisor makes the baud rate deviate by more than ``tolerance`` (relative; an 8N1 frame
        sampled mid-bit tolerates a few percent between both ends together).
    """
    if not (isinstance(clk_hz, (int, float)) and clk_hz > 0):
        raise ValueError(f"Clock frequency must be a positive number, not {clk_hz!r}")
    if not (isinstance(baud, (int, float)) and baud > 0):
        raise ValueError(f"Baud rate must be a positive number, not {baud!r}")
    divisor = round(clk_hz / baud)
    if divisor < MIN_DIVISOR:
        raise ValueError(f"Baud rate {baud} is too high for a {clk_hz} Hz clock: the divisor "
                         f"would be {clk_hz / baud:.2f}, at least {MIN_DIVISOR} is needed")
    error = abs(clk_hz / divisor - baud) / baud
    if error > tolerance:
        raise ValueError(f"Baud rate {baud} at {clk_hz} Hz is off by {error:.1%} with divisor "
                         f"{divisor} (more than {tolerance:.1%})")
    return divisor


def _check_divisor(divisor) -> int:
    if not isinstance(divisor, int) or isinstance(divisor, bool):
        raise TypeError(f"UART divisor must be an integer, not {divisor!r}")
    if divisor < MIN_DIVISOR:
        raise ValueError(f"UART divisor must be at least {MIN_DIVISOR}, not {divisor}")
    return divisor


class _UARTBase(wiring.Component):
    """What the receiver and the transmitter share: a validated clock divisor."""

    def __init__(self, *, divisor: int):
        try:
            self._divisor = _check_divisor(divisor)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # not built: no "created but never used" warning
            raise
        super().__init__()

    @property
    def divisor(self) -> int:
        return self._divisor


class UARTRx(_UARTBase):
    """8N1 receiver.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR` (see :func:`uart_divisor`).

    Members
    -------
    rx : ``In(1, init=1)``
        The serial line (asynchronous; synchronized inside).
    o : ``Out(stream.Signature(8))``
        Received bytes.
    framing_error : ``Out(1)``
        Pulses for one cycle when a frame's stop bit is 0 (its byte is dropped).
    overrun : ``Out(1)``
        Pulses for one cycle when a byte is dropped because ``o`` had not taken the previous one.

    Raises
    ------
    TypeError, ValueError
        If ``divisor`` is not an integer of at least :data:`MIN_DIVISOR`.
    """

    rx: In(1, init=1)
    o: Out(stream.Signature(8))
    framing_error: Out(1)
    overrun: Out(1)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        line = Signal(init=1)
        m.submodules.sync_rx = FFSynchronizer(self.rx, line, init=1, stages=2)

        # timers count down to -1: "expired" is the sign bit (a register, no compare)
        timer = Signal(signed(div.bit_length() + 1))
        bit = Signal(range(8))
        shreg = Signal(8)

        with m.If(self.o.ready):
            m.d.sync += self.o.valid.eq(0)

        with m.FSM():
            with m.State("IDLE"):
                with m.If(~line):
                    m.d.sync += timer.eq(div // 2 - 2)
                    m.next = "START"
            with m.State("START"):
                with m.If(~timer[-1]):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):  # shorter than half a bit: a glitch
                    m.next = "IDLE"
                with m.Else():
                    m.d.sync += [timer.eq(div - 2), bit.eq(0)]
                    m.next = "DATA"
            with m.State("DATA"):
                with m.If(~timer[-1]):
                    m.d.sync += timer.eq(timer - 1)
                with m.Else():
                    m.d.sync += [timer.eq(div - 2), shreg.eq(Cat(shreg[1:], line)),
                                 bit.eq(bit + 1)]
                    with m.If(bit == 7):
                        m.next = "STOP"
            with m.State("STOP"):
                with m.If(~timer[-1]):
                    m.d.sync += timer.eq(timer - 1)
                with m.Elif(line):
                    with m.If(self.o.valid & ~self.o.ready):
                        m.d.comb += self.overrun.eq(1)
                    with m.Else():
                        m.d.sync += [self.o.payload.eq(shreg), self.o.valid.eq(1)]
                    m.next = "IDLE"
                with m.Else():
                    m.d.comb += self.framing_error.eq(1)
                    m.next = "BREAK"
            with m.State("BREAK"):
                with m.If(line):
                    m.next = "IDLE"
        return m


class UARTTx(_UARTBase):
    """8N1 transmitter.

    Parameters
    ----------
    divisor : int
        Clock cycles per bit, at least :data:`MIN_DIVISOR` (see :func:`uart_divisor`).

    Members
    -------
    i : ``In(stream.Signature(8))``
        Bytes to send; one is taken when the previous frame's stop bit has been sent.
    tx : ``Out(1, init=1)``
        The serial line.
    busy : ``Out(1)``
        A frame is being sent.

    Raises
    ------
    TypeError, ValueError
        If ``divisor`` is not an integer of at least :data:`MIN_DIVISOR`.
    """

    i: In(stream.Signature(8))
    tx: Out(1, init=1)
    busy: Out(1)

    def elaborate(self, platform):
        m = Module()
        div = self._divisor
        timer = Signal(signed(div.bit_length() + 1))   # down to -1 (sign bit: expired)
        bits = Signal(range(11))  # bits left of the frame
        frame = Signal(10, init=0x3FF)  # LSB goes out first; ones shift in (idle / stop)

        m.d.comb += [self.tx.eq(frame[0]), self.busy.eq(bits != 0),
                     self.i.ready.eq(bits == 0)]
        with m.If(self.i.valid & self.i.ready):
            m.d.sync += [frame.eq(1 << 9 | self.i.payload << 1), bits.eq(10),
                         timer.eq(div - 2)]
        with m.Elif(bits != 0):
            with m.If(~timer[-1]):
                m.d.sync += timer.eq(timer - 1)
            with m.Else():
                m.d.sync += [frame.eq(1 << 9 | frame >> 1), bits.eq(bits - 1),
                             timer.eq(div - 2)]
        return m
