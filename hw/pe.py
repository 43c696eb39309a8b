"""One processing element of the sparse-skipping array (EIE-style).

A PE owns the output rows ``r`` with ``r % pes == index`` of every layer. It takes nonzero
activations ``(ptr, a)`` from the broadcast (``ptr`` is the address of the column's pointer
pair), fetches the column's pointers at once, queues the nonempty columns, streams their
relative-index entries, and does one multiply-accumulate per cycle into its local accumulators.
After the last column of a layer it finalizes its rows: adds the bias, requantizes (or keeps the
int32 sum for the output layer) and writes the result.

Pipeline (one entry per cycle, no bubbles between columns)::

    P1  pointer read     ptr[j], ptr[j+1] read as the column is taken from the broadcast
    P2  pointer register empty columns (a flag in the pointer word) are dropped here; nonempty
                         ones are queued as (start, entries - 2, a); ``fifo_depth`` credits
                         cover P1, P2 and the queue (a head register in front of a FIFO)
    S2  entry issue      entry address = the current column's next entry, or the queue head's
    S3a entry register   the entry memory's output is registered
    S3  decode           row = delta (first of column) or row + delta + 1; acc[row] read; w * a
    S4  read register    the accumulator's output is registered
    S5  accumulate       acc[row] += w * a (the two writes ahead of an entry's read are
                         forwarded; rows can only repeat across a column boundary)

Finalization, ``fin_lanes`` (L) rows a cycle (the accumulators are L banks, row % L), started
by each PE once the scanner is done and nothing is left to issue: F0 read acc/bias/rq, F1 (the
memories' outputs), F1a register them and the hits of the last two accumulations (still in
flight at F0), F2 sum = acc + bias (forwarded acc), S - 1, and clear acc, F2p two partial
products of sum * M, F3 their sum, F4a shift by 8*((S-1)//8), F4b shift by (S-1)%8, F4c round
and clamp: ``(p + 2**(S-1)) >> S == ((p >> (S-1)) + 1) >> 1``, then write (activation bank, or
acc for the output layer, which the read-out then streams and clears). An output layer without
requantization writes its int32 sums back into acc at F2 (nothing wider than the shift amount
travels down the pipeline).
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import (
    BIAS_WORD,
    MEM_BIAS,
    MEM_ENTRY,
    MEM_PTR,
    MEM_RQ,
    PTR_WORD,
    RQ_WORD,
    HwParams,
    entry_layout,
)

__all__ = ["PE", "col_layout", "bank_depth"]


def bank_depth(params: HwParams) -> int:
    """Rows of one layer a PE holds (and the depth of one activation bank)."""
    return (params.act_depth + params.pes - 1) // params.pes


def col_layout(params: HwParams) -> data.StructLayout:
    """A queued activation: the address of its column's pointer pair and its value."""
    return data.StructLayout({"ptr": unsigned(params.ptr_addr_bits), "act": unsigned(8)})


class PE(wiring.Component):
    """A processing element.

    Parameters
    ----------
    params : :class:`~zeroskip.spec.HwParams`
    index : which PE this is (``0 <= index < params.pes``).

    Members
    -------
    col : ``In(stream.Signature(col_layout))``
        Nonzero activations of the current layer, in column order (the broadcast). ``ready`` is
        a register: the PE has a credit left (fewer than ``fifo_depth + CREDIT_SLACK`` columns
        in its pointer stages and queue).
    room : Out(1)
        A register: fewer than ``fifo_depth`` columns are in the pointer stages and the queue.
        The broadcast may send a column in the cycle after ``room`` (the accelerator registers
        the AND of every PE's ``room``): the column that may have been taken in between fills
        at most the ``CREDIT_SLACK`` spare credit, so ``ready`` is then still high.
    ld_mem, ld_addr, ld_data, ld_en : In
        Memory writes of the model load (``MEM_PTR``, ``MEM_ENTRY``, ``MEM_BIAS``, ``MEM_RQ``).
    idle : Out(1)
        No column in the pointer stages or the queue, and no entry in flight.
    fin_arm, scan_done, fin_out, fin_row_base, fin_requant, fin_last : In
        ``fin_arm`` (a pulse at a layer's start) arms the finalization of the layer: the PE
        starts it by itself once ``scan_done`` (no column of the layer is left to broadcast) is
        high and its own pipeline has drained, with ``fin_out`` rows whose bias/rq words start
        at ``fin_row_base``; ``fin_last`` keeps the results in the accumulators for the
        read-out. ``scan_done`` must be low in the cycle after ``fin_arm``. The other inputs
        must hold until ``fin_done``.
    fin_done : Out(1)
        Not armed, and the armed layer's finalization is over but for its last two groups of
        ``fin_lanes`` rows: the one in F4c is written in this cycle, the one in F4b in the
        next (a register, so that the sequencer, behind one more register, moves on exactly
        as the last rows are written).
    out_row, out_data, out_en : Out
        Requantized activations for this PE's bank of the next activation buffer,
        ``fin_lanes`` a cycle (F4c): ``out_data[j]`` (when ``out_en[j]``) is local row
        ``out_row + j`` (``out_row`` a multiple of ``fin_lanes``). The accelerator adds the
        pixel's output address and does the pooling's compare-and-keep.
    out_row_s : Out
        The local row of F4a (``out_row_t`` a cycle earlier), for a registered output address.
    out_row_t, out_rd : Out
        The same rows a cycle earlier (F4b): ``out_rd`` while any of them is valid (the
        accelerator reads the output bank there for the pooling's compare).
    ro_sel, ro_addr, ro_en, ro_data, ro_clr_en, ro_clr_addr
        Read-out of the output layer's results (and clearing of the accumulators behind it): in
        a cycle with ``ro_sel & ro_en`` the accumulator at ``ro_addr`` is read and ``ro_data``
        takes the value read at the previous such cycle (a register).
    issue, useful : Out(1)
        This cycle an entry was issued / a useful MAC (weight and activation nonzero) was done.
    """

    # ---- latencies the cycle model (zeroskip/sw/cycles.py) takes from here
    #: credits a PE has beyond ``fifo_depth``: ``room`` (fewer than ``fifo_depth`` columns held)
    #: is seen by the broadcast a cycle late, so one more column may arrive meanwhile
    CREDIT_SLACK = 1
    #: cycles from a column's transfer on ``col`` to its pointers registered (P1, P2), where it
    #: is dropped (empty) or queued
    POINTER_LATENCY = 2
    #: cycles from P2 to the column's first issue when the entry stage is free (the bypass)
    QUEUE_LATENCY = 0
    #: cycles from the entry stage free after its last entry to ``drained`` (the PE may start
    #: finalizing; its last two accumulations are forwarded into F1a)
    DRAIN_LATENCY = 1
    #: cycles from an empty column's drop at P2 to its credit returned (``drop`` is a register)
    DROP_CREDIT_LATENCY = 1
    #: cycles from the last column dropped (its credit returned) to ``drained``
    DROP_DRAIN_LATENCY = 1
    #: cycles from F0 of the last rows to the sequencer's last counted cycle (F4c's write)
    FINAL_LATENCY = 8
    #: cycles from the start of a PE with no rows to the sequencer seeing it done
    #: (``fin_done`` two cycles after it starts, through the accelerator's AND register)
    NO_ROWS_FINISH = 3

    def __init__(self, params: HwParams, index: int):
        if not isinstance(params, HwParams):
            raise TypeError(f"params must be HwParams, not {params!r}")
        if not 0 <= index < params.pes:
            raise ValueError(f"PE index must be in 0..{params.pes - 1}, not {index!r}")
        self.params, self.index = params, index
        self.rows = bank_depth(params)
        row_bits = max(1, (self.rows - 1).bit_length())
        self.row_bits = row_bits
        self.lane_bits = params.fin_lanes.bit_length() - 1
        lanes = params.fin_lanes
        super().__init__({
            "col": In(stream.Signature(col_layout(params))),
            "room": Out(1),
            "ld_mem": In(3),
            "ld_addr": In(max(params.entry_addr_bits, params.ptr_addr_bits,
                              params.row_addr_bits)),
            "ld_data": In(32),
            "ld_en": In(1),
            "idle": Out(1),
            "fin_arm": In(1),
            "scan_done": In(1),
            "fin_out": In(params.act_addr_bits),
            "fin_row_base": In(params.row_addr_bits),
            "fin_requant": In(1),
            "fin_last": In(1),
            "fin_done": Out(1),
            "out_row": Out(row_bits),
            "out_row_t": Out(row_bits),
            "out_row_s": Out(row_bits),
            "out_rd": Out(1),
            "out_data": Out(8).array(lanes),
            "out_en": Out(lanes),
            "ro_sel": In(1),
            "ro_addr": In(row_bits),
            "ro_en": In(1),
            "ro_data": Out(signed(params.acc_width)),
            "ro_clr_en": In(1),
            "ro_clr_addr": In(row_bits),
            "issue": Out(1),
            "useful": Out(1),
        })

    def elaborate(self, platform):
        p = self.params
        m = Module()
        elay = entry_layout(p)
        acc_shape = signed(p.acc_width)

        # ---- memories
        # a pointer word: the entry address and (top bit) "this column is empty here"
        ptr_layout = data.StructLayout({"addr": unsigned(p.entry_addr_bits),
                                        "empty": unsigned(1)})
        m.submodules.ptr_mem = ptr_mem = Memory(shape=ptr_layout, depth=p.ptr_depth, init=[])
        m.submodules.entry_mem = entry_mem = Memory(shape=unsigned(p.entry_bits),
                                                    depth=p.entry_depth, init=[])
        m.submodules.bias_mem = bias_mem = Memory(shape=acc_shape, depth=p.row_depth, init=[])
        rq_layout = data.StructLayout({"mult": unsigned(p.mult_bits),
                                       "shift": unsigned(p.shift_bits)})
        m.submodules.rq_mem = rq_mem = Memory(shape=rq_layout, depth=p.row_depth, init=[])
        # the accumulators are split into ``fin_lanes`` banks by local row (row % L), so the
        # finalization reads, clears and writes L rows a cycle; bias and rq get L read ports
        L, lb = p.fin_lanes, self.lane_bits
        acc_mem = []
        for b in range(L):
            # block RAM even when small: a LUT RAM's read would sit behind the row adder
            mem = Memory(shape=acc_shape, depth=(self.rows + L - 1) // L, init=[],
                         attrs={"ram_style": "block"})
            m.submodules[f"acc_mem{b}" if L > 1 else "acc_mem"] = mem
            acc_mem.append(mem)

        # the load words, through the contract's layouts (zeroskip/spec.py)
        ld_ptr = data.View(PTR_WORD, self.ld_data)
        ld_bias = data.View(BIAS_WORD, self.ld_data)
        ld_rq = data.View(RQ_WORD, self.ld_data)
        ld_entry = data.View(elay, self.ld_data[:elay.size])
        ptr_wp = ptr_mem.write_port()
        m.d.comb += [ptr_wp.addr.eq(self.ld_addr),
                     ptr_wp.data.addr.eq(ld_ptr.addr[:p.entry_addr_bits]),
                     ptr_wp.data.empty.eq(ld_ptr.empty),
                     ptr_wp.en.eq(self.ld_en & (self.ld_mem == MEM_PTR))]
        for mem, code, word in ((entry_mem, MEM_ENTRY, ld_entry.as_value()),
                                (bias_mem, MEM_BIAS, ld_bias.bias[:p.acc_width])):
            wp = mem.write_port()
            m.d.comb += [wp.addr.eq(self.ld_addr), wp.data.eq(word),
                         wp.en.eq(self.ld_en & (self.ld_mem == code))]
        rq_wp = rq_mem.write_port()
        m.d.comb += [rq_wp.addr.eq(self.ld_addr),
                     rq_wp.data.mult.eq(ld_rq.mult[:p.mult_bits]),
                     rq_wp.data.shift.eq(ld_rq.shift[:p.shift_bits]),
                     rq_wp.en.eq(self.ld_en & (self.ld_mem == MEM_RQ))]

        ptr0 = ptr_mem.read_port()
        ptr1 = ptr_mem.read_port()
        ent = entry_mem.read_port()
        acc_wp = [mem.write_port() for mem in acc_mem]
        acc_rp = [mem.read_port() for mem in acc_mem]
        bias_rp = [bias_mem.read_port() for _ in range(L)]
        rq_rp = [rq_mem.read_port() for _ in range(L)]

        def bank_of(row):        # the accumulator bank of a local row, and its address there
            return (row[:lb] if lb else 0), row[lb:]

        # ---- P1/P2: pointer fetch as a column arrives, before it is queued. P1 is the pointer
        # memory's read, P2 registers its outputs; a column with no entries in this PE is
        # dropped at P2 and never occupies the queue or the entry stage. Nonempty columns go
        # into the job queue as (start, rem, act). The PE holds up to ``depth`` columns
        # (``fifo_depth`` and the slack credit) in P1, P2 and the queue.
        depth = p.fifo_depth + self.CREDIT_SLACK
        take = Signal()
        m.d.comb += [
            take.eq(self.col.valid & self.col.ready),
            ptr0.addr.eq(self.col.payload.ptr),
            ptr1.addr.eq(self.col.payload.ptr + 1),
        ]
        p1_valid = Signal()
        p1_act = Signal(8, reset_less=True)
        m.d.sync += [p1_valid.eq(take), p1_act.eq(self.col.payload.act)]
        p2_valid = Signal()
        p2_start = Signal(p.entry_addr_bits, reset_less=True)
        p2_end = Signal(p.entry_addr_bits, reset_less=True)
        p2_act = Signal(8, reset_less=True)
        p2_empty = Signal(reset_less=True)
        m.d.sync += [p2_valid.eq(p1_valid), p2_start.eq(ptr0.data.addr),
                     p2_end.eq(ptr1.data.addr), p2_empty.eq(ptr0.data.empty),
                     p2_act.eq(p1_act)]

        # ``rem``: the column's entries minus 2 (signed), so the entry stage's "column continues"
        # flag is the sign bit of a down-counter register, with no compare in its path
        rem_shape = signed(p.entry_addr_bits + 2)
        job = data.StructLayout({"start": unsigned(p.entry_addr_bits), "rem": rem_shape,
                                 "act": unsigned(8)})
        # The job queue: a head register in front of a small FIFO. A column from P2 goes
        # straight to the entry stage if that is free and the head empty, else into the head
        # if it is free (or being popped) and the FIFO empty, else into the FIFO; the entry
        # memory's address comes from registers only (S2's, the head's or P2's). It never
        # holds more than ``depth`` columns (the credits).
        m.submodules.queue = queue = fifo.SyncFIFO(width=job.size, depth=max(1, depth - 1))
        p2_rem = Signal(rem_shape)
        if p.mem_out_logic:      # the difference is registered with the pointers
            m.d.sync += p2_rem.eq(ptr1.data.addr - ptr0.data.addr - 2)
        else:
            m.d.comb += p2_rem.eq(p2_end - p2_start - 2)
        q_w_en = Signal()
        q_w_data = Signal(job.size)
        m.d.comb += [q_w_en.eq(p2_valid & ~p2_empty),
                     q_w_data.eq(Cat(p2_start, p2_rem, p2_act)),
                     queue.w_data.eq(q_w_data)]
        head_valid = Signal()
        head_data = Signal(job.size, reset_less=True)
        head_pop = Signal()          # the entry stage takes the head this cycle
        bypass = Signal()            # the entry stage takes P2's column this cycle
        head = data.View(job, head_data)
        with m.If(~head_valid | head_pop):
            with m.If(queue.r_rdy):
                m.d.comb += [queue.r_en.eq(1), queue.w_en.eq(q_w_en)]
                m.d.sync += [head_data.eq(queue.r_data), head_valid.eq(1)]
            with m.Elif(q_w_en & ~bypass):
                m.d.sync += [head_data.eq(q_w_data), head_valid.eq(1)]
            with m.Else():
                m.d.sync += head_valid.eq(0)
        with m.Else():
            m.d.comb += queue.w_en.eq(q_w_en)

        # credits: ``pending`` counts the columns taken and not yet dropped or popped (in P1, P2
        # or the queue), at most ``depth``, so the queue never overflows; ``ready`` and ``room``
        # (one credit more free: what the broadcast looks at, a cycle late) are registered
        pending = Signal(range(depth + 1))
        pending_next = Signal(range(-1, depth + 2))
        drop = Signal()
        pop = Signal()
        ready = Signal()
        room = Signal()
        # a dropped column returns its credit a cycle later (drop is registered: the empty
        # compare stays out of the credit path)
        m.d.sync += drop.eq(p2_valid & p2_empty)
        m.d.comb += [pop.eq(head_pop | bypass),
                     pending_next.eq(pending + take - drop - pop)]
        m.d.sync += [pending.eq(pending_next), ready.eq(pending_next < depth),
                     room.eq(pending_next < depth - self.CREDIT_SLACK)]
        m.d.comb += [self.col.ready.eq(ready), self.room.eq(room)]

        # ---- S2: entry issue. s2_left = entries of the current column still to issue, minus 1
        # (-1: none); s2_has is its sign bit inverted
        s2_cur = Signal(p.entry_addr_bits, reset_less=True)
        s2_left = Signal(rem_shape, init=-1)
        s2_act = Signal(8, reset_less=True)
        s2_has = Signal()
        jq_pop = Signal()
        # the next column: the head's, or P2's
        nxt_start = Signal(p.entry_addr_bits)
        nxt_rem = Signal(rem_shape)
        nxt_act = Signal(8)
        m.d.comb += [s2_has.eq(~s2_left[-1]),
                     head_pop.eq(head_valid & ~s2_has),
                     bypass.eq(~head_valid & ~s2_has & q_w_en),
                     jq_pop.eq(head_pop | bypass),
                     nxt_start.eq(Mux(head_valid, head.start, p2_start)),
                     nxt_rem.eq(Mux(head_valid, head.rem, p2_rem)),
                     nxt_act.eq(Mux(head_valid, head.act, p2_act))]
        v3 = Signal()
        a3 = Signal(8, reset_less=True)
        first3 = Signal(reset_less=True)
        m.d.comb += ent.addr.eq(Mux(s2_has, s2_cur, nxt_start))
        with m.If(s2_has):
            m.d.sync += [s2_cur.eq(s2_cur + 1), s2_left.eq(s2_left - 1)]
        with m.Elif(jq_pop):
            m.d.sync += [s2_cur.eq(nxt_start + 1), s2_left.eq(nxt_rem), s2_act.eq(nxt_act)]
        m.d.sync += [v3.eq(s2_has | jq_pop), a3.eq(Mux(s2_has, s2_act, nxt_act)),
                     first3.eq(jq_pop)]
        m.d.comb += self.issue.eq(s2_has | jq_pop)

        # ---- S3a: register the entry (the memory's output drives no adder directly)
        v3r = Signal()
        a3r = Signal(8, reset_less=True)
        first3r = Signal(reset_less=True)
        ent_q = Signal(p.entry_bits, reset_less=True)
        m.d.sync += [v3r.eq(v3), a3r.eq(a3), first3r.eq(first3), ent_q.eq(ent.data)]

        # ---- S3: decode, accumulator read, multiply
        e = data.View(elay, ent_q)
        row_q = Signal(self.row_bits, reset_less=True)
        row = Signal(self.row_bits)
        m.d.comb += row.eq(Mux(first3r, e.delta, row_q + e.delta + 1))
        with m.If(v3r):
            m.d.sync += row_q.eq(row)
        v4 = Signal()
        row4 = Signal(self.row_bits, reset_less=True)
        prod4 = Signal(signed(p.weight_bits + 9), reset_less=True)
        m.d.sync += [v4.eq(v3r), row4.eq(row), prod4.eq(e.weight * a3r)]
        m.d.comb += self.useful.eq(v3r & (e.weight != 0) & (a3r != 0))

        # ---- S4: the accumulator's read data is registered (no adder after the memory output)
        v5 = Signal()
        row5 = Signal(self.row_bits, reset_less=True)
        prod5 = Signal(signed(p.weight_bits + 9), reset_less=True)
        acc5 = [Signal(acc_shape, reset_less=True, name=f"acc5_{b}") for b in range(L)]
        m.d.sync += [v5.eq(v4), row5.eq(row4), prod5.eq(prod4)]
        # read-after-write forwarding: an entry's read (S3) misses the writes of the two entries
        # ahead of it (S5 in the same cycle and the next); rows increase strictly within a
        # column, so they can only hit across a column boundary. The hits are decided in S4,
        # the values taken from the last two writes in S5. S4 encodes the choice among the
        # two forwarded values and the L banks' read data as one registered select, so S5
        # has a single multiplexer level before its adder.
        w1_valid = Signal()                    # S5's write one cycle ago
        w1_row = Signal(self.row_bits, reset_less=True)
        fwd1 = Signal(acc_shape, reset_less=True)
        fwd2 = Signal(acc_shape, reset_less=True)
        hit_now = Signal()       # the write one cycle ago (fwd1 now) is this entry's row
        m.d.comb += hit_now.eq(w1_valid & (w1_row == row4))
        if p.mem_out_logic:
            # S4 resolves the write two entries ahead itself (fwd1 now is fwd2 in S5)
            m.d.sync += [acc5[b].eq(Mux(hit_now, fwd1, acc_rp[b].data)) for b in range(L)]
            sources = [fwd1, *acc5]
            src_mem = 1
        else:
            m.d.sync += [acc5[b].eq(acc_rp[b].data) for b in range(L)]
            sources = [fwd1, fwd2, *acc5]
            src_mem = 2
        src5 = Signal(range(len(sources)), reset_less=True)
        with m.If(v5 & (row5 == row4)):
            m.d.sync += src5.eq(0)
        with m.Elif(hit_now if not p.mem_out_logic else 0):
            m.d.sync += src5.eq(1)
        with m.Else():
            m.d.sync += src5.eq(src_mem + bank_of(row4)[0])
        mac_sum = Signal(acc_shape)
        m.d.comb += mac_sum.eq(Array(sources)[src5] + prod5)
        m.d.sync += [w1_valid.eq(v5), w1_row.eq(row5), fwd1.eq(mac_sum), fwd2.eq(fwd1)]

        # ---- S5: accumulate (write port shared with finalization and read-out, see below)
        m.d.comb += self.idle.eq((pending == 0) & ~s2_has & ~v3 & ~v3r & ~v4 & ~v5)

        # ---- finalization: the PE starts on its own once the layer is armed (``fin_arm`` at
        # the layer's start), the scanner is done (``scan_done``) and it has nothing left to
        # issue; its last two accumulations may still be in flight (F1a forwards them). It
        # handles L = fin_lanes rows a cycle: local rows l .. l+L-1 (l a multiple of L, one per
        # accumulator bank), global rows r, r + pes, ... (r = l * pes + index).
        armed = Signal()
        drained = Signal()
        fin_go = Signal()
        fin_active = Signal()
        fin_l = Signal(self.row_bits, reset_less=True)
        fin_r = Signal(p.act_addr_bits + 1, reset_less=True)
        fin_out = Signal(p.act_addr_bits, reset_less=True)
        fin_g = [Signal(p.row_addr_bits, reset_less=True, name=f"fin_g{j}") for j in range(L)]
        fin_requant = Signal(reset_less=True)
        fin_last = Signal(reset_less=True)
        # fin_final: the rows at fin_r are this PE's last (a register, decided a step ahead);
        # fin_lv: which lanes of them are rows of the layer
        fin_final = Signal()
        fin_lv = Signal(L)
        step = L * p.pes
        # drained = (pending == 0) & ~s2_has & ~v3: nothing left to issue and nothing in S3a;
        # the entries still in S3/S4 write in the next two cycles, after F0's read, and F1a
        # takes those writes from the forwarding registers. A register computed a cycle ahead:
        # no issue now (so S2 stays empty and S3a will be), no credit out after this cycle.
        m.d.sync += drained.eq(~s2_has & ~jq_pop & (pending_next == 0))
        m.d.comb += fin_go.eq(armed & self.scan_done & drained)
        with m.If(self.fin_arm):
            m.d.sync += armed.eq(1)
        with m.Elif(fin_go):
            m.d.sync += armed.eq(0)
        with m.If(fin_go):
            m.d.sync += [fin_l.eq(0), fin_r.eq(self.index), fin_out.eq(self.fin_out),
                         fin_requant.eq(self.fin_requant), fin_last.eq(self.fin_last),
                         fin_active.eq(self.index < self.fin_out),
                         fin_final.eq(self.index + step >= self.fin_out)]
            m.d.sync += [fin_g[j].eq(self.fin_row_base + j) for j in range(L)]
            m.d.sync += [fin_lv[j].eq(self.index + j * p.pes < self.fin_out) for j in range(L)]
        with m.Elif(fin_active):
            m.d.sync += [fin_l.eq(fin_l + L), fin_r.eq(fin_r + step),
                         fin_final.eq(fin_r + 2 * step >= fin_out)]
            m.d.sync += [fin_g[j].eq(fin_g[j] + L) for j in range(L)]
            m.d.sync += [fin_lv[j].eq(fin_r + step + j * p.pes < fin_out) for j in range(L)]
            with m.If(fin_final):
                m.d.sync += fin_active.eq(0)

        for j in range(L):
            m.d.comb += [bias_rp[j].addr.eq(fin_g[j]), rq_rp[j].addr.eq(fin_g[j])]

        def stage(name, prev_v, prev_l):
            """A pipeline step of the lane-valid bits and the local row."""
            v = Signal(L, name=f"fv{name}")
            lrow = Signal(self.row_bits, reset_less=True, name=f"l{name}")
            m.d.sync += [v.eq(prev_v), lrow.eq(prev_l)]
            return v, lrow

        # F1 (the memories are read), F1a (their outputs registered: no adder after a memory)
        fv1, l1 = stage("1", Mux(fin_active, fin_lv, 0), fin_l)
        fv1a, l1a = stage("1a", fv1, l1)
        fv2, l2 = stage("2", fv1a, l1a)
        fv2p, l2p = stage("2p", fv2, l2)
        fv3, l3 = stage("3", fv2p, l2p)
        fvs, ls = stage("s", fv3, l3)
        fvt, lt = stage("t", fvs, ls)
        fv4, l4 = stage("4", fvt, lt)
        sum2 = []
        q4 = []
        for j in range(L):
            # the last accumulations can be written as F0 reads (w2) or a cycle later (w1):
            # the hits are decided in F1, the values taken from the forwarding registers
            l1_row = Signal(self.row_bits, name=f"fin_row1_{j}")
            m.d.comb += l1_row.eq(l1 | j)          # l1 is a multiple of L
            src1a = Signal(2, reset_less=True, name=f"fin_src_{j}")   # fwd1, fwd2, memory
            m.d.sync += src1a.eq(Mux(v5 & (row5 == l1_row), 0,
                                     Mux(w1_valid & (w1_row == l1_row), 1, 2)))
            acc1a = Signal(acc_shape, reset_less=True, name=f"acc1a_{j}")
            bias1a = Signal(acc_shape, reset_less=True, name=f"bias1a_{j}")
            rq1a = Signal(rq_layout, reset_less=True, name=f"rq1a_{j}")
            m.d.sync += [bias1a.eq(bias_rp[j].data), rq1a.eq(rq_rp[j].data)]
            if p.mem_out_logic:
                # the register takes the write one cycle ahead (fwd1 now, fwd2 at F1a) itself
                fin_hit2 = Signal(name=f"fin_hit2_{j}")
                m.d.comb += fin_hit2.eq(w1_valid & (w1_row == l1_row))
                m.d.sync += acc1a.eq(Mux(fin_hit2, fwd1, acc_rp[j].data))
            else:
                m.d.sync += acc1a.eq(acc_rp[j].data)
            # F2: sum = acc + bias; the shift is kept as S - 1 (S >= 1): the rounding
            # (sum * M + 2**(S-1)) >> S equals ((sum * M) >> (S-1)) + 1) >> 1, so no rounding
            # constant and no wide rounding add are needed
            s2 = Signal(acc_shape, reset_less=True, name=f"sum2_{j}")
            mult2 = Signal(p.mult_bits, reset_less=True, name=f"mult2_{j}")
            sh2 = Signal(p.shift_bits, reset_less=True, name=f"sh2_{j}")
            fin_src = [fwd1, acc1a] if p.mem_out_logic else [fwd1, fwd2, acc1a]
            m.d.sync += [s2.eq(Array(fin_src)[(src1a != 0) if p.mem_out_logic else src1a]
                               + bias1a),
                         mult2.eq(rq1a.mult),
                         sh2.eq(rq1a.shift - 1)]
            sum2.append(s2)
            # F2p: two partial products, each one hardware multiplier with a registered
            # output: sum = hi * 2**16 + lo (lo unsigned), so sum * M = (hi*M) * 2**16 + lo*M
            sh2p = Signal(p.shift_bits, reset_less=True, name=f"sh2p_{j}")
            plo = Signal(unsigned(16 + p.mult_bits), reset_less=True, name=f"plo_{j}")
            phi = Signal(signed(p.acc_width - 16 + p.mult_bits + 1), reset_less=True,
                         name=f"phi_{j}")
            m.d.sync += [sh2p.eq(sh2), plo.eq(s2[:16] * mult2),
                         phi.eq(s2[16:].as_signed() * mult2)]
            # F3: the product (|prod3| < 2**(acc_width + mult_bits - 1))
            sh3 = Signal(p.shift_bits, reset_less=True, name=f"sh3_{j}")
            prod3 = Signal(signed(p.acc_width + p.mult_bits + 1), reset_less=True,
                           name=f"prod3_{j}")
            m.d.sync += [sh3.eq(sh2p), prod3.eq((phi << 16) + plo)]
            # F4a: coarse arithmetic shift by 8 * ((S-1) // 8) (past the top: the sign)
            fine = Signal(3, reset_less=True, name=f"fine_{j}")
            coarse = Signal(signed(p.acc_width + p.mult_bits + 1), reset_less=True,
                            name=f"coarse_{j}")
            m.d.sync += [fine.eq(sh3[:3]), coarse.eq(prod3 >> Cat(Const(0, 3), sh3[3:]))]
            # F4b: fine shift of the low 16 bits by (S-1) % 8, the sign, and whether any
            # higher bit is set (then t = prod >> (S-1) >= 512: the result clamps to 255)
            neg = Signal(reset_less=True, name=f"neg_{j}")
            hit = Signal(reset_less=True, name=f"hit_{j}")
            s16 = Signal(16, reset_less=True, name=f"s16_{j}")
            m.d.sync += [neg.eq(coarse[-1]), hit.eq(coarse[16:-1].any()),
                         s16.eq(coarse[:16] >> fine)]
            # F4c: y = (t + 1) >> 1 clamped to 0..255: t < 0 -> 0; t >= 511 -> 255
            rnd = Signal(11, name=f"rnd_{j}")
            m.d.comb += rnd.eq(s16[:10] + 1)
            q = Signal(8, reset_less=True, name=f"q4_{j}")
            m.d.sync += q.eq(Mux(neg, 0, Mux(hit | s16[10:].any() | rnd[9:].any(), 255,
                                             rnd[1:9])))
            q4.append(q)
            m.d.comb += [self.out_data[j].eq(q), self.out_en[j].eq(fv4[j] & ~fin_last)]
        m.d.comb += [self.out_row.eq(l4), self.out_row_t.eq(lt), self.out_row_s.eq(ls),
                     self.out_rd.eq((fvt != 0) & ~fin_last)]

        # fin_done (a register) rises while the last rows are in F4b: the sequencer, which sees
        # it through one more register, moves on in the cycle they are written (from F4c)
        fin_tail = Signal()
        fin_done = Signal()
        m.d.comb += [
            fin_tail.eq(~self.fin_arm & ~armed & ~fin_active & (fv1 == 0) & (fv1a == 0)
                        & (fv2 == 0) & (fv2p == 0) & (fv3 == 0)),
            self.fin_done.eq(fin_done),
        ]
        m.d.sync += fin_done.eq(fin_tail)

        # ---- the accumulator banks' ports: MAC (S3 read, S5 write), finalization (F0 read,
        # F1 clear, output-layer results at F2 / F4c), read-out (read, clear)
        # ro_q takes the banks' data read at the previous read-out cycle; ro_lane its bank
        ro_lane_a = Signal(max(1, lb), reset_less=True)
        ro_lane = Signal(max(1, lb), reset_less=True)
        ro_q = [Signal(acc_shape, reset_less=True, name=f"ro_q{b}") for b in range(L)]
        with m.If(self.ro_sel & self.ro_en):
            m.d.sync += [ro_lane_a.eq(bank_of(self.ro_addr)[0]), ro_lane.eq(ro_lane_a)]
            m.d.sync += [ro_q[b].eq(acc_rp[b].data) for b in range(L)]
        m.d.comb += self.ro_data.eq(Array(ro_q)[ro_lane] if L > 1 else ro_q[0])
        row_bank, row_addr = bank_of(row)
        row5_bank, row5_addr = bank_of(row5)
        clr_bank, clr_addr = bank_of(self.ro_clr_addr)
        for b in range(L):
            rp, wp = acc_rp[b], acc_wp[b]
            with m.If(fin_active):
                m.d.comb += rp.addr.eq(bank_of(fin_l)[1])
            with m.Elif(self.ro_sel):
                m.d.comb += [rp.addr.eq(bank_of(self.ro_addr)[1]), rp.en.eq(self.ro_en)]
            with m.Else():
                m.d.comb += rp.addr.eq(row_addr)
            with m.If(v5 & (row5_bank == b)):
                m.d.comb += [wp.addr.eq(row5_addr), wp.data.eq(mac_sum), wp.en.eq(1)]
            with m.Elif(fv2[b] & ~(fin_last & fin_requant)):
                # F2, when no accumulation can be in flight: clear the row, or (output layer,
                # int32) keep its sum for the read-out
                m.d.comb += [wp.addr.eq(bank_of(l2)[1]), wp.data.eq(Mux(fin_last, sum2[b], 0)),
                             wp.en.eq(1)]
            with m.Elif(fv4[b] & fin_last & fin_requant):       # output layer, requantized
                m.d.comb += [wp.addr.eq(bank_of(l4)[1]), wp.data.eq(q4[b]), wp.en.eq(1)]
            with m.Elif(self.ro_clr_en & (clr_bank == b)):
                m.d.comb += [wp.addr.eq(clr_addr), wp.data.eq(0), wp.en.eq(1)]
        return m
