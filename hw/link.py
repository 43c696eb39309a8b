"""The host link, protocol version 2: CRC-checked frames between a host and the accelerator.

Every frame, in both directions (``docs/boards.md`` has the full specification)::

    LINK_SYNC  type  seq  len_lo len_hi  payload (len bytes)  crc0 crc1 crc2 crc3

``crc`` is the CRC-32 of zlib / IEEE 802.3 over ``type, seq, len_lo, len_hi, payload``. The
board checks every frame and answers each with one frame carrying the same ``seq``: an
acknowledgement (``type | RESPONSE``, with a payload for INFO, COUNTERS and INFER) or a
``T_ERROR`` frame (payload: error code, the command's type). Commands: INFO (what the board
is), LOAD (load words), COMMIT (the host's CRC-32 of the load words since the last RESET/COMMIT
and the watchdog bound; inference is refused until a COMMIT matched), INFER (an input vector;
answered by the RESULT frame), COUNTERS, RESET.

Every word of the protocol (frame types, error codes, sizes, the INFO payload, the counter
order) and its host side (``encode_frame``, ``FrameParser``, ``decode_info``, ...) are the
contract's, :mod:`zeroskip.spec`; this module is the board side only.

Board side: :class:`HostLink` receives frames byte by byte into one of two payload buffers (so
the next input arrives while the current one runs), checks them, executes them in order and
frames the responses. It also holds the watchdog (cycles the accelerator takes, against the
bound of the COMMIT) and resets the accelerator (``accel_rst``) on RESET or on expiry.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed
from amaranth.lib import data, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import (
    BOARD_IDS,
    CFG_LAYERS,
    COUNTER_NAMES,
    DESC_IN,
    DESC_OUT,
    E_BAD_CRC,
    E_BAD_LENGTH,
    E_BAD_MODEL,
    E_BUSY,
    E_CHECKSUM,
    E_NOT_LOADED,
    E_TIMEOUT,
    E_UNKNOWN_TYPE,
    E_WATCHDOG,
    LINK_COMMIT_BYTES,
    LINK_CRC_BYTES,
    LINK_CRC_POLY,
    LINK_HEADER_BYTES,
    LINK_LOAD_BYTES,
    LINK_PE_COUNTER_NAMES,
    LINK_SYNC,
    LINK_WORD_BYTES,
    MEM_CFG,
    MEM_DESC,
    RESPONSE,
    T_COMMIT,
    T_COUNTERS,
    T_ERROR,
    T_INFER,
    T_INFO,
    T_LOAD,
    T_RESET,
    HwParams,
    desc_addr_layout,
    info_payload,
    link_counter_words,
    link_max_payload,
    load_layout,
)

__all__ = ["HostLink", "connect_accelerator"]


def _crc32_byte(crc, byte):
    """One byte of the reflected CRC-32 (no final XOR), as an Amaranth expression."""
    c = crc ^ byte
    for _ in range(8):
        c = (c >> 1) ^ Mux(c[0], LINK_CRC_POLY, 0)
    return c[:32]


class HostLink(wiring.Component):
    """Frames to and from the accelerator (see the module docstring and ``docs/boards.md``).

    Parameters
    ----------
    params : :class:`~zeroskip.sw.params.HwParams`
        The accelerator's parameters (load layout, PE count, buffer size, INFO).
    counter_width : int
        Width of the accelerator's counters, 1..32.
    board_id : int
        Reported by INFO (:data:`BOARD_IDS`).
    clk_hz : int
        The clock frequency INFO reports.
    divisor : int
        The UART divisor INFO reports.
    frame_timeout : int
        Cycles without a byte after which a partly received frame is dropped (at least 16).

    Members
    -------
    host_in : ``In(stream.Signature(8))``
        Bytes from the host (a UART receiver); taken every cycle but one per frame, so a
        UART with a one-byte buffer never overruns.
    host_out : ``Out(stream.Signature(8))``
        Bytes to the host (a UART transmitter).
    load : ``Out(stream.Signature(load_layout(params)))``
    act_in : ``Out(stream.Signature(8))``
    result : ``In(stream.Signature(signed(32)))``
    cycles, useful_macs, entries, skipped_acts : ``In(counter_width)``
    pe_busy : ``In(counter_width).array(pes)``
        The accelerator's ports of the same names.
    accel_rst : ``Out(1)``
        Resets the accelerator: a register, high for one cycle after a RESET frame is checked
        or the watchdog expires.
    watchdog : ``Out(1)``
        Pulses when the watchdog expires.

    Raises
    ------
    TypeError
        If ``params`` is not a ``HwParams``.
    ValueError
        If another parameter is out of range or the load layout is wider than 64 bits.
    """

    def __init__(self, params: HwParams, *, counter_width: int = 32, board_id: int = 0,
                 clk_hz: int = 0, divisor: int = 0, frame_timeout: int = 1 << 16):
        try:
            self._check(params, counter_width, board_id, frame_timeout)
        except (TypeError, ValueError):
            self._MustUse__silence = True  # not built: no "created but never used" warning
            raise
        self._params = params
        self._counter_width = counter_width
        self._info = info_payload(params, board_id=board_id, counter_width=counter_width,
                                  clk_hz=int(clk_hz), divisor=int(divisor))
        self._frame_timeout = frame_timeout
        super().__init__({
            "host_in": In(stream.Signature(8)),
            "host_out": Out(stream.Signature(8)),
            "load": Out(stream.Signature(load_layout(params))),
            "act_in": Out(stream.Signature(8)),
            "result": In(stream.Signature(signed(32))),
            **{name: In(counter_width) for name in COUNTER_NAMES},
            **{name: In(counter_width).array(params.pes) for name in LINK_PE_COUNTER_NAMES},
            "accel_rst": Out(1),
            "watchdog": Out(1),
        })

    @staticmethod
    def _check(params, counter_width, board_id, frame_timeout):
        if not isinstance(params, HwParams):
            raise TypeError(f"params must be HwParams, not {params!r}")
        if not isinstance(counter_width, int) or not 1 <= counter_width <= 32:
            raise ValueError(f"counter_width must be an integer in 1..32, not {counter_width!r}")
        if board_id not in BOARD_IDS:
            raise ValueError(f"board_id must be one of {sorted(BOARD_IDS)}, not {board_id!r}")
        if not isinstance(frame_timeout, int) or frame_timeout < 16:
            raise ValueError(f"frame_timeout must be an integer >= 16, not {frame_timeout!r}")
        if load_layout(params).size > 8 * LINK_LOAD_BYTES:
            raise ValueError(f"load words of {load_layout(params).size} bits do not fit the "
                             f"link's {8 * LINK_LOAD_BYTES}-byte load words")

    @property
    def params(self) -> HwParams:
        return self._params

    @property
    def counter_width(self) -> int:
        return self._counter_width

    @property
    def info(self) -> bytes:
        """The INFO payload this link answers with."""
        return self._info

    def elaborate(self, platform):
        m = Module()
        p = self._params
        size = self.load.payload.shape().size
        MP = link_max_payload(p)
        mp_bits = (MP - 1).bit_length()
        lbits = p.layer_bits
        abits = p.act_addr_bits
        n_counter_words = link_counter_words(p.pes)
        W = LINK_WORD_BYTES
        lb_bits = (LINK_LOAD_BYTES - 1).bit_length()     # LOAD payloads: whole load words
        assert LINK_LOAD_BYTES == 1 << lb_bits

        soft_rst = Signal()       # RESET command: accelerator, executor, transmitter
        wd_fire = Signal()        # the watchdog expires (a decode of registers only)
        # the accelerator's reset is a register (a cycle after the link's own state is
        # cleared): no compare and no frame check drives its thousands of flip-flops' resets
        m.d.sync += self.accel_rst.eq(soft_rst | wd_fire)
        m.d.comb += self.watchdog.eq(wd_fire)
        resettable = []           # executor / transmitter registers cleared by soft_rst

        def reg(*args, **kwargs):
            s = Signal(*args, **kwargs)
            resettable.append(s)
            return s

        m.submodules.buf = buf = Memory(shape=8, depth=2 * (1 << mp_bits), init=[])
        wp = buf.write_port()
        rp = buf.read_port()

        # ---- state shared by the parser and the executor
        full = Signal(2)                   # payload buffer k holds a checked frame
        btype = Array([Signal(8, name=f"btype{k}") for k in range(2)])
        bseq = Array([Signal(8, name=f"bseq{k}") for k in range(2)])
        blen = Array([Signal(range(MP + 1), name=f"blen{k}") for k in range(2)])
        wr = Signal()                      # buffer the parser fills next
        rd = reg()                         # buffer the executor runs next
        free_rd = Signal()                 # executor: buffer rd done
        verified = Signal()
        # last state-changing command accepted (LOAD, COMMIT, RESET): replays are answered
        # from here and not executed again
        last_valid = Signal()
        last_type = Signal(8)
        last_seq = Signal(8)
        last_done = Signal()
        last_code = Signal(8)
        model_crc = Signal(32, init=0xFFFFFFFF)
        snoop_layers = Signal(lbits + 1)
        snoop_in = Signal(abits)
        snoop_out = Array([Signal(abits, name=f"snoop_out{k}") for k in range(p.max_layers)])
        in_f = Signal(abits)
        out_f = Signal(abits)
        wd_bound = Signal(32)

        # response slot: parser -> transmitter (kinds below)
        K_ACK, K_ERROR, K_INFO, K_COUNTERS, K_RESULT = range(5)
        slot_valid = Signal()
        slot_kind = Signal(3)
        slot_type = Signal(8)
        slot_seq = Signal(8)
        slot_code = Signal(8)
        slot_take = Signal()

        def respond(kind, typ, seq, code=0):
            with m.If(~slot_valid | slot_take):     # else dropped: the host times out
                m.d.sync += [slot_valid.eq(1), slot_kind.eq(kind), slot_type.eq(typ),
                             slot_seq.eq(seq), slot_code.eq(code)]

        with m.If(slot_take):
            m.d.sync += slot_valid.eq(0)

        # ---- frame receiver
        byte = self.host_in.payload
        take = Signal()
        m.d.comb += take.eq(self.host_in.valid & self.host_in.ready)
        r_type = Signal(8)
        r_seq = Signal(8)
        r_len = Signal(16)
        r_idx = Signal(range(MP + 1))
        r_crc = Signal(32, init=0xFFFFFFFF)
        r_got = Signal(32)                 # the frame's CRC bytes
        r_k = Signal(2)
        r_drop = Signal()                  # no free buffer: payload not stored (BUSY)
        r_buf = Signal()
        idle = Signal(range(self._frame_timeout + 1))
        timed_out = Signal()
        m.d.comb += timed_out.eq(idle == self._frame_timeout)

        has_payload = Signal()
        m.d.comb += has_payload.eq((r_type == T_LOAD) | (r_type == T_COMMIT)
                                   | (r_type == T_INFER))
        len_ok = Signal()
        with m.Switch(r_type):
            with m.Case(T_INFO, T_COUNTERS, T_RESET):
                m.d.comb += len_ok.eq(r_len == 0)
            with m.Case(T_LOAD):
                m.d.comb += len_ok.eq((r_len[:lb_bits] == 0) & (r_len != 0) & (r_len <= MP))
            with m.Case(T_COMMIT):
                m.d.comb += len_ok.eq(r_len == LINK_COMMIT_BYTES)
            with m.Case(T_INFER):
                m.d.comb += len_ok.eq((r_len != 0) & (r_len <= MP))
        known = Signal()
        m.d.comb += known.eq(has_payload | (r_type == T_INFO) | (r_type == T_COUNTERS)
                             | (r_type == T_RESET))
        m.d.comb += [wp.addr.eq(Cat(r_idx[:mp_bits], r_buf)), wp.data.eq(byte)]

        # idle counts the cycles since the frame's last byte (not in HUNT)
        with m.If(take):
            m.d.sync += idle.eq(0)
        with m.Elif(~timed_out):
            m.d.sync += idle.eq(idle + 1)

        def timeout(answer=True):
            # a frame whose bytes stop: dropped, and answered once its seq is known (the host
            # then retries at once instead of waiting for its own timeout)
            with m.If(timed_out):
                if answer:
                    respond(K_ERROR, r_type, r_seq, E_TIMEOUT)
                m.next = "HUNT"

        with m.FSM(name="rx"):
            with m.State("HUNT"):
                m.d.comb += self.host_in.ready.eq(1)
                m.d.sync += idle.eq(0)
                m.d.sync += [r_crc.eq(0xFFFFFFFF), r_idx.eq(0), r_k.eq(0)]
                with m.If(take & (byte == LINK_SYNC)):
                    m.next = "TYPE"
            with m.State("TYPE"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += [r_type.eq(byte), r_crc.eq(_crc32_byte(r_crc, byte))]
                    m.next = "SEQ"
                timeout(answer=False)
            with m.State("SEQ"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += [r_seq.eq(byte), r_crc.eq(_crc32_byte(r_crc, byte))]
                    m.next = "LEN0"
                timeout(answer=False)
            with m.State("LEN0"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += [r_len[:8].eq(byte), r_crc.eq(_crc32_byte(r_crc, byte))]
                    m.next = "LEN1"
                timeout()
            with m.State("LEN1"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += [r_len[8:].eq(byte), r_crc.eq(_crc32_byte(r_crc, byte))]
                    m.next = "CHECK"
                timeout()
            with m.State("CHECK"):
                m.d.sync += [r_buf.eq(wr), r_drop.eq(full.bit_select(wr, 1))]
                with m.If(~known):
                    respond(K_ERROR, r_type, r_seq, E_UNKNOWN_TYPE)
                    m.next = "HUNT"
                with m.Elif(~len_ok):
                    respond(K_ERROR, r_type, r_seq, E_BAD_LENGTH)
                    m.next = "HUNT"
                with m.Elif(r_len == 0):
                    m.next = "CRC"
                with m.Else():
                    m.next = "PAYLOAD"
            with m.State("PAYLOAD"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.comb += wp.en.eq(~r_drop)
                    m.d.sync += [r_idx.eq(r_idx + 1), r_crc.eq(_crc32_byte(r_crc, byte))]
                    with m.If(r_idx + 1 == r_len):
                        m.next = "CRC"
                timeout()
            with m.State("CRC"):
                m.d.comb += self.host_in.ready.eq(1)
                with m.If(take):
                    m.d.sync += [r_got.eq(Cat(r_got[8:], byte)), r_k.eq(r_k + 1)]
                    with m.If(r_k == LINK_CRC_BYTES - 1):
                        m.next = "DISPATCH"
                timeout()
            with m.State("DISPATCH"):
                replay = Signal()
                m.d.comb += replay.eq(last_valid & (last_type == r_type) & (last_seq == r_seq))
                with m.If(r_got != ~r_crc):
                    respond(K_ERROR, r_type, r_seq, E_BAD_CRC)
                with m.Elif(r_type == T_INFO):
                    respond(K_INFO, r_type, r_seq)
                with m.Elif(r_type == T_COUNTERS):
                    respond(K_COUNTERS, r_type, r_seq)
                with m.Elif(r_type == T_RESET):
                    m.d.comb += soft_rst.eq(1)    # state cleared at the end
                    respond(K_ACK, r_type, r_seq)
                with m.Elif(replay & (r_type != T_INFER)):
                    with m.If(last_done):
                        respond(Mux(last_code == 0, K_ACK, K_ERROR), r_type, r_seq, last_code)
                with m.Elif(r_drop):
                    respond(K_ERROR, r_type, r_seq, E_BUSY)
                with m.Else():
                    m.d.sync += [full.bit_select(wr, 1).eq(1), wr.eq(~wr),
                                 btype[wr].eq(r_type), bseq[wr].eq(r_seq), blen[wr].eq(r_len)]
                    with m.If(r_type != T_INFER):
                        m.d.sync += [last_valid.eq(1), last_type.eq(r_type), last_seq.eq(r_seq),
                                     last_done.eq(0)]
                m.next = "HUNT"

        # ---- executor: runs the checked frames in order
        (X_IDLE, X_LOAD, X_LSEND, X_COMMIT, X_CCHECK, X_INFER, X_WAIT, X_RESP, X_DONE, X_SCRUB,
         X_DRAIN) = range(11)
        xs = reg(range(11))
        x_idx = reg(range(MP + 1))
        x_idx_next = Signal.like(x_idx)
        rd_next = Signal()
        word = reg(64)
        x_type = Signal(8)
        x_seq = Signal(8)
        x_len = Signal.like(blen[0])
        m.d.comb += [x_type.eq(btype[rd]), x_seq.eq(bseq[rd]), x_len.eq(blen[rd]),
                     x_idx_next.eq(x_idx), rd_next.eq(rd)]
        m.d.sync += [x_idx.eq(x_idx_next), rd.eq(rd_next)]
        # the read port's data is always buf[rd][x_idx] (its address is the next index)
        m.d.comb += rp.addr.eq(Cat(x_idx_next[:mp_bits], rd_next))
        bdata = rp.data
        # request to the transmitter
        xr_valid = reg()
        xr_kind = Signal(3)
        xr_code = Signal(8)
        xr_type = Signal(8)
        xr_seq = Signal(8)
        xr_take = Signal()
        res_taken = Signal(abits + 1)      # results the transmitter has taken
        res_complete = Signal()            # the RESULT frame's last byte went out
        x_hold = reg()                     # the executor still holds buffer rd
        tx_abort = reg()
        wd_count = reg(32)
        with m.If(xr_take):
            m.d.sync += xr_valid.eq(0)

        def x_respond(kind, code=0, *, record=True):
            m.d.sync += [xr_valid.eq(1), xr_kind.eq(kind), xr_code.eq(code), xr_type.eq(x_type),
                         xr_seq.eq(x_seq), xs.eq(X_RESP)]
            if record:
                with m.If(last_valid & (last_type == x_type) & (last_seq == x_seq)):
                    m.d.sync += [last_done.eq(1), last_code.eq(code)]

        # the model CRC takes each LOAD byte a cycle after the buffer's read port gave it, from
        # the word register it was shifted into (a block RAM output straight into a register:
        # on the ECP5 the read port's clock-to-out and the CRC's XOR levels do not fit one
        # cycle at 100 MHz). X_LOAD shifts a byte every cycle, X_LSEND none, so ``crc_due`` says
        # that ``word``'s top byte is new.
        crc_due = reg()
        with m.If(crc_due):
            m.d.sync += [model_crc.eq(_crc32_byte(model_crc, word[-8:])), crc_due.eq(0)]
        m.d.comb += self.load.payload.eq(word[:size])
        m.d.comb += self.act_in.payload.eq(Mux(xs == X_SCRUB, 0, bdata))
        ld = self.load.payload
        dlay = desc_addr_layout(p)
        ld_desc = data.View(dlay, ld.addr[:dlay.size])
        # registered a cycle after the snoops: they change only in X_LSEND (or at RESET), and
        # X_CCHECK comes at least LINK_COMMIT_BYTES + 1 cycles later, so these are current there
        # (the compare chain off a register, not into the executor's decisions: the ULX3S's
        # critical path at 74 MHz ran from snoop_layers through here into the buffer address)
        sane = Signal()
        out_last = Signal(abits)
        out_last_c = Signal(abits)
        m.d.comb += out_last_c.eq(snoop_out[(snoop_layers - 1)[:lbits]])
        m.d.sync += [
            out_last.eq(out_last_c),
            sane.eq((snoop_layers != 0) & (snoop_layers <= p.max_layers) & (snoop_in != 0)
                    & (snoop_in <= p.act_depth) & (out_last_c != 0)
                    & (out_last_c <= p.act_depth)),
        ]
        with m.Switch(xs):
            with m.Case(X_IDLE):
                with m.If(full.bit_select(rd, 1)):
                    m.d.comb += x_idx_next.eq(0)
                    m.d.sync += [wd_count.eq(0), x_hold.eq(1)]
                    with m.Switch(x_type):
                        with m.Case(T_LOAD):
                            m.d.sync += [xs.eq(X_LOAD), verified.eq(0)]
                        with m.Case(T_COMMIT):
                            m.d.sync += xs.eq(X_COMMIT)
                        with m.Default():
                            with m.If(~verified):
                                x_respond(K_ERROR, E_NOT_LOADED, record=False)
                            with m.Elif(x_len != in_f):
                                x_respond(K_ERROR, E_BAD_LENGTH, record=False)
                            with m.Else():
                                m.d.sync += [xs.eq(X_INFER), xr_valid.eq(1),
                                             xr_kind.eq(K_RESULT), xr_type.eq(x_type),
                                             xr_seq.eq(x_seq), res_taken.eq(0),
                                             res_complete.eq(0)]
            with m.Case(X_LOAD):
                m.d.comb += x_idx_next.eq(x_idx + 1)
                m.d.sync += [word.eq(Cat(word[8:], bdata)), crc_due.eq(1)]
                with m.If(x_idx[:lb_bits] == LINK_LOAD_BYTES - 1):
                    m.d.sync += xs.eq(X_LSEND)
            with m.Case(X_LSEND):
                m.d.comb += self.load.valid.eq(1)
                with m.If(self.load.ready):
                    # the link keeps what the accelerator's descriptors will say
                    with m.If(ld.mem == MEM_CFG):
                        with m.If(ld.addr == CFG_LAYERS):
                            m.d.sync += snoop_layers.eq(ld.data)
                    with m.If(ld.mem == MEM_DESC):
                        # the descriptor address as the accelerator decodes it
                        with m.If((ld_desc.field == DESC_IN) & (ld_desc.layer == 0)):
                            m.d.sync += snoop_in.eq(ld.data)
                        with m.If((ld_desc.field == DESC_OUT) & (ld_desc.layer < p.max_layers)):
                            m.d.sync += snoop_out[ld_desc.layer].eq(ld.data)
                    with m.If(x_idx == x_len):
                        x_respond(K_ACK)
                    with m.Else():
                        m.d.sync += xs.eq(X_LOAD)
            with m.Case(X_COMMIT):
                m.d.comb += x_idx_next.eq(x_idx + 1)
                m.d.sync += word.eq(Cat(word[8:], bdata))
                with m.If(x_idx == LINK_COMMIT_BYTES - 1):
                    m.d.sync += xs.eq(X_CCHECK)
            with m.Case(X_CCHECK):
                m.d.sync += model_crc.eq(0xFFFFFFFF)
                with m.If(word[:32] != ~model_crc):
                    x_respond(K_ERROR, E_CHECKSUM)
                with m.Elif(~sane):
                    x_respond(K_ERROR, E_BAD_MODEL)
                with m.Else():
                    # one run of zeros, its results dropped, before the first input: a run
                    # finalizes (and so clears) every accumulator row of the model's layers,
                    # which a run cut short by a reset or the watchdog may have left dirty
                    m.d.comb += x_idx_next.eq(0)
                    m.d.sync += [in_f.eq(snoop_in), out_f.eq(out_last), wd_bound.eq(word[32:]),
                                 wd_count.eq(0), res_taken.eq(0), xs.eq(X_SCRUB)]
            with m.Case(X_SCRUB):
                m.d.comb += self.act_in.valid.eq(1)
                with m.If(self.act_in.ready):
                    m.d.comb += x_idx_next.eq(x_idx + 1)
                    with m.If(x_idx + 1 == in_f):
                        m.d.sync += xs.eq(X_DRAIN)
                with m.Else():
                    m.d.sync += wd_count.eq(wd_count + 1)
            with m.Case(X_DRAIN):
                m.d.comb += self.result.ready.eq(1)
                with m.If(self.result.valid):
                    m.d.sync += res_taken.eq(res_taken + 1)
                    with m.If(res_taken + 1 == out_f):
                        m.d.sync += verified.eq(1)
                        x_respond(K_ACK)
                with m.Else():
                    m.d.sync += wd_count.eq(wd_count + 1)
            with m.Case(X_INFER):
                m.d.comb += self.act_in.valid.eq(1)
                with m.If(self.act_in.ready):
                    m.d.comb += x_idx_next.eq(x_idx + 1)
                    with m.If(x_idx + 1 == x_len):
                        # the input is in the accelerator: the buffer is free again
                        m.d.comb += [free_rd.eq(1), rd_next.eq(~rd)]
                        m.d.sync += xs.eq(X_WAIT)
                with m.Else():
                    m.d.sync += wd_count.eq(wd_count + 1)
            with m.Case(X_WAIT):
                with m.If(res_complete):
                    m.d.sync += xs.eq(X_IDLE)
                with m.Elif(~self.result.valid & (res_taken != out_f)):
                    m.d.sync += wd_count.eq(wd_count + 1)
            with m.Case(X_RESP):
                with m.If(~xr_valid):
                    m.d.sync += xs.eq(X_DONE)
            with m.Case(X_DONE):
                with m.If(x_hold):
                    m.d.comb += [free_rd.eq(1), rd_next.eq(~rd)]
                m.d.sync += xs.eq(X_IDLE)
        # watchdog: cycles the accelerator made the link wait, against the model's bound. The
        # compare is registered (``wd_over``, a cycle behind the count, so the run ends at
        # ``bound + 2`` cycles) and only counts in the four states that count: every way into
        # them passes X_IDLE or X_CCHECK, which clear ``wd_count``, so it is never stale.
        wd_over = Signal()
        in_run = Signal()
        in_scrub = Signal()
        m.d.comb += [in_scrub.eq((xs == X_SCRUB) | (xs == X_DRAIN)),
                     in_run.eq((xs == X_INFER) | (xs == X_WAIT))]
        m.d.sync += wd_over.eq((in_scrub | in_run) & (wd_count > wd_bound))
        with m.If(in_scrub & wd_over):
            m.d.comb += wd_fire.eq(1)
            m.d.sync += verified.eq(0)
            x_respond(K_ERROR, E_WATCHDOG)
        with m.If(in_run & wd_over):
            m.d.comb += wd_fire.eq(1)
            m.d.sync += [verified.eq(0), xr_valid.eq(1), xr_kind.eq(K_ERROR),
                         xr_code.eq(E_WATCHDOG), xr_type.eq(T_INFER),
                         xr_seq.eq(Mux(xs == X_INFER, x_seq, xr_seq)), xs.eq(X_RESP)]
            with m.If(xs == X_INFER):
                m.d.comb += [free_rd.eq(1), rd_next.eq(~rd)]
        with m.If(free_rd):
            m.d.sync += [full.bit_select(rd, 1).eq(0), x_hold.eq(0)]

        # ---- transmitter: one frame at a time, the slot first
        T_IDLE, T_HDR, T_PAY, T_CRC = range(4)
        ts = reg(range(4))
        tk = reg(16)                       # byte index within the phase
        t_kind = reg(3)
        t_type = reg(8)
        t_seq = reg(8)
        t_len = reg(16)
        t_code = reg(8)
        t_cmd = reg(8)                     # the command an ERROR frame names
        t_crc = reg(32, init=0xFFFFFFFF)
        t_result = reg()                   # the frame is a RESULT frame
        t_abort = reg()
        wsr = reg(32)                      # word shift register (counters, results)
        wleft = reg(range(W + 1))
        widx = reg(range(max(n_counter_words, 2)))
        tbyte = Signal(8)
        tvalid = Signal()
        counter_words = Array([*(getattr(self, n) for n in COUNTER_NAMES),
                               *(c for n in LINK_PE_COUNTER_NAMES for c in getattr(self, n))])
        info = Array([Const(b, 8) for b in self._info])
        lengths = Array([Const(v, 16) for v in (0, 2, len(self._info), W * n_counter_words, 0)])
        with m.Switch(ts):
            with m.Case(T_IDLE):
                with m.If(slot_valid):
                    m.d.comb += slot_take.eq(1)
                    m.d.sync += [t_kind.eq(slot_kind), t_type.eq(Mux(slot_kind == K_ERROR,
                                 T_ERROR, slot_type | RESPONSE)), t_seq.eq(slot_seq),
                                 t_code.eq(slot_code), t_len.eq(lengths[slot_kind]),
                                 t_cmd.eq(slot_type), t_result.eq(0)]
                with m.Elif(xr_valid):
                    m.d.comb += xr_take.eq(1)
                    m.d.sync += [t_kind.eq(xr_kind), t_type.eq(Mux(xr_kind == K_ERROR, T_ERROR,
                                 xr_type | RESPONSE)), t_seq.eq(xr_seq), t_code.eq(xr_code),
                                 t_len.eq(Mux(xr_kind == K_RESULT, out_f * W,
                                              lengths[xr_kind])),
                                 t_cmd.eq(xr_type), t_result.eq(xr_kind == K_RESULT)]
                with m.If(slot_valid | xr_valid):
                    m.d.sync += [ts.eq(T_HDR), tk.eq(0), t_crc.eq(0xFFFFFFFF), wleft.eq(0),
                                 widx.eq(0), t_abort.eq(0)]
            with m.Case(T_HDR):
                m.d.comb += tvalid.eq(1)
                with m.Switch(tk[:3]):
                    with m.Case(0):
                        m.d.comb += tbyte.eq(LINK_SYNC)
                    with m.Case(1):
                        m.d.comb += tbyte.eq(t_type)
                    with m.Case(2):
                        m.d.comb += tbyte.eq(t_seq)
                    with m.Case(3):
                        m.d.comb += tbyte.eq(t_len[:8])
                    with m.Default():
                        m.d.comb += tbyte.eq(t_len[8:])
            with m.Case(T_PAY):
                with m.Switch(t_kind):
                    with m.Case(K_ERROR):
                        m.d.comb += [tvalid.eq(1), tbyte.eq(Mux(tk[0], t_cmd, t_code))]
                    with m.Case(K_INFO):
                        m.d.comb += [tvalid.eq(1), tbyte.eq(info[tk[:max(1, (len(
                            self._info) - 1).bit_length())]])]
                    with m.Default():
                        m.d.comb += [tvalid.eq(wleft != 0), tbyte.eq(wsr[:8])]
                        with m.If(wleft == 0):
                            with m.If(t_kind == K_COUNTERS):
                                m.d.sync += [wsr.eq(counter_words[widx]), wleft.eq(W),
                                             widx.eq(widx + 1)]
                            with m.Elif(t_abort | tx_abort):
                                m.d.sync += [wsr.eq(0), wleft.eq(W), t_abort.eq(1)]
                            with m.Else():
                                m.d.comb += self.result.ready.eq(1)
                                with m.If(self.result.valid):
                                    m.d.sync += [wsr.eq(self.result.payload), wleft.eq(W),
                                                 res_taken.eq(res_taken + 1)]
            with m.Case(T_CRC):
                m.d.comb += tvalid.eq(1)
                # an aborted RESULT frame ends with the complement of its CRC: always bad
                crc_out = Signal(32)
                m.d.comb += crc_out.eq(Mux(t_abort, t_crc, ~t_crc))
                m.d.comb += tbyte.eq(crc_out.word_select(tk[:2], 8))
        m.d.comb += [self.host_out.valid.eq(tvalid), self.host_out.payload.eq(tbyte)]
        with m.If(self.host_out.valid & self.host_out.ready):
            m.d.sync += tk.eq(tk + 1)
            with m.If(ts != T_CRC):
                m.d.sync += t_crc.eq(_crc32_byte(t_crc, tbyte))
            with m.If(ts == T_HDR):
                with m.If(tk == 0):
                    m.d.sync += t_crc.eq(0xFFFFFFFF)    # the sync byte is not covered
                with m.If(tk == LINK_HEADER_BYTES - 1):
                    m.d.sync += [tk.eq(0), ts.eq(Mux(t_len == 0, T_CRC, T_PAY))]
            with m.If(ts == T_PAY):
                m.d.sync += [wsr.eq(wsr >> 8), wleft.eq(wleft - 1)]
                with m.If(tk + 1 == t_len):
                    m.d.sync += [tk.eq(0), ts.eq(T_CRC)]
            with m.If(ts == T_CRC):
                with m.If(tk == LINK_CRC_BYTES - 1):
                    m.d.sync += ts.eq(T_IDLE)
                    with m.If(t_result):
                        m.d.sync += res_complete.eq(1)
        # a watchdog during a RESULT frame pads it (with a bad CRC)
        with m.If(wd_fire):
            m.d.sync += tx_abort.eq(1)
        with m.If((ts == T_IDLE) & ~slot_valid & xr_valid):
            m.d.sync += tx_abort.eq(0)

        with m.If(soft_rst):
            # last, so that it wins over anything the executor did in the same cycle
            m.d.sync += [s.eq(s.init) for s in resettable]
            m.d.sync += [res_taken.eq(0), res_complete.eq(0), full.eq(0), wr.eq(0),
                         verified.eq(0), model_crc.eq(0xFFFFFFFF), last_valid.eq(1),
                         last_type.eq(r_type), last_seq.eq(r_seq), last_done.eq(1),
                         last_code.eq(0), snoop_layers.eq(0), snoop_in.eq(0)]
        return m


def connect_accelerator(m: Module, link: HostLink, accel) -> None:
    """Wire ``link`` to an :class:`~zeroskip.hw.accel.Accelerator` (streams and counters; the
    caller puts the accelerator under a reset of ``link.accel_rst``)."""
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
