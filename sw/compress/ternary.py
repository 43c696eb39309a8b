"""Ternary weights: Ternary Weight Networks (Li & Liu 2016) and Trained Ternary Quantization
(Zhu, Han, Mao & Dally 2017).

Each chosen layer's weights become ``alpha * {-1, 0, +1}`` with the threshold
``delta = t * mean|W|`` (``t = 0.7`` approximates the optimal threshold for Gaussian weights) and
the scale ``alpha = mean(|W| where |W| > delta)``. :func:`train_ternary` trains with a
straight-through estimator: full-precision shadow weights receive the gradients computed with
the ternary weights, and are ternarized again for every forward pass.

TTQ (:func:`train_ttq`, :class:`TTQWeight`) learns two scales per layer instead: the weights
become ``{-W_n, 0, +W_p}`` with the threshold ``delta = t * max|W|`` of the shadow weights
(``t = 0.05`` in the paper). ``W_p`` and ``W_n`` are parameters: the gradient of ``W_p`` is the
sum of the gradients of the weights quantized to ``+W_p``, that of ``W_n`` minus the sum over
those quantized to ``-W_n``; a shadow weight receives its ternary weight's gradient scaled by
``W_p`` (positive part), ``W_n`` (negative part) or 1 (the zero part).

In the integer pipeline a ternary layer is an int8 layer with the codes ``{-127, 0, 127}`` (per
tensor scale ``alpha / 127``), or a 2-bit codebook ``{0, -alpha, +alpha}``; weights already
pruned stay zero (a ternary layer is at least as sparse as its mask).
"""

from __future__ import annotations

import torch
from torch import nn

from ..errors import ZeroskipError
from ..prune import register_parametrization, remove_parametrizations
from ..train import train
from .graph import plain_weight, weight_layers

__all__ = ["ternarize_tensor", "ternarize", "train_ternary", "TernaryWeight", "TTQWeight",
           "train_ttq"]


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
    """Ternarize the chosen layers in place (a pruning mask is made permanent first, so
    pruned weights stay zero); returns ``{layer: alpha}``."""
    if not t > 0:
        raise ZeroskipError(f"ternary threshold factor must be positive, not {t!r}")
    wl, names = _names(model, layers)
    out = {}
    for n in names:
        w = plain_weight(wl[n])
        tw, alpha, _ = ternarize_tensor(w, t)
        w.copy_(tw)
        out[n] = alpha
    return out


class TernaryWeight(nn.Module):
    """The parametrization of ternary training: the forward pass sees
    ``ternarize_tensor(original * mask)``, the backward pass treats it as the identity
    (straight-through estimator), so the full-precision ``original`` (the shadow weights)
    receives the gradients computed with the ternary weights. ``mask`` keeps weights that
    were zero when training started at zero."""

    def __init__(self, mask: torch.Tensor, t: float):
        super().__init__()
        self.register_buffer("mask", mask.detach().clone())
        self.t = float(t)

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        wm = w * self.mask
        return wm + (ternarize_tensor(wm, self.t)[0] - wm).detach()


def train_ternary(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 2,
                  lr: float = 5e-4, batch_size: int = 64, t: float = 0.7,
                  layers: list[str] | None = None, loss_fn=None, seed: int = 0,
                  progress: bool = False, train_options: dict | None = None
                  ) -> dict[str, float]:
    """Train with ternary weights in place (straight-through estimator,
    :class:`TernaryWeight`, with :func:`zeroskip.sw.train.train`) and leave the model
    ternary.

    Weights that are zero when training starts (pruned) stay zero; ``train_options`` are
    more keyword arguments of :func:`zeroskip.sw.train.train`. Returns ``{layer: alpha}``.
    """
    if not t > 0:
        raise ZeroskipError(f"ternary threshold factor must be positive, not {t!r}")
    wl, names = _names(model, layers)
    with torch.no_grad():
        for n in names:
            w = plain_weight(wl[n])
            register_parametrization(
                wl[n], "weight", TernaryWeight((w != 0).to(w.dtype), t))
    try:
        train(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn,
              seed=seed, progress=progress, desc="ternary training", **(train_options or {}))
    finally:
        with torch.no_grad():
            for n in names:
                # the plain weight becomes the masked shadow weight; ternarized just below
                mask = wl[n].parametrizations.weight[0].mask
                remove_parametrizations(wl[n], "weight", leave_parametrized=False)
                wl[n].weight.mul_(mask)
    return ternarize(model, names, t)


class _TTQ(torch.autograd.Function):
    @staticmethod
    def forward(ctx, w, wp, wn, t):
        delta = t * w.detach().abs().max()
        pos = w.detach() > delta
        neg = w.detach() < -delta
        ctx.save_for_backward(pos, neg, wp, wn)
        return wp * pos.to(w.dtype) - wn * neg.to(w.dtype)

    @staticmethod
    def backward(ctx, g):
        pos, neg, wp, wn = ctx.saved_tensors
        posf, negf = pos.to(g.dtype), neg.to(g.dtype)
        zero = 1.0 - posf - negf
        gw = g * (wp.detach() * posf + wn.detach() * negf + zero)
        return gw, (g * posf).sum().reshape(wp.shape), -(g * negf).sum().reshape(wn.shape), None


class TTQWeight(nn.Module):
    """The parametrization of trained ternary quantization: the forward pass sees
    ``+wp`` where the masked shadow weight is above ``t * max|w|``, ``-wn`` where it is below
    minus that, 0 elsewhere; ``wp`` and ``wn`` are trainable parameters of this module
    (initialized to the mean magnitude of the shadow weights above the threshold, on each
    side). ``mask`` keeps weights that were zero when training started at zero."""

    def __init__(self, w: torch.Tensor, mask: torch.Tensor, t: float):
        super().__init__()
        if not 0 < t < 1:
            raise ZeroskipError(f"TTQ threshold factor must be in (0, 1), not {t!r}")
        self.register_buffer("mask", mask.detach().clone())
        self.t = float(t)
        wm = (w * mask).detach()
        delta = self.t * float(wm.abs().max())
        pos, neg = wm[wm > delta], -wm[wm < -delta]
        self.wp = nn.Parameter(torch.tensor(float(pos.mean()) if pos.numel() else delta,
                                            dtype=w.dtype))
        self.wn = nn.Parameter(torch.tensor(float(neg.mean()) if neg.numel() else delta,
                                            dtype=w.dtype))

    def forward(self, w: torch.Tensor) -> torch.Tensor:
        return _TTQ.apply(w * self.mask, self.wp, self.wn, self.t)


def train_ttq(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 2,
              lr: float = 5e-4, batch_size: int = 64, t: float = 0.05,
              layers: list[str] | None = None, loss_fn=None, seed: int = 0,
              progress: bool = False, train_options: dict | None = None
              ) -> dict[str, tuple[float, float]]:
    """Trained ternary quantization in place (:class:`TTQWeight` on the chosen layers,
    every layer by default, trained with :func:`zeroskip.sw.train.train` and
    ``train_options``); leaves each layer's weight with exactly the values
    ``{-W_n, 0, +W_p}`` (the ternary weights of the last forward pass). Weights that are zero
    when training starts stay zero. Returns ``{layer: (W_p, W_n)}``."""
    if not 0 < t < 1:
        raise ZeroskipError(f"TTQ threshold factor must be in (0, 1), not {t!r}")
    wl, names = _names(model, layers)
    with torch.no_grad():
        for n in names:
            w = plain_weight(wl[n])
            register_parametrization(wl[n], "weight", TTQWeight(w, (w != 0).to(w.dtype), t))
    out = {}
    try:
        train(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn,
              seed=seed, progress=progress, desc="TTQ training", **(train_options or {}))
    finally:
        with torch.no_grad():
            for n in names:
                q = wl[n].parametrizations.weight[0]
                out[n] = (float(q.wp.detach()), float(q.wn.detach()))
                remove_parametrizations(wl[n], "weight", leave_parametrized=True)
    return out
