"""Golden model files (tests/golden): they decode and the reference reproduces their outputs."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pytest

from zeroskip.spec import decode_entry
from zeroskip.sw import golden
from zeroskip.sw.golden import GOLDEN_DIR, GOLDEN_MODELS
from zeroskip.sw.pack import read_model, to_bytes
from zeroskip.sw.ref import run_model


@pytest.mark.parametrize("name", list(GOLDEN_MODELS))
def test_golden_decodes_and_reproduces(name):
    zsk, inp, exp = golden.paths(name)
    pm = read_model(zsk)
    assert to_bytes(pm) == zsk.read_bytes()
    x = np.load(inp)
    want = np.load(exp)
    assert x.dtype == np.uint8 and want.dtype == np.int64
    assert x.shape == (len(x), pm.layers[0].q.in_size)
    assert want.shape == (len(x), pm.layers[-1].q.out_size)
    np.testing.assert_array_equal(run_model(pm, x).numpy(), want)


def test_golden_set_covers_what_it_claims():
    pms = {n: read_model(golden.paths(n)[0]) for n in GOLDEN_MODELS}
    d = pms["digits_pruned"]
    assert [pl.q.weight.shape for pl in d.layers] == [(64, 64), (10, 64)]
    total = sum(pl.q.weight.size for pl in d.layers)
    assert 1 - sum(pl.nonzeros for pl in d.layers) / total == pytest.approx(0.9, abs=0.01)
    r = pms["random3_pes3_k2"]
    assert r.params.pes == 3 and r.params.index_bits == 2 and len(r.layers) == 3
    fillers = sum(1 for pl in r.layers for e in pl.entries for v in e
                  if decode_entry(r.params, int(v))[1] == 0)
    assert fillers > 0
    dn = pms["dense"]
    for pl in dn.layers:
        assert pl.n_entries == pl.q.weight.size          # every weight stored
        assert pl.nonzeros < pl.q.weight.size            # zeros included
    rl = pms["relu_last"]
    assert rl.layers[-1].q.requant
    out = np.load(golden.paths("relu_last")[2])
    assert out.min() == 0 and out.max() == 255 and len(np.unique(out)) > 20
    assert sum(p.stat().st_size for p in GOLDEN_DIR.iterdir()) < 100_000


def test_golden_verify_mode_passes():
    r = subprocess.run([sys.executable, "-m", "zeroskip.sw.golden"], capture_output=True,
                       text=True, timeout=120)
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("ok ") == len(GOLDEN_MODELS)


def test_golden_verify_mode_fails_on_mismatch(tmp_path):
    for name in GOLDEN_MODELS:
        for p in golden.paths(name):
            (tmp_path / p.name).write_bytes(p.read_bytes())
    _, _, exp = golden.paths("relu_last", tmp_path)
    want = np.load(exp)
    want[3, 2] += 1
    np.save(exp, want)
    zsk = golden.paths("dense", tmp_path)[0]
    blob = bytearray(zsk.read_bytes())
    blob[100] ^= 1
    zsk.write_bytes(bytes(blob))
    r = subprocess.run([sys.executable, "-m", "zeroskip.sw.golden", "--dir", str(tmp_path)],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 1
    assert "FAIL relu_last: 1 outputs differ" in r.stdout
    assert "FAIL" in r.stdout and "dense.zsk" in r.stdout and "CRC mismatch" in r.stdout
    assert "ok   digits_pruned" in r.stdout


def test_format_doc_example_is_current(capsys):
    """docs/format.md contains the output of tools/format_example.py verbatim."""
    import importlib.util

    root = GOLDEN_DIR.parent.parent
    spec = importlib.util.spec_from_file_location("format_example",
                                                  root / "tools" / "format_example.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    assert mod.main([]) == 0
    out = capsys.readouterr().out
    assert out.strip() in (root / "docs" / "format.md").read_text()
