"""The training recipe of the dense baselines (issue 13): well-trained starting points for every
compression experiment.

SGD with Nesterov momentum 0.9, weight decay 5e-4, batch 128, a one-cycle learning-rate
schedule to 0.05; inputs standardized by the training mean and standard deviation during
training; the last ``val`` training images (after a seeded shuffle) held out for validation.
Light augmentation is optional (``augment=True``: a random left-right mirror and a random shift
of up to 2 pixels per batch, :func:`zeroskip.sw.train.flip_crop`).

The standardization is folded into the first layer when training ends
(:func:`fold_input_normalization`), so the returned model takes the ``[0, 1]`` images every
other part of zeroskip uses (quantizer, packer, hardware) and computes exactly the same function.
A model whose first layer is a padded convolution cannot be folded exactly; it is trained on
the ``[0, 1]`` images as they are (``info["standardized"]`` says which).

The accuracies these recipes reach are in ``docs/results.md`` (the ``dense`` records).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import torch
from torch import nn

from .data import Dataset
from .prune import prunable_layers
from .train import Callback, evaluate, flip_crop, train

__all__ = ["Recipe", "RECIPES", "split_validation", "fold_input_normalization",
           "train_baseline"]


@dataclass(frozen=True)
class Recipe:
    """The settings of :func:`train_baseline` (every field goes into the results cache key)."""
    epochs: int
    augment: bool = False
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 128
    val: int = 5000

    def to_dict(self) -> dict:
        return asdict(self)


# the recipes of the results runner, by model key
RECIPES = {
    "lenet300": Recipe(epochs=30, augment=False),
    "lenet5": Recipe(epochs=20, augment=True),
}


def split_validation(n: int, val: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``(train indices, validation indices)``: a seeded permutation of ``range(n)``, the
    first ``val`` of it for validation."""
    if not 0 <= val < n:
        raise ValueError(f"validation size must be in [0, {n}), not {val!r}")
    perm = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return perm[val:], perm[:val]


@torch.no_grad()
def fold_input_normalization(model: nn.Module, mean: float, std: float) -> nn.Module:
    """Make ``model(x)`` compute what ``model((x - mean) / std)`` computed, in place, by
    rescaling the first Linear/Conv2d layer: ``W' = W / std``, ``b' = b - (mean / std) *
    sum(W)`` over each output's inputs. Exact for a Linear layer and an unpadded convolution
    (a padded one would see ``-mean / std`` in its border, which no weight change reproduces).
    """
    why = _not_foldable(model)
    if why:
        raise ValueError(f"cannot fold input normalization into {why}")
    first = next(iter(prunable_layers(model).values()))
    w = first.weight
    dims = tuple(range(1, w.dim()))
    shift = (mean / std) * w.sum(dim=dims)
    first.bias.sub_(shift)
    w.div_(std)
    return model


def _not_foldable(model: nn.Module) -> str:
    """Why the input standardization cannot be folded into ``model`` ('' if it can)."""
    layers = prunable_layers(model)
    if not layers:
        return "a model without Linear or Conv2d layers"
    first = next(iter(layers.values()))
    if first.bias is None:
        return "a first layer without bias"
    if isinstance(first, nn.Conv2d):
        p = first.padding
        if (p != "valid") if isinstance(p, str) else any(int(v) != 0 for v in p):
            return "a padded convolution"
    return ""


class _EpochLog(Callback):
    def __init__(self, norm, x_val, y_val, log, epochs):
        self.norm, self.x_val, self.y_val, self.log, self.epochs = norm, x_val, y_val, log, epochs
        self.history: list[dict] = []
        self.t0 = time.monotonic()

    def on_epoch_end(self, model, epoch):
        acc = evaluate(model, self.norm(self.x_val), self.y_val) if len(self.y_val) else None
        self.history.append({"epoch": epoch + 1, "acc_val": acc})
        if self.log is not None:
            self.log(f"epoch {epoch + 1}/{self.epochs}: validation "
                     f"{'-' if acc is None else f'{100 * acc:.2f}%'} "
                     f"({time.monotonic() - self.t0:.0f} s)")


def train_baseline(model: nn.Module, ds: Dataset, recipe: Recipe, *, seed: int = 0,
                   progress: bool = False, log: Callable[[str], None] | None = None,
                   desc: str = "baseline") -> tuple[nn.Module, dict]:
    """Train ``model`` in place by ``recipe`` on ``ds``'s training set minus the validation
    split; returns ``(model, info)`` with the model taking ``[0, 1]`` inputs (normalization
    folded in) and ``info = {"acc_val", "acc_test", "mean", "std", "history", "seconds"}``.
    ``log`` gets one line per epoch."""
    torch.manual_seed(seed)
    tr, va = split_validation(ds.x_train.shape[0], recipe.val, seed)
    x_tr, y_tr = ds.x_train[tr], ds.y_train[tr]
    x_va, y_va = ds.x_train[va], ds.y_train[va]
    standardize = not _not_foldable(model)
    mean, std = (float(x_tr.mean()), float(x_tr.std())) if standardize else (0.0, 1.0)
    aug = flip_crop(2) if recipe.augment else None

    def norm(xb: torch.Tensor) -> torch.Tensor:
        return (xb - mean) / std

    def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        # augmentation on the [0, 1] images (the border filled with 0, the background), then
        # standardization
        return norm(aug(xb, gen) if aug is not None else xb)

    cb = _EpochLog(norm, x_va, y_va, log, recipe.epochs)
    t0 = time.monotonic()
    train(model, x_tr, y_tr, epochs=recipe.epochs, lr=recipe.lr, batch_size=recipe.batch_size,
          weight_decay=recipe.weight_decay, optimizer="sgd", lr_schedule="onecycle",
          augment=augment, callbacks=[cb], seed=seed, progress=progress, desc=desc)
    if standardize:
        fold_input_normalization(model, mean, std)
    model.eval()
    info = {"acc_val": evaluate(model, x_va, y_va) if len(y_va) else None,
            "acc_test": evaluate(model, ds.x_test, ds.y_test), "mean": mean, "std": std,
            "standardized": standardize,
            "history": cb.history, "seconds": round(time.monotonic() - t0, 1),
            "recipe": recipe.to_dict()}
    return model, info
