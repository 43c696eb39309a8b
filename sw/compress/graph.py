"""Walk a network built from the layers zeroskip supports and find its prunable units.

Supported leaf layers: ``Linear``, ``Conv2d`` (``groups=1``), ``BatchNorm2d``, ``ReLU``,
``MaxPool2d`` and ``Flatten`` (``Dropout`` and ``Identity`` are ignored: they do nothing at
inference). A layer with ``torch.nn.utils.parametrize`` parametrizations (pruning masks,
shared weights) is still that layer. Containers (``nn.Sequential`` or any module) are walked
recursively; the order in which child modules are registered is taken as the order in which
they run, as in ``nn.Sequential``. Any other leaf layer raises :class:`UnsupportedLayerError`
naming it.

A *unit* is a ``Linear``/``Conv2d`` whose outputs (neurons / filters) may be removed: every
weight layer except the last one. Its *consumer* is the next weight layer; when a ``Flatten``
lies in between, each output channel of the unit feeds ``spatial`` consecutive input features
of the consumer (``spatial = H * W`` of the flattened map).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn.utils import parametrize

from ..errors import ZeroskipError
from ..prune import remove_parametrizations

__all__ = ["UnsupportedLayerError", "GraphError", "SUPPORTED", "leaf_layers", "check_model",
           "weight_layers", "Unit", "units", "set_module", "plain_weight", "count_params",
           "weight_count"]

SUPPORTED = (nn.Linear, nn.Conv2d, nn.BatchNorm2d, nn.ReLU, nn.MaxPool2d, nn.Flatten)
IGNORED = (nn.Dropout, nn.Identity)


class UnsupportedLayerError(ZeroskipError, TypeError):
    """A model contains a layer the compression methods do not know; the message names it."""


class GraphError(ZeroskipError, ValueError):
    """The layers are supported but connected in a way a method cannot handle (for example a
    BatchNorm2d whose size does not match the convolution before it)."""


def leaf_layers(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """``[(qualified name, module), ...]`` of the leaves in registration (= execution) order.

    Raises :class:`UnsupportedLayerError` for any leaf that is not supported.
    """
    out: list[tuple[str, nn.Module]] = []
    for name, m in model.named_modules():
        if ".parametrizations." in f".{name}.":
            continue                    # masks, codebooks, ...: part of their layer
        if any(n != "parametrizations" for n, _ in m.named_children()):
            continue
        if isinstance(m, IGNORED):
            continue
        if not isinstance(m, SUPPORTED):
            where = name or "<model>"
            raise UnsupportedLayerError(
                f"layer {where} ({type(m).__name__}) is not supported; zeroskip compresses "
                "models built from Linear, Conv2d, BatchNorm2d, ReLU, MaxPool2d and Flatten")
        if isinstance(m, nn.Conv2d) and m.groups != 1:
            raise UnsupportedLayerError(f"layer {name} (Conv2d with groups={m.groups}) is not "
                                        "supported; only groups=1")
        out.append((name, m))
    return out


def check_model(model: nn.Module) -> None:
    """Raise :class:`UnsupportedLayerError` unless every layer of ``model`` is supported."""
    leaf_layers(model)


def weight_layers(model: nn.Module) -> dict[str, nn.Module]:
    """The ``Linear`` and ``Conv2d`` layers (after checking the whole model), in order."""
    return {n: m for n, m in leaf_layers(model) if isinstance(m, (nn.Linear, nn.Conv2d))}


def out_size(m: nn.Module) -> int:
    return m.out_features if isinstance(m, nn.Linear) else m.out_channels


def in_size(m: nn.Module) -> int:
    return m.in_features if isinstance(m, nn.Linear) else m.in_channels


@dataclass
class Unit:
    """A weight layer whose outputs can be removed, with what must change along with it."""
    name: str
    layer: nn.Module
    bn: tuple[str, nn.BatchNorm2d] | None
    consumer: tuple[str, nn.Module]
    spatial: int = 1           # consumer input features per output unit (H*W after Flatten)

    @property
    def size(self) -> int:
        return out_size(self.layer)

    @property
    def kind(self) -> str:
        return "neuron" if isinstance(self.layer, nn.Linear) else "filter"


def units(model: nn.Module) -> list[Unit]:
    """Every removable unit of ``model`` (all weight layers but the last), in order."""
    found: list[Unit] = []
    prod: tuple[str, nn.Module] | None = None
    bn: tuple[str, nn.BatchNorm2d] | None = None
    flattened = False
    for name, m in leaf_layers(model):
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if prod is not None:
                pname, p = prod
                spatial = 1
                if isinstance(m, nn.Linear) and isinstance(p, nn.Conv2d):
                    if not flattened or m.in_features % p.out_channels:
                        raise GraphError(f"layer {name} (Linear, {m.in_features} inputs) cannot "
                                         f"follow {pname} (Conv2d, {p.out_channels} channels)")
                    spatial = m.in_features // p.out_channels
                elif isinstance(m, nn.Conv2d) and isinstance(p, nn.Linear):
                    raise GraphError(f"layer {name} (Conv2d) after {pname} (Linear) is not "
                                     "supported")
                elif in_size(m) != out_size(p):
                    raise GraphError(f"layer {name} takes {in_size(m)} inputs but {pname} "
                                     f"gives {out_size(p)}")
                found.append(Unit(pname, p, bn, (name, m), spatial))
            prod, bn, flattened = (name, m), None, False
        elif isinstance(m, nn.BatchNorm2d):
            if prod is None or not isinstance(prod[1], nn.Conv2d) or bn is not None:
                raise GraphError(f"layer {name} (BatchNorm2d) must directly follow a Conv2d")
            if m.num_features != prod[1].out_channels:
                raise GraphError(f"layer {name} (BatchNorm2d, {m.num_features} features) does "
                                 f"not match {prod[0]} ({prod[1].out_channels} channels)")
            bn = (name, m)
        elif isinstance(m, nn.Flatten):
            flattened = True
    return found


@torch.no_grad()
def plain_weight(layer: nn.Module) -> nn.Parameter:
    """``layer.weight`` as a plain parameter: parametrizations on it (a pruning mask, ...) are
    made permanent first (in place: the weight keeps its current value, zeros included)."""
    if parametrize.is_parametrized(layer, "weight"):
        remove_parametrizations(layer, "weight", leave_parametrized=True)
    return layer.weight


def set_module(root: nn.Module, name: str, new: nn.Module) -> None:
    """Replace the sub-module called ``name`` (dotted path) by ``new``."""
    parts = name.split(".")
    parent = root
    for p in parts[:-1]:
        parent = getattr(parent, p)
    setattr(parent, parts[-1], new)


def count_params(model: nn.Module) -> int:
    """All parameters (weights, biases, BatchNorm scales and shifts)."""
    return int(sum(p.numel() for p in model.parameters()))


@torch.no_grad()
def weight_count(model: nn.Module, nonzero: bool = True) -> int:
    """Weights of the Linear/Conv2d layers (only the nonzero ones when ``nonzero``)."""
    total = 0
    for m in weight_layers(model).values():
        total += int((m.weight != 0).sum()) if nonzero else m.weight.numel()
    return total
