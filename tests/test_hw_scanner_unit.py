"""Unit tests of the activation scanner (``hw/scanner.py``) in the Amaranth simulator, against a
Python model: ``P`` real memory banks hold an activation vector (activation ``j`` in bank
``j % P`` at address ``j // P``, the rest of every bank filled with garbage, zero and nonzero,
that must never count as part of the layer) and feed the scanner's read port.

The model: the scanner emits ``(ptr_base + j, a_j)`` for every nonzero ``a_j`` with ``j < in_f``
(every ``j`` with skipping off), in column order; ``skipped`` sums to the zeros in range (0 with
skipping off); ``done`` rises after the last emit and stays high. With ``col.ready`` always high
the timing is exact (see the module docstring of ``hw/scanner.py``): counting from the first
cycle ``enable`` is high, row 0 is in the row register from cycle 3, row ``r + 1`` follows row
``r`` after ``max(1, n_r)`` cycles (``n_r`` its positions to emit), and its ``k``-th emit is on
``col`` at ``+ k + 1``."""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Module, unsigned
from amaranth.lib.memory import Memory
from amaranth.sim import Simulator

from zeroskip.hw.pe import bank_depth
from zeroskip.hw.scanner import Scanner
from zeroskip.spec import HwParams
from zeroskip.sw.geometry import Geometry
from zeroskip.sw.image import geometry_fields

pytestmark = pytest.mark.sim

ACT_DEPTH = 48
PTR_DEPTH = 256
TAIL = 4              # cycles checked after ``done`` rises


def make_params(pes: int) -> HwParams:
    return HwParams(pes=pes, act_depth=ACT_DEPTH, ptr_depth=PTR_DEPTH, entry_depth=64,
                    row_depth=16)


class Harness(Elaboratable):
    """The scanner on ``P`` activation banks, as in the accelerator (one buffer)."""

    def __init__(self, params: HwParams):
        self.params = params
        self.scanner = Scanner(params)
        self.banks = [Memory(shape=unsigned(8), depth=bank_depth(params), init=[])
                      for _ in range(params.pes)]

    def elaborate(self, platform):
        m = Module()
        m.submodules.scanner = sc = self.scanner
        for i, bank in enumerate(self.banks):
            m.submodules[f"bank{i}"] = bank
            rp = bank.read_port()
            m.d.comb += [rp.addr.eq(sc.rd_addr), rp.en.eq(sc.rd_en), sc.rd_data[i].eq(rp.data)]
        return m


def model(acts, pes: int, ptr_base: int, skip: bool):
    """Expected behaviour for one layer with ``col.ready`` always high: the emitted
    ``(cycle, ptr, act)``, the nonzero ``skipped`` values by cycle, and the cycle ``done``
    rises (cycles counted from the first one with ``enable`` high)."""
    acts = [int(a) for a in acts]
    in_f = len(acts)
    emits, skipped = [], {}
    t = 3                                   # row 0 reaches the row register
    for base in range(0, in_f, pes):
        row = range(base, min(base + pes, in_f))
        pending = [j for j in row if acts[j] != 0 or not skip]
        zeros = sum(acts[j] == 0 for j in row)
        if skip and zeros:
            skipped[t] = zeros
        for k, j in enumerate(pending):
            emits.append((t + k + 1, ptr_base + j, acts[j]))
        t += max(1, len(pending))
    done = max([t] + [e[0] + 1 for e in emits])
    return emits, skipped, done


def run_layers(pes: int, layers, *, backpressure: float = 0.0, seed: int = 0,
               gap: int = 0, abort: dict[int, int] | None = None):
    """Scan ``layers`` (a list of ``(acts, ptr_base, skip)``) one after the other, like the
    accelerator: ``start`` for one cycle, then ``enable`` until ``done`` (+ ``TAIL`` cycles),
    or, for layer ``i`` in ``abort``, only for ``abort[i]`` cycles (the next ``start`` comes
    in the middle of the scan). Returns per layer a record of what the scanner did, cycle by
    cycle from ``enable``."""
    abort = abort or {}
    params = make_params(pes)
    dut = Harness(params)
    sc = dut.scanner
    rng = random.Random(seed)
    depth = bank_depth(params)
    records = []

    async def bench(ctx):
        for i, (acts, ptr_base, skip) in enumerate(layers):
            # garbage (zero and nonzero) everywhere, then the layer's activations
            for bank in dut.banks:
                for a in range(depth):
                    ctx.set(bank.data[a], rng.randrange(1, 256) if rng.random() < 0.7 else 0)
            for j, a in enumerate(acts):
                ctx.set(dut.banks[j % pes].data[j // pes], int(a))
            ctx.set(sc.enable, 0)
            for _ in range(gap):
                await ctx.tick()
            ctx.set(sc.geom, geometry_fields(Geometry.fc(len(acts)), 1, pes))
            ctx.set(sc.ptr_base, ptr_base)
            ctx.set(sc.skip_zero, int(skip))
            ctx.set(sc.start, 1)
            await ctx.tick()
            ctx.set(sc.start, 0)
            ctx.set(sc.enable, 1)
            rec = {"emits": [], "skipped": {}, "done": [], "stalls": 0}
            held = None           # the broadcast register's content while it waits
            limit = 4 * len(acts) + 20
            t = 0
            while True:
                ready = int(rng.random() >= backpressure)
                rec["stalls"] += 1 - ready
                ctx.set(sc.col.ready, ready)
                valid, pending, done, skipped = (ctx.get(sc.col.valid), ctx.get(sc.pending),
                                                 ctx.get(sc.done), ctx.get(sc.skipped))
                payload = (ctx.get(sc.col.payload.ptr), ctx.get(sc.col.payload.act))
                assert valid == (pending & ready), f"cycle {t}: valid must be pending & ready"
                if held is not None:     # a waiting value is neither dropped nor changed
                    assert pending and payload == held, f"cycle {t}: broadcast lost or changed"
                held = payload if pending and not ready else None
                if valid:
                    rec["emits"].append((t, *payload))
                if skipped:
                    rec["skipped"][t] = skipped
                if done:
                    rec["done"].append(t)
                if len(rec["done"]) > TAIL or t + 1 == abort.get(i):
                    break
                assert t < limit + rec["stalls"], "the scanner never finished"
                await ctx.tick()
                t += 1
            records.append(rec)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return records


def check_layer(rec, acts, pes: int, ptr_base: int, skip: bool, exact: bool):
    emits, skipped, done = model(acts, pes, ptr_base, skip)
    # the sequence: exactly the (pointer, value) of the nonzero (all, without skipping)
    # activations in range, in column order; nothing lost or duplicated
    assert [e[1:] for e in rec["emits"]] == [e[1:] for e in emits]
    zeros = sum(int(a) == 0 for a in acts)
    assert sum(rec["skipped"].values()) == (zeros if skip else 0)
    # done rises only after the last emit, then stays high
    first_done = rec["done"][0]
    assert rec["done"] == list(range(first_done, first_done + TAIL + 1))
    if rec["emits"]:
        assert first_done > rec["emits"][-1][0]
    if exact:
        assert [e[0] for e in rec["emits"]] == [e[0] for e in emits], "emit cycles"
        assert rec["skipped"] == skipped, "skipped counts and their cycles"
        assert first_done == done, "done cycle"


def vector(kind: str, n: int, rng: np.random.Generator, pes: int) -> np.ndarray:
    if kind == "random":
        return np.where(rng.random(n) < 0.5, rng.integers(1, 256, n), 0)
    if kind == "zeros":
        return np.zeros(n, dtype=np.int64)
    if kind == "dense":
        return rng.integers(1, 256, n)
    if kind == "zero_rows":       # whole rows of zeros in the middle (and at the end)
        x = rng.integers(1, 256, n)
        x[pes:4 * pes] = 0
        x[n - (n % pes or pes):] = 0
        return x
    if kind == "edges":           # 255 and 1, isolated nonzeros at the row boundaries
        x = np.zeros(n, dtype=np.int64)
        x[::pes] = 255
        x[pes - 1::pes] = 1
        return x
    raise ValueError(kind)


SHAPES = [(1, 1), (1, 20), (3, 1), (3, 3), (3, 23), (8, 1), (8, 8), (8, 45), (8, ACT_DEPTH)]
KINDS = ["random", "zeros", "dense", "zero_rows", "edges"]


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "dense"])
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("pes,in_f", SHAPES)
def test_scanner_sequence_and_timing(pes, in_f, kind, skip):
    """``col.ready`` always high: the exact sequence, emit cycles, skipped counts and done."""
    rng = np.random.default_rng([pes, in_f, KINDS.index(kind)])
    acts = vector(kind, in_f, rng, pes)
    ptr_base = int(rng.integers(0, PTR_DEPTH - in_f))
    (rec,) = run_layers(pes, [(acts, ptr_base, skip)], seed=in_f)
    check_layer(rec, acts, pes, ptr_base, skip, exact=True)


@pytest.mark.parametrize("seed", range(4))
@pytest.mark.parametrize("pes", [1, 3, 8])
def test_scanner_under_backpressure(pes, seed):
    """Random back-pressure on ``col.ready``: the same sequence, nothing lost or duplicated,
    and a waiting value is held unchanged."""
    rng = np.random.default_rng([pes, seed, 7])
    layers = []
    for kind in ["random", "zero_rows", "dense", "zeros", "edges"]:
        n = int(rng.integers(1, ACT_DEPTH + 1))
        layers.append((vector(kind, n, rng, pes), int(rng.integers(0, PTR_DEPTH - n)),
                       bool(rng.random() < 0.75)))
    recs = run_layers(pes, layers, backpressure=float(rng.choice([0.2, 0.5, 0.8])),
                      seed=seed)
    for rec, (acts, ptr_base, skip) in zip(recs, layers):
        assert rec["stalls"] > 0
        check_layer(rec, acts, pes, ptr_base, skip, exact=False)


@pytest.mark.parametrize("gap", [0, 3])
@pytest.mark.parametrize("pes", [1, 3, 8])
def test_scanner_restarts_for_each_layer(pes, gap):
    """``start`` after ``done`` (as the accelerator's DESC state does, right away or after
    idle cycles) scans the next layer from column 0 with its own ``in_f``/``ptr_base``/skip
    mode, with exact timing; a longer layer first leaves nothing behind for a shorter one."""
    rng = np.random.default_rng([pes, gap, 3])
    layers = [(vector("random", 41, rng, pes), 0, True),
              (vector("random", 10, rng, pes), 42, True),
              (vector("zero_rows", 29, rng, pes), 53, False),
              (vector("edges", 1, rng, pes), 83, True),
              (vector("dense", 17, rng, pes), 85, True)]
    recs = run_layers(pes, layers, seed=gap, gap=gap)
    assert len(recs) == len(layers)
    for rec, (acts, ptr_base, skip) in zip(recs, layers):
        check_layer(rec, acts, pes, ptr_base, skip, exact=True)


@pytest.mark.parametrize("pes", [1, 3, 8])
def test_scanner_restarts_in_the_middle_of_a_scan(pes):
    """``start`` while a layer is still being scanned (rows in A, R and B, a value in the
    broadcast register) empties the row pipeline: the next layer's scan is exact, as from
    reset."""
    rng = np.random.default_rng([pes, 11])
    layers, abort = [], {}
    for i in range(6):
        layers.append((vector("dense", 40, rng, pes), 0, True))
        abort[len(layers) - 1] = 4 + i
        layers.append((vector("random", 23, rng, pes), 60 + i, bool(i % 2)))
    recs = run_layers(pes, layers, seed=pes, abort=abort)
    for i, (rec, (acts, ptr_base, skip)) in enumerate(zip(recs, layers)):
        if i in abort:
            assert len(rec["emits"]) == abort[i] - 4 >= 0 and not rec["done"]
        else:
            check_layer(rec, acts, pes, ptr_base, skip, exact=True)


def test_model_timing_rule():
    """The model itself: a row costs max(1, nonzeros) cycles."""
    emits, skipped, done = model([0, 0, 0, 5, 0, 7, 0, 0, 0, 0, 0, 9], 3, 10, True)
    assert emits == [(5, 13, 5), (6, 15, 7), (8, 21, 9)]
    assert skipped == {3: 3, 4: 1, 6: 3, 7: 2}
    assert done == 9


# ---------------------------------------------------------------- convolutions (pixel walk)

def conv_model(x: np.ndarray, geom: Geometry, ptr_base: int, skip: bool):
    """Per conv pixel, in pooling-window order: the ``(pointer, value)`` sequence the scanner
    must emit (kernel positions ky, kx inside the map, then channels in order, column
    ``(ky * KW + kx) * C + c``), whether it is the first of its window, its pooled output
    index."""
    c, h, w = geom.in_shape
    kh, kw = geom.kernel
    k, sp = geom.pool or (1, 1)
    ph, pw = geom.out_hw
    out = []
    for py in range(ph):
        for px in range(pw):
            for wy in range(k):
                for wx in range(k):
                    oy, ox = py * sp + wy, px * sp + wx
                    seq = []
                    for ky in range(kh):
                        for kx in range(kw):
                            iy = oy * geom.stride - geom.padding + ky
                            ix = ox * geom.stride - geom.padding + kx
                            if 0 <= iy < h and 0 <= ix < w:
                                for ch in range(c):
                                    v = int(x[ch, iy, ix])
                                    if v or not skip:
                                        seq.append((ptr_base + (ky * kw + kx) * c + ch, v))
                    out.append((seq, wy == 0 and wx == 0, py * pw + px))
    return out


def run_conv(pes: int, x: np.ndarray, geom: Geometry, out_c: int, ptr_base: int, skip: bool,
             backpressure: float, seed: int):
    """Scan every pixel of a conv layer (``start``, then ``next`` after each ``done``)."""
    params = HwParams(pes=pes, act_depth=1024, ptr_depth=1024, entry_depth=64,
                      row_depth=16)
    dut = Harness(params)
    sc = dut.scanner
    rng = random.Random(seed)
    depth = bank_depth(params)
    c, h, w = geom.in_shape
    G = -(-c // pes)
    recs = []
    gout = -(-out_c // pes)

    async def bench(ctx):
        for bank in dut.banks:
            for a in range(depth):
                ctx.set(bank.data[a], rng.randrange(1, 256) if rng.random() < 0.7 else 0)
        for ch in range(c):
            for y in range(h):
                for xx in range(w):
                    ctx.set(dut.banks[ch % pes].data[(y * w + xx) * G + ch // pes],
                            int(x[ch, y, xx]))
        ctx.set(sc.geom, geometry_fields(geom, out_c, pes))
        ctx.set(sc.ptr_base, ptr_base)
        ctx.set(sc.skip_zero, int(skip))
        ctx.set(sc.start, 1)
        await ctx.tick()
        ctx.set(sc.start, 0)
        ctx.set(sc.enable, 1)
        n_pix = geom.out_hw[0] * geom.out_hw[1] * (geom.pool or (1, 1))[0] ** 2
        for _ in range(n_pix):
            seq = []
            first, base, last = (ctx.get(sc.pool_first), ctx.get(sc.out_base),
                                 ctx.get(sc.last_pixel))
            for _t in range(20000):
                ready = int(rng.random() >= backpressure)
                ctx.set(sc.col.ready, ready)
                if ctx.get(sc.col.valid):
                    seq.append((ctx.get(sc.col.payload.ptr), ctx.get(sc.col.payload.act)))
                if ctx.get(sc.done):
                    break
                await ctx.tick()
            else:
                raise AssertionError("the pixel's scan never finished")
            recs.append((seq, bool(first), base // gout, bool(last)))
            ctx.set(sc.next, 1)
            await ctx.tick()
            ctx.set(sc.next, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return recs


CONV_CASES = [
    # (pes, (C, H, W), kernel, stride, padding, pool, out channels)
    (1, (1, 5, 5), (3, 3), 1, 1, None, 1),
    (3, (5, 6, 7), (3, 2), 2, 1, (2, 2), 4),
    (3, (4, 7, 6), (3, 3), 1, 1, (3, 2), 7),        # overlapping pooling windows
    (8, (20, 6, 6), (5, 5), 1, 2, (2, 2), 9),       # C not a multiple of P, G = 3
    (8, (3, 4, 4), (4, 4), 1, 0, None, 8),          # an FC layer on a map (one pixel)
    (4, (2, 9, 5), (1, 1), 2, 0, None, 3),
    (8, (8, 1, 1), (1, 1), 1, 0, None, 8),          # a vector
]


@pytest.mark.parametrize("skip", [True, False], ids=["skip", "dense"])
@pytest.mark.parametrize("case", range(len(CONV_CASES)))
def test_conv_pixel_walk(case, skip):
    """Every conv pixel's exact emit sequence (padding positions never emitted, channels past C
    masked, garbage in the banks never read), pooling-window order, first-of-window flags,
    output addresses and the last-pixel flag, under random back-pressure."""
    pes, shape, kernel, stride, pad, pool, out_c = CONV_CASES[case]
    geom = Geometry("conv", shape, kernel, stride, pad, pool)
    rng = np.random.default_rng(case)
    x = np.where(rng.random(shape) < 0.5, rng.integers(1, 256, shape), 0)
    x[0, 0, :] = 255          # borders next to the padding
    x[-1, -1, :] = 1
    exp = conv_model(x, geom, 7, skip)
    recs = run_conv(pes, x, geom, out_c, 7, skip, 0.3, case)
    assert len(recs) == len(exp)
    for i, ((seq, first, out, last), (eseq, efirst, eout)) in enumerate(zip(recs, exp)):
        assert seq == eseq, f"pixel {i}: emit sequence"
        assert (first, out) == (efirst, eout), f"pixel {i}: window flag / output address"
        assert last == (i == len(exp) - 1), f"pixel {i}: last-pixel flag"
