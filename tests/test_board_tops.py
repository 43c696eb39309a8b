"""The real board tops (accelerator + host link + UART) elaborate for every board, without any
FPGA tool (``do_build=False``), and their parameters are the ones recorded for report.json."""

from __future__ import annotations

import re

import pytest
from amaranth.hdl import Fragment

from zeroskip.boards.build import build_board, default_top
from zeroskip.boards.platforms import BOARDS
from zeroskip.boards.tops import (
    BOARD_COUNTER_WIDTH,
    BOARD_PARAMS,
    DEFAULT_BAUD,
    AcceleratorTop,
    make_top,
)
from zeroskip.hw.uart import uart_divisor
from zeroskip.spec import HwParams, load_layout


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_top_elaborates(board, tmp_path):
    report = build_board(board, do_build=False, build_dir=tmp_path)
    params = BOARD_PARAMS[board]
    assert report["pes"] == params.pes >= 1
    assert report["params"] == params.as_dict()
    assert HwParams(**report["params"]) == params
    assert report["counter_width"] == BOARD_COUNTER_WIDTH[board]
    assert report["baud"] == DEFAULT_BAUD
    assert report["board"] == board
    assert report["target_mhz"] == BOARDS[board].target_mhz
    assert any(f.startswith("build_") for f in report["files"])
    # the design's hierarchy: the top holds the accelerator, the link and both UART halves,
    # and the accelerator exactly ``pes`` PEs (each with its job queue) and the scanner
    rtlil = report["plan"].files[f"zeroskip_{board}.il"]
    modules = set(re.findall(r"^module \\(\S+)$", rtlil, re.M))
    top = f"zeroskip_{board}.top"
    assert {f"{top}.{name}" for name in ("accel", "link", "uart_rx", "uart_tx")} <= modules
    pes = {m for m in modules if re.fullmatch(rf"{re.escape(top)}\.accel\.pe\d+", m)}
    assert pes == {f"{top}.accel.pe{i}" for i in range(params.pes)}
    assert f"{top}.accel.scanner" in modules
    assert all(f"{pe}.queue" in modules for pe in pes)


@pytest.mark.parametrize("board", sorted(BOARDS))
def test_params_fit_board(board):
    spec = BOARDS[board]
    params = BOARD_PARAMS[board]
    # the 'L' command carries 64 bits; one SB_MAC16 / MULT18 pair per PE MAC at least
    assert load_layout(params).size <= 64
    assert 1 <= params.pes <= spec.dsps
    clk_hz = spec.pll()["out_mhz"] * 1e6
    assert uart_divisor(clk_hz, DEFAULT_BAUD) >= 16


def test_default_top_is_accelerator_top():
    top, info = default_top("icebreaker")
    assert isinstance(top, AcceleratorTop)
    assert info["pes"] == BOARD_PARAMS["icebreaker"].pes
    Fragment.get(top, None)  # elaborates without a platform (simulation pins)


def test_make_top_overrides():
    params = HwParams(pes=1, entry_depth=64, ptr_depth=32, row_depth=16, act_depth=32,
                      max_layers=2, fifo_depth=2)
    top, info = make_top("ulx3s", params=params, baud=9600, counter_width=16)
    assert info["pes"] == 1 and info["baud"] == 9600 and info["counter_width"] == 16
    assert top.divisor == round(100e6 / 9600)
    Fragment.get(top, None)
    with pytest.raises(KeyError, match="known boards"):
        make_top("de10")
