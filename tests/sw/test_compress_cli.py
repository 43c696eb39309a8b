"""``zeroskip compress ...`` end to end on the digits."""

import argparse
import json

import pytest
import torch

from zeroskip.cli import main as zeroskip_main
from zeroskip.commands.compress import add_subcommands


def main(argv):
    """``zeroskip compress ARGV...``: its exit status."""
    return zeroskip_main(["compress", *argv])


@pytest.fixture(scope="module")
def dense(tmp_path_factory):
    d = tmp_path_factory.mktemp("cli")
    path = d / "dense.pt"
    assert main(["train", "--arch", "digits-cnn", "--epochs", "6", "--lr", "3e-3", "--quiet",
                 "--out", str(path)]) == 0
    return path


def test_registers_on_a_parser():
    p = argparse.ArgumentParser()
    add_subcommands(p.add_subparsers(dest="command"))
    args = p.parse_args(["compress", "report", "--model", "x.pt"])
    assert callable(args.func)


@pytest.mark.parametrize("argv", [
    ["prune", "--sparsity", "0.6", "--schedule", "gradual", "--steps", "2", "--distill"],
    ["prune", "--sparsity", "0.5", "--granularity", "kernel", "--schedule", "one-shot"],
    ["structured", "--amount", "0.5", "--criterion", "apoz"],
    ["share", "--bits", "4"],
    ["ternary", "--epochs", "0"],
    ["lowrank", "--energy", "0.9", "--epochs", "0"],
    ["global", "--fraction", "0.3", "--rounds", "1", "--max-drop", "0.5"],
])
def test_subcommands(dense, tmp_path, capsys, argv):
    out, js = tmp_path / "out.pt", tmp_path / "r.json"
    assert main([*argv, "--model", str(dense), "--quiet", "--out", str(out),
                 "--json", str(js)]) == 0
    text = capsys.readouterr().out
    assert "test accuracy" in text and "| total" in text
    model = torch.load(out, weights_only=False)
    assert isinstance(model, torch.nn.Module)
    rep = json.loads(js.read_text())
    assert 0 <= rep["accuracy"] <= 1 and rep["compressed_bytes"] > 0


def test_report_and_errors(dense, tmp_path, capsys):
    assert main(["report", "--model", str(dense), "--no-huffman", "--index-bits", "4"]) == 0
    assert "bits/weight" in capsys.readouterr().out
    assert main(["report", "--model", str(tmp_path / "missing.pt")]) == 1
    assert "no such model file" in capsys.readouterr().err
    bad = tmp_path / "sd.pt"
    torch.save({"w": torch.zeros(2)}, bad)
    assert main(["report", "--model", str(bad)]) == 1
    assert "not a saved nn.Module" in capsys.readouterr().err
    assert main(["prune", "--model", str(dense), "--sparsity", "1.2", "--quiet"]) == 1
    assert main(["lowrank", "--model", str(dense), "--quiet"]) == 1
    assert main(["structured", "--model", str(dense), "--amount", "0.5", "--dataset",
                 "imagenet", "--quiet"]) == 1
    assert "unknown data set" in capsys.readouterr().err
