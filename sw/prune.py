"""Magnitude pruning with masks that survive fine-tuning (Han et al. 2015).

A :class:`Masks` object owns one 0/1 mask per pruned weight tensor. After every optimizer step
call :meth:`Masks.apply` (the training loop in :mod:`zeroskip.sw.train` does), so pruned weights
stay exactly zero while the rest are fine-tuned; gradients of pruned weights are zeroed too, so
momentum cannot revive them.
"""

from __future__ import annotations

from collections.abc import Iterable

import torch
from torch import nn

from .errors import ZeroskipError

__all__ = ["Masks", "prunable_layers", "magnitude_prune", "sparsity", "PruneError"]


class PruneError(ZeroskipError, ValueError):
    """Bad pruning arguments (sparsity out of range, no prunable layer, ...)."""


def prunable_layers(model: nn.Module, kinds=(nn.Linear, nn.Conv2d)) -> dict[str, nn.Module]:
    """Named layers whose ``weight`` can be pruned, in module order."""
    return {name: m for name, m in model.named_modules() if isinstance(m, kinds)}


class Masks:
    """0/1 masks for the ``weight`` of some layers of a model."""

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor] | None = None):
        self.model = model
        layers = prunable_layers(model)
        self.masks: dict[str, torch.Tensor] = {}
        for name, mask in (masks or {}).items():
            if name not in layers:
                raise PruneError(f"no prunable layer named {name!r}")
            if mask.shape != layers[name].weight.shape:
                raise PruneError(f"mask for {name!r} has shape {tuple(mask.shape)}, "
                                 f"weight has {tuple(layers[name].weight.shape)}")
            self.masks[name] = mask.to(dtype=layers[name].weight.dtype).detach().clone()
        self._hooks = []

    @classmethod
    def from_zeros(cls, model: nn.Module) -> Masks:
        """Masks that keep exactly the nonzero weights of every prunable layer."""
        return cls(model, {n: (m.weight.detach() != 0).float()
                           for n, m in prunable_layers(model).items()})

    def layers(self) -> dict[str, nn.Module]:
        found = prunable_layers(self.model)
        return {n: found[n] for n in self.masks}

    @torch.no_grad()
    def apply(self) -> None:
        """Zero the pruned weights (and their gradients, if any)."""
        for name, layer in self.layers().items():
            mask = self.masks[name].to(layer.weight.device)
            layer.weight.mul_(mask)
            if layer.weight.grad is not None:
                layer.weight.grad.mul_(mask)

    def density(self) -> dict[str, float]:
        return {n: float(m.mean()) for n, m in self.masks.items()}

    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    def __repr__(self):
        dens = ", ".join(f"{n}: {d:.3f}" for n, d in self.density().items())
        return f"Masks({dens})"


def _check_sparsity(s: float, what: str) -> float:
    s = float(s)
    if not 0.0 <= s < 1.0:
        raise PruneError(f"{what} must be in [0, 1), not {s!r}")
    return s


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float | dict[str, float], *,
                    scope: str = "layer", layers: Iterable[str] | None = None,
                    masks: Masks | None = None) -> Masks:
    """Prune the smallest-magnitude weights.

    ``sparsity`` is the fraction of weights to remove: one number for every layer, or a dict
    ``{layer name: fraction}``. ``scope="layer"`` ranks weights within each layer;
    ``scope="global"`` ranks all chosen layers' weights together with one threshold (then
    ``sparsity`` must be one number). Weights already pruned by ``masks`` stay pruned and count
    towards the target. Returns the (new) masks, already applied to the model.
    """
    all_layers = prunable_layers(model)
    names = list(layers) if layers is not None else list(all_layers)
    if not names:
        raise PruneError("the model has no Linear or Conv2d layer to prune")
    for n in names:
        if n not in all_layers:
            raise PruneError(f"no prunable layer named {n!r}; have {sorted(all_layers)}")
    old = masks.masks if masks is not None else {}
    current = {n: old.get(n, torch.ones_like(all_layers[n].weight)) for n in names}
    scores = {n: all_layers[n].weight.detach().abs() * current[n] for n in names}
    new: dict[str, torch.Tensor] = {}
    if scope == "global":
        if isinstance(sparsity, dict):
            raise PruneError("global pruning takes one sparsity, not a dict")
        s = _check_sparsity(sparsity, "sparsity")
        flat = torch.cat([scores[n].flatten() for n in names])
        k = int(round(s * flat.numel()))
        if k > 0:
            # kthvalue gives a threshold; ties are broken by order so exactly k are removed
            order = torch.argsort(flat, stable=True)
            keep = torch.ones_like(flat)
            keep[order[:k]] = 0
            offset = 0
            for n in names:
                size = scores[n].numel()
                new[n] = keep[offset:offset + size].reshape(scores[n].shape)
                offset += size
        else:
            new = {n: current[n].clone() for n in names}
    elif scope == "layer":
        for n in names:
            s = _check_sparsity(sparsity.get(n, 0.0) if isinstance(sparsity, dict) else sparsity,
                                f"sparsity of {n}")
            flat = scores[n].flatten()
            k = int(round(s * flat.numel()))
            keep = torch.ones_like(flat)
            if k > 0:
                keep[torch.argsort(flat, stable=True)[:k]] = 0
            new[n] = keep.reshape(scores[n].shape)
    else:
        raise PruneError(f"scope must be 'layer' or 'global', not {scope!r}")
    for n in names:
        new[n] = new[n] * current[n]
    merged = dict(old)
    merged.update(new)
    result = Masks(model, merged)
    result.apply()
    return result


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all Linear/Conv2d layers."""
    layers = prunable_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / total if total else 0.0
