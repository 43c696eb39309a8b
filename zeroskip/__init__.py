"""zeroskip: sparse neural networks from PyTorch to bit-exact FPGA accelerators.

Subpackages: :mod:`zeroskip.sw` (compression, quantization, packing, integer reference),
:mod:`zeroskip.hw` (Amaranth RTL), :mod:`zeroskip.sim` (cocotb/Verilator verification),
:mod:`zeroskip.boards` (board tops and bitstream builds).
"""

__version__ = "0.1.0"

