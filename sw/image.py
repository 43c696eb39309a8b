"""The load image: the list of memory writes that puts a packed model into the accelerator.

Memories per PE (see ``docs/hardware.md``): column pointers of all layers stacked (layer ``l``
at ``ptr_base[l] = sum of (in_features + 1)`` of the layers before it, values are absolute entry
addresses), entries of all layers stacked, bias and requantization words per local row (layer
``l`` at ``row_base[l] = sum of ceil(out_features / pes)`` of the layers before it).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from ..spec import (
    BIAS_WORD,
    CFG_FLAGS,
    CFG_FLAGS_WORD,
    CFG_LAYERS,
    DESC_FLAGS,
    DESC_FLAGS_WORD,
    DESC_IN,
    DESC_OUT,
    DESC_PTR_BASE,
    DESC_ROW_BASE,
    MEM_BIAS,
    MEM_CFG,
    MEM_DESC,
    MEM_ENTRY,
    MEM_PTR,
    MEM_RQ,
    PTR_WORD,
    RQ_WORD,
    HwParams,
    desc_addr,
    encode,
    load_layout,
    pack_fields,
)
from .pack import PackedModel, local_rows

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
            LoadCmd(MEM_CFG, 0, CFG_FLAGS,
                    encode(CFG_FLAGS_WORD, skip_zero_acts=int(skip_zero_acts)))]
    entry_base = [0] * p.pes
    for li, (pl, (ptr_base, row_base)) in enumerate(zip(pm.layers, layer_bases(pm))):
        q = pl.q
        cmds += [LoadCmd(MEM_DESC, 0, desc_addr(p, li, field), value) for field, value in (
            (DESC_IN, q.in_features), (DESC_OUT, q.out_features), (DESC_PTR_BASE, ptr_base),
            (DESC_ROW_BASE, row_base),
            (DESC_FLAGS, encode(DESC_FLAGS_WORD, requant=int(bool(q.requant)))))]
        for pe in range(p.pes):
            ptrs = pl.ptrs[pe].astype(np.int64) + entry_base[pe]
            # each pointer word also says whether its column is empty in this PE (the
            # hardware then needs no compare of the two pointers)
            empty = np.append(ptrs[1:] == ptrs[:-1], False)
            words = pack_fields(PTR_WORD, addr=ptrs, empty=empty.astype(np.int64))
            cmds += [LoadCmd(MEM_PTR, pe, ptr_base + j, int(v)) for j, v in enumerate(words)]
            cmds += [LoadCmd(MEM_ENTRY, pe, entry_base[pe] + k, int(v))
                     for k, v in enumerate(pl.entries[pe])]
            entry_base[pe] += len(pl.entries[pe])
            rows = range(pe, q.out_features, p.pes)
            assert len(rows) == local_rows(q.out_features, p.pes, pe)
            for l, r_hw in enumerate(rows):
                r = int(pl.perm[r_hw])      # the original row this hardware row computes
                cmds.append(LoadCmd(MEM_BIAS, pe, row_base + l,
                                    encode(BIAS_WORD, bias=int(q.bias[r]))))
                rq = (encode(RQ_WORD, mult=int(q.mult[r]), shift=int(q.shift[r]))
                      if q.requant else 0)
                cmds.append(LoadCmd(MEM_RQ, pe, row_base + l, rq))
    return cmds


def encode_commands(params: HwParams, cmds: list[LoadCmd]) -> list[int]:
    """The integer payloads of the ``load`` stream, laid out by :func:`load_layout`."""
    layout = load_layout(params)
    return [layout.const({"mem": c.mem, "pe": c.pe, "addr": c.addr, "data": c.data}).as_bits()
            for c in cmds]
