"""Regenerate the compression results: ``docs/results.md``, ``docs/results.json``, ``docs/img/``.

``python -m zeroskip.experiments.results`` (what ``nox -s results`` runs) trains LeNet-300-100
and LeNet-5 on Fashion-MNIST and applies every method of :mod:`zeroskip.sw.compress`;
``--quick`` runs the same experiments on the 8x8 digits with small models in about a minute
(a smoke test of this script, not a result). Progress bars go to stderr.

Every record of ``results.json`` has ``model, dataset, method, params_kept_fraction, acc_dense,
acc_final, compressed_bytes, dense_bytes, compression_ratio`` plus ``acc_stored`` (accuracy of
the model exactly as the storage report codes it: int8 or codebook weights) and method details.
``compressed_bytes`` always comes from :func:`zeroskip.sw.compress.compression_report`
(quantized weights + Huffman-coded codes and relative indices, tables, codebooks, scales and
biases counted); ``dense_bytes`` is every parameter as float32.
"""

from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch

from zeroskip.sw.compress import (
    GRANULARITIES,
    compression_report,
    count_params,
    distillation_loss,
    finetune_centroids,
    granular_prune,
    index_cost,
    iterative_prune,
    low_rank,
    progressive_prune,
    prune_structured,
    quantized_copy,
    share_weights,
    train_ternary,
    uniform_to_params,
    weight_count,
)
from zeroskip.sw.compress.graph import weight_layers
from zeroskip.sw.compress.structured import bn_l1_penalty
from zeroskip.sw.data import load_dataset
from zeroskip.sw.errors import ZeroskipError
from zeroskip.sw.models import digits_cnn, digits_mlp, lenet5, lenet_300_100
from zeroskip.sw.train import evaluate, train

__all__ = ["main", "run"]

FULL = dict(dense_epochs={"lenet300": 6, "lenet5": 3}, lr=1e-3, batch=128,
            prune_steps=3, prune_epochs={"lenet300": 2, "lenet5": 1},
            prune_final={"lenet300": 1, "lenet5": 1}, subset=20000, cmp_epochs=3,
            gran_subset=8000, gran_sparsities=(0.5, 0.8, 0.9), share_epochs=1,
            prog_fraction=0.15, prog_rounds=14, floor_drop=0.01, tern_epochs=2,
            slim_epochs=2, structured_amount=0.5)
QUICK = dict(dense_epochs={"lenet300": 20, "lenet5": 20}, lr=3e-3, batch=64,
             prune_steps=3, prune_epochs={"lenet300": 8, "lenet5": 8},
             prune_final={"lenet300": 4, "lenet5": 4}, subset=None, cmp_epochs=10,
             gran_subset=None, gran_sparsities=(0.5, 0.8), share_epochs=4,
             prog_fraction=0.2, prog_rounds=6, floor_drop=0.02, tern_epochs=8,
             slim_epochs=10, structured_amount=0.5)

# Per-layer keep fractions at the end of magnitude pruning, in the spirit of Han et al. 2015
# (first layers are kept denser where they are small; the big FC layers are pruned hardest).
LAYER_KEEP = {
    "lenet300": [0.075, 0.10, 0.30],
    "lenet5": [0.66, 0.15, 0.07, 0.20],
}
# Weight-sharing bits per layer (Deep Compression used 8 bits for conv, 5 for FC layers).
SHARE_BITS = {"lenet300": [5, 5, 5], "lenet5": [8, 8, 5, 5]}


class Ctx:
    def __init__(self, ds, cfg, quick, progress, seed):
        self.ds, self.cfg, self.quick, self.progress, self.seed = ds, cfg, quick, progress, seed
        self.records: list[dict] = []
        self.extra: dict = {}
        self.t0 = time.time()

    def sub(self, n):
        if n is None or n >= self.ds.x_train.shape[0]:
            return self.ds.x_train, self.ds.y_train
        g = torch.Generator().manual_seed(self.seed)
        idx = torch.randperm(self.ds.x_train.shape[0], generator=g)[:n]
        return self.ds.x_train[idx], self.ds.y_train[idx]

    def acc(self, m):
        return evaluate(m, self.ds.x_test, self.ds.y_test)

    def log(self, msg):
        print(f"[{time.time() - self.t0:7.1f}s] {msg}", file=sys.stderr, flush=True)

    def record(self, model_name, method, model, dense, acc_dense, *, kept=None, stored=True,
               **extra):
        rep = compression_report(model, hw=False)
        w_total = weight_count(dense, nonzero=False)
        if kept is None:
            kept = weight_count(model) / w_total
        rec = {"model": model_name, "dataset": self.ds.name, "method": method,
               "params_kept_fraction": round(float(kept), 5),
               "acc_dense": round(acc_dense, 4), "acc_final": round(self.acc(model), 4),
               "acc_stored": round(self.acc(quantized_copy(model)), 4) if stored else None,
               "compressed_bytes": rep.compressed_bytes, "dense_bytes": rep.dense_bytes,
               "compression_ratio": round(rep.ratio, 2)}
        rec.update(extra)
        self.records.append(rec)
        self.log(f"{model_name:9s} {method:32s} kept {rec['params_kept_fraction']:.4f} "
                 f"acc {rec['acc_final']:.4f} stored {rec['acc_stored'] or 0:.4f} "
                 f"ratio {rec['compression_ratio']:.1f}x")
        return rec, rep


def _layer_sparsity(model, keep_fracs, final):
    names = list(weight_layers(model))
    fin = {n: 1.0 - k for n, k in zip(names, keep_fracs)}

    def f(s):
        return {n: min(v * s / final, 0.999) for n, v in fin.items()}
    return f


def _total_sparsity(model, keep_fracs):
    wl = weight_layers(model)
    tot = sum(m.weight.numel() for m in wl.values())
    kept = sum(m.weight.numel() * k for m, k in zip(wl.values(), keep_fracs))
    return 1.0 - kept / tot


def han_and_deep_compression(ctx, name, dense, acc_dense):
    """Iterative magnitude pruning to ~8% (with distillation), then weight sharing + Huffman."""
    c = ctx.cfg
    m = copy.deepcopy(dense)
    keep = LAYER_KEEP[name]
    final = _total_sparsity(m, keep)
    masks, hist = iterative_prune(
        m, ctx.ds.x_train, ctx.ds.y_train, final, schedule="iterative", steps=c["prune_steps"],
        epochs_per_step=c["prune_epochs"][name], final_epochs=c["prune_final"][name],
        layer_sparsity=_layer_sparsity(m, keep, final), lr=c["lr"] / 2,
        batch_size=c["batch"], loss_fn=distillation_loss(dense, 4.0, 0.7),
        seed=ctx.seed, progress=ctx.progress)
    _, rep = ctx.record(name, "prune-iterative-kd (Han 2015)", m, dense, acc_dense,
                        schedule="iterative", steps=c["prune_steps"],
                        density={k: round(v, 4) for k, v in masks.density().items()})
    ctx.extra.setdefault("density", {})[name] = masks.density()
    ctx.extra.setdefault("prune_history", {})[name] = hist.rounds
    pruned = copy.deepcopy(m)
    # Deep Compression: k-means weight sharing, centroid fine-tuning, Huffman
    bits = dict(zip(weight_layers(m), SHARE_BITS[name]))
    books = share_weights(m, bits)
    acc_shared = ctx.acc(m)
    x, y = ctx.sub(c["subset"])
    finetune_centroids(m, books, x, y, epochs=c["share_epochs"], lr=1e-4,
                       batch_size=c["batch"], loss_fn=distillation_loss(dense, 4.0, 0.7),
                       seed=ctx.seed, progress=ctx.progress)
    _, rep = ctx.record(name, "deep-compression (prune+share+huffman)", m, dense, acc_dense,
                        bits=list(bits.values()), acc_shared_before_finetune=round(acc_shared, 4))
    ctx.extra.setdefault("dc_report", {})[name] = rep.to_dict()
    ctx.extra.setdefault("dc_report_md", {})[name] = rep.to_markdown()
    # without Huffman, for the table
    rep_nh = compression_report(m, huffman=False, hw=False)
    ctx.extra.setdefault("dc_no_huffman", {})[name] = rep_nh.ratio
    # the pruned model alone, stored as int8 (+Huffman)
    ctx.extra.setdefault("pruned_int8_report", {})[name] = compression_report(
        pruned, hw=False).ratio
    return pruned


def schedules(ctx, name, dense, acc_dense):
    """One-shot vs iterative vs gradual at ~92% sparsity, equal fine-tuning budget; and
    gradual with and without distillation."""
    c = ctx.cfg
    x, y = ctx.sub(c["subset"])
    keep = LAYER_KEEP[name]
    E = c["cmp_epochs"]
    runs = [("one-shot", 1, None), ("iterative", 3, None), ("gradual", 3, None),
            ("gradual", 3, "kd")]
    for sched, steps, kd in runs:
        m = copy.deepcopy(dense)
        final = _total_sparsity(m, keep)
        per = max(1, E // steps)
        iterative_prune(m, x, y, final, schedule=sched, steps=steps, epochs_per_step=per,
                        final_epochs=E - per * steps,
                        layer_sparsity=_layer_sparsity(m, keep, final),
                        lr=c["lr"] / 2, batch_size=c["batch"],
                        loss_fn=distillation_loss(dense) if kd else None, seed=ctx.seed,
                        progress=ctx.progress)
        ctx.record(name, f"schedule-{sched}{'-kd' if kd else ''}", m, dense, acc_dense,
                   finetune_epochs=E, train_samples=int(x.shape[0]))


def granularities(ctx, name, dense, acc_dense):
    """Accuracy vs sparsity per granularity (one epoch of fine-tuning on a subset), and the
    relative-index bits each granularity needs at the same sparsity. The classifier (last
    layer) is not pruned: at filter granularity that would delete whole classes."""
    c = ctx.cfg
    x, y = ctx.sub(c["gran_subset"])
    table = []
    hidden = list(weight_layers(dense))[:-1]
    for g in GRANULARITIES:
        for s in c["gran_sparsities"]:
            m = copy.deepcopy(dense)
            masks = granular_prune(m, s, g, layers=hidden)
            acc_pruned = ctx.acc(m) if ctx.quick else None
            train(m, x, y, epochs=1, lr=c["lr"] / 2, batch_size=c["batch"],
                  seed=ctx.seed, progress=ctx.progress, desc=f"{g} s={s}")
            ibits = sum(index_cost(mk, g, 4).bits for mk in masks.masks.values())
            ibits_elem = sum(index_cost(mk, "element", 4).bits for mk in masks.masks.values())
            rec, _ = ctx.record(name, f"granularity-{g}-{s}", m, dense, acc_dense,
                                stored=False, granularity=g, sparsity=s,
                                acc_pruned=acc_pruned and round(acc_pruned, 4),
                                index_bits_4bit=ibits, index_bits_element_same_mask=ibits_elem)
            table.append(rec)
    return table


def structured(ctx, name, dense, acc_dense):
    """Physical removal by L1, mean activation and APoZ (uniform per layer)."""
    c = ctx.cfg
    x, y = ctx.sub(c["subset"])
    p0 = count_params(dense)
    for crit in ("l1", "mean_act", "apoz"):
        m = prune_structured(dense, c["structured_amount"], criterion=crit, x=x[:2000])
        acc_cut = ctx.acc(m)
        train(m, x, y, epochs=1, lr=c["lr"] / 2, batch_size=c["batch"], seed=ctx.seed,
              progress=ctx.progress, desc=f"structured {crit}")
        ctx.record(name, f"structured-{crit}-{c['structured_amount']}", m, dense, acc_dense,
                   kept=count_params(m) / p0, acc_before_finetune=round(acc_cut, 4),
                   params=count_params(m), params_dense=p0)


def slimming(ctx, name, factory):
    """Network slimming: a BatchNorm variant trained with L1 on the BN scales, then the
    globally smallest half of the channels removed, then fine-tuned."""
    c = ctx.cfg
    x, y = ctx.sub(c["subset"])
    base = train(factory(bn=True), x, y, epochs=c["slim_epochs"], lr=c["lr"],
                 batch_size=c["batch"], seed=ctx.seed, progress=ctx.progress, desc="BN baseline")
    acc_base = ctx.acc(base)
    m = train(copy.deepcopy(base), x, y, epochs=c["slim_epochs"], lr=c["lr"] / 2,
              batch_size=c["batch"], extra_loss=bn_l1_penalty(1e-4), seed=ctx.seed,
              progress=ctx.progress, desc="slimming L1 on BN")
    p0 = count_params(base)
    s = prune_structured(m, 0.5, criterion="bn", scope="global", normalize=None)
    acc_cut = ctx.acc(s)
    train(s, x, y, epochs=1, lr=c["lr"] / 2, batch_size=c["batch"], seed=ctx.seed,
          progress=ctx.progress, desc="slimming fine-tune")
    ctx.record(name + "-bn", "slimming-bn-0.5 (Liu 2017)", s, base, acc_base,
               kept=count_params(s) / p0, acc_before_finetune=round(acc_cut, 4),
               params=count_params(s), params_dense=p0,
               channels={n: int(mm.out_channels) for n, mm in weight_layers(s).items()
                         if hasattr(mm, "out_channels")})


def progressive(ctx, name, dense, acc_dense):
    """Progressive global (de-biased, cost-aware) vs uniform neuron pruning to a floor."""
    c = ctx.cfg
    x, y = ctx.sub(c["subset"])
    floor = acc_dense - c["floor_drop"]
    p0 = count_params(dense)
    out = {}
    for mode in ("global", "uniform"):
        r = progressive_prune(dense, x, y, ctx.ds.x_test, ctx.ds.y_test, floor, mode=mode,
                              fraction=c["prog_fraction"], criterion="l1", normalize="mean",
                              finetune_epochs=1, max_rounds=c["prog_rounds"], lr=c["lr"] / 2,
                              batch_size=c["batch"], seed=ctx.seed, progress=ctx.progress)
        out[mode] = r
        ctx.record(name, f"progressive-{mode}", r.model, dense, acc_dense,
                   kept=r.params / p0, params=r.params, params_dense=p0, floor=round(floor, 4),
                   rounds=len(r.history) - 1,
                   units={n: int(v) for n, v in r.history[-1]["units"].items()}
                   if len(r.history) else {})
    ctx.extra.setdefault("progressive", {})[name] = {
        m: [{"round": h["round"], "params": h["params"], "acc": round(h["acc"], 4)}
            for h in r.history] for m, r in out.items()}
    # uniform pruning to exactly the global result's parameter count, same fine-tuning
    target = out["global"].params
    u = uniform_to_params(dense, target)
    train(u, x, y, epochs=2, lr=c["lr"] / 2, batch_size=c["batch"], seed=ctx.seed,
          progress=ctx.progress, desc="uniform @ global params")
    ctx.record(name, "uniform-at-global-params", u, dense, acc_dense,
               kept=count_params(u) / p0, params=count_params(u), params_dense=p0)


def quant_and_lowrank(ctx, name, dense, acc_dense):
    c = ctx.cfg
    x, y = ctx.sub(c["subset"])
    ctx.record(name, "dense-int8", dense, dense, acc_dense)
    t = copy.deepcopy(dense)
    train_ternary(t, x, y, epochs=c["tern_epochs"], lr=c["lr"] / 2, batch_size=c["batch"],
                  seed=ctx.seed, progress=ctx.progress)
    ctx.record(name, "ternary (TWN)", t, dense, acc_dense)
    for energy in (0.9, 0.6):
        lr_model, ranks = low_rank(dense, energy=energy)
        acc_svd = ctx.acc(lr_model)
        train(lr_model, x, y, epochs=1, lr=c["lr"] / 2, batch_size=c["batch"], seed=ctx.seed,
              progress=ctx.progress, desc=f"low-rank e={energy}")
        ctx.record(name, f"low-rank-svd-energy-{energy}", lr_model, dense, acc_dense,
                   kept=count_params(lr_model) / count_params(dense), ranks=ranks,
                   acc_before_finetune=round(acc_svd, 4))


EXPERIMENTS = ("han", "quant", "schedules", "structured", "progressive", "granularity",
               "slimming")


def run(dataset: str = "fashion-mnist", *, quick: bool = False, out: str = "docs",
        data_path: str | None = None, models=("lenet300", "lenet5"), seed: int = 0,
        progress: bool = True, plots: bool = True, only=None, merge: bool = False) -> dict:
    """Run the experiments; ``only`` restricts them to some of :data:`EXPERIMENTS` (the dense
    baseline always runs); ``merge`` keeps the other records of an existing
    ``<out>/results.json`` and replaces those with the same model and method."""
    only = set(only or EXPERIMENTS)
    torch.manual_seed(seed)
    cfg = QUICK if quick else FULL
    ds = load_dataset("digits" if quick else dataset, data_path)
    ctx = Ctx(ds, cfg, quick, progress, seed)
    factories = {"lenet300": (lambda bn=False: digits_mlp((128, 64))) if quick else
                 (lambda bn=False: lenet_300_100()),
                 "lenet5": (lambda bn=False: digits_cnn(bn=bn)) if quick else
                 (lambda bn=False: lenet5(bn=bn))}
    label = {"lenet300": "digits-mlp" if quick else "lenet-300-100",
             "lenet5": "digits-cnn" if quick else "lenet-5"}
    for key in models:
        name = label[key]
        LAYER_KEEP[name] = LAYER_KEEP[key]
        SHARE_BITS[name] = SHARE_BITS[key]
        cfg["dense_epochs"][name] = cfg["dense_epochs"][key]
        cfg["prune_epochs"][name] = cfg["prune_epochs"][key]
        cfg["prune_final"][name] = cfg["prune_final"][key]
        ctx.log(f"training dense {name} on {ds.name}")
        dense = train(factories[key](), ds.x_train, ds.y_train, epochs=cfg["dense_epochs"][key],
                      lr=cfg["lr"], batch_size=cfg["batch"], seed=seed, progress=progress,
                      desc=f"dense {name}")
        acc_dense = ctx.acc(dense)
        ctx.record(name, "dense", dense, dense, acc_dense)
        if "han" in only:
            han_and_deep_compression(ctx, name, dense, acc_dense)
        if "quant" in only:
            quant_and_lowrank(ctx, name, dense, acc_dense)
        if key == "lenet300":
            if "schedules" in only:
                schedules(ctx, name, dense, acc_dense)
            if "structured" in only:
                structured(ctx, name, dense, acc_dense)
            if "progressive" in only:
                progressive(ctx, name, dense, acc_dense)
        else:
            if "granularity" in only:
                granularities(ctx, name, dense, acc_dense)
            if "slimming" in only:
                slimming(ctx, name, factories[key])
    ctx.extra["seconds"] = round(time.time() - ctx.t0, 1)
    ctx.extra["quick"] = quick
    if set(only) != set(EXPERIMENTS):
        ctx.extra["merged_runs"] = [{"only": sorted(only), "models": list(models)}]
    outdir = Path(out)
    (outdir / "img").mkdir(parents=True, exist_ok=True)
    result = {"records": ctx.records, "extra": _jsonable(ctx.extra)}
    old_path = outdir / "results.json"
    if merge and old_path.exists():
        result = merge_results(json.loads(old_path.read_text()), result, sorted(only),
                               list(models))
    (outdir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    if plots:
        _plots(result, outdir / "img")
    (outdir / "results.md").write_text(render_markdown(result, quick))
    return result


def merge_results(old: dict, new: dict, only=None, models=None) -> dict:
    """``old`` with the records of ``new`` replacing those with the same model and method
    (in ``old``'s order; new ones at the end) and ``new``'s extras merged in. ``old``'s dense
    baselines are kept (the targets compare with them); the new records carry the baseline
    they used in ``acc_dense``."""
    old_keys = {(r["model"], r["method"]) for r in old["records"]}
    new = {**new, "records": [r for r in new["records"] if r["method"] != "dense"
                              or (r["model"], r["method"]) not in old_keys]}
    new_keys = {(r["model"], r["method"]) for r in new["records"]}
    recs = [r for r in old["records"] if (r["model"], r["method"]) not in new_keys]
    recs += new["records"]
    order = {(r["model"], r["method"]): i for i, r in enumerate(old["records"])}
    recs.sort(key=lambda r: order.get((r["model"], r["method"]), len(order)))
    extra = dict(old.get("extra", {}))
    for k, v in new.get("extra", {}).items():
        if isinstance(v, dict) and isinstance(extra.get(k), dict):
            extra[k] = {**extra[k], **v}
        elif k == "seconds":
            pass
        elif k not in ("quick", "merged_runs"):
            extra[k] = v
    methods = sorted({r["method"] for r in new["records"] if r["method"] != "dense"})
    extra.setdefault("merged_runs", []).append(
        {"only": only or [], "models": models or sorted({r["model"] for r in new["records"]}),
         "methods": methods, "seconds": new.get("extra", {}).get("seconds", 0)})
    return {"records": recs, "extra": extra}


def merge_file(new_path: str, out: str = "docs", plots: bool = True, note: str = "") -> dict:
    """Merge the ``results.json`` of a partial run into ``<out>/results.json`` and re-render
    ``results.md`` and the plots (what ``--merge-from`` does)."""
    outdir = Path(out)
    old = json.loads((outdir / "results.json").read_text())
    new = json.loads(Path(new_path).read_text())
    merged_runs = new.get("extra", {}).get("merged_runs", [])
    only = merged_runs[-1]["only"] if merged_runs else None
    result = merge_results(old, new, only)
    if note:
        result["extra"]["merged_runs"][-1]["note"] = note
    (outdir / "results.json").write_text(json.dumps(result, indent=1) + "\n")
    if plots:
        _plots(result, outdir / "img")
    (outdir / "results.md").write_text(render_markdown(result, bool(old["extra"].get("quick"))))
    return result


def _jsonable(o):
    if isinstance(o, dict):
        return {str(k): _jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [_jsonable(v) for v in o]
    if isinstance(o, float):
        return round(o, 6)
    return o


def _plots(result, img: Path):
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print("matplotlib is not installed: no plots (pip install matplotlib)", file=sys.stderr)
        return
    recs = [r for r in result["records"] if r["method"].startswith("granularity-")]
    if recs:
        fig, ax = plt.subplots(figsize=(6, 4))
        model = recs[0]["model"]
        for g in GRANULARITIES:
            pts = sorted((r["sparsity"], r["acc_final"]) for r in recs if r["granularity"] == g)
            if pts:
                ax.plot([p[0] for p in pts], [100 * p[1] for p in pts], "o-", label=g)
        ax.axhline(100 * recs[0]["acc_dense"], color="k", ls="--", lw=0.8, label="dense")
        ax.set_xlabel("sparsity (fraction of weights removed)")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title(f"{model} on {recs[0]['dataset']}: accuracy vs sparsity per granularity")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "granularity_accuracy.png", dpi=110)
        plt.close(fig)
    dens = result["extra"].get("density", {})
    if dens:
        fig, axes = plt.subplots(1, len(dens), figsize=(5 * len(dens), 3.5))
        axes = axes if len(dens) > 1 else [axes]
        for ax, (model, d) in zip(axes, dens.items()):
            names = list(d)
            ax.bar(range(len(names)), [100 * d[n] for n in names])
            ax.set_xticks(range(len(names)), [f"layer {n}" for n in names])
            for i, n in enumerate(names):
                ax.text(i, 100 * d[n] + 1, f"{100 * d[n]:.1f}%", ha="center", fontsize=8)
            ax.set_ylabel("weights kept (%)")
            ax.set_title(f"{model}: per-layer density")
        fig.tight_layout()
        fig.savefig(img / "layer_density.png", dpi=110)
        plt.close(fig)
    prog = result["extra"].get("progressive", {})
    if prog:
        fig, ax = plt.subplots(figsize=(6, 4))
        for model, runs in prog.items():
            for mode, hist in runs.items():
                ax.plot([h["params"] for h in hist], [100 * h["acc"] for h in hist], "o-",
                        label=f"{model} {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("test accuracy (%)")
        ax.set_title("progressive neuron pruning: global vs uniform")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "progressive.png", dpi=110)
        plt.close(fig)


def _pct(v):
    return "-" if v is None else f"{100 * v:.2f}"


def _find(recs, model, method):
    for r in recs:
        if r["model"] == model and r["method"] == method:
            return r
    return None


def render_markdown(result, quick=False) -> str:
    recs, extra = result["records"], result["extra"]
    L = ["# Compression results", ""]
    L.append("Generated by `nox -s results` (`python -m zeroskip.experiments.results"
             f"{' --quick' if quick else ''}`) in {extra.get('seconds', 0):.0f} s on this "
             "machine's CPU; do not edit by hand. Every number below is measured by that run; "
             "`docs/results.json` holds one record per experiment. Methods and accounting are "
             "described in `docs/compression.md`.")
    L.append("")
    for mr in extra.get("merged_runs", []):
        if not mr.get("methods"):
            continue
        L.append(f"The records {', '.join(mr.get('methods', []))} come from a later run of "
                 f"the same script (`--only {','.join(mr['only'])}`, "
                 f"{mr.get('seconds', 0):.0f} s) merged in with `--merge`/`--merge-from`"
                 f"{': ' + mr['note'] if mr.get('note') else ''}. That run retrains the dense "
                 "model with the same seed (its `acc dense` column shows the baseline it "
                 "used).\n")
    if quick:
        L.append("**Quick mode: the 8x8 digits with small models; a smoke test of the script, "
                 "not the Fashion-MNIST results.**\n")
    L.append("Columns: `kept` is the fraction of Linear/Conv weights that are nonzero "
             "(for structured methods: the fraction of parameters left); `acc` is the float "
             "model's test accuracy after the method; `stored` is the accuracy of the model "
             "exactly as stored (int8 or codebook weights); `bytes` counts weights + "
             "relative indices after Huffman coding, with tables, codebooks, scales, biases; "
             "`ratio` = dense float32 bytes / bytes.\n")
    L.append("## Targets\n")
    L.extend(_targets(recs, quick))
    L.append("\n## All experiments\n")
    L.append("| model | method | kept | acc dense | acc | stored | bytes | ratio |")
    L.append("|---|---|---:|---:|---:|---:|---:|---:|")
    for r in recs:
        L.append(f"| {r['model']} | {r['method']} | {r['params_kept_fraction']:.4f} | "
                 f"{100 * r['acc_dense']:.2f} | {100 * r['acc_final']:.2f} | "
                 f"{_pct(r['acc_stored'])} | {r['compressed_bytes']} | "
                 f"{r['compression_ratio']:.1f}x |")
    for model, md in extra.get("dc_report_md", {}).items():
        L.append(f"\n## Deep Compression report: {model}\n")
        L.append("Per layer after pruning, k-means weight sharing, centroid fine-tuning and "
                 "Huffman coding. `bits/weight` and `bits/index` are Huffman-coded bits per kept "
                 "weight (filler entries included); `index bits` is the relative-index width "
                 "chosen for the layer. Without Huffman coding the ratio is "
                 f"{extra.get('dc_no_huffman', {}).get(model, 0):.1f}x; the pruned model before "
                 "weight sharing, stored as int8 with Huffman coding, gives "
                 f"{extra.get('pruned_int8_report', {}).get(model, 0):.1f}x.\n")
        L.append(md)
    gr = [r for r in recs if r["method"].startswith("granularity-")]
    if gr:
        L.append("\n## Granularity (Mao et al. 2017)\n")
        L.append(f"{gr[0]['model']}, per-layer pruning of every layer but the classifier at "
                 "equal sparsity (`sparsity` is over the pruned layers, `kept` in the table "
                 "above over all layers), then one epoch of fine-tuning on a subset of the "
                 "training set. `index bits` = relative-index "
                 "bits (4-bit deltas, fillers included) to address the kept groups; "
                 "`element index bits` = the same mask addressed weight by weight.\n")
        L.append("| granularity | sparsity | acc after pruning (quick mode only) | "
                 "acc after fine-tune | "
                 "index bits | element index bits |")
        L.append("|---|---:|---:|---:|---:|---:|")
        for r in gr:
            L.append(f"| {r['granularity']} | {r['sparsity']} | {_pct(r['acc_pruned'])} | "
                     f"{100 * r['acc_final']:.2f} | {r['index_bits_4bit']} | "
                     f"{r['index_bits_element_same_mask']} |")
        L.append("\n![accuracy vs sparsity](img/granularity_accuracy.png)\n")
    if extra.get("density"):
        L.append("\n## Per-layer density after magnitude pruning\n")
        L.append("The per-layer keep fractions are fixed targets in the spirit of Han et al. "
                 "(`LAYER_KEEP` in `zeroskip/experiments/results.py`: small first layers "
                 "denser, the large FC layers sparsest), not found by one global threshold.\n")
        for model, d in extra["density"].items():
            L.append(f"- {model}: " + ", ".join(f"layer {n}: {100 * v:.1f}%"
                                                  for n, v in d.items()))
        L.append("\n![per-layer density](img/layer_density.png)\n")
    prog = extra.get("progressive", {})
    if prog:
        L.append("\n## Progressive global vs uniform neuron pruning\n")
        for model, runs in prog.items():
            for mode, hist in runs.items():
                L.append(f"- {model} {mode}: " + " -> ".join(
                    f"{h['params']} ({100 * h['acc']:.2f}%)" for h in hist))
        L.append("\nParameters (accuracy) after each round, rounds below the floor included: "
                 "after such a round the search retries from the last model at or above the "
                 "floor with half the fraction (twice at most); the result is the last model "
                 "at or above the floor.\n")
        L.append("![progressive](img/progressive.png)\n")
    return "\n".join(L) + "\n"


def _targets(recs, quick):
    out = []

    def line(ok, text):
        out.append(f"- **{'met' if ok else 'NOT met'}**: {text}")

    for model, ratio_target in (("lenet-300-100", 35), ("lenet-5", 30),
                                ("digits-mlp", 35), ("digits-cnn", 30)):
        d = _find(recs, model, "dense")
        if d is None:
            continue
        p = _find(recs, model, "prune-iterative-kd (Han 2015)")
        if p:
            loss = 100 * (d["acc_final"] - p["acc_final"])
            line(p["params_kept_fraction"] <= 0.08 and loss <= 0.5,
                 f"{model} pruned to at most 8% of weights with at most 0.5 points loss: kept "
                 f"{100 * p['params_kept_fraction']:.2f}%, accuracy {100 * p['acc_final']:.2f}% "
                 f"vs dense {100 * d['acc_final']:.2f}% ({loss:+.2f} points loss)")
        dc = _find(recs, model, "deep-compression (prune+share+huffman)")
        if dc:
            loss = 100 * (d["acc_final"] - dc["acc_stored"])
            line(dc["compression_ratio"] >= ratio_target and loss <= 1.0,
                 f"{model} overall compression at least {ratio_target}x with at most 1 point loss:"
                 f" {dc['compression_ratio']:.1f}x ({dc['dense_bytes']} -> "
                 f"{dc['compressed_bytes']} bytes), stored-model accuracy "
                 f"{100 * dc['acc_stored']:.2f}% ({loss:+.2f} points loss)")
        g, u = _find(recs, model, "progressive-global"), _find(recs, model, "progressive-uniform")
        if g and u:
            line(g["params"] < u["params"] and g["acc_final"] >= g["floor"],
                 f"{model} progressive global pruning reaches the floor "
                 f"({100 * g['floor']:.2f}%) with fewer parameters than uniform: global "
                 f"{g['params']} params ({100 * g['acc_final']:.2f}%), uniform {u['params']} "
                 f"params ({100 * u['acc_final']:.2f}%)")
            ua = _find(recs, model, "uniform-at-global-params")
            if ua:
                out.append(f"  - at an equal parameter count ({ua['params']}), uniform pruning "
                           f"reaches {100 * ua['acc_final']:.2f}% vs global "
                           f"{100 * g['acc_final']:.2f}%")
    if quick:
        out.append("- (quick mode: the targets are defined for Fashion-MNIST; these lines only "
                   "check that the script evaluates them)")
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zeroskip.experiments.results", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="fashion-mnist", help="fashion-mnist (default)")
    ap.add_argument("--data-path", default=None, help="folder with the Fashion-MNIST IDX files")
    ap.add_argument("--quick", action="store_true", help="digits, small models, ~1 minute")
    ap.add_argument("--out", default="docs", help="output folder (default docs/)")
    ap.add_argument("--models", default="lenet300,lenet5",
                    help="comma-separated: lenet300, lenet5")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--threads", type=int, default=2, help="torch threads (default 2)")
    ap.add_argument("--no-progress", action="store_true")
    ap.add_argument("--no-plots", action="store_true")
    ap.add_argument("--only", default=None,
                    help=f"comma-separated subset of: {', '.join(EXPERIMENTS)}")
    ap.add_argument("--merge", action="store_true",
                    help="keep the other records of an existing OUT/results.json")
    ap.add_argument("--merge-from", default=None, metavar="JSON",
                    help="run nothing: merge the results.json of a partial run into "
                         "OUT/results.json and re-render")
    ap.add_argument("--note", default="", help="with --merge-from: why the partial run was made")
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    models = [m.strip() for m in a.models.split(",") if m.strip()]
    for m in models:
        if m not in ("lenet300", "lenet5"):
            print(f"error: unknown model {m!r}; choose lenet300, lenet5", file=sys.stderr)
            return 2
    only = [e.strip() for e in a.only.split(",")] if a.only else None
    for e in only or []:
        if e not in EXPERIMENTS:
            print(f"error: unknown experiment {e!r}; choose from {', '.join(EXPERIMENTS)}",
                  file=sys.stderr)
            return 2
    if a.merge_from:
        merge_file(a.merge_from, a.out, plots=not a.no_plots, note=a.note)
        return 0
    try:
        run(a.dataset, quick=a.quick, out=a.out, data_path=a.data_path, models=models,
            seed=a.seed, progress=not a.no_progress, plots=not a.no_plots, only=only,
            merge=a.merge)
    except ZeroskipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
