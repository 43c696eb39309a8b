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


def test_pack_inspect_ref_from_model_and_state_dict(saved, capsys, monkeypatch):
    (saved / "arch_mod.py").write_text("from zeroskip.sw.models import digits_mlp\n"
                                       "def net():\n    return digits_mlp(hidden=(32,))\n")
    monkeypatch.syspath_prepend(str(saved))
    for src, extra in (("model.pt", []), ("state.pt", ["--arch", "arch_mod:net"])):
        out = saved / f"{src}.zsk"
        assert main(["pack", str(saved / src), "-o", str(out), "--pes", "4", *extra]) == 0
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
    (["pack", "{d}/conv.pt", "-o", "{d}/conv.zsk"],
     "layer 0 (Conv2d): a hidden layer must be followed by ReLU"),
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


# ----------------------------------------------------------------------------- hostile input


class _Result:
    def __init__(self, returncode, stdout, stderr):
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr


@pytest.fixture
def cli(capsys):
    """Run ``zeroskip`` in this process (an uncaught exception fails the test like a traceback
    would; numpy warnings are errors)."""
    import warnings

    def run(*args):
        capsys.readouterr()
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            code = main([str(a) for a in args])
        out = capsys.readouterr()
        return _Result(code, out.out, out.err)
    return run


def _one_line(r, message):
    assert r.returncode == 1, (r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("zeroskip: error:"), r.stderr
    assert message in lines[0], lines[0]
    return lines[0]


@pytest.mark.parametrize("args, message", [
    (["pack", "{d}/state.pt", "-o", "{d}/x.zsk"], "holds a state_dict, which does not say"),
    (["pack", "{d}/state.pt", "-o", "{d}/x.zsk", "--arch", "lenet5"],
     "the state_dict does not match --arch lenet5"),
    (["pack", "{d}/state.pt", "-o", "{d}/x.zsk", "--arch", "nope"],
     "--arch nope: unknown architecture"),
    (["pack", "{d}/state.pt", "-o", "{d}/x.zsk", "--arch", "no_such_module:f"],
     "--arch no_such_module:f: cannot import f from no_such_module"),
    (["pack", "{d}/model.pt", "-o", "{d}/x.zsk", "--arch", "lenet5"],
     "--arch is only for state_dicts"),
    (["pack", "{d}/model.pt", "-o", "{d}/x.zsk", "--import", "no_such_module"],
     "--import no_such_module: cannot import"),
    (["pack", "{d}", "-o", "{d}/x.zsk"], "not a file"),
])
def test_state_dicts_and_imports(saved, args, message, cli):
    _one_line(cli(*[a.format(d=saved) for a in args]), message)
    assert not (saved / "x.zsk").exists()


@pytest.fixture(scope="module")
def packed(saved):
    out = saved / "hostile.zsk"
    assert main(["pack", str(saved / "model.pt"), "-o", str(out), "--pes", "2"]) == 0
    np.save(saved / "codes.npy", np.random.default_rng(0).integers(0, 256, (3, 64)))
    return out


def test_output_paths(saved, packed, tmp_path, monkeypatch, cli):
    import os

    from zeroskip.sw import modelfile
    for opt, args in (("-o", ["pack", saved / "model.pt"]),
                      ("--out", ["ref", packed, saved / "codes.npy"])):
        _one_line(cli(*args, opt, tmp_path / "missing" / "f"), "does not exist")
        _one_line(cli(*args, opt, tmp_path), "is a directory")
        ro = tmp_path / "ro"
        ro.mkdir(exist_ok=True)
        ro.chmod(0o500)
        try:
            if not os.access(ro, os.W_OK):              # root ignores the mode
                _one_line(cli(*args, opt, ro / "f"), "cannot write (Permission denied)")
        finally:
            ro.chmod(0o700)

        def erofs(*a, **k):
            raise OSError(30, "Read-only file system")
        with monkeypatch.context() as m:                # a read-only file system
            m.setattr(modelfile.tempfile, "mkstemp", erofs)
            _one_line(cli(*args, opt, ro / "f"), "f: cannot write (Read-only file system)")
        assert list(ro.iterdir()) == []


def test_ref_out_writes_exactly_the_name_it_reports(saved, packed, tmp_path, cli):
    target = tmp_path / "outputs"            # no .npy suffix: np.save would add one
    r = cli("ref", packed, saved / "codes.npy", "--out", target)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == f"wrote {target}: 3 x 10 outputs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["outputs"]
    pm = read_model(packed)
    np.testing.assert_array_equal(np.load(target), run_model(pm, np.load(saved / "codes.npy")))


def test_ref_out_is_atomic(saved, packed, tmp_path, monkeypatch, capsys):
    from zeroskip.sw import modelfile
    target = tmp_path / "y.npy"
    target.write_bytes(b"good old outputs")

    def boom(*a, **k):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(modelfile.os, "fsync", boom)
    assert main(["ref", str(packed), str(saved / "codes.npy"), "--out", str(target)]) == 1
    assert "cannot write (No space left on device)" in capsys.readouterr().err
    assert target.read_bytes() == b"good old outputs"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["y.npy"]


@pytest.mark.parametrize("array, message", [
    (np.array(7), "holds a single number (a 0-d array)"),
    (np.zeros((0, 64), np.uint8), "is empty (shape (0, 64))"),
    (np.zeros((2, 0)), "is empty"),
    (np.array(["a", "b"]), "values, not numbers"),
])
def test_bad_input_arrays(saved, packed, tmp_path, array, message, cli):
    f = tmp_path / "bad.npy"
    np.save(f, array)
    _one_line(cli("ref", packed, f), message)
    _one_line(cli("pack", saved / "model.pt", "-o", tmp_path / "m.zsk", "--calib", f),
              message)
    assert not (tmp_path / "m.zsk").exists()


def test_nan_calibration_and_inputs(saved, packed, tmp_path, cli):
    x = np.random.default_rng(0).random((8, 64)).astype(np.float32)
    x[3, 5] = np.nan
    np.save(tmp_path / "nan.npy", x)
    r = cli("pack", saved / "model.pt", "-o", tmp_path / "m.zsk", "--calib",
                tmp_path / "nan.npy")
    _one_line(r, "calibration data contains NaN or infinite values")
    r = cli("ref", packed, tmp_path / "nan.npy", "--float")
    _one_line(r, "inputs contain NaN or infinite values")


@pytest.mark.parametrize("where", ["weight", "bias", "bn"])
def test_non_finite_weights_are_one_line(saved, tmp_path, cli, where):
    """A model with a NaN/inf weight or bias (or a BatchNorm that folds into one) is refused,
    not quantized to zeros with a zero scale."""
    torch.manual_seed(0)
    model = digits_mlp(hidden=(32,))
    with torch.no_grad():
        if where == "weight":
            model[1].weight[3, 5] = float("nan")
        elif where == "bias":
            model[1].bias[2] = float("inf")
        else:
            model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 32),
                                        torch.nn.BatchNorm1d(32), torch.nn.ReLU(),
                                        torch.nn.Linear(32, 10)).eval()
            model[2].running_var[4] = -1.0          # sqrt of a negative variance: NaN
    torch.save(model, tmp_path / "bad.pt")
    r = cli("pack", tmp_path / "bad.pt", "-o", tmp_path / "m.zsk")
    what = "bias" if where == "bias" else "weights"
    _one_line(r, f"layer 0 (1): its {what} contain NaN or infinite values")
    assert not (tmp_path / "m.zsk").exists()


@pytest.mark.parametrize("p", ["200", "0", "-5", "nan"])
def test_bad_percentile(saved, tmp_path, p, cli):
    r = cli("pack", saved / "model.pt", "-o", tmp_path / "m.zsk", "--percentile", p)
    _one_line(r, "percentile must be in (0, 100]")


def test_signalling_nan_scale_gives_one_line_and_no_warning(packed, tmp_path, cli):
    import struct
    import zlib
    blob = bytearray(packed.read_bytes())
    # LAYR of layer 0: after header (16), HWPR (12 + 32), MODL (12 + 20); weight_scale[0]
    pos = 16 + 44 + 32
    assert blob[pos:pos + 4] == b"LAYR"
    n = struct.unpack_from("<I", blob, pos + 4)[0]
    struct.pack_into("<I", blob, pos + 8 + 44, 0x7FA00000)          # a signalling NaN
    struct.pack_into("<I", blob, pos + 8 + n, zlib.crc32(bytes(blob[pos:pos + 8 + n])))
    f = tmp_path / "snan.zsk"
    f.write_bytes(bytes(blob))
    r = cli("inspect", f)
    line = _one_line(r, "layer 0: LAYR: a scale is not finite")
    assert "Warning" not in r.stderr and line == r.stderr.strip()


def test_pickled_class_from_main(tmp_path, monkeypatch, cli):
    script = tmp_path / "train.py"
    script.write_text(
        "import torch\nfrom torch import nn\n"
        "class MyNet(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.a = nn.Linear(64, 16)\n        self.b = nn.Linear(16, 10)\n"
        "    def forward(self, x):\n        return self.b(torch.relu(self.a(x.flatten(1))))\n"
        "if __name__ == '__main__':\n    torch.save(MyNet(), 'net.pt')\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    # save it as the script would: the class lives in __main__ while it is pickled
    import importlib
    import types
    cls = importlib.import_module("train").MyNet
    main_mod = sys.modules["__main__"]
    fake = types.ModuleType("__main__")
    fake.MyNet = cls
    monkeypatch.setattr(cls, "__module__", "__main__")
    monkeypatch.setitem(sys.modules, "__main__", fake)
    torch.save(cls(), tmp_path / "net.pt")
    monkeypatch.setitem(sys.modules, "__main__", main_mod)
    r = cli("pack", "net.pt", "-o", "n.zsk")
    _one_line(r, "the model's class MyNet cannot be found (it was defined in the script that "
                 "saved the model (__main__))")
    assert "--import MODULE" in r.stderr and "state_dict" in r.stderr
    # the fix the message gives works: import the defining module
    r = cli("pack", "net.pt", "-o", "n.zsk", "--import", "train")
    assert r.returncode == 0, r.stderr
    pm = read_model(tmp_path / "n.zsk")
    assert [pl.q.out_features for pl in pm.layers] == [16, 10]


def test_pack_a_users_cnn(tmp_path, monkeypatch, cli):
    """A user's CNN subclass (custom forward, BatchNorm, functional pooling before the ReLU)
    packs to a version-2 file with its geometry, and inspect shows it."""
    mod = tmp_path / "usernet.py"
    mod.write_text(
        "import torch\nimport torch.nn.functional as F\nfrom torch import nn\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.c = nn.Conv2d(1, 6, 3, padding=1)\n        self.bn = nn.BatchNorm2d(6)\n"
        "        self.c2 = nn.Conv2d(6, 8, 3, stride=2, padding=1)\n"
        "        self.fc = nn.Linear(8 * 2 * 2, 10)\n"
        "    def forward(self, x):\n"
        "        x = F.relu(F.max_pool2d(self.bn(self.c(x)), 2))\n"
        "        x = torch.relu(self.c2(x))\n"
        "        return self.fc(x.view(x.size(0), -1))\n"
        "def make():\n    torch.manual_seed(0)\n    return Net().eval()\n")
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import importlib
    usernet = importlib.import_module("usernet")
    torch.save(usernet.make().state_dict(), tmp_path / "sd.pt")
    torch.save(usernet.make(), tmp_path / "whole.pt")
    for src, extra in (("sd.pt", ["--arch", "usernet:make"]), ("whole.pt", ["--import",
                                                                            "usernet"])):
        r = cli("pack", src, "-o", "n.zsk", "--calib", "digits", "--pes", "3", *extra)
        assert r.returncode == 0, r.stderr
        pm = read_model(tmp_path / "n.zsk")
        assert pm.format_version == 2 and pm.in_shape == (1, 8, 8)
        g = [pl.q.geom for pl in pm.layers]
        assert [x.kind for x in g] == ["conv", "conv", "fc"]
        assert g[0].pool == (2, 2) and g[1].stride == 2 and g[2].in_shape == (8, 2, 2)
    r = cli("pack", "whole.pt", "-o", "n.zsk", "--import", "usernet")
    _one_line(r, "the input size of a convolutional model is not part of the model")
    np.save(tmp_path / "flat.npy", np.random.default_rng(0).random((16, 64)).astype(np.float32))
    r = cli("pack", "whole.pt", "-o", "n.zsk", "--import", "usernet", "--calib", "flat.npy")
    _one_line(r, "does not give the input map of a convolutional model")
    r = cli("pack", "whole.pt", "-o", "n.zsk", "--import", "usernet", "--calib", "flat.npy",
            "--input-shape", "1,8,8")
    assert r.returncode == 0, r.stderr
    _one_line(cli("pack", "whole.pt", "-o", "n.zsk", "--import", "usernet", "--calib",
                  "flat.npy", "--input-shape", "8,8"), "give three positive integers C,H,W")
    r = cli("inspect", tmp_path / "n.zsk")
    assert "conv 3x3/s1/p1 pool 2/s2 -> 6x4x4" in r.stdout and "input map 1x8x8" in r.stdout
