"""The sparse-skipping accelerator for stacks of fully-connected layers.

Data flow for one inference (see ``docs/hardware.md``)::

    act_in ─► activation buffer A (P banks) ─► scanner ─► PEs (each with its queue) ─► finalize
                                              (skips zero activations,                    │
                                               hw/scanner.py)                             │
              activation buffer B ◄───────────────────────────────────────────────────────┘
              ... layer after layer, A and B swapping roles ...
    output layer ─► accumulators ─► read-out ─► result

Activation ``j`` of a buffer is in bank ``j % pes`` at address ``j // pes``; output row ``r`` is
finalized by PE ``r % pes`` into its own bank at ``r // pes``, so every PE writes its results in
parallel and the next layer reads them in column order.

Every interface is an ``amaranth.lib.stream`` with valid/ready; none assumes the other side is
always ready.
"""

from __future__ import annotations

from amaranth.hdl import Array, Cat, Const, Module, Mux, Shape, Signal, signed, unsigned
from amaranth.lib import data, fifo, stream, wiring
from amaranth.lib.memory import Memory
from amaranth.lib.wiring import In, Out

from ..spec import (
    CFG_FLAGS,
    CFG_FLAGS_WORD,
    CFG_LAYERS,
    COUNTER_NAMES,
    DESC_A_KX,
    DESC_FLAGS,
    DESC_FLAGS_WORD,
    DESC_GEOMETRY,
    DESC_HW_LAST,
    DESC_IN,
    DESC_OUT,
    DESC_PTR_BASE,
    DESC_ROW_BASE,
    MEM_CFG,
    MEM_DESC,
    PE_COUNTER_NAMES,
    HwParams,
    desc_addr_layout,
    load_layout,
)
from .pe import PE, bank_depth
from .scanner import Scanner, geometry_layout

__all__ = ["Accelerator"]


class Accelerator(wiring.Component):
    """A parametric array of sparse-skipping PEs running a stack of FC layers.

    Parameters
    ----------
    params : :class:`~zeroskip.spec.HwParams`
    counter_width : width of the performance counters (they saturate at the top).

    Members
    -------
    load : ``In(stream.Signature(load_layout(params)))``
        Model load: one memory write per transfer (accepted only while idle).
    act_in : ``In(stream.Signature(8))``
        The input vector's uint8 codes, in order; the run starts after the last one. Accepted
        once a model is loaded, through a two-entry FIFO (so up to two codes of the next
        vector may wait in it during a run).
    result : ``Out(stream.Signature(signed(32)))``
        The output layer's values in row order (int32 logits, or uint8 codes zero-extended).
    busy : ``Out(1)``
        A run is in progress (from the first input, also while it waits in the input FIFO, to
        the last result).
    cycles, useful_macs, entries, skipped_acts : ``Out(counter_width)``
        Counters of the last run: compute cycles (after the input is in, until the results are
        ready to stream), multiply-accumulates with both operands nonzero, entries issued
        (fillers and zero weights included), zero activations the scanner skipped.
    pe_busy, pe_stall : ``Out(counter_width).array(pes)``
        Per PE: cycles issuing an entry; cycles its full queue held back the broadcast.
    """

    # ---- latencies the cycle model (zeroskip/sw/cycles.py) takes from here
    #: the scanner's ``done`` to the registered scan-done the PEs see
    SCAN_DONE_LATENCY = 1
    #: cycles from the PEs' ``room`` to the broadcast's ready (the registered AND)
    READY_LATENCY = 1
    #: counted cycles before layer 0's scan (it starts as the last input is taken)
    LAYER_START = 1
    #: counted cycles between layers (the DESC_WAIT and DESC states)
    LAYER_SWITCH = 2
    #: counted cycles from a pixel's last rows written to the next pixel's first scanner cycle
    PIXEL_SWITCH = 2

    def __init__(self, params: HwParams, counter_width: int = 32):
        if not isinstance(params, HwParams):
            raise TypeError(f"params must be HwParams, not {params!r}")
        if not isinstance(counter_width, int) or not 8 <= counter_width <= 48:
            raise ValueError(f"counter_width must be an integer in 8..48, not {counter_width!r}")
        self.params = params
        self.counter_width = counter_width
        super().__init__({
            "load": In(stream.Signature(load_layout(params))),
            "act_in": In(stream.Signature(8)),
            "result": Out(stream.Signature(signed(32))),
            "busy": Out(1),
            # the counters' names (and their order for every reader) are the contract's
            **{name: Out(counter_width) for name in COUNTER_NAMES},
            **{name: Out(counter_width).array(params.pes) for name in PE_COUNTER_NAMES},
        })

    def elaborate(self, platform):
        p = self.params
        P = p.pes
        m = Module()
        bdepth = bank_depth(p)
        bbits = max(1, (bdepth - 1).bit_length())
        pbits = max(1, (P - 1).bit_length())
        abits = p.act_addr_bits
        lbits = p.layer_bits

        pes = [PE(p, i) for i in range(P)]
        for i, pe in enumerate(pes):
            m.submodules[f"pe{i}"] = pe

        # ---- configuration and layer descriptors
        n_layers = Signal(lbits + 1)
        skip_zero = Signal(init=1)
        desc_shapes = {DESC_IN: unsigned(abits), DESC_OUT: unsigned(abits),
                       DESC_PTR_BASE: unsigned(p.ptr_addr_bits),
                       DESC_ROW_BASE: unsigned(p.row_addr_bits), DESC_FLAGS: DESC_FLAGS_WORD}
        if p.conv:      # the input map's pixels (the vector scanner's input is a vector)
            desc_shapes[DESC_HW_LAST] = unsigned(abits)
        # the geometry fields the scanner has (signed ones are stored as their low bits); the
        # load words of the others are ignored
        glay = geometry_layout(p)
        geom_fields = {name: field for name, field in DESC_GEOMETRY.items()
                       if name in glay.members}
        for name, field in geom_fields.items():
            desc_shapes[field] = unsigned(Shape.cast(glay.members[name]).width)
        desc_rd = {}
        layer = Signal(lbits)
        ld = self.load.payload
        dlay = desc_addr_layout(p)
        ld_desc = data.View(dlay, ld.addr[:dlay.size])     # the field, then the layer
        for field, shape in desc_shapes.items():
            mem = Memory(shape=shape, depth=p.max_layers, init=[])
            m.submodules[f"desc{field}"] = mem
            wp = mem.write_port()
            rp = mem.read_port()
            m.d.comb += [wp.addr.eq(ld_desc.layer),
                         wp.data.eq(ld.data[:Shape.cast(shape).width]),
                         wp.en.eq(self.load.valid & self.load.ready & (ld.mem == MEM_DESC)
                                  & (ld_desc.field == field)),
                         rp.addr.eq(layer)]
            desc_rd[field] = rp.data

        # load.ready is a register: set while IDLE with no run's inputs coming in (it falls
        # the cycle after the first input is taken; the first input and a load may share a cycle)
        idle = Signal()
        m.d.comb += self.load.ready.eq(idle)
        with m.If(self.load.valid & self.load.ready & (ld.mem == MEM_CFG)):
            with m.If(ld.addr == CFG_LAYERS):
                m.d.sync += n_layers.eq(ld.data)
            with m.If(ld.addr == CFG_FLAGS):
                flags = data.View(CFG_FLAGS_WORD, ld.data[:CFG_FLAGS_WORD.size])
                m.d.sync += skip_zero.eq(flags.skip_zero_acts)
        for i, pe in enumerate(pes):
            m.d.comb += [pe.ld_mem.eq(ld.mem), pe.ld_addr.eq(ld.addr), pe.ld_data.eq(ld.data),
                         pe.ld_en.eq(self.load.valid & self.load.ready & (ld.pe == i))]

        # ---- activation buffers: 2 x P banks, each split into L = fin_lanes sub-banks by
        # address (address % L), so a PE writes L results a cycle
        L, lb = p.fin_lanes, p.fin_lanes.bit_length() - 1
        buf = Signal()              # buffer the current layer reads
        sdepth = (bdepth + L - 1) // L
        bank_wp = [[[None] * L for _ in range(P)] for _ in range(2)]
        bank_rp = [[[None] * L for _ in range(P)] for _ in range(2)]
        for b in range(2):
            for i in range(P):
                for j in range(L):
                    mem = Memory(shape=unsigned(8), depth=sdepth, init=[])
                    m.submodules[f"act{b}_{i}" + (f"_{j}" if L > 1 else "")] = mem
                    bank_wp[b][i][j] = mem.write_port()
                    bank_rp[b][i][j] = mem.read_port()

        # ---- layer registers
        out_f = Signal(abits)
        ptr_base = Signal(p.ptr_addr_bits)
        row_base = Signal(p.row_addr_bits)
        requant = Signal()
        last = Signal()

        # ---- input loader (buffer 0): the input map (C, H, W) arrives in CHW order; channel
        # c goes to bank c % P at address pixel * G + c // P (a vector: j % P at j // P).
        # ld_cg = c // P, ld_pix the pixel, ld_addr = ld_pix * G + ld_cg (added up)
        ld_bank = Signal(pbits)
        ld_addr = Signal(bbits)
        ld_cg = Signal(bbits)
        ld_pix = Signal(abits)
        ld_count = Signal(abits)
        in_take = Signal()
        in0_last = Signal(abits)   # index of layer 0's last input (registered: no adder in the
        m.d.sync += in0_last.eq(desc_rd[DESC_IN] - 1)   # path to the state register)
        # inputs wait until layer 0's descriptor has reached in0_last after any load or run
        settle = Signal(2, init=3)
        in_idle_state = Signal()
        with m.If((self.load.valid & self.load.ready) | ~in_idle_state):
            m.d.sync += settle.eq(3)
        with m.Elif(settle != 0):
            m.d.sync += settle.eq(settle - 1)
        # inputs pass through a small FIFO (its output valid is a register) and ``in_ready`` is
        # a register, so the outside's valid reaches neither the layer start nor the banks
        # (no input is accepted before a model is loaded)
        m.submodules.in_fifo = in_fifo = fifo.SyncFIFOBuffered(width=8, depth=2)
        loaded = Signal()
        m.d.comb += [loaded.eq(n_layers != 0),
                     in_fifo.w_stream.payload.eq(self.act_in.payload),
                     in_fifo.w_stream.valid.eq(self.act_in.valid & loaded),
                     self.act_in.ready.eq(in_fifo.w_stream.ready & loaded)]
        in_ready = Signal()
        in_data = in_fifo.r_stream.payload
        m.d.comb += [in_take.eq(in_fifo.r_stream.valid & in_ready),
                     in_fifo.r_stream.ready.eq(in_ready)]

        # ---- scanner (hw/scanner.py): reads rows of P activations from the current buffer
        # and broadcasts the nonzero ones to every PE at once (valid = pending & all PEs ready)
        # The broadcast's ready is a register: the AND of every PE's ``room`` a cycle ago (each
        # PE then still has a credit, ``PE.CREDIT_SLACK``), so neither the AND over the PEs nor
        # the wires from them reach the scanner's control or the broadcast's valid
        m.submodules.scanner = scanner = Scanner(p)
        bc_ready = Signal()
        m.d.sync += bc_ready.eq(Cat(pe.room for pe in pes).all())
        m.d.comb += [scanner.col.ready.eq(bc_ready),
                     scanner.ptr_base.eq(ptr_base), scanner.skip_zero.eq(skip_zero)]
        for name, field in geom_fields.items():       # read by the scanner at its start
            f = getattr(scanner.geom, name)
            m.d.comb += (f.as_value() if hasattr(f, "as_value") else f).eq(desc_rd[field])
        # the sub-bank of the row being read (registered with the read, like the data)
        rd_lane = Signal(max(1, lb))
        if lb:
            with m.If(scanner.rd_en):
                m.d.sync += rd_lane.eq(scanner.rd_addr[:lb])
        for i in range(P):
            m.d.comb += scanner.rd_data[i].eq(
                Array(Mux(buf, bank_rp[1][i][j].data, bank_rp[0][i][j].data)
                      for j in range(L))[rd_lane])
        # ---- finalization writes into the other buffer, at the pixel's output address
        # ``out_base + local row``; with L sub-banks the L rows of a step start at sub-bank
        # ``rot = address % L`` (a rotation of the lanes). Max pooling: every conv pixel of a
        # pooling window writes, the first its codes, the others the max of theirs and the
        # codes already there, read at F4b (one stage ahead) from the same address.
        pool_first = scanner.pool_first
        ld_lane = ld_addr[:lb] if lb else 0
        pool_addr = [[None] * L for _ in range(P)]
        for i, pe in enumerate(pes):
            # F4b's address, a register (from F4a's row: out_base holds during the pixel's
            # finalization), so no adder sits before the output banks' read address
            at = Signal(bbits, name=f"out_at{i}")
            a4 = Signal(bbits, name=f"out_a4{i}")        # F4c's (registered)
            m.d.sync += at.eq(scanner.out_base + pe.out_row_s)
            m.d.sync += a4.eq(at)
            rot_t, rot4 = (at[:lb], a4[:lb]) if lb else (0, 0)
            hi_t, hi4 = at[lb:], a4[lb:]
            # the pooled codes read at F4b, lane by lane
            rd = [Signal(8, name=f"pool_rd{i}_{j}") for j in range(L)]
            for j in range(L):
                sub = (rot4 + j)[:lb] if lb else 0
                m.d.comb += rd[j].eq(Array(Mux(buf, bank_rp[0][i][k].data,
                                               bank_rp[1][i][k].data) for k in range(L))[sub])
            val = [Signal(8, name=f"out_val{i}_{j}") for j in range(L)]
            for j in range(L):
                q = pe.out_data[j]
                m.d.comb += val[j].eq(Mux(pool_first | (q > rd[j]), q, rd[j]))
            for k in range(L):
                lane = (k - rot4)[:lb] if lb else 0
                carry_t = (k < rot_t) if lb else 0
                carry4 = (k < rot4) if lb else 0
                pool_addr[i][k] = hi_t + carry_t
                for b in range(2):
                    wp = bank_wp[b][i][k]
                    with m.If(Array(pe.out_en)[lane] if lb else pe.out_en[0]):
                        m.d.comb += [wp.addr.eq(hi4 + carry4), wp.data.eq(Array(val)[lane]),
                                     wp.en.eq(buf != b)]
                    if b == 0:
                        with m.Elif(in_take & (ld_bank == i) & (ld_lane == k)):
                            m.d.comb += [wp.addr.eq(ld_addr[lb:]),
                                         wp.data.eq(in_data), wp.en.eq(1)]
            m.d.comb += [pe.fin_out.eq(out_f), pe.fin_row_base.eq(row_base),
                         pe.fin_requant.eq(requant), pe.fin_last.eq(last)]
        # read ports: the scanner's on the buffer it reads, the pooling's on the other
        for b in range(2):
            for i in range(P):
                for k in range(L):
                    rp = bank_rp[b][i][k]
                    with m.If(buf == b):
                        m.d.comb += [rp.addr.eq(scanner.rd_addr[lb:]), rp.en.eq(scanner.rd_en)]
                    with m.Else():
                        m.d.comb += [rp.addr.eq(pool_addr[i][k]), rp.en.eq(pes[i].out_rd)]
        for pe in pes:
            m.d.comb += [pe.col.valid.eq(scanner.col.valid),
                         pe.col.payload.eq(scanner.col.payload)]

        # each PE finalizes by itself once the scanner is done and it has drained; the layer
        # is over when every PE is done. Both are registered (one fan-out register to the PEs,
        # one AND over them into the sequencer) and held low in the cycle after a layer start.
        # A pixel starts with the scanner's ``start`` (a layer's first) or ``next`` (``px_go``,
        # a register pulse), which arms the PEs' finalization of that pixel.
        scan_done_q = Signal()
        all_fin_done = Signal()
        px_go = Signal()
        go = Signal()
        m.d.comb += [go.eq(scanner.start | px_go), scanner.next.eq(px_go)]
        m.d.sync += [scan_done_q.eq(scanner.done & ~go),
                     all_fin_done.eq(Cat(pe.fin_done for pe in pes).all() & ~go)]
        for pe in pes:
            m.d.comb += [pe.fin_arm.eq(go), pe.scan_done.eq(scan_done_q)]

        # ---- read-out: a pipeline with one stall signal (``ro_adv``): stage 1 is the PEs'
        # accumulator read data, stage 2 each PE's registered copy (``ro_data``), which the
        # result FIFO takes; a value is cleared from the accumulators as it moves to stage 2
        ro_r = Signal(abits)
        ro_bank = Signal(pbits)
        ro_addr = Signal(bbits)
        rv1 = Signal()
        rv1_bank = Signal(pbits)
        rv1_addr = Signal(bbits)
        rv2 = Signal()
        rv2_bank = Signal(pbits)
        reading = Signal()          # a register: the READOUT state
        # results leave through a small FIFO, so the outside's ready reaches no memory port.
        # ``ro_adv`` is a register: the pipeline advances in a cycle only if the FIFO will have
        # a free slot then, whatever the outside does (it holds at most ``rdepth - 1`` after
        # this cycle's write), so the FIFO's level reaches no memory port either.
        rdepth = 2
        ro_adv = Signal(init=1)
        m.submodules.result_fifo = rfifo = fifo.SyncFIFO(width=32, depth=rdepth)
        wiring.connect(m, rfifo.r_stream, wiring.flipped(self.result))
        ro_write = Signal()
        m.d.comb += [ro_write.eq(rv2 & ro_adv),
                     rfifo.w_stream.valid.eq(ro_write),
                     rfifo.w_stream.payload.eq(Array(pe.ro_data for pe in pes)[rv2_bank])]
        m.d.sync += ro_adv.eq(rfifo.level + ro_write <= rdepth - 1)
        for i, pe in enumerate(pes):
            m.d.comb += [pe.ro_sel.eq(reading), pe.ro_addr.eq(ro_addr), pe.ro_en.eq(ro_adv),
                         pe.ro_clr_en.eq(rv1 & ro_adv & (rv1_bank == i)),
                         pe.ro_clr_addr.eq(rv1_addr)]
        # ``ro_more`` (a register): ro_r != out_f, so no compare sits in the read-out's stall
        # and state paths
        ro_more = Signal()
        with m.If(reading & ro_adv):
            m.d.sync += [rv2.eq(rv1), rv2_bank.eq(rv1_bank)]
            with m.If(ro_more):
                m.d.sync += [rv1.eq(1), rv1_bank.eq(ro_bank), rv1_addr.eq(ro_addr),
                             ro_r.eq(ro_r + 1), ro_more.eq(ro_r + 1 != out_f)]
                with m.If(ro_bank == P - 1):
                    m.d.sync += [ro_bank.eq(0), ro_addr.eq(ro_addr + 1)]
                with m.Else():
                    m.d.sync += ro_bank.eq(ro_bank + 1)
            with m.Else():
                m.d.sync += rv1.eq(0)

        # ---- counters
        cw = self.counter_width
        counting = Signal()
        clear = Signal()

        # events and the counting window are registered once before the counters, so no
        # counter adder sits at the end of a pipeline's control path (counts are unchanged)
        counting_q = Signal()
        m.d.sync += counting_q.eq(counting)

        # the clear (at a run's first input) is registered too; counting starts later
        clear_q = Signal()
        m.d.sync += clear_q.eq(clear)

        def count(counter, inc):
            # saturating: the adder's carry-out selects the top value (no compare in the
            # counter's enable)
            inc_q = Signal(range(P + 2), name=f"{counter.name}_inc")
            total = Signal(cw + 1, name=f"{counter.name}_total")
            m.d.sync += inc_q.eq(inc)
            m.d.comb += total.eq(counter + inc_q)
            with m.If(clear_q):
                m.d.sync += counter.eq(0)
            with m.Elif(counting_q):
                m.d.sync += counter.eq(Mux(total[cw], (1 << cw) - 1, total[:cw]))

        count(self.cycles, 1)
        count(self.useful_macs, sum(pe.useful for pe in pes))
        count(self.entries, sum(pe.issue for pe in pes))
        count(self.skipped_acts, scanner.skipped)
        for i, pe in enumerate(pes):
            count(self.pe_busy[i], pe.issue)
            room_q = Signal(name=f"pe{i}_room_q")      # the PE's part of ``bc_ready``
            m.d.sync += room_q.eq(pe.room)
            count(self.pe_stall[i], scanner.pending & ~room_q)

        # registered input-count decisions (no compare in the sequencer's or the load port's
        # path): ``loading`` = some inputs of a run are in, ``ld_is_last`` = the next input is
        # the run's last
        loading = Signal()
        ld_is_last = Signal()
        ld_next = Signal(abits)
        m.d.comb += ld_next.eq(Mux(in_take, Mux(ld_is_last, 0, ld_count + 1), ld_count))
        m.d.sync += ld_is_last.eq(ld_next == in0_last)

        # the scanner's enable is a register (set with the SCAN state), not a state decode
        scan_en = Signal()
        m.d.comb += scanner.enable.eq(scan_en)

        def start_layer():
            # latch the layer's descriptor (on the read ports) and start the scanner, which
            # arms the PEs' finalization
            m.d.sync += [out_f.eq(desc_rd[DESC_OUT]),
                         ptr_base.eq(desc_rd[DESC_PTR_BASE]),
                         row_base.eq(desc_rd[DESC_ROW_BASE]),
                         requant.eq(desc_rd[DESC_FLAGS].requant),
                         last.eq(layer + 1 == n_layers)]
            m.d.sync += scan_en.eq(1)
            m.next = "SCAN"

        # the scanner's start (which also arms the PEs) from registers only: the run's last
        # input is taken (only possible while IDLE: in_ready is low elsewhere), or the DESC
        # state (``in_desc``, a register set on the way into it)
        in_desc = Signal()
        m.d.comb += scanner.start.eq((in_take & ld_is_last) | in_desc)

        # the loader's next pixel of the input map (none: a vector, or the vector scanner)
        pix_more = (ld_pix != desc_rd[DESC_HW_LAST]) if p.conv else Const(0)
        pix_step = desc_rd[DESC_A_KX] if p.conv else Const(0)

        # ---- sequencer
        with m.FSM():
            with m.State("IDLE"):
                m.d.comb += in_idle_state.eq(1)
                m.d.sync += idle.eq(~loading & ~in_take)
                # inputs are taken once a model is loaded and layer 0's descriptor has settled
                # (no load write now or in the last three cycles); not after the run's last
                m.d.sync += in_ready.eq((n_layers != 0) & (settle == 0)
                                        & ~(self.load.valid & self.load.ready)
                                        & ~(in_take & ld_is_last))
                m.d.comb += self.busy.eq(loading | in_fifo.r_stream.valid | (rfifo.level != 0))
                # layer 0's descriptor is on the read ports (layer == 0 while idle)
                with m.If(in_take):
                    m.d.sync += loading.eq(1)
                    with m.If(~loading):
                        m.d.comb += clear.eq(1)
                    with m.If(pix_more):
                        m.d.sync += [ld_pix.eq(ld_pix + 1), ld_addr.eq(ld_addr + pix_step)]
                    with m.Else():       # the channel's last pixel: the next channel
                        m.d.sync += ld_pix.eq(0)
                        with m.If(ld_bank == P - 1):
                            m.d.sync += [ld_bank.eq(0), ld_cg.eq(ld_cg + 1),
                                         ld_addr.eq(ld_cg + 1)]
                        with m.Else():
                            m.d.sync += [ld_bank.eq(ld_bank + 1), ld_addr.eq(ld_cg)]
                    m.d.sync += ld_count.eq(ld_count + 1)
                    with m.If(ld_is_last):
                        # the last input: layer 0 starts at once (its row 0 is fetched in the
                        # next cycle, after this input's write)
                        m.d.sync += [ld_count.eq(0), ld_bank.eq(0), ld_addr.eq(0), ld_cg.eq(0),
                                     ld_pix.eq(0), buf.eq(0), loading.eq(0)]
                        start_layer()
            with m.State("DESC"):
                m.d.comb += [self.busy.eq(1), counting.eq(1)]
                m.d.sync += in_desc.eq(0)
                start_layer()
            with m.State("SCAN"):
                # scanning, then (PE by PE) draining and finalizing
                m.d.comb += [self.busy.eq(1), counting.eq(1)]
                m.d.sync += px_go.eq(0)
                with m.If(all_fin_done & ~px_go & ~scanner.last_pixel):
                    # the pixel is written: the next one
                    m.d.sync += px_go.eq(1)
                with m.If(all_fin_done & ~px_go & scanner.last_pixel):
                    m.d.sync += scan_en.eq(0)
                    with m.If(last):
                        m.d.sync += [ro_r.eq(0), ro_bank.eq(0), ro_addr.eq(0), reading.eq(1),
                                     ro_more.eq(out_f != 0)]
                        m.next = "READOUT"
                    with m.Else():
                        m.d.sync += [layer.eq(layer + 1), buf.eq(~buf)]
                        m.next = "DESC_WAIT"
            with m.State("DESC_WAIT"):
                # the descriptor read port needs one cycle for the new layer index
                m.d.comb += [self.busy.eq(1), counting.eq(1)]
                m.d.sync += in_desc.eq(1)
                m.next = "DESC"
            with m.State("READOUT"):
                m.d.comb += self.busy.eq(1)
                with m.If(~ro_more & ~rv1 & ro_adv):
                    m.d.sync += [layer.eq(0), rv2.eq(0), reading.eq(0)]
                    m.next = "IDLE_WAIT"
            with m.State("IDLE_WAIT"):
                # layer 0's descriptor reaches the read ports again
                m.d.comb += self.busy.eq(1)
                m.d.sync += idle.eq(1)
                m.next = "IDLE"
        return m
