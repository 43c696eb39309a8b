"""A cycle model of the PE array, to predict and explain the RTL's cycle counts.

The model follows the micro-architecture of ``docs/hardware.md`` column by column: the scanner
reads rows of ``pes`` activations and broadcasts each nonzero one (every one, with skipping off)
to all PEs, one per cycle, waiting while any PE is out of credits; each PE fetches the column's
pointers as it takes it, drops empty columns there, queues nonempty ones, and issues one entry
per cycle from its entry stage, back to back across columns. Each PE finalizes its rows
(``fin_lanes`` a cycle, pipelined) as soon as the scanner is done and it has nothing left to
issue; the layer ends when the last PE's last rows are written. It is an event model, not a
simulation of every signal: the pipeline latencies are the RTL's own exported constants
(``Scanner.READ_LATENCY``, ``PE.POINTER_LATENCY``, ``Accelerator.LAYER_SWITCH``, ...), and the
tests (``tests/test_cycles.py``) and ``nox -s bench`` check that it equals the RTL's cycle
counter.
"""

from __future__ import annotations

from bisect import bisect_right, insort
from dataclasses import dataclass

import numpy as np

from ..hw.accel import Accelerator
from ..hw.pe import PE
from ..hw.scanner import Scanner
from ..spec import HwParams
from .pack import PackedModel, local_rows, unsupported_layer
from .ref import run_model

__all__ = ["LayerCycles", "predict_layer", "predict", "useful_macs", "dense_macs"]

# pipeline latencies, exported by the RTL that implements them (hw/scanner.py, hw/pe.py,
# hw/accel.py): the model copies no number
SCAN_LATENCY = Scanner.BROADCAST_LATENCY    # picked in B -> taken by every PE (all have credit)
READ_LATENCY = Scanner.READ_LATENCY         # row fetched -> in the read register R
EMPTY_ROW_CYCLES = Scanner.EMPTY_ROW_CYCLES  # a row with nothing to emit: B busy, then empty
POINTER_LATENCY = PE.POINTER_LATENCY        # taken -> pointers registered (dropped or queued)
QUEUE_LATENCY = PE.QUEUE_LATENCY            # pointers registered (P2) -> issued, S2 free
DRAIN = PE.DRAIN_LATENCY                    # S2 free after its last entry -> drained
DROP_CREDIT = PE.DROP_CREDIT_LATENCY        # dropped at P2 -> its credit returned
DROP_DRAIN = PE.DROP_DRAIN_LATENCY          # last column dropped -> drained
FINAL_LATENCY = PE.FINAL_LATENCY            # F0 of the last row -> the last counted cycle
NO_ROWS_FINISH = PE.NO_ROWS_FINISH          # a PE without rows: start -> seen done
SCAN_DONE = Accelerator.SCAN_DONE_LATENCY   # scanner done -> the scan-done the PEs see
READY_LATENCY = Accelerator.READY_LATENCY   # the PEs' credits -> the broadcast's ready
LAYER_START = Accelerator.LAYER_START       # counting the last cycle (layer 0's start)
LAYER_SWITCH = Accelerator.LAYER_SWITCH     # descriptor-wait and descriptor cycles per layer
PIXEL_SWITCH = Accelerator.PIXEL_SWITCH     # a pixel's last rows written -> next pixel's scan


@dataclass
class LayerCycles:
    cycles: int
    compute: int
    finalize: int
    useful_macs: int
    entries: int
    pe_work: list[int]


def useful_macs(pm: PackedModel, x) -> int:
    """Multiply-accumulates with a nonzero weight and a nonzero activation, over all layers."""
    acts = [np.asarray(x, dtype=np.int64).reshape(-1)] + [
        a.numpy().reshape(-1) for a in run_model(pm, x, return_all=True)[:-1]]
    return int(sum(useful_macs_layer(pl.q, a) for pl, a in zip(pm.layers, acts)))


def dense_macs(pm: PackedModel) -> int:
    """Multiply-accumulates of the dense layers, over the conv pixels the hardware computes."""
    return int(sum(pl.q.in_features * pl.q.out_features * computed_pixels(pl.q.geom)
                   for pl in pm.layers))


def scan_steps(pl, x, P: int, skip_zero_acts: bool = True):
    """The scanner's walk of a layer, pixel by pixel in the hardware's order (pooling windows):
    per pixel a list of steps, ``None`` for a kernel position outside the map (one cycle in the
    generator) or the hardware columns (``t * C + c``, see :func:`~zeroskip.sw.image.scan_columns`)
    a fetched row of ``P`` channels emits. ``x`` is the layer's input (CHW, hardware channel
    order)."""
    g = pl.q.geom
    c, h, w = g.in_shape
    kh, kw = g.kernel
    s, pad = g.stride, g.padding
    k, sp = g.pool if g.pool is not None else (1, 1)
    ph, pw = g.out_hw
    xm = np.asarray(x, dtype=np.int64).reshape(c, h, w)
    groups = -(-c // P)
    rows_at = {}
    for iy in range(h):
        for ix in range(w):
            v = xm[:, iy, ix]
            nz = np.flatnonzero(v) if skip_zero_acts else np.arange(c)
            rows_at[iy, ix] = [nz[(nz >= gi * P) & (nz < gi * P + P)] for gi in range(groups)]
    pixels = []
    for py in range(ph):
        for px in range(pw):
            for wy in range(k):
                for wx in range(k):
                    oy, ox = py * sp + wy, px * sp + wx
                    steps = []
                    for ky in range(kh):
                        for kx in range(kw):
                            iy, ix = oy * s - pad + ky, ox * s - pad + kx
                            if not (0 <= iy < h and 0 <= ix < w):
                                steps.append(None)
                                continue
                            t = ky * kw + kx
                            steps += [t * c + r for r in rows_at[iy, ix]]
                    pixels.append(steps)
    return pixels


def _pixel(steps, counts, P: int, cap: int, rows_q: list[int], lanes: int) -> tuple:
    """Cycles of one pixel from its first scanner cycle: ``(end, compute, work)`` with ``end``
    the cycle its last rows are written (as the sequencer sees it), ``compute`` the cycle the
    last PE has drained, ``work`` the entries each PE issued."""
    s2_free = [0] * P               # earliest cycle the entry stage can pop a column
    gone = [[] for _ in range(P)]   # sorted cycles at which PE q dropped or popped a column
    last_gone = [0] * P
    work = [0] * P
    push_prev = -10
    scan_end = 0                    # the scanner is done (nothing in G, A, R, B or broadcast)
    # the fetch pipeline (docs of hw/scanner.py): a row is fetched at F, moves A -> R at M and
    # R -> B at L; G takes one cycle a step, a fetch waits for A to be free
    g_next = 0                      # the cycle the generator processes its next step
    m_prev = l_prev = None
    b_free = 0                      # the cycle the row register (stage B) can load a row

    pushes: list[int] = []          # the cycles of the broadcasts so far (increasing)

    def credit(q: int, when: int) -> bool:
        # the PE's registered ``room`` at ``when``: fewer than ``cap`` columns taken before
        # ``when`` and not dropped or popped up to when - 1
        need = bisect_right(pushes, when - 1) - cap + 1
        return need <= 0 or bisect_right(gone[q], when - 1) >= need

    for st in steps:
        if st is None:
            g_next += 1                                # a position outside the map
            continue
        f = g_next if m_prev is None else max(g_next, m_prev)
        g_next = f + 1
        mv = f + 1 if l_prev is None else max(f + 1, l_prev)
        load = max(mv + 1, b_free)                     # R -> B
        m_prev, l_prev = mv, load
        if len(st) == 0:                               # nothing to emit: one cycle in B
            b_free = load + 1
            scan_end = max(scan_end, load + EMPTY_ROW_CYCLES)   # B empty again
            continue
        t = load + 1
        for j in st:
            e = max(t, push_prev)                      # emitted into the broadcast register
            push = e + SCAN_LATENCY                    # taken by every PE (all have credit)
            # the broadcast's ready: every PE had room READY_LATENCY cycles earlier
            while not all(credit(q, push - READY_LATENCY) for q in range(P)):
                push += 1
            push_prev = push
            pushes.append(push)
            for q in range(P):
                n = int(counts[q, j])
                work[q] += n
                if n == 0:
                    done = push + POINTER_LATENCY + DROP_CREDIT   # dropped at P2
                else:
                    done = max(push + POINTER_LATENCY + QUEUE_LATENCY, s2_free[q])   # popped
                    s2_free[q] = done + n
                insort(gone[q], done)
                last_gone[q] = max(last_gone[q], done)
            t = e + 1
        b_free = t - 1                                 # B loads again as it emits its last
    scan_end = max(scan_end, g_next)                   # the generator's last step
    # every PE finalizes by itself once the scanner is done and it has drained: fin_lanes
    # rows a cycle from F0 (the cycle after it starts); the sequencer sees it done
    # FINAL_LATENCY cycles after the F0 of its last rows
    scan_done = max(scan_end, push_prev + 1) + SCAN_DONE
    finish = []
    for q in range(P):
        drained = max([scan_done] + ([s2_free[q] + DRAIN] if s2_free[q] else [])
                      + [last_gone[q] + DROP_DRAIN])
        # no rows: done (a register) two cycles after it starts, seen through the AND after 3
        steps_q = -(-rows_q[q] // lanes)              # fin_lanes rows a cycle
        finish.append(drained + (steps_q + FINAL_LATENCY if steps_q else NO_ROWS_FINISH))
    compute = max(max([scan_done] + [s2_free[q] + DRAIN for q in range(P) if s2_free[q]]
                      + [g + DROP_DRAIN for g in last_gone]), 0)
    return max(finish), compute, work


def predict_layer(pm: PackedModel, layer: int, x, skip_zero_acts: bool = True,
                  hw: HwParams | None = None) -> LayerCycles:
    """Cycles of one layer for one input ``x`` (uint8 codes of that layer's input, CHW, in
    hardware channel order: see :attr:`~zeroskip.sw.pack.PackedLayer.in_perm`) on the hardware
    ``hw`` (default: the parameters the model was packed with; a model file does not record the
    hardware-only ones, such as ``fin_lanes``). A conv layer is a sequence of pixels, each
    scanned, drained and finalized before the next starts ``PIXEL_SWITCH`` cycles later."""
    from .image import hw_streams
    p = hw if hw is not None else pm.params
    if not pm.params.packs_like(p):
        raise ValueError(f"the model was packed for {pm.params}, not for {p}")
    why = unsupported_layer([pl.q for pl in pm.layers], p)
    if why is not None:
        raise ValueError(why)
    pl = pm.layers[layer]
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    P = p.pes
    counts = np.stack([np.diff(hw_streams(pl, q)[0]) for q in range(P)])   # (P, columns)
    rows_q = [local_rows(pl.q.out_features, P, q) for q in range(P)]
    total = 0
    compute = finalize = 0
    work = [0] * P
    pixels = scan_steps(pl, x, P, skip_zero_acts)
    for i, steps in enumerate(pixels):
        end, comp, wk = _pixel(steps, counts, P, p.fifo_depth, rows_q, p.fin_lanes)
        compute += comp
        finalize += end - comp
        work = [a + b for a, b in zip(work, wk)]
        total += end + (PIXEL_SWITCH if i < len(pixels) - 1 else 0)
    # useful MACs: over the output pixels, the nonzero weights of each nonzero activation
    useful = useful_macs_layer(pl.q, x, pl.hw_weight())
    overhead = LAYER_START + (LAYER_SWITCH if layer else 0)
    return LayerCycles(total + overhead, compute, finalize, useful, int(sum(work)), work)


def _per_window(per_pixel: np.ndarray, g) -> int:
    """Sum of a per-conv-pixel quantity over the pixels the hardware computes: every pixel of
    every pooling window (a pixel in two overlapping windows is computed twice)."""
    oh, ow = g.conv_hw
    per_pixel = np.asarray(per_pixel).reshape(oh, ow)
    if g.pool is None:
        return int(per_pixel.sum())
    k, s = g.pool
    ph, pw = g.out_hw
    return int(sum(per_pixel[py * s:py * s + k, px * s:px * s + k].sum()
                   for py in range(ph) for px in range(pw)))


def computed_pixels(g) -> int:
    """Conv pixels the hardware computes for a layer of geometry ``g``."""
    return _per_window(np.ones(g.conv_hw, dtype=np.int64), g)


def useful_macs_layer(q, x, weight=None) -> int:
    """Multiply-accumulates with a nonzero weight and a nonzero activation in one layer, over
    every conv pixel the hardware computes (``weight``: the matrix in the order of ``x``'s
    channels, default ``q.weight``)."""
    import torch

    from .ref import _patches
    w = np.asarray(q.weight if weight is None else weight)
    xt = torch.as_tensor(np.asarray(x, dtype=np.int64).reshape(1, -1))
    pt = (_patches(xt, q)[0].numpy() != 0).astype(np.int64)     # (pixels, I)
    return _per_window(pt @ (w != 0).sum(axis=0).astype(np.int64), q.geom)


def predict(pm: PackedModel, x, skip_zero_acts: bool = True,
            hw: HwParams | None = None) -> list[LayerCycles]:
    """Per-layer predictions for one input vector (activations from the reference) on the
    hardware ``hw`` (default: the model's own parameters)."""
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    acts = [x] + [a.numpy().reshape(-1) for a in run_model(pm, x, return_all=True)[:-1]]
    # each layer sees its input in hardware order (the previous layer's row permutation)
    return [predict_layer(pm, i, a.reshape(pl.q.geom.in_shape[0], -1)[pl.in_perm].reshape(-1),
                          skip_zero_acts, hw)
            for i, (pl, a) in enumerate(zip(pm.layers, acts))]
