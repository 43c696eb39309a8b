"""HwParams validation and the entry bit layout shared by the packer and the RTL."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroskip.spec import (
    HwParams,
    ParamError,
    decode_entry,
    encode_entry,
    entry_layout,
    load_layout,
)
from zeroskip.sw.errors import ZeroskipError


@st.composite
def entries(draw):
    k = draw(st.integers(1, 8))
    p = HwParams(index_bits=k)
    delta = draw(st.integers(0, p.max_delta))
    weight = draw(st.integers(-128, 127))
    return p, delta, weight


@settings(max_examples=200, deadline=None)
@given(entries())
def test_encode_entry_matches_amaranth_layout(e):
    p, delta, weight = e
    bits = encode_entry(p, delta, weight)
    layout = entry_layout(p)
    assert layout.size == p.entry_bits
    assert layout.const({"weight": weight, "delta": delta}).as_bits() == bits
    assert 0 <= bits < 1 << p.entry_bits
    assert decode_entry(p, bits) == (delta, weight)


def test_entry_layout_weight_is_low_bits():
    p = HwParams(index_bits=2)
    assert encode_entry(p, 3, -1) == 0b11_11111111
    assert encode_entry(p, 1, 5) == 0b01_00000101
    assert decode_entry(p, 0b10_10000000) == (2, -128)
    assert entry_layout(p)["weight"].offset == 0
    assert entry_layout(p)["delta"].offset == 8


@pytest.mark.parametrize("delta, weight, msg", [
    (4, 0, "delta 4 does not fit 2 bits"),
    (-1, 0, "delta -1 does not fit 2 bits"),
    (0, 128, "weight 128 does not fit int8"),
    (0, -129, "weight -129 does not fit int8"),
])
def test_encode_entry_rejects(delta, weight, msg):
    with pytest.raises(ParamError, match=msg):
        encode_entry(HwParams(index_bits=2), delta, weight)


def test_defaults_and_derived_widths():
    p = HwParams()
    assert p.entry_bits == 14
    assert p.max_delta == 63
    assert p.max_shift == 63
    assert p.entry_addr_bits == 16          # pointers reach entry_depth = 32768 inclusive
    assert p.ptr_addr_bits == 11
    assert p.row_addr_bits == 9
    assert p.act_addr_bits == 11
    assert p.as_dict()["pes"] == 8
    lay = load_layout(p)
    assert set(lay.members) == {"data", "addr", "pe", "mem"}
    assert lay.size == 32 + 16 + 3 + 3


@pytest.mark.parametrize("kw, msg", [
    ({"pes": 0}, "pes must be in 1..64, not 0"),
    ({"pes": 65}, "pes must be in 1..64, not 65"),
    ({"index_bits": 0}, "index_bits must be in 1..8, not 0"),
    ({"index_bits": 9}, "index_bits must be in 1..8, not 9"),
    ({"weight_bits": 4}, "weight_bits must be 8, not 4"),
    ({"acc_width": 17}, "acc_width must be in 18..32, not 17"),
    ({"acc_width": 33}, "acc_width must be in 18..32, not 33"),
    ({"mult_bits": 1}, "mult_bits must be in 2..16, not 1"),
    ({"mult_bits": 17}, "mult_bits must be in 2..16, not 17"),
    ({"shift_bits": 0}, "shift_bits must be in 1..6, not 0"),
    ({"shift_bits": 7}, "shift_bits must be in 1..6, not 7"),
    ({"entry_depth": 0}, "entry_depth must be in 1..1048576, not 0"),
    ({"ptr_depth": 1 << 21}, "ptr_depth must be in 1..1048576"),
    ({"row_depth": 0}, "row_depth must be in 1..1048576"),
    ({"act_depth": 0}, "act_depth must be in 1..1048576"),
    ({"max_layers": 0}, "max_layers must be in 1..255, not 0"),
    ({"max_layers": 256}, "max_layers must be in 1..255, not 256"),
    ({"fifo_depth": 0}, "fifo_depth must be in 1..256, not 0"),
    ({"fifo_depth": 257}, "fifo_depth must be in 1..256, not 257"),
    ({"pes": 2.0}, "pes must be an integer, not 2.0"),
    ({"index_bits": True}, "index_bits must be an integer, not True"),
])
def test_hwparams_validation_messages(kw, msg):
    with pytest.raises(ParamError, match=msg.replace(".", r"\.")) as ei:
        HwParams(**kw)
    assert isinstance(ei.value, ZeroskipError) and isinstance(ei.value, ValueError)


def test_hwparams_bounds_accepted():
    HwParams(pes=1, index_bits=1, acc_width=18, mult_bits=2, shift_bits=1, entry_depth=1,
             ptr_depth=1, row_depth=1, act_depth=1, max_layers=1, fifo_depth=1)
    HwParams(pes=64, index_bits=8, acc_width=32, mult_bits=16, shift_bits=6,
             entry_depth=1 << 20, ptr_depth=1 << 20, row_depth=1 << 20, act_depth=1 << 20,
             max_layers=255, fifo_depth=256)


def test_hwparams_frozen():
    p = HwParams()
    with pytest.raises(AttributeError):
        p.pes = 3
