"""Which units to keep, given their importance scores (the selection step between
:mod:`.importance` and the removal in :mod:`.structured`).

Raw importance scores are not comparable across layers (a conv filter's L1 norm sums 25*C
weights, a neuron's sums its fan-in; activations have layer-specific scales):
:func:`normalize_scores` de-biases them per layer before :func:`global_keep` ranks all layers
together; :func:`select_keep` ranks within each layer. Nothing here changes a model.
"""

from __future__ import annotations

import torch

from ..prune import PruneError

__all__ = ["NORMALIZERS", "normalize_scores", "global_keep", "select_keep"]

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
