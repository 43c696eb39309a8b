"""The accelerator's input port (Amaranth simulator): no input is accepted before a model is
loaded; after a load, inputs are taken and the run's results come back bit-exact."""

from __future__ import annotations

import numpy as np
import pytest
from amaranth.sim import Simulator

from zeroskip.hw.accel import Accelerator
from zeroskip.sim.cases import random_inputs, random_model
from zeroskip.sim.pysim import run_pysim
from zeroskip.spec import HwParams
from zeroskip.sw.pack import pack_model
from zeroskip.sw.ref import run_model

pytestmark = pytest.mark.sim

PARAMS = HwParams(pes=2, entry_depth=512, ptr_depth=64, row_depth=32, act_depth=32)


def test_no_input_before_a_model():
    dut = Accelerator(PARAMS)
    seen = []

    async def bench(ctx):
        ctx.set(dut.act_in.valid, 1)
        ctx.set(dut.act_in.payload, 7)
        for _ in range(20):
            await ctx.tick()
            seen.append((ctx.get(dut.act_in.ready), ctx.get(dut.busy)))
        ctx.set(dut.act_in.valid, 0)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    sim.run()
    assert seen and all(ready == 0 and busy == 0 for ready, busy in seen)


def test_inputs_after_a_load_run_bit_exact():
    rng = np.random.default_rng(3)
    pm = pack_model(random_model(rng, [20, 9, 4], 0.5), PARAMS)
    x = random_inputs(rng, 3, 20, 0.6)
    res = run_pysim(pm, x, idle=0.3, backpressure=0.3, seed=3)
    np.testing.assert_array_equal(res.outputs, run_model(pm, x).numpy())
