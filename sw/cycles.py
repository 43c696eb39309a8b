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
from .pack import PackedModel, local_rows
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
LAYER_START = Accelerator.LAYER_START       # counting the last cycle (layer 0's start)
LAYER_SWITCH = Accelerator.LAYER_SWITCH     # descriptor-wait and descriptor cycles per layer


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


def predict_layer(pm: PackedModel, layer: int, x, skip_zero_acts: bool = True,
                  hw: HwParams | None = None) -> LayerCycles:
    """Cycles of one layer for one input vector ``x`` (uint8 codes of that layer's input, in
    hardware order: see :attr:`~zeroskip.sw.pack.PackedLayer.in_perm`) on the hardware ``hw``
    (default: the parameters the model was packed with; a model file does not record the
    hardware-only ones, such as ``fin_lanes``)."""
    p = hw if hw is not None else pm.params
    if not pm.params.packs_like(p):
        raise ValueError(f"the model was packed for {pm.params}, not for {p}")
    pl = pm.layers[layer]
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    counts = np.stack([np.diff(ptr.astype(np.int64)) for ptr in pl.ptrs])   # (P, in)
    cols = np.flatnonzero(x) if skip_zero_acts else np.arange(x.size)
    P = p.pes
    cap = p.fifo_depth
    s2_free = [0] * P               # earliest cycle the entry stage can pop a column
    gone = [[] for _ in range(P)]   # sorted cycles at which PE q dropped or popped a column
    last_gone = [0] * P
    n_rows = (x.size + P - 1) // P
    row_of = cols // P
    a_time = READ_LATENCY           # the cycle row 0 is in the read register (stage R)
    b_free = 0                      # the cycle the row register (stage B) can load a row
    push_prev = -10
    scan_end = 0                    # the scanner is done (nothing in A, R, B or broadcast)
    t = 0
    k = 0

    def credit(q: int, when: int, need: int) -> bool:
        # the PE's registered ready at ``when``: columns dropped or popped up to when - 1
        return need <= 0 or bisect_right(gone[q], when - 1) >= need

    for r in range(n_rows):
        if k >= len(cols) or row_of[k] != r:
            load = max(a_time, b_free)                 # nothing to emit: one cycle in B
            b_free = a_time = load + 1
            scan_end = max(scan_end, load + EMPTY_ROW_CYCLES)   # B empty again
            continue
        load = max(a_time, b_free)                     # R -> B
        t = load + 1
        while k < len(cols) and row_of[k] == r:
            j = int(cols[k])
            e = max(t, push_prev)                      # emitted into the broadcast register
            push = e + SCAN_LATENCY                    # taken by every PE (all have credit)
            while True:
                need = k - cap + 1                     # a PE has at most cap columns
                if all(credit(q, push, need) for q in range(P)):
                    break
                push += 1
            push_prev = push
            for q in range(P):
                n = int(counts[q, j])
                if n == 0:
                    done = push + POINTER_LATENCY + DROP_CREDIT   # dropped at P2
                else:
                    done = max(push + POINTER_LATENCY + QUEUE_LATENCY, s2_free[q])   # popped
                    s2_free[q] = done + n
                insort(gone[q], done)
                last_gone[q] = max(last_gone[q], done)
            t = e + 1
            k += 1
        b_free = t - 1                                 # B loads again as it emits its last
        a_time = load + 1
    # every PE finalizes by itself once the scanner is done and it has drained: fin_lanes
    # rows a cycle from F0 (the cycle after it starts); the sequencer sees it done
    # FINAL_LATENCY cycles after the F0 of its last rows
    scan_done = max(scan_end, push_prev + 1) + SCAN_DONE
    rows_q = [local_rows(pl.q.out_features, P, q) for q in range(P)]
    finish = []
    for q in range(P):
        drained = max([scan_done] + ([s2_free[q] + DRAIN] if s2_free[q] else [])
                      + [last_gone[q] + DROP_DRAIN])
        # no rows: done (a register) two cycles after it starts, seen through the AND after 3
        steps = -(-rows_q[q] // p.fin_lanes)          # fin_lanes rows a cycle
        finish.append(drained + (steps + FINAL_LATENCY if steps else NO_ROWS_FINISH))
    end = max(finish)
    compute = max(max([scan_done] + [s2_free[q] + DRAIN for q in range(P) if s2_free[q]]
                      + [g + DROP_DRAIN for g in last_gone]), 0)
    finalize = end - compute
    sel = counts[:, cols]
    work = [int(v) for v in sel.sum(axis=1)]
    w = pl.hw_weight()
    useful = int(((w != 0) @ (x != 0).astype(np.int64)).sum())
    overhead = LAYER_START + (LAYER_SWITCH if layer else 0)
    return LayerCycles(end + overhead, compute, finalize, useful, int(sel.sum()), work)


def predict(pm: PackedModel, x, skip_zero_acts: bool = True,
            hw: HwParams | None = None) -> list[LayerCycles]:
    """Per-layer predictions for one input vector (activations from the reference) on the
    hardware ``hw`` (default: the model's own parameters)."""
    x = np.asarray(x, dtype=np.int64).reshape(-1)
    acts = [x] + [a.numpy().reshape(-1) for a in run_model(pm, x, return_all=True)[:-1]]
    # each layer sees its input in hardware order (the previous layer's row permutation)
    return [predict_layer(pm, i, a[pm.layers[i].in_perm], skip_zero_acts, hw)
            for i, a in enumerate(acts)]
