"""End-to-end toolchain smoke test: Amaranth -> Verilog -> Verilator -> cocotb, via pytest."""

from __future__ import annotations

import gc
import warnings

import pytest
from amaranth.hdl import UnusedElaboratable

from zeroskip.sim.runner import SimulationFailed, run_cocotb
from zeroskip.sim.smoke import StreamAccumulator, accumulate

TB = "zeroskip.sim.smoke.tb_accumulator"


def test_model():
    assert accumulate([1, 2, 255], 8) == [1, 3, 2]


def test_component_rejects_bad_widths():
    # The half-made components are never elaborated: silence Amaranth's unused warning.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UnusedElaboratable)
        with pytest.raises(TypeError, match="Input width must be a positive integer"):
            StreamAccumulator(width=0)
        with pytest.raises(TypeError, match="Accumulator width"):
            StreamAccumulator(width=8, acc_width=4)
        gc.collect()


@pytest.mark.sim
@pytest.mark.parametrize("width,acc_width", [(8, 16), (5, 7)])
def test_accumulator_rtl(width, acc_width, sim_seed):
    params = {"width": width, "acc_width": acc_width}
    run_cocotb(
        lambda: StreamAccumulator(**params),
        "smoke_accumulator",
        TB,
        name="smoke_accumulator",
        params=params,
        seed=sim_seed,
    )


@pytest.mark.sim
def test_runner_reports_failures(tmp_path, sim_seed):
    """A wrong design fails with the seed and the waveform path in the message."""
    broken = """
module smoke_accumulator(input clk, input rst,
    input i__valid, output i__ready, input [7:0] i__payload,
    output reg o__valid, input o__ready, output reg [15:0] o__payload);
  assign i__ready = 1'b1;
  always @(posedge clk) begin
    o__valid <= i__valid;
    o__payload <= {8'd0, i__payload};
  end
endmodule
"""
    with pytest.raises(SimulationFailed, match=r"ZEROSKIP_SEED=\d+.*waves: .*waves\.(fst|vcd)"):
        run_cocotb(
            broken,
            "smoke_accumulator",
            TB,
            name="smoke_broken",
            seed=sim_seed,
            testcase="wraps_around",
        )
