"""Unit importance criteria for structured pruning (a higher score means more important).

A *unit criterion* is any callable

    criterion(model: nn.Module, units: list[Unit], x: Tensor | None) -> dict[str, Tensor]

returning, for each unit name (:func:`.graph.units`), a 1-D tensor with one score per output
neuron/filter of that layer (``unit.size`` scores). ``x`` is data for criteria that look at
activations (``None`` if the caller has none). A unit left out of the result is not scored
and is kept whole. Pass one wherever a ``criterion`` is taken (:func:`unit_scores`,
:func:`.structured.prune_structured`, :func:`.global_prune.progressive_prune`); the strings
of :data:`CRITERIA` are shortcuts for the built-in ones:

* ``"l1"`` (:class:`L1Norm`): L1 norm of each filter's / neuron's weights (Li et al. 2017,
  "Pruning Filters for Efficient ConvNets").
* ``"bn"`` (:class:`BatchNormScale`): ``|gamma|`` of the BatchNorm after each convolution
  (network slimming, Liu et al. 2017); train with :func:`.structured.bn_l1_penalty` first so
  that unimportant channels get small scales.
* ``"mean_act"`` (:class:`MeanActivation`): mean activation each unit feeds to the next layer,
  over data ``x`` (Polyak & Wolf 2015).
* ``"apoz"`` (:class:`APoZ`): ``1 - APoZ``, the fraction of non-zero activations (Hu et al.
  2016, "Network Trimming"), over data ``x``.

Scoring, selection (:mod:`.selection`) and removal (:mod:`.structured`) are separate steps.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from ..prune import PruneError
from .graph import GraphError, Unit, leaf_layers, units

__all__ = ["CRITERIA", "UnitCriterion", "L1Norm", "BatchNormScale", "MeanActivation", "APoZ",
           "resolve_criterion", "unit_scores"]

UnitCriterion = Callable[[nn.Module, list[Unit], "torch.Tensor | None"], dict[str, torch.Tensor]]


class L1Norm:
    """``sum |w|`` of each unit's weights (``"l1"``)."""

    def __call__(self, model, us, x=None):
        out = {}
        for u in us:
            w = u.layer.weight.detach()
            out[u.name] = w.abs().reshape(w.shape[0], -1).sum(1).double()
        return out


class BatchNormScale:
    """``|gamma|`` of the BatchNorm2d after each unit (``"bn"``); units without one are not
    scored."""

    def __call__(self, model, us, x=None):
        out = {u.name: u.bn[1].weight.detach().abs().double() for u in us if u.bn is not None}
        if not out:
            raise GraphError("criterion 'bn' needs BatchNorm2d layers after convolutions; the "
                             "model has none (use 'l1', or train a model with BatchNorm)")
        return out


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


class _ActivationCriterion:
    name = ""

    def __call__(self, model, us, x=None):
        if x is None:
            raise PruneError(f"criterion {self.name!r} needs data: pass x")
        stats = _activations(model, x, us)
        return {u.name: self._score(*stats[u.name]) for u in us}


class MeanActivation(_ActivationCriterion):
    """Mean activation each unit feeds to its consumer, over ``x`` (``"mean_act"``)."""
    name = "mean_act"

    @staticmethod
    def _score(total, nonzero, n):
        return total / n


class APoZ(_ActivationCriterion):
    """``1 - APoZ``: the fraction of nonzero activations of each unit over ``x``
    (``"apoz"``)."""
    name = "apoz"

    @staticmethod
    def _score(total, nonzero, n):
        return nonzero / n


CRITERIA = ("l1", "bn", "mean_act", "apoz")
_BUILTIN = {"l1": L1Norm, "bn": BatchNormScale, "mean_act": MeanActivation, "apoz": APoZ}


def resolve_criterion(criterion: str | UnitCriterion) -> UnitCriterion:
    """The criterion callable for a callable or one of the shortcut names :data:`CRITERIA`."""
    if callable(criterion):
        return criterion
    if isinstance(criterion, str) and criterion in _BUILTIN:
        return _BUILTIN[criterion]()
    raise PruneError(f"unknown criterion {criterion!r}; pass a callable (model, units, x) -> "
                     f"{{unit: scores}} or one of {', '.join(CRITERIA)}")


def unit_scores(model: nn.Module, criterion: str | UnitCriterion = "l1",
                x: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """``{unit name: importance of each output unit}`` for every removable unit the criterion
    scores (for ``"bn"``, only the units followed by a BatchNorm2d). Checks that each score
    vector has one entry per unit. ``model`` is not changed."""
    fn = resolve_criterion(criterion)
    us = units(model)
    if not us:
        raise PruneError("the model has a single weight layer: nothing can be removed")
    sizes = {u.name: u.size for u in us}
    out = fn(model, us, x)
    if not isinstance(out, dict):
        raise PruneError(f"criterion returned {type(out).__name__}, not {{unit: scores}}")
    checked = {}
    for n, s in out.items():
        if n not in sizes:
            raise PruneError(f"criterion scored {n!r}, which is not a removable unit; have "
                             f"{sorted(sizes)}")
        s = torch.as_tensor(s).detach().double().flatten()
        if s.numel() != sizes[n]:
            raise PruneError(f"criterion gave {s.numel()} scores for {n!r}, which has "
                             f"{sizes[n]} units")
        checked[n] = s
    return checked
