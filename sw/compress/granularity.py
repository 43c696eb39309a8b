"""Pruning at different granularities, compared at equal sparsity (Mao et al. 2017).

A weight tensor is cut into groups and whole groups are removed, the ones with the smallest
mean absolute weight first, until the removed fraction of *weights* is as close as whole groups
allow to the requested one (a layer always keeps at least one group). Granularities:

==========  ==============================  =====================================
name        Conv2d weight ``[O, C, K, K]``  Linear weight ``[O, I]`` (a 1x1 conv)
==========  ==============================  =====================================
element     one weight                      one weight
vector      one kernel row ``1 x K``        ``1 x vector`` run along the inputs
kernel      one ``K x K`` kernel            one weight (a 1x1 kernel)
block       ``b x b`` block of the          ``b x b`` block of ``W[O, I]``
            ``[O, C*K*K]`` matrix
filter      a whole filter (output row)     a whole neuron (output row)
channel     an input channel of all filters an input column
==========  ==============================  =====================================

Pruned groups are zeroed by masks on the modules (:mod:`zeroskip.sw.prune`; the shapes do not
change; :mod:`.structured` physically removes filters). Coarser groups need fewer indices: one index
addresses a whole group. :func:`index_cost` counts the relative-index entries (filler entries
included) and bits needed to address the kept groups, the saving Mao et al. report.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..prune import (
    Masks,
    PruneError,
    WeightImportance,
    attach_mask,
    resolve_weight_importance,
    weight_scores,
)
from .graph import weight_layers

__all__ = ["GRANULARITIES", "group_ids", "granular_prune", "index_cost", "IndexCost"]

GRANULARITIES = ("element", "vector", "kernel", "block", "filter", "channel")


def group_ids(weight: torch.Tensor, granularity: str, *, block: int = 4,
              vector: int = 4) -> torch.Tensor:
    """An int64 tensor shaped like ``weight``: the group number of each weight, numbered in
    storage order of the groups (output row major)."""
    shape = weight.shape
    if weight.dim() == 2:
        o, i = shape
        k = kw = 1
        c = i
    elif weight.dim() == 4:
        o, c, k, kw = shape
    else:
        raise PruneError(f"cannot group a weight of shape {tuple(shape)}")
    oo = torch.arange(o).view(-1, 1, 1, 1)
    cc = torch.arange(c).view(1, -1, 1, 1)
    rr = torch.arange(k).view(1, 1, -1, 1)
    ss = torch.arange(kw).view(1, 1, 1, -1)
    full = (o, c, k, kw)
    if granularity == "element":
        g = torch.arange(o * c * k * kw).view(full)
    elif granularity == "vector":
        if weight.dim() == 4:
            g = (oo * c + cc) * k + rr
        else:
            n = -(-c // vector)
            g = oo * n + cc // vector
    elif granularity == "kernel":
        g = oo * c + cc
    elif granularity == "block":
        cols = c * k * kw
        col = (cc * k + rr) * kw + ss
        n = -(-cols // block)
        g = (oo // block) * n + col // block
    elif granularity == "filter":
        g = oo
    elif granularity == "channel":
        g = cc
    else:
        raise PruneError(f"unknown granularity {granularity!r}; choose one of "
                         f"{', '.join(GRANULARITIES)}")
    g = g.expand(full).reshape(shape).contiguous()
    # renumber to 0..n-1 in storage order
    _, inv = torch.unique(g.flatten(), return_inverse=True)
    return inv.view(shape)


def _group_scores(scores: torch.Tensor, gid: torch.Tensor, mask: torch.Tensor):
    n = int(gid.max()) + 1
    flat = gid.flatten()
    absw = (scores * mask).flatten()
    s = torch.zeros(n, dtype=torch.float64).scatter_add_(0, flat, absw.double())
    size = torch.zeros(n, dtype=torch.float64).scatter_add_(0, flat, torch.ones_like(absw).double())
    alive = torch.zeros(n, dtype=torch.float64).scatter_add_(0, flat, mask.flatten().double())
    return s / size, size, alive


@torch.no_grad()
def granular_prune(model: nn.Module, sparsity: float, granularity: str = "element", *,
                   scope: str = "layer", block: int = 4, vector: int = 4,
                   layers: list[str] | None = None, masks: Masks | None = None,
                   importance: str | WeightImportance = "magnitude") -> Masks:
    """Remove whole groups until ``sparsity`` of the chosen layers' weights are zero, in place
    (masks are attached to the layers, as :func:`zeroskip.sw.prune.magnitude_prune` does).

    Groups are ranked by the mean importance of their weights (``importance(layer, name) ->
    scores shaped like the weight``, default ``"magnitude"``: ``|w|``; already pruned weights
    count as zero) within each layer (``scope="layer"``) or over all layers
    (``scope="global"``). The last group removed may overshoot the target by less than one
    group. ``masks`` is accepted for compatibility (the masks already on the model are used).
    Returns the :class:`~zeroskip.sw.prune.Masks` of the model.
    """
    s = float(sparsity)
    if not 0.0 <= s < 1.0:
        raise PruneError(f"sparsity must be in [0, 1), not {sparsity!r}")
    if masks is not None and masks.model is not model:
        raise PruneError("masks belong to another model")
    score_fn = resolve_weight_importance(importance)
    wl = weight_layers(model)
    names = list(layers) if layers is not None else list(wl)
    for n in names:
        if n not in wl:
            raise PruneError(f"no prunable layer named {n!r}; have {sorted(wl)}")
    if scope not in ("layer", "global"):
        raise PruneError(f"scope must be 'layer' or 'global', not {scope!r}")
    old = Masks(model).masks
    info = {}
    for n in names:
        w = wl[n].weight
        mask = old[n].clone() if n in old else torch.ones_like(w)
        gid = group_ids(w, granularity, block=block, vector=vector)
        score, size, _ = _group_scores(weight_scores(score_fn, wl[n], n), gid, mask)
        info[n] = (gid, score, size, mask)
    new: dict[str, torch.Tensor] = {}

    def choose(scores, sizes, budget):
        # remove the lowest-scored groups; stop at the count whose removed weights come
        # closest to the budget
        order = torch.argsort(scores, stable=True)
        cum = torch.cat([torch.zeros(1, dtype=sizes.dtype), torch.cumsum(sizes[order], 0)])
        k = int(torch.argmin((cum - budget).abs()))
        drop = torch.zeros(len(scores), dtype=torch.bool)
        drop[order[:k]] = True
        return drop

    def keep_one(drop, score):
        if bool(drop.all()):                 # never remove a whole layer
            drop = drop.clone()
            drop[int(torch.argmax(score))] = False
        return drop

    if scope == "layer":
        for n in names:
            gid, score, size, mask = info[n]
            drop = keep_one(choose(score, size, s * float(size.sum())), score)
            new[n] = mask * (~drop[gid]).to(mask.dtype)
    elif scope == "global":
        scores = torch.cat([info[n][1] for n in names])
        sizes = torch.cat([info[n][2] for n in names])
        drop = choose(scores, sizes, s * float(sizes.sum()))
        off = 0
        for n in names:
            gid, score, size, mask = info[n]
            d = keep_one(drop[off:off + len(score)], score)
            off += len(score)
            new[n] = mask * (~d[gid]).to(mask.dtype)
    for n in names:
        attach_mask(wl[n], new[n])
    return Masks(model)


@dataclass
class IndexCost:
    """Index storage of one layer at one granularity."""
    groups_kept: int
    entries: int            # relative-index entries, fillers included
    index_bits: int         # bits per entry's index field
    weights_kept: int

    @property
    def bits(self) -> int:
        return self.entries * self.index_bits

    @property
    def bits_per_weight(self) -> float:
        return self.bits / self.weights_kept if self.weights_kept else 0.0


def index_cost(mask: torch.Tensor, granularity: str, index_bits: int = 4, *, block: int = 4,
               vector: int = 4) -> IndexCost:
    """Relative-index cost of addressing the kept groups of ``mask``.

    Groups are visited in storage order; each kept group costs one entry whose index field is
    the number of groups skipped since the previous kept group, plus one filler entry for every
    ``2**index_bits - 1`` skipped groups more (the scheme of Deep Compression / the packer).
    Inside a kept group the weights are stored densely, without indices.
    """
    gid = group_ids(mask, granularity, block=block, vector=vector)
    n = int(gid.max()) + 1
    alive = torch.zeros(n, dtype=torch.float64).scatter_add_(0, gid.flatten(),
                                                             mask.flatten().double()) > 0
    pos = np.flatnonzero(alive.numpy())
    gaps = np.diff(np.concatenate([[-1], pos])) - 1
    maxd = (1 << index_bits) - 1
    fillers = int(np.sum(gaps // (maxd + 1)))
    kept_weights = int(torch.isin(gid, torch.from_numpy(pos)).sum())
    return IndexCost(len(pos), len(pos) + fillers, index_bits, kept_weights)
