"""Progressive global neuron/filter pruning with per-layer de-biased scores.

Raw importance scores are not comparable across layers (a conv filter's L1 norm sums 25*C
weights, a neuron's sums its fan-in; activations have layer-specific scales). Each round:

1. score every unit of every layer (:func:`.structured.unit_scores`);
2. de-bias the scores per layer (:func:`normalize_scores`: divide by the layer's mean, L2 norm
   or maximum, or use ranks), so that layers compete on equal terms;
3. remove the globally lowest ``fraction`` of the remaining units (at least ``min_keep`` per
   layer survive), physically (:func:`.structured.remove_units`); optionally the scores are
   divided by the relative parameter cost of a unit of each layer, so that at equal importance
   the unit that frees more parameters goes first;
4. fine-tune; when the accuracy falls below the user's floor, retry from the last model that
   met it with half the fraction (at most ``retries`` times), then stop and return that model.

``mode="uniform"`` runs the same loop but removes ``fraction`` of every layer: the baseline
that global pruning is compared against at an equal parameter count (:func:`uniform_to_params`).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field

import torch
from torch import nn

from ..prune import PruneError
from ..train import evaluate, train
from .graph import count_params
from .structured import remove_units, select_keep, unit_scores, unit_sizes

__all__ = ["NORMALIZERS", "normalize_scores", "global_keep", "progressive_prune",
           "ProgressiveResult", "uniform_to_params"]

NORMALIZERS = ("mean", "l2", "max", "rank", None)


def normalize_scores(scores: dict[str, torch.Tensor], method: str | None = "mean"
                     ) -> dict[str, torch.Tensor]:
    """Per-layer de-biasing: ``s / mean(s)``, ``s / ||s||_2 * sqrt(n)``, ``s / max(s)``, or
    ``rank(s) / n`` (``"rank"``); ``None`` leaves the scores as they are."""
    out = {}
    for n, s in scores.items():
        s = s.double()
        if method is None:
            out[n] = s
        elif method == "mean":
            out[n] = s / s.mean().clamp_min(1e-12)
        elif method == "l2":
            out[n] = s / s.norm().clamp_min(1e-12) * len(s) ** 0.5
        elif method == "max":
            out[n] = s / s.max().clamp_min(1e-12)
        elif method == "rank":
            out[n] = (torch.argsort(torch.argsort(s, stable=True)).double() + 1) / len(s)
        else:
            raise PruneError(f"unknown normalizer {method!r}; choose mean, l2, max, rank or None")
    return out


def global_keep(scores: dict[str, torch.Tensor], fraction: float, *, min_keep: int = 1,
                costs: dict[str, float] | None = None, cost_power: float = 1.0,
                max_layer_fraction: float = 0.5
                ) -> dict[str, torch.Tensor]:
    """Remove the globally lowest ``fraction`` of all units; returns the indices kept per
    layer (sorted), never fewer than ``min_keep`` per layer and never more than
    ``max_layer_fraction`` of one layer's units at once (so one call cannot gut a layer).

    With ``costs`` (parameters per unit of each layer, :func:`.structured.unit_sizes`) units
    are ranked by score per relative cost, ``s / (cost / mean cost) ** cost_power``: at equal
    importance the unit that frees more parameters goes first.
    """
    if not 0.0 <= fraction < 1.0:
        raise PruneError(f"fraction must be in [0, 1), not {fraction!r}")
    names = list(scores)
    if costs is not None:
        mean_cost = sum(costs[n] * len(scores[n]) for n in names) / sum(
            len(scores[n]) for n in names)
        scores = {n: scores[n] / (costs[n] / mean_cost) ** cost_power for n in names}
    allv = torch.cat([scores[n] for n in names])
    owner = torch.cat([torch.full((len(scores[n]),), i) for i, n in enumerate(names)])
    local = torch.cat([torch.arange(len(scores[n])) for n in names])
    k = int(round(fraction * len(allv)))
    order = torch.argsort(allv, stable=True)
    left = {n: len(scores[n]) for n in names}
    floor_n = {n: max(min_keep, len(scores[n]) - int(max_layer_fraction * len(scores[n])))
               for n in names}
    drop = {n: [] for n in names}
    removed = 0
    for j in order.tolist():
        if removed >= k:
            break
        n = names[int(owner[j])]
        if left[n] <= floor_n[n]:
            continue
        drop[n].append(int(local[j]))
        left[n] -= 1
        removed += 1
    keep = {}
    for n in names:
        m = torch.ones(len(scores[n]), dtype=torch.bool)
        if drop[n]:
            m[torch.tensor(drop[n])] = False
        keep[n] = torch.nonzero(m).flatten()
    return keep


@dataclass
class ProgressiveResult:
    model: nn.Module                      # the last model at or above the floor
    history: list[dict] = field(default_factory=list)

    @property
    def params(self) -> int:
        return count_params(self.model)


def progressive_prune(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      x_val: torch.Tensor, y_val: torch.Tensor, floor: float, *,
                      mode: str = "global", fraction: float = 0.1, criterion: str = "l1",
                      normalize: str | None = "mean", cost_aware: bool | float = False,
                      finetune_epochs: int = 1,
                      max_rounds: int = 20, lr: float = 5e-4, batch_size: int = 64,
                      loss_fn=None, x_score: torch.Tensor | None = None, min_keep: int = 1,
                      retries: int = 2, seed: int = 0, progress: bool = False
                      ) -> ProgressiveResult:
    """Prune units round by round until accuracy on ``(x_val, y_val)`` drops below ``floor``.

    ``model`` is not modified. ``x_score`` is the data for activation criteria (default: the
    first 2,000 training samples). ``cost_aware`` ranks units by de-biased score per parameter
    they free (see :func:`global_keep`; a number is used as ``cost_power``). It is off by
    default: on LeNet-300-100 it only ever removed first-layer neurons and left the second
    layer at full width, ending with more parameters than uniform pruning. Each history
    record holds the round, the parameter count, the units per layer and the accuracy after
    fine-tuning (rounds below the floor included); the result holds the last model whose
    accuracy was at least ``floor`` (the input model if even the first round fell below).
    """
    if mode not in ("global", "uniform"):
        raise PruneError(f"mode must be 'global' or 'uniform', not {mode!r}")
    if x_score is None:
        x_score = x[:2000]
    best = copy.deepcopy(model)
    acc0 = evaluate(best, x_val, y_val)
    history = [{"round": 0, "params": count_params(best), "acc": acc0,
                "units": {n: len(s) for n, s in unit_scores(best, "l1").items()}}]
    if acc0 < floor:
        return ProgressiveResult(best, history)
    cur = best
    frac, tries = fraction, 0
    for r in range(1, max_rounds + 1):
        scores = unit_scores(cur, criterion, x_score)
        if mode == "global":
            power = float(cost_aware)
            costs = unit_sizes(cur) if power else None
            keep = global_keep(normalize_scores(scores, normalize), frac, min_keep=min_keep,
                               costs=costs, cost_power=power)
        else:
            keep = select_keep(scores, frac, min_keep=min_keep)
        if all(len(keep[n]) == len(scores[n]) for n in scores):
            break                                   # nothing left to remove
        cand = remove_units(cur, keep)
        if finetune_epochs > 0:
            train(cand, x, y, epochs=finetune_epochs, lr=lr, batch_size=batch_size,
                  loss_fn=loss_fn, seed=seed + r, progress=progress,
                  desc=f"{mode} round {r}")
        acc = evaluate(cand, x_val, y_val)
        history.append({"round": r, "params": count_params(cand), "acc": acc,
                        "fraction": frac, "units": {n: len(k) for n, k in keep.items()}})
        if acc < floor:
            if tries >= retries:
                break
            tries += 1                              # retry from the last good model, smaller step
            frac /= 2
            continue
        best = cur = cand
    return ProgressiveResult(best, history)


def uniform_to_params(model: nn.Module, target_params: int, *, criterion: str = "l1",
                      x: torch.Tensor | None = None, tol: int = 0) -> nn.Module:
    """Remove the same fraction of units from every layer so that the model has about
    ``target_params`` parameters (bisection on the fraction); returns the smaller copy."""
    scores = unit_scores(model, criterion, x)
    lo, hi = 0.0, 0.999
    best = model
    for _ in range(30):
        mid = (lo + hi) / 2
        cand = remove_units(model, select_keep(scores, mid))
        p = count_params(cand)
        if p > target_params:
            lo = mid
        else:
            hi, best = mid, cand
            if target_params - p <= tol:
                break
    return best
