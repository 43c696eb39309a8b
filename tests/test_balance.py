"""Row balancing: the packer's permutation evens out nonzeros per PE, round-trips through the
file, and the reference / hardware-order helpers stay consistent."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from zeroskip.sim.cases import random_inputs, random_model
from zeroskip.sw.pack import balance_rows, from_bytes, local_rows, pack_model, to_bytes
from zeroskip.sw.params import HwParams
from zeroskip.sw.ref import run_model


@settings(max_examples=60, deadline=None)
@given(st.integers(1, 40), st.integers(1, 9), st.floats(0.0, 1.0), st.integers(0, 2**31))
def test_balance_rows_is_a_balanced_permutation(rows, pes, density, seed):
    rng = np.random.default_rng(seed)
    w = np.where(rng.random((rows, 13)) < density, 1, 0)
    perm = balance_rows(w, pes)
    assert sorted(perm) == list(range(rows))
    loads = [int(np.count_nonzero(w[perm[p::pes]])) for p in range(pes)]
    counts = [len(perm[p::pes]) for p in range(pes)]
    assert counts == [local_rows(rows, pes, p) for p in range(pes)]
    # greedy LPT with equal slot counts: the spread is at most one row's worth
    full = [loads[p] for p in range(pes) if counts[p] == max(counts)]
    assert max(full) - min(full) <= int(np.count_nonzero(w, axis=1).max(initial=0))


def test_balanced_model_round_trips_and_spreads_work():
    rng = np.random.default_rng(5)
    p = HwParams(pes=8)
    qm = random_model(rng, [120, 100, 30], [0.1, 0.3])
    # make the rows very uneven: row r keeps about r % 10 / 10 of its weights
    for q in qm.layers:
        keep = rng.random(q.weight.shape) < (np.arange(q.out_features)[:, None] % 10) / 10
        q.weight = np.where(keep, q.weight, 0).astype(np.int8)
    bal, plain = pack_model(qm, p), pack_model(qm, p, balance=False)
    for b, u in zip(bal.layers, plain.layers):
        wb = [len(e) for e in b.entries]
        wu = [len(e) for e in u.entries]
        assert max(wb) - min(wb) <= max(wu) - min(wu)
    back = from_bytes(to_bytes(bal))
    for a, b in zip(bal.layers, back.layers):
        np.testing.assert_array_equal(a.q.weight, b.q.weight)
        np.testing.assert_array_equal(a.perm, b.perm)
        np.testing.assert_array_equal(a.hw_weight(), b.hw_weight())
    # the hardware-order view of the outputs inverts exactly
    x = random_inputs(rng, 3, 120, 0.5)
    out = run_model(back, x).numpy()
    np.testing.assert_array_equal(back.from_hw_order(back.to_hw_order(out)), out)
    np.testing.assert_array_equal(run_model(plain, x).numpy(), out)
