"""zeroskip: sparse neural networks from PyTorch to bit-exact FPGA accelerators.

The public API (documented in ``docs/guide.md``; defined in :mod:`zeroskip.api`, imported on
first use so that ``import zeroskip`` stays light)::

    quantize(model, calib, params=None, *, board=None)  -> QModel       integer layers
    pack(qmodel, params=None, *, board=None, dense=False) -> PackedModel per-PE streams
    save(pm, path) -> bytes written;  load(path) -> PackedModel          the .zsk file
    quantize_input(pm, x_float) -> uint8 codes
    reference(pm, x) -> outputs                                          bit-exact reference
    simulate(pm, x, ...) -> SimResult(outputs, counters)                 the Verilated RTL
    fits(pm) -> {board: None or why not};  board_params(board) -> HwParams;  BOARDS
    HwParams, ZeroskipError, FitError
    Board(port) -> a board behind the host link: a serial port or "sim:icebreaker" / "sim:ulx3s"
        .info(), .load(pm), .infer(x) -> outputs, .counters(), .reset(), .close()
    BoardError                                                           the board refused

Subpackages: :mod:`zeroskip.sw` (compression, quantization, packing, integer reference),
:mod:`zeroskip.hw` (Amaranth RTL), :mod:`zeroskip.sim` (cocotb/Verilator verification),
:mod:`zeroskip.boards` (board tops and bitstream builds).
"""

from __future__ import annotations

__version__ = "0.1.0"

# name -> module it lives in; resolved by __getattr__ on first use
_LAZY = {
    "BOARDS": "zeroskip.api",
    "SimResult": "zeroskip.api",
    "board_params": "zeroskip.api",
    "fits": "zeroskip.api",
    "load": "zeroskip.api",
    "pack": "zeroskip.api",
    "quantize": "zeroskip.api",
    "quantize_input": "zeroskip.api",
    "reference": "zeroskip.api",
    "save": "zeroskip.api",
    "simulate": "zeroskip.api",
    "HwParams": "zeroskip.spec",
    "ZeroskipError": "zeroskip.sw.errors",
    "FitError": "zeroskip.sw.errors",
    "Board": "zeroskip.host",
    "BoardError": "zeroskip.host",
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str):
    module = _LAZY.get(name)
    if module is None:
        raise AttributeError(f"module 'zeroskip' has no attribute {name!r}")
    import importlib
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_LAZY))
