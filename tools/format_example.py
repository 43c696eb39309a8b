"""Print the worked example of docs/format.md: a tiny 2-layer model file, annotated byte by byte.

    python tools/format_example.py            # the annotated dump (pasted verbatim into the doc)
    python tools/format_example.py --out f.zsk  # also write the file

The model: layer 0 is 9x3 (9 outputs, 3 inputs, requantized), layer 1 is 2x9 (int32 logits),
packed for 2 PEs with index_bits 2, so a gap of more than 3 rows needs a filler entry.
"""

from __future__ import annotations

import argparse
import struct
import sys
import zlib

import numpy as np

from zeroskip.spec import HwParams, decode_entry
from zeroskip.sw.pack import from_bytes, pack_model, to_bytes
from zeroskip.sw.quant import QLayer, QModel
from zeroskip.sw.ref import run_model

PARAMS = HwParams(pes=2, index_bits=2, acc_width=24, mult_bits=16, shift_bits=5,
                  entry_depth=64, ptr_depth=16, row_depth=8, act_depth=16, max_layers=2,
                  fifo_depth=4)

W0 = np.array([[5, 0, 0],
               [0, -3, 0],
               [0, 0, 0],
               [0, 0, 7],
               [0, 0, 0],
               [0, 0, 0],
               [0, 0, 0],
               [0, 0, 0],
               [-1, 2, 0]], np.int8)
W1 = np.array([[1, 0, 0, 2, 0, 0, 0, 0, -4],
               [0, 3, 0, 0, 0, 0, 0, 0, 1]], np.int8)
X = np.array([[255, 0, 17], [10, 20, 30]], np.uint8)


def example_model() -> QModel:
    l0 = QLayer(W0, np.array([10, -20, 0, 5, 0, 0, 0, 0, 100], np.int32),
                np.array([32768] * 8 + [49152], np.uint16), np.array([16] * 8 + [17], np.uint8),
                True, in_scale=2.0**-8, weight_scale=np.full(9, 2.0**-6), out_scale=2.0**-5)
    l1 = QLayer(W1, np.array([-7, 300], np.int32), np.zeros(2, np.uint16), np.zeros(2, np.uint8),
                False, in_scale=2.0**-5, weight_scale=np.full(2, 2.0**-7), out_scale=0.0)
    return QModel([l0, l1], input_scale=2.0**-8)


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


def annotate(blob: bytes) -> str:
    pm = from_bytes(blob)
    p = pm.params
    d = Dump(blob)
    d.note("--- file header (16 bytes)")
    d.field(4, 'magic "ZSKM"')
    d.u("H", "format version {v}")
    d.u("H", "header flags {v:#x} (must be 0)")
    d.u("I", "section count {v} (= 2 + 6 * layers)")
    crc = d.u("I", "CRC32 of bytes 0..11 = {v:#010x}")
    assert crc == zlib.crc32(blob[:12])
    layer_no = -1
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
            d.u("H", "pes {v}")
            d.u("B", "index_bits {v}")
            d.u("B", "weight_bits {v}")
            d.u("B", "acc_width {v}")
            d.u("B", "mult_bits {v}")
            d.u("B", "shift_bits {v}")
            d.u("B", "reserved {v} (written 0)")
            d.u("I", "entry_depth {v}")
            d.u("I", "ptr_depth {v}")
            d.u("I", "row_depth {v}")
            d.u("I", "act_depth {v}")
            d.u("H", "max_layers {v}")
            d.u("H", "fifo_depth {v}")
            d.u("I", "reserved {v} (written 0)")
        elif tag_s == "MODL":
            d.u("H", "layers {v}")
            d.u("H", "reserved {v} (written 0)")
            d.u("f", "input scale {v!r} (float32)")
            d.u("I", "in_features {v} (inputs of layer 0)")
        elif tag_s == "LAYR":
            n_in = d.u("I", "in_features {v}")
            n_out = d.u("I", "out_features {v}")
            d.u("B", "kind {v} (0 = fully connected)")
            d.u("B", "encoding {v} (0 = relative index)")
            d.u("B", "layer flags {v:#x} (bit 0: requantized, uint8 outputs)")
            d.u("B", "reserved {v} (written 0)")
            d.u("f", "in_scale {v!r} (float32)")
            d.u("f", "out_scale {v!r} (float32)")
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
    print("Weights (layer 0 is 9x3, layer 1 is 2x9; row r belongs to PE r % 2, local row r // 2):")
    for i, pl in enumerate(pm.layers):
        print(f"W{i} =")
        for r, row in enumerate(pl.q.weight):
            print(f"  row {r} (PE {r % 2}, local {r // 2}): {' '.join(f'{v:3d}' for v in row)}")
    out = run_model(pm, X, return_all=True)
    for x, h, y in zip(X, out[0].numpy(), out[1].numpy()):
        print(f"reference: x = {x.tolist()} -> layer 0 {h.tolist()} -> logits {y.tolist()}")
    print()
    print(annotate(blob))
    return 0


if __name__ == "__main__":
    sys.exit(main())
