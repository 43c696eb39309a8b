"""``zeroskip demo``: the whole flow on real data, ending on the Verilated RTL.

1. train an MLP (64-256-128-10) on scikit-learn's 8x8 digits;
2. prune it to ``sparsity`` in three magnitude-pruning steps with fine-tuning (Han et al. 2015);
3. quantize (int8 weights, uint8 activations, integer requantization) and pack it;
4. run every test image through the integer reference and through the Verilated RTL, checking
   that every output of every image is bit-exact;
5. run the same hardware on the same model packed dense, with activation skipping off, and
   report the measured speedup.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import numpy as np
import torch

__all__ = ["run_demo"]


def _say(msg: str) -> None:
    print(msg, flush=True)


def run_demo(images: int | None = None, sparsity: float = 0.9, pes: int = 8, seed: int = 0,
             quick: bool = False, out_dir: str | Path = "build/demo") -> int:
    from zeroskip.sim.verilated import Case, run_cases
    from zeroskip.spec import HwParams
    from zeroskip.sw import data, models, prune, train
    from zeroskip.sw.errors import ZeroskipError
    from zeroskip.sw.pack import pack_model, write_model
    from zeroskip.sw.quant import quantize_mlp
    from zeroskip.sw.ref import run_model

    if not 0.0 <= sparsity < 1.0:
        raise ZeroskipError(f"--sparsity must be in [0, 1), not {sparsity}")
    t0 = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ds = data.load_digits()
    n_test = len(ds.y_test) if images is None else max(1, min(images, len(ds.y_test)))
    epochs = 8 if quick else 40
    _say(f"[1/5] training a 64-256-128-10 MLP on digits ({len(ds.y_train)} train, "
         f"{len(ds.y_test)} test images)")
    model = models.digits_mlp(hidden=(256, 128))
    train.train(model, ds.x_train, ds.y_train, epochs=epochs, lr=2e-3, seed=seed, progress=True,
                desc="  training")
    acc_float = train.evaluate(model, ds.x_test, ds.y_test)

    _say(f"[2/5] pruning to {sparsity:.0%} sparsity in 3 steps with fine-tuning")
    masks = None
    for step in range(1, 4):
        target = 1 - (1 - sparsity) ** (step / 3)
        masks = prune.magnitude_prune(model, target, scope="layer", masks=masks)
        train.train(model, ds.x_train, ds.y_train, epochs=max(2, epochs // 2), lr=1e-3,
                    masks=masks, seed=seed + step, progress=True,
                    desc=f"  fine-tune {target:.0%}")
    prune.remove_masks(model)        # plain layers with zeros for the quantizer
    acc_pruned = train.evaluate(model, ds.x_test, ds.y_test)
    sp = prune.sparsity(model)

    _say("[3/5] quantizing and packing")
    params = HwParams(pes=pes)
    qm = quantize_mlp(model, ds.x_train, params)
    pm = pack_model(qm, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    size = write_model(out_dir / "digits.zsk", pm)
    x = qm.quantize_input(ds.x_test[:n_test])
    y = ds.y_test[:n_test].numpy()
    ref_out = run_model(pm, x).numpy()
    acc_ref = float((ref_out.argmax(1) == y).mean())

    _say(f"[4/5] running {n_test} test images on the Verilated RTL ({pes} PEs; the first run "
         "compiles the simulator, about a minute)")
    n_dense = min(n_test, 16)
    dense = pack_model(qm, params, dense=True)
    t1 = time.time()
    sparse_res, dense_res = run_cases(params, [
        Case(pm, x, ref_out, name="sparse"),
        Case(dense, x[:n_dense], ref_out[:n_dense], skip_zero_acts=False, name="dense"),
    ], seed=seed)
    t_sim = time.time() - t1
    bit_exact = bool(np.array_equal(sparse_res.outputs, ref_out)
                     and np.array_equal(dense_res.outputs, ref_out[:n_dense]))
    acc_rtl = float((sparse_res.outputs.argmax(1) == y).mean())
    cyc = np.array([c["cycles"] for c in sparse_res.counters], dtype=np.float64)
    dcyc = np.array([c["cycles"] for c in dense_res.counters], dtype=np.float64)
    useful = np.array([c["useful_macs"] for c in sparse_res.counters], dtype=np.float64)
    dense_macs = sum(q.in_features * q.out_features for q in qm.layers)
    speedup = float(dcyc.mean() / cyc[:n_dense].mean())
    ideal = float(dense_macs / useful[:n_dense].mean())
    util = float(useful.sum() / (pes * cyc.sum()))

    _say("[5/5] results")
    sub = "" if n_test == len(ds.y_test) else f" ({n_test} images)"
    rows = [
        ("accuracy, float (dense)", f"{acc_float:.2%}"),
        (f"accuracy, float (pruned {sp:.1%})", f"{acc_pruned:.2%}"),
        (f"accuracy, integer reference{sub}", f"{acc_ref:.2%}"),
        (f"accuracy, RTL{sub}", f"{acc_rtl:.2%}"),
        ("RTL bit-exact vs reference", f"{'yes' if bit_exact else 'NO'} "
                                       f"({n_test} + {n_dense} dense images, every output)"),
        ("weights kept", f"{sum(pl.nonzeros for pl in pm.layers)} of {dense_macs} "
                         f"({1 - sp:.1%})"),
        ("model file", f"{out_dir / 'digits.zsk'} ({size} bytes)"),
        ("cycles / image, sparse", f"{cyc.mean():.1f} (activation and weight skipping)"),
        ("cycles / image, dense", f"{dcyc.mean():.1f} (same hardware, dense packing, no "
                                  "skipping)"),
        ("speedup, measured", f"{speedup:.2f}x (ideal {ideal:.2f}x = dense MACs / useful MACs)"),
        ("PE utilization", f"{util:.2f} (useful MACs / (PEs x cycles))"),
        ("time", f"{time.time() - t0:.0f} s total, {t_sim:.0f} s in RTL simulation"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        _say(f"  {k:<{width}}  {v}")
    if not bit_exact:
        print("zeroskip: error: the RTL differs from the integer reference", file=sys.stderr)
        return 1
    return 0
