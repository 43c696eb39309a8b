"""The accelerator RTL against the integer reference: cocotb + Verilator (``pytest -m sim``).

Every case compares every output element with :func:`zeroskip.sw.ref.run_model`; random idle
cycles on the inputs and random back-pressure on the results. Two array configurations (1 PE and
8 PEs); random layers up to 300x784 with weight densities 1.0 .. 0.02 and activation densities
1.0 .. 0.05; corner cases; the golden model files.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from zeroskip.sim.cases import edge_models, random_inputs, random_model
from zeroskip.spec import HwParams
from zeroskip.sw.pack import pack_model, read_model
from zeroskip.sw.ref import run_model

pytestmark = pytest.mark.sim

CONFIGS = {
    "1pe": HwParams(pes=1, index_bits=4, entry_depth=1 << 18, ptr_depth=2048, row_depth=1024,
                    act_depth=1024, max_layers=4, fifo_depth=2, fin_lanes=1, mem_out_logic=1),
    "8pe": HwParams(),      # 2 finalization lanes, every memory output into a register
}
STRESS = [(0.0, 0.0), (0.3, 0.5)]
GOLDEN = Path(__file__).parent / "golden"


@pytest.fixture
def seed(sim_seed):
    return sim_seed         # the cases are drawn from the simulation's seed


def _case(name, qm, params, x, idle, bp, dense=False, skip=True):
    from zeroskip.sim.verilated import Case
    pm = pack_model(qm, params, dense=dense)
    return Case(pm, x, run_model(pm, x).numpy(), idle=idle, backpressure=bp,
                skip_zero_acts=skip, name=name)


def _run(params, cases, seed, name):
    from zeroskip.sim.verilated import run_cases
    results = run_cases(params, cases, seed=seed, name=name)
    for case, res in zip(cases, results):
        # the testbench already failed on any mismatch; check again on this side
        np.testing.assert_array_equal(res.outputs, case.expected, err_msg=case.name)
        for c in res.counters:
            assert c["useful_macs"] <= c["entries"]
            assert max(c["pe_busy"]) <= c["cycles"]
    return results


@pytest.mark.parametrize("config", CONFIGS)
@pytest.mark.parametrize("idle,bp", STRESS)
def test_random_networks(config, idle, bp, seed):
    """Random stacks of 1-4 layers, shapes 1..96, every density mix, under stalls."""
    params = CONFIGS[config]
    rng = np.random.default_rng(seed)
    cases = []
    for k in range(12):
        depth = int(rng.integers(1, params.max_layers + 1))
        sizes = [int(rng.integers(1, 97)) for _ in range(depth + 1)]
        wd = [float(rng.choice([1.0, 0.5, 0.25, 0.1, 0.05, 0.02])) for _ in range(depth)]
        ad = float(rng.choice([1.0, 0.5, 0.2, 0.05]))
        qm = random_model(rng, sizes, wd, last_requant=bool(rng.random() < 0.3))
        x = random_inputs(rng, 2, sizes[0], ad)
        cases.append(_case(f"random {k} {sizes} w{wd} a{ad}", qm, params, x, idle, bp,
                           skip=bool(rng.random() < 0.85)))
    for name, qm, x in edge_models(rng):
        cases.append(_case(name, qm, params, x, idle, bp))
    _run(params, cases, seed, "accel")


@pytest.mark.parametrize("config", CONFIGS)
def test_large_layers(config, seed):
    """300x784 and 100x300 layers at weight densities 1.0 .. 0.02, activation 1.0 .. 0.05."""
    params = CONFIGS[config]
    rng = np.random.default_rng(seed + 1)
    cases = []
    if config == "8pe":
        grid = [(1.0, 0.05), (0.1, 1.0), (0.1, 0.5), (0.02, 0.05), (0.5, 0.2)]
    else:  # one PE does every MAC itself: fewer, sparser cases
        grid = [(0.1, 0.5), (0.02, 1.0), (0.05, 0.05)]
    for wd, ad in grid:
        qm = random_model(rng, [784, 300], wd, last_requant=True)
        cases.append(_case(f"784->300 w{wd} a{ad}", qm, params,
                           random_inputs(rng, 1, 784, ad), 0.2, 0.3))
    qm = random_model(rng, [784, 300, 100, 10], [0.1, 0.1, 0.5])
    cases.append(_case("784-300-100-10 w0.1", qm, params, random_inputs(rng, 2, 784, 0.3),
                       0.1, 0.2))
    _run(params, cases, seed, "accel")


def test_dense_baseline_mode(seed):
    """The dense packing with activation skipping off computes the same outputs."""
    params = CONFIGS["8pe"]
    rng = np.random.default_rng(seed + 2)
    qm = random_model(rng, [64, 40, 10], 0.3)
    x = random_inputs(rng, 3, 64, 0.4)
    sparse = _case("sparse", qm, params, x, 0.0, 0.0)
    dense = _case("dense", qm, params, x, 0.0, 0.0, dense=True, skip=False)
    rs, rd = _run(params, [sparse, dense], seed, "accel")
    for vec, cs, cd in zip(x, rs.counters, rd.counters):
        assert cd["skipped_acts"] == 0
        assert cd["entries"] == sum(q.in_features * q.out_features for q in qm.layers)
        # zeros of the input, plus those of the hidden activations
        assert cs["skipped_acts"] >= int((vec == 0).sum())
        assert cs["entries"] == cs["useful_macs"]  # no fillers at these sizes
        assert cs["cycles"] < cd["cycles"]


def _golden_params():
    """Every golden file (fully-connected and convolutional)."""
    return [f.stem for f in sorted(GOLDEN.glob("*.zsk"))]


@pytest.mark.parametrize("name", _golden_params())
def test_golden_files_on_rtl(name, seed):
    """Every checked-in golden model runs bit-exact on RTL built for its own parameters."""
    from zeroskip.sim.verilated import Case
    f = GOLDEN / f"{name}.zsk"
    pm = read_model(f)
    x = np.load(f.with_suffix(".inputs.npy"))
    exp = np.load(f.with_suffix(".expected.npy"))
    _run(pm.params, [Case(pm, x, exp, idle=0.2, backpressure=0.3, name=f.name)], seed, "accel")


def test_golden_files_exist():
    assert len(list(GOLDEN.glob("*.zsk"))) >= 4, f"golden files missing in {GOLDEN}"


# ---------------------------------------------------------------- convolutional networks

CONV_CONFIGS = {
    "1pe": CONFIGS["1pe"],
    "8pe": CONFIGS["8pe"],
    # an odd PE count, four finalization lanes, one-entry queues
    "5pe": HwParams(pes=5, entry_depth=1 << 14, ptr_depth=2048, row_depth=256, act_depth=2048,
                    max_layers=4, fifo_depth=1, fin_lanes=4),
}


def _random_cnn_case(rng, params, name, idle, bp, max_map=12, max_c=24, n_in=2):
    """A random CNN that fits ``params`` (1-2 conv layers then 1-2 FC layers), with inputs of
    a random density (all-zero maps and channels included)."""
    from zeroskip.sim.conv_cases import conv_inputs, random_cnn
    from zeroskip.sw.errors import FitError
    for _ in range(50):
        shape = (int(rng.integers(1, max_c + 1)), int(rng.integers(1, max_map + 1)),
                 int(rng.integers(1, max_map + 1)))
        convs = int(rng.integers(1, 3))
        chans = [int(rng.integers(1, max_c + 1)) for _ in range(convs)]
        dens = [float(rng.choice([1.0, 0.5, 0.25, 0.1, 0.05])) for _ in range(convs + 2)]
        fc = [int(rng.integers(1, 40)) for _ in range(int(rng.integers(1, 3)))]
        extreme = bool(rng.random() < 0.15)
        qm = random_cnn(rng, shape, convs, chans, dens, fc=fc, extreme=extreme,
                        last_requant=bool(rng.random() < 0.3),
                        zero_in_channels=int(rng.integers(0, 2)))
        try:
            pm = pack_model(qm, params)
        except FitError:
            continue
        ad = float(rng.choice([1.0, 0.5, 0.2, 0.05, 0.0]))
        x = conv_inputs(rng, n_in, shape, ad, extreme=extreme,
                        zero_channels=int(rng.integers(0, 2)))
        from zeroskip.sim.verilated import Case
        geo = " ".join(f"{q.geom.in_shape}k{q.geom.kernel}s{q.geom.stride}p{q.geom.padding}"
                       f"pool{q.geom.pool}" for q in qm.layers)
        return Case(pm, x, run_model(pm, x).numpy(), idle=idle, backpressure=bp,
                    skip_zero_acts=bool(rng.random() < 0.85), name=f"{name} {geo} a{ad}")
    raise AssertionError("no random CNN fits")


@pytest.mark.parametrize("config", CONV_CONFIGS)
def test_random_cnns(config, seed):
    """A few broad random CNNs (kernels 1..5, strides 1..2, padding, pooling 2..3, channel
    counts that are not multiples of the PEs, weight densities 1.0..0.05, activation
    densities 1.0..0, all-zero channels, extreme codes) under idle cycles and back-pressure:
    every output element equals the reference."""
    params = CONV_CONFIGS[config]
    rng = np.random.default_rng(seed + 10)
    cases = [_random_cnn_case(rng, params, f"cnn {k}", *STRESS[k % 2]) for k in range(4)]
    _run(params, cases, seed, "accel")


@pytest.mark.slow
@pytest.mark.parametrize("config", CONV_CONFIGS)
def test_random_cnns_slow(config, seed):
    """More and larger random CNNs (maps up to 28x28, up to 64 channels)."""
    params = replace(CONV_CONFIGS[config], act_depth=8192, ptr_depth=4096, row_depth=512,
                     entry_depth=1 << 16)
    rng = np.random.default_rng(seed + 20)
    cases = [_random_cnn_case(rng, params, f"cnn {k}", *STRESS[k % 2], max_map=28, max_c=64,
                              n_in=1) for k in range(12)]
    _run(params, cases, seed, "accel")


def _lenet5(rng, density):
    """LeNet-5 (Caffe): conv 20 5x5, pool 2; conv 50 5x5, pool 2; FC 500; FC 10."""
    from zeroskip.sim.conv_cases import conv_layer
    from zeroskip.sw.geometry import Geometry
    from zeroskip.sw.quant import QModel
    g1 = Geometry("conv", (1, 28, 28), (5, 5), pool=(2, 2))
    g2 = Geometry("conv", (20, 12, 12), (5, 5), pool=(2, 2))
    g3 = Geometry.fc(800, in_shape=(50, 4, 4))
    g4 = Geometry.fc(500)
    return QModel([conv_layer(rng, 20, g1, max(density, 0.3)),
                   conv_layer(rng, 50, g2, density), conv_layer(rng, 500, g3, density),
                   conv_layer(rng, 10, g4, max(density, 0.2), requant=False)], 1.0)


LENET_PARAMS = HwParams(entry_depth=1 << 16, ptr_depth=2048, row_depth=256, act_depth=8192,
                        max_layers=4)


@pytest.mark.slow
def test_lenet5_shaped(seed):
    """A LeNet-5-shaped network at weight density 0.1 on 8 PEs, random images."""
    from zeroskip.sim.conv_cases import conv_inputs
    from zeroskip.sim.verilated import Case
    rng = np.random.default_rng(seed + 30)
    pm = pack_model(_lenet5(rng, 0.1), LENET_PARAMS)
    x = conv_inputs(rng, 2, (1, 28, 28), 0.3)
    _run(LENET_PARAMS, [Case(pm, x, run_model(pm, x).numpy(), idle=0.1, backpressure=0.2,
                             name="lenet5")], seed, "accel")
