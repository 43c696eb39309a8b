"""The ``zeroskip`` command line: pack, inspect, ref, run, and its error handling."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest
import torch
from torch import nn

from zeroskip.cli import main
from zeroskip.sw.data import load_digits
from zeroskip.sw.models import digits_mlp
from zeroskip.sw.pack import read_model
from zeroskip.sw.ref import run_model


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    torch.manual_seed(0)
    d = tmp_path_factory.mktemp("cli")
    model = digits_mlp(hidden=(32,))
    torch.save(model, d / "model.pt")
    torch.save(model.state_dict(), d / "state.pt")
    ds = load_digits()
    np.save(d / "x_float.npy", ds.x_test[:5].reshape(5, -1).numpy())
    return d


def run_cli(*args):
    return subprocess.run([sys.executable, "-m", "zeroskip", *map(str, args)],
                          capture_output=True, text=True, timeout=300)


def test_pack_inspect_ref_from_model_and_state_dict(saved, capsys):
    for src in ("model.pt", "state.pt"):
        out = saved / f"{src}.zsk"
        assert main(["pack", str(saved / src), "-o", str(out), "--pes", "4"]) == 0
        pm = read_model(out)
        assert pm.params.pes == 4 and [pl.q.out_features for pl in pm.layers] == [32, 10]
    a, b = read_model(saved / "model.pt.zsk"), read_model(saved / "state.pt.zsk")
    for x, y in zip(a.layers, b.layers):
        np.testing.assert_array_equal(x.q.weight, y.q.weight)
    capsys.readouterr()
    assert main(["inspect", str(saved / "model.pt.zsk"), "--json"]) == 0
    info = __import__("json").loads(capsys.readouterr().out)
    assert [lay["in"] for lay in info["layers"]] == [64, 32]
    assert main(["inspect", str(saved / "model.pt.zsk")]) == 0
    assert "relative-index" in capsys.readouterr().out
    assert main(["ref", str(saved / "model.pt.zsk"), str(saved / "x_float.npy"), "--float",
                 "--out", str(saved / "y.npy")]) == 0
    x = a.qmodel().quantize_input(np.load(saved / "x_float.npy"))
    np.testing.assert_array_equal(np.load(saved / "y.npy"), run_model(a, x).numpy())


@pytest.mark.parametrize("args,message", [
    (["inspect", "{d}/missing.zsk"], "cannot read"),
    (["inspect", "{d}/garbage.zsk"], "bad magic"),
    (["ref", "{d}/model.pt.zsk", "{d}/x_float.npy"], "give uint8 codes or use --float"),
    (["pack", "{d}/conv.pt", "-o", "{d}/conv.zsk"], "Conv2d"),
    (["pack", "{d}/model.pt", "-o", "{d}/big.zsk", "--pes", "1", "--entry-depth", "64"],
     "entry_depth=64"),
    (["pack", "{d}/model.pt", "-o", "{d}/big.zsk", "--pes", "99"], "pes must be in 1..64"),
    (["pack", "{d}/x_float.npy", "-o", "{d}/bad.zsk"], "not a PyTorch model"),
])
def test_errors_are_one_line(saved, args, message):
    (saved / "garbage.zsk").write_bytes(b"this is not a model file at all")
    torch.save(nn.Sequential(nn.Conv2d(1, 2, 3), nn.Flatten(), nn.Linear(72, 10)),
               saved / "conv.pt")
    if not (saved / "model.pt.zsk").exists():
        assert main(["pack", str(saved / "model.pt"), "-o", str(saved / "model.pt.zsk")]) == 0
    r = run_cli(*[a.format(d=saved) for a in args])
    assert r.returncode == 1, r.stderr
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zeroskip: error:"), r.stderr
    assert message in lines[0]
    assert "Traceback" not in r.stderr
    assert not (saved / "big.zsk").exists() and not (saved / "conv.zsk").exists()


def test_bad_arguments_exit_2():
    r = run_cli("pack")
    assert r.returncode == 2 and "usage:" in r.stderr
    r = run_cli("frobnicate")
    assert r.returncode == 2


def test_help_lists_subcommands():
    r = run_cli("--help")
    assert r.returncode == 0
    for cmd in ("demo", "pack", "inspect", "ref", "run", "compress"):
        assert cmd in r.stdout


@pytest.mark.sim
def test_run_on_rtl(saved, capsys):
    """``zeroskip run`` drives the Verilated array and reports bit-exactness."""
    model = saved / "model.pt.zsk"
    if not model.exists():
        assert main(["pack", str(saved / "model.pt"), "-o", str(model)]) == 0
    pm = read_model(model)
    x = pm.qmodel().quantize_input(np.load(saved / "x_float.npy"))
    np.save(saved / "x_codes.npy", x)
    assert main(["run", str(model), str(saved / "x_codes.npy"), "--seed", "3"]) == 0
    assert "bit-exact: True on 5 input(s)" in capsys.readouterr().out
