"""The hardware/software contract (``zeroskip/spec.py``).

Every word that crosses the boundary is written by the software and read by the RTL through one
layout. These tests check (1) that the packer's and the load image's bits decode, through the
very layouts the RTL views its inputs with, to the values they stand for, and (2) that a layout
changed in one place only is caught: the software side is given a layout with its fields moved
(the RTL keeps the contract's), and the Amaranth simulation of the accelerator must then differ
from the reference, while with the contract's layouts it matches it bit for bit.
"""

from __future__ import annotations

import gc

import numpy as np
import pytest
from amaranth.hdl import Fragment, signed, unsigned
from amaranth.lib import data

from zeroskip import spec
from zeroskip.hw import accel as hw_accel
from zeroskip.hw import link as hw_link
from zeroskip.hw import pe as hw_pe
from zeroskip.hw.accel import Accelerator
from zeroskip.sim.cases import random_inputs, random_layer, random_model
from zeroskip.sim.pysim import run_pysim
from zeroskip.spec import (
    BIAS_WORD,
    CFG_FLAGS,
    CFG_FLAGS_WORD,
    CFG_LAYERS,
    DESC_FLAGS,
    DESC_FLAGS_WORD,
    DESC_IN,
    DESC_OUT,
    DESC_PTR_BASE,
    DESC_ROW_BASE,
    MEM_BIAS,
    MEM_CFG,
    MEM_DESC,
    MEM_ENTRY,
    MEM_PTR,
    MEM_RQ,
    PTR_WORD,
    RQ_WORD,
    HwParams,
    decode,
    desc_addr_layout,
    entry_layout,
    load_layout,
)
from zeroskip.sw import image as sw_image
from zeroskip.sw import pack as sw_pack
from zeroskip.sw import params as sw_params
from zeroskip.sw.image import encode_commands, layer_bases, layer_descriptor, load_commands
from zeroskip.sw.pack import pack_layer, pack_model
from zeroskip.sw.ref import run_model

# index_bits=2: gaps above 3 rows need fillers; 3 PEs: pe/addr fields of several bits
PARAMS = HwParams(pes=3, index_bits=2, entry_depth=512, ptr_depth=64, row_depth=32,
                  act_depth=32, max_layers=4)


def test_sw_params_reexports_the_contract():
    assert sw_params.HwParams is spec.HwParams
    for name in spec.__all__:
        assert getattr(sw_params, name) is getattr(spec, name)


def test_rtl_uses_the_contract_layouts():
    """The RTL modules hold the contract's objects, not copies."""
    assert hw_pe.entry_layout is spec.entry_layout
    assert hw_pe.PTR_WORD is PTR_WORD and hw_pe.RQ_WORD is RQ_WORD
    assert hw_pe.BIAS_WORD is BIAS_WORD
    assert hw_accel.desc_addr_layout is spec.desc_addr_layout
    assert hw_accel.load_layout is spec.load_layout
    assert hw_accel.CFG_FLAGS_WORD is CFG_FLAGS_WORD
    assert hw_accel.DESC_FLAGS_WORD is DESC_FLAGS_WORD
    assert hw_link.load_layout is spec.load_layout


def test_link_protocol_words_live_in_the_contract():
    """The board side (hw/link.py), the host driver and the simulated board define no word of
    the link protocol of their own (frame types, error codes, sizes, sync byte, CRC
    polynomial): what they use is the contract's object."""
    import ast
    import inspect

    from zeroskip import host
    from zeroskip.sim import board_sim
    names = {n for n in spec.__all__ if n.startswith(("T_", "E_", "LINK_"))}
    names |= {"RESPONSE", "ERRORS", "BOARD_IDS", "IMAGE_VERSION", "BITSTREAM_VERSION"}
    assert {"T_INFER", "E_WATCHDOG", "LINK_SYNC", "LINK_CRC_POLY"} <= names
    for mod in (hw_link, host, board_sim):
        src = inspect.getsource(mod)
        tree = ast.parse(src)
        assigned = {t.id for node in tree.body if isinstance(node, (ast.Assign, ast.AnnAssign))
                    for t in (node.targets if isinstance(node, ast.Assign) else [node.target])
                    if isinstance(t, ast.Name)}
        assert not assigned & names, (mod.__name__, assigned & names)
        for name in names:
            if hasattr(mod, name):
                assert getattr(mod, name) is getattr(spec, name), (mod.__name__, name)
        for literal in (spec.LINK_SYNC, spec.LINK_CRC_POLY):
            assert f"{literal:#x}" not in src.lower(), (mod.__name__, hex(literal))
    # the board answers INFO with the contract's payload
    link = hw_link.HostLink(PARAMS, counter_width=20, board_id=2, clk_hz=5, divisor=3)
    assert link.info == spec.info_payload(PARAMS, board_id=2, counter_width=20, clk_hz=5,
                                          divisor=3)
    info = spec.decode_info(link.info)
    assert info["params"] == PARAMS and info["board"] == "ulx3s"
    assert (info["protocol"], info["image_version"]) == (spec.LINK_PROTOCOL_VERSION,
                                                         spec.IMAGE_VERSION)
    members = dict(link.signature.members)
    assert [n for n in members if n in spec.COUNTER_NAMES + spec.LINK_PE_COUNTER_NAMES] == [
        *spec.COUNTER_NAMES, *spec.LINK_PE_COUNTER_NAMES]
    Fragment.get(link, None)     # it elaborates with those ports


def test_counter_ports_are_the_contract_names():
    dut = Accelerator(PARAMS, counter_width=16)
    members = dict(dut.signature.members)
    counters = [n for n in members if n in spec.COUNTER_NAMES + spec.PE_COUNTER_NAMES]
    assert counters == [*spec.COUNTER_NAMES, *spec.PE_COUNTER_NAMES]
    for name in spec.PE_COUNTER_NAMES:
        assert members[name].dimensions == (PARAMS.pes,)
    Fragment.get(dut, None)     # it elaborates with those ports


def test_packer_entries_decode_through_the_rtl_layout():
    """Every entry the packer writes, read through ``entry_layout`` (the PE's view of its entry
    register), walks the columns back to the exact weight matrix; fillers are (3, 0)."""
    rng = np.random.default_rng(11)
    q = random_layer(rng, 20, 9, 0.25, extreme=True, zero_cols=2)
    pl = pack_layer(q, PARAMS)
    lay = entry_layout(PARAMS)
    w = pl.hw_weight()
    fillers = 0
    got = np.zeros_like(w)
    for p in range(PARAMS.pes):
        ptr = pl.ptrs[p]
        for j in range(w.shape[1]):
            row = -1
            for e in pl.entries[p][ptr[j]:ptr[j + 1]]:
                v = lay.from_bits(int(e))
                row += v.delta + 1
                got[p + PARAMS.pes * row, j] = v.weight
                fillers += v.weight == 0 and v.delta == PARAMS.max_delta
    np.testing.assert_array_equal(got, w)
    assert fillers > 0 and (w == -128).any()


def test_load_image_decodes_through_the_rtl_layouts():
    """Every load word, read through the layouts the accelerator and the PEs view them with,
    says what the image meant (memory, PE, address and each field of the data word)."""
    rng = np.random.default_rng(5)
    pm = pack_model(random_model(rng, [14, 11, 5], [0.3, 0.5]), PARAMS)
    cmds = load_commands(pm, skip_zero_acts=False)
    words = encode_commands(PARAMS, cmds)
    lay = load_layout(PARAMS)
    dlay = desc_addr_layout(PARAMS)
    seen = {}
    for c, word in zip(cmds, words):
        v = decode(lay, word)
        assert (v["mem"], v["pe"], v["addr"], v["data"]) == (c.mem, c.pe, c.addr, c.data)
        seen[(c.mem, c.pe, c.addr)] = c.data
    assert seen[(MEM_CFG, 0, CFG_LAYERS)] == 2
    assert decode(CFG_FLAGS_WORD, seen[(MEM_CFG, 0, CFG_FLAGS)]) == {"skip_zero_acts": 0}
    bases = layer_bases(pm)
    for li, pl in enumerate(pm.layers):
        desc = {}
        for (mem, _, addr), value in seen.items():
            if mem == MEM_DESC:
                a = decode(dlay, addr)
                if a["layer"] == li:
                    desc[a["field"]] = value
        # the FC fields, as the accelerator reads them; then the geometry fields (all of them
        # derived by sw/image.py, which the conv tests check against the RTL)
        assert {f: desc[f] for f in (DESC_IN, DESC_OUT, DESC_PTR_BASE, DESC_ROW_BASE)} == {
            DESC_IN: pl.q.in_features, DESC_OUT: pl.q.out_features,
            DESC_PTR_BASE: bases[li][0], DESC_ROW_BASE: bases[li][1]}
        assert desc == {**layer_descriptor(pl.q, PARAMS), DESC_PTR_BASE: bases[li][0],
                        DESC_ROW_BASE: bases[li][1]}
        assert decode(DESC_FLAGS_WORD, desc[DESC_FLAGS]) == {"requant": int(pl.q.requant)}
    entry_base = [0] * PARAMS.pes
    for li, pl in enumerate(pm.layers):
        ptr_base, row_base = bases[li]
        for p in range(PARAMS.pes):
            for j, ptr in enumerate(pl.ptrs[p]):
                w = decode(PTR_WORD, seen[(MEM_PTR, p, ptr_base + j)])
                nxt = pl.ptrs[p][j + 1] if j + 1 < len(pl.ptrs[p]) else None
                assert w == {"addr": entry_base[p] + int(ptr), "empty": int(nxt == ptr)}
            for k, e in enumerate(pl.entries[p]):
                assert seen[(MEM_ENTRY, p, entry_base[p] + k)] == int(e)
            entry_base[p] += len(pl.entries[p])
            for local, r_hw in enumerate(range(p, pl.q.out_features, PARAMS.pes)):
                r = int(pl.perm[r_hw])
                b = BIAS_WORD.from_bits(seen[(MEM_BIAS, p, row_base + local)])
                assert b.bias == int(pl.q.bias[r])
                rq = decode(RQ_WORD, seen[(MEM_RQ, p, row_base + local)])
                if pl.q.requant:
                    assert rq == {"mult": int(pl.q.mult[r]), "shift": int(pl.q.shift[r])}
                else:
                    assert rq == {"mult": 0, "shift": 0}


def test_encode_refuses_values_that_do_not_fit():
    with pytest.raises(spec.ParamError, match="shift 65536 does not fit its 16-bit field"):
        spec.encode(RQ_WORD, mult=1, shift=1 << 16)
    with pytest.raises(spec.ParamError, match="layer 4 is outside 0..3"):
        spec.desc_addr(PARAMS, 4, DESC_IN)


# ---- a layout changed in one place only (the software side) must break the RTL run


def _swapped(layout: data.StructLayout) -> data.StructLayout:
    """The same fields in the opposite order (so every field moves)."""
    return data.StructLayout({name: f.shape for name, f in reversed(list(layout))})


def _mutations():
    def entry(mp):
        mp.setattr(sw_pack, "entry_layout", lambda p: _swapped(spec.entry_layout(p)))

    def ptr(mp):
        mp.setattr(sw_image, "PTR_WORD", _swapped(PTR_WORD))

    def rq(mp):
        mp.setattr(sw_image, "RQ_WORD", _swapped(RQ_WORD))

    def bias(mp):   # the int32 bias a byte higher
        mp.setattr(sw_image, "BIAS_WORD",
                   data.StructLayout({"pad": unsigned(8), "bias": signed(24)}))

    def desc_addr(mp):
        def moved(p, layer, field):
            lay = _swapped(desc_addr_layout(p))
            return lay.const({"layer": layer, "field": field}).as_bits()
        mp.setattr(sw_image, "desc_addr", moved)

    def desc_flags(mp):
        mp.setattr(sw_image, "DESC_FLAGS_WORD",
                   data.StructLayout({"pad": unsigned(1), "requant": unsigned(1)}))

    def cfg_flags(mp):
        mp.setattr(sw_image, "CFG_FLAGS_WORD",
                   data.StructLayout({"pad": unsigned(1), "skip_zero_acts": unsigned(1)}))

    def load(mp):
        mp.setattr(sw_image, "load_layout", lambda p: _swapped(spec.load_layout(p)))

    return [entry, ptr, rq, bias, desc_addr, desc_flags, cfg_flags, load]


def _run(seed: int = 2):
    rng = np.random.default_rng(seed)
    # the output layer requantized too, so that its descriptor flag decides what is read out
    pm = pack_model(random_model(rng, [10, 7, 4], [0.4, 0.6], last_requant=True), PARAMS,
                    balance=False)
    x = random_inputs(rng, 2, 10, 0.6)
    res = run_pysim(pm, x, max_cycles=3000)
    return pm, x, res


@pytest.fixture(scope="module")
def baseline():
    pm, x, res = _run()
    ref = run_model(pm, x).numpy()
    return ref, res


@pytest.mark.sim
def test_contract_run_is_bit_exact(baseline):
    ref, res = baseline
    np.testing.assert_array_equal(np.array(res.outputs), ref)
    assert all(c["skipped_acts"] > 0 for c in res.counters)


@pytest.mark.sim
# a run cut short by max_cycles leaves the bench coroutine unfinished (Amaranth then complains
# as it is collected)
@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("mutate", _mutations(), ids=lambda f: f.__name__)
def test_a_layout_changed_on_one_side_is_caught(mutate, monkeypatch, baseline):
    ref, res0 = baseline
    mutate(monkeypatch)
    _, _, res = _run()
    gc.collect()
    same_outputs = len(res.outputs) == len(ref) and np.array_equal(np.array(res.outputs), ref)
    same_counters = res.counters == res0.counters
    assert not (same_outputs and same_counters), f"{mutate.__name__} went unnoticed"
