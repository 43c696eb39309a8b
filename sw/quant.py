"""Integer quantization in the spirit of gemmlowp / TFLite (see ``docs/numerics.md``).

* activations: ``uint8`` codes, zero point 0 (``real = code * scale``);
* weights: ``int8`` codes, symmetric, one scale per output channel (per tensor for the last
  layer, so that the arg-max of its int32 logits is the arg-max of the real logits);
* bias: ``int32`` in the accumulator's scale ``s_in * s_w[o]``;
* requantization: ``y = clamp((acc * M[o] + 2**(S[o]-1)) >> S[o], 0, 255)`` with an unsigned
  ``mult_bits``-bit multiplier ``M`` and a shift ``1 <= S <= 2**shift_bits - 1``; the clamp at 0 is
  the ReLU. A layer without requantization (the classifier) outputs its int32 accumulators.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from ..spec import HwParams
from .errors import ZeroskipError
from .geometry import Geometry

__all__ = ["QLayer", "QModel", "QuantError", "quantize_mlp", "fit_requant",
           "quantize_weight", "extract_fc_stack"]


class QuantError(ZeroskipError, ValueError):
    """The model cannot be quantized for this hardware (unsupported layer, out of range)."""


@dataclass
class QLayer:
    """One fully-connected layer in integer form (what the hardware computes)."""
    weight: np.ndarray          # int8 codes, (out, in)
    bias: np.ndarray            # int32, (out,)
    mult: np.ndarray            # uint16 multipliers M, (out,); zeros when not requantized
    shift: np.ndarray           # uint8 shifts S, (out,); zeros when not requantized
    requant: bool               # True: uint8 output (ReLU); False: int32 output
    in_scale: float = 1.0       # real value of one input code
    weight_scale: np.ndarray = field(default_factory=lambda: np.ones(0))  # per output row
    out_scale: float = 0.0      # real value of one output code (requantized layers)
    geometry: Geometry | None = None    # None: fully connected on a vector of in_features

    @property
    def out_features(self) -> int:
        """Rows of the weight matrix (output channels of a convolution)."""
        return int(self.weight.shape[0])

    @property
    def in_features(self) -> int:
        """Columns of the weight matrix (``C * KH * KW`` for a convolution)."""
        return int(self.weight.shape[1])

    @property
    def geom(self) -> Geometry:
        """The layer's geometry (a plain FC layer when none was given)."""
        return self.geometry if self.geometry is not None else Geometry.fc(self.in_features)

    @property
    def in_size(self) -> int:
        """Elements of the layer's input vector (the CHW flattening of its input map)."""
        return self.geom.in_size

    @property
    def out_size(self) -> int:
        """Elements of the layer's output vector (after pooling)."""
        return self.geom.out_size(self.out_features)

    def validate(self) -> None:
        o, i = self.weight.shape
        for name, arr in (("bias", self.bias), ("mult", self.mult), ("shift", self.shift)):
            if arr.shape != (o,):
                raise QuantError(f"{name} has shape {arr.shape}, expected ({o},)")
        if self.geom.columns != i:
            raise QuantError(f"the weight matrix has {i} columns, its geometry {self.geom} "
                             f"needs {self.geom.columns}")


@dataclass
class QModel:
    """A stack of integer fully-connected layers plus the input quantizer."""
    layers: list[QLayer]
    input_scale: float

    @property
    def in_features(self) -> int:
        """Elements of the input vector (the CHW flattening of the input map)."""
        return self.layers[0].in_size

    @property
    def out_features(self) -> int:
        """Elements of the output vector."""
        return self.layers[-1].out_size

    def quantize_input(self, x: torch.Tensor | np.ndarray) -> np.ndarray:
        """Float inputs (any shape with ``in_features`` elements per sample) to uint8 codes."""
        x = torch.as_tensor(x, dtype=torch.float32).reshape(-1, self.in_features)
        q = torch.clamp(torch.round(x / self.input_scale), 0, 255)
        return q.to(torch.uint8).numpy()

    def dequant_logits(self, out: np.ndarray) -> np.ndarray:
        last = self.layers[-1]
        scale = last.out_scale if last.requant else last.in_scale * last.weight_scale
        return np.asarray(out, dtype=np.float64) * scale


def quantize_weight(w: torch.Tensor, per_channel: bool = True, bits: int = 8):
    """Symmetric quantization: returns ``(codes int8 (O, I), scales float64 (O,))``.

    Exact zeros stay zero (pruned weights remain pruned).
    """
    w = w.detach().to(torch.float64)
    qmax = (1 << (bits - 1)) - 1
    if per_channel:
        amax = w.abs().amax(dim=1)
    else:
        amax = w.abs().max().expand(w.shape[0])
    scale = torch.where(amax > 0, amax / qmax, torch.ones_like(amax))
    codes = torch.clamp(torch.round(w / scale[:, None]), -qmax, qmax).to(torch.int8)
    return codes.numpy(), scale.numpy()


def fit_requant(ratio: np.ndarray, mult_bits: int = 16, shift_bits: int = 6):
    """Integer ``(M, S)`` with ``M / 2**S`` closest to each positive ``ratio``.

    ``M`` is an unsigned ``mult_bits``-bit number, made as large as possible for precision;
    ``1 <= S <= 2**shift_bits - 1``.
    """
    ratio = np.asarray(ratio, dtype=np.float64)
    mmax, smax = (1 << mult_bits) - 1, (1 << shift_bits) - 1
    mult = np.zeros(ratio.shape, dtype=np.uint16)
    shift = np.zeros(ratio.shape, dtype=np.uint8)
    for i, r in enumerate(ratio.flat):
        if not (r > 0 and math.isfinite(r)):
            raise QuantError(f"requantization ratio {r!r} must be positive and finite")
        s = min(smax, math.floor(math.log2(mmax / r)) + 1)
        while s >= 1 and round(r * 2.0 ** s) > mmax:
            s -= 1
        if s < 1:
            raise QuantError(f"requantization ratio {r:.6g} is too large: with a shift of at "
                             f"least 1, {mult_bits}-bit multipliers reach at most "
                             f"{mmax / 2:.6g}")
        m = round(r * 2.0 ** s)
        if s == smax and (m == 0 or abs(m / 2.0 ** s - r) > 0.01 * r):
            raise QuantError(f"requantization ratio {r:.6g} is too small for shifts up to "
                             f"{smax} ({shift_bits}-bit): the multiplier would be {m}, off by "
                             "more than 1%")
        mult.flat[i] = m
        shift.flat[i] = s
    return mult, shift


def extract_fc_stack(model: nn.Module) -> list[tuple[nn.Linear, bool]]:
    """``[(linear, followed_by_relu), ...]`` for a model made of Flatten, Linear, ReLU
    (and Dropout / Identity, which inference ignores). Anything else raises :class:`QuantError`
    naming the layer."""
    modules = list(model.children()) if isinstance(model, nn.Sequential) else [model]
    flat: list[tuple[str, nn.Module]] = []

    def walk(prefix, mods):
        for name, m in mods:
            full = f"{prefix}{name}"
            if isinstance(m, nn.Sequential):
                walk(full + ".", m.named_children())
            else:
                flat.append((full, m))

    if isinstance(model, nn.Sequential):
        walk("", model.named_children())
    else:
        flat = [(type(modules[0]).__name__, modules[0])]
    stack: list[tuple[nn.Linear, bool]] = []
    for name, m in flat:
        if isinstance(m, nn.Linear):
            stack.append((m, False))
        elif isinstance(m, nn.ReLU):
            if not stack or stack[-1][1]:
                raise QuantError(f"layer {name} (ReLU) must follow a Linear layer")
            stack[-1] = (stack[-1][0], True)
        elif isinstance(m, nn.Flatten):
            if stack:
                raise QuantError(f"layer {name} (Flatten) is only supported before the first "
                                 "Linear layer")
        elif isinstance(m, (nn.Dropout, nn.Identity)):
            continue
        else:
            raise QuantError(f"layer {name} ({type(m).__name__}) is not supported by the "
                             "fully-connected pipeline; supported: Flatten, Linear, ReLU, Dropout")
    if not stack:
        raise QuantError("the model has no Linear layer")
    for i, (lin, relu) in enumerate(stack[:-1]):
        if not relu:
            raise QuantError(f"hidden Linear layer {i} ({lin.in_features}->{lin.out_features}) "
                             "must be followed by ReLU (activations are uint8 with zero point 0)")
    return stack


@torch.no_grad()
def quantize_mlp(model: nn.Module, calib_x: torch.Tensor, params: HwParams | None = None,
                 percentile: float = 100.0) -> QModel:
    """Quantize a Linear/ReLU stack, calibrating activation scales on ``calib_x``.

    Activation scales are the ``percentile`` of each ReLU output over the calibration data
    (100: the maximum) divided by 255. A final layer with ReLU is requantized to uint8; one
    without outputs int32 logits with a per-tensor weight scale.
    """
    params = params or HwParams()
    stack = extract_fc_stack(model)
    x = torch.as_tensor(calib_x, dtype=torch.float32).reshape(calib_x.shape[0], -1)
    if x.shape[1] != stack[0][0].in_features:
        raise QuantError(f"calibration data has {x.shape[1]} features, the model takes "
                         f"{stack[0][0].in_features}")
    if float(x.min()) < 0:
        raise QuantError("inputs must be non-negative (uint8 codes with zero point 0)")

    def scale_of(t):
        v = float(torch.quantile(t.flatten()[:1_000_000], percentile / 100.0)) \
            if percentile < 100 else float(t.max())
        return v / 255.0 if v > 0 else 1.0 / 255.0

    s_in = scale_of(x)
    input_scale = s_in
    layers: list[QLayer] = []
    h = x
    for idx, (lin, relu) in enumerate(stack):
        last = idx == len(stack) - 1
        codes, s_w = quantize_weight(lin.weight, per_channel=relu or not last)
        b = lin.bias.detach().to(torch.float64).numpy() if lin.bias is not None \
            else np.zeros(lin.out_features)
        bias = np.round(b / (s_in * s_w))
        lim = (1 << (params.acc_width - 1)) - 1
        if np.any(np.abs(bias) > lim):
            raise QuantError(f"layer {idx}: bias does not fit int{params.acc_width}")
        h = lin(h)
        if relu:
            h = torch.relu(h)
            s_out = scale_of(h)
            mult, shift = fit_requant(s_in * s_w / s_out, params.mult_bits, params.shift_bits)
        else:
            s_out = 0.0
            mult = np.zeros(lin.out_features, np.uint16)
            shift = np.zeros(lin.out_features, np.uint8)
        layers.append(QLayer(codes.astype(np.int8), bias.astype(np.int32), mult, shift, relu,
                             in_scale=s_in, weight_scale=s_w, out_scale=s_out))
        s_in = s_out
    return QModel(layers, input_scale)
