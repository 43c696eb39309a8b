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

__all__ = ["QLayer", "QModel", "QuantError", "quantize_model", "quantize_mlp", "fit_requant",
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
    """``[(linear, followed_by_relu), ...]`` for a fully-connected model (BatchNorm1d folded
    into the Linear layers, which are then new modules). Kept for compatibility; see
    :func:`zeroskip.sw.model_import.extract_layers` for the general chain."""
    from .model_import import extract_layers

    out = []
    for lay in extract_layers(model):
        if lay.kind != "fc":
            raise QuantError(f"layer {lay.name} (Conv2d): not a fully-connected model")
        lin = nn.Linear(lay.weight.shape[1], lay.weight.shape[0]).to(torch.float64)
        with torch.no_grad():
            lin.weight.copy_(lay.weight)
            lin.bias.copy_(lay.bias)
        out.append((lin, lay.relu))
    return out


def _check_percentile(percentile: float) -> float:
    p = float(percentile)
    if not (0 < p <= 100):
        raise QuantError(f"percentile must be in (0, 100], not {percentile!r}")
    return p


def _calibration_tensor(calib_x, first, input_shape) -> torch.Tensor:
    """Calibration data as float32 ``(N, C, H, W)`` for a conv first layer, ``(N, I)`` for
    an FC one; validated (non-empty, finite, non-negative)."""
    x = torch.as_tensor(np.asarray(calib_x) if not isinstance(calib_x, torch.Tensor)
                        else calib_x)
    if x.dtype == torch.bool or x.is_complex():
        raise QuantError(f"calibration data must be real numbers, not {x.dtype}")
    x = x.to(torch.float32)
    if x.ndim == 0 or x.shape[0] == 0 or x.numel() == 0:
        raise QuantError(f"calibration data is empty (shape {tuple(x.shape)}): give at least "
                         "one sample")
    if not bool(torch.isfinite(x).all()):
        raise QuantError("calibration data contains NaN or infinite values")
    if float(x.min()) < 0:
        raise QuantError("inputs must be non-negative (uint8 codes with zero point 0)")
    n = x.shape[0]
    if first.kind == "fc":
        feats = int(np.prod(x.shape[1:])) if x.ndim > 1 else 1
        if feats != first.weight.shape[1]:
            raise QuantError(f"calibration data has {feats} features, the model takes "
                             f"{first.weight.shape[1]}")
        return x.reshape(n, -1)
    c = first.weight.shape[1]
    if input_shape is not None:
        shape = tuple(int(v) for v in input_shape)
    elif x.ndim == 4:
        shape = tuple(x.shape[1:])
    else:
        raise QuantError(f"calibration data of shape {tuple(x.shape)} does not give the input "
                         "map of a convolutional model: give (N, C, H, W) data or the input "
                         "shape (C, H, W)")
    if len(shape) != 3 or shape[0] != c:
        raise QuantError(f"input map {shape} does not match the first Conv2d's {c} input "
                         "channels")
    if int(np.prod(x.shape[1:])) != int(np.prod(shape)):
        raise QuantError(f"calibration data of shape {tuple(x.shape[1:])} is not an input map "
                         f"{shape}")
    return x.reshape(n, *shape)


@torch.no_grad()
def quantize_model(model, calib_x, params: HwParams | None = None, percentile: float = 100.0,
                   input_shape: tuple[int, int, int] | None = None) -> QModel:
    """Quantize a CNN or MLP (see :mod:`zeroskip.sw.model_import` for what it may contain),
    calibrating activation scales by running the float model on ``calib_x``.

    BatchNorm is folded into the preceding layer first. Activation scales are the
    ``percentile`` (in (0, 100]; 100: the maximum) of each layer's output (after ReLU and
    pooling: what the next layer reads) over the calibration data, divided by 255. Weights are
    quantized per output channel (per tensor for a last layer without ReLU, whose int32 logits
    then share one scale); the requantization ``M / 2**S`` is fitted by :func:`fit_requant`.
    Max pooling goes into the layer's :class:`~zeroskip.sw.geometry.Geometry`. ``model`` is an
    ``nn.Module`` or the list of :class:`~zeroskip.sw.model_import.FloatLayer` it was read as;
    ``input_shape`` ``(C, H, W)`` is needed only when ``calib_x`` is flat and not square.
    """
    from .model_import import UnsupportedModelError, extract_layers

    params = params or HwParams()
    percentile = _check_percentile(percentile)
    try:
        chain = extract_layers(model) if isinstance(model, nn.Module) else list(model)
    except UnsupportedModelError as e:
        raise QuantError(str(e)) from None
    x = _calibration_tensor(calib_x, chain[0], input_shape).to(torch.float64)

    def scale_of(t):
        t = t.flatten()
        v = float(torch.quantile(t[:1_000_000], percentile / 100.0)) \
            if percentile < 100 else float(t.max())
        return v / 255.0 if v > 0 else 1.0 / 255.0

    s_in = scale_of(x)
    input_scale = s_in
    layers: list[QLayer] = []
    h = x
    in_shape = tuple(x.shape[1:]) if x.ndim == 4 else None
    lim = (1 << (params.acc_width - 1)) - 1
    for idx, lay in enumerate(chain):
        last = idx == len(chain) - 1
        o = lay.out_channels
        w2 = lay.weight.reshape(o, -1)
        for what, t in (("weights", w2), ("bias", lay.bias)):
            if not bool(torch.isfinite(t).all()):
                raise QuantError(f"layer {idx} ({lay.name}): its {what} contain NaN or infinite "
                                 "values (after folding BatchNorm, if any)")
        codes, s_w = quantize_weight(w2, per_channel=lay.relu or not last)
        bias = np.round(lay.bias.numpy() / (s_in * s_w))
        if np.any(np.abs(bias) > lim):
            raise QuantError(f"layer {idx} ({lay.name}): bias does not fit "
                             f"int{params.acc_width}")
        if lay.kind == "conv":
            k = int(lay.weight.shape[2])
            geom = Geometry("conv", in_shape, (k, k), lay.stride, lay.padding, lay.pool)
        else:
            geom = Geometry.fc(w2.shape[1], in_shape) if in_shape is not None else None
        h = lay.forward(h)
        if lay.relu:
            s_out = scale_of(h)
            mult, shift = fit_requant(s_in * s_w / s_out, params.mult_bits, params.shift_bits)
        else:
            s_out = 0.0
            mult = np.zeros(o, np.uint16)
            shift = np.zeros(o, np.uint8)
        layers.append(QLayer(codes.astype(np.int8), bias.astype(np.int32), mult, shift,
                             lay.relu, in_scale=s_in, weight_scale=s_w, out_scale=s_out,
                             geometry=geom))
        s_in = s_out
        in_shape = tuple(h.shape[1:]) if h.ndim == 4 else None
    return QModel(layers, input_scale)


def quantize_mlp(model: nn.Module, calib_x, params: HwParams | None = None,
                 percentile: float = 100.0) -> QModel:
    """:func:`quantize_model` for fully-connected models (kept for compatibility)."""
    return quantize_model(model, calib_x, params, percentile)
