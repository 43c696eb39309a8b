"""The activation scanner: a receptive-field address generator in front of the zero skipper.

An activation buffer holds a map ``(C, H, W)`` in ``pes`` banks: channel ``c`` in bank
``c % pes`` at address ``(y * W + x) * G + c // pes`` (``G = ceil(C / pes)``; a vector is the map
``(C, 1, 1)``, so activation ``j`` is in bank ``j % pes`` at address ``j // pes``). For each
output pixel the scanner walks the kernel positions ``(ky, kx)`` of its receptive field,
skips those outside the map (padding: never stored, never emitted, one cycle each), and at
every position inside fetches the ``G`` channel groups, one *row* of ``pes`` channels per fetch
(every bank at the same address). It emits the nonzero ones as ``(pointer address, value)``,
column ``t * C + c`` for kernel position ``t = ky * KW + kx`` (the load image stores the column
pointers in this order, ``sw/image.py``). A fully-connected layer is the case of one pixel whose
kernel is the whole map.

Pixels are visited in pooling-window order: for each pooled output ``(py, px)``, the
``k x k`` conv pixels of its window (``k = 1`` without pooling); ``next`` moves to the next
pixel. Every coordinate and address is updated by adding a per-layer step from the descriptor
(the load image computes the products): no multiplier in the address path.

Pipeline::

    G  generator     the current position (in the map or not) and channel group
    A  bank read     the row at ``rd_addr`` is fetched (``rd_en``); it waits on the read ports
    R  read register the row's values, registered (no logic after the memories' outputs)
    B  row register  the row's values and the mask of positions still to emit (nonzero and a
                     channel of the map, computed as the row moves from R to B)
    pick             B's lowest pending position goes into the broadcast register each cycle
    broadcast        ``col`` (``ptr_base + column``, ``a``) until every PE has taken it

A row costs ``max(1, nonzeros)`` cycles in B, a position outside the map one cycle in G. A new
fetch is issued as the previous row leaves A, and a row moves from A to R as the one in R moves
to B, so A and R never hold B up.

Timing with ``col.ready`` held high, counting from the cycle after ``start`` or ``next``
(``c0``, ``enable`` high): G processes one step a cycle (a fetch when A is free, or a skipped
position); a row fetched at ``f`` is in R at ``f + 2`` at the earliest and in B a cycle after it
leaves R; the ``k``-th pending position of a row that is in B from cycle ``t`` is emitted at
``t + k`` and is on ``col`` at ``t + k + 1``. ``skipped`` shows a row's zero count in the first
cycle the row is in B.
"""

from __future__ import annotations

from amaranth.hdl import Array, Module, Signal, signed, unsigned
from amaranth.lib import data, stream, wiring
from amaranth.lib.wiring import In, Out

from ..spec import HwParams
from .pe import bank_depth, col_layout

__all__ = ["Scanner", "geometry_layout"]


def geometry_layout(params: HwParams) -> data.StructLayout:
    """The descriptor fields the scanner reads (see ``docs/hardware.md``): the kernel and map
    bounds, and every address and coordinate step (products computed by the load image).
    Addresses are modulo ``2**bank_bits`` (a position outside the map may have a
    "negative" one; it is never read); coordinates are signed."""
    abits = params.act_addr_bits
    bbits = max(1, (bank_depth(params) - 1).bit_length())
    cbits = abits + 2
    if not params.conv:     # the vector scanner (``HwParams.conv`` 0): C and G - 1 only
        return data.StructLayout({"ch": unsigned(abits), "g_last": unsigned(abits)})
    return data.StructLayout({
        "ch": unsigned(abits),          # C: channels of the input map
        "g_last": unsigned(abits),      # G - 1: channel groups per pixel
        "kw_last": unsigned(abits),     # KW - 1, KH - 1
        "kh_last": unsigned(abits),
        "map_h": unsigned(abits),       # H, W of the input map
        "map_w": unsigned(abits),
        "a_kx": unsigned(bbits),        # address steps: G (kx), W*G (ky),
        "a_ky": unsigned(bbits),
        "a_wx": unsigned(bbits),        # s*G, s*W*G (next conv pixel of a pooling window),
        "a_wy": unsigned(bbits),
        "a_px": unsigned(bbits),        # sp*s*G, sp*s*W*G (next pooled pixel),
        "a_py": unsigned(bbits),
        "a_org": unsigned(bbits),       # (-pad*W - pad)*G: pixel (0, 0)'s kernel origin
        "c_stride": signed(cbits),       # coordinate steps: s, sp*s; origin -pad
        "c_pstride": signed(cbits),
        "c_org": signed(cbits),
        "win_last": unsigned(abits),    # k - 1 (0 without pooling)
        "pw_last": unsigned(abits),     # PW - 1, PH - 1: pooled output map
        "ph_last": unsigned(abits),
        "g_out": unsigned(bbits),       # G of the output map: address step per pooled pixel
    })


class Scanner(wiring.Component):
    """Walks one layer's receptive fields, pixel by pixel, and broadcasts the nonzero
    activations.

    Parameters
    ----------
    params : :class:`~zeroskip.spec.HwParams`

    Members
    -------
    start : ``In(1)``
        Start the layer at its first pixel (takes effect at the next cycle; overrides
        ``enable``), also in the middle of a scan: the rows in A, R and B are dropped (a value
        already in the broadcast register stays there until taken). ``geom`` is latched in the
        cycle of ``start``.
    next : ``In(1)``
        Move to the next pixel of the layer and scan it (like ``start``, but keeps the layer).
        Only when ``done``.
    enable : ``In(1)``
        Scan (generate, fetch rows and emit into the broadcast register). A value already in the
        broadcast register is offered on ``col`` whatever ``enable`` is.
    geom : ``In(geometry_layout(params))``
        The layer's geometry, read in the cycle of ``start``.
    ptr_base : ``In(params.ptr_addr_bits)``
        Address of the layer's first column pointer; column ``a`` is broadcast as
        ``ptr_base + a``. May change in the cycle of ``start``, then holds.
    skip_zero : ``In(1)``
        Skip zero activations (off: broadcast every column of the map's positions, the dense
        baseline; positions outside the map are never emitted).
    rd_addr, rd_en : ``Out``
        Read port of the activation banks (one address for all ``pes`` banks); the data are
        expected on ``rd_data`` the cycle after ``rd_en`` and held while ``rd_en`` is low
        (``amaranth.lib.memory`` read ports).
    rd_data : ``In(8).array(pes)``
        The banks' read data, bank ``i`` at index ``i``.
    col : ``Out(stream.Signature(col_layout(params)))``
        The broadcast. ``col.ready`` says every PE can take a column (the accelerator's
        registered AND of the PEs' ``room``), and ``col.valid`` is ``pending & col.ready``, so
        unlike a plain stream, **valid depends on ready**: the broadcast reaches every PE in
        the same cycle or none. That is fine here because ``col.ready`` is a register (no
        combinational loop), and each PE's own ``col.ready`` is then high.
    pending : ``Out(1)``
        The broadcast register holds a value.
    done : ``Out(1)``
        The current pixel is scanned: nothing left to generate, fetch or emit, and the broadcast
        register is empty.
    last_pixel : ``Out(1)``
        The current pixel is the layer's last (a register).
    pool_first : ``Out(1)``
        The current pixel is the first of its pooling window (a register; always 1 without
        pooling).
    out_base : ``Out(bank_bits)``
        Output address of the current pixel's pooled output: ``(py * PW + px) * G_out``.
    skipped : ``Out(range(pes + 1))``
        Zero activations of the row that entered B in the previous cycle (0 with ``skip_zero``
        off); registered, so summing it over a scan counts the skipped ones.
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
            "next": In(1),
            "enable": In(1),
            "geom": In(geometry_layout(params)),
            "ptr_base": In(params.ptr_addr_bits),
            "skip_zero": In(1),
            "rd_addr": Out(self.bank_bits),
            "rd_en": Out(1),
            "rd_data": In(8).array(P),
            "col": Out(stream.Signature(col_layout(params))),
            "pending": Out(1),
            "done": Out(1),
            "last_pixel": Out(1),
            "pool_first": Out(1),
            "out_base": Out(self.bank_bits),
            "skipped": Out(range(P + 1)),
        })

    def elaborate(self, platform):
        p = self.params
        P = p.pes
        m = Module()
        bbits = self.bank_bits
        abits = p.act_addr_bits
        cbits = abits + 2
        jbits = p.ptr_addr_bits + 1
        ptr_base, skip_zero = self.ptr_base, self.skip_zero

        # ---- the layer's geometry, latched at start
        g = Signal(geometry_layout(p))
        with m.If(self.start):
            m.d.sync += g.eq(self.geom)

        # ---- pixel state: pooled pixel (py, px), its window's pixel (wy, wx); coordinate and
        # address origins of the pooled window (XP, YP, AP), of its row px = 0 (APR), of the
        # conv pixel (XW, YW, AW) and of its window row wx = 0 (AWR)
        py, px, wy, wx = (Signal(abits, name=n) for n in ("py", "px", "wy", "wx"))
        xp, yp, xw, yw = (Signal(signed(cbits), name=n) for n in ("xp", "yp", "xw", "yw"))
        ap, apr, aw, awr = (Signal(bbits, name=n) for n in ("ap", "apr", "aw", "awr"))
        out_base = Signal(bbits)
        last_pixel = Signal()
        pool_first = Signal()
        if p.conv:
            m.d.comb += [self.out_base.eq(out_base), self.last_pixel.eq(last_pixel),
                         self.pool_first.eq(pool_first)]
        else:       # the vector scanner: one pixel, no pooling, output at address 0
            m.d.comb += [self.out_base.eq(0), self.last_pixel.eq(1), self.pool_first.eq(1)]

        # ---- generator state: kernel position (ky, kx), coordinates (Y, X), the address of
        # its group 0 (A) and of its row's kx = 0 (AR); channel group cg (cbase = cg * P); the
        # column of the row's lane 0 (jbase = t * C + cbase, jt = t * C)
        ky, kx, cg = Signal(abits), Signal(abits), Signal(abits)
        ycur, xcur = Signal(signed(cbits)), Signal(signed(cbits))
        acur, arow = Signal(bbits), Signal(bbits)
        sc_addr = Signal(bbits)
        cbase = Signal(abits + 7)
        jt = Signal(jbits)
        jbase = Signal(jbits)
        sc_more = Signal()                # a position is left to process in this pixel

        a_valid = Signal()                 # stage A: a row on the read ports
        a_jbase = Signal(jbits)
        a_cbase = Signal(abits + 7)
        r_valid = Signal()                 # stage R: the read register
        r_jbase = Signal(jbits)
        r_cbase = Signal(abits + 7)
        r_data = [Signal(8, name=f"reg_data{i}") for i in range(P)]
        b_valid = Signal()                 # stage B: the row register
        b_jbase = Signal(jbits)
        b_data = [Signal(8, name=f"row_data{i}") for i in range(P)]
        b_mask = Signal(P)
        # registered facts about b_mask (set with it), so that no compare over the mask sits in
        # the stall chain B -> R -> A -> generator: any position pending, exactly one
        b_nz, b_one = Signal(), Signal()

        def onehot(v):
            return (v != 0) & ((v & (v - 1)) == 0)
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
        in_map = Signal()
        # registered decisions of the generator, so that no compare sits in its control path:
        # X and Y inside the map (each set with the coordinate, from the value it takes), and
        # cg == G - 1
        x_ok, y_ok, cg_last = Signal(), Signal(), Signal()

        def in_w(x, w):
            return (x >= 0) & (x < w)
        skip_pos = Signal()
        step = Signal()                    # the generator finishes its current position
        m.d.comb += [scanning.eq(self.enable), all_ready.eq(self.col.ready)]
        lane_ok = [Signal(name=f"lane_ok{i}") for i in range(P)]
        for i in range(P):
            m.d.comb += lane_ok[i].eq(r_cbase + i < g.ch)
            m.d.comb += r_mask[i].eq(((r_data[i] != 0) | ~skip_zero) & lane_ok[i])
        m.d.comb += r_zeros.eq(sum(((r_data[i] == 0) & lane_ok[i]) for i in range(P)))
        for i in reversed(range(P)):
            with m.If(b_mask[i]):
                m.d.comb += [first.eq(i), first_bit.eq(1 << i)]
        m.d.comb += [
            in_map.eq((x_ok & y_ok) if p.conv else 1),
            out_free.eq(~sv | all_ready),
            emit.eq(scanning & b_valid & b_nz & out_free),
            # B takes a new row when empty, when its row has nothing (left) to emit, or when it
            # emits its last pending position now
            b_free.eq(~b_valid | ~b_nz | (emit & b_one)),
            r_move.eq(scanning & r_valid & b_free),
            a_move.eq(scanning & a_valid & (~r_valid | r_move)),
            fetch.eq(scanning & sc_more & in_map & (~a_valid | a_move)),
            skip_pos.eq(scanning & sc_more & ~in_map),
            step.eq(skip_pos | (fetch & cg_last)),
            scan_done.eq(~a_valid & ~r_valid & ~b_valid & ~sc_more),
        ]
        m.d.comb += [self.rd_addr.eq(sc_addr), self.rd_en.eq(fetch)]

        # the generator: groups, then kx, then ky
        with m.If(fetch & ~step):
            m.d.sync += [cg.eq(cg + 1), cbase.eq(cbase + P), sc_addr.eq(sc_addr + 1),
                         jbase.eq(jbase + P), cg_last.eq(cg + 1 == g.g_last)]
        with m.If(step):
            m.d.sync += cg_last.eq(g.g_last == 0)
        if not p.conv:
            with m.If(step):
                m.d.sync += sc_more.eq(0)      # the vector scanner: one kernel position
        else:
            with m.If(step):
                m.d.sync += [cg.eq(0), cbase.eq(0), jt.eq(jt + g.ch), jbase.eq(jt + g.ch)]
                with m.If(kx != g.kw_last):
                    m.d.sync += [kx.eq(kx + 1), xcur.eq(xcur + 1), acur.eq(acur + g.a_kx),
                                 sc_addr.eq(acur + g.a_kx), x_ok.eq(in_w(xcur + 1, g.map_w))]
                with m.Else():
                    m.d.sync += [kx.eq(0), xcur.eq(xw), x_ok.eq(in_w(xw, g.map_w))]
                    with m.If(ky != g.kh_last):
                        m.d.sync += [ky.eq(ky + 1), ycur.eq(ycur + 1), arow.eq(arow + g.a_ky),
                                     acur.eq(arow + g.a_ky), sc_addr.eq(arow + g.a_ky),
                                     y_ok.eq(in_w(ycur + 1, g.map_h))]
                    with m.Else():
                        m.d.sync += sc_more.eq(0)

        with m.If(fetch):
            m.d.sync += [a_valid.eq(1), a_jbase.eq(jbase), a_cbase.eq(cbase)]
        with m.Elif(a_move):
            m.d.sync += a_valid.eq(0)
        with m.If(a_move):
            m.d.sync += [r_valid.eq(1), r_jbase.eq(a_jbase), r_cbase.eq(a_cbase)]
            m.d.sync += [r_data[i].eq(self.rd_data[i]) for i in range(P)]
        with m.Elif(r_move):
            m.d.sync += r_valid.eq(0)
        with m.If(r_move):
            m.d.sync += [b_valid.eq(1), b_mask.eq(r_mask), b_jbase.eq(r_jbase),
                         b_nz.eq(r_mask != 0), b_one.eq(onehot(r_mask))]
            m.d.sync += [b_data[i].eq(r_data[i]) for i in range(P)]
        with m.Elif(b_free):
            m.d.sync += [b_valid.eq(0), b_mask.eq(0), b_nz.eq(0), b_one.eq(0)]
        with m.Elif(emit):
            rest = b_mask & ~first_bit
            m.d.sync += [b_mask.eq(rest), b_nz.eq(rest != 0), b_one.eq(onehot(rest))]
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

        def begin_pixel(x, y, a, geo):
            # the kernel walk of a pixel whose origin is (x, y), address a, in a map of
            # geometry ``geo`` (last, so it takes precedence over the generator's own updates)
            m.d.sync += [ky.eq(0), kx.eq(0), cg.eq(0), cbase.eq(0), jt.eq(0), jbase.eq(0),
                         xcur.eq(x), ycur.eq(y), acur.eq(a), arow.eq(a), sc_addr.eq(a),
                         sc_more.eq(1), a_valid.eq(0), r_valid.eq(0), b_valid.eq(0),
                         cg_last.eq(geo.g_last == 0)]
            if p.conv:
                m.d.sync += [x_ok.eq(in_w(x, geo.map_w)), y_ok.eq(in_w(y, geo.map_h))]

        def is_last(w, wl, x, xl, y, yl):
            return (w == wl) & (x == xl) & (y == yl)

        # next pixel of the pooling window order; every origin moves by an added step
        gw = self.geom
        if not p.conv:
            with m.If(self.start):
                begin_pixel(0, 0, 0, self.geom)
            return m
        # the next pixel's origins and counters (from registers only: ``start`` and ``next``
        # select among values that are ready, so no adder or compare follows them)
        nwx, nwy, npx, npy = (Signal(abits, name=f"n{n}") for n in ("wx", "wy", "px", "py"))
        nxw, nyw = Signal(signed(cbits)), Signal(signed(cbits))
        naw, nawr = Signal(bbits), Signal(bbits)
        nxp, nyp = Signal(signed(cbits)), Signal(signed(cbits))
        nap, napr = Signal(bbits), Signal(bbits)
        nout = Signal(bbits)
        m.d.comb += [nwx.eq(wx), nwy.eq(wy), npx.eq(px), npy.eq(py), nxp.eq(xp),
                     nyp.eq(yp), nap.eq(ap), napr.eq(apr), nout.eq(out_base)]
        with m.If(wx != g.win_last):
            m.d.comb += [nwx.eq(wx + 1), nxw.eq(xw + g.c_stride), nyw.eq(yw),
                         naw.eq(aw + g.a_wx), nawr.eq(awr)]
        with m.Elif(wy != g.win_last):
            m.d.comb += [nwx.eq(0), nwy.eq(wy + 1), nxw.eq(xp), nyw.eq(yw + g.c_stride),
                         naw.eq(awr + g.a_wy), nawr.eq(awr + g.a_wy)]
        with m.Else():
            # the next pooled pixel: its window's first conv pixel
            m.d.comb += [nwx.eq(0), nwy.eq(0), nout.eq(out_base + g.g_out)]
            with m.If(px != g.pw_last):
                m.d.comb += [npx.eq(px + 1), nxp.eq(xp + g.c_pstride),
                             nap.eq(ap + g.a_px)]
            with m.Else():
                m.d.comb += [npx.eq(0), npy.eq(py + 1), nxp.eq(g.c_org),
                             nyp.eq(yp + g.c_pstride), nap.eq(apr + g.a_py),
                             napr.eq(apr + g.a_py)]
            m.d.comb += [nxw.eq(nxp), nyw.eq(nyp), naw.eq(nap), nawr.eq(nap)]
        with m.If(self.start):
            m.d.sync += [py.eq(0), px.eq(0), wy.eq(0), wx.eq(0),
                         xp.eq(gw.c_org), yp.eq(gw.c_org), xw.eq(gw.c_org), yw.eq(gw.c_org),
                         ap.eq(gw.a_org), apr.eq(gw.a_org), aw.eq(gw.a_org), awr.eq(gw.a_org),
                         out_base.eq(0), pool_first.eq(1),
                         last_pixel.eq((gw.win_last == 0) & (gw.pw_last == 0)
                                       & (gw.ph_last == 0))]
            begin_pixel(gw.c_org, gw.c_org, gw.a_org, gw)
        with m.Elif(self.next):
            m.d.sync += [wx.eq(nwx), wy.eq(nwy), px.eq(npx), py.eq(npy), xw.eq(nxw),
                         yw.eq(nyw), aw.eq(naw), awr.eq(nawr), xp.eq(nxp), yp.eq(nyp),
                         ap.eq(nap), apr.eq(napr), out_base.eq(nout),
                         pool_first.eq((nwx == 0) & (nwy == 0)),
                         last_pixel.eq(is_last(nwx, g.win_last, nwy, g.win_last, npx, g.pw_last)
                                       & (npy == g.ph_last))]
            begin_pixel(nxw, nyw, naw, g)
        return m
