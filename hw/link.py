"""The host link: a byte protocol between a host (over a UART) and the :class:`Accelerator`.

Host to board (``host_in``), one command per leading byte::

    'L' (0x4C) + 8 bytes   one ``load`` word, little-endian (bits above the layout are ignored)
    'A' (0x41) + 1 byte    one ``act_in`` transfer (a uint8 activation code)
    'C' (0x43)             send the counters back
    anything else          ignored (one byte), so a host can resynchronize with a run of 0x00

Board to host (``host_out``), in units of 4-byte little-endian words that are never interleaved:

    each ``result``        the int32 value (two's complement)
    after 'C'              cycles, useful_macs, entries, skipped_acts, pe_busy[0..pes-1]
                           (``4 + pes`` words, counters zero-extended to 32 bits)

Each counter word is latched when its first byte goes out; send ``'C'`` after the run's last
result (the accelerator is then idle and the counters hold still) for a consistent snapshot.
Every interface is a valid/ready stream; a stalled accelerator stalls ``host_in`` (the UART
receiver then drops bytes, so a host must not send more than the link can buffer: one command
while the accelerator is not ready, see ``docs/boards.md``), a stalled ``host_out`` stalls the
results.

The command bytes, the word sizes, the counter order and the host side of the protocol
(``encode_load``, ``encode_acts``, ``decode_words``, ``decode_counters``) are the contract's
(:mod:`zeroskip.spec`); this module re-exports them.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Module, Signal, signed
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import (
    COUNTER_NAMES,
    LINK_CMD_ACT,
    LINK_CMD_COUNTERS,
    LINK_CMD_LOAD,
    LINK_LOAD_BYTES,
    LINK_PE_COUNTER_NAMES,
    LINK_WORD_BYTES,
    HwParams,
    decode_counters,
    decode_words,
    encode_acts,
    encode_load,
    link_counter_words,
    load_layout,
)

__all__ = ["HostLink", "connect_accelerator", "CMD_LOAD", "CMD_ACT", "CMD_COUNTERS",
           "COUNTER_NAMES", "encode_load", "encode_acts", "decode_words", "decode_counters"]

# the protocol's bytes and words are the contract's (zeroskip/spec.py); these names stay for
# existing imports
CMD_LOAD = LINK_CMD_LOAD
CMD_ACT = LINK_CMD_ACT
CMD_COUNTERS = LINK_CMD_COUNTERS
LOAD_BYTES = LINK_LOAD_BYTES
WORD_BYTES = LINK_WORD_BYTES


class HostLink(wiring.Component):
    """Byte protocol to and from the accelerator (see the module docstring).

    Parameters
    ----------
    params : :class:`~zeroskip.spec.HwParams`
        The accelerator's parameters (for the ``load`` layout and the PE count).
    counter_width : int
        Width of the accelerator's counters, 1..32.

    Members
    -------
    host_in : ``In(stream.Signature(8))``
        Bytes from the host (a UART receiver).
    host_out : ``Out(stream.Signature(8))``
        Bytes to the host (a UART transmitter).
    load : ``Out(stream.Signature(load_layout(params)))``
    act_in : ``Out(stream.Signature(8))``
    result : ``In(stream.Signature(signed(32)))``
    cycles, useful_macs, entries, skipped_acts : ``In(counter_width)``
    pe_busy : ``In(counter_width).array(pes)``
        The accelerator's ports of the same names.

    Raises
    ------
    TypeError
        If ``params`` is not a ``HwParams``.
    ValueError
        If ``counter_width`` is not in 1..32 or the load layout is wider than 64 bits.
    """

    def __init__(self, params: HwParams, *, counter_width: int = 32):
        try:
            self._check(params, counter_width)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # not built: no "created but never used" warning
            raise
        self._params = params
        self._counter_width = counter_width
        super().__init__({
            "host_in": In(stream.Signature(8)),
            "host_out": Out(stream.Signature(8)),
            "load": Out(stream.Signature(load_layout(params))),
            "act_in": Out(stream.Signature(8)),
            "result": In(stream.Signature(signed(32))),
            **{name: In(counter_width) for name in COUNTER_NAMES},
            **{name: In(counter_width).array(params.pes) for name in LINK_PE_COUNTER_NAMES},
        })

    @staticmethod
    def _check(params, counter_width):
        if not isinstance(params, HwParams):
            raise TypeError(f"params must be HwParams, not {params!r}")
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 32:
            raise ValueError(f"counter_width must be an integer in 1..32, not {counter_width!r}")
        layout = load_layout(params)
        if layout.size > 8 * LOAD_BYTES:
            raise ValueError(f"load words of {layout.size} bits do not fit the link's "
                             f"{8 * LOAD_BYTES}-bit 'L' command")

    @property
    def params(self) -> HwParams:
        return self._params

    @property
    def counter_width(self) -> int:
        return self._counter_width

    @property
    def counter_words(self) -> int:
        """Words (of 4 bytes) that one ``'C'`` sends back."""
        return link_counter_words(self._params.pes)

    def elaborate(self, platform):
        m = Module()
        size = self.load.payload.shape().size

        # ---- host -> accelerator
        word = Signal(8 * LOAD_BYTES)
        count = Signal(range(LOAD_BYTES))
        act = Signal(8)
        dump_req = Signal()
        dump_ack = Signal()
        take = Signal()
        byte = self.host_in.payload
        m.d.comb += [take.eq(self.host_in.valid & self.host_in.ready),
                     self.load.payload.eq(word[:size]),
                     self.act_in.payload.eq(act)]
        with m.FSM(name="rx_fsm"):
            with m.State("CMD"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    with m.Switch(byte):
                        with m.Case(CMD_LOAD):
                            m.d.sync += count.eq(0)
                            m.next = "LOAD"
                        with m.Case(CMD_ACT):
                            m.next = "ACT"
                        with m.Case(CMD_COUNTERS):
                            m.next = "COUNTERS"
            with m.State("LOAD"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += [word.eq(Cat(word[8:], byte)), count.eq(count + 1)]
                    with m.If(count == LOAD_BYTES - 1):
                        m.next = "LOAD_SEND"
            with m.State("LOAD_SEND"):
                m.d.comb += self.load.valid.eq(1)
                with m.If(self.load.ready):
                    m.next = "CMD"
            with m.State("ACT"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += act.eq(byte)
                    m.next = "ACT_SEND"
            with m.State("ACT_SEND"):
                m.d.comb += self.act_in.valid.eq(1)
                with m.If(self.act_in.ready):
                    m.next = "CMD"
            with m.State("COUNTERS"):
                m.d.comb += dump_req.eq(1)
                with m.If(dump_ack):
                    m.next = "CMD"

        # ---- accelerator -> host: 4-byte words, results or a counter dump
        shreg = Signal(8 * WORD_BYTES)
        left = Signal(range(WORD_BYTES + 1))  # bytes of shreg still to send
        dumping = Signal()
        index = Signal(range(self.counter_words))
        words = Array([*(getattr(self, n) for n in COUNTER_NAMES),
                       *(c for n in LINK_PE_COUNTER_NAMES for c in getattr(self, n))])
        m.d.comb += [self.host_out.valid.eq(left != 0), self.host_out.payload.eq(shreg[:8])]
        with m.If(left != 0):
            with m.If(self.host_out.ready):
                m.d.sync += [shreg.eq(shreg >> 8), left.eq(left - 1)]
        with m.Elif(dumping):
            m.d.sync += [shreg.eq(words[index]), left.eq(4), index.eq(index + 1)]
            with m.If(index == self.counter_words - 1):
                m.d.sync += [dumping.eq(0), index.eq(0)]
        with m.Elif(dump_req):
            m.d.comb += dump_ack.eq(1)
            m.d.sync += [dumping.eq(1), index.eq(0)]
        with m.Else():
            m.d.comb += self.result.ready.eq(1)
            with m.If(self.result.valid):
                m.d.sync += [shreg.eq(self.result.payload), left.eq(WORD_BYTES)]
        return m


def connect_accelerator(m: Module, link: HostLink, accel) -> None:
    """Wire ``link`` to an :class:`~zeroskip.hw.accel.Accelerator` (streams and counters)."""
    if link.params != accel.params or link.counter_width != accel.counter_width:
        raise ValueError("HostLink and Accelerator were built with different parameters")
    wiring.connect(m, link.load, accel.load)
    wiring.connect(m, link.act_in, accel.act_in)
    wiring.connect(m, accel.result, link.result)
    for name in COUNTER_NAMES:
        m.d.comb += getattr(link, name).eq(getattr(accel, name))
    for name in LINK_PE_COUNTER_NAMES:
        for i in range(link.params.pes):
            m.d.comb += getattr(link, name)[i].eq(getattr(accel, name)[i])


# The host side (pure Python) of the protocol, encode_load, encode_acts, decode_words and
# decode_counters, lives in zeroskip/spec.py with the command bytes (imported above).
