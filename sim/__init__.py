"""zeroskip's simulation half: the RTL run under Verilator (cocotb) or Amaranth's simulator.

    verilated  run packed models on the Verilated accelerator (:func:`~.verilated.run_cases`):
               one compiled simulator per hardware configuration, cached and reused
    runner     build and run any cocotb testbench under Verilator (:func:`~.runner.run_cocotb`),
               the build cache (``$ZEROSKIP_SIM_BUILD`` or the user cache directory)
    pysim      the accelerator in Amaranth's own simulator (small cases, unit tests)
    cases      random and edge-case layers for verification and benchmarks
    streams    cocotb drivers for ``amaranth.lib.stream`` ports
    bench      ``nox -s bench``: cycle benchmarks on the Verilated RTL

``accel_tb`` (the accelerator's cocotb testbench) and ``smoke`` run inside the simulator, not
here. ``zeroskip.simulate`` (``docs/guide.md``) is the short way to the Verilated RTL.
Submodules are imported on demand: ``import zeroskip.sim`` alone imports none of them.
"""

__all__ = ["bench", "cases", "pysim", "runner", "streams", "verilated"]
