"""A cycle model of the PE array, to predict and explain the RTL's cycle counts.

The model follows the micro-architecture of ``docs/hardware.md`` column by column: the scanner
reads rows of ``pes`` activations and broadcasts each nonzero one (every one, with skipping off)
to all PE queues, one per cycle, waiting while any queue is full; each PE takes a column from its
queue into its pointer stage, drops empty columns there in one cycle, passes nonempty ones
through a two-entry job queue, and issues one entry per cycle from its entry stage, back to back
across columns. After the last PE drains, every PE finalizes its rows (one per cycle,
pipelined). It is an event model, not a simulation of every signal: constants for pipeline
latencies were read off the RTL and are checked against it by the tests and
``nox -s bench``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pack import PackedModel
from .ref import run_model

__all__ = ["LayerCycles", "predict_layer", "predict", "useful_macs", "dense_macs"]

# pipeline constants of the RTL (hw/accel.py, hw/pe.py)
SCAN_LATENCY = 1      # bank read -> broadcast register
QUEUE_LATENCY = 2     # broadcast -> visible at the PE's queue output (buffered FIFO)
DRAIN = 4             # last entry issued -> accumulated and idle
FINAL_LATENCY = 8     # finalization pipeline depth plus start/done handshakes
LAYER_OVERHEAD = 2    # descriptor fetch, scan start and state changes per layer


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
    return int(sum(int(((pl.q.weight != 0) @ (a != 0).astype(np.int64)).sum())
                   for pl, a in zip(pm.layers, acts)))


def dense_macs(pm: PackedModel) -> int:
    return int(sum(pl.q.in_features * pl.q.out_features for pl in pm.layers))


def predict_layer(pm: PackedModel, layer: int, x, skip_zero_acts: bool = True) -> LayerCycles:
    """Cycles of one layer for one input vector ``x`` (uint8 codes of that layer's input, in
    hardware order: see :attr:`~zeroskip.sw.pack.PackedLayer.in_perm`)."""
    p = pm.params
    pl = pm.layers[layer]
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    counts = np.stack([np.diff(ptr.astype(np.int64)) for ptr in pl.ptrs])   # (P, in)
    cols = np.flatnonzero(x) if skip_zero_acts else np.arange(x.size)
    P = p.pes
    cap = p.fifo_depth
    take = [[] for _ in range(P)]   # cycle PE q's pointer stage took column k
    s1_free = [0] * P               # earliest cycle the pointer stage can take a column
    s2_free = [0] * P               # earliest cycle the entry stage can start a column
    jobs = [[] for _ in range(P)]   # cycle the entry stage started each nonempty column
    n_rows = (x.size + P - 1) // P
    row_of = cols // P
    a_time = 1                      # the cycle row 0 is on the bank read ports (stage A)
    b_free = 0                      # the cycle the row register (stage B) can load a row
    push_prev = 0
    t = 0
    k = 0
    for r in range(n_rows):
        if k >= len(cols) or row_of[k] != r:
            load = max(a_time, b_free)                 # nothing to emit: one cycle in B
            b_free = a_time = load + 1
            continue
        load = max(a_time, b_free)                     # A -> B
        t = load + 1
        while k < len(cols) and row_of[k] == r:
            j = int(cols[k])
            e = max(t, push_prev)                      # emitted into the broadcast register
            push = e + SCAN_LATENCY
            if k >= cap:
                push = max(push, max(take[q][k - cap] for q in range(P)) + 1)
            push_prev = push
            for q in range(P):
                a = max(push + QUEUE_LATENCY, s1_free[q])   # pointer stage takes the column
                take[q].append(a)
                n = int(counts[q, j])
                if n == 0:
                    s1_free[q] = a + 1                         # dropped
                    continue
                pops = jobs[q]
                u = a + 1 if len(pops) < 2 else max(a + 1, pops[-2] + 1)  # into the job queue
                b = max(u + 1, s2_free[q])                     # entry stage starts it
                pops.append(b)
                s2_free[q] = b + n
                s1_free[q] = u
            t = e + 1
            k += 1
        b_free = t - 1                                 # B loads again as it emits its last
        a_time = load + 1
    t = max(t, a_time)
    end = max([t, push_prev + 1] + [s2_free[q] + DRAIN for q in range(P)])
    rows = (pl.q.out_features + P - 1) // P
    finalize = rows + FINAL_LATENCY
    sel = counts[:, cols]
    work = [int(v) for v in sel.sum(axis=1)]
    w = pl.hw_weight()
    useful = int(((w != 0) @ (x != 0).astype(np.int64)).sum())
    return LayerCycles(end + finalize + LAYER_OVERHEAD, end, finalize, useful, int(sel.sum()),
                       work)


def predict(pm: PackedModel, x, skip_zero_acts: bool = True) -> list[LayerCycles]:
    """Per-layer predictions for one input vector (activations from the reference)."""
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    acts = [x] + [a.numpy().reshape(-1) for a in run_model(pm, x, return_all=True)[:-1]]
    # each layer sees its input in hardware order (the previous layer's row permutation)
    return [predict_layer(pm, i, a[pm.layers[i].in_perm], skip_zero_acts)
            for i, a in enumerate(acts)]
