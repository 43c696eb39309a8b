"""The board-build machinery without any FPGA tool (fast): the placeholder top, the PLL
settings and the command line. The real tops' elaboration is tested in
``tests/test_board_tops.py``."""

from __future__ import annotations

import pytest

from zeroskip.boards.build import MACBlinky, build_board, main
from zeroskip.boards.platforms import ecp5_pll_params, get_board, ice40_pll_params


@pytest.mark.parametrize("board", ["icebreaker", "ulx3s"])
def test_placeholder_top_elaborates(board, tmp_path):
    def factory(name):
        return MACBlinky(2, clk_hz=1e6), {"pes": 2}

    report = build_board(board, factory, do_build=False, build_dir=tmp_path)
    assert report["pes"] == 2
    rtlil = report["plan"].files[f"zeroskip_{board}.il"]
    pll = {"icebreaker": "SB_PLL40_PAD", "ulx3s": "EHXPLLL"}[board]
    assert pll in rtlil
    assert "acc1" in rtlil


def test_pll_settings():
    ice = ice40_pll_params(12, 40)
    assert ice["out_mhz"] == pytest.approx(39.75)
    assert ice["params"] == {
        "FEEDBACK_PATH": "SIMPLE",
        "DIVR": 0,
        "DIVF": 52,
        "DIVQ": 4,
        "FILTER_RANGE": 1,
    }
    ecp = ecp5_pll_params(25, 100)
    assert ecp["out_mhz"] == 100
    p = ecp["params"]
    assert 25 / p["CLKI_DIV"] * p["CLKFB_DIV"] == 100
    assert 400 <= 100 * p["CLKOP_DIV"] <= 800


def test_unknown_board():
    with pytest.raises(KeyError, match="known boards: icebreaker, ulx3s"):
        get_board("de10")
    with pytest.raises(SystemExit):
        main(["de10"])


def test_cli_no_build(tmp_path, capsys):
    assert main(["all", "--no-build", "--build-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "icebreaker: elaborated" in out and "ulx3s: elaborated" in out


def test_cli_pes_override(tmp_path, capsys):
    assert main(["ulx3s", "--no-build", "--pes", "3", "--build-root", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ulx3s: elaborated" in out and "pes=3" in out
    with pytest.raises(SystemExit) as exc:
        main(["ulx3s", "--no-build", "--pes", "0"])
    assert exc.value.code == 2
    assert "--pes must be at least 1, not 0" in capsys.readouterr().err
