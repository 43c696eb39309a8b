"""Progressive global neuron/filter pruning with per-layer de-biased scores.

Raw importance scores are not comparable across layers (a conv filter's L1 norm sums 25*C
weights, a neuron's sums its fan-in; activations have layer-specific scales). Each round:

1. score every unit of every layer (:func:`.importance.unit_scores`, any unit criterion);
2. de-bias the scores per layer (:func:`.selection.normalize_scores`: divide by the layer's
   mean, L2 norm or maximum, or use ranks), so that layers compete on equal terms;
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
from .importance import UnitCriterion, unit_scores
from .selection import NORMALIZERS, global_keep, normalize_scores, select_keep
from .structured import remove_units, unit_sizes

__all__ = ["NORMALIZERS", "normalize_scores", "global_keep", "progressive_prune",
           "ProgressiveResult", "uniform_to_params"]

@dataclass
class ProgressiveResult:
    model: nn.Module                      # the last model at or above the floor
    history: list[dict] = field(default_factory=list)

    @property
    def params(self) -> int:
        return count_params(self.model)


def progressive_prune(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                      x_val: torch.Tensor, y_val: torch.Tensor, floor: float, *,
                      mode: str = "global", fraction: float = 0.1,
                      criterion: str | UnitCriterion = "l1",
                      normalize: str | None = "mean", cost_aware: bool | float = False,
                      finetune_epochs: int = 1,
                      max_rounds: int = 20, lr: float = 5e-4, batch_size: int = 64,
                      loss_fn=None, x_score: torch.Tensor | None = None, min_keep: int = 1,
                      retries: int = 2, seed: int = 0, progress: bool = False
                      ) -> ProgressiveResult:
    """Prune units round by round until accuracy on ``(x_val, y_val)`` drops below ``floor``.

    Returns a new model (in the result); ``model`` is not changed. ``criterion`` is a unit
    criterion (:mod:`.importance`: callable or shortcut name). ``x_score`` is the data for
    activation criteria (default: the first 2,000 training samples). ``cost_aware`` ranks units
    by de-biased score per parameter they free (see :func:`global_keep`; a number is used as
    ``cost_power``). It is off by default: on LeNet-300-100 it only ever removed first-layer
    neurons and left the second layer at full width, ending with more parameters than uniform
    pruning. Each history record holds the round, the parameter count, the units per layer and
    the accuracy after fine-tuning (rounds below the floor included); the result holds the last
    model whose accuracy was at least ``floor`` (the input model if even the first round fell
    below).
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


def uniform_to_params(model: nn.Module, target_params: int, *,
                      criterion: str | UnitCriterion = "l1", x: torch.Tensor | None = None,
                      tol: int = 0) -> nn.Module:
    """Remove the same fraction of units from every layer so that the model has about
    ``target_params`` parameters (bisection on the fraction); returns the smaller model as a
    new model (``model`` is not changed)."""
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
