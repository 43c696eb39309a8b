"""Structured pruning: physically remove neurons, filters and channels.

The result is a smaller dense model: a removed filter takes its output channel, its BatchNorm
entries and the matching input channel (or, after ``Flatten``, the matching ``H*W`` input
features) of the next layer with it. The three steps are separate: importance
(:mod:`.importance`: built-in criteria ``"l1"``, ``"bn"``, ``"mean_act"``, ``"apoz"`` or any
callable ``(model, units, x) -> {unit: scores}``), selection (:mod:`.selection`) and removal
(:func:`remove_units`).

A copy: every function here that changes the architecture returns a new model and leaves its
input unchanged (see ``docs/compression.md``).
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..prune import PruneError, attach_mask, mask_of
from .graph import GraphError, leaf_layers, set_module, units
from .importance import CRITERIA, UnitCriterion, unit_scores
from .selection import global_keep, normalize_scores, select_keep

__all__ = ["CRITERIA", "unit_scores", "remove_units", "prune_structured", "select_keep",
           "bn_l1_penalty", "unit_sizes"]


def unit_sizes(model: nn.Module) -> dict[str, int]:
    """Parameters that go away with one unit of each layer (its weights, bias, BatchNorm and
    the consumer's inputs); used to weigh units when counting parameters."""
    sizes = {}
    for u in units(model):
        w = u.layer.weight
        per = w[0].numel() + (1 if u.layer.bias is not None else 0) + (2 if u.bn else 0)
        cw = u.consumer[1].weight
        per += (cw.shape[0] * u.spatial) if isinstance(u.consumer[1], nn.Linear) \
            else cw[:, 0].numel()
        sizes[u.name] = per
    return sizes


@torch.no_grad()
def remove_units(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A new model: a copy of ``model`` where unit layer ``name`` keeps only outputs
    ``keep[name]``; its BatchNorm, the consumer's inputs and any pruning masks shrink to
    match. ``model`` is not changed."""
    model = copy.deepcopy(model)
    us = {u.name: u for u in units(model)}
    for n in keep:
        if n not in us:
            raise PruneError(f"{n!r} is not a removable unit; have {sorted(us)}")
    out_idx: dict[str, torch.Tensor] = {}
    in_idx: dict[str, torch.Tensor] = {}
    for n, idx in keep.items():
        u = us[n]
        idx = torch.as_tensor(idx, dtype=torch.long)
        if idx.numel() == 0:
            raise PruneError(f"layer {n} must keep at least one unit")
        out_idx[n] = idx
        cols = (idx[:, None] * u.spatial + torch.arange(u.spatial)[None, :]).flatten()
        in_idx[u.consumer[0]] = cols
        if u.bn is not None:
            bname, bn = u.bn
            nb = nn.BatchNorm2d(len(idx), eps=bn.eps, momentum=bn.momentum, affine=bn.affine,
                                track_running_stats=bn.track_running_stats)
            if bn.affine:
                nb.weight.copy_(bn.weight[idx])
                nb.bias.copy_(bn.bias[idx])
            if bn.track_running_stats:
                nb.running_mean.copy_(bn.running_mean[idx])
                nb.running_var.copy_(bn.running_var[idx])
                nb.num_batches_tracked.copy_(bn.num_batches_tracked)
            set_module(model, bname, nb)
    layers = dict(leaf_layers(model))
    for n in set(out_idx) | set(in_idx):
        m = layers[n]
        w = m.weight.detach()
        b = m.bias.detach() if m.bias is not None else None
        mask = mask_of(m)
        if n in out_idx:
            w = w[out_idx[n]]
            b = b[out_idx[n]] if b is not None else None
            mask = mask[out_idx[n]] if mask is not None else None
        if n in in_idx:
            w = w[:, in_idx[n]]
            mask = mask[:, in_idx[n]] if mask is not None else None
        if isinstance(m, nn.Linear):
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        else:
            new = nn.Conv2d(w.shape[1], w.shape[0], m.kernel_size, m.stride, m.padding,
                            m.dilation, bias=b is not None, padding_mode=m.padding_mode)
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
        if mask is not None:             # a pruning mask shrinks with its layer
            attach_mask(new, mask)
        set_module(model, n, new)
    return model


def prune_structured(model: nn.Module, amount: float | dict[str, float], *,
                     criterion: str | UnitCriterion = "l1", x: torch.Tensor | None = None,
                     scope: str = "layer", normalize: str | None = "mean",
                     min_keep: int = 1) -> nn.Module:
    """Remove the least important ``amount`` of the units; returns the smaller model as a new
    model (``model`` is not changed).

    ``criterion`` is a unit criterion (:mod:`.importance`: a callable ``(model, units, x) ->
    {unit: scores}`` or a shortcut name); ``x`` is data for activation criteria.
    ``scope="layer"`` removes ``amount`` of every layer's units (``amount`` may be a dict per
    layer); ``scope="global"`` removes ``amount`` of all units together after normalizing the
    scores per layer (:func:`.selection.normalize_scores`; network slimming uses raw BN scales
    globally: pass ``normalize=None``).
    """
    scores = unit_scores(model, criterion, x)
    if scope == "layer":
        keep = select_keep(scores, amount, min_keep=min_keep)
    elif scope == "global":
        if isinstance(amount, dict):
            raise PruneError("global structured pruning takes one amount, not a dict")
        keep = global_keep(normalize_scores(scores, normalize), float(amount),
                           min_keep=min_keep)
    else:
        raise PruneError(f"scope must be 'layer' or 'global', not {scope!r}")
    return remove_units(model, keep)


def bn_l1_penalty(strength: float = 1e-4) -> Callable[[nn.Module], torch.Tensor]:
    """``extra_loss`` for :func:`zeroskip.sw.train.train`: ``strength * sum |gamma|`` over all
    BatchNorm2d layers (the sparsity-inducing term of network slimming)."""
    def penalty(model: nn.Module) -> torch.Tensor:
        terms = [m.weight.abs().sum() for m in model.modules()
                 if isinstance(m, nn.BatchNorm2d) and m.affine]
        if not terms:
            raise GraphError("network slimming needs BatchNorm2d layers; the model has none")
        return strength * torch.stack(terms).sum()
    return penalty
