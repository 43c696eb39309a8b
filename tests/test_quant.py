"""Quantization: requantization fitting, weight codes, the Linear/ReLU stack, digits accuracy."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import nn

from zeroskip.spec import HwParams
from zeroskip.sw.quant import QuantError, fit_requant, quantize_mlp, quantize_weight
from zeroskip.sw.ref import run_model

# ----------------------------------------------------------------------------- fit_requant


@settings(max_examples=300, deadline=None)
@given(st.floats(1e-9, 1000.0), st.integers(2, 16), st.integers(1, 6))
def test_fit_requant_ranges_and_accuracy(r, mult_bits, shift_bits):
    mmax, smax = (1 << mult_bits) - 1, (1 << shift_bits) - 1
    try:
        (m,), (s,) = fit_requant([r], mult_bits, shift_bits)
    except QuantError as e:
        if "too large" in str(e):
            # even S = 1 needs a multiplier above mmax
            assert round(r * 2) > mmax
        else:
            # the best multiplier at the largest shift is 0 or off by more than 1%
            assert "too small" in str(e)
            best = round(r * 2.0 ** smax)
            assert best <= mmax
            assert best == 0 or abs(best / 2.0 ** smax - r) > 0.01 * r
        return
    m, s = int(m), int(s)
    assert 1 <= m <= mmax and 1 <= s <= smax
    assert abs(m - r * 2**s) <= 0.5
    if s == smax:
        # capped shift: accepted only while the multiplier stays within 1%
        assert abs(m / 2**s - r) <= 0.01 * r
    else:
        # the largest shift whose rounded multiplier still fits
        assert round(r * 2.0 ** (s + 1)) > mmax


def test_fit_requant_typical_ratio_precision():
    r = np.array([0.00123, 0.5, 0.999, 3.7, 1e-6])
    m, s = fit_requant(r)
    assert m.dtype == np.uint16 and s.dtype == np.uint8
    assert np.all(m >= 1 << 15)
    np.testing.assert_allclose(m / 2.0 ** s.astype(np.float64), r, rtol=2**-15)


@pytest.mark.parametrize("r", [0.0, -1.0, math.inf, math.nan])
def test_fit_requant_rejects_bad_ratios(r):
    with pytest.raises(QuantError, match="must be positive and finite"):
        fit_requant([1.0, r])


def test_fit_requant_rejects_ratio_too_large():
    with pytest.raises(QuantError, match="too large"):
        fit_requant([40000.0])
    with pytest.raises(QuantError, match="too large"):
        fit_requant([2.0], mult_bits=2)
    assert fit_requant([1.5], mult_bits=2) == (np.array([3]), np.array([1]))


def test_fit_requant_refuses_ratios_it_cannot_represent():
    # shifts of at most 1 cannot express 0.1 with 1% precision: refuse rather than return M = 0
    with pytest.raises(QuantError, match="too small"):
        fit_requant([0.1], mult_bits=16, shift_bits=1)
    with pytest.raises(QuantError, match="too small"):
        fit_requant([1e-25])
    # the largest shift that fits is chosen (r = 1.90625, 4-bit multipliers: S=3, M=15)
    (m,), (s,) = fit_requant([1.90625], mult_bits=4, shift_bits=6)
    assert (int(m), int(s)) == (15, 3)


# ----------------------------------------------------------------------------- weights


@settings(max_examples=100, deadline=None)
@given(st.integers(1, 12), st.integers(1, 12), st.floats(0.0, 1.0), st.booleans(),
       st.integers(0, 2**31 - 1))
def test_quantize_weight_keeps_zeros(o, i, density, per_channel, seed):
    g = torch.Generator().manual_seed(seed)
    w = torch.randn(o, i, generator=g, dtype=torch.float64)
    w[torch.rand(o, i, generator=g) >= density] = 0.0
    codes, scales = quantize_weight(w, per_channel=per_channel)
    assert codes.dtype == np.int8 and codes.shape == (o, i) and scales.shape == (o,)
    assert np.all((codes == 0) == (w.numpy() == 0) | (np.abs(w.numpy()) < scales[:, None] / 2))
    assert np.all(codes[w.numpy() == 0] == 0)
    assert np.all(np.abs(codes) <= 127)
    assert np.all(scales > 0)
    if not per_channel:
        assert np.all(scales == scales[0])
    # the largest magnitude (of a row, or of the tensor) maps to +-127
    amax = np.abs(w.numpy()).max(axis=1) if per_channel else np.full(o, np.abs(w.numpy()).max())
    for r in range(o):
        if amax[r] > 0:
            assert scales[r] == pytest.approx(amax[r] / 127)
            if per_channel:
                assert np.abs(codes[r]).max() == 127
        else:
            assert scales[r] == 1.0
    np.testing.assert_allclose(codes * scales[:, None], w.numpy(),
                               atol=float(scales.max()) / 2 + 1e-12)


# ----------------------------------------------------------------------------- quantize_mlp


def calib(n=64, features=8, seed=0):
    return torch.rand(n, features, generator=torch.Generator().manual_seed(seed))


@pytest.mark.parametrize("model, msg", [
    (nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Conv2d(1, 1, 1)),
     r"layer 2 \(Conv2d\): after Flatten"),
    (nn.Sequential(nn.Linear(8, 4), nn.Sigmoid(), nn.Linear(4, 2)),
     r"layer 1 \(Sigmoid\) is not supported"),
    (nn.Sequential(nn.Linear(8, 4), nn.Linear(4, 2)),
     r"layer 0 \(Linear\): a hidden layer must be followed by ReLU"),
    (nn.Sequential(nn.ReLU(), nn.Linear(8, 2)), r"layer 0 \(ReLU\): before any Linear"),
    (nn.Sequential(nn.Flatten(), nn.Dropout()), "Sequential has no Linear or Conv2d layer"),
    (nn.Sequential(nn.Sequential(nn.Linear(8, 4), nn.BatchNorm1d(4)), nn.Linear(4, 2)).train(),
     r"layer 0\.1 \(BatchNorm1d\): in training mode"),
    (nn.Sequential(nn.Linear(7, 2)), "calibration data has 8 features, the model takes 7"),
])
def test_quantize_mlp_rejects(model, msg):
    with pytest.raises(QuantError, match=msg):
        quantize_mlp(model, calib())


def test_harmless_repeats_are_accepted():
    """ReLU twice and Flatten after a Linear change nothing, in float and in integers."""
    torch.manual_seed(4)
    a = nn.Sequential(nn.Linear(8, 4), nn.ReLU(), nn.Linear(4, 2)).eval()
    b = nn.Sequential(a[0], nn.ReLU(), nn.ReLU(), nn.Flatten(), a[2]).eval()
    x = calib()
    qa, qb = quantize_mlp(a, x), quantize_mlp(b, x)
    for la, lb in zip(qa.layers, qb.layers):
        np.testing.assert_array_equal(la.weight, lb.weight)
        np.testing.assert_array_equal(la.mult, lb.mult)


def test_quantize_mlp_rejects_negative_inputs():
    with pytest.raises(QuantError, match="inputs must be non-negative"):
        quantize_mlp(nn.Sequential(nn.Linear(8, 2)), calib() - 0.5)


def test_quantize_mlp_structure():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(8, 6), nn.ReLU(), nn.Dropout(),
                          nn.Linear(6, 3)).eval()
    x = calib()
    qm = quantize_mlp(model, x, HwParams(mult_bits=12, shift_bits=5))
    assert len(qm.layers) == 2
    a, b = qm.layers
    assert a.requant and not b.requant
    assert qm.input_scale == pytest.approx(float(x.max()) / 255)
    assert a.in_scale == qm.input_scale and b.in_scale == a.out_scale
    # per-channel hidden layer, per-tensor logits layer
    assert len(set(a.weight_scale.tolist())) == 6
    assert len(set(b.weight_scale.tolist())) == 1
    assert np.all(a.mult < 1 << 12) and np.all((a.shift >= 1) & (a.shift <= 31))
    assert np.all(b.mult == 0) and np.all(b.shift == 0) and b.out_scale == 0.0
    # M / 2**S approximates in_scale * w_scale / out_scale
    ratio = a.in_scale * a.weight_scale / a.out_scale
    np.testing.assert_allclose(a.mult / 2.0 ** a.shift, ratio, rtol=2.0**-10)
    # bias in the accumulator's scale
    np.testing.assert_array_equal(
        a.bias, np.round(model[1].bias.detach().double().numpy() / (a.in_scale * a.weight_scale)))
    # inputs: round(x / scale), clamped to 0..255
    codes = qm.quantize_input(x)
    assert codes.dtype == np.uint8 and codes.max() == 255
    np.testing.assert_array_equal(codes, np.clip(np.round(x.numpy() / np.float32(
        qm.input_scale)), 0, 255))
    # the real logits are approximately recovered
    out = run_model(qm, codes)
    np.testing.assert_allclose(qm.dequant_logits(out.numpy()), model(x).detach().numpy(),
                               atol=0.05)


def test_quantize_mlp_relu_last_layer_is_per_channel_and_requantized():
    torch.manual_seed(1)
    model = nn.Sequential(nn.Linear(8, 5), nn.ReLU(), nn.Linear(5, 4), nn.ReLU())
    qm = quantize_mlp(model, calib())
    last = qm.layers[-1]
    assert last.requant and last.out_scale > 0 and np.all(last.mult > 0)
    assert len(set(last.weight_scale.tolist())) == 4
    out = run_model(qm, qm.quantize_input(calib()))
    assert out.min() >= 0 and out.max() <= 255


def test_quantize_mlp_bias_must_fit():
    model = nn.Sequential(nn.Linear(8, 2))
    with torch.no_grad():
        model[0].weight.fill_(1e-9)
        model[0].bias.fill_(1e6)
    with pytest.raises(QuantError, match=r"layer 0 \(0\): bias does not fit int32"):
        quantize_mlp(model, calib())


# ----------------------------------------------------------------------------- accuracy

TOLERANCE = 0.02     # the integer reference is within 2 points of the float pruned model


def test_digits_pruned_reference_accuracy():
    from zeroskip.sw.golden import train_digits_pruned
    from zeroskip.sw.pack import pack_model
    from zeroskip.sw.prune import sparsity
    from zeroskip.sw.train import evaluate

    model, ds = train_digits_pruned(seed=0)
    assert sparsity(model) == pytest.approx(0.9, abs=0.005)
    float_acc = evaluate(model, ds.x_test, ds.y_test)
    assert float_acc > 0.9
    params = HwParams(pes=4, index_bits=4)
    qm = quantize_mlp(model, ds.x_train, params)
    pm = pack_model(qm, params)
    logits = run_model(pm, qm.quantize_input(ds.x_test))
    int_acc = float((logits.argmax(1) == ds.y_test).float().mean())
    assert abs(int_acc - float_acc) <= TOLERANCE, (int_acc, float_acc)
