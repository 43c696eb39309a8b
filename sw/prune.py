"""Magnitude pruning with masks that live on the modules (Han et al. 2015).

A pruned layer carries its 0/1 mask as a ``torch.nn.utils.parametrize`` parametrization of its
``weight``, as ``torch.nn.utils.prune`` does: ``layer.weight`` is computed as
``layer.parametrizations.weight.original * mask`` on every access. Any training loop (ours in
:mod:`zeroskip.sw.train` or a user's own) therefore keeps pruned weights exactly zero, and
their gradients are zero, without calling anything after a step.

* :func:`magnitude_prune` (and :func:`zeroskip.sw.compress.granular_prune`) attach or tighten
  masks and return a :class:`Masks` view of them.
* :func:`masks_of` / :class:`Masks` read the masks back (``Masks.masks``, ``density()``...).
* :func:`remove_masks` (or :meth:`Masks.remove`) makes the pruning permanent: the
  parametrizations go and plain ``Linear``/``Conv2d`` layers with zeros in their weights remain.
  Do this before ``torch.save(model)`` (PyTorch cannot pickle parametrized modules) and before
  handing the model to the quantizer/packer, which expect plain layers.

In place: every function here changes the model it is given (masks are attached to its
layers); see ``docs/compression.md`` for the rule shared by all compression methods.

Importance: :func:`magnitude_prune` ranks weights by a *weight importance*, a callable
``importance(layer, name) -> Tensor`` shaped like ``layer.weight`` (higher = more important;
``name`` is the layer's qualified name in the model). The string ``"magnitude"`` (the default)
is the shortcut for ``|w|``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.nn.utils import parametrize

from .errors import ZeroskipError

__all__ = ["Masks", "WeightMask", "prunable_layers", "magnitude_prune", "sparsity",
           "PruneError", "WeightImportance", "magnitude", "resolve_weight_importance",
           "masks_of", "attach_mask", "remove_masks", "mask_of", "weight_scores",
           "register_parametrization", "remove_parametrizations"]


class PruneError(ZeroskipError, ValueError):
    """Bad pruning arguments (sparsity out of range, no prunable layer, ...)."""


WeightImportance = Callable[[nn.Module, str], torch.Tensor]


def magnitude(layer: nn.Module, name: str) -> torch.Tensor:
    """The weight importance ``|w|`` (what ``importance="magnitude"`` means)."""
    return layer.weight.detach().abs()


WEIGHT_IMPORTANCE: dict[str, WeightImportance] = {"magnitude": magnitude}


def resolve_weight_importance(importance: str | WeightImportance) -> WeightImportance:
    """A weight-importance callable from a callable or a shortcut name (``"magnitude"``)."""
    if callable(importance):
        return importance
    if isinstance(importance, str) and importance in WEIGHT_IMPORTANCE:
        return WEIGHT_IMPORTANCE[importance]
    raise PruneError(f"unknown weight importance {importance!r}; pass a callable "
                     f"(layer, name) -> scores or one of {', '.join(WEIGHT_IMPORTANCE)}")


def weight_scores(importance: WeightImportance, layer: nn.Module, name: str) -> torch.Tensor:
    """``importance(layer, name)`` checked (a tensor shaped like the weight), as float64."""
    s = importance(layer, name)
    if not isinstance(s, torch.Tensor) or s.shape != layer.weight.shape:
        got = tuple(s.shape) if isinstance(s, torch.Tensor) else type(s).__name__
        raise PruneError(f"importance for {name!r} gave {got}, not a tensor shaped like the "
                         f"weight {tuple(layer.weight.shape)}")
    return s.detach().double()


class WeightMask(nn.Module):
    """The parametrization ``weight = original * mask`` (``mask`` is a buffer of 0/1)."""

    def __init__(self, mask: torch.Tensor):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return w * self.mask


def _own_class(module: nn.Module) -> None:
    # torch.nn.utils.parametrize gives a parametrized module a class of its own, but a
    # deepcopy shares it, and removing a parametrization deletes the property from that class:
    # the copy's removal would break the original. Give the module a private class first.
    cls = module.__class__
    if parametrize.is_parametrized(module):
        body = {k: v for k, v in cls.__dict__.items() if k not in ("__dict__", "__weakref__")}
        module.__class__ = type(cls.__name__, cls.__bases__, body)


def register_parametrization(module: nn.Module, name: str, parametrization: nn.Module, *,
                             unsafe: bool = False) -> None:
    """``torch.nn.utils.parametrize.register_parametrization``, safe on deep copies."""
    _own_class(module)
    parametrize.register_parametrization(module, name, parametrization, unsafe=unsafe)


def remove_parametrizations(module: nn.Module, name: str, *,
                            leave_parametrized: bool = True) -> None:
    """``torch.nn.utils.parametrize.remove_parametrizations``, safe on deep copies (removing
    from a copy leaves the original parametrized)."""
    _own_class(module)
    parametrize.remove_parametrizations(module, name, leave_parametrized=leave_parametrized)


def prunable_layers(model: nn.Module, kinds=(nn.Linear, nn.Conv2d)) -> dict[str, nn.Module]:
    """Named layers whose ``weight`` can be pruned, in module order."""
    return {name: m for name, m in model.named_modules()
            if isinstance(m, kinds) and ".parametrizations." not in f".{name}."}


def mask_of(layer: nn.Module) -> torch.Tensor | None:
    """The mask attached to ``layer.weight`` (``None`` if it has none)."""
    if not parametrize.is_parametrized(layer, "weight"):
        return None
    for p in layer.parametrizations.weight:
        if isinstance(p, WeightMask):
            return p.mask
    return None


@torch.no_grad()
def attach_mask(layer: nn.Module, mask: torch.Tensor) -> None:
    """Attach ``mask`` to ``layer.weight`` (or replace the mask it has). In place."""
    mask = mask.to(device=layer.weight.device, dtype=layer.weight.dtype)
    if mask.shape != layer.weight.shape:
        raise PruneError(f"mask has shape {tuple(mask.shape)}, weight has "
                         f"{tuple(layer.weight.shape)}")
    if parametrize.is_parametrized(layer, "weight"):
        for p in layer.parametrizations.weight:
            if isinstance(p, WeightMask):
                p.mask.copy_(mask)
                return
    register_parametrization(layer, "weight", WeightMask(mask))


class Masks:
    """A view of the pruning masks on the ``weight`` of some layers of ``model``.

    ``Masks(model, {name: mask})`` attaches the given masks (in place); ``Masks(model)`` views
    the masks already attached. The masks themselves live on the modules (:class:`WeightMask`
    parametrizations), so this object only reads them: ``masks`` is ``{layer name: mask}`` of
    every masked layer, read afresh on each access.
    """

    def __init__(self, model: nn.Module, masks: dict[str, torch.Tensor] | None = None):
        self.model = model
        layers = prunable_layers(model)
        for name, mask in (masks or {}).items():
            if name not in layers:
                raise PruneError(f"no prunable layer named {name!r}")
            if mask.shape != layers[name].weight.shape:
                raise PruneError(f"mask for {name!r} has shape {tuple(mask.shape)}, "
                                 f"weight has {tuple(layers[name].weight.shape)}")
        for name, mask in (masks or {}).items():
            attach_mask(layers[name], mask)

    @classmethod
    def from_zeros(cls, model: nn.Module) -> Masks:
        """Attach masks that keep exactly the nonzero weights of every prunable layer."""
        return cls(model, {n: (m.weight.detach() != 0).float()
                           for n, m in prunable_layers(model).items()})

    @property
    def masks(self) -> dict[str, torch.Tensor]:
        out = {}
        for n, m in prunable_layers(self.model).items():
            mk = mask_of(m)
            if mk is not None:
                out[n] = mk
        return out

    def layers(self) -> dict[str, nn.Module]:
        found = prunable_layers(self.model)
        return {n: found[n] for n in self.masks}

    def density(self) -> dict[str, float]:
        return {n: float(m.mean()) for n, m in self.masks.items()}

    def kept(self) -> int:
        return int(sum(int(m.sum()) for m in self.masks.values()))

    def total(self) -> int:
        return int(sum(m.numel() for m in self.masks.values()))

    def remove(self) -> nn.Module:
        """Make the pruning permanent (see :func:`remove_masks`); returns the model."""
        return remove_masks(self.model)

    def __repr__(self):
        dens = ", ".join(f"{n}: {d:.3f}" for n, d in self.density().items())
        return f"Masks({dens})"


def masks_of(model: nn.Module) -> Masks:
    """The masks attached to ``model`` (a :class:`Masks` view; empty if none)."""
    return Masks(model)


@torch.no_grad()
def remove_masks(model: nn.Module) -> nn.Module:
    """Make pruning permanent, in place: every masked ``weight`` becomes a plain parameter
    holding ``original * mask`` (zeros where pruned) and the parametrization goes. Returns
    ``model`` (whose layers are then plain ``Linear``/``Conv2d`` again)."""
    for m in list(model.modules()):
        if mask_of(m) is not None:
            remove_parametrizations(m, "weight", leave_parametrized=True)
    return model


def _check_sparsity(s: float, what: str) -> float:
    s = float(s)
    if not 0.0 <= s < 1.0:
        raise PruneError(f"{what} must be in [0, 1), not {s!r}")
    return s


@torch.no_grad()
def magnitude_prune(model: nn.Module, sparsity: float | dict[str, float], *,
                    scope: str = "layer", layers: Iterable[str] | None = None,
                    masks: Masks | None = None,
                    importance: str | WeightImportance = "magnitude") -> Masks:
    """Prune the least important weights, in place (masks are attached to the layers).

    ``sparsity`` is the fraction of weights to remove: one number for every layer, or a dict
    ``{layer name: fraction}``. ``scope="layer"`` ranks weights within each layer;
    ``scope="global"`` ranks all chosen layers' weights together with one threshold (then
    ``sparsity`` must be one number). Weights already pruned (by a mask attached to the model
    earlier) stay pruned and count towards the target; ``masks`` is accepted for
    compatibility and must view this model. ``importance`` is a callable ``(layer, name) ->
    scores shaped like the weight`` or ``"magnitude"`` (``|w|``). Returns the :class:`Masks`
    of the model.
    """
    if masks is not None and masks.model is not model:
        raise PruneError("masks belong to another model")
    score_fn = resolve_weight_importance(importance)
    all_layers = prunable_layers(model)
    names = list(layers) if layers is not None else list(all_layers)
    if not names:
        raise PruneError("the model has no Linear or Conv2d layer to prune")
    for n in names:
        if n not in all_layers:
            raise PruneError(f"no prunable layer named {n!r}; have {sorted(all_layers)}")
    if scope not in ("layer", "global"):
        raise PruneError(f"scope must be 'layer' or 'global', not {scope!r}")
    if scope == "global" and isinstance(sparsity, dict):
        raise PruneError("global pruning takes one sparsity, not a dict")
    targets = {n: _check_sparsity(sparsity.get(n, 0.0) if isinstance(sparsity, dict)
                                  else sparsity, f"sparsity of {n}") for n in names}
    current = {}
    for n in names:
        mk = mask_of(all_layers[n])
        current[n] = mk.clone() if mk is not None else torch.ones_like(all_layers[n].weight)
    scores = {n: weight_scores(score_fn, all_layers[n], n) * current[n] for n in names}
    new: dict[str, torch.Tensor] = {}
    if scope == "global":
        s = targets[names[0]]
        flat = torch.cat([scores[n].flatten() for n in names])
        k = int(round(s * flat.numel()))
        if k > 0:
            # ties are broken by order so that exactly k are removed
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
    else:
        for n in names:
            flat = scores[n].flatten()
            k = int(round(targets[n] * flat.numel()))
            keep = torch.ones_like(flat)
            if k > 0:
                keep[torch.argsort(flat, stable=True)[:k]] = 0
            new[n] = keep.reshape(scores[n].shape)
    for n in names:
        attach_mask(all_layers[n], new[n].to(current[n].dtype) * current[n])
    return Masks(model)


def sparsity(model: nn.Module) -> float:
    """Fraction of zero weights over all Linear/Conv2d layers."""
    layers = prunable_layers(model)
    total = sum(m.weight.numel() for m in layers.values())
    zeros = sum(int((m.weight == 0).sum()) for m in layers.values())
    return zeros / total if total else 0.0
