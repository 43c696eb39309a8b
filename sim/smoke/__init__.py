"""Toolchain smoke test: a tiny stream accumulator, its Python model and its cocotb testbench.

It proves the whole RTL flow (Amaranth -> Verilog -> Verilator -> cocotb) before anything real
depends on it. ``tests/test_smoke_toolchain.py`` runs it through
:func:`zeroskip.sim.runner.run_cocotb`.
"""

from .accumulator import StreamAccumulator, accumulate

__all__ = ["StreamAccumulator", "accumulate"]
