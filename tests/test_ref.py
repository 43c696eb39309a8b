"""The integer reference against a plain numpy int64 implementation of docs/numerics.md."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroskip.spec import HwParams
from zeroskip.sw.errors import ZeroskipError
from zeroskip.sw.pack import pack_model
from zeroskip.sw.quant import QLayer, QModel
from zeroskip.sw.ref import RefError, requantize, run_layer, run_model


def numpy_layer(q: QLayer, x: np.ndarray) -> np.ndarray:
    """acc = bias + x @ W.T; y = clamp((acc*M + 2**(S-1)) >> S, 0, 255) (floor shift)."""
    acc = x.astype(np.int64) @ q.weight.astype(np.int64).T + q.bias.astype(np.int64)
    if not q.requant:
        return acc
    m = q.mult.astype(np.int64)
    s = q.shift.astype(np.int64)
    y = np.floor_divide(acc * m + (np.int64(1) << (s - 1)), np.int64(1) << s)
    return np.clip(y, 0, 255)


def random_model(rng, sizes, density, last_requant):
    layers = []
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        requant = last_requant or i < len(sizes) - 2
        w = rng.integers(-127, 128, size=(b, a))
        w[rng.random((b, a)) >= density] = 0
        layers.append(QLayer(
            w.astype(np.int8), rng.integers(-20000, 20000, size=b).astype(np.int32),
            rng.integers(1, 1 << 16, size=b).astype(np.uint16) if requant
            else np.zeros(b, np.uint16),
            rng.integers(12, 24, size=b).astype(np.uint8) if requant else np.zeros(b, np.uint8),
            requant))
    return QModel(layers, 1.0)


@settings(max_examples=60, deadline=None)
@given(st.integers(0, 2**32 - 1), st.lists(st.integers(1, 40), min_size=2, max_size=4),
       st.sampled_from([0.1, 0.5, 1.0]), st.booleans(), st.integers(1, 6))
def test_reference_equals_numpy(seed, sizes, density, last_requant, pes):
    rng = np.random.default_rng(seed)
    qm = random_model(rng, sizes, density, last_requant)
    x = rng.integers(0, 256, size=(7, sizes[0]))
    x[rng.random(x.shape) < 0.3] = 0
    h = x
    want = []
    for q in qm.layers:
        h = numpy_layer(q, h)
        want.append(h)
    got = run_model(qm, x.astype(np.uint8), return_all=True)
    assert len(got) == len(want)
    for g, w in zip(got, want):
        assert g.dtype == torch.int64
        np.testing.assert_array_equal(g.numpy(), w)
    # the packed model gives the same answer (through the file format)
    pm = pack_model(qm, HwParams(pes=pes, index_bits=2, act_depth=64))
    np.testing.assert_array_equal(run_model(pm, x).numpy(), want[-1])


def rq(acc, m, s):
    return int(requantize(torch.tensor([acc]), torch.tensor([m]), torch.tensor([s]))[0])


@pytest.mark.parametrize("acc, m, s, want", [
    (1, 1, 1, 1),        # 0.5 rounds up
    (3, 1, 1, 2),        # 1.5 rounds up
    (5, 1, 2, 1),        # 1.25 -> 1
    (6, 1, 2, 2),        # 1.5 -> 2
    (0, 65535, 1, 0),
    (-1, 1, 1, 0),       # -0.5 rounds up to 0 (floor(-1 + 1) / 2 = 0)
    (-2, 1, 1, 0),       # -1 -> clamped by the ReLU
    (-3, 1, 1, 0),       # -1.5 -> -1 (half up), clamped
    (-(1 << 31), 65535, 1, 0),
    (510, 1, 1, 255),    # 255 exactly
    (511, 1, 1, 255),    # 255.5 -> 256 -> clamped
    (509, 1, 1, 255),    # 254.5 -> 255
    (507, 1, 1, 254),
    ((1 << 31) - 1, 65535, 63, 0),       # tiny ratio: < 0.5
    ((1 << 31) - 1, 65535, 47, 1),       # 2**47 - 65535 ... + 2**46 >> 47 == 1
    ((1 << 31) - 1, 65535, 1, 255),
    (1 << 46, 1, 47, 1),                 # exactly 0.5 -> 1
    ((1 << 46) - 1, 1, 47, 0),           # just below 0.5 -> 0
])
def test_requantize_edges(acc, m, s, want):
    assert rq(acc, m, s) == want
    # the formula, in Python's unbounded integers (>> is a floor shift there too)
    assert max(0, min(255, (acc * m + (1 << (s - 1))) >> s)) == want


@settings(max_examples=300, deadline=None)
@given(st.integers(-(1 << 31), (1 << 31) - 1), st.integers(0, (1 << 16) - 1), st.integers(1, 63))
def test_requantize_matches_python_ints(acc, m, s):
    assert rq(acc, m, s) == max(0, min(255, (acc * m + (1 << (s - 1))) >> s))


def test_requantize_vectorised_per_channel():
    acc = torch.tensor([[10, -10, 300], [0, 7, 1000]])
    m = torch.tensor([1, 1, 3])
    s = torch.tensor([1, 1, 2])
    assert requantize(acc, m, s).tolist() == [[5, 0, 225], [0, 4, 255]]


def one_layer(requant=True):
    w = np.array([[1, -2, 3], [0, 4, 0]], np.int8)
    return QLayer(w, np.array([5, -5], np.int32), np.array([3, 1], np.uint16),
                  np.array([1, 2], np.uint8), requant)


def test_run_layer_small_example():
    x = np.array([[1, 2, 3], [0, 0, 0]], np.uint8)
    # acc = [1-4+9+5, 8-5] = [11, 3]; y = [(33+1)>>1, (3+2)>>2] = [17, 1]
    # zero input: acc = bias = [5, -5]; y = [(15+1)>>1, (-5+2)>>2 = -1 -> 0] = [8, 0]
    assert run_layer(one_layer(), x).tolist() == [[17, 1], [8, 0]]
    assert run_layer(one_layer(False), x).tolist() == [[11, 3], [5, -5]]


@pytest.mark.parametrize("x, msg", [
    (np.array([[1.0, 2.0, 3.0]]), "inputs must be integer uint8 codes, not torch.float64"),
    (np.array([[True, False, True]]), "inputs must be integer uint8 codes, not torch.bool"),
    (np.array([[1, 2]]), "inputs have 2 features, the model takes 3"),
    (np.array([[1, 2, 256]]), r"inputs must be uint8 codes in 0\.\.255"),
    (np.array([[1, -1, 2]]), r"inputs must be uint8 codes in 0\.\.255"),
])
def test_ref_errors_on_bad_inputs(x, msg):
    qm = QModel([one_layer(False)], 1.0)
    with pytest.raises(RefError, match=msg) as ei:
        run_model(qm, x)
    assert isinstance(ei.value, ZeroskipError)


def test_ref_accepts_one_vector_and_images():
    qm = QModel([one_layer(False)], 1.0)
    assert run_model(qm, [1, 2, 3]).tolist() == [[11, 3]]
    assert run_model(qm, np.array([[[1, 2, 3]]], np.uint8)).shape == (1, 2)


def test_ref_accumulator_overflow():
    w = np.full((1, 1024), 127, np.int8)
    q = QLayer(w, np.zeros(1, np.int32), np.zeros(1, np.uint16), np.zeros(1, np.uint8), False)
    x = np.full((1, 1024), 255, np.uint8)
    assert int(run_layer(q, x)[0, 0]) == 1024 * 127 * 255
    with pytest.raises(RefError, match="accumulator overflows int24"):
        run_layer(q, x, acc_width=24)
    with pytest.raises(RefError, match="accumulator overflows int24"):
        run_model(QModel([q], 1.0), x, acc_width=24)
