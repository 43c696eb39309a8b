"""Random convolutional layers and CNNs for RTL verification (a seed reproduces a case).

Shapes cover what the hardware can get wrong: kernels 1..5, strides 1..2, paddings
0..k//2, max pooling 2..3 (also overlapping windows, stride < kernel), channel counts that are
not multiples of the PE count, maps from 1x1 up, weight and activation densities from 1.0
down, all-zero channels and maps, extreme codes.
"""

from __future__ import annotations

import numpy as np

from ..sw.geometry import Geometry
from ..sw.quant import QLayer, QModel
from ..sw.random_models import bias_and_requant

__all__ = ["conv_layer", "random_geometry", "random_cnn", "conv_inputs"]


def conv_layer(rng: np.random.Generator, out_c: int, geom: Geometry, density: float,
               requant: bool = True, extreme: bool = False, zero_in_channels: int = 0
               ) -> QLayer:
    """A layer of ``geom`` with int8 weights of the given density (``extreme``: from
    {-128, -127, 127} with extreme shifts and multipliers); ``zero_in_channels`` input
    channels get no weights at all."""
    n = geom.columns
    if extreme:
        vals = rng.choice(np.array([-128, -127, 127]), size=(out_c, n))
    else:
        vals = rng.integers(-127, 128, size=(out_c, n))
        vals[vals == 0] = 1
    w = np.where(rng.random((out_c, n)) < density, vals, 0)
    c, kh, kw = geom.in_shape[0], geom.kernel[0], geom.kernel[1]
    if zero_in_channels:
        for ch in rng.choice(c, size=min(c, zero_in_channels), replace=False):
            w[:, ch * kh * kw:(ch + 1) * kh * kw] = 0
    bias, mult, shift = bias_and_requant(rng, w, density, requant, extreme, 1 << 15)
    return QLayer(w.astype(np.int8), bias.astype(np.int32), mult.astype(np.uint16),
                  shift.astype(np.uint8), requant, geometry=geom)


def random_geometry(rng: np.random.Generator, in_shape, max_kernel: int = 5,
                    pool: bool | None = None) -> Geometry:
    """A random conv geometry on ``in_shape`` that fits (kernel, stride, padding, pooling)."""
    c, h, w = in_shape
    for _ in range(100):
        k = int(rng.integers(1, max_kernel + 1))
        kh, kw = (k, k) if rng.random() < 0.7 else (k, int(rng.integers(1, max_kernel + 1)))
        s = int(rng.integers(1, 3))
        pad = int(rng.integers(0, min(kh, kw) // 2 + 1))
        if h + 2 * pad < kh or w + 2 * pad < kw:
            continue
        oh, ow = (h + 2 * pad - kh) // s + 1, (w + 2 * pad - kw) // s + 1
        pl = None
        want = pool if pool is not None else bool(rng.random() < 0.5)
        if want and min(oh, ow) >= 2:
            pk = int(rng.integers(2, min(3, oh, ow) + 1))
            ps = int(rng.choice([pk, pk, max(1, pk - 1)]))
            pl = (pk, ps)
        return Geometry("conv", (c, h, w), (kh, kw), s, pad, pl)
    return Geometry("conv", (c, h, w), (1, 1))


def random_cnn(rng: np.random.Generator, in_shape, convs: int, channels, densities,
               fc: list[int] | None = None, extreme: bool = False, last_requant=False,
               zero_in_channels: int = 0) -> QModel:
    """``convs`` random conv layers (``channels[i]`` outputs) then FC layers of ``fc`` outputs
    (at least one: the output layer's map must be 1x1)."""
    fc = fc or [int(rng.integers(1, 12))]
    layers = []
    shape = tuple(in_shape)
    dens = list(densities)
    for i in range(convs):
        g = random_geometry(rng, shape)
        layers.append(conv_layer(rng, channels[i], g, dens[i], extreme=extreme,
                                 zero_in_channels=zero_in_channels if i == 0 else 0))
        shape = g.out_shape(channels[i])
    for j, o in enumerate(fc):
        last = j == len(fc) - 1
        g = Geometry.fc(shape[0] * shape[1] * shape[2], in_shape=shape)
        layers.append(conv_layer(rng, o, g, dens[min(len(dens) - 1, convs + j)],
                                 requant=(not last) or last_requant, extreme=extreme))
        shape = (o, 1, 1)
    return QModel(layers, 1.0)


def conv_inputs(rng: np.random.Generator, n: int, shape, density: float,
                extreme: bool = False, zero_channels: int = 0) -> np.ndarray:
    """``n`` input maps (CHW flattened uint8 codes) of the given nonzero density."""
    c, h, w = shape
    vals = rng.choice(np.array([1, 255]), size=(n, c, h, w)) if extreme else \
        rng.integers(1, 256, size=(n, c, h, w))
    x = np.where(rng.random((n, c, h, w)) < density, vals, 0)
    if zero_channels:
        x[:, rng.choice(c, size=min(c, zero_channels), replace=False)] = 0
    return x.reshape(n, -1).astype(np.int64)
