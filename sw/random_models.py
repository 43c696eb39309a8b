"""Random integer models (FC stacks and CNNs) for tests, golden files, RTL verification and
benchmarks: the one generator of the project (``sim/cases.py`` and ``sw/golden.py`` use it).

Everything is drawn from a ``numpy.random.Generator``, so a seed reproduces a model exactly.
Sizes are always given in *network order* (``sizes = [inputs, hidden..., outputs]``) and a
single layer's size as ``(out, in)`` like its weight matrix.

* :func:`random_layer` -- one layer with a heuristic requantization (no data needed);
* :func:`random_model` -- an FC stack of :func:`random_layer`;
* :func:`fitted_layer` -- one layer (FC or conv) whose requantization is fitted to given inputs so
  that the outputs spread over 0..255;
* :func:`random_cnn` -- a whole CNN from a :class:`CnnSpec`, each layer fitted to the
  activations the previous layers produce;
* :func:`random_inputs` -- uint8 codes with a given density of nonzeros.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from ..spec import HwParams
from .geometry import Geometry
from .quant import QLayer, QModel, fit_requant

__all__ = ["random_layer", "bias_and_requant", "random_model", "random_inputs", "fitted_layer",
           "ConvSpec", "FCSpec", "CnnSpec", "random_cnn", "tie_rows"]



def bias_and_requant(rng: np.random.Generator, w: np.ndarray, density: float, requant: bool,
                     extreme: bool, bias_limit: int = 1 << 16):
    """Random ``(bias, mult, shift)`` for the weight matrix ``w`` (O, I): the bias keeps the
    worst-case accumulator inside int32 (the packer checks it); a requantized layer's shifts
    put typical outputs inside 0..255 (with some clamping both ways), ``extreme`` picks the
    corner values of ``mult`` and ``shift``."""
    out_f, in_f = w.shape
    headroom = (1 << 31) - 1 - int(np.abs(w).sum(axis=1).max(initial=0)) * 255
    blim = max(1, min(headroom, 1 << 30 if extreme else bias_limit))
    bias = rng.integers(-blim, blim, size=out_f)
    if requant:
        typ = max(1.0, float(np.sqrt(in_f * max(density, 1e-3))) * 127 * 100)
        shift = np.clip(np.round(np.log2(typ) + 8 + rng.integers(-2, 3, size=out_f)), 1, 63)
        mult = rng.integers(1 << 15, 1 << 16, size=out_f)
        if extreme:
            shift = rng.choice(np.array([1, 2, 31, 47, 48, 49, 63]), size=out_f)
            mult = rng.choice(np.array([1, 2, (1 << 16) - 1]), size=out_f)
    else:
        shift = mult = np.zeros(out_f)
    return bias, mult, shift

def random_layer(rng: np.random.Generator, out_f: int, in_f: int, density: float,
                 requant: bool = True, extreme: bool = False, zero_rows: int = 0,
                 zero_cols: int = 0, geometry: Geometry | None = None) -> QLayer:
    """A layer with int8 weights of the given density (exactly 0 where pruned), random bias and
    requantization. ``extreme`` draws weights from {-128, -127, 127} and large biases.
    ``geometry`` (its ``columns`` must be ``in_f``) makes it a convolution."""
    if extreme:
        vals = rng.choice(np.array([-128, -127, 127]), size=(out_f, in_f))
    else:
        vals = rng.integers(-127, 128, size=(out_f, in_f))
        vals[vals == 0] = 1
    w = np.where(rng.random((out_f, in_f)) < density, vals, 0)
    if zero_rows:
        w[rng.choice(out_f, size=min(zero_rows, out_f), replace=False), :] = 0
    if zero_cols:
        w[:, rng.choice(in_f, size=min(zero_cols, in_f), replace=False)] = 0
    bias, mult, shift = bias_and_requant(rng, w, density, requant, extreme)
    return QLayer(w.astype(np.int8), bias.astype(np.int32), mult.astype(np.uint16),
                  shift.astype(np.uint8), requant, geometry=geometry)


def random_model(rng: np.random.Generator, sizes: list[int], density: float | list[float],
                 last_requant: bool = False, **kw) -> QModel:
    """An FC stack ``sizes[0] -> sizes[1] -> ...`` of :func:`random_layer` layers."""
    dens = density if isinstance(density, list) else [density] * (len(sizes) - 1)
    layers = [random_layer(rng, b, a, d, requant=(i < len(sizes) - 2) or last_requant, **kw)
              for i, (a, b, d) in enumerate(zip(sizes[:-1], sizes[1:], dens))]
    return QModel(layers, 1.0)


def random_inputs(rng: np.random.Generator, n: int, features: int, density: float,
                  extreme: bool = False) -> np.ndarray:
    """``(n, features)`` int64 codes, nonzero with probability ``density`` (1..255, or only
    {1, 255} with ``extreme``)."""
    vals = rng.choice(np.array([1, 255]), size=(n, features)) if extreme else \
        rng.integers(1, 256, size=(n, features))
    return np.where(rng.random((n, features)) < density, vals, 0).astype(np.int64)


def _accumulators(q: QLayer, x: np.ndarray) -> np.ndarray:
    """``(samples * pixels, out)`` int64 accumulators of ``q`` on codes ``x`` (no pooling)."""
    from .ref import _patches

    xt = torch.as_tensor(np.asarray(x, dtype=np.int64)).reshape(len(x), -1)
    w = torch.as_tensor(q.weight.astype(np.int64))
    acc = _patches(xt, q) @ w.T + torch.as_tensor(q.bias.astype(np.int64))
    return acc.reshape(-1, q.out_features).numpy()


def fitted_layer(rng: np.random.Generator, out_f: int, in_f: int, density: float,
                 requant: bool, x: np.ndarray, params: HwParams,
                 geometry: Geometry | None = None) -> QLayer:
    """A random layer whose requantization is chosen so that its outputs on the input codes
    ``x`` spread over 0..255 (the 90th percentile of each row's accumulator maps to 230: some
    outputs clamp at 0, a few at 255). Weights are drawn from -127..127 with the given density;
    biases from -3000..3000."""
    w = rng.integers(-127, 128, size=(out_f, in_f))
    w[rng.random((out_f, in_f)) >= density] = 0
    w = w.astype(np.int8)
    bias = rng.integers(-3000, 3001, size=out_f).astype(np.int32)
    q = QLayer(w, bias, np.zeros(out_f, np.uint16), np.zeros(out_f, np.uint8), requant,
               in_scale=1.0 / 64, weight_scale=np.full(out_f, 1.0 / 128),
               out_scale=1.0 / 16 if requant else 0.0, geometry=geometry)
    if requant:
        acc = _accumulators(q, x)
        top = np.maximum(np.percentile(acc, 90, axis=0), 1.0)
        q.mult, q.shift = fit_requant(230.0 / top, params.mult_bits, params.shift_bits)
    return q


def tie_rows(q: QLayer, rows, params: HwParams) -> None:
    """Give ``rows`` of a requantized layer a power-of-two scale ``M / 2**S = 2**-t`` (closest
    to their fitted one, ``t >= 1``): then ``acc * M / 2**S`` is exactly ``k + 1/2`` whenever
    ``acc = (2k + 1) * 2**(t-1)``, so round-half-up and round-half-even differ on such outputs
    (a test data set must tell them apart)."""
    for r in rows:
        ratio = float(q.mult[r]) / 2.0 ** int(q.shift[r])
        t = max(1, int(round(-np.log2(ratio))))
        m_bits = min(params.mult_bits - 1, params.max_shift - t)
        if m_bits < 0:
            continue
        q.mult[r] = 1 << m_bits
        q.shift[r] = m_bits + t


@dataclass(frozen=True)
class ConvSpec:
    """A convolution: ``out_channels``, square ``kernel``, ``stride``, ``padding``, optional
    max ``pool = (k, s)``."""
    out_channels: int
    kernel: int
    stride: int = 1
    padding: int = 0
    pool: tuple[int, int] | None = None


@dataclass(frozen=True)
class FCSpec:
    """A fully-connected layer (after a conv layer it reads the CHW flattening)."""
    out_features: int


@dataclass(frozen=True)
class CnnSpec:
    """A network: the input map ``(C, H, W)`` and its layers in order. Every layer but the
    last is requantized (ReLU); the last one too when ``last_requant``."""
    in_shape: tuple[int, int, int]
    layers: tuple[ConvSpec | FCSpec, ...]
    last_requant: bool = False


def random_cnn(rng: np.random.Generator, spec: CnnSpec, density: float | list[float],
               params: HwParams | None = None, inputs: np.ndarray | None = None,
               ties: int = 0) -> QModel:
    """A random CNN (or MLP) of the shape ``spec``, each layer fitted by :func:`fitted_layer`
    to the activations the layers before it produce on ``inputs`` (default: 16 random input
    maps with 60% nonzero codes). ``density`` is one weight density or one per layer;
    ``ties`` rows of every requantized layer get a power-of-two scale (:func:`tie_rows`).
    The geometry of every layer is checked (:class:`~zeroskip.sw.geometry.Geometry`)."""
    from .ref import run_layer

    params = params or HwParams()
    n_layers = len(spec.layers)
    dens = list(density) if isinstance(density, (list, tuple)) else [density] * n_layers
    if len(dens) != n_layers:
        raise ValueError(f"{len(dens)} densities for {n_layers} layers")
    shape = tuple(int(v) for v in spec.in_shape)
    size = shape[0] * shape[1] * shape[2]
    x = random_inputs(rng, 16, size, 0.6) if inputs is None else \
        np.asarray(inputs, dtype=np.int64).reshape(-1, size)
    h = x
    layers = []
    for i, (ls, d) in enumerate(zip(spec.layers, dens)):
        requant = i < n_layers - 1 or spec.last_requant
        if isinstance(ls, ConvSpec):
            geom = Geometry("conv", shape, (ls.kernel, ls.kernel), ls.stride, ls.padding,
                            ls.pool)
            out = ls.out_channels
        elif isinstance(ls, FCSpec):
            geom = Geometry.fc(shape[0] * shape[1] * shape[2], shape)
            out = ls.out_features
        else:
            raise TypeError(f"layer {i}: {ls!r} is neither a ConvSpec nor an FCSpec")
        plain = geom.kind == "fc" and geom.in_shape[1:] == (1, 1)
        q = fitted_layer(rng, out, geom.columns, d, requant, h, params,
                         geometry=None if plain else geom)
        if requant and ties:
            tie_rows(q, rng.choice(out, size=min(ties, out), replace=False), params)
        layers.append(q)
        h = run_layer(q, h, params.acc_width).numpy()
        shape = geom.out_shape(out)
    return QModel(layers, input_scale=1.0 / 64)
