"""Hardware parameters and stream layouts: the one place both the packer and the RTL read.

:class:`HwParams` describes an accelerator instance (how many PEs, field widths, memory depths).
A model file records the parameters it was packed for; the RTL is generated from the same
record; the packer refuses a model that does not fit them.

Entry layout (one relative-index entry, ``index_bits + weight_bits`` wide, LSB first)::

    bits [0, weight_bits)                      weight: two's complement int8 code
    bits [weight_bits, weight_bits+index_bits) delta: zero rows skipped before this entry
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace

from amaranth.hdl import signed, unsigned
from amaranth.lib import data

from .errors import ZeroskipError

__all__ = ["HwParams", "ParamError", "entry_layout", "encode_entry", "decode_entry",
           "load_layout", "MEM_CFG", "MEM_DESC", "MEM_PTR", "PTR_EMPTY_BIT", "MEM_ENTRY",
           "MEM_BIAS", "MEM_RQ",
           "CFG_LAYERS", "CFG_FLAGS", "FLAG_SKIP_ZERO_ACTS", "DESC_IN", "DESC_OUT",
           "DESC_PTR_BASE", "DESC_ROW_BASE", "DESC_FLAGS", "DESC_FIELDS", "LDESC_REQUANT"]

# Load commands: one write of 32-bit ``data`` into memory ``mem`` of PE ``pe`` at ``addr``.
MEM_CFG = 0     # global registers (pe ignored): addr CFG_LAYERS, CFG_FLAGS
MEM_DESC = 1    # layer descriptors (pe ignored): addr = layer * DESC_FIELDS + field
MEM_PTR = 2     # per-PE column pointers (absolute entry addresses; bit PTR_EMPTY_BIT: the
#                 column has no entries in this PE, i.e. the next pointer is the same)
PTR_EMPTY_BIT = 31
MEM_ENTRY = 3   # per-PE relative-index entries
MEM_BIAS = 4    # per-PE bias, one per local row (all layers stacked)
MEM_RQ = 5      # per-PE requantization: data = mult | shift << 16

CFG_LAYERS = 0
CFG_FLAGS = 1
FLAG_SKIP_ZERO_ACTS = 1

DESC_FIELDS = 8
DESC_IN, DESC_OUT, DESC_PTR_BASE, DESC_ROW_BASE, DESC_FLAGS = range(5)
LDESC_REQUANT = 1


class ParamError(ZeroskipError, ValueError):
    """Hardware parameters out of their supported range."""


def _bits_for(n: int) -> int:
    """Bits needed to hold the values 0..n."""
    return max(1, int(n).bit_length())


@dataclass(frozen=True)
class HwParams:
    """Parameters of one accelerator instance.

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

    def __post_init__(self):
        def need(cond, msg):
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
    def max_delta(self) -> int:
        return (1 << self.index_bits) - 1

    @property
    def max_shift(self) -> int:
        return (1 << self.shift_bits) - 1

    def as_dict(self) -> dict:
        return asdict(self)

    #: fields that describe only the hardware (a model packed for one value runs on any)
    HARDWARE_ONLY = ("fin_lanes", "mem_out_logic")

    def packs_like(self, other: HwParams) -> bool:
        """Whether a model packed for ``self`` can be loaded into hardware built with ``other``
        (every field equal except the :attr:`HARDWARE_ONLY` ones)."""
        hw = {name: getattr(other, name) for name in self.HARDWARE_ONLY}
        return replace(self, **hw) == other


def entry_layout(params: HwParams) -> data.StructLayout:
    """Layout of one relative-index entry (weight in the low bits)."""
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
    return (delta << params.weight_bits) | (weight & ((1 << params.weight_bits) - 1))


def decode_entry(params: HwParams, bits: int) -> tuple[int, int]:
    """``(delta, weight)`` of an entry's bits."""
    w = bits & ((1 << params.weight_bits) - 1)
    if w >> (params.weight_bits - 1):
        w -= 1 << params.weight_bits
    return (bits >> params.weight_bits) & params.max_delta, w


def load_layout(params: HwParams) -> data.StructLayout:
    """Layout of one load command (the ``load`` stream of the accelerator)."""
    addr_bits = max(params.entry_addr_bits, params.ptr_addr_bits, params.row_addr_bits,
                    _bits_for(params.max_layers * DESC_FIELDS), 2)
    return data.StructLayout({
        "data": unsigned(32),
        "addr": unsigned(addr_bits),
        "pe": unsigned(max(1, (params.pes - 1).bit_length())),
        "mem": unsigned(3),
    })
