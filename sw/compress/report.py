"""Deep Compression style storage report: what each layer costs after pruning, quantization /
weight sharing and Huffman coding, with the indices counted.

For every Linear/Conv2d layer (a convolution is the matrix ``W[O, C*K*K]``):

1. **Weight codes.** A layer with at most 255 distinct nonzero values (weight sharing, ternary)
   is quantized per tensor, which reproduces a snapped int8 codebook exactly; otherwise int8
   per output channel (:func:`zeroskip.sw.quant.quantize_weight`). With ``n`` distinct codes
   (zero included) a code takes ``k = ceil(log2 n)`` bits and, when ``k < 8``, the layer stores
   a codebook of ``2**k`` int8 values.
2. **Relative index.** The nonzero codes, in column-major order over the whole matrix, are one
   relative-index stream built by the packer (:func:`zeroskip.sw.pack.pack_layer` with one PE
   on the flattened matrix, so no column pointers are needed; the host re-packs for the PE
   array): each entry is ``(delta, code)``; a filler ``(2**b - 1, 0)`` is inserted for each
   gap longer than ``2**b - 1``. The index width ``b`` is chosen per layer (2..8) to minimize
   the total. Fillers cost a weight code and an index, as in Deep Compression.
3. **Huffman.** The codes and the deltas get a canonical Huffman code each
   (:mod:`.huffman`); the tables are counted (symbol + 6-bit length per used symbol).

Also counted: the weight scales (32 bits each), biases and every other parameter (BatchNorm)
at 32 bits. The dense baseline is every parameter as float32. Separately, ``hw_bytes`` is the
size of the layer's weight entries plus column pointers as the PE array stores them (packer
with the given :class:`~zeroskip.sw.params.HwParams`, fixed-width fields, no Huffman).
"""

from __future__ import annotations

import copy
import math
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
from torch import nn
from torch.nn.utils import parametrize

from ..pack import pack_layer
from ..params import HwParams, decode_entry
from ..quant import QLayer, quantize_weight
from .graph import plain_weight, weight_layers
from .huffman import HuffmanCode

__all__ = ["LayerReport", "CompressionReport", "weight_codes", "compression_report",
           "quantized_copy"]


def weight_codes(weight: torch.Tensor) -> tuple[np.ndarray, np.ndarray, bool]:
    """``(int8 codes (O, rest), scales (O,), per_tensor)`` for a layer's weight."""
    w = weight.detach().reshape(weight.shape[0], -1).double()
    nz = w[w != 0]
    per_tensor = torch.unique(nz).numel() <= 255
    codes, scale = quantize_weight(w, per_channel=not per_tensor)
    return codes, scale, per_tensor


@torch.no_grad()
def quantized_copy(model: nn.Module) -> nn.Module:
    """A copy of ``model`` whose weights are exactly what the report stores (codes x scale);
    ``model`` is not changed (as the name says; the copy's layers are plain, masks made
    permanent)."""
    model = copy.deepcopy(model)
    for m in weight_layers(model).values():
        weight = plain_weight(m)
        codes, scale, _ = weight_codes(weight)
        w = torch.from_numpy(codes.astype(np.float64) * scale[:, None])
        weight.copy_(w.reshape(weight.shape).to(weight.dtype))
    return model


@dataclass
class LayerReport:
    name: str
    shape: tuple
    weights: int
    kept: int
    entries: int               # relative-index entries, fillers included
    code_bits: int             # fixed width of a weight code
    index_bits: int            # fixed width of a delta
    bits_per_weight: float     # (Huffman-coded) weight-code bits per kept weight
    bits_per_index: float      # (Huffman-coded) index bits per kept weight
    codebook_bytes: float
    table_bytes: float
    overhead_bytes: float      # scales and bias
    dense_bytes: int
    compressed_bytes: int
    hw_entries: int
    hw_bytes: int

    @property
    def density(self) -> float:
        return self.kept / self.weights if self.weights else 0.0

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.compressed_bytes if self.compressed_bytes else math.inf


@dataclass
class CompressionReport:
    layers: list[LayerReport]
    other_params: int
    dense_bytes: int
    compressed_bytes: int
    huffman: bool
    extra: dict = field(default_factory=dict)

    @property
    def ratio(self) -> float:
        return self.dense_bytes / self.compressed_bytes

    @property
    def weights(self) -> int:
        return sum(r.weights for r in self.layers)

    @property
    def kept(self) -> int:
        return sum(r.kept for r in self.layers)

    def to_dict(self) -> dict:
        d = {"dense_bytes": self.dense_bytes, "compressed_bytes": self.compressed_bytes,
             "ratio": self.ratio, "weights": self.weights, "kept": self.kept,
             "other_params": self.other_params, "huffman": self.huffman, "layers": []}
        for r in self.layers:
            x = asdict(r)
            x["shape"] = list(r.shape)
            x["density"] = r.density
            x["ratio"] = r.ratio
            d["layers"].append(x)
        return d

    def to_markdown(self) -> str:
        head = ("| layer | shape | weights | kept | bits/weight | bits/index | index bits | "
                "bytes before | bytes after | ratio |\n|---|---|---:|---:|---:|---:|---:|---:|"
                "---:|---:|\n")
        rows = []
        for r in self.layers:
            rows.append(f"| {r.name} | {'x'.join(map(str, r.shape))} | {r.weights} | {r.kept} "
                        f"({100 * r.density:.1f}%) | {r.bits_per_weight:.2f} | "
                        f"{r.bits_per_index:.2f} | {r.index_bits} | {r.dense_bytes} | "
                        f"{r.compressed_bytes} | {r.ratio:.1f}x |")
        other = f" (+{self.other_params} other params)" if self.other_params else ""
        rows.append(f"| total{other}"
                    f" | | {self.weights} | {self.kept} ({100 * self.kept / self.weights:.1f}%)"
                    f" | | | | {self.dense_bytes} | {self.compressed_bytes} | "
                    f"{self.ratio:.1f}x |")
        return head + "\n".join(rows) + "\n"

    def __str__(self) -> str:
        return self.to_markdown()


def _stream_counts(flat_codes: np.ndarray, b: int):
    """Symbol counts of the flat relative-index stream at index width ``b`` (vectorized; the
    packer builds the same stream)."""
    pos = np.flatnonzero(flat_codes)
    gaps = np.diff(np.concatenate([[-1], pos])) - 1
    maxd = (1 << b) - 1
    fill = gaps // (maxd + 1)
    deltas = np.bincount(gaps % (maxd + 1), minlength=maxd + 1).astype(np.int64)
    deltas[maxd] += int(fill.sum())
    vals, cnt = np.unique(flat_codes[pos].astype(np.int64), return_counts=True)
    wc = dict(zip(vals.tolist(), cnt.tolist()))
    if fill.sum():
        wc[0] = wc.get(0, 0) + int(fill.sum())
    dc = {i: int(c) for i, c in enumerate(deltas) if c}
    return len(pos) + int(fill.sum()), wc, dc


def _cost(entries, wc, dc, b, k, huffman):
    if not huffman:
        return entries * (k + b), entries * k, entries * b, 0
    hw, hd = HuffmanCode.from_frequencies(wc), HuffmanCode.from_frequencies(dc)
    wbits, dbits = hw.encoded_bits(wc), hd.encoded_bits(dc)
    table = hw.table_bits(k) + hd.table_bits(b)
    return wbits + dbits + table, wbits, dbits, table


@torch.no_grad()
def compression_report(model: nn.Module, *, huffman: bool = True,
                       index_bits: int | None = None, params: HwParams | None = None,
                       hw: bool = True) -> CompressionReport:
    """The storage report of ``model`` (see the module docstring).

    ``index_bits=None`` picks the best width per layer in 2..8; ``params`` are the hardware
    parameters for the ``hw_*`` columns (default :class:`HwParams`); ``hw=False`` skips them.
    """
    params = params or HwParams()
    wl = weight_layers(model)
    layers = []
    weight_ids = set()
    for name, m in wl.items():
        weight_ids.add(id(m.parametrizations.weight.original
                          if parametrize.is_parametrized(m, "weight") else m.weight))
        if m.bias is not None:
            weight_ids.add(id(m.bias))
        codes, scale, per_tensor = weight_codes(m.weight)
        o = codes.shape[0]
        flat = codes.T.reshape(-1)                  # column-major: column by column
        n_sym = len(np.union1d(np.unique(codes), [0]))
        k = min(8, max(1, math.ceil(math.log2(n_sym))))
        codebook_bits = (1 << k) * 8 if k < 8 else 0
        best = None
        for b in ([index_bits] if index_bits else range(2, 9)):
            entries, wc, dc = _stream_counts(flat, b)
            cost = _cost(entries, wc, dc, b, k, huffman)
            if best is None or cost[0] < best[1][0]:
                best = (b, cost, entries, wc, dc)
        b, (total, wbits, dbits, table), entries, wc, dc = best
        # the packer builds the stream; check that its statistics are the ones we counted
        hp = HwParams(pes=1, index_bits=b)
        zeros1 = np.zeros(flat.size, np.int32)
        pl = pack_layer(QLayer(flat.reshape(-1, 1).astype(np.int8), zeros1, zeros1, zeros1,
                               False), hp)
        ent = pl.entries[0]
        dec = [decode_entry(hp, int(e)) for e in ent] if ent.size < 200_000 else None
        if dec is not None:
            ds = np.bincount([d for d, _ in dec], minlength=(1 << b)) if dec else []
            assert len(ent) == entries and {i: int(c) for i, c in enumerate(ds) if c} == dc, \
                "report stream statistics disagree with the packer"
        overhead_bits = 32 * (1 if per_tensor else o) + (32 * o if m.bias is not None else 0)
        bits = total + codebook_bits + overhead_bits
        n_params = m.weight.numel() + (m.bias.numel() if m.bias is not None else 0)
        kept = int(np.count_nonzero(codes))
        hw_entries = hw_bytes = 0
        if hw:
            ql = QLayer(codes, np.zeros(o, np.int32), np.zeros(o, np.uint16),
                        np.zeros(o, np.uint8), False)
            hpl = pack_layer(ql, params)
            hw_entries, hw_bytes = hpl.n_entries, hpl.stream_bytes(params)
        layers.append(LayerReport(
            name=name, shape=tuple(m.weight.shape), weights=m.weight.numel(), kept=kept,
            entries=entries, code_bits=k, index_bits=b,
            bits_per_weight=wbits / max(kept, 1), bits_per_index=dbits / max(kept, 1),
            codebook_bytes=codebook_bits / 8, table_bytes=table / 8,
            overhead_bytes=overhead_bits / 8, dense_bytes=4 * n_params,
            compressed_bytes=math.ceil(bits / 8), hw_entries=hw_entries, hw_bytes=hw_bytes))
    other = int(sum(p.numel() for p in model.parameters() if id(p) not in weight_ids))
    dense = 4 * int(sum(p.numel() for p in model.parameters()))
    comp = sum(r.compressed_bytes for r in layers) + 4 * other
    return CompressionReport(layers, other, dense, comp, huffman)
