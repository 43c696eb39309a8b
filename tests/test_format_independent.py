"""An independent decoder written from docs/format.md alone (struct + zlib + numpy, no
zeroskip code) agrees with ``from_bytes`` on every golden file, versions 1 and 2."""

from __future__ import annotations

import struct
import zlib

import numpy as np
import pytest

from zeroskip.sw.golden import GOLDEN_MODELS, paths
from zeroskip.sw.pack import read_model


def decode(blob: bytes) -> dict:
    magic, version, flags, n_secs, crc = struct.unpack_from("<4sHHII", blob, 0)
    assert magic == b"ZSKM" and version in (1, 2) and flags == 0
    assert zlib.crc32(blob[:12]) == crc
    pos, secs = 16, []
    while pos < len(blob):
        tag, n = struct.unpack_from("<4sI", blob, pos)
        body = blob[pos:pos + 8 + n]
        assert struct.unpack_from("<I", blob, pos + 8 + n)[0] == zlib.crc32(body)
        secs.append((tag, blob[pos + 8:pos + 8 + n]))
        pos += 12 + n
    assert len(secs) == n_secs
    hw = struct.unpack("<HBBBBBBIIIIHHI", secs[0][1])
    pes = hw[0]
    md = secs[1][1]
    n_layers, _, in_scale = struct.unpack_from("<HHf", md, 0)
    shape = struct.unpack_from("<III", md, 8) if version == 2 else \
        (struct.unpack_from("<I", md, 8)[0], 1, 1)
    out = {"version": version, "pes": pes, "in_shape": tuple(shape), "layers": []}
    in_perm = np.arange(shape[0])
    for i in range(n_layers):
        ly, bias, rq, pt, en, pm = (s[1] for s in secs[2 + 6 * i:8 + 6 * i])
        n_in, n_out, kind, enc, lflags, _ = struct.unpack_from("<IIBBBB", ly, 0)
        if version == 2:
            c, h, w = struct.unpack_from("<III", ly, 20)
            kh, kw, s, p, pk, ps = struct.unpack_from("<6H", ly, 32)
        else:
            c, h, w, kh, kw, s, p, pk, ps = n_in, 1, 1, 1, 1, 1, 0, 0, 0
        assert (c, h, w) == tuple(shape) and n_in == c * kh * kw
        ptrs = np.frombuffer(pt, "<u4").reshape(pes, n_in + 1)
        ents = np.frombuffer(en, "<u2")
        perm = np.frombuffer(pm, "<u4")
        colperm = [int(cc) * kh * kw + t for cc in in_perm for t in range(kh * kw)]
        W = np.zeros((n_out, n_in), np.int64)
        base = 0
        for pe in range(pes):
            for j in range(n_in):
                row = -1
                for e in ents[base + ptrs[pe, j]:base + ptrs[pe, j + 1]]:
                    e = int(e)
                    row += (e >> 8) + 1
                    wt = (e & 0xFF) - 256 * ((e >> 7) & 1)
                    if wt:
                        W[perm[pe + pes * row], colperm[j]] = wt
            base += int(ptrs[pe, -1])
        oh, ow = (h + 2 * p - kh) // s + 1, (w + 2 * p - kw) // s + 1
        if pk:
            oh, ow = (oh - pk) // ps + 1, (ow - pk) // ps + 1
        shape = (n_out, oh, ow)
        rqa = np.frombuffer(rq, "<u2").reshape(n_out, 2)
        out["layers"].append({"kind": kind, "W": W, "bias": np.frombuffer(bias, "<i4"),
                              "M": rqa[:, 0], "S": rqa[:, 1], "requant": bool(lflags & 1),
                              "geom": (c, h, w, kh, kw, s, p, pk, ps), "out_shape": shape})
        in_perm = perm
    return out


@pytest.mark.parametrize("name", list(GOLDEN_MODELS))
def test_independent_decoder_agrees(name):
    f = paths(name)[0]
    ind = decode(f.read_bytes())
    pm = read_model(f)
    assert ind["version"] == pm.format_version and ind["in_shape"] == pm.in_shape
    for a, pl in zip(ind["layers"], pm.layers):
        q, g = pl.q, pl.q.geom
        np.testing.assert_array_equal(a["W"], q.weight)
        np.testing.assert_array_equal(a["bias"], q.bias)
        np.testing.assert_array_equal(a["M"], q.mult)
        np.testing.assert_array_equal(a["S"], q.shift)
        assert a["requant"] == q.requant and a["kind"] == (g.kind == "conv")
        pool = g.pool or (0, 0)
        assert a["geom"] == (*g.in_shape, *g.kernel, g.stride, g.padding, *pool)
        assert a["out_shape"] == g.out_shape(q.out_features)
