"""UART and host link in the Amaranth simulator.

The UART is checked against a bit-level Python model of the serial line (frames with gaps,
baud mismatch, framing errors, glitches, overrun, back-pressure); the host link against the
protocol of ``docs/boards.md`` alone (random stalls on every stream) and in front of the
accelerator, where results decoded from the returned bytes equal ``run_model`` exactly; the
whole board top through its serial pins.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Fragment, Module
from amaranth.sim import Simulator

from zeroskip.boards.tops import AcceleratorTop
from zeroskip.hw.accel import Accelerator
from zeroskip.hw.link import (
    COUNTER_NAMES,
    HostLink,
    connect_accelerator,
    decode_counters,
    decode_words,
    encode_acts,
    encode_load,
)
from zeroskip.hw.uart import UARTRx, UARTTx, uart_divisor
from zeroskip.sim.cases import random_inputs, random_model
from zeroskip.sim.pysim import stream_get, stream_put
from zeroskip.spec import HwParams, load_layout
from zeroskip.sw.image import encode_commands, load_commands
from zeroskip.sw.pack import pack_model
from zeroskip.sw.ref import run_model

pytestmark = pytest.mark.sim

SEEDS = [1, 2]

# ---- bit-level model of the serial line


def frame_bits(byte: int, stop: int = 1) -> list[int]:
    """Line levels of one 8N1 frame: start, 8 data bits LSB first, stop."""
    return [0, *((byte >> k) & 1 for k in range(8)), stop]


def line_levels(frames, divisor: float, gaps) -> list[int]:
    """Per-clock line levels for ``frames`` (bit lists) at ``divisor`` cycles per bit (may be
    fractional, for baud mismatch), idle-high ``gaps`` (cycles) before each frame."""
    out = [1] * 5
    for bits, gap in zip(frames, gaps):
        out += [1] * gap
        start = len(out)
        for k, level in enumerate(bits):
            end = start + round((k + 1) * divisor)
            out += [level] * (end - len(out))
    return out + [1] * int(3 * divisor)


class LineMonitor:
    """Reference receiver: decodes 8N1 frames from per-clock line levels, sampling mid-bit."""

    def __init__(self, divisor: int):
        self.divisor = divisor
        self.levels: list[int] = []
        self.bytes: list[int] = []
        self._t = 0

    def feed(self, level: int) -> None:
        self.levels.append(level)
        div, lv = self.divisor, self.levels
        while self._t < len(lv):
            if lv[self._t]:
                self._t += 1
                continue
            mid = self._t + div // 2
            if mid + 9 * div >= len(lv):
                return  # frame still arriving
            bits = [lv[mid + k * div] for k in range(10)]
            assert bits[0] == 0 and bits[9] == 1, f"bad frame {bits} at cycle {self._t}"
            self.bytes.append(sum(b << k for k, b in enumerate(bits[1:9])))
            self._t = mid + 9 * div

    @property
    def in_frame(self) -> bool:
        return self._t < len(self.levels)


def decode_line(levels: list[int], divisor: int) -> list[int]:
    mon = LineMonitor(divisor)
    for level in levels:
        mon.feed(level)
    assert not mon.in_frame, "truncated frame"
    return mon.bytes


async def drive_line(ctx, pin, levels):
    for level in levels:
        ctx.set(pin, level)
        await ctx.tick()


def run(dut, *benches, processes=()):
    sim = Simulator(dut)
    sim.add_clock(1e-6)
    for bench in benches:
        sim.add_testbench(bench)
    for proc in processes:
        sim.add_process(proc)
    sim.run()


# ---- UART


def test_divisor_validation():
    assert uart_divisor(39.75e6, 115200) == 345
    assert uart_divisor(100e6, 115200) == 868
    with pytest.raises(ValueError, match="too high"):
        uart_divisor(1e6, 500000)
    with pytest.raises(ValueError, match="off by"):
        uart_divisor(1e6, 180000)  # 5.56 -> 6: 7% slow
    with pytest.raises(ValueError, match="positive"):
        uart_divisor(0, 9600)
    for cls in (UARTRx, UARTTx):
        with pytest.raises(TypeError, match="must be an integer"):
            cls(divisor=8.0)
        with pytest.raises(ValueError, match="at least 4"):
            cls(divisor=3)
        dut = cls(divisor=17)
        assert dut.divisor == 17
        Fragment.get(dut, None)


@pytest.mark.parametrize("divisor", [4, 7, 16])
@pytest.mark.parametrize("skew", [-0.03, 0.0, 0.03])
@pytest.mark.parametrize("seed", SEEDS)
def test_rx(divisor, skew, seed):
    rng = random.Random(seed)
    data = [rng.randrange(256) for _ in range(24)] + [0x00, 0xFF, 0x55, 0xAA]
    gaps = [rng.choice([0, 0, 1, divisor * 3]) for _ in data]
    levels = line_levels([frame_bits(b) for b in data], divisor * (1 + skew), gaps)
    if skew == 0:
        assert decode_line(levels, divisor) == data
    dut = UARTRx(divisor=divisor)
    got, errors = [], []

    async def line(ctx):
        await drive_line(ctx, dut.rx, levels)

    async def sink(ctx):
        # back-pressure shorter than a frame: no overrun
        while len(got) < len(data):
            got.append(await stream_get(ctx, dut.o, rng, backpressure=0.8))

    async def watch(ctx):
        async for _, _, fe, ov in ctx.tick().sample(dut.framing_error, dut.overrun):
            if fe or ov:
                errors.append((fe, ov))

    run(dut, line, sink, processes=[watch])
    assert got == data
    assert errors == []


def test_rx_framing_error_glitch_and_overrun():
    div = 8
    dut = UARTRx(divisor=div)
    # glitch (shorter than half a bit), bad stop bit, a held break, then good bytes
    levels = [1] * 10 + [0] * 2 + [1] * 20
    levels += line_levels([frame_bits(0x3C, stop=0)], div, [0])[:-3 * div]
    levels += [0] * (30 * div) + [1] * (2 * div)  # the stop bit's 0 held as a break
    levels += line_levels([frame_bits(0xA5), frame_bits(0x5A)], div, [0, 4])
    got, flags = [], {"fe": 0, "ov": 0}

    async def line(ctx):
        await drive_line(ctx, dut.rx, levels)
        # overrun: two bytes while nobody reads; the first stays, the second is dropped
        ctx.set(dut.o.ready, 0)
        await drive_line(ctx, dut.rx, line_levels([frame_bits(1), frame_bits(2)], div, [0, 0]))
        assert ctx.get(dut.o.valid) and ctx.get(dut.o.payload) == 1
        got.append(await stream_get(ctx, dut.o))
        for _ in range(20 * div):
            assert not ctx.get(dut.o.valid)
            await ctx.tick()

    async def sink(ctx):
        while len(got) < 2:
            got.append(await stream_get(ctx, dut.o))

    async def watch(ctx):
        async for _, _, fe, ov in ctx.tick().sample(dut.framing_error, dut.overrun):
            flags["fe"] += fe
            flags["ov"] += ov

    run(dut, sink, line, processes=[watch])
    assert got == [0xA5, 0x5A, 1]
    assert flags == {"fe": 1, "ov": 1}


@pytest.mark.parametrize("divisor", [4, 9])
@pytest.mark.parametrize("seed", SEEDS)
def test_tx(divisor, seed):
    rng = random.Random(seed)
    data = [rng.randrange(256) for _ in range(20)] + [0x00, 0xFF]
    dut = UARTTx(divisor=divisor)
    levels = []

    async def source(ctx):
        for b in data:
            await stream_put(ctx, dut.i, b, rng, idle=0.5)
        for _ in range(12 * divisor):
            await ctx.tick()

    async def monitor(ctx):
        async for _, _, tx in ctx.tick().sample(dut.tx):
            levels.append(tx)

    run(dut, source, processes=[monitor])
    assert levels[0] == 1
    assert decode_line(levels, divisor) == data


@pytest.mark.parametrize("divisor", [4, 5])
def test_loopback(divisor):
    rng = random.Random(divisor)
    data = [rng.randrange(256) for _ in range(40)]
    m = Module()
    m.submodules.tx = tx = UARTTx(divisor=divisor)
    m.submodules.rx = rx = UARTRx(divisor=divisor)
    m.d.comb += rx.rx.eq(tx.tx)
    got = []

    async def source(ctx):
        for b in data:
            await stream_put(ctx, tx.i, b)  # back to back

    async def sink(ctx):
        while len(got) < len(data):
            got.append(await stream_get(ctx, rx.o, rng, backpressure=0.5))

    run(m, source, sink)
    assert got == data


# ---- HostLink alone, every stream stalled at random

PARAMS = HwParams(pes=2, index_bits=4, entry_depth=256, ptr_depth=64, row_depth=32,
                  act_depth=32, max_layers=3, fifo_depth=2)


def test_link_validation():
    with pytest.raises(TypeError, match="HwParams"):
        HostLink({"pes": 2})
    with pytest.raises(ValueError, match="counter_width"):
        HostLink(PARAMS, counter_width=33)
    link = HostLink(PARAMS)
    assert link.counter_words == 4 + PARAMS.pes
    Fragment.get(link, None)
    with pytest.raises(ValueError, match="uint8"):
        encode_acts([256])
    with pytest.raises(ValueError, match="counter words"):
        decode_counters(bytes(8), 2)


@pytest.mark.parametrize("seed", SEEDS)
def test_link_protocol(seed):
    rng = random.Random(seed)
    size = load_layout(PARAMS).size
    dut = HostLink(PARAMS, counter_width=20)
    loads = [rng.randrange(1 << size) for _ in range(12)]
    acts = [rng.randrange(256) for _ in range(12)]
    results = [rng.randrange(-(1 << 31), 1 << 31) for _ in range(10)]
    counters = {n: rng.randrange(1 << 20) for n in COUNTER_NAMES}
    busy = [rng.randrange(1 << 20) for _ in range(PARAMS.pes)]
    # loads with junk above the layout, acts, unknown bytes in between, then 'C'
    cmds = b"\x00\x00" + encode_load([w | (1 << 63) for w in loads]) + b"Z"
    cmds += encode_acts(acts) + b"C"
    got = {"load": [], "act": [], "out": bytearray()}
    n_out = 4 * len(results) + 4 * (4 + PARAMS.pes)

    async def host(ctx):
        for n in COUNTER_NAMES:
            ctx.set(getattr(dut, n), counters[n])
        for i, v in enumerate(busy):
            ctx.set(dut.pe_busy[i], v)
        for b in cmds:
            await stream_put(ctx, dut.host_in, b, rng, idle=0.3)

    async def accel_load(ctx):
        while len(got["load"]) < len(loads):
            got["load"].append(await stream_get(ctx, dut.load, rng, backpressure=0.7))

    async def accel_act(ctx):
        while len(got["act"]) < len(acts):
            got["act"].append(await stream_get(ctx, dut.act_in, rng, backpressure=0.7))

    async def accel_result(ctx):
        for r in results:
            await stream_put(ctx, dut.result, r, rng, idle=0.5)

    async def uart_out(ctx):
        while len(got["out"]) < n_out:
            got["out"].append(await stream_get(ctx, dut.host_out, rng, backpressure=0.6))

    run(dut, host, accel_load, accel_act, accel_result, uart_out)
    assert [w.as_bits() if hasattr(w, "as_bits") else int(w) for w in got["load"]] == loads
    assert got["act"] == acts
    out = bytes(got["out"])
    # results and the counter dump are whole words; results came first here only if they were
    # all queued before 'C': find the dump as the words that are not results
    words = decode_words(out, signed=False)
    res_u = [r & 0xFFFFFFFF for r in results]
    dump = [w for w in words if w not in res_u]
    assert [w for w in words if w in res_u] == res_u
    assert dump == [*counters.values(), *busy]


# ---- HostLink + Accelerator


class LinkedAccel(Elaboratable):
    def __init__(self, params, counter_width=32):
        self.accel = Accelerator(params, counter_width=counter_width)
        self.link = HostLink(params, counter_width=counter_width)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = self.accel
        m.submodules.link = self.link
        connect_accelerator(m, self.link, self.accel)
        return m


def tiny_case(seed, params=PARAMS, sizes=(9, 7, 5), n=3):
    rng = np.random.default_rng(seed)
    qm = random_model(rng, list(sizes), 0.5)
    pm = pack_model(qm, params)
    x = random_inputs(rng, n, sizes[0], 0.6)
    words = encode_commands(params, load_commands(pm))
    return pm, x, words, run_model(pm, x).numpy()


@pytest.mark.parametrize("seed", SEEDS)
def test_link_runs_accelerator(seed):
    pm, x, words, expected = tiny_case(seed)
    out_n = expected.shape[1]
    dut = LinkedAccel(PARAMS)
    rng = random.Random(seed)
    outputs, dumps, direct = [], [], []

    async def get_bytes(ctx, n):
        return bytes([await stream_get(ctx, dut.link.host_out, rng, backpressure=0.5)
                      for _ in range(n)])

    async def host(ctx):
        for b in encode_load(words):
            await stream_put(ctx, dut.link.host_in, b, rng, idle=0.3)
        for vec in x:
            for b in encode_acts(vec):
                await stream_put(ctx, dut.link.host_in, b, rng, idle=0.3)
            outputs.append(decode_words(await get_bytes(ctx, 4 * out_n)))
            await stream_put(ctx, dut.link.host_in, ord("C"))
            dumps.append(decode_counters(await get_bytes(ctx, 4 * (4 + PARAMS.pes)), PARAMS.pes))
            direct.append({**{n: ctx.get(getattr(dut.accel, n)) for n in COUNTER_NAMES},
                           "pe_busy": [ctx.get(v) for v in dut.accel.pe_busy]})

    run(dut, host)
    # the accelerator emits the last layer's rows in hardware order (the packer's permutation)
    np.testing.assert_array_equal(pm.from_hw_order(np.array(outputs)), expected)
    assert dumps == direct
    assert all(d["cycles"] > 0 and d["useful_macs"] <= d["entries"] for d in dumps)


# ---- the board top through its serial pins


def test_top_over_serial():
    params = PARAMS
    pm, x, words, expected = tiny_case(7, params, sizes=(6, 5, 3), n=2)
    out_n = expected.shape[1]
    top = AcceleratorTop(params, clk_hz=1e6, baud=200_000, counter_width=16)
    div = top.divisor
    assert div == 5
    rx_bytes = bytearray()

    async def host_tx(ctx):
        async def send(data):
            await drive_line(ctx, top.rx, line_levels([frame_bits(b) for b in data], div,
                                                      [1] * len(data))[5:])
        await send(encode_load(words))
        for k, vec in enumerate(x):
            await send(encode_acts(vec))
            # the protocol: wait for this vector's results before the next command
            while len(rx_bytes) < 4 * out_n * (k + 1):
                await ctx.tick()
        await send(b"C")

    async def host_rx(ctx):
        mon = LineMonitor(div)
        want = 4 * out_n * len(x) + 4 * (4 + params.pes)
        async for _, _, tx in ctx.tick().sample(top.tx):
            mon.feed(tx)
            rx_bytes[:] = bytes(mon.bytes)
            if len(rx_bytes) == want and not mon.in_frame:
                break
            assert len(mon.levels) < 200_000, f"only {len(rx_bytes)} of {want} bytes"
        assert ctx.get(top.led_error) == 0

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(host_tx)
    sim.add_testbench(host_rx)
    sim.run()
    words_out = decode_words(bytes(rx_bytes[:4 * out_n * len(x)]))
    np.testing.assert_array_equal(
        pm.from_hw_order(np.array(words_out).reshape(len(x), out_n)), expected)
    c = decode_counters(bytes(rx_bytes[4 * out_n * len(x):]), params.pes)
    assert 0 < c["cycles"] < 1 << 16
