"""Structured pruning: physically remove neurons, filters and channels.

The result is a smaller dense model: a removed filter takes its output channel, its BatchNorm
entries and the matching input channel (or, after ``Flatten``, the matching ``H*W`` input
features) of the next layer with it. Criteria (a higher score means more important):

* ``"l1"``: L1 norm of each filter's / neuron's weights (Li et al. 2017, "Pruning Filters for
  Efficient ConvNets").
* ``"bn"``: ``|gamma|`` of the BatchNorm after each convolution (network slimming, Liu et al.
  2017); train with :func:`bn_l1_penalty` first so that unimportant channels get small scales.
* ``"mean_act"``: mean activation each unit feeds to the next layer, over data ``x``
  (Polyak & Wolf 2015).
* ``"apoz"``: ``1 - APoZ``, the fraction of non-zero activations (Hu et al. 2016, "Network
  Trimming"), over data ``x``.
"""

from __future__ import annotations

import copy
from collections.abc import Callable

import torch
from torch import nn

from ..prune import PruneError
from .graph import GraphError, Unit, leaf_layers, set_module, units

__all__ = ["CRITERIA", "unit_scores", "remove_units", "prune_structured", "select_keep",
           "bn_l1_penalty", "unit_sizes"]

CRITERIA = ("l1", "bn", "mean_act", "apoz")


@torch.no_grad()
def _activations(model: nn.Module, x: torch.Tensor, us: list[Unit], batch_size: int = 512):
    """Per unit, ``(sum of activations, count of nonzeros, count)`` of what its consumer sees."""
    consumers = {u.consumer[0]: u for u in us}
    leaves = leaf_layers(model)
    stats = {u.name: [0.0, 0.0, 0] for u in us}
    model.eval()
    for i in range(0, x.shape[0], batch_size):
        h = x[i:i + batch_size]
        for name, m in leaves:
            if name in consumers:
                u = consumers[name]
                c = u.size
                if h.dim() == 2:                 # (N, C*spatial) or (N, C)
                    v = h.reshape(h.shape[0], c, -1)
                else:                            # (N, C, H, W)
                    v = h.reshape(h.shape[0], h.shape[1], -1)
                st = stats[u.name]
                st[0] = st[0] + v.sum(dim=(0, 2)).double()
                st[1] = st[1] + (v != 0).sum(dim=(0, 2)).double()
                st[2] += v.shape[0] * v.shape[2]
            h = m(h)
    return stats


def unit_scores(model: nn.Module, criterion: str = "l1", x: torch.Tensor | None = None
                ) -> dict[str, torch.Tensor]:
    """``{unit name: importance of each output unit}`` for every removable unit (for ``"bn"``,
    only the units followed by a BatchNorm2d)."""
    us = units(model)
    if not us:
        raise PruneError("the model has a single weight layer: nothing can be removed")
    out: dict[str, torch.Tensor] = {}
    if criterion == "l1":
        for u in us:
            w = u.layer.weight.detach()
            out[u.name] = w.abs().reshape(w.shape[0], -1).sum(1).double()
    elif criterion == "bn":
        for u in us:                  # units without BatchNorm are not scored (kept whole)
            if u.bn is not None:
                out[u.name] = u.bn[1].weight.detach().abs().double()
        if not out:
            raise GraphError("criterion 'bn' needs BatchNorm2d layers after convolutions; the "
                             "model has none (use 'l1', or train a model with BatchNorm)")
    elif criterion in ("mean_act", "apoz"):
        if x is None:
            raise PruneError(f"criterion {criterion!r} needs data: pass x")
        stats = _activations(model, x, us)
        for u in us:
            s, nz, n = stats[u.name]
            out[u.name] = (s / n) if criterion == "mean_act" else (nz / n)
    else:
        raise PruneError(f"unknown criterion {criterion!r}; choose one of {', '.join(CRITERIA)}")
    return out


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


def select_keep(scores: dict[str, torch.Tensor], amount: float | dict[str, float], *,
                min_keep: int = 1) -> dict[str, torch.Tensor]:
    """Per layer, the sorted indices of the units to keep: the ``1 - amount`` best scores."""
    keep = {}
    for n, s in scores.items():
        a = amount.get(n, 0.0) if isinstance(amount, dict) else amount
        if not 0.0 <= float(a) < 1.0:
            raise PruneError(f"amount for {n} must be in [0, 1), not {a!r}")
        k = max(min_keep, len(s) - int(round(float(a) * len(s))))
        k = min(k, len(s))
        idx = torch.argsort(s, descending=True, stable=True)[:k]
        keep[n] = torch.sort(idx).values
    return keep


@torch.no_grad()
def remove_units(model: nn.Module, keep: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` where unit layer ``name`` keeps only outputs ``keep[name]``; its
    BatchNorm and the consumer's inputs shrink to match. ``model`` is not changed."""
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
        if n in out_idx:
            w = w[out_idx[n]]
            b = b[out_idx[n]] if b is not None else None
        if n in in_idx:
            w = w[:, in_idx[n]]
        if isinstance(m, nn.Linear):
            new = nn.Linear(w.shape[1], w.shape[0], bias=b is not None)
        else:
            new = nn.Conv2d(w.shape[1], w.shape[0], m.kernel_size, m.stride, m.padding,
                            m.dilation, bias=b is not None, padding_mode=m.padding_mode)
        new.weight.copy_(w)
        if b is not None:
            new.bias.copy_(b)
        set_module(model, n, new)
    return model


def prune_structured(model: nn.Module, amount: float | dict[str, float], *,
                     criterion: str = "l1", x: torch.Tensor | None = None,
                     scope: str = "layer", normalize: str | None = "mean",
                     min_keep: int = 1) -> nn.Module:
    """Remove the least important ``amount`` of the units and return the smaller model.

    ``scope="layer"`` removes ``amount`` of every layer's units (``amount`` may be a dict per
    layer); ``scope="global"`` removes ``amount`` of all units together after normalizing the
    scores per layer (:func:`.global_prune.normalize_scores`; network slimming uses raw BN scales
    globally: pass ``normalize=None``).
    """
    scores = unit_scores(model, criterion, x)
    if scope == "layer":
        keep = select_keep(scores, amount, min_keep=min_keep)
    elif scope == "global":
        from .global_prune import global_keep, normalize_scores
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
