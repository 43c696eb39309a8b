"""The hardware/software contract: every word that crosses the boundary, defined once.

This module owns :class:`HwParams` (the parameters of one accelerator instance) and the layout
of every word that software writes for the hardware or reads back from it, as
:mod:`amaranth.lib.data` layouts. The packer (:mod:`zeroskip.sw.pack`), the load image
(:mod:`zeroskip.sw.image`), the RTL (:mod:`zeroskip.hw`), the cycle model, the simulators, the
host link and the tests all take their bit positions from here; encoding goes through
``layout.const({...}).as_bits()`` and decoding through ``layout.from_bits(...)`` (or, for numpy
arrays, through the offsets and widths the layout reports), so a field's position is written
down exactly once. It imports Amaranth's data layouts only (never torch, never numpy).

Words (all LSB first; ``docs/hardware.md`` and ``docs/format.md`` print the same tables):

==========================  ==============================================================
:func:`entry_layout`        one relative-index entry: ``weight`` (int8 code), ``delta``
:data:`PTR_WORD`            a column-pointer load word: entry ``addr``, ``empty`` flag
:data:`RQ_WORD`             a requantization load word: ``mult``, ``shift``
:func:`desc_addr_layout`    the load address of a descriptor field: ``field``, ``layer``
:data:`DESC_FLAGS_WORD`     the descriptor's flags word: ``requant``
:data:`CFG_FLAGS_WORD`      the configuration flags register: ``skip_zero_acts``
:func:`load_layout`         one load command: ``data``, ``addr``, ``pe``, ``mem``
:data:`COUNTER_NAMES`       the accelerator's scalar counters (then the per-PE ones)
host link (protocol 2)      frame types :data:`T_INFO` ..., error codes :data:`ERRORS`, the
                            INFO payload, :func:`encode_frame`, :class:`FrameParser`, ...
==========================  ==============================================================
"""

from __future__ import annotations

import struct
import zlib
from collections.abc import Iterable
from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .sw.errors import ZeroskipError

__all__ = [
    # parameters
    "HwParams", "ParamError",
    # generic helpers
    "encode", "decode", "field_range", "pack_fields", "unpack_field",
    # entries
    "entry_layout", "encode_entry", "decode_entry",
    # load commands and the words they carry
    "load_layout", "MEM_CFG", "MEM_DESC", "MEM_PTR", "MEM_ENTRY", "MEM_BIAS", "MEM_RQ",
    "MEM_KINDS", "BIAS_WORD", "PTR_WORD", "PTR_EMPTY_BIT", "encode_ptr_word", "RQ_WORD",
    "encode_rq_word",
    "CFG_LAYERS", "CFG_FLAGS", "CFG_FLAGS_WORD", "FLAG_SKIP_ZERO_ACTS",
    "DESC_FIELD_BITS", "DESC_FIELDS", "DESC_IN", "DESC_OUT", "DESC_PTR_BASE", "DESC_ROW_BASE",
    "DESC_FLAGS", "DESC_FLAGS_WORD", "LDESC_REQUANT", "desc_addr_layout", "desc_addr",
    "DESC_CH", "DESC_G_LAST", "DESC_KW_LAST", "DESC_KH_LAST", "DESC_MAP_H", "DESC_MAP_W",
    "DESC_A_KX", "DESC_A_KY", "DESC_A_WX", "DESC_A_WY", "DESC_A_PX", "DESC_A_PY", "DESC_A_ORG",
    "DESC_C_STRIDE", "DESC_C_PSTRIDE", "DESC_C_ORG", "DESC_WIN_LAST", "DESC_PW_LAST",
    "DESC_PH_LAST", "DESC_G_OUT", "DESC_HW_LAST", "DESC_GEOMETRY",
    # counters
    "COUNTER_NAMES", "PE_COUNTER_NAMES", "LINK_PE_COUNTER_NAMES",
    # host link, protocol version 2
    "LINK_PROTOCOL_VERSION", "IMAGE_VERSION", "BITSTREAM_VERSION", "LINK_SYNC", "LINK_CRC_POLY",
    "LINK_HEADER_BYTES", "LINK_CRC_BYTES", "LINK_LOAD_BYTES", "LINK_WORD_BYTES",
    "LINK_COMMIT_BYTES", "T_INFO", "T_LOAD", "T_COMMIT", "T_INFER", "T_COUNTERS", "T_RESET",
    "LINK_COMMANDS", "RESPONSE", "T_ERROR", "E_BAD_CRC", "E_BAD_LENGTH", "E_UNKNOWN_TYPE",
    "E_NOT_LOADED", "E_BUSY", "E_CHECKSUM", "E_WATCHDOG", "E_BAD_MODEL", "E_TIMEOUT", "ERRORS",
    "BOARD_IDS", "LINK_INFO_FIELDS", "link_max_payload", "link_counter_words", "info_payload",
    "decode_info", "encode_frame", "encode_load", "encode_commit", "decode_words",
    "decode_counters", "FrameParser",
]


class ParamError(ZeroskipError, ValueError):
    """Hardware parameters (or a field value) out of their supported range."""


def _bits_for(n: int) -> int:
    """Bits needed to hold the values 0..n."""
    return max(1, int(n).bit_length())


@dataclass(frozen=True)
class HwParams:
    """Parameters of one accelerator instance.

    A model file records the parameters it was packed for; the RTL is generated from the same
    record; the packer refuses a model that does not fit them.

    Parameters
    ----------
    pes : number of processing elements; output row ``r`` of a layer belongs to PE ``r % pes``.
    index_bits : width of a relative-index delta (gaps above ``2**index_bits - 1`` need fillers).
    weight_bits : width of a weight code (8: int8).
    acc_width : accumulator width; the packer proves no layer overflows it.
    mult_bits : width of the unsigned requantization multiplier ``M``.
    shift_bits : width of the requantization shift ``S`` (1 <= S < 2**shift_bits).
    entry_depth : entries per PE (all layers together).
    ptr_depth : column pointers per PE (all layers together: sum of ``in_features + 1``).
    row_depth : output rows per PE (all layers together: sum of ``ceil(out_features / pes)``).
    act_depth : longest activation vector (input or output of any layer).
    max_layers : layers in one network.
    fifo_depth : depth of each PE's activation queue.
    fin_lanes : rows each PE finalizes per cycle (1, 2 or 4); its accumulators and its
        activation-buffer banks are split into that many banks, and it has that many
        requantizers. A property of the hardware only: model files do not depend on it.
    mem_out_logic : 1: a few memory outputs drive logic before their register: the pointer
        pair's difference is taken as it is registered (P2), and the accumulator read register
        (S4) already takes the write two entries ahead (one multiplexer level less in the
        accumulate stage). Right for the iCE40, whose block RAM outputs are quick for its
        clock; 0 (default) keeps every memory output straight into a register, as an ECP5
        block RAM needs at 100 MHz. Hardware only.
    conv : 1 (default): the scanner is the receptive-field address generator (convolutions,
        pooling, fully-connected layers on any map). 0: a plain vector scanner, without the
        geometry descriptors, the pixel walk and the pooled write-back, for small FPGAs; it runs
        only fully-connected layers on vectors (input map ``(C, 1, 1)``, no pooling), and the
        packer refuses any other layer for it. Hardware only.

    Raises
    ------
    ParamError
        If a field is not an integer or out of its range (the message names it).
    """
    pes: int = 8
    index_bits: int = 6
    weight_bits: int = 8
    acc_width: int = 32
    mult_bits: int = 16
    shift_bits: int = 6
    entry_depth: int = 32768
    ptr_depth: int = 2048
    row_depth: int = 512
    act_depth: int = 1024
    max_layers: int = 8
    fifo_depth: int = 16
    fin_lanes: int = 2
    mem_out_logic: int = 0
    conv: int = 1

    def __post_init__(self) -> None:
        def need(cond: bool, msg: str) -> None:
            if not cond:
                raise ParamError(msg)
        for f in fields(self):
            v = getattr(self, f.name)
            need(isinstance(v, int) and not isinstance(v, bool),
                 f"{f.name} must be an integer, not {v!r}")
        need(1 <= self.pes <= 64, f"pes must be in 1..64, not {self.pes}")
        need(1 <= self.index_bits <= 8, f"index_bits must be in 1..8, not {self.index_bits}")
        need(self.weight_bits == 8, f"weight_bits must be 8, not {self.weight_bits}")
        need(self.index_bits + self.weight_bits <= 16,
             "an entry (index_bits + weight_bits) must fit in 16 bits")
        need(18 <= self.acc_width <= 32, f"acc_width must be in 18..32, not {self.acc_width}")
        need(2 <= self.mult_bits <= 16, f"mult_bits must be in 2..16, not {self.mult_bits}")
        need(1 <= self.shift_bits <= 6, f"shift_bits must be in 1..6, not {self.shift_bits}")
        for name in ("entry_depth", "ptr_depth", "row_depth", "act_depth"):
            v = getattr(self, name)
            need(1 <= v <= 1 << 20, f"{name} must be in 1..{1 << 20}, not {v}")
        need(1 <= self.max_layers <= 255, f"max_layers must be in 1..255, not {self.max_layers}")
        need(1 <= self.fifo_depth <= 256, f"fifo_depth must be in 1..256, not {self.fifo_depth}")
        need(self.fin_lanes in (1, 2, 4), f"fin_lanes must be 1, 2 or 4, not {self.fin_lanes}")
        need(self.mem_out_logic in (0, 1),
             f"mem_out_logic must be 0 or 1, not {self.mem_out_logic}")
        need(self.conv in (0, 1), f"conv must be 0 or 1, not {self.conv}")

    # derived widths, used by the RTL
    @property
    def entry_bits(self) -> int:
        return self.index_bits + self.weight_bits

    @property
    def entry_addr_bits(self) -> int:
        return _bits_for(self.entry_depth)  # pointers go up to entry_depth inclusive

    @property
    def ptr_addr_bits(self) -> int:
        return _bits_for(self.ptr_depth - 1)

    @property
    def row_addr_bits(self) -> int:
        return _bits_for(self.row_depth - 1)

    @property
    def act_addr_bits(self) -> int:
        return _bits_for(self.act_depth)

    @property
    def layer_bits(self) -> int:
        """Bits of a layer index (0..max_layers-1)."""
        return _bits_for(self.max_layers - 1)

    @property
    def max_delta(self) -> int:
        return (1 << self.index_bits) - 1

    @property
    def max_shift(self) -> int:
        return (1 << self.shift_bits) - 1

    def as_dict(self) -> dict:
        return asdict(self)

    #: fields that describe only the hardware (a model packed for one value runs on any)
    HARDWARE_ONLY = ("fin_lanes", "mem_out_logic", "conv")

    def packs_like(self, other: HwParams) -> bool:
        """Whether a model packed for ``self`` can be loaded into hardware built with ``other``
        (every field equal except the :attr:`HARDWARE_ONLY` ones)."""
        hw = {name: getattr(other, name) for name in self.HARDWARE_ONLY}
        return replace(self, **hw) == other


# ---- generic helpers: every encode and decode goes through a layout


def encode(layout: data.Layout, **values: int) -> int:
    """The bits of one word: ``layout.const(values).as_bits()`` (missing fields are 0).

    Raises :class:`ParamError` if a value does not fit its field (Amaranth would truncate it).
    """
    for name, v in values.items():
        lo, hi = field_range(layout, name)
        if not lo <= int(v) <= hi:
            raise ParamError(f"{name} {v} does not fit its {layout[name].width}-bit field")
    return layout.const({k: int(v) for k, v in values.items()}).as_bits()


def decode(layout: data.Layout, bits: int) -> dict[str, int]:
    """The fields of one word, through ``layout.from_bits(bits)``."""
    if not 0 <= bits < 1 << layout.size:
        raise ParamError(f"{bits:#x} does not fit a {layout.size}-bit word")
    view = layout.from_bits(bits)
    return {name: int(view[name]) for name, _ in layout}


def field_range(layout: data.Layout, name: str) -> tuple[int, int]:
    """The smallest and largest value of field ``name``."""
    shape = layout[name].shape
    width = layout[name].width
    if shape.signed:
        return -(1 << (width - 1)), (1 << (width - 1)) - 1
    return 0, (1 << width) - 1


def pack_fields(layout: data.Layout, **values: Any) -> Any:
    """Like :func:`encode`, for whole numpy integer arrays (or plain ints) at once, with the
    offsets and widths the layout reports. Values are not range-checked (the caller has)."""
    out: Any = 0
    for name, v in values.items():
        f = layout[name]
        out = out | ((v & ((1 << f.width) - 1)) << f.offset)
    return out


def unpack_field(layout: data.Layout, bits: Any, name: str) -> Any:
    """Field ``name`` of ``bits`` (a numpy integer array or an int), sign-extended if the field
    is signed; the vector counterpart of :func:`decode`."""
    f = layout[name]
    v = (bits >> f.offset) & ((1 << f.width) - 1)
    if f.shape.signed:
        sign = 1 << (f.width - 1)
        v = (v ^ sign) - sign
    return v


# ---- relative-index entries


def entry_layout(params: HwParams) -> data.StructLayout:
    """Layout of one relative-index entry (``params.entry_bits`` wide, weight in the low bits):
    ``weight`` the two's complement int8 code, ``delta`` the zero rows the PE skips before it.
    """
    return data.StructLayout({
        "weight": signed(params.weight_bits),
        "delta": unsigned(params.index_bits),
    })


def encode_entry(params: HwParams, delta: int, weight: int) -> int:
    """The bits of one entry, as the RTL reads them (via :func:`entry_layout`)."""
    if not 0 <= delta <= params.max_delta:
        raise ParamError(f"delta {delta} does not fit {params.index_bits} bits")
    lo, hi = -(1 << (params.weight_bits - 1)), (1 << (params.weight_bits - 1)) - 1
    if not lo <= weight <= hi:
        raise ParamError(f"weight {weight} does not fit int{params.weight_bits}")
    return entry_layout(params).const({"weight": weight, "delta": delta}).as_bits()


def decode_entry(params: HwParams, bits: int) -> tuple[int, int]:
    """``(delta, weight)`` of an entry's bits (via :func:`entry_layout`)."""
    e = decode(entry_layout(params), bits)
    return e["delta"], e["weight"]


# ---- load commands: one write of a 32-bit ``data`` word into memory ``mem`` of PE ``pe``

MEM_CFG = 0     # global registers (pe ignored): addr CFG_LAYERS, CFG_FLAGS
MEM_DESC = 1    # layer descriptors (pe ignored): addr by desc_addr_layout
MEM_PTR = 2     # per-PE column pointers: PTR_WORD (absolute entry address, empty flag)
MEM_ENTRY = 3   # per-PE relative-index entries: entry_layout
MEM_BIAS = 4    # per-PE bias, one per local row (all layers stacked): BIAS_WORD
MEM_RQ = 5      # per-PE requantization, one per local row: RQ_WORD
MEM_KINDS = {"cfg": MEM_CFG, "desc": MEM_DESC, "ptr": MEM_PTR, "entry": MEM_ENTRY,
             "bias": MEM_BIAS, "rq": MEM_RQ}
_MEM_BITS = 3

#: A column-pointer word (``MEM_PTR``): the absolute entry address of the column's first
#: entry, and whether the column has no entries in this PE (the next pointer is the same).
PTR_WORD = data.StructLayout({"addr": unsigned(31), "empty": unsigned(1)})
PTR_EMPTY_BIT = PTR_WORD["empty"].offset

#: A bias word (``MEM_BIAS``): the int32 bias in the accumulator's scale (the RTL keeps the
#: low ``acc_width`` bits).
BIAS_WORD = data.StructLayout({"bias": signed(32)})

#: A requantization word (``MEM_RQ``): ``y = clamp((acc * mult + 2**(shift-1)) >> shift)``;
#: the RTL keeps the low ``mult_bits`` of ``mult`` and ``shift_bits`` of ``shift``.
RQ_WORD = data.StructLayout({"mult": unsigned(16), "shift": unsigned(16)})

CFG_LAYERS = 0  # MEM_CFG address: the number of layers
CFG_FLAGS = 1   # MEM_CFG address: CFG_FLAGS_WORD
#: The configuration flags register: skip zero activations (off: the dense baseline).
CFG_FLAGS_WORD = data.StructLayout({"skip_zero_acts": unsigned(1)})
FLAG_SKIP_ZERO_ACTS = CFG_FLAGS_WORD.const({"skip_zero_acts": 1}).as_bits()

DESC_FIELD_BITS = 5
DESC_FIELDS = 1 << DESC_FIELD_BITS   # descriptor words per layer (26 used)
# the layer's vector sizes, stream bases and flags
DESC_IN, DESC_OUT, DESC_PTR_BASE, DESC_ROW_BASE, DESC_FLAGS = range(5)
# the geometry (docs/hardware.md, "Layer descriptors"), every product computed by the load
# image (sw/image.py:geometry_fields) so that the address generator only adds; signed values
# are two's complement words, addresses modulo the bank size
(DESC_CH, DESC_G_LAST, DESC_KW_LAST, DESC_KH_LAST, DESC_MAP_H, DESC_MAP_W,
 DESC_A_KX, DESC_A_KY, DESC_A_WX, DESC_A_WY, DESC_A_PX, DESC_A_PY, DESC_A_ORG,
 DESC_C_STRIDE, DESC_C_PSTRIDE, DESC_C_ORG, DESC_WIN_LAST, DESC_PW_LAST, DESC_PH_LAST,
 DESC_G_OUT, DESC_HW_LAST) = range(5, 26)
#: the geometry fields by name (``hw/scanner.py:geometry_layout`` uses the same names)
DESC_GEOMETRY = {"ch": DESC_CH, "g_last": DESC_G_LAST, "kw_last": DESC_KW_LAST,
                 "kh_last": DESC_KH_LAST, "map_h": DESC_MAP_H, "map_w": DESC_MAP_W,
                 "a_kx": DESC_A_KX, "a_ky": DESC_A_KY, "a_wx": DESC_A_WX, "a_wy": DESC_A_WY,
                 "a_px": DESC_A_PX, "a_py": DESC_A_PY, "a_org": DESC_A_ORG,
                 "c_stride": DESC_C_STRIDE, "c_pstride": DESC_C_PSTRIDE, "c_org": DESC_C_ORG,
                 "win_last": DESC_WIN_LAST, "pw_last": DESC_PW_LAST, "ph_last": DESC_PH_LAST,
                 "g_out": DESC_G_OUT}
#: The descriptor's flags word (``DESC_FLAGS``): requantize the layer's outputs to uint8.
DESC_FLAGS_WORD = data.StructLayout({"requant": unsigned(1)})
LDESC_REQUANT = DESC_FLAGS_WORD.const({"requant": 1}).as_bits()


def desc_addr_layout(params: HwParams) -> data.StructLayout:
    """The ``addr`` of a ``MEM_DESC`` load command: the field in the low bits, then the layer
    (so layer ``l``'s field ``f`` is at ``l * DESC_FIELDS + f``)."""
    return data.StructLayout({"field": unsigned(DESC_FIELD_BITS),
                              "layer": unsigned(params.layer_bits)})


def desc_addr(params: HwParams, layer: int, field: int) -> int:
    """The load address of descriptor ``field`` of ``layer``."""
    if not 0 <= layer < params.max_layers:
        raise ParamError(f"layer {layer} is outside 0..{params.max_layers - 1}")
    return encode(desc_addr_layout(params), field=field, layer=layer)


def encode_ptr_word(addr: int, empty: bool) -> int:
    """A ``MEM_PTR`` data word."""
    return encode(PTR_WORD, addr=addr, empty=int(empty))


def encode_rq_word(mult: int, shift: int) -> int:
    """A ``MEM_RQ`` data word."""
    return encode(RQ_WORD, mult=mult, shift=shift)


def load_layout(params: HwParams) -> data.StructLayout:
    """Layout of one load command (the ``load`` stream of the accelerator)."""
    addr_bits = max(params.entry_addr_bits, params.ptr_addr_bits, params.row_addr_bits,
                    _bits_for(params.max_layers * DESC_FIELDS), 2)
    return data.StructLayout({
        "data": unsigned(32),
        "addr": unsigned(addr_bits),
        "pe": unsigned(max(1, (params.pes - 1).bit_length())),
        "mem": unsigned(_MEM_BITS),
    })


# ---- counters

#: The accelerator's scalar counters (ports of these names), in the order every reader lists
#: them (the host link sends them in this order).
COUNTER_NAMES = ("cycles", "useful_macs", "entries", "skipped_acts")
#: The accelerator's per-PE counters (``Out(counter_width).array(pes)`` ports).
PE_COUNTER_NAMES = ("pe_busy", "pe_stall")
#: The per-PE counters the host link's COUNTERS response sends after :data:`COUNTER_NAMES`.
LINK_PE_COUNTER_NAMES = ("pe_busy",)


# ---- host link, protocol version 2 (hw/link.py; docs/boards.md is the full specification)
#
# Every frame, both ways:  LINK_SYNC  type  seq  len_lo len_hi  payload  crc0..crc3
# ``crc`` is zlib's CRC-32 (reflected polynomial LINK_CRC_POLY, initial value and final XOR
# 0xFFFFFFFF) of ``type, seq, len_lo, len_hi, payload``, least significant byte first. The board
# answers every command with one frame of the same ``seq``: ``type | RESPONSE`` (with a payload
# for INFO, COUNTERS and INFER) or ``T_ERROR`` (payload: the error code, the command's type).

#: The link protocol this module describes (INFO reports the board's).
LINK_PROTOCOL_VERSION = 2
#: The load image's layout (:func:`load_layout`, the descriptor fields above) a board decodes:
#: 2 since the layer descriptors carry the convolution geometry (``DESC_FIELD_BITS = 5``).
IMAGE_VERSION = 2
#: Bumped when a board top changes in a way a host can see (INFO reports it).
BITSTREAM_VERSION = 1
LINK_SYNC = 0xA5
LINK_CRC_POLY = 0xEDB88320
LINK_HEADER_BYTES = 5          # sync, type, seq, len_lo, len_hi
LINK_CRC_BYTES = 4
LINK_LOAD_BYTES = 8            # one load word in a LOAD payload, little-endian
LINK_WORD_BYTES = 4            # results and counters: little-endian words of this many bytes
LINK_COMMIT_BYTES = 8          # COMMIT payload: CRC-32 of the load words, watchdog bound (u32)
#: The command types (host to board).
T_INFO, T_LOAD, T_COMMIT, T_INFER, T_COUNTERS, T_RESET = 1, 2, 3, 4, 5, 6
LINK_COMMANDS = {T_INFO: "INFO", T_LOAD: "LOAD", T_COMMIT: "COMMIT", T_INFER: "INFER",
                 T_COUNTERS: "COUNTERS", T_RESET: "RESET"}
#: A successful response's type is the command's type | RESPONSE.
RESPONSE = 0x80
T_ERROR = 0xFF
#: The error codes of a ``T_ERROR`` frame.
E_BAD_CRC, E_BAD_LENGTH, E_UNKNOWN_TYPE, E_NOT_LOADED = 1, 2, 3, 4
E_BUSY, E_CHECKSUM, E_WATCHDOG, E_BAD_MODEL, E_TIMEOUT = 5, 6, 7, 8, 9
ERRORS = {
    E_BAD_CRC: "bad CRC",
    E_BAD_LENGTH: "bad length",
    E_UNKNOWN_TYPE: "unknown type",
    E_NOT_LOADED: "no verified model loaded",
    E_BUSY: "busy (both input buffers full)",
    E_CHECKSUM: "model checksum mismatch",
    E_WATCHDOG: "watchdog: the run exceeded the model's cycle bound",
    E_BAD_MODEL: "the loaded descriptors are out of range",
    E_TIMEOUT: "frame incomplete (the line went quiet in the middle of it)",
}
#: INFO's board identifier.
BOARD_IDS = {0: "generic", 1: "icebreaker", 2: "ulx3s"}
#: The INFO payload's head (then ``n_params`` little-endian u32, the :class:`HwParams` fields
#: in declaration order).
LINK_INFO_FIELDS = ("protocol", "image_version", "board_id", "bitstream_version",
                    "counter_width", "n_params", "max_payload", "clk_hz", "uart_divisor")
_INFO_HEAD = struct.Struct("<BBBBBBHII")


def link_max_payload(params: HwParams) -> int:
    """Largest payload a board takes (one input buffer): ``act_depth`` bytes, at least 64."""
    return max(params.act_depth, 64)


def link_counter_words(pes: int) -> int:
    """Words of a COUNTERS response: :data:`COUNTER_NAMES`, then
    :data:`LINK_PE_COUNTER_NAMES` per PE."""
    return len(COUNTER_NAMES) + len(LINK_PE_COUNTER_NAMES) * pes


def info_payload(params: HwParams, *, board_id: int, counter_width: int, clk_hz: int,
                 divisor: int) -> bytes:
    """The INFO response's payload."""
    values = [getattr(params, f.name) for f in fields(HwParams)]
    head = _INFO_HEAD.pack(LINK_PROTOCOL_VERSION, IMAGE_VERSION, board_id, BITSTREAM_VERSION,
                           counter_width, len(values), link_max_payload(params), int(clk_hz),
                           divisor)
    return head + struct.pack(f"<{len(values)}I", *values)


def decode_info(payload: bytes) -> dict[str, Any]:
    """The fields of an INFO payload (:data:`LINK_INFO_FIELDS` but ``n_params``, ``board``
    the name, ``params`` a :class:`HwParams`); ``ValueError`` if it is malformed."""
    if len(payload) < _INFO_HEAD.size:
        raise ValueError(f"INFO payload of {len(payload)} bytes is too short")
    head = dict(zip(LINK_INFO_FIELDS, _INFO_HEAD.unpack_from(payload)))
    n = head.pop("n_params")
    names = [f.name for f in fields(HwParams)]
    if len(payload) != _INFO_HEAD.size + 4 * n or n != len(names):
        raise ValueError(f"INFO payload has {n} parameter fields, this host knows {len(names)}")
    values = struct.unpack_from(f"<{n}I", payload, _INFO_HEAD.size)
    try:
        params = HwParams(**dict(zip(names, values)))
    except ParamError as exc:
        raise ValueError(f"INFO parameters are out of range ({exc})") from None
    return {**head, "board": BOARD_IDS.get(head["board_id"], f"unknown({head['board_id']})"),
            "params": params}


def encode_frame(typ: int, seq: int, payload: bytes = b"") -> bytes:
    """One frame: sync, type, seq, length, payload, CRC-32 (LE)."""
    if not 0 <= typ <= 255 or not 0 <= seq <= 255:
        raise ValueError(f"type {typ} and seq {seq} must be bytes")
    if len(payload) > 0xFFFF:
        raise ValueError(f"payload of {len(payload)} bytes does not fit the 16-bit length")
    body = bytes([typ, seq]) + len(payload).to_bytes(2, "little") + bytes(payload)
    return bytes([LINK_SYNC]) + body + zlib.crc32(body).to_bytes(LINK_CRC_BYTES, "little")


def encode_load(words: Iterable[int]) -> bytes:
    """A LOAD payload (or several, concatenated): ``load`` words (e.g. from
    :func:`zeroskip.sw.image.encode_commands`), :data:`LINK_LOAD_BYTES` each, little-endian."""
    out = bytearray()
    for w in words:
        w = int(w)
        if not 0 <= w < 1 << (8 * LINK_LOAD_BYTES):
            raise ValueError(f"load word {w:#x} does not fit {LINK_LOAD_BYTES} bytes")
        out += w.to_bytes(LINK_LOAD_BYTES, "little")
    return bytes(out)


def encode_commit(model_crc: int, bound: int) -> bytes:
    """A COMMIT payload: the CRC-32 of every LOAD payload byte since the last RESET or COMMIT,
    and the watchdog bound (cycles)."""
    return struct.pack("<II", model_crc, bound)


def decode_words(data: bytes, signed: bool = True) -> list[int]:
    """Little-endian words of :data:`LINK_WORD_BYTES` (results signed, counters unsigned)."""
    n = LINK_WORD_BYTES
    if len(data) % n:
        raise ValueError(f"{len(data)} bytes is not a whole number of {n}-byte words")
    return [int.from_bytes(data[k:k + n], "little", signed=signed)
            for k in range(0, len(data), n)]


def decode_counters(data: bytes, pes: int) -> dict[str, Any]:
    """A COUNTERS payload: ``{"cycles", "useful_macs", "entries", "skipped_acts",
    "pe_busy": [...]}``."""
    words = decode_words(data, signed=False)
    if len(words) != link_counter_words(pes):
        raise ValueError(f"expected {link_counter_words(pes)} counter words, got {len(words)}")
    out: dict[str, Any] = dict(zip(COUNTER_NAMES, words))
    k = len(COUNTER_NAMES)
    for name in LINK_PE_COUNTER_NAMES:
        out[name] = words[k:k + pes]
        k += pes
    return out


class FrameParser:
    """Host-side frame receiver: :meth:`feed` bytes, get ``(type, seq, payload)`` tuples.

    Bytes before a sync byte are skipped; a frame with a bad CRC (or a length above
    ``max_len``) is dropped and counted in ``bad_frames``; after it the parser hunts again from
    the byte after that frame's sync byte, so a false sync inside garbage costs nothing.

    ``lengths``, if given, maps each frame type the receiver expects to its payload length
    (``None``: any length up to ``max_len``). A header of another type or length is a false
    sync: it is dropped at once (counted in ``false_syncs``) instead of making the parser wait
    for a payload that garbage announced, which would hold up the real frames behind it.
    """

    def __init__(self, max_len: int = 0xFFFF,
                 lengths: dict[int, int | None] | None = None):
        self.buf = bytearray()
        self.max_len = max_len
        self.lengths = lengths
        self.bad_frames = 0
        self.false_syncs = 0
        self.skipped = 0

    def feed(self, data: bytes) -> list[tuple[int, int, bytes]]:
        self.buf += data
        out: list[tuple[int, int, bytes]] = []
        while True:
            k = self.buf.find(LINK_SYNC)
            if k < 0:
                self.skipped += len(self.buf)
                self.buf.clear()
                return out
            if k:
                self.skipped += k
                del self.buf[:k]
            if len(self.buf) < LINK_HEADER_BYTES:
                return out
            n = int.from_bytes(self.buf[3:5], "little")
            if n > self.max_len:
                self.bad_frames += 1
                del self.buf[:1]
                continue
            if self.lengths is not None:
                want = self.lengths.get(self.buf[1], -1)
                if want == -1 or (want is not None and want != n):
                    self.false_syncs += 1
                    del self.buf[:1]
                    continue
            end = LINK_HEADER_BYTES + n + LINK_CRC_BYTES
            if len(self.buf) < end:
                return out
            body = bytes(self.buf[1:LINK_HEADER_BYTES + n])
            crc = int.from_bytes(self.buf[LINK_HEADER_BYTES + n:end], "little")
            if zlib.crc32(body) != crc:
                self.bad_frames += 1
                del self.buf[:1]
                continue
            out.append((body[0], body[1], body[4:]))
            del self.buf[:end]
