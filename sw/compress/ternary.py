"""Ternary weights: Ternary Weight Networks (Li & Liu 2016).

Each chosen layer's weights become ``alpha * {-1, 0, +1}`` with the threshold
``delta = t * mean|W|`` (``t = 0.7`` approximates the optimal threshold for Gaussian weights) and
the scale ``alpha = mean(|W| where |W| > delta)``. :func:`train_ternary` trains with a
straight-through estimator: full-precision shadow weights receive the gradients computed with
the ternary weights, and are ternarized again for every forward pass.

In the integer pipeline a ternary layer is an int8 layer with the codes ``{-127, 0, 127}`` (per
tensor scale ``alpha / 127``), or a 2-bit codebook ``{0, -alpha, +alpha}``; weights already
pruned stay zero (a ternary layer is at least as sparse as its mask).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZeroskipError
from ..train import Progress
from .graph import weight_layers

__all__ = ["ternarize_tensor", "ternarize", "train_ternary"]


def ternarize_tensor(w: torch.Tensor, t: float = 0.7) -> tuple[torch.Tensor, float, float]:
    """``(ternary tensor, alpha, delta)`` of ``w`` (zeros in ``w`` stay zero)."""
    if not t > 0:
        raise ZeroskipError(f"ternary threshold factor must be positive, not {t!r}")
    a = w.detach().abs()
    nz = a > 0
    if not bool(nz.any()):
        return torch.zeros_like(w), 0.0, 0.0
    delta = t * float(a[nz].mean())
    big = a > delta
    alpha = float(a[big].mean()) if bool(big.any()) else 0.0
    return torch.sign(w.detach()) * big.to(w.dtype) * alpha, alpha, delta


def _names(model, layers):
    wl = weight_layers(model)
    names = list(layers) if layers is not None else list(wl)
    for n in names:
        if n not in wl:
            raise ZeroskipError(f"no Linear/Conv2d layer named {n!r}; have {sorted(wl)}")
    return wl, names


@torch.no_grad()
def ternarize(model: nn.Module, layers: list[str] | None = None, t: float = 0.7
              ) -> dict[str, float]:
    """Ternarize the chosen layers in place; returns ``{layer: alpha}``."""
    wl, names = _names(model, layers)
    out = {}
    for n in names:
        tw, alpha, _ = ternarize_tensor(wl[n].weight, t)
        wl[n].weight.copy_(tw)
        out[n] = alpha
    return out


def train_ternary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 2,
                  lr: float = 5e-4, batch_size: int = 64, t: float = 0.7,
                  layers: list[str] | None = None, loss_fn=None, seed: int = 0,
                  progress: bool = False) -> dict[str, float]:
    """Train with ternary weights (straight-through estimator) and leave the model ternary.

    Weights that are zero when training starts (pruned) stay zero. Returns ``{layer: alpha}``.
    """
    wl, names = _names(model, layers)
    masks = {n: (wl[n].weight.detach() != 0).to(wl[n].weight.dtype) for n in names}
    shadow = {n: wl[n].weight.detach().clone() for n in names}
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    n_samples = x.shape[0]
    bar = Progress(epochs * -(-n_samples // batch_size), "ternary training", enabled=progress)
    model.train()
    for _ in range(epochs):
        perm = torch.randperm(n_samples, generator=gen)
        for i in range(0, n_samples, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            with torch.no_grad():
                for n in names:
                    wl[n].weight.copy_(ternarize_tensor(shadow[n] * masks[n], t)[0])
            logits = model(xb)
            loss = loss_fn(logits, xb, yb) if loss_fn is not None else F.cross_entropy(logits, yb)
            opt.zero_grad()
            loss.backward()
            with torch.no_grad():         # straight-through: step the shadow weights
                for n in names:
                    wl[n].weight.copy_(shadow[n])
            opt.step()
            with torch.no_grad():
                for n in names:
                    shadow[n] = wl[n].weight.detach().clone() * masks[n]
            bar.update(1, f"loss {loss.item():.3f}")
    bar.close()
    model.eval()
    with torch.no_grad():
        for n in names:
            wl[n].weight.copy_(shadow[n])
    return ternarize(model, names, t)
