"""Print the worked example of docs/format.md: a tiny CNN's model file, annotated byte by byte.

    python tools/format_example.py            # the annotated dump (pasted verbatim into the doc)
    python tools/format_example.py --out f.zsk  # also write the file

The model: layer 0 is a convolution of a 1x4x4 input map with 9 output channels, kernel 3x3,
stride 2, padding 1 (a 2x2 map), then 2x2 max pooling (9x1x1), requantized; its weight matrix
is 9x9 (column j = ky * 3 + kx). Layer 1 is fully connected, 2x9 (int32 logits). Packed for 2
PEs with index_bits 2, so a gap of more than 3 rows needs a filler entry. Every field is
annotated from the record tables of ``zeroskip.sw.modelfile``.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib

import numpy as np

from zeroskip.spec import HwParams, decode_entry
from zeroskip.sw.geometry import Geometry
from zeroskip.sw.modelfile import HEADER, HWPR, LAYR, MODL
from zeroskip.sw.pack import from_bytes, pack_model, to_bytes
from zeroskip.sw.quant import QLayer, QModel
from zeroskip.sw.ref import run_model

PARAMS = HwParams(pes=2, index_bits=2, acc_width=24, mult_bits=16, shift_bits=5,
                  entry_depth=64, ptr_depth=32, row_depth=8, act_depth=32, max_layers=2,
                  fifo_depth=4)

#               column j = ky * 3 + kx (one input channel)
W0 = np.array([[0, 0, 0, 0, 5, 0, 0, 0, 0],
               [-3, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 7],
               [0, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, 0, 0, 0, 0, 0],
               [0, 0, 0, 0, -1, 2, 0, 0, 0]], np.int8)
W1 = np.array([[1, 0, 0, 2, 0, 0, 0, 0, -4],
               [0, 3, 0, 0, 0, 0, 0, 0, 1]], np.int8)
GEOM0 = Geometry("conv", (1, 4, 4), (3, 3), stride=2, padding=1, pool=(2, 2))
X = np.array([[255, 0, 17, 0, 0, 40, 0, 9, 3, 0, 0, 0, 200, 0, 0, 1],
              [10, 20, 30, 40, 50, 60, 70, 80, 90, 100, 110, 120, 130, 140, 150, 160]],
             np.uint8)


def example_model() -> QModel:
    l0 = QLayer(W0, np.array([10, -20, 0, 5, 0, 0, 0, 0, 100], np.int32),
                np.array([32768] * 8 + [49152], np.uint16), np.array([16] * 8 + [17], np.uint8),
                True, in_scale=2.0**-8, weight_scale=np.full(9, 2.0**-6), out_scale=2.0**-5,
                geometry=GEOM0)
    l1 = QLayer(W1, np.array([-7, 300], np.int32), np.zeros(2, np.uint16), np.zeros(2, np.uint8),
                False, in_scale=2.0**-5, weight_scale=np.full(2, 2.0**-7), out_scale=0.0)
    return QModel([l0, l1], input_scale=2.0**-8)


# what each field is, for the annotations (names are the record tables' field names)
NOTES = {
    "magic": 'magic "ZSKM"', "version": "format version {v}",
    "flags": "header flags {v:#x} (must be 0)",
    "sections": "section count {v} (= 2 + 6 * layers)", "crc": "CRC32 of bytes 0..11 = {v:#010x}",
    "layers": "layers {v}", "input_scale": "input scale {v!r} (float32)",
    "in_channels": "in_channels {v} (C of the input map)", "in_height": "in_height {v} (H)",
    "in_width": "in_width {v} (W)", "in": "in {v} (columns of W: C * KH * KW)",
    "out": "out {v} (rows of W: output channels)",
    "kind": "kind {v} (0 = fully connected, 1 = convolution)",
    "encoding": "encoding {v} (0 = relative index)",
    "flags_l": "layer flags {v:#x} (bit 0: requantized, uint8 outputs)",
    "in_scale": "in_scale {v!r} (float32)", "out_scale": "out_scale {v!r} (float32)",
    "kernel_h": "kernel_h {v}", "kernel_w": "kernel_w {v}", "stride": "stride {v}",
    "padding": "padding {v}", "pool_kernel": "pool_kernel {v} (0: no pooling)",
    "pool_stride": "pool_stride {v}",
}


def hexb(b: bytes) -> str:
    return " ".join(f"{x:02x}" for x in b)


class Dump:
    def __init__(self, blob: bytes):
        self.blob, self.pos, self.lines = blob, 0, []

    def field(self, n: int, text: str) -> bytes:
        b = self.blob[self.pos:self.pos + n]
        self.lines.append(f"{self.pos:06x}  {hexb(b):<24} {text}")
        self.pos += n
        return b

    def u(self, fmt: str, text: str):
        size = struct.calcsize("<" + fmt)
        (v,) = struct.unpack("<" + fmt, self.blob[self.pos:self.pos + size])
        self.field(size, text.format(v=v))
        return v

    def note(self, text: str) -> None:
        self.lines.append(f"{'':6}  {'':24} {text}")


def _record(d: Dump, rec, notes: dict | None = None) -> dict:
    """Annotate one record field by field from its table; returns the values."""
    vals = {}
    for name, fmt in rec.fields:
        if fmt == "4s":
            d.field(4, NOTES[name])
            continue
        note = (notes or {}).get(name) or NOTES.get(name) or (
            "reserved {v} (written 0)" if name.startswith("reserved") else name + " {v}")
        vals[name] = d.u(fmt, note)
    return vals


def annotate(blob: bytes) -> str:
    pm = from_bytes(blob)
    p = pm.params
    d = Dump(blob)
    d.note(f"--- file header ({HEADER.size} bytes)")
    h = _record(d, HEADER)
    assert h["crc"] == zlib.crc32(blob[:12])
    version = h["version"]
    layer_no = -1
    n_in = 0
    while d.pos < len(blob):
        start = d.pos
        tag, n = struct.unpack_from("<4sI", blob, start)
        tag_s = tag.decode()
        if tag_s == "LAYR":
            layer_no += 1
        where = f" (layer {layer_no})" if layer_no >= 0 else ""
        d.note(f"--- section {tag_s}{where} at byte {start}: {n}-byte payload")
        d.field(4, f'tag "{tag_s}"')
        d.u("I", "payload length {v}")
        if tag_s == "HWPR":
            _record(d, HWPR)
        elif tag_s == "MODL":
            _record(d, MODL[version])
        elif tag_s == "LAYR":
            vals = _record(d, LAYR[version], {"flags": NOTES["flags_l"]})
            n_in, n_out = vals["in"], vals["out"]
            for o in range(n_out):
                d.u("f", f"weight_scale[{o}] {{v!r}} (float32)")
        elif tag_s == "BIAS":
            for o in range(n // 4):
                d.u("i", f"bias[{o}] {{v}} (int32)")
        elif tag_s == "RQNT":
            for o in range(n // 4):
                d.u("H", f"row {o}: M {{v}}")
                d.u("H", f"row {o}: S {{v}}")
        elif tag_s == "PTRS":
            for pe in range(p.pes):
                for j in range(n_in + 1):
                    d.u("I", f"PE {pe} ptr[{j}] = {{v}}" + (" (= its entry count)"
                                                           if j == n_in else ""))
        elif tag_s == "ENTR":
            pl = pm.layers[layer_no]
            for pe in range(p.pes):
                ptr = pl.ptrs[pe]
                row = {}
                for k in range(len(pl.entries[pe])):
                    j = int(np.searchsorted(ptr, k, side="right")) - 1
                    if k == ptr[j]:
                        row[j] = -1
                    bits = int(pl.entries[pe][k])
                    delta, w = decode_entry(p, bits)
                    row[j] += delta + 1
                    r = row[j]
                    kind = "filler" if w == 0 else f"W[{pe + p.pes * r}][{j}] = {w}"
                    d.u("H", f"PE {pe} entry {k}: {bits:#06x} = delta {delta}, weight {w:4d}"
                             f" -> column {j}, local row {r}: {kind}")
        elif tag_s == "PERM":
            for r in range(n // 4):
                d.u("I", f"hardware row {r} computes output row {{v}}")
        d.u("I", f"CRC32 of bytes {start}..{start + 8 + n - 1} = {{v:#010x}}")
        assert int.from_bytes(blob[d.pos - 4:d.pos], "little") == zlib.crc32(
            blob[start:start + 8 + n])
    d.note(f"--- end of file: {len(blob)} bytes")
    return "\n".join(d.lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", help="also write the model file here")
    args = ap.parse_args(argv)
    pm = pack_model(example_model(), PARAMS, balance=False)
    blob = to_bytes(pm)
    if args.out:
        with open(args.out, "wb") as f:
            f.write(blob)
    print("Layer 0: conv of the 1x4x4 input, 9 channels, kernel 3x3, stride 2, padding 1 "
          "(2x2 map),")
    print("then 2x2 max pooling (9x1x1); column j = ky * 3 + kx. Layer 1: FC 2x9. Row r "
          "belongs to PE r % 2, local row r // 2.")
    for i, pl in enumerate(pm.layers):
        print(f"W{i} =")
        for r, row in enumerate(pl.q.weight):
            print(f"  row {r} (PE {r % 2}, local {r // 2}): {' '.join(f'{v:3d}' for v in row)}")
    out = run_model(pm, X, return_all=True)
    g = GEOM0
    for x, h, y in zip(X, out[0].numpy(), out[1].numpy()):
        xm = np.pad(x.reshape(4, 4).astype(np.int64), 1)
        print(f"reference: x = {x.reshape(4, 4).tolist()} (4x4 map)")
        for oy in range(g.conv_hw[0]):
            for ox in range(g.conv_hw[1]):
                patch = xm[2 * oy:2 * oy + 3, 2 * ox:2 * ox + 3].reshape(-1)
                print(f"  output pixel ({oy}, {ox}): patch x[{2 * oy - 1}..{2 * oy + 1}, "
                      f"{2 * ox - 1}..{2 * ox + 1}] (zero outside the map) = {patch.tolist()}")
        print(f"  layer 0 after requantization and 2x2 max pooling: {h.tolist()} "
              f"-> logits {y.tolist()}")
    print()
    print(annotate(blob))
    return 0


if __name__ == "__main__":
    sys.exit(main())
