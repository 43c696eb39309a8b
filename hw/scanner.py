"""The activation scanner: it reads a layer's input activations from the ``pes`` banks of an
activation buffer, one *row* of ``pes`` activations per fetch (every bank at the same address;
activation ``j`` is in bank ``j % pes`` at address ``j // pes``), skips the zero ones, and
broadcasts each remaining ``(pointer address, value)`` to the PEs, in column order.

Pipeline::

    A  bank read     the row at ``rd_addr`` is fetched (``rd_en``); it waits on the read ports
    R  read register the row's values, registered (no logic after the memories' outputs)
    B  row register  the row's values and the mask of positions still to emit (nonzero and in
                     range, computed as the row moves from R to B)
    pick             B's lowest pending position goes into the broadcast register each cycle
    broadcast        ``col`` (``ptr_base + j``, ``a_j``) until every PE has taken it

A row costs ``max(1, nonzeros in range)`` cycles (a row with nothing to emit spends one cycle in
B), so the scanner skips up to ``pes`` zero activations a cycle. With ``skip_zero`` off (the dense
baseline) every in-range position is pending. A new fetch is issued as the previous row leaves A,
and a row moves from A to R as the one in R moves to B, so A and R never hold B up.

Timing with ``col.ready`` held high, counting from the first cycle ``enable`` is high (``c0``):
row 0 is fetched at ``c0``, is in R at ``c0 + 2`` and in B from ``c0 + 3``; row ``r + 1``
follows ``max(1, n_r)`` cycles after row ``r`` (``n_r``: its positions to emit); the ``k``-th
pending position of a row that is in B from cycle ``t`` is emitted at ``t + k`` and is on ``col``
(``col.valid``) at ``t + k + 1``. ``skipped`` shows a row's zero count in the first cycle the
row is in B.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal
from amaranth.lib import stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import HwParams
from .pe import bank_depth, col_layout

__all__ = ["Scanner"]


class Scanner(wiring.Component):
    """Scans one layer's activations and broadcasts the nonzero ones.

    Parameters
    ----------
    params : :class:`~zeroskip.spec.HwParams`

    Members
    -------
    start : ``In(1)``
        Restart at column 0 (takes effect at the next cycle; overrides ``enable``), also in the
        middle of a scan: the rows in A, R and B are dropped (a value already in the broadcast
        register stays there until taken). ``in_f`` must hold the new layer's value in the
        cycle of ``start`` already; ``ptr_base`` and ``skip_zero`` may change in that cycle;
        all three must then hold until ``done``.
    enable : ``In(1)``
        Scan (fetch rows and emit into the broadcast register). A value already in the
        broadcast register is offered on ``col`` whatever ``enable`` is.
    in_f : ``In(params.act_addr_bits)``
        The layer's number of activations (columns).
    ptr_base : ``In(params.ptr_addr_bits)``
        Address of the layer's first column pointer; column ``j`` is broadcast as
        ``ptr_base + j``.
    skip_zero : ``In(1)``
        Skip zero activations (off: broadcast every column, the dense baseline).
    rd_addr, rd_en : ``Out``
        Read port of the activation banks (one address for all ``pes`` banks); the data are
        expected on ``rd_data`` the cycle after ``rd_en`` and held while ``rd_en`` is low
        (``amaranth.lib.memory`` read ports).
    rd_data : ``In(8).array(pes)``
        The banks' read data, bank ``i`` at index ``i``.
    col : ``Out(stream.Signature(col_layout(params)))``
        The broadcast. ``col.ready`` must be the AND of every PE's ready, and ``col.valid`` is
        ``pending & col.ready``, so unlike a plain stream, **valid depends on ready**: the
        broadcast reaches every PE in the same cycle or none. That is fine here because each
        PE's ready is a register (no combinational loop).
    pending : ``Out(1)``
        The broadcast register holds a value (offered on ``col`` as soon as ``col.ready``); the
        accelerator counts the cycles in which it waits for a PE (``pe_stall``).
    done : ``Out(1)``
        Nothing left to fetch or emit, and the broadcast register is empty.
    skipped : ``Out(range(pes + 1))``
        Zero in-range activations of the row that entered B in the previous cycle (0 with
        ``skip_zero`` off); registered, so summing it over a scan counts the skipped ones.
    """

    # ---- latencies the cycle model (zeroskip/sw/cycles.py) takes from here
    #: cycles from a row's fetch (A, ``rd_en``) to the row in the read register R
    READ_LATENCY = 2
    #: cycles from a position's pick out of B to its transfer on ``col`` (the broadcast
    #: register), with every PE ready
    BROADCAST_LATENCY = 1
    #: cycles a row with nothing to emit keeps B busy after it loads, until B is empty again
    EMPTY_ROW_CYCLES = 2

    def __init__(self, params: HwParams):
        if not isinstance(params, HwParams):
            raise TypeError(f"params must be HwParams, not {params!r}")
        self.params = params
        P = params.pes
        self.bank_bits = max(1, (bank_depth(params) - 1).bit_length())
        super().__init__({
            "start": In(1),
            "enable": In(1),
            "in_f": In(params.act_addr_bits),
            "ptr_base": In(params.ptr_addr_bits),
            "skip_zero": In(1),
            "rd_addr": Out(self.bank_bits),
            "rd_en": Out(1),
            "rd_data": In(8).array(P),
            "col": Out(stream.Signature(col_layout(params))),
            "pending": Out(1),
            "done": Out(1),
            "skipped": Out(range(P + 1)),
        })

    def elaborate(self, platform):
        p = self.params
        P = p.pes
        m = Module()
        bbits = self.bank_bits
        abits = p.act_addr_bits
        in_f, ptr_base, skip_zero = self.in_f, self.ptr_base, self.skip_zero

        sc_addr = Signal(bbits + 1)        # address of the next row to fetch
        sc_jnext = Signal(abits + 1)       # column index of the next row to fetch
        sc_more = Signal()                 # sc_jnext < in_f (a register: no compare in the
        #                                    fetch and done paths)
        a_valid = Signal()                 # stage A: a row on the read ports
        a_jbase = Signal(abits + 1)
        r_valid = Signal()                 # stage R: the read register
        r_jbase = Signal(abits + 1)
        r_data = [Signal(8, name=f"reg_data{i}") for i in range(P)]
        b_valid = Signal()                 # stage B: the row register
        b_jbase = Signal(abits + 1)
        b_data = [Signal(8, name=f"row_data{i}") for i in range(P)]
        b_mask = Signal(P)
        sv = Signal()                      # broadcast register: valid, pointer address, value
        sv_ptr = Signal(p.ptr_addr_bits)
        sv_act = Signal(8)
        scanning = Signal()
        scan_done = Signal()
        r_mask = Signal(P)
        r_zeros = Signal(range(P + 1))
        first = Signal(range(P))
        first_bit = Signal(P)
        all_ready = Signal()
        out_free = Signal()
        emit = Signal()
        b_free = Signal()
        a_move = Signal()
        r_move = Signal()
        fetch = Signal()
        m.d.comb += [scanning.eq(self.enable), all_ready.eq(self.col.ready)]
        for i in range(P):
            m.d.comb += r_mask[i].eq(((r_data[i] != 0) | ~skip_zero) & (r_jbase + i < in_f))
        m.d.comb += r_zeros.eq(sum(((r_data[i] == 0) & (r_jbase + i < in_f)) for i in range(P)))
        for i in reversed(range(P)):
            with m.If(b_mask[i]):
                m.d.comb += [first.eq(i), first_bit.eq(1 << i)]
        m.d.comb += [
            out_free.eq(~sv | all_ready),
            emit.eq(scanning & b_valid & (b_mask != 0) & out_free),
            # B takes a new row when empty, when its row has nothing (left) to emit, or when it
            # emits its last pending position now
            b_free.eq(~b_valid | (b_mask == 0) | (emit & (b_mask == first_bit))),
            r_move.eq(scanning & r_valid & b_free),
            a_move.eq(scanning & a_valid & (~r_valid | r_move)),
            fetch.eq(scanning & sc_more & (~a_valid | a_move)),
            scan_done.eq(~a_valid & ~r_valid & ~b_valid & ~sc_more),
        ]
        m.d.comb += [self.rd_addr.eq(sc_addr), self.rd_en.eq(fetch)]
        with m.If(fetch):
            m.d.sync += [sc_addr.eq(sc_addr + 1), sc_jnext.eq(sc_jnext + P), a_valid.eq(1),
                         a_jbase.eq(sc_jnext), sc_more.eq(sc_jnext + P < in_f)]
        with m.Elif(a_move):
            m.d.sync += a_valid.eq(0)
        with m.If(a_move):
            m.d.sync += [r_valid.eq(1), r_jbase.eq(a_jbase)]
            m.d.sync += [r_data[i].eq(self.rd_data[i]) for i in range(P)]
        with m.Elif(r_move):
            m.d.sync += r_valid.eq(0)
        with m.If(r_move):
            m.d.sync += [b_valid.eq(1), b_mask.eq(r_mask), b_jbase.eq(r_jbase)]
            m.d.sync += [b_data[i].eq(r_data[i]) for i in range(P)]
        with m.Elif(b_free):
            m.d.sync += [b_valid.eq(0), b_mask.eq(0)]
        with m.Elif(emit):
            m.d.sync += b_mask.eq(b_mask & ~first_bit)
        with m.If(emit):
            m.d.sync += [sv.eq(1), sv_act.eq(Array(b_data)[first]),
                         sv_ptr.eq(ptr_base + b_jbase + first)]
        with m.Elif(sv & all_ready):
            m.d.sync += sv.eq(0)
        m.d.comb += [self.col.valid.eq(sv & all_ready),
                     self.col.payload.ptr.eq(sv_ptr), self.col.payload.act.eq(sv_act),
                     self.pending.eq(sv), self.done.eq(scan_done & ~sv)]
        skipped_now = Signal(range(P + 1))
        with m.If(r_move & skip_zero):
            m.d.sync += skipped_now.eq(r_zeros)   # counted a cycle later (registered)
        with m.Else():
            m.d.sync += skipped_now.eq(0)
        m.d.comb += self.skipped.eq(skipped_now)

        # restart at column 0 (last, so it takes precedence over the pipeline's own updates)
        with m.If(self.start):
            m.d.sync += [sc_addr.eq(0), sc_jnext.eq(0), a_valid.eq(0), r_valid.eq(0),
                         b_valid.eq(0), sc_more.eq(in_f != 0)]
        return m
