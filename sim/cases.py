"""Edge-case models for RTL verification and benchmarks.

The random generators (:func:`random_layer`, :func:`random_model`, :func:`random_inputs`, and
:func:`~zeroskip.sw.random_models.random_cnn` for CNNs) live in
:mod:`zeroskip.sw.random_models`; they are re-exported here. Everything is drawn from a
``numpy.random.Generator`` so a seed reproduces a case exactly.
"""

from __future__ import annotations

import numpy as np

from ..sw.quant import QModel
from ..sw.random_models import random_inputs, random_layer, random_model

__all__ = ["random_layer", "random_model", "random_inputs", "edge_models"]


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
