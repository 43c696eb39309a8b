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
    assert sum(p.stat().st_size for p in GOLDEN_DIR.iterdir()) < 200_000


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


# ----------------------------------------------------------------------------- CNN goldens

CNNS = ["cnn_pad_stride", "lenet5_classic"]


def _half_even(acc: np.ndarray, m: np.ndarray, s: np.ndarray) -> np.ndarray:
    """Requantization with round half to even (the plausible wrong rounding)."""
    p = acc.astype(object) * m.astype(object)
    d = 2 ** s.astype(int).astype(object)
    q, r = p // d, p % d
    up = (2 * r > d) | ((2 * r == d) & (q % 2 == 1))
    return np.clip((q + up).astype(np.int64), 0, 255)


def _accs(q, x):
    import torch

    from zeroskip.sw.ref import _patches
    xt = torch.as_tensor(x.astype(np.int64))
    acc = _patches(xt, q) @ torch.as_tensor(q.weight.astype(np.int64)).T
    return (acc + torch.as_tensor(q.bias.astype(np.int64))).numpy()    # (N, pixels, O)


def _entries(pm):
    """(delta, weight) of every entry of every layer."""
    out = []
    for i, pl in enumerate(pm.layers):
        for e in pl.entries:
            for v in e:
                out.append((i, *decode_entry(pm.params, int(v))))
    return out


@pytest.mark.parametrize("name", CNNS)
def test_cnn_golden_exercises_what_can_go_wrong(name):
    pm = read_model(golden.paths(name)[0])
    assert pm.format_version == 2
    x = np.load(golden.paths(name)[1]).astype(np.int64)
    p = pm.params
    layers = [pl.q for pl in pm.layers]
    kinds = [q.geom.kind for q in layers]
    assert kinds[0] == "conv" and kinds[-1] == "fc"
    # requantization ties: half-up (the contract) and half-even differ on some output
    outs = run_model(pm, x, return_all=True)
    h, differs = x, 0
    for q, out in zip(layers, outs):
        if q.requant:
            acc = _accs(q, h)
            up = np.clip((acc * q.mult.astype(np.int64) + (1 << (q.shift.astype(np.int64) - 1)))
                         >> q.shift.astype(np.int64), 0, 255)
            even = _half_even(acc, q.mult, q.shift)
            differs += int((up != even).sum())
        h = out.numpy()
    assert differs > 0
    # fillers (zero weight, delta = max_delta) and stored zeros (zero weight, smaller delta)
    ent = _entries(pm)
    assert any(w == 0 and d == p.max_delta for _, d, w in ent)
    assert any(w == 0 and d < p.max_delta for _, d, w in ent)
    assert any(w == -128 for _, _, w in ent) and any(w == 127 for _, _, w in ent)
    # nontrivial row permutations and uneven PE loads
    assert any(not np.array_equal(pl.perm, np.arange(len(pl.perm))) for pl in pm.layers)
    assert any(len(set(len(e) for e in pl.entries)) > 1 for pl in pm.layers)
    # padding borders: a padded conv layer sees nonzero codes on its input map's border
    h = x
    border_seen = False
    for q, out in zip(layers, outs):
        g = q.geom
        if g.kind == "conv" and g.padding:
            m = h.reshape(len(h), *g.in_shape)
            border = np.concatenate([m[:, :, 0, :], m[:, :, -1, :], m[:, :, :, 0],
                                     m[:, :, :, -1]], axis=-1)
            border_seen |= bool((border[2:] > 0).any())     # beyond the all-0/all-255 rows
        h = out.numpy()
    assert border_seen
    # extreme codes: inputs 0 and 255, requantized outputs 0 and 255
    assert x.min() == 0 and x.max() == 255
    hidden = np.concatenate([o.numpy().ravel() for o, q in zip(outs, layers) if q.requant])
    assert hidden.min() == 0 and hidden.max() == 255


def test_golden_set_has_geometry_and_both_versions():
    pms = {n: read_model(golden.paths(n)[0]) for n in GOLDEN_MODELS}
    assert {pm.format_version for pm in pms.values()} == {1, 2}
    c = pms["cnn_pad_stride"].layers
    g = [pl.q.geom for pl in c]
    assert any(x.padding for x in g) and any(x.stride == 2 for x in g)
    assert any(x.pool == (3, 2) for x in g)
    assert pms["cnn_pad_stride"].params.pes == 3
    le = pms["lenet5_classic"]
    assert [pl.q.out_features for pl in le.layers] == [6, 16, 120, 84, 10]
    assert le.in_shape == (1, 28, 28) and le.layers[0].q.geom.padding == 2
    nz = sum(pl.nonzeros for pl in le.layers)
    assert nz / sum(pl.q.weight.size for pl in le.layers) < 0.15          # pruned
