"""Every ``zeroskip compress`` subcommand given wrong inputs: exit status 1 (one line
``zeroskip: error: ...``) or 2 (argparse usage), never a traceback. Each case fails before any
training, so the whole file runs in seconds."""

import subprocess
import sys

import pytest
import torch
from torch import nn

from zeroskip.cli import main
from zeroskip.sw.models import digits_mlp, lenet_300_100, mlp

DATA_COMMANDS = {           # subcommand -> the arguments it needs besides --model
    "prune": ["--sparsity", "0.5"],
    "structured": ["--amount", "0.5"],
    "slim": [],
    "global": [],
    "share": [],
    "ternary": [],
    "lowrank": ["--energy", "0.9"],
}
ALL_COMMANDS = {**DATA_COMMANDS, "report": []}


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    d = tmp_path_factory.mktemp("bad")
    torch.manual_seed(0)
    out = {"dir": d}
    torch.save(digits_mlp((8,)), d / "ok.pt")
    torch.save(lenet_300_100(), d / "mnist.pt")            # 28x28 inputs, digits are 8x8
    torch.save(mlp([64, 8, 5]), d / "five.pt")             # 5 classes, digits have 10
    torch.save(nn.Sequential(nn.Flatten(), nn.Linear(64, 8), nn.GELU(), nn.Linear(8, 10)),
               d / "gelu.pt")
    torch.save(digits_mlp((8,)).state_dict(), d / "sd.pt")
    (d / "garbage.pt").write_bytes(bytes(range(256)) * 4)
    (d / "text.pt").write_text("not a model\n")
    (d / "empty.pt").write_bytes(b"")
    (d / "folder.pt").mkdir()
    for k in ("ok", "mnist", "five", "gelu", "sd", "garbage", "text", "empty", "folder"):
        out[k] = str(d / f"{k}.pt")
    out["missing"] = str(d / "missing.pt")
    return out


def run(capsys, argv):
    try:
        code = main(["compress", *argv])
    except SystemExit as e:
        code = e.code
    return code, capsys.readouterr().err


def check(code, err, want=None):
    assert code in (1, 2), (code, err)
    if want is not None:
        assert code == want, (code, err)
    assert "Traceback" not in err
    lines = err.strip().splitlines()
    if code == 1:
        assert len(lines) == 1 and lines[0].startswith("zeroskip: error: "), err
    else:
        assert lines and "error:" in lines[-1], err


BAD_MODELS = ["missing", "folder", "garbage", "text", "empty", "sd", "gelu"]


@pytest.mark.parametrize("cmd", sorted(ALL_COMMANDS))
@pytest.mark.parametrize("which", BAD_MODELS)
def test_bad_model_files(files, capsys, cmd, which):
    code, err = run(capsys, [cmd, "--model", files[which], *ALL_COMMANDS[cmd]])
    check(code, err, 1)


@pytest.mark.parametrize("cmd", sorted(DATA_COMMANDS))
@pytest.mark.parametrize("which,says", [("mnist", "does not take digits inputs"),
                                        ("five", "10 classes")])
def test_model_does_not_fit_the_data(files, capsys, cmd, which, says):
    code, err = run(capsys, [cmd, "--model", files[which], *DATA_COMMANDS[cmd], "--quiet"])
    check(code, err, 1)
    assert says in err


BAD_COMMON = [
    (["--dataset", "imagenet"], 1), (["--data-path", "/nonexistent", "--dataset",
                                      "fashion-mnist"], 1),
    (["--epochs", "-1"], 1), (["--epochs", "two"], 2), (["--lr", "0"], 1), (["--lr", "nan"], 2),
    (["--batch-size", "0"], 1), (["--seed", "1.5"], 2), (["--bogus"], 2),
]


@pytest.mark.parametrize("cmd", sorted(DATA_COMMANDS))
@pytest.mark.parametrize("extra,want", BAD_COMMON)
def test_bad_common_options(files, capsys, cmd, extra, want):
    code, err = run(capsys, [cmd, "--model", files["ok"], *DATA_COMMANDS[cmd], *extra])
    check(code, err, want)


@pytest.mark.parametrize("cmd", sorted(ALL_COMMANDS))
def test_unwritable_outputs(files, capsys, cmd):
    for opt in ("--out", "--json"):
        if cmd == "report" and opt == "--out":
            continue
        for target in (str(files["dir"] / "no" / "such" / "x"), str(files["dir"])):
            code, err = run(capsys, [cmd, "--model", files["ok"], *ALL_COMMANDS[cmd],
                                     opt, target])
            check(code, err, 1)


SPECIFIC = [
    (["prune", "--sparsity", "1.5"], 1), (["prune", "--sparsity", "-0.1"], 1),
    (["prune", "--sparsity", "1.0"], 1), (["prune", "--sparsity", "nan"], 2),
    (["prune", "--sparsity", "0.5", "--steps", "0"], 1),
    (["prune", "--sparsity", "0.5", "--schedule", "cosine"], 2),
    (["prune", "--sparsity", "0.5", "--final-epochs", "-2"], 1),
    (["prune", "--sparsity", "0.5", "--distill", "--temperature", "0"], 1),
    (["prune", "--sparsity", "0.5", "--distill", "--alpha", "2"], 1),
    (["prune"], 2),
    (["structured", "--amount", "1.5"], 1), (["structured", "--amount", "0.5", "--criterion",
                                              "bn"], 1),
    (["structured", "--amount", "0.5", "--criterion", "taylor"], 2),
    (["slim"], 1),                                   # no BatchNorm to slim
    (["slim", "--strength", "-1"], 1),
    (["global", "--fraction", "1.5"], 1), (["global", "--floor", "2"], 1),
    (["global", "--rounds", "0"], 1),
    (["share", "--bits", "9"], 1), (["share", "--bits", "1"], 1), (["share", "--bits", "4.5"], 2),
    (["ternary", "--threshold", "0"], 1),
    (["lowrank"], 1), (["lowrank", "--rank", "2", "--energy", "0.5"], 1),
    (["lowrank", "--rank", "0"], 1), (["lowrank", "--energy", "0"], 1),
    (["lowrank", "--energy", "1.5"], 1),
    (["report", "--index-bits", "1"], 1), (["report", "--index-bits", "9"], 1),
]


@pytest.mark.parametrize("argv,want", SPECIFIC, ids=[" ".join(a) for a, _ in SPECIFIC])
def test_bad_numbers_and_options(files, capsys, argv, want):
    code, err = run(capsys, [argv[0], "--model", files["ok"], *argv[1:], "--quiet"]
                    if argv[0] != "report" else [argv[0], "--model", files["ok"], *argv[1:]])
    check(code, err, want)


def test_train_errors(capsys):
    check(*run(capsys, ["train", "--arch", "vgg"]), 2)
    code, err = run(capsys, ["train", "--arch", "lenet-5", "--quiet"])   # 28x28 vs digits
    check(code, err, 1)
    assert "does not take digits inputs (1x8x8" in err


def test_no_traceback_in_a_real_process(files):
    """The same through ``python -m zeroskip`` (the stderr a user sees)."""
    r = subprocess.run([sys.executable, "-m", "zeroskip", "compress", "prune", "--model",
                        files["mnist"], "--sparsity", "0.9", "--quiet"],
                       capture_output=True, text=True, timeout=600)
    assert r.returncode == 1
    assert r.stderr.startswith("zeroskip: error: ") and len(r.stderr.strip().splitlines()) == 1
    assert "Traceback" not in r.stderr and r.stdout == ""
