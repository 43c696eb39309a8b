"""cocotb testbench of the :class:`~zeroskip.hw.accel.Accelerator` (Verilator).

It runs a *job* written by :mod:`zeroskip.sim.verilated` (JSON named by ``ZEROSKIP_JOB``): a list
of cases, each a load image, input vectors, the reference outputs (or none, for a plain run) and
the probabilities of idle cycles on the inputs and back-pressure on the results. Every output
element is compared with the reference; the counters of every run and the outputs are written
to the job's result file, and the test fails listing the first mismatches.
"""

from __future__ import annotations

import json
import os
import time

import cocotb
from cocotb.clock import Clock
from cocotb.triggers import ClockCycles, ReadOnly, RisingEdge, Timer

from zeroskip.sim.streams import StreamSink, StreamSource
from zeroskip.spec import COUNTER_NAMES, PE_COUNTER_NAMES

CLOCK_NS = 10        # the clock period (ns)


def _read_counters(dut, pes: int) -> dict:
    c = {k: int(getattr(dut, k).value) for k in COUNTER_NAMES}
    c.update({k: [int(getattr(dut, f"{k}__{i}").value) for i in range(pes)]
              for k in PE_COUNTER_NAMES})
    return c


async def _wait_result(dut, max_cycles: int, poll: int = 16, max_poll: int = 512) -> None:
    """Wait (cheaply) until the first result is offered: the first check after ``poll``
    cycles, each later one after twice as many, up to ``max_poll``. A wait of ``n`` cycles is
    one timer of ``n - 1/2`` clock periods and one rising edge (three Python wake-ups, not one
    per cycle as with ``ClockCycles``), so a long convolution costs little Python time. Only
    the latency of the read-out changes, not the counters (the read-out is not counted), and
    the stream rule keeps the offered result valid until it is taken."""
    waited = 0
    while True:
        await ReadOnly()
        if dut.result__valid.value:
            break
        if waited > max_cycles:
            raise AssertionError(f"no result after {max_cycles} cycles")
        # from just after a rising edge to half a period before the poll-th next one
        await Timer(poll * CLOCK_NS - CLOCK_NS // 2, unit="ns")
        await RisingEdge(dut.clk)
        waited += poll
        poll = min(2 * poll, max_poll)
    await RisingEdge(dut.clk)


async def _wait_idle(dut, max_cycles: int) -> None:
    for _ in range(max_cycles):
        await ReadOnly()
        if not dut.busy.value:
            return
        await RisingEdge(dut.clk)
    raise AssertionError(f"still busy after {max_cycles} cycles")


class _Progress:
    """Inputs done so far, written (at most every 0.2 s) to the job's progress file if any."""

    def __init__(self, path: str | None):
        self.path, self.done, self.last = path, 0, 0.0

    def step(self) -> None:
        self.done += 1
        if time.monotonic() - self.last >= 0.2:
            self.flush()

    def flush(self) -> None:
        if self.path:
            self.last = time.monotonic()
            tmp = self.path + ".tmp"
            with open(tmp, "w") as f:
                f.write(str(self.done))
            os.replace(tmp, self.path)


@cocotb.test()
async def run_job(dut):
    """Every case of the job: load, run each input, compare with the reference."""
    with open(os.environ["ZEROSKIP_JOB"]) as f:
        job = json.load(f)
    pes = job["pes"]
    Clock(dut.clk, CLOCK_NS, unit="ns").start()
    dut.rst.value = 1
    dut.load__valid.value = 0
    dut.act_in__valid.value = 0
    dut.result__ready.value = 0
    await ClockCycles(dut.clk, 3)
    dut.rst.value = 0
    await RisingEdge(dut.clk)

    results, mismatches = [], []
    progress = _Progress(job.get("progress"))
    for ci, case in enumerate(job["cases"]):
        idle, bp = case.get("idle", 0.0), case.get("backpressure", 0.0)
        await StreamSource(dut, "load", idle).send(case["words"])
        src = StreamSource(dut, "act_in", idle)
        sink = StreamSink(dut, "result", bp, signed=True)
        outs, counters = [], []
        budget = case.get("max_cycles", 10_000_000)
        for vi, vec in enumerate(case["inputs"]):
            await src.send(vec)
            await _wait_result(dut, budget)
            got = await sink.receive(case["out_features"], budget)
            await _wait_idle(dut, 1000)
            counters.append(_read_counters(dut, pes))  # still in ReadOnly
            await RisingEdge(dut.clk)
            outs.append(got)
            progress.step()
            exp = case.get("expected")
            if exp is not None:
                for k, (g, e) in enumerate(zip(got, exp[vi])):
                    if g != e and len(mismatches) < 20:
                        mismatches.append(f"case {ci} ({case.get('name', '')}) input {vi} "
                                          f"output {k}: RTL {g}, reference {e}")
        results.append({"outputs": outs, "counters": counters})
    progress.flush()
    with open(job["result"], "w") as f:
        json.dump({"cases": results}, f)
    assert not mismatches, "RTL differs from the reference:\n" + "\n".join(mismatches)
