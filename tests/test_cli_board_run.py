"""``zeroskip pack --board``, ``inspect``'s board fit, and ``zeroskip run``'s options."""

from __future__ import annotations

import json
import re
from dataclasses import replace

import numpy as np
import pytest
import torch
from torch import nn

from zeroskip.boards.tops import BOARD_PARAMS
from zeroskip.cli import main
from zeroskip.spec import HwParams
from zeroskip.sw.pack import pack_model, read_model
from zeroskip.sw.ref import run_model


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    torch.manual_seed(1)
    d = tmp_path_factory.mktemp("board")
    small = nn.Sequential(nn.Flatten(), nn.Linear(64, 24), nn.ReLU(), nn.Linear(24, 10))
    with torch.no_grad():
        for m in small:
            if isinstance(m, nn.Linear):
                m.weight[torch.rand_like(m.weight) < 0.6] = 0   # sparse, so skipping shows
    torch.save(small, d / "small.pt")
    wide = nn.Sequential(nn.Linear(64, 300), nn.ReLU(), nn.Linear(300, 10))
    with torch.no_grad():
        wide[0].weight[torch.rand_like(wide[0].weight) < 0.8] = 0  # fits the ULX3S's entries
    torch.save(wide, d / "wide.pt")
    return d


def test_boards_list_matches_the_board_table():
    import zeroskip
    assert tuple(sorted(BOARD_PARAMS)) == zeroskip.BOARDS
    assert zeroskip.board_params("ulx3s") == BOARD_PARAMS["ulx3s"]


def test_board_class_is_public_and_lazy():
    """``zeroskip.Board`` / ``zeroskip.BoardError`` are the host driver's, imported on first
    use only (``import zeroskip`` stays light)."""
    import subprocess
    import sys
    code = ("import sys, zeroskip\n"
            "assert 'zeroskip.host' not in sys.modules and 'serial' not in sys.modules\n"
            "from zeroskip.host import Board, BoardError\n"
            "assert zeroskip.Board is Board and zeroskip.BoardError is BoardError\n"
            "assert {'Board', 'BoardError'} <= set(zeroskip.__all__) <= set(dir(zeroskip))\n"
            "assert issubclass(BoardError, zeroskip.ZeroskipError)\n")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_pack_for_a_board_and_override(models):
    for board in ("icebreaker", "ulx3s"):
        out = models / f"small-{board}.zsk"
        assert main(["pack", str(models / "small.pt"), "-o", str(out), "--board", board]) == 0
        got = read_model(out).params      # (a file keeps no hardware-only parameters)
        assert got.packs_like(BOARD_PARAMS[board]) and got.pes == BOARD_PARAMS[board].pes
    out = models / "small-ulx3s-24.zsk"
    assert main(["pack", str(models / "small.pt"), "-o", str(out), "--board", "ulx3s",
                 "--acc-width", "24", "--max-layers", "3"]) == 0
    assert read_model(out).params.packs_like(
        replace(BOARD_PARAMS["ulx3s"], acc_width=24, max_layers=3))
    out = models / "small-default.zsk"
    assert main(["pack", str(models / "small.pt"), "-o", str(out), "--max-layers", "2"]) == 0
    assert read_model(out).params == HwParams(max_layers=2)


def test_pack_for_a_board_too_small(models, capsys):
    out = models / "wide-ice.zsk"
    assert main(["pack", str(models / "wide.pt"), "-o", str(out), "--board", "icebreaker"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zeroskip: error: ") and "act_depth=256" in err
    assert "Traceback" not in err and not out.exists()
    with pytest.raises(SystemExit) as e:
        main(["pack", str(models / "wide.pt"), "-o", str(out), "--board", "ice"])
    assert e.value.code == 2


def test_pack_a_cnn_for_the_icebreaker_is_refused(tmp_path, capsys):
    """The iCEBreaker's accelerator has no convolution scanner (``conv=0``): packing a CNN
    for it fails with one line naming the layer; the ULX3S takes it."""
    assert BOARD_PARAMS["icebreaker"].conv == 0 and BOARD_PARAMS["ulx3s"].conv == 1
    torch.manual_seed(2)
    torch.save(nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(),
                             nn.Linear(4 * 6 * 6, 10)), tmp_path / "cnn.pt")
    np.save(tmp_path / "calib.npy", np.random.default_rng(0).random((8, 1, 8, 8)))
    out = tmp_path / "cnn.zsk"
    args = ["pack", str(tmp_path / "cnn.pt"), "-o", str(out), "--input-shape", "1,8,8",
            "--calib", str(tmp_path / "calib.npy")]
    capsys.readouterr()
    assert main([*args, "--board", "icebreaker"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("zeroskip: error: ") and err.count("\n") == 1, err
    assert "layer 0 is a convolution" in err and "conv=0" in err and not out.exists()
    assert main([*args, "--board", "ulx3s"]) == 0 and out.exists()


def test_inspect_says_which_boards_fit(models, capsys):
    ice = models / "small-icebreaker.zsk"
    if not ice.exists():
        assert main(["pack", str(models / "small.pt"), "-o", str(ice), "--board",
                     "icebreaker"]) == 0
    capsys.readouterr()
    assert main(["inspect", str(ice)]) == 0
    out = capsys.readouterr().out
    assert re.search(r"^  icebreaker +fits \(packed for it\)$", out, re.M)
    line = next(ln for ln in out.splitlines() if ln.startswith("  ulx3s"))
    assert "pes 2 vs 8" in line and "fits once repacked: zeroskip pack --board ulx3s" in line

    wide = models / "wide-default.zsk"
    assert main(["pack", str(models / "wide.pt"), "-o", str(wide)]) == 0
    capsys.readouterr()
    assert main(["inspect", str(wide), "--json"]) == 0
    boards = json.loads(capsys.readouterr().out)["boards"]
    assert not boards["icebreaker"]["fits"] and not boards["icebreaker"]["packed_for_it"]
    assert boards["icebreaker"]["limit"] == ("layer 0 has 300 outputs, more than act_depth=256 "
                                             "(44 over, 1.17x the limit)")
    assert boards["icebreaker"]["differs"]["pes"] == [8, 2]
    assert boards["ulx3s"]["fits"] and not boards["ulx3s"]["packed_for_it"]
    assert main(["inspect", str(wide)]) == 0
    assert "does not fit even repacked: layer 0 has 300 outputs" in capsys.readouterr().out


def test_run_rejects_bad_labels_and_out_before_simulating(models, capsys):
    ice = models / "small-icebreaker.zsk"
    if not ice.exists():
        assert main(["pack", str(models / "small.pt"), "-o", str(ice), "--board",
                     "icebreaker"]) == 0
    x = np.zeros((4, 64), dtype=np.uint8)
    np.save(models / "x4.npy", x)
    np.save(models / "y3.npy", np.zeros(3, dtype=np.int64))
    np.save(models / "yf.npy", np.zeros(4, dtype=np.float32))
    for extra, msg in ((["--labels", str(models / "y3.npy")], "3 labels for 4 inputs"),
                       (["--labels", str(models / "yf.npy")], "1-d integer array"),
                       (["--labels", str(models / "none.npy")], "cannot read"),
                       (["--out", str(models / "no" / "o.npy")], "does not exist"),
                       (["--out", str(models)], "is a directory")):
        capsys.readouterr()
        assert main(["run", str(ice), str(models / "x4.npy"), *extra]) == 1
        err = capsys.readouterr().err
        assert err.startswith("zeroskip: error: ") and msg in err, err
        assert "simulating" not in err and "compiling" not in err
    default = models / "small-default.zsk"
    if not default.exists():
        assert main(["pack", str(models / "small.pt"), "-o", str(default)]) == 0
    capsys.readouterr()
    assert main(["run", str(default), str(models / "x4.npy"), "--board", "icebreaker"]) == 1
    assert "was not packed for the icebreaker's accelerator" in capsys.readouterr().err


@pytest.mark.sim
def test_run_labels_out_compare_dense(models, capsys, sim_seed):
    """The printed accuracy, cycles and speedup are the ones of the reference and of the cycle
    model (equal to the RTL's counter without stalls); --out holds the RTL's outputs."""
    from zeroskip.sw.cycles import predict
    from zeroskip.sw.data import load_digits
    ice = models / "small-icebreaker.zsk"
    if not ice.exists():
        assert main(["pack", str(models / "small.pt"), "-o", str(ice), "--board",
                     "icebreaker"]) == 0
    pm = read_model(ice)
    ds = load_digits()
    x = pm.qmodel().quantize_input(ds.x_test[:12])
    y = ds.y_test[:12].numpy()
    y[0] = (y[0] + 1) % 10          # make sure the accuracy is not just "what the model says"
    np.save(models / "x.npy", x)
    np.save(models / "y.npy", y)
    out = models / "rtl"            # exactly this name: no .npy appended
    args = ["run", str(ice), str(models / "x.npy"), "--labels", str(models / "y.npy"),
            "--out", str(out), "--compare-dense", "--board", "icebreaker"]
    if sim_seed is not None:
        args += ["--seed", str(sim_seed)]
    capsys.readouterr()
    assert main(args) == 0
    text = capsys.readouterr().out
    ref = run_model(pm, x).numpy()
    np.testing.assert_array_equal(np.load(out, allow_pickle=False), ref)
    assert "bit-exact: True on 12 input(s) (sparse and dense)" in text
    acc = float((ref.argmax(1) == y).mean())
    assert f"accuracy: {acc:.2%} on 12 labelled input(s)" in text
    hw = BOARD_PARAMS["icebreaker"]
    sparse = np.mean([sum(lc.cycles for lc in predict(pm, v, hw=hw)) for v in x])
    dense_pm = pack_model(pm.qmodel(), pm.params, dense=True)
    dense = np.mean([sum(lc.cycles for lc in predict(dense_pm, v, skip_zero_acts=False, hw=hw))
                     for v in x])
    assert f"cycles per inference: mean {sparse:.1f}," in text
    assert f"{dense:.1f} cycles per inference; speedup {dense / sparse:.2f}x" in text
    assert dense > sparse


def test_run_takes_a_cnns_input_map(tmp_path, capsys):
    """``run`` reads a CNN's input as its whole map (C*H*W values), not the first layer's weight
    columns (C*KH*KW): inputs of the map's size reach the label check, others are refused."""
    from pathlib import Path
    golden = Path(__file__).parent / "golden" / "cnn_pad_stride.zsk"
    pm = read_model(golden)
    q = pm.layers[0].q
    assert q.in_size != q.in_features
    np.save(tmp_path / "y.npy", np.zeros(1, dtype=np.int64))
    for n, msg in ((q.in_size, "1 labels for 2 inputs"), (q.in_features, "features")):
        np.save(tmp_path / "x.npy", np.zeros((2, n), dtype=np.uint8))
        capsys.readouterr()
        assert main(["run", str(golden), str(tmp_path / "x.npy"), "--labels",
                     str(tmp_path / "y.npy")]) == 1
        err = capsys.readouterr().err
        assert err.startswith("zeroskip: error: ") and msg in err, err
        assert "simulating" not in err and "compiling" not in err
