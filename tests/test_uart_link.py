"""UART and host link in the Amaranth simulator.

The UART is checked against a bit-level Python model of the serial line (frames with gaps,
baud mismatch, framing errors, glitches, overrun, back-pressure); the host link (protocol 2 of
``docs/boards.md``) in front of the accelerator with random stalls, frame by frame: every
error code, replayed loads, results equal to ``run_model``; the whole board top through its
serial pins. The Verilated board behind a pty is in ``test_board_link.py``.
"""

from __future__ import annotations

import random
import struct
import zlib

import numpy as np
import pytest
from amaranth.hdl import Elaboratable, Fragment, Module, ResetInserter
from amaranth.sim import Simulator

from zeroskip.boards.tops import AcceleratorTop
from zeroskip.hw.accel import Accelerator
from zeroskip.hw.link import HostLink, connect_accelerator
from zeroskip.hw.uart import UARTRx, UARTTx, uart_divisor
from zeroskip.sim.cases import random_inputs, random_model
from zeroskip.sim.pysim import stream_get, stream_put
from zeroskip.spec import (
    E_BAD_CRC,
    E_BAD_LENGTH,
    E_BUSY,
    E_CHECKSUM,
    E_NOT_LOADED,
    E_UNKNOWN_TYPE,
    RESPONSE,
    T_COMMIT,
    T_COUNTERS,
    T_ERROR,
    T_INFER,
    T_INFO,
    T_LOAD,
    T_RESET,
    FrameParser,
    HwParams,
    decode_info,
    encode_frame,
)
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


# ---- HostLink + Accelerator, frame by frame

PARAMS = HwParams(pes=2, index_bits=4, entry_depth=256, ptr_depth=64, row_depth=32,
                  act_depth=32, max_layers=3, fifo_depth=2)


def test_link_validation():
    with pytest.raises(TypeError, match="HwParams"):
        HostLink({"pes": 2})
    with pytest.raises(ValueError, match="counter_width"):
        HostLink(PARAMS, counter_width=33)
    with pytest.raises(ValueError, match="board_id"):
        HostLink(PARAMS, board_id=9)
    with pytest.raises(ValueError, match="frame_timeout"):
        HostLink(PARAMS, frame_timeout=3)
    link = HostLink(PARAMS, board_id=2, clk_hz=100_000_000, divisor=868)
    info = decode_info(link.info)
    assert info["params"] == PARAMS and info["board"] == "ulx3s" and info["protocol"] == 2
    assert info["clk_hz"] == 100_000_000 and info["uart_divisor"] == 868
    assert info["max_payload"] == 64
    Fragment.get(link, None)
    with pytest.raises(ValueError, match="16-bit"):
        encode_frame(T_LOAD, 0, bytes(70000))


def test_frame_parser_resynchronizes():
    good = [encode_frame(T_INFO | RESPONSE, k, bytes([k]) * k) for k in range(5)]
    bad = bytearray(good[2])
    bad[6] ^= 0x10
    p = FrameParser(max_len=64)
    stream = b"\xa5\x00garbage" + good[0] + good[1] + bytes(bad) + b"\xa5\x01\x02\xff\xff" + good[3]
    got = []
    for k in range(0, len(stream), 3):
        got += p.feed(stream[k:k + 3])
    assert [(t, s, pay) for t, s, pay in got] == [(T_INFO | RESPONSE, k, bytes([k]) * k)
                                                   for k in (0, 1, 3)]
    assert p.bad_frames >= 2


def test_frame_parser_drops_false_sync_announcing_a_long_payload():
    """Garbage with a sync byte and a plausible length must not hold up the frames behind it:
    with the expected lengths given, the false header is dropped at once."""
    result = encode_frame(T_INFER | RESPONSE, 7, bytes(range(40)))
    ack = encode_frame(T_LOAD | RESPONSE, 8, b"")
    # sync, the INFER response type, a seq, and a length of 1000 bytes (<= max_len)
    stream = bytes([0xA5, T_INFER | RESPONSE, 3]) + (1000).to_bytes(2, "little") + result + ack
    lengths = {T_INFER | RESPONSE: 40, T_LOAD | RESPONSE: 0, T_INFO | RESPONSE: None}
    p = FrameParser(max_len=4096, lengths=lengths)
    got = p.feed(stream)
    assert [(t, s) for t, s, _ in got] == [(T_INFER | RESPONSE, 7), (T_LOAD | RESPONSE, 8)]
    assert got[0][2] == bytes(range(40)) and p.false_syncs == 1 and not p.buf
    # an unexpected type is dropped too; INFO's length is free
    info = encode_frame(T_INFO | RESPONSE, 9, bytes(70))
    got = p.feed(bytes([0xA5, 0x42, 0, 5, 0]) + info)
    assert [(t, s, len(pay)) for t, s, pay in got] == [(T_INFO | RESPONSE, 9, 70)]
    assert p.false_syncs == 2
    # without the lengths the parser waits for the announced 1000 bytes (the old behaviour)
    q = FrameParser(max_len=4096)
    assert q.feed(stream) == [] and len(q.buf) == len(stream)


class LinkedAccel(Elaboratable):
    def __init__(self, params, counter_width=16):
        self.accel = Accelerator(params, counter_width=counter_width)
        self.link = HostLink(params, counter_width=counter_width, frame_timeout=400)

    def elaborate(self, platform):
        m = Module()
        m.submodules.accel = ResetInserter(self.link.accel_rst)(self.accel)
        m.submodules.link = self.link
        connect_accelerator(m, self.link, self.accel)
        return m


def tiny_case(seed, params=PARAMS, sizes=(9, 7, 5), n=3):
    rng = np.random.default_rng(seed)
    qm = random_model(rng, list(sizes), 0.5)
    pm = pack_model(qm, params)
    x = random_inputs(rng, n, sizes[0], 0.6).astype(np.uint8)
    words = encode_commands(params, load_commands(pm))
    return pm, x, words, run_model(pm, x).numpy()


def run_frames(dut, frames, n_answers, seed, gap=300, gaps=None, max_cycles=None,
               trace=None, bad_frames=0):
    """Send ``frames`` (bytes each, ``gap`` cycles or ``gaps[k]`` after frame k), collect
    ``n_answers`` answer frames (and exactly ``bad_frames`` frames with a bad CRC). ``trace``:
    a list that gets, per cycle, ``(watchdog, accel_rst)`` of the link."""
    rng = random.Random(seed)
    parser = FrameParser()
    got = []
    done = []

    async def monitor(ctx):
        while not done:
            trace.append((ctx.get(dut.link.watchdog), ctx.get(dut.link.accel_rst)))
            await ctx.tick()

    async def host(ctx):
        for k, f in enumerate(frames):
            for b in f:
                await stream_put(ctx, dut.link.host_in, b, rng, idle=0.3)
            for _ in range(gap if gaps is None else gaps[k]):
                await ctx.tick()

    async def uart_out(ctx):
        out, cycles = dut.link.host_out, 0
        while len(got) < n_answers and (max_cycles is None or cycles < max_cycles):
            ready = rng.random() >= 0.3
            ctx.set(out.ready, ready)
            valid, byte = ctx.get(out.valid), ctx.get(out.payload)
            await ctx.tick()
            cycles += 1
            if valid and ready:
                got.extend(parser.feed(bytes([byte])))
        done.append(1)

    sim = Simulator(dut)
    sim.add_clock(1e-6)
    sim.add_testbench(host)
    sim.add_testbench(uart_out)
    if trace is not None:
        sim.add_testbench(monitor)
    sim.run()
    assert parser.bad_frames == bad_frames
    return got


def error(seq, typ, code):
    return (T_ERROR, seq, bytes([code, typ]))


def ack(seq, typ, payload=b""):
    return (typ | RESPONSE, seq, payload)


@pytest.mark.parametrize("seed", SEEDS)
def test_link_protocol(seed):
    pm, x, words, expected = tiny_case(seed)
    blob = b"".join(int(w).to_bytes(8, "little") for w in words)
    chunks = [blob[k:k + 64] for k in range(0, len(blob), 64)]
    commit = struct.pack("<II", zlib.crc32(blob), 5000)
    dut = LinkedAccel(PARAMS)
    f = encode_frame
    bad_crc = bytearray(f(T_INFO, 9))
    bad_crc[-1] ^= 1
    frames = [f(T_INFO, 1), f(T_RESET, 2), f(T_INFER, 3, bytes(x[0])), bytes(bad_crc),
              f(0x33, 4), f(T_LOAD, 5, bytes(12)), f(T_COMMIT, 6, commit)]
    want = [ack(1, T_INFO, dut.link.info), ack(2, T_RESET), error(3, T_INFER, E_NOT_LOADED),
            error(9, T_INFO, E_BAD_CRC), error(4, 0x33, E_UNKNOWN_TYPE),
            error(5, T_LOAD, E_BAD_LENGTH), error(6, T_COMMIT, E_CHECKSUM)]
    seq = 10
    for k, c in enumerate(chunks):
        frames.append(f(T_LOAD, seq, c))
        want.append(ack(seq, T_LOAD))
        if k == 1:   # a replay of the same LOAD: answered again, not applied again
            frames.append(f(T_LOAD, seq, c))
            want.append(ack(seq, T_LOAD))
        seq += 1
    frames += [f(T_COMMIT, seq, commit), f(T_COMMIT, seq, commit)]
    want += [ack(seq, T_COMMIT), ack(seq, T_COMMIT)]
    seq += 1
    frames.append(f(T_INFER, seq, bytes(x[0][:-1])))
    want.append(error(seq, T_INFER, E_BAD_LENGTH))
    for v in x:
        seq += 1
        frames.append(f(T_INFER, seq, bytes(v)))
        want.append(("result", seq))
    frames.append(f(T_COUNTERS, seq + 1))
    want.append(("counters", seq + 1))
    got = run_frames(dut, frames, len(want), seed)
    results = []
    for g, w in zip(got, want):
        if w[0] == "result":
            assert g[:2] == (T_INFER | RESPONSE, w[1])
            results.append(np.frombuffer(g[2], dtype="<i4"))
        elif w[0] == "counters":
            assert g[:2] == (T_COUNTERS | RESPONSE, w[1]) and len(g[2]) == 4 * (4 + PARAMS.pes)
            cycles = struct.unpack_from("<I", g[2])[0]
            assert 0 < cycles < 5000
        else:
            assert g == w
    assert len(got) == len(want)
    np.testing.assert_array_equal(pm.from_hw_order(np.array(results)), expected)


def test_link_busy_and_pipelined():
    """Inputs back to back: one runs, two wait in the buffers, the next finds both full."""
    pm, x, words, expected = tiny_case(5, n=6)
    blob = b"".join(int(w).to_bytes(8, "little") for w in words)
    f = encode_frame
    frames = [f(T_LOAD, 1 + k // 64, blob[k:k + 64]) for k in range(0, len(blob), 64)]
    n_load = len(frames)
    frames.append(f(T_COMMIT, 100, struct.pack("<II", zlib.crc32(blob), 5000)))
    dut = LinkedAccel(PARAMS)
    # the loads one at a time, then six INFERs without a gap (a frame takes ~25 cycles, a run
    # about 100)
    gaps = [300] * len(frames) + [0] * len(x)
    frames += [f(T_INFER, 101 + k, bytes(v)) for k, v in enumerate(x)]
    # (an answer finding the response slot taken is dropped: a host would time out)
    got = run_frames(dut, frames, n_load + 1 + len(x), 2, gaps=gaps, max_cycles=30_000)
    assert got[n_load] == ack(100, T_COMMIT)
    tail = got[n_load + 1:]
    busy = [g for g in tail if g[0] == T_ERROR]
    assert busy and all(g[2] == bytes([E_BUSY, T_INFER]) for g in busy)
    res = {g[1]: np.frombuffer(g[2], dtype="<i4") for g in tail if g[0] != T_ERROR}
    assert {101, 102, 103} <= set(res)
    for seq, r in res.items():
        np.testing.assert_array_equal(pm.from_hw_order(r[None])[0], expected[seq - 101])


def test_link_watchdog_registered_reset_and_recovery():
    """A malformed load image (layer 0's first column pointers of PE 0 alternate between the
    start and the end of the entry memory, so its columns span most of it) written straight to
    the RTL: the run exceeds the COMMIT's bound and ends in a watchdog error, with the
    accelerator's reset a register (high for exactly the cycle after the watchdog fires); a
    later INFER is refused, RESET and a good load recover, and the results are the
    reference's."""
    from zeroskip.spec import E_WATCHDOG, MEM_PTR
    from zeroskip.sw.image import LoadCmd

    pm, x, words, expected = tiny_case(7)
    p = PARAMS

    def bad_ptr(c):
        if c.mem == MEM_PTR and c.pe == 0 and 1 <= c.addr <= 8:
            return LoadCmd(c.mem, c.pe, c.addr, (p.entry_depth - 1) * (c.addr % 2))
        return c
    bad = encode_commands(p, [bad_ptr(c) for c in load_commands(pm)])
    assert sum(a != b for a, b in zip(bad, words)) == 8

    def load(seq, ws, bound):
        blob = b"".join(int(w).to_bytes(8, "little") for w in ws)
        frames = [encode_frame(T_LOAD, seq + k, blob[i:i + 64])
                  for k, i in enumerate(range(0, len(blob), 64))]
        frames.append(encode_frame(T_COMMIT, seq + len(frames),
                                   struct.pack("<II", zlib.crc32(blob), bound)))
        return frames

    bound = 400     # the good model's runs take about 100 cycles, the bad one's thousands
    f = encode_frame
    frames = [f(T_RESET, 1), *load(2, bad, bound)]
    n_bad = len(frames)
    # every input nonzero: the corrupt columns are all scanned (the watchdog fires), then an
    # input the unverified board refuses; RESET only after the watchdog
    frames += [f(T_INFER, 50, bytes([200] * len(x[0]))), f(T_INFER, 51, bytes(x[1])),
               f(T_RESET, 52), *load(60, words, bound)]
    n_good = len(frames)
    frames += [f(T_INFER, 100 + k, bytes(v)) for k, v in enumerate(x)]
    gaps = [150] * len(frames)
    gaps[n_bad] = 1500
    dut = LinkedAccel(PARAMS)
    trace: list = []
    # the RESULT frame the watchdog cuts short ends with a bad CRC (the host drops it)
    got = run_frames(dut, frames, len(frames), 3, gaps=gaps, trace=trace, bad_frames=1,
                     max_cycles=60_000)
    assert len(got) == len(frames)
    # the bad image is accepted: its CRCs are right, its descriptors sane, and COMMIT's run
    # of zeros skips every column
    assert got[0] == ack(1, T_RESET)
    assert got[1:n_bad] == [ack(2 + k, T_LOAD) for k in range(n_bad - 2)] + [
        ack(n_bad, T_COMMIT)]
    assert got[n_bad] == error(50, T_INFER, E_WATCHDOG)
    assert got[n_bad + 1] == error(51, T_INFER, E_NOT_LOADED)
    assert got[n_bad + 2] == ack(52, T_RESET)
    assert all(g[0] in (T_LOAD | RESPONSE, T_COMMIT | RESPONSE)
               for g in got[n_bad + 3:n_good])
    results = got[n_good:]
    assert [g[:2] for g in results] == [(T_INFER | RESPONSE, 100 + k) for k in range(len(x))]
    out = np.array([np.frombuffer(g[2], dtype="<i4") for g in results])
    np.testing.assert_array_equal(pm.from_hw_order(out), expected)
    # the accelerator's reset: a one-cycle register pulse after the watchdog's expiry and
    # after each RESET frame, never in the same cycle as the expiry
    wd = [t for t, (w, _) in enumerate(trace) if w]
    rst = [t for t, (_, r) in enumerate(trace) if r]
    assert len(wd) == 1
    assert len(rst) == 3 and wd[0] + 1 in rst and wd[0] not in rst   # 2 RESETs, 1 expiry
    assert all(trace[t + 1][1] == 0 for t in rst)


# ---- the board top through its serial pins


def test_top_over_serial():
    top = AcceleratorTop(PARAMS, clk_hz=1e6, baud=200_000, counter_width=16)
    div = top.divisor
    assert div == 5
    rx_bytes = bytearray()
    request = encode_frame(T_INFO, 42)

    async def host_tx(ctx):
        await drive_line(ctx, top.rx, line_levels([frame_bits(b) for b in request], div,
                                                  [1] * len(request))[5:])

    async def host_rx(ctx):
        mon = LineMonitor(div)
        parser = FrameParser()
        async for _, _, tx in ctx.tick().sample(top.tx):
            mon.feed(tx)
            got = parser.feed(bytes(mon.bytes[len(rx_bytes):]))
            rx_bytes[:] = bytes(mon.bytes)
            if got:
                assert got == [(T_INFO | RESPONSE, 42, top.link.info)]
                break
            assert len(mon.levels) < 100_000, f"only {len(rx_bytes)} bytes"
        assert ctx.get(top.led_error) == 0

    sim = Simulator(top)
    sim.add_clock(1e-6)
    sim.add_testbench(host_tx)
    sim.add_testbench(host_rx)
    sim.run()
