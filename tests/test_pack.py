"""The packer and the model file: exact round trips, fillers, atomic writes, fit checks."""

from __future__ import annotations

import os

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroskip.spec import HwParams, decode_entry
from zeroskip.sw import modelfile
from zeroskip.sw.errors import FitError, FormatError
from zeroskip.sw.pack import (
    check_fits,
    from_bytes,
    local_rows,
    pack_layer,
    pack_model,
    read_model,
    to_bytes,
    unpack_layer,
    write_model,
)
from zeroskip.sw.quant import QLayer, QModel

# ----------------------------------------------------------------------------- strategies


def make_layer(rng: np.random.Generator, n_in: int, n_out: int, density: float,
               requant: bool = True) -> QLayer:
    w = rng.integers(-128, 128, size=(n_out, n_in))
    w[rng.random((n_out, n_in)) >= density] = 0
    mult = rng.integers(1, 1 << 16, size=n_out).astype(np.uint16) if requant \
        else np.zeros(n_out, np.uint16)
    shift = rng.integers(1, 64, size=n_out).astype(np.uint8) if requant \
        else np.zeros(n_out, np.uint8)
    return QLayer(w.astype(np.int8), rng.integers(-1000, 1000, size=n_out).astype(np.int32),
                  mult, shift, requant, in_scale=float(rng.random() + 0.1),
                  weight_scale=rng.random(n_out) + 0.01, out_scale=float(rng.random() + 0.1))


@st.composite
def layers_and_params(draw):
    n_out = draw(st.integers(1, 24))
    n_in = draw(st.integers(1, 10))
    density = draw(st.sampled_from([0.0, 0.05, 0.2, 0.5, 0.9, 1.0]))
    pes = draw(st.integers(1, 9))
    k = draw(st.integers(1, 4))
    seed = draw(st.integers(0, 2**32 - 1))
    q = make_layer(np.random.default_rng(seed), n_in, n_out, density)
    return q, HwParams(pes=pes, index_bits=k)


def decode_stream(p: HwParams, ent) -> list[tuple[int, int]]:
    return [decode_entry(p, int(e)) for e in ent]


# ----------------------------------------------------------------------------- pack_layer


@settings(max_examples=150, deadline=None)
@given(layers_and_params(), st.booleans())
def test_pack_unpack_round_trip(lp, dense):
    q, p = lp
    pl = pack_layer(q, p, dense=dense)
    assert len(pl.ptrs) == len(pl.entries) == p.pes
    for ptr, ent in zip(pl.ptrs, pl.entries):
        assert ptr.dtype == np.uint32 and ent.dtype == np.uint16
        assert ptr[0] == 0 and ptr[-1] == len(ent) and np.all(np.diff(ptr.astype(int)) >= 0)
        assert np.all(ent.astype(int) >> p.entry_bits == 0)
    w = unpack_layer(pl.ptrs, pl.entries, q.out_features, q.in_features, p)
    assert w.dtype == np.int8
    np.testing.assert_array_equal(w, q.weight)


@settings(max_examples=150, deadline=None)
@given(layers_and_params(), st.booleans())
def test_entries_follow_the_row_assignment(lp, dense):
    """An independent decoder: row r is on PE r % pes at local row r // pes; within a column
    the local row of an entry is (previous local row) + delta + 1, starting from -1."""
    q, p = lp
    pl = pack_layer(q, p, dense=dense)
    w = np.zeros_like(q.weight)
    for pe in range(p.pes):
        n_rows = local_rows(q.out_features, p.pes, pe)
        assert n_rows == len(range(pe, q.out_features, p.pes))
        for j in range(q.in_features):
            row = -1
            col = decode_stream(p, pl.entries[pe][pl.ptrs[pe][j]:pl.ptrs[pe][j + 1]])
            if dense:
                assert [d for d, _ in col] == [0] * n_rows
            for delta, weight in col:
                row += delta + 1
                assert row < n_rows
                w[pe + p.pes * row, j] = weight
    np.testing.assert_array_equal(w, q.weight)


@settings(max_examples=150, deadline=None)
@given(layers_and_params())
def test_fillers_exactly_when_gaps_exceed_max_delta(lp):
    q, p = lp
    pl = pack_layer(q, p)
    step = p.max_delta + 1
    for pe in range(p.pes):
        sub = q.weight[pe::p.pes]
        for j in range(q.in_features):
            nz = np.flatnonzero(sub[:, j])
            gaps = np.diff(np.concatenate([[-1], nz])) - 1
            col = decode_stream(p, pl.entries[pe][pl.ptrs[pe][j]:pl.ptrs[pe][j + 1]])
            fillers = [e for e in col if e[1] == 0]
            assert len(col) == len(nz) + len(fillers)
            assert len(fillers) == int(sum(g // step for g in gaps))
            assert all(d == p.max_delta for d, _ in fillers)
            if len(gaps) and gaps.max() <= p.max_delta:
                assert not fillers


def test_filler_example():
    # one PE, index_bits 2 (max delta 3): a single nonzero at row 9 of column 0 needs
    # fillers at rows 3 and 7, then (delta 1, weight 5) lands on row 9
    p = HwParams(pes=1, index_bits=2)
    w = np.zeros((10, 2), np.int8)
    w[9, 0] = 5
    w[3, 1] = -2                        # gap 3 == max delta: no filler
    q = QLayer(w, np.zeros(10, np.int32), np.ones(10, np.uint16), np.ones(10, np.uint8), True)
    pl = pack_layer(q, p)
    assert decode_stream(p, pl.entries[0]) == [(3, 0), (3, 0), (1, 5), (3, -2)]
    assert list(pl.ptrs[0]) == [0, 3, 4]
    assert pl.n_entries == 4 and pl.nonzeros == 2


def test_dense_packing_stores_zeros():
    p = HwParams(pes=2, index_bits=1)
    w = np.array([[0, 1], [2, 0], [0, 0]], np.int8)
    q = QLayer(w, np.zeros(3, np.int32), np.ones(3, np.uint16), np.ones(3, np.uint8), True)
    pl = pack_layer(q, p, dense=True)
    assert decode_stream(p, pl.entries[0]) == [(0, 0), (0, 0), (0, 1), (0, 0)]
    assert decode_stream(p, pl.entries[1]) == [(0, 2), (0, 0)]
    assert pl.n_entries == 6


def test_unpack_layer_errors_name_the_problem():
    p = HwParams(pes=1, index_bits=2)
    good_ptr = np.array([0, 1], np.uint32)
    with pytest.raises(FormatError, match="PE 0 has 3 column pointers, expected 2"):
        unpack_layer([np.array([0, 0, 0])], [np.zeros(0)], 2, 1, p)
    with pytest.raises(FormatError, match="not monotone"):
        unpack_layer([np.array([1, 1])], [np.zeros(1)], 2, 1, p)
    with pytest.raises(FormatError, match="bits above bit 9"):
        unpack_layer([good_ptr], [np.array([1 << 10])], 2, 1, p)
    with pytest.raises(FormatError, match="row index 2 out of range"):
        unpack_layer([good_ptr], [np.array([2 << 8 | 1])], 2, 1, p)


# ----------------------------------------------------------------------------- file


@st.composite
def models(draw):
    pes = draw(st.integers(1, 6))
    k = draw(st.integers(1, 6))
    sizes = draw(st.lists(st.integers(1, 14), min_size=2, max_size=5))
    last_requant = draw(st.booleans())
    density = draw(st.sampled_from([0.0, 0.1, 0.4, 1.0]))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    layers = [make_layer(rng, a, b, density, requant=last_requant or i < len(sizes) - 2)
              for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:]))]
    return QModel(layers, float(rng.random() + 0.01)), HwParams(pes=pes, index_bits=k), \
        draw(st.booleans())


@settings(max_examples=80, deadline=None)
@given(models())
def test_to_bytes_from_bytes_round_trip(m):
    qm, p, dense = m
    pm = pack_model(qm, p, dense=dense)
    blob = to_bytes(pm)
    back = from_bytes(blob)
    assert back.params == p
    assert back.input_scale == np.float32(qm.input_scale)
    assert len(back.layers) == len(qm.layers)
    for a, b, pl in zip(qm.layers, back.layers, pm.layers):
        np.testing.assert_array_equal(b.q.weight, a.weight)
        np.testing.assert_array_equal(b.q.bias, a.bias)
        np.testing.assert_array_equal(b.q.mult, a.mult)
        np.testing.assert_array_equal(b.q.shift, a.shift)
        assert b.q.requant == a.requant
        assert b.q.in_scale == np.float32(a.in_scale)
        assert b.q.out_scale == np.float32(a.out_scale)
        np.testing.assert_array_equal(b.q.weight_scale, a.weight_scale.astype(np.float32))
        for x, y in zip(pl.ptrs + pl.entries, b.ptrs + b.entries):
            np.testing.assert_array_equal(x, y)
    assert to_bytes(back) == blob
    # version 2: header + HWPR (8+32+4) + MODL (8+20+4) + per layer 6 sections
    size = 16 + 44 + 32
    for pl in pm.layers:
        o, i = pl.q.out_features, pl.q.in_features
        size += 6 * 12 + (44 + 4 * o) + 4 * o + 4 * o + 4 * p.pes * (i + 1) + 2 * pl.n_entries
        size += 4 * o  # PERM
    assert len(blob) == size


def small_model(requant_last=False):
    rng = np.random.default_rng(1)
    layers = [make_layer(rng, 6, 5, 0.5), make_layer(rng, 5, 3, 0.5, requant=requant_last)]
    return QModel(layers, 0.5)


def test_write_model_atomic(tmp_path):
    pm = pack_model(small_model(), HwParams(pes=2))
    target = tmp_path / "m.zsk"
    n = write_model(target, pm)
    assert n == target.stat().st_size
    assert os.listdir(tmp_path) == ["m.zsk"]
    assert read_model(target).params == pm.params
    # overwrite in place: still no temporary left
    write_model(target, pm)
    assert os.listdir(tmp_path) == ["m.zsk"]


@pytest.mark.parametrize("fail_in", ["fsync", "replace"])
def test_write_model_failure_leaves_target_unchanged(tmp_path, monkeypatch, fail_in):
    target = tmp_path / "m.zsk"
    target.write_bytes(b"old contents")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.os, fail_in, boom)
    with pytest.raises(FormatError, match="m.zsk: cannot write \\(No space left on device\\)"):
        write_model(target, pack_model(small_model(), HwParams(pes=2)))
    monkeypatch.undo()
    assert target.read_bytes() == b"old contents"
    assert os.listdir(tmp_path) == ["m.zsk"]


def test_write_model_bad_model_leaves_no_file(tmp_path):
    pm = pack_model(small_model(), HwParams(pes=2))
    pm.layers = []                       # to_bytes fails before any file is created
    with pytest.raises(IndexError):
        write_model(tmp_path / "m.zsk", pm)
    assert os.listdir(tmp_path) == []


def test_read_model_missing_file(tmp_path):
    with pytest.raises(FormatError, match="cannot read"):
        read_model(tmp_path / "nope.zsk")


# ----------------------------------------------------------------------------- check_fits


def L(n_in, n_out, requant=True, wval=1, bias=0, mult=1, shift=1):
    return QLayer(np.full((n_out, n_in), wval, np.int8), np.full(n_out, bias, np.int32),
                  np.full(n_out, mult if requant else 0, np.uint16),
                  np.full(n_out, shift if requant else 0, np.uint8), requant)


@pytest.mark.parametrize("layers, params, msg", [
    ([], HwParams(), "the model has no layers"),
    ([L(2, 2)] * 3 + [L(2, 2, False)], HwParams(max_layers=3),
     "4 layers exceed max_layers=3"),
    ([L(4, 3), L(2, 2, False)], HwParams(), "layer 1 takes 2 inputs but layer 0 gives 3"),
    ([L(9, 2, False)], HwParams(act_depth=8), "layer 0 has 9 inputs, more than act_depth=8"),
    ([L(2, 9, False)], HwParams(act_depth=8), "layer 0 has 9 outputs, more than act_depth=8"),
    ([L(2, 2, False), L(2, 2, False)], HwParams(),
     "layer 0 is a hidden layer without requantization"),
    ([L(2, 2, mult=16)], HwParams(mult_bits=4), "layer 0: a multiplier exceeds mult_bits=4"),
    ([L(2, 2, shift=0)], HwParams(), r"layer 0: a shift is outside 1\.\.63"),
    ([L(2, 2, shift=8)], HwParams(shift_bits=3), r"layer 0: a shift is outside 1\.\.7"),
    ([L(1024, 1, False, wval=127)], HwParams(acc_width=18, act_depth=1024),
     "layer 0: worst-case accumulator 33162240 overflows acc_width=18"),
    ([L(10, 2), L(2, 2, False)], HwParams(ptr_depth=13),
     "needs 14 column pointers per PE, more than ptr_depth=13"),
    ([L(2, 9), L(9, 8, False)], HwParams(pes=2, row_depth=8),
     "needs 9 rows per PE, more than row_depth=8"),
])
def test_check_fits_names_the_limit(layers, params, msg):
    with pytest.raises(FitError, match=msg):
        check_fits(layers, params)


def test_check_fits_entry_depth_via_pack_model():
    qm = QModel([L(8, 8, False)], 1.0)        # 64 nonzeros over 2 PEs: 32 entries each
    pack_model(qm, HwParams(pes=2, entry_depth=32))
    with pytest.raises(FitError, match="needs 32 weight entries in one PE, more than "
                                       "entry_depth=31"):
        pack_model(qm, HwParams(pes=2, entry_depth=31))


def test_check_fits_accumulator_bound_is_tight():
    # sum |W| * 255 + |bias| == 2**(w-1) - 1 fits; one more does not
    lim = (1 << 17) - 1                       # acc_width 18
    n = lim // (127 * 255)                    # 4 columns of 127
    bias = lim - n * 127 * 255
    check_fits([L(n, 1, False, wval=127, bias=bias)], HwParams(acc_width=18))
    check_fits([L(n, 1, False, wval=-127, bias=-bias)], HwParams(acc_width=18))
    with pytest.raises(FitError, match="overflows acc_width=18"):
        check_fits([L(n, 1, False, wval=127, bias=bias + 1)], HwParams(acc_width=18))
    with pytest.raises(FitError, match="overflows acc_width=18"):
        check_fits([L(n, 1, False, wval=-127, bias=-bias - 1)], HwParams(acc_width=18))


def test_fit_error_is_a_format_error():
    assert issubclass(FitError, FormatError)


# ----------------------------------------------------------------------------- versions 1 and 2


def test_conv_model_round_trips_in_version_2_and_is_refused_in_version_1():
    from zeroskip.sw.random_models import CnnSpec, ConvSpec, FCSpec, random_cnn
    rng = np.random.default_rng(3)
    spec = CnnSpec((3, 9, 7), (ConvSpec(5, 3, 2, 1, (2, 1)), ConvSpec(4, 1), FCSpec(6)))
    p = HwParams(pes=3, index_bits=2)
    pm = pack_model(random_cnn(rng, spec, 0.5, p), p)
    blob = to_bytes(pm)
    back = from_bytes(blob)
    assert back.format_version == 2 and back.in_shape == (3, 9, 7)
    for a, b in zip(pm.layers, back.layers):
        assert a.q.geom == b.q.geom
        np.testing.assert_array_equal(a.q.weight, b.q.weight)
        np.testing.assert_array_equal(a.perm, b.perm)
        np.testing.assert_array_equal(a.in_perm, b.in_perm)
    assert to_bytes(back) == blob
    with pytest.raises(FormatError, match="version 1 holds only fully-connected layers"):
        to_bytes(pm, version=1)


def test_fc_model_in_both_versions():
    pm = pack_model(small_model(), HwParams(pes=2))
    v1, v2 = to_bytes(pm, version=1), to_bytes(pm, version=2)
    assert v1[4] == 1 and v2[4] == 2 and len(v2) == len(v1) + 8 + 24 * len(pm.layers)
    a, b = from_bytes(v1), from_bytes(v2)
    assert (a.format_version, b.format_version) == (1, 2)
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_array_equal(x.q.weight, y.q.weight)
        assert x.q.geometry is None and y.q.geometry is None
    assert to_bytes(a) == v1 and to_bytes(b) == v2
