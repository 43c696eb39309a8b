"""The conv/pool reference against an independent integer formulation.

``torch.nn.functional.conv2d`` on float64 tensors holding the integer codes is exact here: every
partial sum is an integer below ``64 * 49 * 128 * 255 + 2**31 < 2**53``. Requantization is done
with Python integers (round half up), then ``max_pool2d`` on the codes.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroskip.spec import HwParams
from zeroskip.sw.geometry import Geometry
from zeroskip.sw.pack import from_bytes, pack_model, to_bytes
from zeroskip.sw.quant import QModel
from zeroskip.sw.random_models import CnnSpec, ConvSpec, FCSpec, random_cnn, random_layer
from zeroskip.sw.ref import run_layer, run_model


def independent_layer(q, x: np.ndarray) -> np.ndarray:
    g = q.geom
    n = len(x)
    c, h, w = g.in_shape
    xm = torch.as_tensor(x.reshape(n, c, h, w), dtype=torch.float64)
    kh, kw = g.kernel
    wt = torch.as_tensor(q.weight.astype(np.float64)).reshape(q.out_features, c, kh, kw)
    acc = F.conv2d(xm, wt, torch.as_tensor(q.bias.astype(np.float64)), stride=g.stride,
                   padding=g.padding)
    a = acc.to(torch.int64)
    assert torch.equal(a.to(torch.float64), acc)           # exact integers
    if q.requant:
        # floor(a * m / 2**s + 1/2) (round half up) with Python's unbounded integers
        m = q.mult.astype(object).reshape(1, -1, 1, 1)
        s = q.shift.astype(int).astype(object).reshape(1, -1, 1, 1)
        ya = (2 * a.numpy().astype(object) * m + 2 ** s) // 2 ** (s + 1)
        y = torch.as_tensor(np.clip(ya, 0, 255).astype(np.int64))
    else:
        y = a
    if g.pool is not None:
        y = F.max_pool2d(y.to(torch.float64), g.pool[0], g.pool[1]).to(torch.int64)
    return y.reshape(n, -1).numpy()


@st.composite
def conv_layers(draw):
    k = draw(st.integers(1, 7))
    s = draw(st.integers(1, 2))
    p = draw(st.integers(0, k // 2))
    c = draw(st.sampled_from([1, 2, 3, 5, 16, 64]))
    o = draw(st.sampled_from([1, 2, 7, 16, 64]))
    lo = max(1, k - 2 * p)
    h = draw(st.integers(lo, 28))
    w = draw(st.integers(lo, 28)) if draw(st.booleans()) else h
    oh, ow = (h + 2 * p - k) // s + 1, (w + 2 * p - k) // s + 1
    pool = None
    pk = draw(st.integers(2, 3))
    if draw(st.booleans()) and min(oh, ow) >= pk:
        pool = (pk, draw(st.sampled_from([pk, 1, 2, 3])))
    return Geometry("conv", (c, h, w), (k, k), s, p, pool), o


@settings(max_examples=120, deadline=None)
@given(conv_layers(), st.sampled_from([1.0, 0.5, 0.1]), st.booleans(), st.booleans(),
       st.integers(0, 2**32 - 1))
def test_conv_layer_matches_independent(gl, density, requant, extreme, seed):
    g, o = gl
    rng = np.random.default_rng(seed)
    q = random_layer(rng, o, g.columns, density, requant=requant, extreme=extreme, geometry=g)
    x = rng.integers(0, 256, size=(3, g.in_size))
    x[rng.random(x.shape) < 0.3] = 0
    x[0] = 255                                  # borders and all
    got = run_layer(q, x).numpy()
    assert got.shape == (3, q.out_size)
    np.testing.assert_array_equal(got, independent_layer(q, x))


def test_one_by_one_maps_and_kernels_larger_than_the_map():
    rng = np.random.default_rng(5)
    for g in (Geometry("conv", (3, 1, 1), (1, 1)), Geometry("conv", (2, 1, 1), (3, 3), 1, 1),
              Geometry("conv", (4, 2, 2), (5, 5), 2, 2), Geometry("conv", (1, 7, 7), (7, 7))):
        q = random_layer(rng, 5, g.columns, 0.7, geometry=g)
        x = rng.integers(0, 256, size=(4, g.in_size))
        np.testing.assert_array_equal(run_layer(q, x).numpy(), independent_layer(q, x))


@pytest.mark.parametrize("seed", range(4))
def test_random_cnn_through_the_file_matches_independent(seed):
    rng = np.random.default_rng(seed)
    spec = CnnSpec((3, 12, 12), (ConvSpec(8, 5, 1, 2, (2, 2)), ConvSpec(12, 3, 2, 1),
                                 ConvSpec(6, 1), FCSpec(10)))
    params = HwParams(pes=3, index_bits=2)
    qm = random_cnn(rng, spec, [0.8, 0.4, 0.6, 0.3], params, ties=2)
    pm = from_bytes(to_bytes(pack_model(qm, params)))
    x = rng.integers(0, 256, size=(5, 3 * 12 * 12))
    h = x
    for q in pm.qmodel().layers:
        h = independent_layer(q, h)
    np.testing.assert_array_equal(run_model(pm, x).numpy(), h)
    assert isinstance(pm.qmodel(), QModel)
