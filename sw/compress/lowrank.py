"""Low-rank approximation of fully-connected layers by truncated SVD (Denton et al. 2014;
Xue et al. 2013).

A ``Linear(I, O)`` with weight ``W = U S V^T`` becomes ``Linear(I, r, bias=False)`` (weight
``sqrt(S_r) V_r^T``) followed by ``Linear(r, O)`` (weight ``U_r sqrt(S_r)``, the old bias), an
``nn.Sequential`` in place of the layer. Parameters drop from ``O*I`` to ``r*(I+O)``; it pays
when ``r < O*I / (I+O)``. The rank is given per layer, or chosen as the smallest rank keeping
``energy`` of the squared singular values.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..errors import ZeroskipError
from .graph import leaf_layers, set_module

__all__ = ["svd_linear", "low_rank", "choose_rank"]


def choose_rank(weight: torch.Tensor, energy: float) -> int:
    """Smallest rank whose singular values keep ``energy`` of ``sum(s**2)``."""
    if not 0.0 < energy <= 1.0:
        raise ZeroskipError(f"energy must be in (0, 1], not {energy!r}")
    s = torch.linalg.svdvals(weight.detach().double())
    cum = torch.cumsum(s ** 2, 0) / (s ** 2).sum().clamp_min(1e-30)
    return int(torch.searchsorted(cum, torch.tensor(energy - 1e-12, dtype=cum.dtype))) + 1


@torch.no_grad()
def svd_linear(layer: nn.Linear, rank: int) -> nn.Sequential:
    """The two-layer factorization of ``layer`` at ``rank``."""
    o, i = layer.weight.shape
    if not 1 <= rank <= min(o, i):
        raise ZeroskipError(f"rank must be in 1..{min(o, i)}, not {rank!r}")
    u, s, vh = torch.linalg.svd(layer.weight.detach().double(), full_matrices=False)
    r = int(rank)
    root = s[:r].sqrt()
    first = nn.Linear(i, r, bias=False)
    second = nn.Linear(r, o, bias=layer.bias is not None)
    first.weight.copy_((root[:, None] * vh[:r]).float())
    second.weight.copy_((u[:, :r] * root[None, :]).float())
    if layer.bias is not None:
        second.bias.copy_(layer.bias)
    return nn.Sequential(first, second)


def low_rank(model: nn.Module, rank: int | dict[str, int] | None = None, *,
             energy: float | None = None, layers: list[str] | None = None,
             only_if_smaller: bool = True) -> tuple[nn.Module, dict[str, int]]:
    """A copy of ``model`` with its Linear layers factorized; returns ``(model, {layer: rank})``.

    Give ``rank`` (one number or per layer) or ``energy``. With ``only_if_smaller`` a layer is
    left alone when the factorization would not reduce its parameters.
    """
    if (rank is None) == (energy is None):
        raise ZeroskipError("give exactly one of rank and energy")
    model = copy.deepcopy(model)
    lin = {n: m for n, m in leaf_layers(model) if isinstance(m, nn.Linear)}
    names = list(layers) if layers is not None else (
        list(rank) if isinstance(rank, dict) else list(lin))
    done = {}
    for n in names:
        if n not in lin:
            raise ZeroskipError(f"no Linear layer named {n!r}; have {sorted(lin)}")
        m = lin[n]
        o, i = m.weight.shape
        r = (rank[n] if isinstance(rank, dict) else rank) if rank is not None \
            else choose_rank(m.weight, energy)
        r = min(int(r), min(o, i))
        if only_if_smaller and r * (o + i) >= o * i:
            continue
        set_module(model, n, svd_linear(m, r))
        done[n] = r
    return model, done
