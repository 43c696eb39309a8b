"""k-means weight sharing with centroid fine-tuning (Han et al. 2016, Deep Compression).

Per layer the nonzero weights are clustered (1-D k-means, linear initialization between the
smallest and largest weight, the initialization Deep Compression found best) into
``2**bits - 1`` centroids; code 0 is reserved for the weight 0 (pruned weights and the filler
entries of the relative index). Every weight is replaced by its centroid; fine-tuning then
trains the centroids: the gradient of a centroid is the sum of the gradients of the weights
that share it.

Compatibility with the integer pipeline: :func:`snap_int8` (called by :func:`share_weights`
unless ``int8=False``) rounds each layer's centroids onto an int8 grid with one per-layer scale
``s = max|c| / 127``. A layer's weights are then exactly ``s * code`` with at most ``2**bits``
distinct int8 codes, so ``zeroskip.sw.quant.quantize_weight(w, per_channel=False)`` returns
exactly the codebook codes and the int8 packer stores them unchanged; the hardware may store
the ``bits``-bit code and look up the int8 value in a per-layer codebook. (Per-channel int8
quantization still works, but rescales each row, so the codes differ from row to row.)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from ..errors import ZeroskipError
from ..prune import register_parametrization, remove_parametrizations
from ..train import Callback, train
from .graph import plain_weight, weight_layers

__all__ = ["Codebook", "kmeans_1d", "share_weights", "snap_int8", "finetune_centroids",
           "SharedWeight", "SharingError"]


class SharingError(ZeroskipError, ValueError):
    """Bad weight-sharing arguments (bits outside 2..8, unknown layer)."""


@dataclass
class Codebook:
    """Weight sharing state of one layer."""
    bits: int
    centroids: torch.Tensor     # float, (2**bits,), centroids[0] == 0
    codes: torch.Tensor         # int64, the weight's shape, index into centroids
    scale: float = 0.0          # int8 grid step after snap_int8 (0: not snapped)

    @property
    def int8(self) -> np.ndarray:
        """The codebook as int8 values (after :func:`snap_int8`)."""
        if not self.scale:
            raise SharingError("the codebook is not snapped to int8; call snap_int8")
        return np.round(self.centroids.numpy() / self.scale).astype(np.int8)

    def weight(self) -> torch.Tensor:
        return self.centroids[self.codes]


def kmeans_1d(values: torch.Tensor, k: int, iters: int = 30, init: str = "linear"
              ) -> tuple[torch.Tensor, torch.Tensor]:
    """Lloyd's k-means on a 1-D tensor: ``(sorted centroids (k,), assignment)``."""
    v = values.detach().double().flatten()
    if v.numel() == 0:
        return torch.zeros(k, dtype=torch.float64), torch.zeros(0, dtype=torch.long)
    if init == "linear":
        c = torch.linspace(float(v.min()), float(v.max()), k, dtype=torch.float64)
    elif init == "quantile":
        c = torch.quantile(v[:1_000_000], torch.linspace(0, 1, k, dtype=torch.float64))
    else:
        raise SharingError(f"unknown init {init!r}; choose 'linear' or 'quantile'")
    for _ in range(iters):
        c, _ = torch.sort(c)
        assign = torch.bucketize(v, (c[1:] + c[:-1]) / 2)
        sums = torch.zeros(k, dtype=torch.float64).scatter_add_(0, assign, v)
        cnt = torch.zeros(k, dtype=torch.float64).scatter_add_(0, assign, torch.ones_like(v))
        new = torch.where(cnt > 0, sums / cnt.clamp_min(1), c)
        if torch.allclose(new, c, rtol=0, atol=1e-12):
            break
        c = new
    c, _ = torch.sort(c)
    assign = torch.bucketize(v, (c[1:] + c[:-1]) / 2)
    return c, assign


@torch.no_grad()
def share_weights(model: nn.Module, bits: int | dict[str, int] = 5, *,
                  layers: list[str] | None = None, init: str = "linear", iters: int = 30,
                  int8: bool = True) -> dict[str, Codebook]:
    """Cluster every chosen layer's nonzero weights into ``2**bits - 1`` shared values, in
    place. ``bits`` is one number or ``{layer: bits}`` (2..8; layers missing from a dict are
    left alone). Returns ``{layer: Codebook}``.

    A pruning mask on a chosen layer is made permanent first: code 0 (the weight 0) takes its
    place, and :func:`finetune_centroids` keeps it at zero.
    """
    wl = weight_layers(model)
    names = list(layers) if layers is not None else (
        list(bits) if isinstance(bits, dict) else list(wl))
    for n in names:
        if n not in wl:
            raise SharingError(f"no Linear/Conv2d layer named {n!r}; have {sorted(wl)}")
        b = bits[n] if isinstance(bits, dict) else bits
        if not (isinstance(b, int) and not isinstance(b, bool) and 2 <= b <= 8):
            raise SharingError(f"codebook bits must be an integer in 2..8, not {b!r}")
    books = {}
    for n in names:
        b = bits[n] if isinstance(bits, dict) else bits
        w = plain_weight(wl[n])
        nz = w != 0
        c, assign = kmeans_1d(w[nz], (1 << b) - 1, iters=iters, init=init)
        centroids = torch.cat([torch.zeros(1, dtype=torch.float64), c]).to(w.dtype)
        codes = torch.zeros(w.shape, dtype=torch.long)
        codes[nz] = assign + 1
        book = Codebook(b, centroids, codes)
        w.copy_(book.weight())
        books[n] = book
    if int8:
        snap_int8(model, books)
    return books


@torch.no_grad()
def snap_int8(model: nn.Module, books: dict[str, Codebook]) -> None:
    """Round each codebook onto an int8 grid ``s * {-127..127}`` with ``s = max|c| / 127`` and
    write the weights back, in place (see the module docstring)."""
    wl = weight_layers(model)
    for n, book in books.items():
        plain_weight(wl[n])
        amax = float(book.centroids.abs().max())
        s = amax / 127.0 if amax > 0 else 1.0
        book.centroids = (torch.round(book.centroids / s).clamp(-127, 127) * s).to(
            book.centroids.dtype)
        book.centroids[0] = 0.0
        book.scale = s
        wl[n].weight.copy_(book.weight())


class SharedWeight(nn.Module):
    """The parametrization ``weight = [0, centroids...][codes]`` of a shared layer.

    Its ``original`` is the vector of trainable centroids (code 0, the weight 0, is not among
    them and stays 0). Autograd's gradient of an index is the scatter-sum, so a centroid's
    gradient is the sum of the gradients of the weights that share it (Deep Compression).
    """

    def __init__(self, book: Codebook):
        super().__init__()
        self.register_buffer("codes", book.codes.clone())
        self._init = book.centroids[1:].detach().clone()

    def forward(self, centroids: torch.Tensor) -> torch.Tensor:
        table = torch.cat([centroids.new_zeros(1), centroids])
        return table[self.codes]

    def right_inverse(self, weight: torch.Tensor) -> torch.Tensor:
        return self._init.to(weight.dtype)


class _SyncCodebooks(Callback):
    """Keep each :class:`Codebook` equal to the centroids being trained."""

    def __init__(self, layers: dict[str, nn.Module], books: dict[str, Codebook]):
        self.layers, self.books = layers, books

    @torch.no_grad()
    def after_step(self, model: nn.Module) -> None:
        for n, b in self.books.items():
            c = self.layers[n].parametrizations.weight.original.detach()
            b.centroids = torch.cat([b.centroids[:1], c.clone()])


def finetune_centroids(model: nn.Module, books: dict[str, Codebook], x: torch.Tensor,
                       y: torch.Tensor, *, epochs: int = 1, lr: float = 1e-4,
                       batch_size: int = 64, loss_fn=None, train_others: bool = True,
                       int8: bool = True, seed: int = 0, progress: bool = False,
                       desc: str = "centroid fine-tune") -> nn.Module:
    """Train the shared centroids (and, with ``train_others``, every other parameter: biases,
    BatchNorm, unshared layers) in place with :func:`zeroskip.sw.train.train`; returns
    ``model``.

    During training each shared layer's weight is a :class:`SharedWeight` parametrization of
    its centroids, so a centroid's gradient is the sum of the gradients of its weights; code
    0 stays 0 and the codes never change. Afterwards the weights are plain again
    (``centroids[codes]``) and ``books`` hold the trained centroids; with ``int8`` they are
    snapped to int8 again. ``loss_fn(logits, x, y)`` defaults to cross-entropy.
    """
    wl = weight_layers(model)
    for n in books:
        if n not in wl:
            raise SharingError(f"no Linear/Conv2d layer named {n!r}; have {sorted(wl)}")
    with torch.no_grad():
        for n, b in books.items():
            plain_weight(wl[n])
            register_parametrization(wl[n], "weight", SharedWeight(b), unsafe=True)
    try:
        cents = [wl[n].parametrizations.weight.original for n in books]
        shared = {id(c) for c in cents}
        others = [p for p in model.parameters() if id(p) not in shared] if train_others else []
        train(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, loss_fn=loss_fn,
              params=cents + others, callbacks=[_SyncCodebooks(wl, books)], seed=seed,
              progress=progress, desc=desc)
    finally:
        with torch.no_grad():
            for n in books:
                remove_parametrizations(wl[n], "weight", leave_parametrized=True)
    if int8:
        snap_int8(model, books)
    return model
