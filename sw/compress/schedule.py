"""Train -> prune -> fine-tune with a sparsity schedule (Han et al. 2015; Zhu & Gupta 2017).

* ``one-shot``: prune to the final sparsity at once, then fine-tune.
* ``iterative``: ``steps`` prune/fine-tune rounds; each round removes the same fraction of the
  weights that remain (geometric, Han et al.: 50%, 75%, 87.5%, ...), ending at the target.
* ``gradual``: the cubic schedule of Zhu & Gupta 2017, ``s_t = s_f (1 - (1 - t/n)^3)``: large
  steps early while the network is redundant, small steps near the end.
* ``linear``: equal sparsity increments.

The criterion is the weight magnitude, ranked per layer (``scope="layer"``) or over all layers
with one threshold (``scope="global"``); the pruning itself is :func:`zeroskip.sw.prune.
magnitude_prune` (or any granularity from :mod:`.granularity`), with any weight importance.
The masks live on the modules and keep pruned weights at zero during fine-tuning (and in any
training loop afterwards); any ``loss_fn`` (e.g. :func:`.distill.distillation_loss`) can drive
the fine-tuning.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from torch import nn

from ..prune import Masks, PruneError, WeightImportance, magnitude_prune
from ..train import evaluate, train
from .granularity import granular_prune
from .graph import check_model

__all__ = ["SCHEDULES", "sparsity_schedule", "iterative_prune", "PruneHistory"]

SCHEDULES = ("one-shot", "iterative", "gradual", "linear")


def sparsity_schedule(kind: str, final: float, steps: int = 4) -> list[float]:
    """The sparsity after each pruning round; the last one is ``final``."""
    final = float(final)
    if not 0.0 <= final < 1.0:
        raise PruneError(f"final sparsity must be in [0, 1), not {final!r}")
    if kind == "one-shot":
        return [final]
    if int(steps) < 1:
        raise PruneError(f"steps must be at least 1, not {steps!r}")
    n = int(steps)
    if kind == "iterative":
        keep = (1.0 - final) ** (1.0 / n)     # same fraction of the survivors each round
        return [1.0 - keep ** (t + 1) for t in range(n - 1)] + [final]
    if kind == "gradual":
        return [final * (1.0 - (1.0 - (t + 1) / n) ** 3) for t in range(n - 1)] + [final]
    if kind == "linear":
        return [final * (t + 1) / n for t in range(n - 1)] + [final]
    raise PruneError(f"unknown schedule {kind!r}; choose one of {', '.join(SCHEDULES)}")


@dataclass
class PruneHistory:
    """What each round did: target sparsity, accuracy after pruning and after fine-tuning."""
    rounds: list[dict] = field(default_factory=list)

    def __iter__(self):
        return iter(self.rounds)


def iterative_prune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, final_sparsity: float, *,
                    schedule: str = "iterative", steps: int = 4, epochs_per_step: int = 1,
                    final_epochs: int = 0, scope: str = "layer", lr: float = 5e-4,
                    batch_size: int = 64, granularity: str = "element",
                    layer_sparsity: Callable[[float], dict[str, float]] | None = None,
                    loss_fn=None, x_val: torch.Tensor | None = None,
                    y_val: torch.Tensor | None = None, masks: Masks | None = None,
                    importance: str | WeightImportance = "magnitude",
                    train_options: dict | None = None,
                    seed: int = 0, progress: bool = False) -> tuple[Masks, PruneHistory]:
    """Prune ``model`` in place along a schedule, fine-tuning after every round.

    In place: the masks are attached to ``model``'s layers and stay there (call
    :meth:`Masks.remove <zeroskip.sw.prune.Masks.remove>` to make them permanent before
    saving or packing).

    Parameters
    ----------
    final_sparsity : fraction of Linear/Conv2d weights removed at the end.
    schedule, steps : see :func:`sparsity_schedule`.
    epochs_per_step : fine-tuning epochs after each round; ``final_epochs`` more at the end.
    scope : ``"layer"`` (same sparsity in every layer) or ``"global"`` (one threshold).
    granularity : ``"element"`` (magnitude pruning) or any of :data:`.granularity.GRANULARITIES`.
    layer_sparsity : optional ``s -> {layer: sparsity}`` for per-layer targets (e.g. prune the
        first layer less); overrides ``scope``.
    loss_fn : fine-tuning loss ``(logits, x, y) -> loss`` (knowledge distillation plugs in here).
    importance : weight importance, a callable ``(layer, name) -> scores shaped like the
        weight`` or ``"magnitude"``.
    masks : accepted for compatibility; masks already attached to ``model`` are kept.
    train_options : more keyword arguments of :func:`zeroskip.sw.train.train` for every
        fine-tuning round (e.g. ``optimizer``, ``lr_schedule``, ``weight_decay``, ``augment``).

    Returns the :class:`~zeroskip.sw.prune.Masks` of the model and the history.
    """
    check_model(model)
    history = PruneHistory()
    targets = sparsity_schedule(schedule, final_sparsity, steps)
    for t, s in enumerate(targets):
        if granularity == "element":
            sp = layer_sparsity(s) if layer_sparsity is not None else s
            masks = magnitude_prune(model, sp, scope="layer" if layer_sparsity else scope,
                                    masks=masks, importance=importance)
        else:
            masks = granular_prune(model, s, granularity, scope=scope, masks=masks,
                                   importance=importance)
        rec = {"round": t + 1, "sparsity": float(s)}
        if x_val is not None:
            rec["acc_pruned"] = evaluate(model, x_val, y_val)
        epochs = epochs_per_step + (final_epochs if t == len(targets) - 1 else 0)
        if epochs > 0:
            train(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn,
                  seed=seed + t, progress=progress, desc=f"prune {t + 1}/{len(targets)} s={s:.3f}",
                  **(train_options or {}))
        if x_val is not None:
            rec["acc_finetuned"] = evaluate(model, x_val, y_val)
        history.rounds.append(rec)
    return masks, history
