"""Run the accelerator in Amaranth's own simulator (fast to start, for small cases and unit
tests). The cocotb + Verilator flow in :mod:`zeroskip.sim.accel_tb` is the one for large layers.

Stream helpers follow the ``amaranth.lib.stream`` rules: a source raises ``valid`` and keeps it
until the transfer; a sink may hold ``ready`` low. Random idle cycles on sources and random
back-pressure on sinks come from one seeded generator.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field

import numpy as np
from amaranth.sim import Simulator

from ..hw.accel import Accelerator
from ..spec import COUNTER_NAMES, PE_COUNTER_NAMES
from ..sw.image import encode_commands, load_commands
from ..sw.pack import PackedModel

__all__ = ["RunResult", "stream_put", "stream_get", "run_pysim"]


async def stream_put(ctx, stream, payload, rng=None, idle=0.0):
    """Send one transfer (after a random number of idle cycles)."""
    while rng is not None and rng.random() < idle:
        await ctx.tick()
    ctx.set(stream.valid, 1)
    target = stream.payload
    ctx.set(target.as_value() if hasattr(target, "as_value") else target, payload)
    await ctx.tick().until(stream.ready)
    ctx.set(stream.valid, 0)


async def stream_get(ctx, stream, rng=None, backpressure=0.0):
    """Receive one transfer (holding ``ready`` low for random cycles)."""
    while rng is not None and rng.random() < backpressure:
        ctx.set(stream.ready, 0)
        await ctx.tick()
    ctx.set(stream.ready, 1)
    (payload,) = await ctx.tick().sample(stream.payload).until(stream.valid)
    ctx.set(stream.ready, 0)
    return payload


@dataclass
class RunResult:
    outputs: list[list[int]]
    counters: list[dict] = field(default_factory=list)


def run_pysim(pm: PackedModel, inputs, *, skip_zero_acts: bool = True, idle: float = 0.0,
              backpressure: float = 0.0, seed: int = 0, vcd: str | None = None,
              dut: Accelerator | None = None, max_cycles: int | None = None) -> RunResult:
    """Load ``pm``, run every input vector (uint8 codes), return outputs and counters.

    With ``max_cycles`` the simulation stops after that many clock cycles even if the bench has
    not finished (the result then holds only the input vectors that completed): for tests that
    feed the hardware words it may misread."""
    dut = dut or Accelerator(pm.params)
    rng = random.Random(seed)
    words = encode_commands(pm.params, load_commands(pm, skip_zero_acts))
    out_n = pm.layers[-1].q.out_features
    result = RunResult([])

    async def bench(ctx):
        for w in words:
            await stream_put(ctx, dut.load, w, rng, idle)
        for vec in inputs:
            outs = []

            # inputs first, then results (the accelerator starts after the last input)
            for a in vec:
                await stream_put(ctx, dut.act_in, int(a), rng, idle)
            for _ in range(out_n):
                outs.append(await stream_get(ctx, dut.result, rng, backpressure))
            result.outputs.append([int(v) for v in pm.from_hw_order(np.array(outs))])
            while ctx.get(dut.busy):
                await ctx.tick()
            c = {k: ctx.get(getattr(dut, k)) for k in COUNTER_NAMES}
            c.update({k: [ctx.get(x) for x in getattr(dut, k)] for k in PE_COUNTER_NAMES})
            result.counters.append(c)

    sim = Simulator(dut)
    sim.add_clock(1e-8)
    sim.add_testbench(bench)
    def run():
        if max_cycles is None:
            sim.run()
        else:
            sim.run_until(max_cycles * 1e-8)

    if vcd:
        with sim.write_vcd(vcd):
            run()
    else:
        run()
    return result
