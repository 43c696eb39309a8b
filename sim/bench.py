"""``nox -s bench`` / ``python -m zeroskip.sim.bench``: cycle benchmarks on the Verilated RTL.

For a 784->300 and a 300->100 layer (random int8 weights, requantized ReLU output), weight
densities {1.0, 0.5, 0.25, 0.1, 0.05} x activation densities {1.0, 0.5}, on the 8-PE array:

* ``cycles``: the sparse packing with activation skipping, mean over the input vectors;
* ``dense_cycles``: the same hardware fed the same layer packed dense (every weight an entry)
  with activation skipping off, on the same inputs, in the same run;
* ``useful_macs`` (from the RTL's counter), ``utilization = useful_macs / (pes * cycles)``,
  ``speedup = dense_cycles / cycles``, ``ideal_speedup = dense MACs / useful MACs``;
* ``predicted_cycles`` from the software cycle model (:mod:`zeroskip.sw.cycles`), with its
  breakdown: ``max_pe_entries``/``mean_pe_entries`` (entries of the busiest / the mean PE) and
  ``finalize_cycles``;
* ``bit_exact``: every output of every run equals the integer reference.

Writes ``build/bench/fc.json`` (and prints a table).

Then LeNet-5's conv layers (conv1: 1x28x28 -> 20, 5x5, max pool 2; conv2: 20x12x12 -> 50,
5x5, max pool 2) at weight densities {1.0, 0.5, 0.25, 0.1}, random int8 weights, on real
activations: conv1 on Fashion-MNIST test images (scikit-learn's digits, upscaled to 28x28, when
Fashion-MNIST is not installed), conv2 on what a random dense conv1 makes of them. The output
layer must give a 1x1 map, so each bench model is the conv layer and a 10-output FC head
(weight density 0.1); the conv layer's own figures come from the run's counters minus the
head's cycles and MACs from the cycle model (exact: the model equals the counter, and the
head's MACs are counted exactly). Writes ``build/bench/conv.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

import numpy as np

from ..spec import HwParams
from ..sw.cycles import predict
from ..sw.pack import pack_model
from ..sw.ref import run_model
from .cases import random_inputs, random_model
from .verilated import Case, run_cases

LAYERS = [(784, 300), (300, 100)]
WEIGHT_DENSITIES = [1.0, 0.5, 0.25, 0.1, 0.05]
ACT_DENSITIES = [1.0, 0.5]


def run_bench(params: HwParams, inputs: int = 4, seed: int = 1,
              layers=LAYERS, weight_densities=WEIGHT_DENSITIES,
              act_densities=ACT_DENSITIES) -> list[dict]:
    rng = np.random.default_rng(seed)
    cases, meta = [], []
    for cols, rows in layers:
        for wd in weight_densities:
            qm = random_model(rng, [cols, rows], wd, last_requant=True)
            sparse = pack_model(qm, params)
            dense = pack_model(qm, params, dense=True)
            for ad in act_densities:
                x = random_inputs(rng, inputs, cols, ad)
                exp = run_model(sparse, x).numpy()
                cases.append(Case(sparse, x, exp, name=f"{rows}x{cols} w{wd} a{ad} sparse"))
                cases.append(Case(dense, x, exp, skip_zero_acts=False,
                                  name=f"{rows}x{cols} w{wd} a{ad} dense"))
                meta.append((rows, cols, wd, ad, sparse, x, exp))
    t0 = time.time()
    print(f"running {len(cases)} cases ({inputs} inputs each) on the Verilated {params.pes}-PE "
          "array...", file=sys.stderr, flush=True)
    results = run_cases(params, cases, seed=seed, name="accel-bench")
    print(f"  done in {time.time() - t0:.0f} s", file=sys.stderr)
    records = []
    for i, (rows, cols, wd, ad, pm, x, exp) in enumerate(meta):
        rs, rd = results[2 * i], results[2 * i + 1]
        cyc = float(np.mean([c["cycles"] for c in rs.counters]))
        dcyc = float(np.mean([c["cycles"] for c in rd.counters]))
        useful = float(np.mean([c["useful_macs"] for c in rs.counters]))
        lcs = [predict(pm, v)[0] for v in x]      # one layer per bench model
        pred = float(np.mean([lc.cycles for lc in lcs]))
        records.append({
            "pes": params.pes, "rows": rows, "cols": cols,
            "weight_density": wd, "act_density": ad,
            "measured_weight_density": float(np.count_nonzero(pm.layers[0].q.weight)
                                             / (rows * cols)),
            "measured_act_density": float(np.count_nonzero(x) / x.size),
            "cycles": cyc, "dense_cycles": dcyc, "useful_macs": useful,
            "utilization": useful / (params.pes * cyc),
            "speedup": dcyc / cyc,
            "ideal_speedup": rows * cols / useful if useful else float("inf"),
            "predicted_cycles": pred,
            # where the cycles go (cycle model): the busiest PE's entries, the mean PE's, and
            # the finalization tail (rows per PE + pipeline)
            "max_pe_entries": float(np.mean([max(lc.pe_work) for lc in lcs])),
            "mean_pe_entries": float(np.mean([np.mean(lc.pe_work) for lc in lcs])),
            "finalize_cycles": float(np.mean([lc.finalize for lc in lcs])),
            "bit_exact": bool(np.array_equal(rs.outputs, exp) and np.array_equal(rd.outputs, exp)),
            "inputs": len(x),
        })
    return records


def _real_images(n: int) -> tuple[np.ndarray, str]:
    """``n`` uint8 28x28 images: Fashion-MNIST's test set, or scikit-learn's digits upscaled."""
    import torch

    from ..sw.data import DatasetError, load_digits, load_fashion_mnist
    try:
        ds = load_fashion_mnist()
        x, name = ds.x_test[:n], "fashion-mnist"
    except DatasetError:
        ds = load_digits()
        x = torch.nn.functional.interpolate(ds.x_test[:n], size=(28, 28), mode="nearest")
        name = "digits (upscaled to 28x28)"
    return np.rint(x.numpy().reshape(n, -1) * 255).astype(np.int64), name


CONV_DENSITIES = [1.0, 0.5, 0.25, 0.1]
#: the demo's LeNet-5 parameters (one compiled simulator for both)
CONV_PARAMS = {"entry_depth": 1 << 16, "ptr_depth": 4096, "row_depth": 256, "act_depth": 8192,
               "max_layers": 8}


def run_conv_bench(params: HwParams, inputs: int = 2, seed: int = 1,
                   weight_densities=CONV_DENSITIES, network=None) -> list[dict]:
    """LeNet-5's conv layers at the given weight densities (random int8 weights). With
    ``network`` (a :class:`~zeroskip.sw.quant.QModel` of a trained LeNet-5, see
    :func:`lenet5_for_bench`) conv1 runs on Fashion-MNIST images quantized with its input
    scale and conv2 on what its own conv1 makes of them; without, conv2 on a random dense
    conv1's outputs."""
    from ..sw.cycles import dense_macs, useful_macs_layer
    from ..sw.geometry import Geometry
    from ..sw.quant import QModel
    from ..sw.ref import run_layer
    from .conv_cases import conv_layer
    rng = np.random.default_rng(seed)
    imgs, source = _real_images(inputs)
    g1 = Geometry("conv", (1, 28, 28), (5, 5), pool=(2, 2))
    g2 = Geometry("conv", (20, 12, 12), (5, 5), pool=(2, 2))
    conv1_dense = conv_layer(rng, 20, g1, 1.0)
    if network is not None and network.layers[0].geom.out_shape(
            network.layers[0].out_features) == g2.in_shape:
        from ..sw.data import load_fashion_mnist
        imgs = network.quantize_input(load_fashion_mnist().x_test[:inputs]).astype(np.int64)
        acts2 = run_layer(network.layers[0], imgs).numpy()
        source = "fashion-mnist; conv2 on the trained conv1's outputs"
    else:
        acts2 = run_layer(conv1_dense, imgs).numpy()
        source += "; conv2 on a random dense conv1's outputs"
    cases, meta = [], []
    for name, g, out_c, x in (("conv1", g1, 20, imgs), ("conv2", g2, 50, acts2)):
        for wd in weight_densities:
            conv = conv_layer(rng, out_c, g, wd)
            head = conv_layer(rng, 10, Geometry.fc(conv.out_size, in_shape=g.out_shape(out_c)),
                              0.1, requant=False)
            qm = QModel([conv, head], 1.0)
            sparse = pack_model(qm, params)
            dense = pack_model(qm, params, dense=True)
            exp = run_model(sparse, x).numpy()
            cases.append(Case(sparse, x, exp, name=f"{name} w{wd} sparse"))
            cases.append(Case(dense, x, exp, skip_zero_acts=False, name=f"{name} w{wd} dense"))
            meta.append((name, g, out_c, wd, sparse, dense, x, exp))
    t0 = time.time()
    print(f"running {len(cases)} conv cases ({inputs} images each, {source}) on the Verilated "
          f"{params.pes}-PE array...", file=sys.stderr, flush=True)
    results = run_cases(params, cases, seed=seed, name="accel")
    print(f"  done in {time.time() - t0:.0f} s", file=sys.stderr)
    records = []
    for i, (name, g, out_c, wd, pm, dm, x, exp) in enumerate(meta):
        rs, rd = results[2 * i], results[2 * i + 1]
        lcs = [predict(pm, v) for v in x]
        dls = [predict(dm, v, skip_zero_acts=False) for v in x]
        # the head's share (cycle model, exact) taken off the run's counters
        cyc = float(np.mean([c["cycles"] - lc[1].cycles for c, lc in zip(rs.counters, lcs)]))
        dcyc = float(np.mean([c["cycles"] - dl[1].cycles for c, dl in zip(rd.counters, dls)]))
        useful = float(np.mean([c["useful_macs"] - lc[1].useful_macs
                                for c, lc in zip(rs.counters, lcs)]))
        conv_q = pm.layers[0].q
        dmacs = dense_macs(pm) - pm.layers[1].q.in_features * 10
        assert all(useful_macs_layer(conv_q, v) == lc[0].useful_macs for v, lc in zip(x, lcs))
        records.append({
            "layer": name, "pes": params.pes, "in_shape": list(g.in_shape), "out_channels": out_c,
            "kernel": list(g.kernel), "pool": list(g.pool), "activations": source,
            "weight_density": wd,
            "measured_weight_density": float(np.count_nonzero(conv_q.weight)
                                             / conv_q.weight.size),
            "measured_act_density": float(np.count_nonzero(x) / x.size),
            "cycles": cyc, "dense_cycles": dcyc, "useful_macs": useful,
            "dense_macs": dmacs,
            "utilization": useful / (params.pes * cyc),
            "speedup": dcyc / cyc,
            "ideal_speedup": dmacs / useful if useful else float("inf"),
            "predicted_cycles": float(np.mean([lc[0].cycles for lc in lcs])),
            "predicted_dense_cycles": float(np.mean([dl[0].cycles for dl in dls])),
            "max_pe_entries": float(np.mean([max(lc[0].pe_work) for lc in lcs])),
            "mean_pe_entries": float(np.mean([np.mean(lc[0].pe_work) for lc in lcs])),
            "bit_exact": bool(np.array_equal(rs.outputs, exp) and np.array_equal(rd.outputs, exp)),
            "inputs": len(x),
        })
    return records


def lenet5_for_bench(path: str | None, arch: str = "lenet5", seed: int = 0):
    """``(float model, description, is_trained)``: the trained (pruned) LeNet-5 state_dict at
    ``path`` for the factory ``arch``, or, with no path, the demo's quick recipe
    (:func:`zeroskip.demo.quick_pruned_lenet5`), which is **not** a well-trained baseline."""
    from ..demo import quick_pruned_lenet5
    if path is not None:
        from ..cli import load_torch_model
        return load_torch_model(path, arch), f"{arch} from {path}", True
    print(f"NOTE: no --model given: training the demo's quick pruned {arch} (2 epochs on "
          "20,000 images, 3 pruning steps of 1 epoch); NOT the well-trained baseline",
          file=sys.stderr, flush=True)
    model, acc, acc_p = quick_pruned_lenet5(arch, seed)
    return model, (f"{arch}, quick recipe (not well trained): float {acc:.2%} dense, "
                   f"{acc_p:.2%} pruned"), False


def run_network_bench(params: HwParams, model, description: str, trained: bool,
                      images: int = 8, dense_images: int = 2, seed: int = 1) -> dict:
    """The whole pruned network, all layers back to back on the RTL: ``images`` Fashion-MNIST
    test images packed sparse (accuracy of the RTL and of the reference), the first
    ``dense_images`` also packed dense with activation skipping off (speedup); every output
    compared with the integer reference."""
    from ..sw.cycles import dense_macs
    from ..sw.data import load_fashion_mnist
    from ..sw.quant import quantize_model
    from ..sw.train import evaluate
    ds = load_fashion_mnist()
    images = min(images, len(ds.y_test))
    dense_images = min(dense_images, images)
    qm = quantize_model(model, ds.x_train[:2000], params)
    sparse = pack_model(qm, params)
    dense = pack_model(qm, params, dense=True)
    x = qm.quantize_input(ds.x_test[:images]).astype(np.int64)
    y = ds.y_test[:images].numpy()
    exp = run_model(sparse, x).numpy()
    t0 = time.time()
    print(f"running the whole network on {images} images (and {dense_images} dense) on the "
          f"Verilated {params.pes}-PE array...", file=sys.stderr, flush=True)
    rs, rd = run_cases(params, [
        Case(sparse, x, exp, name="network sparse"),
        Case(dense, x[:dense_images], exp[:dense_images], skip_zero_acts=False,
             name="network dense")], seed=seed, name="accel")
    t_sim = time.time() - t0
    print(f"  done in {t_sim:.0f} s", file=sys.stderr)
    n = dense_images
    cyc_all = np.array([c["cycles"] for c in rs.counters], dtype=np.float64)
    useful_all = np.array([c["useful_macs"] for c in rs.counters], dtype=np.float64)
    cyc = float(cyc_all[:n].mean())
    dcyc = float(np.mean([c["cycles"] for c in rd.counters]))
    useful = float(useful_all[:n].mean())
    dmacs = dense_macs(sparse)
    lcs = [predict(sparse, v) for v in x[:n]]
    dls = [predict(dense, v, skip_zero_acts=False) for v in x[:n]]
    layers = []
    for i, pl in enumerate(sparse.layers):
        q = pl.q
        layers.append({
            "kind": q.geom.kind, "rows": q.out_features, "cols": q.in_features,
            "weight_density": float(np.count_nonzero(q.weight) / q.weight.size),
            "predicted_cycles": float(np.mean([lc[i].cycles for lc in lcs])),
            "predicted_dense_cycles": float(np.mean([dl[i].cycles for dl in dls])),
            "useful_macs": float(np.mean([lc[i].useful_macs for lc in lcs])),
            "dense_macs": int(dense_macs_layer(pl)),
        })
    ref_acc = float((exp.argmax(1) == y).mean())
    rtl_acc = float((rs.outputs.argmax(1) == y).mean())
    return {
        "layer": "network", "model": description, "trained_model": trained,
        "pes": params.pes, "activations": "fashion-mnist",
        "weight_density": float(sum(np.count_nonzero(pl.q.weight) for pl in sparse.layers)
                                / sum(pl.q.weight.size for pl in sparse.layers)),
        "measured_act_density": float(np.count_nonzero(x[:n]) / x[:n].size),
        "cycles": cyc, "dense_cycles": dcyc, "useful_macs": useful, "dense_macs": dmacs,
        "utilization": useful / (params.pes * cyc),
        "speedup": dcyc / cyc,
        "ideal_speedup": dmacs / useful if useful else float("inf"),
        "predicted_cycles": float(np.mean([sum(lc.cycles for lc in p) for p in lcs])),
        "predicted_dense_cycles": float(np.mean([sum(lc.cycles for lc in p) for p in dls])),
        "bit_exact": bool(np.array_equal(rs.outputs, exp)
                          and np.array_equal(rd.outputs, exp[:n])),
        "inputs": n,
        "images": images, "cycles_all_images": float(cyc_all.mean()),
        "utilization_all_images": float(useful_all.sum() / (params.pes * cyc_all.sum())),
        "accuracy_reference": ref_acc, "accuracy_rtl": rtl_acc,
        "accuracy_float": evaluate(model, ds.x_test[:images], ds.y_test[:images]),
        "rtl_seconds": t_sim, "layers": layers,
    }


def dense_macs_layer(pl) -> int:
    """Dense MACs of one packed layer, over the conv pixels the hardware computes."""
    from ..sw.cycles import computed_pixels
    return pl.q.in_features * pl.q.out_features * computed_pixels(pl.q.geom)


def network_table(r: dict) -> str:
    """The whole network's record as a Markdown table (per layer from the cycle model)."""
    lines = [f"whole network: {r['model']}; {r['images']} images on the RTL, "
             f"{r['inputs']} also dense",
             "| layer | w dens | cycles (model) | dense cycles (model) | useful MACs "
             "| dense MACs |",
             "|---|---:|---:|---:|---:|---:|"]
    for i, lay in enumerate(r["layers"]):
        lines.append(f"| {i} {lay['kind']} {lay['rows']}x{lay['cols']} | "
                     f"{lay['weight_density']:.3f} | {lay['predicted_cycles']:.0f} | "
                     f"{lay['predicted_dense_cycles']:.0f} | {lay['useful_macs']:.0f} | "
                     f"{lay['dense_macs']} |")
    lines.append(f"accuracy on {r['images']} images: float {r['accuracy_float']:.2%}, "
                 f"reference {r['accuracy_reference']:.2%}, RTL {r['accuracy_rtl']:.2%}; "
                 f"mean cycles over all of them {r['cycles_all_images']:.0f}, utilization "
                 f"{r['utilization_all_images']:.3f}; {r['rtl_seconds']:.0f} s of RTL "
                 "simulation")
    return "\n".join(lines)


def conv_table(records: list[dict]) -> str:
    head = ("| layer | w dens | a dens | cycles | dense cycles | useful MACs | util | speedup "
            "| ideal | speedup/ideal | predicted | bit-exact |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in records:
        wd = r["weight_density"]
        lines.append(
            f"| {r['layer']} | {wd if r['layer'] != 'network' else round(wd, 3)} | "
            f"{r['measured_act_density']:.2f} | "
            f"{r['cycles']:.0f} | {r['dense_cycles']:.0f} | {r['useful_macs']:.0f} | "
            f"{r['utilization']:.3f} | {r['speedup']:.2f} | {r['ideal_speedup']:.2f} | "
            f"{r['speedup'] / r['ideal_speedup']:.3f} | {r['predicted_cycles']:.0f} | "
            f"{'yes' if r['bit_exact'] else 'NO'} |")
    return "\n".join(lines)


def table(records: list[dict]) -> str:
    head = ("| layer | w dens | a dens | cycles | dense cycles | useful MACs | util | speedup "
            "| ideal | speedup/ideal | predicted | bit-exact |")
    lines = [head, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|---:|:-:|"]
    for r in records:
        lines.append(
            f"| {r['rows']}x{r['cols']} | {r['weight_density']} | {r['act_density']} | "
            f"{r['cycles']:.0f} | {r['dense_cycles']:.0f} | {r['useful_macs']:.0f} | "
            f"{r['utilization']:.3f} | {r['speedup']:.2f} | {r['ideal_speedup']:.2f} | "
            f"{r['speedup'] / r['ideal_speedup']:.3f} | {r['predicted_cycles']:.0f} | "
            f"{'yes' if r['bit_exact'] else 'NO'} |")
    return "\n".join(lines)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zeroskip.sim.bench", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="build/bench/fc.json", help="output JSON")
    ap.add_argument("--pes", type=int, default=8)
    ap.add_argument("--inputs", type=int, default=4, help="input vectors per case")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="one weight density (0.1) only")
    ap.add_argument("--only", choices=["fc", "conv", "network"],
                    help="run one bench: fc, conv (LeNet-5's conv layers and the whole "
                         "network) or network (the whole network only)")
    ap.add_argument("--conv-out", default="build/bench/conv.json", help="conv output JSON")
    ap.add_argument("--model", default=None, metavar="STATE.pt",
                    help="state_dict of a trained pruned LeNet-5 for the whole-network bench "
                         "(default: a quick recipe, which is not well trained)")
    ap.add_argument("--arch", default="lenet5", choices=["lenet5", "lenet5_classic"],
                    help="the factory of --model (default lenet5, the Caffe variant)")
    ap.add_argument("--images", type=int, default=8,
                    help="Fashion-MNIST test images of the whole network on the RTL (default 8; "
                         "the first --dense-images also run dense)")
    ap.add_argument("--dense-images", type=int, default=2)
    args = ap.parse_args(argv)
    if args.inputs < 1 or args.images < 1 or args.dense_images < 1:
        ap.error("--inputs, --images and --dense-images must be at least 1")
    if args.model is not None and not Path(args.model).is_file():
        print(f"error: --model {args.model}: no such file", file=sys.stderr)
        return 1
    bad = 0
    runs = []
    if args.only in (None, "fc"):
        wds = [0.1] if args.quick else WEIGHT_DENSITIES
        runs.append((Path(args.out), table,
                     lambda: run_bench(HwParams(pes=args.pes), args.inputs, args.seed,
                                       weight_densities=wds)))
    if args.only in ("conv", "network", None):
        from ..sw.errors import ZeroskipError
        cparams = HwParams(pes=args.pes, **CONV_PARAMS)
        try:
            net = lenet5_for_bench(args.model, args.arch)
        except ZeroskipError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        wds = [0.1] if args.quick else CONV_DENSITIES

        def conv_run():
            from ..sw.data import load_fashion_mnist
            from ..sw.quant import quantize_model
            qm = quantize_model(net[0], load_fashion_mnist().x_train[:2000], cparams)
            layers = [] if args.only == "network" else run_conv_bench(
                cparams, min(args.inputs, 2), args.seed, weight_densities=wds, network=qm)
            whole = run_network_bench(cparams, net[0], net[1], net[2], args.images,
                                      args.dense_images, args.seed)
            print(network_table(whole))
            return layers + [whole]
        runs.append((Path(args.conv_out if args.only != "network"
                          else Path(args.conv_out).with_name("network.json")),
                     conv_table, conv_run))
    for out, fmt, run in runs:
        records = run()
        out.parent.mkdir(parents=True, exist_ok=True)
        tmp = out.with_suffix(".tmp")
        tmp.write_text(json.dumps(records, indent=2))
        os.replace(tmp, out)
        print(fmt(records))
        print(f"wrote {out}")
        bad += sum(not r["bit_exact"] for r in records)
    if bad:
        print(f"error: {bad} cases were not bit-exact", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
