"""The model file (``.zsk``): writer and reader, format versions 1 and 2.

``docs/format.md`` describes the bytes exactly. Every fixed-size record (the header, ``HWPR``,
``MODL``, ``LAYR``) is defined once below as a :class:`Record`: an ordered list of
``(name, struct format)`` fields that both :func:`to_bytes` and :func:`from_bytes` use, so the
two cannot disagree on a field's position. Fields named ``reserved*`` are written 0 and
rejected when they are not 0.

The reader validates every field before anything is sized by it, checks that the model fits the
hardware (:func:`~zeroskip.sw.pack.check_fits`) before it builds any dense weight matrix, and
decodes the streams with vectorized numpy (linear in the file size). Every problem raises
:class:`~zeroskip.sw.errors.FormatError` (or its subclass ``FitError``) naming it.
"""

from __future__ import annotations

import os
import struct
import tempfile
import zlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec import HwParams, ParamError, entry_layout, unpack_field
from .errors import FitError, FormatError
from .geometry import Geometry, GeometryError

__all__ = ["MAGIC", "VERSION", "VERSIONS", "Record", "HEADER", "SECTION", "HWPR", "MODL", "LAYR",
           "SECTIONS_PER_LAYER", "LAYER_SECTIONS", "KIND_FC", "KIND_CONV", "FLAG_REQUANT",
           "ENC_RELATIVE", "to_bytes", "from_bytes", "write_model", "read_model"]

MAGIC = b"ZSKM"
VERSION = 2                     # what the writer produces by default
VERSIONS = (1, 2)               # what the reader accepts
ENC_RELATIVE = 0
KIND_FC = 0
KIND_CONV = 1
KINDS = {KIND_FC: "fc", KIND_CONV: "conv"}
FLAG_REQUANT = 1
LAYER_SECTIONS = (b"LAYR", b"BIAS", b"RQNT", b"PTRS", b"ENTR", b"PERM")
SECTIONS_PER_LAYER = len(LAYER_SECTIONS)


@dataclass(frozen=True)
class Record:
    """A fixed-size little-endian record: ``fields`` is ``((name, struct format), ...)``."""
    name: str
    fields: tuple[tuple[str, str], ...]

    @property
    def struct(self) -> struct.Struct:
        return struct.Struct("<" + "".join(f for _, f in self.fields))

    @property
    def size(self) -> int:
        return self.struct.size

    def pack(self, **values) -> bytes:
        names = [n for n, _ in self.fields]
        unknown = set(values) - set(names)
        if unknown:
            raise TypeError(f"{self.name}: unknown fields {sorted(unknown)}")
        args = []
        for n in names:
            if n.startswith("reserved"):
                args.append(values.get(n, 0))
            else:
                args.append(values[n])
        return self.struct.pack(*args)

    def unpack(self, buf, offset: int = 0) -> dict:
        vals = self.struct.unpack_from(buf, offset)
        return dict(zip((n for n, _ in self.fields), vals))

    def offset(self, name: str) -> int:
        """Byte offset of field ``name`` inside the record."""
        i = [n for n, _ in self.fields].index(name)
        return struct.calcsize("<" + "".join(f for _, f in self.fields[:i]))

    def reserved_nonzero(self, values: dict) -> bool:
        return any(v != 0 for n, v in values.items() if n.startswith("reserved"))


HEADER = Record("header", (
    ("magic", "4s"), ("version", "H"), ("flags", "H"), ("sections", "I"), ("crc", "I")))
SECTION = Record("section", (("tag", "4s"), ("length", "I")))

# HWPR: the same in versions 1 and 2. The names are HwParams' fields.
HWPR = Record("HWPR", (
    ("pes", "H"), ("index_bits", "B"), ("weight_bits", "B"), ("acc_width", "B"),
    ("mult_bits", "B"), ("shift_bits", "B"), ("reserved0", "B"), ("entry_depth", "I"),
    ("ptr_depth", "I"), ("row_depth", "I"), ("act_depth", "I"), ("max_layers", "H"),
    ("fifo_depth", "H"), ("reserved1", "I")))

_MODL_COMMON = (("layers", "H"), ("reserved", "H"), ("input_scale", "f"))
MODL = {
    1: Record("MODL", _MODL_COMMON + (("in_features", "I"),)),
    2: Record("MODL", _MODL_COMMON + (("in_channels", "I"), ("in_height", "I"),
                                      ("in_width", "I"))),
}

_LAYR_COMMON = (("in", "I"), ("out", "I"), ("kind", "B"), ("encoding", "B"), ("flags", "B"),
                ("reserved", "B"), ("in_scale", "f"), ("out_scale", "f"))
LAYR = {        # followed by f32 weight_scale[out]
    1: Record("LAYR", _LAYR_COMMON),
    2: Record("LAYR", _LAYR_COMMON + (
        ("in_channels", "I"), ("in_height", "I"), ("in_width", "I"), ("kernel_h", "H"),
        ("kernel_w", "H"), ("stride", "H"), ("padding", "H"), ("pool_kernel", "H"),
        ("pool_stride", "H"))),
}

# per-row arrays of the layer sections (numpy dtypes, little-endian)
_BIAS = np.dtype("<i4")
_RQNT = np.dtype([("M", "<u2"), ("S", "<u2")])
_PTR = np.dtype("<u4")
_ENTRY = np.dtype("<u2")
_PERM = np.dtype("<u4")
_WSCALE = np.dtype("<f4")


def _u16_fits(v: int) -> bool:
    return 0 <= v <= 0xFFFF


# ----------------------------------------------------------------------------- writer

def _section(tag: bytes, payload: bytes) -> bytes:
    head = SECTION.pack(tag=tag, length=len(payload))
    return head + payload + struct.pack("<I", zlib.crc32(head + payload))


def _geometry_fields(g: Geometry) -> dict:
    c, h, w = g.in_shape
    pk, ps = g.pool if g.pool is not None else (0, 0)
    vals = {"in_channels": c, "in_height": h, "in_width": w, "kernel_h": g.kernel[0],
            "kernel_w": g.kernel[1], "stride": g.stride, "padding": g.padding,
            "pool_kernel": pk, "pool_stride": ps}
    for n in ("kernel_h", "kernel_w", "stride", "padding", "pool_kernel", "pool_stride"):
        if not _u16_fits(vals[n]):
            raise FormatError(f"layer geometry {g}: {n} {vals[n]} does not fit a u16")
    return vals


def _is_plain_fc(g: Geometry) -> bool:
    return g.kind == "fc" and g.in_shape[1:] == (1, 1) and g.pool is None


def to_bytes(pm, version: int | None = None) -> bytes:
    """The file image of a :class:`~zeroskip.sw.pack.PackedModel`.

    ``version`` defaults to the model's ``format_version`` (2 unless it was read from a
    version-1 file). Version 1 holds only stacks of plain fully-connected layers.
    """
    version = version or getattr(pm, "format_version", VERSION)
    if version not in VERSIONS:
        raise FormatError(f"cannot write format version {version} (versions {VERSIONS})")
    p = pm.params
    geoms = [pl.q.geom for pl in pm.layers]
    if version == 1 and not all(_is_plain_fc(g) for g in geoms):
        raise FormatError("format version 1 holds only fully-connected layers on vectors; "
                          "write version 2")
    hw = HWPR.pack(**{n: getattr(p, n) for n, _ in HWPR.fields if not n.startswith("reserved")})
    secs = [_section(b"HWPR", hw)]
    modl = {"layers": len(pm.layers), "input_scale": pm.input_scale}
    if version == 1:
        modl["in_features"] = pm.layers[0].q.in_features
    else:
        c, h, w = geoms[0].in_shape
        modl.update(in_channels=c, in_height=h, in_width=w)
    secs.append(_section(b"MODL", MODL[version].pack(**modl)))
    for pl, g in zip(pm.layers, geoms):
        q = pl.q
        o = q.out_features
        ws = np.asarray(q.weight_scale, dtype=_WSCALE).reshape(-1)
        if ws.size == 0:
            ws = np.ones(1, dtype=_WSCALE)
        if ws.size not in (1, o):
            raise FormatError(f"layer has {ws.size} weight scales for {o} output rows")
        wscale = np.broadcast_to(ws, (o,))
        fields = {"in": q.in_features, "out": o,
                  "kind": KIND_CONV if g.kind == "conv" else KIND_FC, "encoding": pl.encoding,
                  "flags": FLAG_REQUANT if q.requant else 0, "in_scale": q.in_scale,
                  "out_scale": q.out_scale}
        if version == 2:
            fields.update(_geometry_fields(g))
        secs.append(_section(b"LAYR", LAYR[version].pack(**fields) + wscale.tobytes()))
        secs.append(_section(b"BIAS", np.asarray(q.bias, dtype=_BIAS).tobytes()))
        rq = np.zeros(o, dtype=_RQNT)
        rq["M"] = q.mult
        rq["S"] = q.shift
        secs.append(_section(b"RQNT", rq.tobytes()))
        secs.append(_section(b"PTRS", np.concatenate(pl.ptrs).astype(_PTR).tobytes()))
        secs.append(_section(b"ENTR", np.concatenate(pl.entries).astype(_ENTRY).tobytes()))
        secs.append(_section(b"PERM", np.asarray(pl.perm, dtype=_PERM).tobytes()))
    head = HEADER.pack(magic=MAGIC, version=version, flags=0, sections=len(secs), crc=0)[:12]
    return head + struct.pack("<I", zlib.crc32(head)) + b"".join(secs)


# ----------------------------------------------------------------------------- reader

class _Reader:
    def __init__(self, blob: bytes, where: str):
        self.blob, self.pos, self.where = blob, HEADER.size, where

    def section(self, expect: bytes) -> memoryview:
        if self.pos + SECTION.size > len(self.blob):
            raise FormatError(f"{self.where}: truncated before section {expect.decode()}")
        tag, length = SECTION.struct.unpack_from(self.blob, self.pos)
        if tag != expect:
            raise FormatError(f"{self.where}: expected section {expect.decode()} at byte "
                              f"{self.pos}, found {tag!r}")
        end = self.pos + SECTION.size + length
        if end + 4 > len(self.blob):
            raise FormatError(f"{self.where}: section {expect.decode()} is truncated")
        (crc,) = struct.unpack_from("<I", self.blob, end)
        view = memoryview(self.blob)
        if zlib.crc32(view[self.pos:end]) != crc:
            raise FormatError(f"{self.where}: CRC mismatch in section {expect.decode()} at byte "
                              f"{self.pos}")
        payload = view[self.pos + SECTION.size:end]
        self.pos = end + 4
        return payload


def _need(cond: bool, msg: str) -> None:
    if not cond:
        raise FormatError(msg)


def _finite(*vals) -> bool:
    return all(np.isfinite(v) for v in vals)


def _read_geometry(ly: dict, version: int, n_in: int, lw: str) -> Geometry:
    """The layer's geometry from its LAYR fields (version 1: a plain FC layer)."""
    if version == 1:
        return Geometry.fc(n_in)
    kind = KINDS[ly["kind"]]
    pool = None
    if ly["pool_kernel"] or ly["pool_stride"]:
        pool = (ly["pool_kernel"], ly["pool_stride"])
    try:
        return Geometry(kind, (ly["in_channels"], ly["in_height"], ly["in_width"]),
                        (ly["kernel_h"], ly["kernel_w"]), ly["stride"], ly["padding"], pool)
    except GeometryError as e:
        raise FormatError(f"{lw}: LAYR: bad geometry: {e}") from None


@dataclass
class _Parsed:
    """One layer's validated fields and streams (no dense matrix yet)."""
    n_in: int
    n_out: int
    geom: Geometry
    enc: int
    requant: bool
    in_scale: float
    out_scale: float
    wscale: np.ndarray
    bias: np.ndarray
    rq: np.ndarray
    ptrs: list[np.ndarray]
    entries: list[np.ndarray]
    perm: np.ndarray
    abs_row_sums: np.ndarray        # sum_j |W[o, j]| per output row o (model order)
    nonzeros: tuple                 # (rows, cols, vals) in hardware order


def _decode_streams(ptrs, entries, n_out: int, n_in: int, params: HwParams, lw: str):
    """Validate per-PE streams and decode them without building the dense matrix.

    Returns ``(rows, cols, vals)`` of the nonzero weights in hardware order (int32, int32,
    int8) and ``sum_j |W_hw[r, j]|`` per hardware row (int64). Linear in the number of entries
    plus columns; the memory it takes is proportional to the streams, never to ``n_out * n_in``.
    """
    from .pack import local_rows

    P, elay = params.pes, entry_layout(params)
    sums = np.zeros(n_out, dtype=np.int64)
    cols = np.arange(n_in, dtype=np.int32)
    out_r, out_c, out_v = [], [], []
    for p in range(P):
        ptr = np.asarray(ptrs[p], dtype=np.int64)
        ent = np.asarray(entries[p], dtype=np.int32)
        n_rows = local_rows(n_out, P, p)
        if ptr.shape != (n_in + 1,):
            raise FormatError(f"{lw}: PE {p} has {ptr.size} column pointers, "
                              f"expected {n_in + 1}")
        counts = np.diff(ptr)
        if ptr[0] != 0 or np.any(counts < 0) or ptr[-1] != ent.size:
            raise FormatError(f"{lw}: PE {p} column pointers are not monotone from 0 to "
                              f"its {ent.size} entries")
        if np.any(ent >> elay.size):
            raise FormatError(f"{lw}: PE {p} has entries with bits above bit "
                              f"{elay.size - 1} set")
        if ent.size == 0:
            continue
        col = np.repeat(cols, counts)                       # column of every entry
        step = np.cumsum(unpack_field(elay, ent, "delta") + 1, dtype=np.int64)  # rows so far
        nonempty = counts > 0
        start = ptr[:-1][nonempty]                          # first entry of each column
        base = np.where(start > 0, step[np.maximum(start - 1, 0)], 0)
        rows = step - np.repeat(base, counts[nonempty]) - 1  # local row of every entry
        bad = np.flatnonzero(rows >= n_rows)
        if bad.size:
            j = int(col[bad[0]])
            last = int(rows[ptr[j + 1] - 1])
            raise FormatError(f"{lw}: PE {p} column {j}: row index {last} out of "
                              f"range (the PE has {n_rows} rows)")
        vals = unpack_field(elay, ent, "weight").astype(np.int8)      # sign-extended
        nz = vals != 0
        hw_rows = (p + P * rows[nz]).astype(np.int32)
        v = vals[nz]
        sums += np.bincount(hw_rows, weights=np.abs(v.astype(np.int16)),
                            minlength=n_out).astype(np.int64)
        out_r.append(hw_rows)
        out_c.append(col[nz])
        out_v.append(v)
    if not out_r:
        return (np.zeros(0, np.int32), np.zeros(0, np.int32), np.zeros(0, np.int8)), sums
    return (np.concatenate(out_r), np.concatenate(out_c), np.concatenate(out_v)), sums


def _parse_layer(r: _Reader, version: int, params: HwParams, lw: str,
                 in_shape: tuple[int, int, int]) -> _Parsed:
    rec = LAYR[version]
    ly_b = r.section(b"LAYR")
    _need(len(ly_b) >= rec.size, f"{lw}: LAYR too short")
    ly = rec.unpack(ly_b)
    n_in, n_out, kind, enc, lflags = ly["in"], ly["out"], ly["kind"], ly["encoding"], ly["flags"]
    _need(not rec.reserved_nonzero(ly), f"{lw}: LAYR: reserved field is not zero")
    _need(kind in (KINDS if version == 2 else (KIND_FC,)), f"{lw}: unsupported layer kind {kind}")
    _need(enc == ENC_RELATIVE, f"{lw}: unsupported encoding {enc}")
    _need(lflags & ~FLAG_REQUANT == 0, f"{lw}: unknown layer flags {lflags:#x}")
    _need(n_in >= 1 and n_out >= 1, f"{lw}: empty shape {n_out}x{n_in}")
    geom = _read_geometry(ly, version, n_in, lw)
    if version == 1:
        _need(n_in == in_shape[0], f"{lw}: takes {n_in} inputs but the previous stage gives "
                                   f"{in_shape[0]} (inconsistent shapes)")
    else:
        _need(geom.in_shape == in_shape,
              f"{lw}: takes an input map {geom.in_shape} but the previous stage gives "
              f"{in_shape} (inconsistent shapes)")
        _need(n_in == geom.columns, f"{lw}: LAYR: {n_in} columns, the geometry has "
                                    f"{geom.columns} (inconsistent shapes)")
    _need(n_in <= params.act_depth and n_out <= params.act_depth,
          f"{lw}: shape {n_out}x{n_in} exceeds act_depth={params.act_depth}")
    _need(len(ly_b) == rec.size + 4 * n_out,
          f"{lw}: LAYR has {len(ly_b)} bytes, expected {rec.size + 4 * n_out}")
    wscale = np.frombuffer(ly_b, dtype=_WSCALE, offset=rec.size)
    # checked in float32: casting a signalling NaN would print a numpy warning
    _need(bool(np.all(np.isfinite(wscale))) and _finite(ly["in_scale"], ly["out_scale"]),
          f"{lw}: LAYR: a scale is not finite")
    wscale = wscale.astype(np.float64)
    bias = r.section(b"BIAS")
    _need(len(bias) == 4 * n_out, f"{lw}: BIAS has {len(bias)} bytes, expected {4 * n_out}")
    rq_b = r.section(b"RQNT")
    _need(len(rq_b) == 4 * n_out, f"{lw}: RQNT has {len(rq_b)} bytes, expected {4 * n_out}")
    rq = np.frombuffer(rq_b, dtype=_RQNT)
    _need(bool(np.all(rq["S"] < 256)), f"{lw}: RQNT shift field out of range")
    if not lflags & FLAG_REQUANT:
        _need(not (rq["M"].any() or rq["S"].any()),
              f"{lw}: RQNT: multipliers and shifts of a layer without requantization must be "
              "zero")
    pt = r.section(b"PTRS")
    P = params.pes
    _need(len(pt) == 4 * P * (n_in + 1),
          f"{lw}: PTRS has {len(pt)} bytes, expected {4 * P * (n_in + 1)}")
    pt = np.frombuffer(pt, dtype=_PTR).reshape(P, n_in + 1)
    en = r.section(b"ENTR")
    counts = pt[:, -1].astype(np.int64)
    _need(len(en) == 2 * int(counts.sum()),
          f"{lw}: ENTR has {len(en)} bytes, the pointers say {2 * int(counts.sum())}")
    en = np.frombuffer(en, dtype=_ENTRY)
    offs = np.concatenate([[0], np.cumsum(counts)])
    entries = [en[offs[p]:offs[p + 1]].astype(np.uint16) for p in range(P)]
    ptrs = [pt[p].astype(np.uint32) for p in range(P)]
    nonzeros, sums = _decode_streams(ptrs, entries, n_out, n_in, params, lw)
    pm_ = r.section(b"PERM")
    _need(len(pm_) == 4 * n_out, f"{lw}: PERM has {len(pm_)} bytes, expected {4 * n_out}")
    perm = np.frombuffer(pm_, dtype=_PERM).astype(np.int64)
    _need(np.array_equal(np.sort(perm), np.arange(n_out)),
          f"{lw}: PERM is not a permutation of 0..{n_out - 1}")
    row_sums = np.empty(n_out, dtype=np.int64)
    row_sums[perm] = sums
    return _Parsed(n_in, n_out, geom, enc, bool(lflags & FLAG_REQUANT), float(ly["in_scale"]),
                   float(ly["out_scale"]), wscale,
                   np.frombuffer(bias, dtype=_BIAS).astype(np.int32),
                   rq, ptrs, entries, perm, row_sums, nonzeros)


def from_bytes(blob: bytes, where: str = "model file"):
    """Parse and validate a model file image (version 1 or 2); returns a
    :class:`~zeroskip.sw.pack.PackedModel`. Every problem raises :class:`FormatError`."""
    from .pack import PackedLayer, PackedModel, check_fits
    from .quant import QLayer

    _need(len(blob) >= HEADER.size, f"{where}: truncated header ({len(blob)} bytes)")
    h = HEADER.unpack(blob)
    _need(h["magic"] == MAGIC, f"{where}: bad magic {h['magic']!r} (not a zeroskip model file)")
    version = h["version"]
    _need(version in VERSIONS, f"{where}: unknown format version {version} "
                               f"(this zeroskip reads versions 1 and 2)")
    _need(zlib.crc32(blob[:12]) == h["crc"], f"{where}: header CRC mismatch")
    _need(h["flags"] == 0, f"{where}: unknown header flags {h['flags']:#x}")
    r = _Reader(blob, where)
    hw_b = r.section(b"HWPR")
    _need(len(hw_b) == HWPR.size, f"{where}: HWPR has {len(hw_b)} bytes, expected {HWPR.size}")
    hw = HWPR.unpack(hw_b)
    try:
        params = HwParams(**{n: v for n, v in hw.items() if not n.startswith("reserved")})
    except ParamError as e:
        raise FormatError(f"{where}: HWPR: hardware parameters the hardware cannot take: {e}") \
            from None
    _need(not HWPR.reserved_nonzero(hw), f"{where}: HWPR: reserved fields are not zero")
    rec = MODL[version]
    md_b = r.section(b"MODL")
    _need(len(md_b) == rec.size, f"{where}: MODL has {len(md_b)} bytes, expected {rec.size}")
    md = rec.unpack(md_b)
    n_layers = md["layers"]
    _need(not rec.reserved_nonzero(md), f"{where}: MODL: reserved field is not zero")
    _need(1 <= n_layers <= params.max_layers,
          f"{where}: MODL: {n_layers} layers (the hardware takes 1..{params.max_layers})")
    _need(h["sections"] == 2 + SECTIONS_PER_LAYER * n_layers,
          f"{where}: header says {h['sections']} sections, {n_layers} layers need "
          f"{2 + SECTIONS_PER_LAYER * n_layers}")
    _need(np.isfinite(md["input_scale"]) and md["input_scale"] > 0,
          f"{where}: MODL: bad input scale")
    if version == 1:
        in_shape = (md["in_features"], 1, 1)
    else:
        in_shape = (md["in_channels"], md["in_height"], md["in_width"])
    parsed: list[_Parsed] = []
    shape = in_shape
    for i in range(n_layers):
        lay = _parse_layer(r, version, params, f"{where}: layer {i}", shape)
        parsed.append(lay)
        shape = lay.geom.out_shape(lay.n_out)
    _need(r.pos == len(blob), f"{where}: {len(blob) - r.pos} trailing bytes after the last "
                              "section")

    def qlayer(lay: _Parsed, weight: np.ndarray) -> QLayer:
        g = None if _is_plain_fc(lay.geom) else lay.geom
        return QLayer(weight, lay.bias, lay.rq["M"].astype(np.uint16),
                      lay.rq["S"].astype(np.uint8), lay.requant, in_scale=lay.in_scale,
                      weight_scale=lay.wscale, out_scale=lay.out_scale, geometry=g)

    # the fit check on shapes and row sums, before any dense matrix is built
    shapes = [qlayer(lay, np.broadcast_to(np.int8(0), (lay.n_out, lay.n_in))) for lay in parsed]
    per_pe = [sum(len(lay.entries[p]) for lay in parsed) for p in range(params.pes)]
    try:
        check_fits(shapes, params, per_pe, abs_row_sums=[lay.abs_row_sums for lay in parsed])
    except FitError as e:
        raise FitError(f"{where}: {e}") from None
    layers = []
    in_perm = np.arange(in_shape[0])
    for lay in parsed:
        rows, cols, vals = lay.nonzeros
        w = np.zeros((lay.n_out, lay.n_in), dtype=np.int8)   # in the model's own order
        col_of = np.asarray(lay.geom.column_perm(in_perm), dtype=np.int64)
        w.reshape(-1)[lay.perm[rows] * lay.n_in + col_of[cols]] = vals
        lay.nonzeros = ()
        layers.append(PackedLayer(qlayer(lay, w), lay.ptrs, lay.entries, lay.enc,
                                  perm=lay.perm, in_perm=in_perm))
        in_perm = lay.perm
    return PackedModel(params, float(md["input_scale"]), layers, format_version=version)


# ----------------------------------------------------------------------------- files

def write_model(path: str | os.PathLike, pm, version: int | None = None) -> int:
    """Write atomically (temporary file in the same directory + rename); returns the size.

    Nothing is left behind on failure: the target keeps its old contents. A missing directory,
    a directory as target or an unwritable place raises :class:`FormatError` (one line).
    """
    blob = to_bytes(pm, version)
    write_atomic(path, blob)
    return len(blob)


def write_atomic(path: str | os.PathLike, blob: bytes) -> None:
    """Write ``blob`` to ``path`` atomically; OS problems raise :class:`FormatError`."""
    path = Path(path)
    if path.is_dir():
        raise FormatError(f"{path}: is a directory")
    folder = path.parent if str(path.parent) else Path(".")
    if not folder.is_dir():
        raise FormatError(f"{path}: directory {folder} does not exist")
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=folder)
    except OSError as e:
        raise FormatError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)  # mkstemp makes 0600; give the file the usual mode
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.exists(tmp):
            os.unlink(tmp)
        if isinstance(e, OSError):
            raise FormatError(f"{path}: cannot write ({e.strerror or e})") from None
        raise


def read_model(path: str | os.PathLike):
    try:
        blob = Path(path).read_bytes()
    except OSError as e:
        raise FormatError(f"{path}: cannot read ({e.strerror})") from None
    return from_bytes(blob, where=str(path))
