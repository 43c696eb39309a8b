"""The bit-exact integer reference: what the hardware computes, from the packed parameters.

It runs on PyTorch int64 tensors and implements exactly ``docs/numerics.md``::

    acc[o] = bias[o] + sum_j W[o, j] * x[j]                          (int, checked to fit)
    y[o]   = clamp((acc[o] * M[o] + 2**(S[o]-1)) >> S[o], 0, 255)     (requantized layers)
    y[o]   = acc[o]                                                  (the int32 output layer)

``>>`` is an arithmetic shift (floor division by ``2**S``).
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


def run_layer(q: QLayer, x, acc_width: int = 32) -> torch.Tensor:
    """One layer on a batch of codes ``(N, in)``; returns int64 ``(N, out)``."""
    xt = _as_codes(x, q.in_features) if not isinstance(x, torch.Tensor) else x.to(torch.int64)
    w = torch.as_tensor(np.asarray(q.weight, dtype=np.int64))
    acc = xt @ w.T + torch.as_tensor(np.asarray(q.bias, dtype=np.int64))
    lim = 1 << (acc_width - 1)
    if acc.numel() and (int(acc.max()) >= lim or int(acc.min()) < -lim):
        raise RefError(f"accumulator overflows int{acc_width}")
    if q.requant:
        return requantize(acc, torch.as_tensor(q.mult.astype(np.int64)),
                          torch.as_tensor(q.shift.astype(np.int64)))
    return acc


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
