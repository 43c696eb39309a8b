"""The accelerator RTL against the integer reference: cocotb + Verilator (``pytest -m sim``).

Every case compares every output element with :func:`zeroskip.sw.ref.run_model`; random idle
cycles on the inputs and random back-pressure on the results. Two array configurations (1 PE and
8 PEs); random layers up to 300x784 with weight densities 1.0 .. 0.02 and activation densities
1.0 .. 0.05; corner cases; the golden model files.
"""

from __future__ import annotations

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
    """Every golden file; those with convolution layers are expected to fail until the PE array
    runs convolutions (issue 10, hardware): remove the mark when it does."""
    out = []
    for f in sorted(GOLDEN.glob("*.zsk")):
        conv = any(pl.q.geom.kind == "conv" for pl in read_model(f).layers)
        marks = [pytest.mark.xfail(reason="the RTL runs fully-connected layers only (conv: "
                                          "issue 10, hardware)", run=False)] if conv else []
        out.append(pytest.param(f.stem, marks=marks))
    return out


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
