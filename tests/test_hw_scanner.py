"""The activation scanner, seen through the accelerator's counters (Amaranth simulator): it
broadcasts exactly the nonzero activations of every layer (all of them with skipping off), in
rows of ``pes`` that cost ``max(1, nonzeros)`` cycles, under random stalls. The scanner component
alone, cycle by cycle against a Python model, is in ``test_hw_scanner_unit.py``."""

from __future__ import annotations

import numpy as np
import pytest

from zeroskip.sim.cases import random_inputs, random_model
from zeroskip.sim.pysim import run_pysim
from zeroskip.spec import HwParams
from zeroskip.sw.cycles import predict
from zeroskip.sw.pack import pack_model
from zeroskip.sw.ref import run_model

pytestmark = pytest.mark.sim


@pytest.mark.parametrize("pes,skip", [(1, True), (4, True), (5, False), (8, True)])
def test_scanner_emits_exactly_the_nonzero_activations(pes, skip):
    rng = np.random.default_rng(pes)
    params = HwParams(pes=pes, entry_depth=4096, ptr_depth=256, row_depth=128, act_depth=128)
    pm = pack_model(random_model(rng, [77, 41, 9], [0.4, 0.6]), params)
    # inputs with long zero runs, a full row of zeros, and no zeros at all
    x = random_inputs(rng, 3, 77, 0.3)
    x[0, 8:40] = 0
    x[2] = rng.integers(1, 256, 77)
    res = run_pysim(pm, x, skip_zero_acts=skip, idle=0.3, backpressure=0.4, seed=pes)
    for vec, c, out in zip(x, res.counters, res.outputs):
        acts = [vec] + [a.numpy()[0] for a in run_model(pm, vec[None], return_all=True)[:-1]]
        zeros = sum(int((a == 0).sum()) for a in acts)
        assert c["skipped_acts"] == (zeros if skip else 0)
        # every broadcast column's entries are issued, and no other column's
        want = 0
        for pl, a in zip(pm.layers, acts):
            a_hw = a[pl.in_perm]
            cols = np.flatnonzero(a_hw) if skip else np.arange(a_hw.size)
            want += sum(int((np.diff(p.astype(np.int64)))[cols].sum()) for p in pl.ptrs)
        assert c["entries"] == want
        pred = sum(lc.cycles for lc in predict(pm, vec, skip_zero_acts=skip))
        assert pred == c["cycles"]       # the cycle model is exact
        np.testing.assert_array_equal(out, run_model(pm, vec[None]).numpy()[0])
