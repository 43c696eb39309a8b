"""The load image: the list of memory writes that puts a packed model into the accelerator.

Memories per PE (see ``docs/hardware.md``): column pointers of all layers stacked (layer ``l``
at ``ptr_base[l] = sum of (in_features + 1)`` of the layers before it, values are absolute entry
addresses), entries of all layers stacked, bias and requantization words per local row (layer
``l`` at ``row_base[l] = sum of ceil(out_features / pes)`` of the layers before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .pack import PackedModel, local_rows
from .params import (
    CFG_FLAGS,
    CFG_LAYERS,
    DESC_FIELDS,
    DESC_FLAGS,
    DESC_IN,
    DESC_OUT,
    DESC_PTR_BASE,
    DESC_ROW_BASE,
    FLAG_SKIP_ZERO_ACTS,
    LDESC_REQUANT,
    MEM_BIAS,
    MEM_CFG,
    MEM_DESC,
    MEM_ENTRY,
    MEM_PTR,
    MEM_RQ,
    PTR_EMPTY_BIT,
    HwParams,
    load_layout,
)

__all__ = ["LoadCmd", "load_commands", "encode_commands", "layer_bases"]


@dataclass(frozen=True)
class LoadCmd:
    mem: int
    pe: int
    addr: int
    data: int


def layer_bases(pm: PackedModel) -> list[tuple[int, int]]:
    """``(ptr_base, row_base)`` of every layer."""
    out, ptr, row = [], 0, 0
    for pl in pm.layers:
        out.append((ptr, row))
        ptr += pl.q.in_features + 1
        row += (pl.q.out_features + pm.params.pes - 1) // pm.params.pes
    return out


def load_commands(pm: PackedModel, skip_zero_acts: bool = True) -> list[LoadCmd]:
    """Every write needed to load ``pm`` (configuration, descriptors, streams, parameters)."""
    p = pm.params
    cmds = [LoadCmd(MEM_CFG, 0, CFG_LAYERS, len(pm.layers)),
            LoadCmd(MEM_CFG, 0, CFG_FLAGS, FLAG_SKIP_ZERO_ACTS if skip_zero_acts else 0)]
    entry_base = [0] * p.pes
    for li, (pl, (ptr_base, row_base)) in enumerate(zip(pm.layers, layer_bases(pm))):
        q = pl.q
        d = li * DESC_FIELDS
        cmds += [LoadCmd(MEM_DESC, 0, d + DESC_IN, q.in_features),
                 LoadCmd(MEM_DESC, 0, d + DESC_OUT, q.out_features),
                 LoadCmd(MEM_DESC, 0, d + DESC_PTR_BASE, ptr_base),
                 LoadCmd(MEM_DESC, 0, d + DESC_ROW_BASE, row_base),
                 LoadCmd(MEM_DESC, 0, d + DESC_FLAGS, LDESC_REQUANT if q.requant else 0)]
        for pe in range(p.pes):
            ptrs = pl.ptrs[pe].astype(np.int64) + entry_base[pe]
            # each pointer word also says whether its column is empty in this PE (the
            # hardware then needs no compare of the two pointers)
            empty = np.append(ptrs[1:] == ptrs[:-1], False)
            cmds += [LoadCmd(MEM_PTR, pe, ptr_base + j, int(v) | int(e) << PTR_EMPTY_BIT)
                     for j, (v, e) in enumerate(zip(ptrs, empty))]
            cmds += [LoadCmd(MEM_ENTRY, pe, entry_base[pe] + k, int(v))
                     for k, v in enumerate(pl.entries[pe])]
            entry_base[pe] += len(pl.entries[pe])
            rows = range(pe, q.out_features, p.pes)
            assert len(rows) == local_rows(q.out_features, p.pes, pe)
            for l, r_hw in enumerate(rows):
                r = int(pl.perm[r_hw])      # the original row this hardware row computes
                cmds.append(LoadCmd(MEM_BIAS, pe, row_base + l, int(q.bias[r]) & 0xFFFFFFFF))
                rq = (int(q.mult[r]) | int(q.shift[r]) << 16) if q.requant else 0
                cmds.append(LoadCmd(MEM_RQ, pe, row_base + l, rq))
    return cmds


def encode_commands(params: HwParams, cmds: list[LoadCmd]) -> list[int]:
    """The integer payloads of the ``load`` stream, laid out by :func:`load_layout`."""
    layout = load_layout(params)
    return [layout.const({"mem": c.mem, "pe": c.pe, "addr": c.addr, "data": c.data}).as_bits()
            for c in cmds]
