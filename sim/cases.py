"""Random and edge-case layers for RTL verification and benchmarks.

Everything is drawn from a ``numpy.random.Generator`` so a seed reproduces a case exactly.
"""

from __future__ import annotations

import numpy as np

from ..sw.quant import QLayer, QModel

__all__ = ["random_layer", "random_model", "random_inputs", "edge_models"]


def random_layer(rng: np.random.Generator, out_f: int, in_f: int, density: float,
                 requant: bool = True, extreme: bool = False, zero_rows: int = 0,
                 zero_cols: int = 0) -> QLayer:
    """A layer with int8 weights of the given density (exactly 0 where pruned), random bias and
    requantization. ``extreme`` draws weights from {-128, -127, 127} and large biases."""
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
    # keep the worst-case accumulator inside int32 (the packer checks it)
    headroom = (1 << 31) - 1 - int(np.abs(w).sum(axis=1).max(initial=0)) * 255
    blim = max(1, min(headroom, 1 << 30 if extreme else 1 << 16))
    bias = rng.integers(-blim, blim, size=out_f)
    if requant:
        # scale so typical outputs land inside 0..255 (plus some clamping both ways)
        typ = max(1.0, float(np.sqrt(in_f * max(density, 1e-3))) * 127 * 100)
        shift = np.clip(np.round(np.log2(typ) + 8 + rng.integers(-2, 3, size=out_f)), 1, 63)
        mult = rng.integers(1 << 15, 1 << 16, size=out_f)
        if extreme:
            shift = rng.choice(np.array([1, 2, 31, 47, 48, 49, 63]), size=out_f)
            mult = rng.choice(np.array([1, 2, (1 << 16) - 1]), size=out_f)
    else:
        shift = mult = np.zeros(out_f)
    return QLayer(w.astype(np.int8), bias.astype(np.int32), mult.astype(np.uint16),
                  shift.astype(np.uint8), requant)


def random_model(rng: np.random.Generator, sizes: list[int], density: float | list[float],
                 last_requant: bool = False, **kw) -> QModel:
    dens = density if isinstance(density, list) else [density] * (len(sizes) - 1)
    layers = [random_layer(rng, b, a, d, requant=(i < len(sizes) - 2) or last_requant, **kw)
              for i, (a, b, d) in enumerate(zip(sizes[:-1], sizes[1:], dens))]
    return QModel(layers, 1.0)


def random_inputs(rng: np.random.Generator, n: int, features: int, density: float,
                  extreme: bool = False) -> np.ndarray:
    vals = rng.choice(np.array([1, 255]), size=(n, features)) if extreme else \
        rng.integers(1, 256, size=(n, features))
    return np.where(rng.random((n, features)) < density, vals, 0).astype(np.int64)


def edge_models(rng: np.random.Generator) -> list[tuple[str, QModel, np.ndarray]]:
    """Named corner cases: 1x1 layers, all-zero weights, all-zero rows/columns/inputs, extreme
    values, fully dense, a requantized output layer."""
    out = []
    m = random_model(rng, [1, 1], 1.0)
    out.append(("1x1", m, np.array([[0], [1], [255]])))
    m = random_model(rng, [1, 1, 1], 1.0, last_requant=True)
    out.append(("1x1x1 requant", m, np.array([[7], [255]])))
    m = random_model(rng, [16, 9, 5], 0.0)
    out.append(("all-zero weights", m, random_inputs(rng, 2, 16, 0.7)))
    m = random_model(rng, [24, 17, 6], 0.5, zero_rows=5, zero_cols=7)
    out.append(("zero rows and columns", m, random_inputs(rng, 3, 24, 0.6)))
    m = random_model(rng, [20, 12, 4], 0.6)
    out.append(("all-zero inputs", m, np.zeros((2, 20), dtype=np.int64)))
    m = random_model(rng, [30, 20, 10], 0.7, extreme=True, last_requant=True)
    out.append(("extreme values", m, random_inputs(rng, 3, 30, 0.9, extreme=True)))
    m = random_model(rng, [33, 19, 11], 1.0)
    out.append(("dense", m, random_inputs(rng, 2, 33, 1.0, extreme=True)))
    return out
