"""Unit tests of one PE (pointer fetch, entry issue, MAC with forwarding, and the finalization /
requantization pipeline) in the Amaranth simulator, against the integer reference."""

from __future__ import annotations

import random
from dataclasses import replace

import numpy as np
import pytest
from amaranth.sim import Simulator

from zeroskip.hw.pe import PE
from zeroskip.sim.cases import random_layer
from zeroskip.spec import MEM_BIAS, MEM_ENTRY, MEM_PTR, MEM_RQ, HwParams
from zeroskip.sw.image import load_commands
from zeroskip.sw.pack import PackedModel, pack_layer
from zeroskip.sw.ref import requantize, run_layer

pytestmark = pytest.mark.sim

PARAMS = HwParams(pes=1, index_bits=3, entry_depth=2048, ptr_depth=128, row_depth=64,
                  act_depth=64)


def run_pe(q, x, requant_mode: bool, seed: int, idle: float = 0.3, lanes: int = 1,
           read_mux: int = 0):  # read_mux: HwParams.mem_out_logic
    """Feed the nonzero activations of ``x`` to a PE holding layer ``q``; return its outputs
    (uint8 codes written to its bank when requantizing, else the int32 sums it keeps)."""
    pe = PE(replace(PARAMS, fin_lanes=lanes, mem_out_logic=read_mux), 0)
    pl = pack_layer(q, PARAMS)
    rng = random.Random(seed)
    # the PE's own writes of the accelerator's load image (sw/image.py)
    writes = [(c.mem, c.addr, c.data) for c in load_commands(PackedModel(PARAMS, 1.0, [pl]))
              if c.pe == 0 and c.mem in (MEM_PTR, MEM_ENTRY, MEM_BIAS, MEM_RQ)]
    out: dict[int, int] = {}

    async def bench(ctx):
        def collect():            # the lanes' writes of this cycle
            en = ctx.get(pe.out_en)
            for j in range(lanes):
                if en >> j & 1:
                    r = ctx.get(pe.out_row) + j
                    assert r not in out, f"row {r} written twice"
                    out[r] = ctx.get(pe.out_data[j])

        for mem, addr, data in writes:
            ctx.set(pe.ld_mem, mem)
            ctx.set(pe.ld_addr, addr)
            ctx.set(pe.ld_data, data)
            ctx.set(pe.ld_en, 1)
            await ctx.tick()
        ctx.set(pe.ld_en, 0)
        # arm the layer's finalization (held: the PE starts by itself once scan_done is high
        # and it has drained)
        ctx.set(pe.fin_out, q.out_features)
        ctx.set(pe.fin_row_base, 0)
        ctx.set(pe.fin_requant, int(requant_mode))
        ctx.set(pe.fin_last, int(not requant_mode))
        ctx.set(pe.fin_arm, 1)
        await ctx.tick()
        ctx.set(pe.fin_arm, 0)
        assert not ctx.get(pe.fin_done)
        for j in np.flatnonzero(x):
            while rng.random() < idle:
                ctx.set(pe.col.valid, 0)
                await ctx.tick()
            ctx.set(pe.col.valid, 1)
            ctx.set(pe.col.payload, {"ptr": int(j), "act": int(x[j])})
            await ctx.tick().until(pe.col.ready)
        ctx.set(pe.col.valid, 0)
        for _ in range(rng.randrange(3)):
            assert not ctx.get(pe.fin_done)     # armed: not done before scan_done
            await ctx.tick()
        ctx.set(pe.scan_done, 1)
        for _ in range(20000):
            collect()
            if ctx.get(pe.fin_done):
                break
            await ctx.tick()
        assert ctx.get(pe.fin_done) and ctx.get(pe.idle)
        for _ in range(2):          # the last rows are still in F4b/F4c
            await ctx.tick()
            collect()
        ctx.set(pe.scan_done, 0)
        if not requant_mode:      # the output layer's sums stay in the accumulators
            ctx.set(pe.ro_sel, 1)
            ctx.set(pe.ro_en, 1)
            # the read of address r is issued in one cycle; ro_data has it after the next
            for r in range(q.out_features + 1):
                ctx.set(pe.ro_addr, min(r, q.out_features - 1))
                await ctx.tick()
                if r > 0:
                    out[r - 1] = ctx.get(pe.ro_data)

    sim = Simulator(pe)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    return np.array([out[r] for r in range(q.out_features)])


@pytest.mark.parametrize("lanes,read_mux", [(1, 0), (2, 0), (4, 0), (1, 1), (2, 1)])
@pytest.mark.parametrize("seed", range(6))
def test_pe_matches_reference(seed, lanes, read_mux):
    rng = np.random.default_rng(seed)
    o, i = int(rng.integers(1, 40)), int(rng.integers(1, 60))
    density = float(rng.choice([1.0, 0.5, 0.1, 0.03]))
    requant_mode = bool(seed % 2)
    q = random_layer(rng, o, i, density, requant=requant_mode, extreme=seed in (2, 3))
    x = np.where(rng.random(i) < 0.6, rng.integers(1, 256, i), 0)
    got = run_pe(q, x, requant_mode, seed, lanes=lanes, read_mux=read_mux)
    np.testing.assert_array_equal(got, run_layer(q, x[None, :]).numpy()[0])


@pytest.mark.parametrize("lanes", [1, 2])
def test_requantizer_corner_cases(lanes):
    """Sums at the int32 edges, shifts 1..63, multipliers 1..65535, through the PE's pipeline."""
    rng = np.random.default_rng(9)
    o = 48
    q = random_layer(rng, o, 2, 0.0, requant=True)     # all-zero weights: output = requant(bias)
    q.bias = np.concatenate([[2**31 - 1, -2**31, 0, -1, 1, 255, 256, -256],
                             rng.integers(-2**31, 2**31, o - 8)]).astype(np.int32)
    q.shift = np.resize(np.array([1, 2, 7, 8, 9, 31, 47, 48, 49, 63], dtype=np.uint8), o)
    q.mult = np.resize(np.array([1, 2, 65535, 32768, 12345], dtype=np.uint16), o)
    got = run_pe(q, np.zeros(2, dtype=np.int64), True, seed=1, idle=0.0, lanes=lanes)
    import torch
    want = requantize(torch.as_tensor(q.bias.astype(np.int64)),
                      torch.as_tensor(q.mult.astype(np.int64)),
                      torch.as_tensor(q.shift.astype(np.int64))).numpy()
    np.testing.assert_array_equal(got, want)


@pytest.mark.parametrize("rows", [1, 2, 3, 4])
@pytest.mark.parametrize("lanes,mem_logic", [(1, 0), (1, 1), (2, 0)])
def test_pe_forwarding_every_distance(rows, lanes, mem_logic):
    """Dense columns of 1-4 rows with every activation nonzero: each entry's row was written
    by the entry 1, 2, 3 or 4 places ahead, so every forwarding path (and the memory read
    behind them) is taken, back to back; without idle cycles, then with random ones."""
    rng = np.random.default_rng(rows)
    q = random_layer(rng, rows, 40, 1.0, requant=False, extreme=True)
    x = rng.integers(1, 256, 40)
    want = run_layer(q, x[None, :]).numpy()[0]
    for idle in (0.0, 0.3):
        got = run_pe(q, x, False, seed=rows, idle=idle, lanes=lanes, read_mux=mem_logic)
        np.testing.assert_array_equal(got, want)
