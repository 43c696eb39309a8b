"""The packer and the model file (``.zsk``): relative-index weight streams for the PE array.

See ``docs/format.md`` for the exact byte layout. In short: output row ``r`` of a layer belongs
to PE ``r % pes`` (local row ``r // pes``). Per PE, column by column, each nonzero weight is an
entry ``(delta, weight)`` where ``delta`` counts the PE's zero rows skipped since the previous
entry of that column (or since local row 0). When a gap exceeds ``2**index_bits - 1`` a filler
entry ``(2**index_bits - 1, 0)`` is inserted. Per-PE column pointers ``ptr[j] .. ptr[j+1]``
give random access to column ``j``.
"""

from __future__ import annotations

import heapq
from dataclasses import dataclass

import numpy as np

from ..spec import HwParams, entry_layout, pack_fields
from .errors import FitError, FormatError
from .quant import QLayer, QModel

__all__ = ["MAGIC", "VERSION", "PackedLayer", "PackedModel", "pack_layer", "pack_model",
           "balance_rows", "unpack_layer", "write_model", "read_model", "to_bytes",
           "from_bytes", "save", "load", "check_fits", "unsupported_layer", "local_rows",
           "FormatError", "FitError",
           "ENC_RELATIVE", "KIND_FC", "KIND_CONV", "FLAG_REQUANT", "SECTIONS_PER_LAYER"]

_ENC_RELATIVE = 0               # the relative-index encoding (modelfile.ENC_RELATIVE)


@dataclass
class PackedLayer:
    """Per-PE streams of one layer plus its integer parameters.

    ``q`` is the layer in its original row and column order. The streams are in *hardware
    order*: hardware row ``r`` (PE ``r % pes``, local row ``r // pes``) computes original output
    ``perm[r]``, and stream column ``c`` is the layer's input at hardware position ``c``, i.e.
    original input ``in_perm[c]`` (the previous layer's ``perm``; the identity for layer 0).
    For a layer with an input map (a convolution, or an FC layer after ``Flatten``) ``in_perm``
    permutes the input *channels*; every column ``(c, ky, kx)`` follows its channel
    (:meth:`~zeroskip.sw.geometry.Geometry.column_perm`).
    """
    q: QLayer
    ptrs: list[np.ndarray]      # per PE: uint32 (in_features + 1,), ptrs[p][0] == 0
    entries: list[np.ndarray]   # per PE: uint16 entry bits
    encoding: int = _ENC_RELATIVE
    perm: np.ndarray | None = None      # hardware row -> original row (None: identity)
    in_perm: np.ndarray | None = None   # hardware input channel -> original input channel

    def __post_init__(self):
        if self.perm is None:
            self.perm = np.arange(self.q.out_features)
        if self.in_perm is None:
            self.in_perm = np.arange(self.q.geom.in_shape[0])
        self.perm = np.asarray(self.perm, dtype=np.int64)
        self.in_perm = np.asarray(self.in_perm, dtype=np.int64)

    def hw_weight(self) -> np.ndarray:
        """The weight matrix in hardware order (what the streams encode)."""
        cols = self.q.geom.column_perm(self.in_perm)
        return np.asarray(self.q.weight)[self.perm][:, cols]

    @property
    def n_entries(self) -> int:
        return int(sum(len(e) for e in self.entries))

    @property
    def nonzeros(self) -> int:
        return int(np.count_nonzero(self.q.weight))

    def stream_bytes(self, params: HwParams) -> int:
        """Bytes of weight entries and pointers as the hardware stores them."""
        ptr_bits = params.entry_addr_bits
        e = self.n_entries * params.entry_bits
        p = params.pes * (self.q.in_features + 1) * ptr_bits
        return (e + p + 7) // 8


@dataclass
class PackedModel:
    """A packed network: hardware parameters, the input quantizer's scale, the layers.

    ``format_version`` is the model file version :func:`to_bytes` writes by default (2; a
    model read from a version-1 file keeps 1 so that it re-encodes to the same bytes).
    """
    params: HwParams
    input_scale: float
    layers: list[PackedLayer]
    format_version: int = 2

    @property
    def in_shape(self) -> tuple[int, int, int]:
        """The input map ``(C, H, W)`` of the network (``(in, 1, 1)`` for a vector)."""
        return self.layers[0].q.geom.in_shape

    def qmodel(self) -> QModel:
        return QModel([pl.q for pl in self.layers], self.input_scale)

    def to_hw_order(self, out: np.ndarray) -> np.ndarray:
        """Reference outputs (original order) as the hardware emits them."""
        return np.asarray(out)[..., self.layers[-1].perm]

    def from_hw_order(self, out_hw: np.ndarray) -> np.ndarray:
        """Hardware outputs back in the model's original output order."""
        out_hw = np.asarray(out_hw)
        out = np.empty_like(out_hw)
        out[..., self.layers[-1].perm] = out_hw
        return out


def local_rows(out_features: int, pes: int, pe: int) -> int:
    """Rows of a layer with ``out_features`` rows that PE ``pe`` owns."""
    return max(0, (out_features - pe + pes - 1) // pes)


# Row balancing (balance_rows). The objective, for a PE assignment with C[p, j] nonzero weights
# of column j in PE p's rows and T[p] = sum_j C[p, j] of them in all, is
#     F = sum_{p,j} C[p, j]**2 + _BALANCE_LAM * sum_p T[p]**2.
# The column totals and the grand total are fixed, so F is smallest when every column's nonzeros
# are spread evenly over the PEs (the first sum) and the PE totals are even (the second). If the
# activations are nonzero independently with probability a, PE p's work
# W_p = sum_j [x_j != 0] C[p, j] has E[sum_p (W_p - mean_p W_p)**2] = a * (1 - a) * (first sum)
# + a**2 * (second sum) + a constant: weight 1 is right for a = 1/2.
_BALANCE_LAM = 1
_BALANCE_MAX_PASSES = 8          # sweeps over all rows of the swap search
_BALANCE_MAX_EVALS = 1 << 24     # candidate swaps evaluated in one call (rows**2 a sweep)
_BALANCE_MAX_ROWS = 4096         # above: no search (one sweep would exceed the budget)


def _lpt_assign(nnz: np.ndarray, pes: int) -> np.ndarray:
    """PE of each row by greedy longest processing time first: rows by decreasing nonzero count
    (ties: lower row first), each to the PE with the fewest nonzeros (ties: lower PE) among those
    with a free slot; PE ``p`` has ``local_rows(len(nnz), pes, p)`` slots."""
    out_f = len(nnz)
    slots = [local_rows(out_f, pes, p) for p in range(pes)]
    free = [(0, p) for p in range(pes) if slots[p]]    # (load, PE), a heap
    pe_of = np.empty(out_f, dtype=np.int64)
    for r in np.argsort(-np.asarray(nnz), kind="stable"):
        load, p = heapq.heappop(free)
        pe_of[r] = p
        slots[p] -= 1
        if slots[p]:
            heapq.heappush(free, (load + int(nnz[r]), p))
    return pe_of


def _perm_of_assignment(pe_of: np.ndarray, pes: int) -> np.ndarray:
    """``perm`` (hardware row -> row) putting each PE's rows, in increasing order, on its
    hardware rows ``p, p + pes, ...``."""
    rows = np.argsort(pe_of, kind="stable")              # by PE, then by row
    counts = np.bincount(pe_of, minlength=pes)
    local = np.arange(len(rows)) - np.repeat(np.cumsum(counts) - counts, counts)
    perm = np.empty(len(rows), dtype=np.int64)
    perm[pe_of[rows] + pes * local] = rows
    return perm


def _pe_column_counts(mask: np.ndarray, pe_of: np.ndarray, pes: int) -> np.ndarray:
    """``C``: ``C[p, j]`` nonzeros of column ``j`` in the rows assigned to PE ``p``."""
    return np.stack([mask[pe_of == p].sum(axis=0, dtype=np.int64) for p in range(pes)])


def _balance_objective(mask: np.ndarray, pe_of: np.ndarray, pes: int) -> int:
    """The objective ``F`` above for the 0/1 matrix ``mask`` and the assignment ``pe_of``."""
    c = _pe_column_counts(mask, pe_of, pes)
    t = c.sum(axis=1)
    return int((c * c).sum() + _BALANCE_LAM * (t * t).sum())


def _swap_search(mask: np.ndarray, pe_of: np.ndarray, pes: int) -> np.ndarray:
    """Lower ``F`` by swapping rows between PEs (slot counts stay); returns a new assignment.

    Sweeps the rows in order; for row ``r`` (PE ``p``) it evaluates the swap with every row
    ``s`` (PE ``q != p``) and makes the best one if it lowers ``F``. With ``d = mask[s] -
    mask[r]`` and ``k = nnz[s] - nnz[r]`` the swap changes ``F`` by twice

        d . (C[p] - C[q]) + |d|**2 + lam * (k * (T[p] - T[q]) + k**2)

    where ``d . C[p] = G[s, p] - G[r, p]`` with ``G = mask @ C.T`` and ``|d|**2 = nnz[r] +
    nnz[s] - 2 * O[r, s]`` with the row overlaps ``O = mask @ mask.T``. All integer, so the
    search is exact and deterministic; ``F`` strictly decreases with every swap.
    """
    n = mask.shape[0]
    pe_of = pe_of.copy()
    m32 = mask.astype(np.float32)
    # products of 0/1 matrices through BLAS: O's partial sums are integers <= in_features, exact
    # in float32 (below 2**24); G's are exact in float64
    overlap = np.rint(m32 @ m32.T).astype(np.int32)                         # O, (n, n)
    c = _pe_column_counts(mask, pe_of, pes)
    g = np.rint(c.astype(np.float64) @ m32.T.astype(np.float64)).astype(np.int64)  # G.T
    nnz = overlap.diagonal().astype(np.int64)
    tot = c.sum(axis=1)                                                     # T
    idx = np.arange(n)
    lam = _BALANCE_LAM
    sweeps = min(_BALANCE_MAX_PASSES, max(1, _BALANCE_MAX_EVALS // (n * n)))
    for _ in range(sweeps):
        swapped = False
        g_own = g[pe_of, idx]                                               # G[s, q(s)]
        for r in range(n):
            p = int(pe_of[r])
            k = nnz - nnz[r]
            delta = (g[p] - g_own - g[p, r] + g[pe_of, r] + nnz + nnz[r] - 2 * overlap[r]
                     + lam * (k * (tot[p] - tot[pe_of]) + k * k))
            delta[pe_of == p] = 0
            s = int(np.argmin(delta))
            if delta[s] >= 0:
                continue
            q = int(pe_of[s])
            moved = overlap[s] - overlap[r]             # mask @ d: G changes by +-this
            g[p] += moved
            g[q] -= moved
            tot[p] += k[s]
            tot[q] -= k[s]
            pe_of[r], pe_of[s] = q, p
            g_own = g[pe_of, idx]
            swapped = True
        if not swapped:
            break
    return pe_of


def balance_rows(weight: np.ndarray, pes: int) -> np.ndarray:
    """A row permutation that balances the work of the PEs for any pattern of zero activations.

    The hardware processes only the columns whose activation is nonzero, so PE ``p``'s work for
    an input ``x`` is ``sum_j [x_j != 0] * C[p, j]``, ``C[p, j]`` being the nonzero weights of
    column ``j`` in its rows. Equal totals per PE are not enough: every column's nonzeros must
    also be spread evenly over the PEs. The rows are first assigned greedily, longest first
    (each row to the PE with the fewest nonzeros among those with a free slot), which evens out
    the totals; then a swap search (:func:`_swap_search`) exchanges rows between PEs while that
    lowers ``sum C[p, j]**2 + sum_p T[p]**2`` (``T[p]`` the PE's total). The search is
    deterministic, makes at most 8 sweeps over the rows and ``2**24`` candidate evaluations,
    and is skipped when it cannot help (one PE, at most one row per PE, no nonzeros) or the
    layer has more than 4096 rows. The result is never worse than the greedy start on that
    objective.

    PE ``p`` gets exactly ``local_rows(out, pes, p)`` rows, in increasing order. Returns
    ``perm`` with ``perm[hardware row] = row``.
    """
    mask = np.asarray(weight) != 0
    out_f = mask.shape[0]
    nnz = np.count_nonzero(mask, axis=1)
    pe_of = _lpt_assign(nnz, pes)
    if pes > 1 and pes < out_f <= _BALANCE_MAX_ROWS and nnz.any():
        better = _swap_search(mask, pe_of, pes)
        if _balance_objective(mask, better, pes) < _balance_objective(mask, pe_of, pes):
            pe_of = better
    return _perm_of_assignment(pe_of, pes)


def pack_layer(q: QLayer, params: HwParams, dense: bool = False, perm=None,
               in_perm=None) -> PackedLayer:
    """Encode one layer. ``dense=True`` stores every weight, zeros included (delta always 0):
    the dense baseline the same hardware runs for speedup measurements. ``perm`` and
    ``in_perm`` put rows and columns in hardware order (see :class:`PackedLayer`)."""
    layer = PackedLayer(q, [], [], perm=perm, in_perm=in_perm)
    w = layer.hw_weight()
    out_f, in_f = w.shape
    P, maxd = params.pes, params.max_delta
    elay = entry_layout(params)
    ptrs, entries = [], []
    for p in range(P):
        sub = w[p::P, :]                      # local rows of PE p, (rows_p, in)
        ptr = np.zeros(in_f + 1, dtype=np.uint32)
        deltas: list[int] = []
        weights: list[int] = []
        for j in range(in_f):
            col = sub[:, j]
            rows = np.arange(len(col)) if dense else np.flatnonzero(col)
            prev = -1
            for r in rows:
                gap = int(r) - prev - 1
                while gap > maxd:             # filler: lands on a row, adds 0
                    deltas.append(maxd)
                    weights.append(0)
                    gap -= maxd + 1
                    prev += maxd + 1
                deltas.append(gap)
                weights.append(int(col[r]))
                prev = int(r)
            ptr[j + 1] = len(deltas)
        ptrs.append(ptr)
        # the entries' bits, laid out by entry_layout (zeroskip/spec.py)
        ent = pack_fields(elay, delta=np.asarray(deltas, dtype=np.int64),
                          weight=np.asarray(weights, dtype=np.int64))
        entries.append(np.asarray(ent, dtype=np.uint16))
    layer.ptrs, layer.entries = ptrs, entries
    return layer


def unpack_layer(ptrs, entries, out_features: int, in_features: int, params: HwParams,
                 where: str = "layer") -> np.ndarray:
    """Decode per-PE streams back into the dense int8 weight matrix (hardware order),
    validating every pointer and index (vectorized: linear in entries plus columns)."""
    from .modelfile import _decode_streams

    (rows, cols, vals), _ = _decode_streams(ptrs, entries, out_features, in_features, params,
                                            where)
    w = np.zeros((out_features, in_features), dtype=np.int8)
    w[rows, cols] = vals
    return w


def unsupported_layer(layers: list[QLayer], params: HwParams) -> str | None:
    """Why hardware built with ``params`` cannot run one of ``layers`` (one line), or ``None``.

    Hardware with the vector scanner (``params.conv`` 0, e.g. the iCEBreaker's) runs only
    fully-connected layers on vectors: an input map ``(C, 1, 1)`` and no pooling.
    """
    if params.conv:
        return None
    for i, q in enumerate(layers):
        g = q.geom
        c, h, w = g.in_shape
        what = (f"a convolution (kernel {g.kernel[0]}x{g.kernel[1]})" if g.kind == "conv"
                else f"a fully-connected layer on a {c}x{h}x{w} map" if (h, w) != (1, 1)
                else "a pooled layer" if g.pool is not None else None)
        if what is not None:
            return (f"layer {i} is {what}, but this hardware has no convolution scanner "
                    "(conv=0: fully-connected layers on vectors only)")
    return None


def check_fits(layers: list[QLayer], params: HwParams, entries_per_pe=None,
               abs_row_sums=None) -> None:
    """Raise :class:`FitError` naming the limit when the model does not fit ``params``.

    The conv rules (``docs/hardware.md``, "Limits and errors"): every layer's input and output
    map ``(C, H, W)`` takes ``H * W * ceil(C / pes)`` words of each activation bank, which holds
    ``ceil(act_depth / pes)``; no vector (a layer's ``C * H * W`` inputs or outputs) is longer
    than ``act_depth``; a layer takes ``C * KH * KW + 1`` column pointers and
    ``ceil(O / pes)`` rows per PE; the output layer's map is ``1 x 1``.

    ``abs_row_sums`` (per layer: ``sum_j |W[o, j]|`` for every row ``o``) replaces reading the
    weight matrices for the accumulator bound: the file reader checks the fit this way before
    it builds any dense matrix (the layers' ``weight`` then only needs a ``shape``).
    """
    if not layers:
        raise FitError("the model has no layers")
    why = unsupported_layer(layers, params)
    if why is not None:
        raise FitError(why)
    if len(layers) > params.max_layers:
        raise FitError(f"{len(layers)} layers exceed max_layers={params.max_layers}")
    P = params.pes
    bank = (params.act_depth + P - 1) // P
    ptrs = rows = 0
    for i, q in enumerate(layers):
        o, n = q.weight.shape
        g = q.geom
        if i and q.in_size != layers[i - 1].out_size:
            raise FitError(f"layer {i} takes {q.in_size} inputs but layer {i - 1} gives "
                           f"{layers[i - 1].out_size}")
        for what, v in (("inputs", q.in_size), ("outputs", q.out_size)):
            if v > params.act_depth:
                raise FitError(f"layer {i} has {v} {what}, more than act_depth="
                               f"{params.act_depth}")
        c, h, w = g.in_shape
        ph, pw = g.out_hw
        for what, (cc, hh, ww) in (("input", (c, h, w)), ("output", (o, ph, pw))):
            words = hh * ww * -(-cc // P)
            if words > bank:
                raise FitError(f"layer {i}'s {what} map {cc}x{hh}x{ww} needs {words} words of "
                               f"each activation bank, {words - bank} more than its {bank} "
                               f"(act_depth={params.act_depth} / pes={P})")
        if i == len(layers) - 1 and (ph, pw) != (1, 1):
            raise FitError(f"the output layer (layer {i}) gives a {o}x{ph}x{pw} map: the "
                           "output layer must give a 1x1 map (a fully-connected layer, or a "
                           "convolution whose output is 1x1)")
        if i < len(layers) - 1 and not q.requant:
            raise FitError(f"layer {i} is a hidden layer without requantization")
        if q.requant:
            if np.any(q.mult.astype(np.int64) >= 1 << params.mult_bits):
                raise FitError(f"layer {i}: a multiplier exceeds mult_bits={params.mult_bits}")
            s = q.shift.astype(np.int64)
            if np.any(s < 1) or np.any(s > params.max_shift):
                raise FitError(f"layer {i}: a shift is outside 1..{params.max_shift}")
        row_abs = abs_row_sums[i] if abs_row_sums is not None else np.abs(
            q.weight.astype(np.int64)).sum(axis=1)
        bound = np.asarray(row_abs, dtype=np.int64) * 255 + np.abs(q.bias.astype(np.int64))
        if bound.max(initial=0) > (1 << (params.acc_width - 1)) - 1:
            raise FitError(f"layer {i}: worst-case accumulator {int(bound.max())} overflows "
                           f"acc_width={params.acc_width}")
        ptrs += n + 1
        rows += (o + P - 1) // P
    if ptrs > params.ptr_depth:
        raise FitError(f"the model needs {ptrs} column pointers per PE, more than ptr_depth="
                       f"{params.ptr_depth} (by {ptrs - params.ptr_depth})")
    if rows > params.row_depth:
        raise FitError(f"the model needs {rows} rows per PE, more than row_depth="
                       f"{params.row_depth} (by {rows - params.row_depth})")
    if entries_per_pe is not None:
        worst = int(max(entries_per_pe))
        if worst > params.entry_depth:
            raise FitError(f"the model needs {worst} weight entries in one PE, more than "
                           f"entry_depth={params.entry_depth} (by {worst - params.entry_depth})")


def pack_model(qmodel: QModel, params: HwParams, dense: bool = False,
               balance: bool = True) -> PackedModel:
    """Pack every layer for ``params``; raises :class:`FitError` when it does not fit.

    ``balance`` permutes each layer's rows so that the PEs get about the same work whichever
    activations are zero (:func:`balance_rows`); the next layer's columns follow the permutation, so
    only the last layer's outputs come out permuted (the host puts them back in order).
    The dense packing is never permuted.
    """
    check_fits(qmodel.layers, params)
    layers = []
    in_perm = None
    for q in qmodel.layers:
        perm = balance_rows(q.weight, params.pes) if balance and not dense else None
        pl = pack_layer(q, params, dense=dense, perm=perm, in_perm=in_perm)
        layers.append(pl)
        in_perm = pl.perm
    per_pe = [sum(len(pl.entries[p]) for pl in layers) for p in range(params.pes)]
    check_fits(qmodel.layers, params, per_pe)
    return PackedModel(params, float(qmodel.input_scale), layers)


# ----------------------------------------------------------------------------- file format
# The writer and reader live in zeroskip.sw.modelfile; re-exported here for compatibility.

from .modelfile import (  # noqa: E402
    ENC_RELATIVE,
    FLAG_REQUANT,
    KIND_CONV,
    KIND_FC,
    MAGIC,
    SECTIONS_PER_LAYER,
    VERSION,
    from_bytes,
    read_model,
    to_bytes,
    write_model,
)

save, load = write_model, read_model
