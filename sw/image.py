"""The load image: the list of memory writes that puts a packed model into the accelerator.

Memories per PE (see ``docs/hardware.md``): column pointers of all layers stacked (layer ``l``
at ``ptr_base[l] = sum of (in_features + 1)`` of the layers before it, values are absolute entry
addresses), entries of all layers stacked, bias and requantization words per local row (layer
``l`` at ``row_base[l] = sum of ceil(out_features / pes)`` of the layers before it).

The hardware's column order is not PyTorch's: the scanner walks a receptive field kernel
position by kernel position and, at each, the channel groups, so it broadcasts column
``a = t * C + c`` for kernel position ``t = ky * KW + kx`` and channel ``c``
(:func:`scan_columns`); the load image stores the pointers, and the entries column by column,
in that order. The model file and :class:`~zeroskip.sw.pack.PackedLayer` keep PyTorch's order
``j = c * KH * KW + t``. For a vector (``KH = KW = 1``) the two are the same.
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
    DESC_GEOMETRY,
    DESC_HW_LAST,
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
from .pack import PackedLayer, PackedModel, local_rows

__all__ = ["LoadCmd", "load_commands", "encode_commands", "layer_bases", "scan_columns",
           "hw_streams", "layer_descriptor", "geometry_fields"]


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


def scan_columns(geom) -> np.ndarray:
    """``cols[a]``: the weight-matrix column (PyTorch order ``(c * KH + ky) * KW + kx``) of the
    hardware's column ``a = (ky * KW + kx) * C + c``."""
    c = geom.in_shape[0]
    kk = geom.kernel[0] * geom.kernel[1]
    a = np.arange(c * kk)
    return (a % c) * kk + a // c


def hw_streams(pl: PackedLayer, pe: int) -> tuple[np.ndarray, np.ndarray]:
    """PE ``pe``'s pointers (relative, ``C * KH * KW + 1``) and entries in the hardware's
    column order (:func:`scan_columns`)."""
    ptr = pl.ptrs[pe].astype(np.int64)
    ent = np.asarray(pl.entries[pe])
    cols = scan_columns(pl.q.geom)
    counts = np.diff(ptr)[cols]
    idx = [np.arange(ptr[j], ptr[j + 1]) for j in cols]
    order = np.concatenate(idx) if idx else np.zeros(0, dtype=np.int64)
    return (np.concatenate([[0], np.cumsum(counts)]).astype(np.int64),
            ent[order.astype(np.int64)])


def geometry_fields(geom, out_channels: int, pes: int) -> dict[str, int]:
    """The scanner's geometry fields (``hw/scanner.py:geometry_layout``) of a layer: bounds,
    and every address and coordinate step, the products computed here so that the hardware
    only adds. Addresses are ``(y * W + x) * G + c // pes`` with ``G = ceil(C / pes)``."""
    c, h, w = geom.in_shape
    kh, kw = geom.kernel
    s, pad = geom.stride, geom.padding
    k, sp_ = geom.pool if geom.pool is not None else (1, 1)
    ph, pw = geom.out_hw
    gin = -(-c // pes)
    return {
        "ch": c, "g_last": gin - 1, "kw_last": kw - 1, "kh_last": kh - 1,
        "map_h": h, "map_w": w,
        "a_kx": gin, "a_ky": w * gin, "a_wx": s * gin, "a_wy": s * w * gin,
        "a_px": sp_ * s * gin, "a_py": sp_ * s * w * gin, "a_org": (-pad * w - pad) * gin,
        "c_stride": s, "c_pstride": sp_ * s, "c_org": -pad,
        "win_last": k - 1, "pw_last": pw - 1, "ph_last": ph - 1,
        "g_out": -(-int(out_channels) // pes),
    }


def layer_descriptor(q, params: HwParams) -> dict[int, int]:
    """The descriptor words of a layer (``docs/hardware.md``, "Layer descriptors"), but for
    its pointer and row bases. Signed values are two's complement words (the hardware keeps
    the low bits; addresses are modulo the bank size)."""
    g = q.geom
    desc = {DESC_IN: q.in_size, DESC_OUT: q.out_features,
            DESC_FLAGS: encode(DESC_FLAGS_WORD, requant=int(bool(q.requant))),
            DESC_HW_LAST: g.in_shape[1] * g.in_shape[2] - 1}
    for name, v in geometry_fields(g, q.out_features, params.pes).items():
        desc[DESC_GEOMETRY[name]] = v & 0xFFFFFFFF
    return desc


def load_commands(pm: PackedModel, skip_zero_acts: bool = True) -> list[LoadCmd]:
    """Every write needed to load ``pm`` (configuration, descriptors, streams, parameters)."""
    p = pm.params
    cmds = [LoadCmd(MEM_CFG, 0, CFG_LAYERS, len(pm.layers)),
            LoadCmd(MEM_CFG, 0, CFG_FLAGS,
                    encode(CFG_FLAGS_WORD, skip_zero_acts=int(skip_zero_acts)))]
    entry_base = [0] * p.pes
    for li, (pl, (ptr_base, row_base)) in enumerate(zip(pm.layers, layer_bases(pm))):
        q = pl.q
        desc = {**layer_descriptor(q, p), DESC_PTR_BASE: ptr_base, DESC_ROW_BASE: row_base}
        cmds += [LoadCmd(MEM_DESC, 0, desc_addr(p, li, f), v) for f, v in sorted(desc.items())]
        for pe in range(p.pes):
            ptr_rel, ent_hw = hw_streams(pl, pe)
            ptrs = ptr_rel + entry_base[pe]
            # each pointer word also says whether its column is empty in this PE (the
            # hardware then needs no compare of the two pointers)
            empty = np.append(ptrs[1:] == ptrs[:-1], False)
            words = pack_fields(PTR_WORD, addr=ptrs, empty=empty.astype(np.int64))
            cmds += [LoadCmd(MEM_PTR, pe, ptr_base + j, int(v)) for j, v in enumerate(words)]
            cmds += [LoadCmd(MEM_ENTRY, pe, entry_base[pe] + k, int(v))
                     for k, v in enumerate(ent_hw)]
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
