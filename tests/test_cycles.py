"""The software cycle model against the RTL's own cycle counter (Amaranth simulator)."""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zeroskip.hw.accel import Accelerator
from zeroskip.sim.cases import random_inputs, random_model
from zeroskip.sim.pysim import run_pysim
from zeroskip.spec import HwParams
from zeroskip.sw.cycles import dense_macs, predict, useful_macs
from zeroskip.sw.pack import from_bytes, pack_model, to_bytes
from zeroskip.sw.ref import run_model


@pytest.mark.parametrize("pes", [1, 3, 8])
@pytest.mark.parametrize("sizes,wd,ad", [([90, 40], 0.1, 1.0), ([64, 48, 10], 0.3, 0.4),
                                         ([40, 30], 1.0, 1.0), ([70, 20, 5], 0.05, 0.2)])
def test_cycle_model_matches_rtl(pes, sizes, wd, ad):
    rng = np.random.default_rng(pes * 100 + len(sizes))
    params = HwParams(pes=pes, entry_depth=4096, ptr_depth=256, row_depth=128, act_depth=128)
    pm = pack_model(random_model(rng, sizes, wd), params)
    x = random_inputs(rng, 2, sizes[0], ad)
    res = run_pysim(pm, x)
    for vec, c in zip(x, res.counters):
        layers = predict(pm, vec)
        pred = sum(lc.cycles for lc in layers)
        assert pred == c["cycles"], (pred, c["cycles"])     # the model is cycle-exact here
        assert sum(lc.useful_macs for lc in layers) == c["useful_macs"] == useful_macs(pm, vec)
        assert sum(lc.entries for lc in layers) == c["entries"]
    assert dense_macs(pm) == sum(a * b for a, b in zip(sizes[:-1], sizes[1:]))


def test_cycle_model_small_random_cases():
    """Many tiny one- and two-layer cases (all-zero inputs, empty columns, rows that end in a
    partial group of lanes, fewer rows than PEs): the model equals the RTL's counter."""
    for seed in range(40):
        rng = np.random.default_rng(1000 + seed)
        pes = int(rng.choice([1, 2, 3, 5]))
        params = HwParams(pes=pes, act_depth=64, row_depth=64, entry_depth=2048, ptr_depth=256,
                          fin_lanes=int(rng.choice([1, 2, 4])),
                          fifo_depth=int(rng.choice([1, 2, 4])),
                          mem_out_logic=int(rng.integers(0, 2)))
        sizes = [int(rng.integers(1, 14)) for _ in range(int(rng.integers(2, 4)))]
        pm = pack_model(random_model(rng, sizes, float(rng.choice([0.05, 0.2, 0.5, 1.0]))),
                        params)
        x = random_inputs(rng, 2, sizes[0], float(rng.choice([0.0, 0.2, 0.5, 1.0])))
        res = run_pysim(pm, x)
        np.testing.assert_array_equal(res.outputs, run_model(pm, x).numpy())
        for vec, c in zip(x, res.counters):
            pred = sum(lc.cycles for lc in predict(pm, vec))
            assert pred == c["cycles"], (seed, pred, c["cycles"])


def test_cycle_model_for_a_model_file_on_other_hardware():
    """A model file does not record the hardware-only parameters: read back, it predicts for
    the hardware it is given (here one finalization lane and mem_out_logic, as on the
    iCEBreaker), equal to that hardware's counter; and it refuses hardware it cannot run on."""
    rng = np.random.default_rng(5)
    hw = HwParams(pes=3, entry_depth=2048, ptr_depth=256, row_depth=64, act_depth=64,
                  fin_lanes=1, mem_out_logic=1)
    pm = from_bytes(to_bytes(pack_model(random_model(rng, [40, 30, 7], 0.3), hw)))
    assert pm.params != hw and pm.params.packs_like(hw)
    x = random_inputs(rng, 2, 40, 0.5)
    res = run_pysim(pm, x, dut=Accelerator(hw))
    np.testing.assert_array_equal(res.outputs, run_model(pm, x).numpy())
    for vec, c in zip(x, res.counters):
        assert sum(lc.cycles for lc in predict(pm, vec, hw=hw)) == c["cycles"]
    # the default (the file's parameters: two lanes) is a different machine
    assert sum(lc.cycles for lc in predict(pm, x[0])) != res.counters[0]["cycles"]
    with pytest.raises(ValueError, match="packed for"):
        predict(pm, x[0], hw=replace(hw, pes=4))


def test_cycle_model_conv_layers_and_cnns():
    """Tiny random conv layers and CNNs (kernels 1..5, strides 1..2, padding, pooling, also
    overlapping windows; 1, 2, 3 and 5 PEs, every fin_lanes, fifo_depth and mem_out_logic):
    the outputs equal the reference and the model equals the RTL's counter, cycle for cycle,
    as do the useful MACs and entries."""
    from zeroskip.sim.conv_cases import conv_inputs, random_cnn
    for seed in range(10):
        rng = np.random.default_rng(2000 + seed)
        params = HwParams(pes=int(rng.choice([1, 2, 3, 5])), act_depth=1024, row_depth=64,
                          entry_depth=1 << 14, ptr_depth=1024,
                          fin_lanes=int(rng.choice([1, 2, 4])),
                          fifo_depth=int(rng.choice([1, 2, 4, 16])),
                          mem_out_logic=int(rng.integers(0, 2)))
        shape = (int(rng.integers(1, 9)), int(rng.integers(1, 8)), int(rng.integers(1, 8)))
        convs = int(rng.integers(1, 3))
        qm = random_cnn(rng, shape, convs, [int(rng.integers(1, 10)) for _ in range(convs)],
                        [float(rng.choice([1.0, 0.5, 0.2])) for _ in range(convs + 1)],
                        fc=[int(rng.integers(1, 6))])
        pm = pack_model(qm, params)
        x = conv_inputs(rng, 2, shape, float(rng.choice([1.0, 0.5, 0.1, 0.0])))
        res = run_pysim(pm, x)
        np.testing.assert_array_equal(res.outputs, run_model(pm, x).numpy())
        for vec, c in zip(x, res.counters):
            layers = predict(pm, vec)
            assert sum(lc.cycles for lc in layers) == c["cycles"], seed
            assert sum(lc.useful_macs for lc in layers) == c["useful_macs"] == \
                useful_macs(pm, vec), seed
            assert sum(lc.entries for lc in layers) == c["entries"], seed


def test_vector_scanner_runs_fc_models_and_refuses_cnns():
    """Hardware without the convolution scanner (``conv=0``, the iCEBreaker's): random FC
    stacks are bit-exact and the model equals its cycle counter; a CNN is refused, with one
    line naming the layer, by the packer, the cycle model and the simulation driver."""
    from zeroskip.sim.conv_cases import conv_inputs, random_cnn
    from zeroskip.sim.verilated import Case, _job
    from zeroskip.sw.pack import FitError
    for seed in range(8):
        rng = np.random.default_rng(3000 + seed)
        params = HwParams(pes=int(rng.choice([1, 2, 3])), act_depth=64, row_depth=64,
                          entry_depth=2048, ptr_depth=256, fin_lanes=int(rng.choice([1, 2])),
                          fifo_depth=int(rng.choice([1, 2, 4])),
                          mem_out_logic=int(rng.integers(0, 2)), conv=0)
        sizes = [int(rng.integers(1, 40)) for _ in range(int(rng.integers(2, 4)))]
        pm = pack_model(random_model(rng, sizes, float(rng.choice([0.1, 0.5, 1.0]))), params)
        x = random_inputs(rng, 2, sizes[0], float(rng.choice([0.0, 0.3, 1.0])))
        res = run_pysim(pm, x, dut=Accelerator(params))
        np.testing.assert_array_equal(res.outputs, run_model(pm, x).numpy())
        for vec, c in zip(x, res.counters):
            assert sum(lc.cycles for lc in predict(pm, vec, hw=params)) == c["cycles"], seed
    rng = np.random.default_rng(7)
    params = replace(params, act_depth=256)
    qm = random_cnn(rng, (2, 5, 5), 1, [3], [1.0, 1.0], fc=[4])
    with pytest.raises(FitError, match=r"^layer 0 is a convolution \(kernel \d+x\d+\), but "
                       r"this hardware has no convolution scanner \(conv=0"):
        pack_model(qm, params)
    pm = pack_model(qm, replace(params, conv=1))
    x = conv_inputs(rng, 1, (2, 5, 5), 1.0)
    with pytest.raises(ValueError, match="no convolution scanner"):
        predict(pm, x[0], hw=params)
    with pytest.raises(ValueError, match="no convolution scanner"):
        _job([Case(pm, x, run_model(pm, x).numpy())], params, Path("unused.json"))
