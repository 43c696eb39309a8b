"""The bit-exact integer reference: what the hardware computes, from the packed parameters.

It runs on PyTorch int64 tensors and implements exactly ``docs/numerics.md``::

    acc[o] = bias[o] + sum_j W[o, j] * x[j]                          (int, checked to fit)
    y[o]   = clamp((acc[o] * M[o] + 2**(S[o]-1)) >> S[o], 0, 255)     (requantized layers)
    y[o]   = acc[o]                                                  (the int32 output layer)

``>>`` is an arithmetic shift (floor division by ``2**S``). A convolution applies the same
matrix at every output pixel to the patch ``x[c, y*s+ky-p, x*s+kx-p]`` (zero outside the map),
column ``j = (c*KH + ky)*KW + kx``; max pooling follows the requantization (see
:mod:`zeroskip.sw.geometry`). Vectors are CHW flattenings of the maps.
"""

from __future__ import annotations

import numpy as np
import torch

from .errors import ZeroskipError
from .pack import PackedModel
from .quant import QLayer, QModel

__all__ = ["RefError", "run_layer", "run_model", "requantize"]


class RefError(ZeroskipError, ValueError):
    """Inputs the reference (and the hardware) cannot take."""


def requantize(acc: torch.Tensor, mult: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """Integer requantization with round-half-up and a clamp to ``0..255`` (the ReLU)."""
    acc, mult, shift = acc.to(torch.int64), mult.to(torch.int64), shift.to(torch.int64)
    prod = acc * mult + (torch.ones_like(shift) << (shift - 1))
    return torch.clamp(prod >> shift, 0, 255)


def _as_codes(x, n: int) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(x))
    if t.dtype.is_floating_point or t.dtype == torch.bool:
        raise RefError(f"inputs must be integer uint8 codes, not {t.dtype}")
    t = t.to(torch.int64)
    if t.ndim == 1:
        t = t[None, :]
    t = t.reshape(t.shape[0], -1)
    if t.shape[1] != n:
        raise RefError(f"inputs have {t.shape[1]} features, the model takes {n}")
    if t.numel() and (int(t.min()) < 0 or int(t.max()) > 255):
        raise RefError("inputs must be uint8 codes in 0..255")
    return t


def _patches(x: torch.Tensor, q: QLayer) -> torch.Tensor:
    """``(N, pixels, I)`` int64: the input patch of every output pixel, in column order."""
    g = q.geom
    c, h, w = g.in_shape
    kh, kw = g.kernel
    xm = x.reshape(x.shape[0], c, h, w)
    p = g.padding
    if p:
        xm = torch.nn.functional.pad(xm, (p, p, p, p))      # zeros: padding adds nothing
    pt = xm.unfold(2, kh, g.stride).unfold(3, kw, g.stride)  # (N, C, OH, OW, KH, KW)
    oh, ow = g.conv_hw
    return pt.permute(0, 2, 3, 1, 4, 5).reshape(x.shape[0], oh * ow, c * kh * kw)


def _max_pool(y: torch.Tensor, q: QLayer) -> torch.Tensor:
    """Max pooling of ``(N, pixels, O)`` values over the geometry's pool windows; returns
    ``(N, O, PH, PW)``."""
    g = q.geom
    oh, ow = g.conv_hw
    ym = y.permute(0, 2, 1).reshape(y.shape[0], y.shape[2], oh, ow)
    if g.pool is None:
        return ym
    k, s = g.pool
    return ym.unfold(2, k, s).unfold(3, k, s).amax(dim=(4, 5))


def run_layer(q: QLayer, x, acc_width: int = 32) -> torch.Tensor:
    """One layer on a batch of codes ``(N, in_size)``; returns int64 ``(N, out_size)``."""
    xt = _as_codes(x, q.in_size) if not isinstance(x, torch.Tensor) else x.to(torch.int64)
    w = torch.as_tensor(np.asarray(q.weight, dtype=np.int64))
    acc = _patches(xt, q) @ w.T + torch.as_tensor(np.asarray(q.bias, dtype=np.int64))
    lim = 1 << (acc_width - 1)
    if acc.numel() and (int(acc.max()) >= lim or int(acc.min()) < -lim):
        raise RefError(f"accumulator overflows int{acc_width}")
    if q.requant:
        acc = requantize(acc, torch.as_tensor(q.mult.astype(np.int64)),
                         torch.as_tensor(q.shift.astype(np.int64)))
    return _max_pool(acc, q).reshape(xt.shape[0], -1)


def run_model(model: PackedModel | QModel, x, acc_width: int | None = None,
              return_all: bool = False):
    """Run the whole network on uint8 input codes ``(N, in)`` (or one vector).

    Returns int64 outputs ``(N, out)``: uint8 codes for a requantized last layer, int32 logits
    otherwise. With ``return_all`` returns the list of every layer's outputs.
    """
    if isinstance(model, PackedModel):
        acc_width = acc_width or model.params.acc_width
        qm = model.qmodel()
    else:
        qm = model
        acc_width = acc_width or 32
    h = _as_codes(x, qm.in_features)
    outs = []
    for q in qm.layers:
        h = run_layer(q, h, acc_width)
        outs.append(h)
    return outs if return_all else h
