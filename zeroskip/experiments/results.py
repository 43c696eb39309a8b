"""Regenerate the compression results: ``docs/results.md``, ``docs/results.json``, ``docs/img/``.

``python -m zeroskip.experiments.results`` (what ``nox -s results`` runs) trains LeNet-300-100
and LeNet-5 on Fashion-MNIST by the recipes of :mod:`zeroskip.sw.baseline` and applies every
method of :mod:`zeroskip.sw.compress` to those baselines; ``--quick`` runs the same
experiments on the 8x8 digits with small models in about a minute (a smoke test of this
script, not a result). Progress goes to stderr. Trained baselines and pruned models are cached
by the hash of their inputs (:mod:`.cache`; ``ZEROSKIP_RESULTS_CACHE``, ``--no-cache``).

Every record of ``results.json`` has ``model, dataset, method, params_kept_fraction, acc_dense,
acc_final, compressed_bytes, dense_bytes, compression_ratio`` plus ``acc_stored`` (accuracy of
the model exactly as the storage report codes it: int8 or codebook weights) and method details.
``compressed_bytes`` always comes from :func:`zeroskip.sw.compress.compression_report`
(quantized weights + Huffman-coded codes and relative indices, tables, codebooks, scales and
biases counted); ``dense_bytes`` is every parameter as float32. Each record also carries
``baseline`` (its accuracies, recipe and cache key), ``seed`` and ``command``.
"""

from __future__ import annotations

import argparse
import copy
import json
import shlex
import sys
import time
from pathlib import Path

import torch

from zeroskip.sw import baseline as _baseline_mod
from zeroskip.sw import models as _models_mod
from zeroskip.sw import prune as _prune_mod
from zeroskip.sw import train as _train_mod
from zeroskip.sw.baseline import RECIPES, Recipe, split_validation, train_baseline
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
    train_ttq,
    uniform_to_params,
    weight_count,
)
from zeroskip.sw.compress import distill as _distill_mod
from zeroskip.sw.compress import granularity as _granularity_mod
from zeroskip.sw.compress import graph as _graph_mod
from zeroskip.sw.compress import schedule as _schedule_mod
from zeroskip.sw.compress import structured as _structured_mod
from zeroskip.sw.compress.graph import weight_layers
from zeroskip.sw.compress.structured import bn_l1_penalty
from zeroskip.sw.cycles import predict as predict_cycles
from zeroskip.sw.data import load_dataset
from zeroskip.sw.errors import ZeroskipError
from zeroskip.sw.modelfile import to_bytes
from zeroskip.sw.models import digits_cnn, digits_mlp, lenet5, lenet_300_100
from zeroskip.sw.pack import pack_model
from zeroskip.sw.params import HwParams
from zeroskip.sw.prune import Masks, remove_masks
from zeroskip.sw.quant import quantize_model
from zeroskip.sw.train import evaluate, flip_crop, train

from .cache import ModelCache, source_hash, tensor_hash

__all__ = ["main", "run"]

FULL = dict(lr=1e-3, batch=128, ft_lr=0.01,
            prune_steps=3, prune_epochs={"lenet300": 6, "lenet5": 3},
            prune_final={"lenet300": 10, "lenet5": 3}, subset=20000, cmp_epochs=3,
            gran_sparsities={"lenet300": (0.5, 0.7, 0.8, 0.9), "lenet5": (0.5, 0.8, 0.9)},
            gran_epochs=2, hw_images={"lenet300": 20, "lenet5": 5}, share_epochs=1,
            prog_fraction=0.15, prog_rounds=14, floor_drop=0.01, prog_seeds=(0, 1, 2),
            tern_epochs={"lenet300": 4, "lenet5": 2},
            slim_epochs=8, slim_l1=5e-3, slim_amount=0.5, slim_finetune=4,
            structured_amount=0.5)
QUICK = dict(lr=3e-3, batch=64, ft_lr=0.01,
             prune_steps=3, prune_epochs={"lenet300": 8, "lenet5": 8},
             prune_final={"lenet300": 4, "lenet5": 4}, subset=None, cmp_epochs=10,
             gran_sparsities={"lenet300": (0.5, 0.8), "lenet5": (0.5, 0.8)}, gran_epochs=4,
             hw_images={"lenet300": 5, "lenet5": 5}, share_epochs=4,
             prog_fraction=0.2, prog_rounds=6, floor_drop=0.02, prog_seeds=(0, 1, 2),
             tern_epochs={"lenet300": 8, "lenet5": 8},
             slim_epochs=10, slim_l1=1e-3, slim_amount=0.5, slim_finetune=4,
             structured_amount=0.5)

# the baselines of --quick (the 8x8 digits: 1,347 training images, 300 held out)
QUICK_RECIPES = {"lenet300": Recipe(epochs=30, augment=False, batch_size=64, val=300),
                 "lenet5": Recipe(epochs=30, augment=False, batch_size=64, val=300)}
# the code a baseline depends on (its cache key hashes these files)
BASELINE_CODE = (_baseline_mod, _train_mod, _models_mod, _prune_mod)

# the library code a pruned model depends on (hashed into its cache key, with its settings)
PRUNE_CODE = (*BASELINE_CODE, _schedule_mod, _distill_mod, _graph_mod, _granularity_mod)
# The runner's own procedure for a cached step is not hashed (editing the tables would
# invalidate every model): bump its number here when the procedure changes.
PROCEDURE_VERSION = {"han": 1, "slim": 1}

# Per-layer keep fractions at the end of magnitude pruning, in the spirit of Han et al. 2015
# (first layers are kept denser where they are small; the big FC layers are pruned hardest).
LAYER_KEEP = {
    "lenet300": [0.075, 0.10, 0.30],
    "lenet5": [0.66, 0.15, 0.07, 0.20],
}
# Weight-sharing bits per layer (Deep Compression used 8 bits for conv, 5 for FC layers).
SHARE_BITS = {"lenet300": [5, 5, 5], "lenet5": [8, 8, 5, 5]}


class Ctx:
    def __init__(self, ds, cfg, quick, progress, seed, cache=None, command=""):
        self.ds, self.cfg, self.quick, self.progress, self.seed = ds, cfg, quick, progress, seed
        self.records: list[dict] = []
        self.extra: dict = {}
        self.t0 = time.time()
        self.cache = cache if cache is not None else ModelCache(enabled=False, log=self.log)
        self.command = command
        self.data_hash = tensor_hash(ds.x_train, ds.y_train, ds.x_test, ds.y_test)
        self.baselines: dict[str, dict] = {}
        self.factories: dict = {}       # model label -> factory(bn=False)
        self.factories_bn: dict = {}    # model label -> factory(bn=...)
        self.recipes: dict = {}         # model label -> baseline Recipe
        self.export_dir: Path | None = None
        # every experiment trains on the baseline's training split; the validation split is
        # for choices
        val = (QUICK_RECIPES if quick else RECIPES)["lenet300"].val
        tr, va = split_validation(ds.x_train.shape[0], val, seed)
        self.x_fit, self.y_fit = ds.x_train[tr], ds.y_train[tr]
        self.x_val, self.y_val = ds.x_train[va], ds.y_train[va]

    def sub(self, n):
        """The first ``n`` images of the training split (all of it for ``None``)."""
        if n is None or n >= self.x_fit.shape[0]:
            return self.x_fit, self.y_fit
        return self.x_fit[:n], self.y_fit[:n]

    def finetune_settings(self, name):
        """What :meth:`finetune_options` does, for cache keys and records."""
        return {"optimizer": "sgd", "lr_schedule": "cosine", "weight_decay": 5e-4,
                "augment": "flip_crop(2)" if self.recipes[name].augment else None}

    def finetune_options(self, name):
        """Fine-tuning as the baseline was trained: SGD (Nesterov), weight decay 5e-4, the
        baseline's augmentation; cosine decay from the given rate in every call."""
        opts = {"optimizer": "sgd", "lr_schedule": "cosine", "weight_decay": 5e-4}
        if self.recipes[name].augment:
            opts["augment"] = flip_crop(2)
        return opts

    def key(self, step, settings, modules, parents=(), seed=None):
        """The cache key of a step: its settings, the seed, the data, the code, its parents."""
        return self.cache.key(step, settings=settings,
                              seed=self.seed if seed is None else seed, data=self.data_hash,
                              code=source_hash(modules), parents=list(parents))

    def split(self, seed):
        """``(x_fit, y_fit, x_val, y_val)``: the baseline split of ``seed``."""
        if seed == self.seed:
            return self.x_fit, self.y_fit, self.x_val, self.y_val
        val = (QUICK_RECIPES if self.quick else RECIPES)["lenet300"].val
        tr, va = split_validation(self.ds.x_train.shape[0], val, seed)
        return self.ds.x_train[tr], self.ds.y_train[tr], self.ds.x_train[va], self.ds.y_train[va]

    def baseline(self, key, name, factory, bn=False, seed=None):
        """The dense baseline of a model (trained by its recipe, or from the cache):
        ``(model, acc_test, cache key)``; ``seed`` other than the run's seed: another
        baseline (with its own validation split) for repeated experiments, whose info goes to
        ``self.baselines[label + "-seed<n>"]``."""
        seed = self.seed if seed is None else seed
        recipe = (QUICK_RECIPES if self.quick else RECIPES)[key]
        label = f"{name}{'-bn' if bn else ''}"
        self.recipes[label] = recipe
        self.factories[label] = lambda: factory(bn=bn)
        self.factories_bn[name] = factory
        ck = self.key("baseline", {"model": label, "recipe": recipe.to_dict()},
                      BASELINE_CODE, seed=seed)
        tag = label if seed == self.seed else f"{label}-seed{seed}"

        def build():
            self.log(f"training the {tag} baseline ({recipe.epochs} epochs)")
            return train_baseline(factory(bn=bn), self.ds, recipe, seed=seed,
                                  progress=self.progress, log=self.log, desc=f"dense {tag}")

        model, info, cached = self.cache.get_or_train(ck, lambda: factory(bn=bn), build,
                                                      f"{tag} baseline")
        self.baselines[tag] = {"key": ck, "acc_test": round(info["acc_test"], 4),
                               "acc_val": info["acc_val"] and round(info["acc_val"], 4),
                               "recipe": info["recipe"], "seed": seed,
                               "seconds": info["seconds"], "cached": cached}
        self.log(f"{tag} baseline: test {100 * info['acc_test']:.2f}%, validation "
                 f"{100 * (info['acc_val'] or 0):.2f}%")
        return model, info["acc_test"], ck

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
        base = self.baselines.get(model_name)
        rec["baseline"] = base and {k: base[k] for k in ("acc_test", "acc_val", "recipe", "key")}
        rec["seed"] = self.seed
        rec["command"] = self.command
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


def han_and_deep_compression(ctx, name, dense, acc_dense, base_key):
    """Iterative magnitude pruning to ~8% (with distillation), then weight sharing + Huffman.
    The pruned model comes from the cache when its inputs are unchanged."""
    c = ctx.cfg
    keep = LAYER_KEEP[name]
    settings = {"procedure": PROCEDURE_VERSION["han"], "keep": keep, "steps": c["prune_steps"],
                "epochs": c["prune_epochs"][name], "final": c["prune_final"][name],
                "lr": c["ft_lr"], "batch": c["batch"], "kd": [4.0, 0.7],
                "finetune": ctx.finetune_settings(name)}
    ck = ctx.key("prune-han", settings, PRUNE_CODE, [base_key])

    def build():
        m = copy.deepcopy(dense)
        final = _total_sparsity(m, keep)
        ctx.log(f"pruning {name} to {100 * (1 - final):.2f}% of the weights "
                f"({c['prune_steps']} rounds)")
        _, hist = iterative_prune(
            m, ctx.x_fit, ctx.y_fit, final, schedule="iterative", steps=c["prune_steps"],
            epochs_per_step=c["prune_epochs"][name], final_epochs=c["prune_final"][name],
            layer_sparsity=_layer_sparsity(m, keep, final), lr=c["ft_lr"],
            batch_size=c["batch"], loss_fn=distillation_loss(dense, 4.0, 0.7),
            x_val=ctx.x_val, y_val=ctx.y_val, train_options=ctx.finetune_options(name),
            seed=ctx.seed, progress=ctx.progress)
        return m, {"history": hist.rounds}

    m, meta, _ = ctx.cache.get_or_train(ck, ctx.factories[name], build, f"pruned {name}")
    masks = Masks(m)
    _, rep = ctx.record(name, "prune-iterative-kd (Han 2015)", m, dense, acc_dense,
                        schedule="iterative", steps=c["prune_steps"], cache_key=ck,
                        acc_val=round(evaluate(m, ctx.x_val, ctx.y_val), 4),
                        density={k: round(v, 4) for k, v in masks.density().items()})
    ctx.extra.setdefault("density", {})[name] = masks.density()
    ctx.extra.setdefault("prune_history", {})[name] = meta["history"]
    if ctx.export_dir is not None:
        _export_pruned(ctx, name, m, dense, acc_dense, masks, settings, ck)
    pruned = copy.deepcopy(m)
    # Deep Compression: k-means weight sharing, centroid fine-tuning, Huffman
    bits = dict(zip(weight_layers(m), SHARE_BITS[name]))
    books = share_weights(m, bits)
    acc_shared = ctx.acc(m)
    finetune_centroids(m, books, ctx.x_fit, ctx.y_fit, epochs=c["share_epochs"], lr=1e-4,
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


def _export_pruned(ctx, name, m, dense, acc_dense, masks, settings, ck):
    """Write the pruned float model (masks made permanent) and what it is to
    ``<export_dir>/<name>-pruned.pt`` and ``.json``."""
    out = Path(ctx.export_dir)
    out.mkdir(parents=True, exist_ok=True)
    plain = remove_masks(copy.deepcopy(m))
    torch.save(plain.state_dict(), out / f"{name}-pruned.pt")
    factory = {"lenet-5": "zeroskip.sw.models.lenet5()",
               "lenet-300-100": "zeroskip.sw.models.lenet_300_100()"}.get(name, name)
    info = {"model": name, "factory": factory,
            "inputs": f"images in [0, 1], (N, {', '.join(map(str, ctx.ds.image_shape))})",
            "dataset": ctx.ds.name, "acc_dense_test": round(acc_dense, 4),
            "acc_pruned_test": round(ctx.acc(m), 4),
            "acc_pruned_val": round(evaluate(m, ctx.x_val, ctx.y_val), 4),
            "density": {k: round(v, 5) for k, v in masks.density().items()},
            "weights_kept": masks.kept(), "weights_total": masks.total(),
            "seed": ctx.seed, "command": ctx.command, "settings": settings,
            "baseline": ctx.baselines.get(name), "cache_key": ck}
    (out / f"{name}-pruned.json").write_text(json.dumps(_jsonable(info), indent=1) + "\n")
    ctx.log(f"exported {out / (name + '-pruned.pt')}")


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


# The hardware view's array: 8 PEs with the default timing parameters (index bits, FIFO,
# finalize lanes); the memories are sized so that every model of the comparison fits (the
# cycles do not depend on memory depths; a board's array is smaller, see docs/boards.md).
HW_VIEW = HwParams(pes=8, entry_depth=1 << 17, ptr_depth=1 << 15, row_depth=1024,
                   act_depth=1 << 14)


def hardware_view(ctx, model, n_images):
    """What the 8-PE array (:data:`HW_VIEW`) sees of ``model``: the packed model file's
    bytes and the cycle model's mean cycles per image over the first ``n_images`` test
    images."""
    params = HW_VIEW
    plain = remove_masks(copy.deepcopy(model))
    qm = quantize_model(plain, ctx.x_fit[:2000], params)
    pm = pack_model(qm, params)
    xs = qm.quantize_input(ctx.ds.x_test[:n_images])
    cyc = [sum(lc.cycles for lc in predict_cycles(pm, x)) for x in xs]
    return {"packed_bytes": len(to_bytes(pm)),
            "stream_bytes": int(sum(pl.stream_bytes(params) for pl in pm.layers)),
            "cycles_per_image": round(float(sum(cyc)) / len(cyc), 1), "pes": 8,
            "images": len(cyc)}


def granularities(ctx, name, dense, acc_dense):
    """Accuracy vs sparsity per granularity, every point with the same fine-tuning (the
    baseline's recipe: SGD, cosine decay, ``gran_epochs`` epochs on the whole training
    split), the relative-index bits each granularity needs, and the hardware's view (packed
    bytes, cycles on the 8-PE array). The classifier (last layer) is not pruned: at filter
    granularity that would delete whole classes."""
    c = ctx.cfg
    table = []
    hidden = list(weight_layers(dense))[:-1]
    E = c["gran_epochs"]
    for g in GRANULARITIES:
        for s in c["gran_sparsities"][name]:
            m = copy.deepcopy(dense)
            masks = granular_prune(m, s, g, layers=hidden)
            acc_pruned = ctx.acc(m)
            train(m, ctx.x_fit, ctx.y_fit, epochs=E, lr=c["ft_lr"], batch_size=c["batch"],
                  seed=ctx.seed, progress=ctx.progress, desc=f"{g} s={s}",
                  **ctx.finetune_options(name))
            ibits = sum(index_cost(mk, g, 4).bits for mk in masks.masks.values())
            ibits_elem = sum(index_cost(mk, "element", 4).bits for mk in masks.masks.values())
            hw = hardware_view(ctx, m, c["hw_images"][name])
            rec, _ = ctx.record(name, f"granularity-{g}-{s}", m, dense, acc_dense,
                                stored=False, granularity=g, sparsity=s,
                                acc_pruned=round(acc_pruned, 4), finetune_epochs=E,
                                acc_val=round(evaluate(m, ctx.x_val, ctx.y_val), 4),
                                index_bits_4bit=ibits, index_bits_element_same_mask=ibits_elem,
                                hw=hw)
            table.append(rec)
    ctx.extra.setdefault("hw_dense", {})[name] = hardware_view(ctx, dense, c["hw_images"][name])
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


def slimming(ctx, name, key, factory):
    """Network slimming (Liu et al. 2017): the BatchNorm variant's baseline (same recipe),
    trained further with L1 on the BN scales (cached), the globally smallest
    ``slim_amount`` of the conv channels removed by BN scale, then fine-tuned (the baseline's
    recipe at ``ft_lr``)."""
    c = ctx.cfg
    label = name + "-bn"
    base, acc_base, bkey = ctx.baseline(key, name, factory, bn=True)
    settings = {"procedure": PROCEDURE_VERSION["slim"], "l1": c["slim_l1"],
                "epochs": c["slim_epochs"], "lr": c["ft_lr"], "batch": c["batch"],
                "finetune": ctx.finetune_settings(label)}
    ck = ctx.key("slim-l1", settings, (*PRUNE_CODE, _structured_mod), [bkey])

    def build():
        m = copy.deepcopy(base)
        train(m, ctx.x_fit, ctx.y_fit, epochs=c["slim_epochs"], lr=c["ft_lr"],
              batch_size=c["batch"], extra_loss=bn_l1_penalty(c["slim_l1"]), seed=ctx.seed,
              progress=ctx.progress, desc="slimming L1 on BN", **ctx.finetune_options(label))
        return m, {}

    m, _, _ = ctx.cache.get_or_train(ck, ctx.factories[label], build, f"L1-trained {label}")
    acc_l1 = ctx.acc(m)
    p0 = count_params(base)
    ch0 = sum(int(mm.out_channels) for mm in weight_layers(base).values()
              if hasattr(mm, "out_channels"))
    s = prune_structured(m, c["slim_amount"], criterion="bn", scope="global", normalize=None)
    acc_cut = ctx.acc(s)
    train(s, ctx.x_fit, ctx.y_fit, epochs=c["slim_finetune"], lr=c["ft_lr"],
          batch_size=c["batch"], seed=ctx.seed, progress=ctx.progress,
          desc="slimming fine-tune", **ctx.finetune_options(label))
    chans = {n: int(mm.out_channels) for n, mm in weight_layers(s).items()
             if hasattr(mm, "out_channels")}
    ctx.record(label, f"slimming-bn-{c['slim_amount']} (Liu 2017)", s, base, acc_base,
               kept=count_params(s) / p0, acc_before_finetune=round(acc_cut, 4),
               acc_after_l1=round(acc_l1, 4), params=count_params(s), params_dense=p0,
               channels=chans, channels_removed=round(1 - sum(chans.values()) / ch0, 4),
               l1=c["slim_l1"], l1_epochs=c["slim_epochs"], finetune_epochs=c["slim_finetune"],
               acc_val=round(evaluate(s, ctx.x_val, ctx.y_val), 4))


def progressive(ctx, name, dense, acc_dense, key):
    """Progressive global (de-biased) vs uniform neuron pruning to an accuracy floor on the
    validation split (the baseline's validation accuracy minus ``floor_drop``), repeated for
    ``prog_seeds``: each seed has its own baseline (and split), and seeds the fine-tuning."""
    c = ctx.cfg
    summary: dict = {"global": [], "uniform": []}
    for seed in c["prog_seeds"]:
        if seed == ctx.seed:
            base, acc_base = dense, acc_dense
        else:
            base, acc_base, _ = ctx.baseline(key, name, ctx.factories_bn[name], seed=seed)
        x_fit, y_fit, x_val, y_val = ctx.split(seed)
        x, y = x_fit[:c["subset"]], y_fit[:c["subset"]]
        acc_val = evaluate(base, x_val, y_val)
        floor = acc_val - c["floor_drop"]
        p0 = count_params(base)
        out = {}
        for mode in ("global", "uniform"):
            r = progressive_prune(base, x, y, x_val, y_val, floor, mode=mode,
                                  fraction=c["prog_fraction"], criterion="l1",
                                  normalize="mean", finetune_epochs=1,
                                  max_rounds=c["prog_rounds"], lr=c["lr"] / 2,
                                  batch_size=c["batch"], seed=seed, progress=ctx.progress)
            out[mode] = r
            suffix = "" if seed == ctx.seed else f"-seed{seed}"
            rec, _ = ctx.record(name, f"progressive-{mode}{suffix}", r.model, base, acc_base,
                                kept=r.params / p0, params=r.params, params_dense=p0,
                                floor_val=round(floor, 4), acc_val_dense=round(acc_val, 4),
                                acc_val=round(evaluate(r.model, x_val, y_val), 4),
                                rounds=len(r.history) - 1, prog_seed=seed)
            if seed != ctx.seed:
                rec["seed"] = seed
                rec["baseline"] = {k: ctx.baselines[f"{name}-seed{seed}"][k]
                                   for k in ("acc_test", "acc_val", "recipe", "key")}
            summary[mode].append({"seed": seed, "params": r.params, "params_dense": p0,
                                  "acc_test": rec["acc_final"], "acc_dense": acc_base,
                                  "acc_val": rec["acc_val"], "floor_val": floor})
        if seed == ctx.seed:
            ctx.extra.setdefault("progressive", {})[name] = {
                m: [{"round": h["round"], "params": h["params"], "acc_val": round(h["acc"], 4)}
                    for h in r.history] for m, r in out.items()}
            # uniform pruning to exactly the global result's parameter count, same budget
            target = out["global"].params
            u = uniform_to_params(base, target)
            train(u, x, y, epochs=2, lr=c["lr"] / 2, batch_size=c["batch"], seed=seed,
                  progress=ctx.progress, desc="uniform @ global params")
            ctx.record(name, "uniform-at-global-params", u, base, acc_base,
                       kept=count_params(u) / p0, params=count_params(u), params_dense=p0)
    ctx.extra.setdefault("progressive_seeds", {})[name] = summary


def quant_and_lowrank(ctx, name, dense, acc_dense):
    """int8, TWN and TTQ (Adam, the baseline's augmentation), truncated SVD + 1 epoch."""
    c = ctx.cfg
    x, y = ctx.x_fit, ctx.y_fit
    aug = {"augment": flip_crop(2)} if ctx.recipes[name].augment else {}
    ctx.record(name, "dense-int8", dense, dense, acc_dense)
    t = copy.deepcopy(dense)
    train_ternary(t, x, y, epochs=c["tern_epochs"][name], lr=5e-4, batch_size=c["batch"],
                  seed=ctx.seed, progress=ctx.progress, train_options=aug)
    ctx.record(name, "ternary (TWN)", t, dense, acc_dense, epochs=c["tern_epochs"][name],
               threshold="0.7 * mean|w|")
    t = copy.deepcopy(dense)
    scales = train_ttq(t, x, y, epochs=c["tern_epochs"][name], lr=5e-4, t=0.05,
                       batch_size=c["batch"], seed=ctx.seed, progress=ctx.progress,
                       train_options=aug)
    ctx.record(name, "ternary (TTQ)", t, dense, acc_dense, epochs=c["tern_epochs"][name],
               threshold="0.05 * max|w|",
               scales={n: [round(a, 5), round(b, 5)] for n, (a, b) in scales.items()})
    for energy in (0.9, 0.6):
        lr_model, ranks = low_rank(dense, energy=energy)
        acc_svd = ctx.acc(lr_model)
        train(lr_model, x, y, epochs=1, lr=c["lr"] / 2, batch_size=c["batch"], seed=ctx.seed,
              progress=ctx.progress, desc=f"low-rank e={energy}", **aug)
        ctx.record(name, f"low-rank-svd-energy-{energy}", lr_model, dense, acc_dense,
                   kept=count_params(lr_model) / count_params(dense), ranks=ranks,
                   acc_before_finetune=round(acc_svd, 4))


EXPERIMENTS = ("han", "quant", "schedules", "structured", "progressive", "granularity",
               "slimming")


def run(dataset: str = "fashion-mnist", *, quick: bool = False, out: str = "docs",
        data_path: str | None = None, models=("lenet300", "lenet5"), seed: int = 0,
        progress: bool = True, plots: bool = True, only=None, merge: bool = False,
        cache: ModelCache | None = None, command: str = "",
        export_dir: str | None = None) -> dict:
    """Run the experiments; ``only`` restricts them to some of :data:`EXPERIMENTS` (the dense
    baseline always runs); ``merge`` keeps the other records of an existing
    ``<out>/results.json`` and replaces those with the same model and method."""
    only = set(only or EXPERIMENTS)
    torch.manual_seed(seed)
    cfg = QUICK if quick else FULL
    ds = load_dataset("digits" if quick else dataset, data_path)
    ctx = Ctx(ds, cfg, quick, progress, seed, cache, command)
    ctx.export_dir = Path(export_dir) if export_dir else None
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
        cfg["prune_epochs"][name] = cfg["prune_epochs"][key]
        cfg["prune_final"][name] = cfg["prune_final"][key]
        cfg["tern_epochs"][name] = cfg["tern_epochs"][key]
        cfg["gran_sparsities"][name] = cfg["gran_sparsities"][key]
        cfg["hw_images"][name] = cfg["hw_images"][key]
        dense, acc_dense, base_key = ctx.baseline(key, name, factories[key])
        ctx.record(name, "dense", dense, dense, acc_dense)
        if "han" in only:
            han_and_deep_compression(ctx, name, dense, acc_dense, base_key)
        if "quant" in only:
            quant_and_lowrank(ctx, name, dense, acc_dense)
        if key == "lenet300":
            if "schedules" in only:
                schedules(ctx, name, dense, acc_dense)
            if "structured" in only:
                structured(ctx, name, dense, acc_dense)
            if "progressive" in only:
                progressive(ctx, name, dense, acc_dense, key)
        if "granularity" in only:
            granularities(ctx, name, dense, acc_dense)
        if key == "lenet5":
            if "slimming" in only:
                slimming(ctx, name, key, factories[key])
    ctx.extra["seconds"] = round(time.time() - ctx.t0, 1)
    ctx.extra["quick"] = quick
    ctx.extra["baselines"] = ctx.baselines
    ctx.extra["command"] = command
    ctx.extra["cache"] = {"hits": ctx.cache.hits, "misses": ctx.cache.misses,
                          "dir": str(ctx.cache.root) if ctx.cache.enabled else None}
    if set(only) != set(EXPERIMENTS):
        ctx.extra["merged_runs"] = [{"only": sorted(only), "models": list(models)}]
    outdir = Path(out)
    (outdir / "img").mkdir(parents=True, exist_ok=True)
    result = {"records": ctx.records, "extra": _jsonable(ctx.extra)}
    old_path = outdir / "results.json"
    if merge and old_path.exists():
        result = merge_results(_read_json(old_path, "--merge"), result, sorted(only),
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
        elif k in ("seconds", "command", "cache"):
            pass
        elif k not in ("quick", "merged_runs"):
            extra[k] = v
    methods = sorted({r["method"] for r in new["records"] if r["method"] != "dense"})
    extra.setdefault("merged_runs", []).append(
        {"only": only or [], "models": models or sorted({r["model"] for r in new["records"]}),
         "methods": methods, "seconds": new.get("extra", {}).get("seconds", 0),
         "command": new.get("extra", {}).get("command", "")})
    return {"records": recs, "extra": extra}


def _read_json(path: Path, what: str) -> dict:
    try:
        obj = json.loads(path.read_text())
    except FileNotFoundError:
        raise ZeroskipError(f"{what}: {path} does not exist") from None
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ZeroskipError(f"{what}: {path} is not a readable results.json ({e})") from None
    if not isinstance(obj, dict) or not isinstance(obj.get("records"), list):
        raise ZeroskipError(f"{what}: {path} is not a results.json (no 'records' list)")
    return obj


def merge_file(new_path: str, out: str = "docs", plots: bool = True, note: str = "") -> dict:
    """Merge the ``results.json`` of a partial run into ``<out>/results.json`` and re-render
    ``results.md`` and the plots (what ``--merge-from`` does)."""
    outdir = Path(out)
    old = _read_json(outdir / "results.json", "the results to merge into")
    new = _read_json(Path(new_path), "--merge-from")
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
    grs = [r for r in result["records"] if r["method"].startswith("granularity-")]
    for model in dict.fromkeys(r["model"] for r in grs):
        recs = [r for r in grs if r["model"] == model]
        fig, ax = plt.subplots(figsize=(6, 4))
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
        fig.savefig(img / f"granularity_accuracy_{model}.png", dpi=110)
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
                ax.plot([h["params"] for h in hist], [100 * h.get("acc_val", h.get("acc", 0))
                                                      for h in hist], "o-",
                        label=f"{model} {mode}")
        ax.set_xscale("log")
        ax.set_xlabel("parameters")
        ax.set_ylabel("validation accuracy (%)")
        ax.set_title("progressive neuron pruning: global vs uniform")
        ax.legend(fontsize=8)
        fig.tight_layout()
        fig.savefig(img / "progressive.png", dpi=110)
        plt.close(fig)


# the experiments each model runs, and the method prefix that shows a record of it
_EXPERIMENT_PREFIX = {"han": "prune-iterative", "quant": "dense-int8", "schedules": "schedule-",
                      "structured": "structured-", "progressive": "progressive-",
                      "granularity": "granularity-", "slimming": "slimming-"}
_MODEL_EXPERIMENTS = {
    "lenet300": ("han", "quant", "schedules", "structured", "progressive", "granularity"),
    "lenet5": ("han", "quant", "granularity", "slimming")}
_LABELS = {"lenet300": ("lenet-300-100", "digits-mlp"), "lenet5": ("lenet-5", "digits-cnn")}


def _missing_experiments(recs) -> dict:
    """``{model: [experiments without a record]}`` for the models that have a dense record."""
    out = {}
    for key, exps in _MODEL_EXPERIMENTS.items():
        for label in _LABELS[key]:
            mine = [r["method"] for r in recs if r["model"].startswith(label)]
            if "dense" not in mine:
                continue
            miss = [e for e in exps
                    if not any(m.startswith(_EXPERIMENT_PREFIX[e]) for m in mine)]
            if miss:
                out[label] = miss
    return out


def _mean(v):
    return sum(v) / len(v) if v else 0.0


def _sd(v):
    if len(v) < 2:
        return 0.0
    m = _mean(v)
    return (sum((a - m) ** 2 for a in v) / (len(v) - 1)) ** 0.5


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
                 f"the same script (`{mr.get('command') or '--only ' + ','.join(mr['only'])}`, "
                 f"{mr.get('seconds', 0):.0f} s) merged in with `--merge`/`--merge-from`"
                 f"{': ' + mr['note'] if mr.get('note') else ''}. That run starts from the "
                 "baselines of the same cache (its `acc dense` column shows the baseline it "
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
    bases = extra.get("baselines", {})
    if bases:
        L.append("## Baselines\n")
        L.append("Every experiment starts from these dense models, trained by "
                 "`zeroskip.sw.baseline.train_baseline` (SGD with Nesterov momentum 0.9, "
                 "weight decay 5e-4, one-cycle schedule to the learning rate, a seeded "
                 "validation split held out of the training set; `augment`: random "
                 "left-right mirror and a random shift of up to 2 pixels) and cached by the "
                 "hash of their inputs. `acc val` is on the validation split, `acc test` on "
                 "the test set.\n")
        L.append("| model | seed | epochs | batch | lr | augment | acc val | acc test | "
                 "train s | cache key |")
        L.append("|---|---:|---:|---:|---:|---|---:|---:|---:|---|")
        for label, b in bases.items():
            r = b["recipe"]
            L.append(f"| {label} | {b['seed']} | {r['epochs']} | {r['batch_size']} | "
                     f"{r['lr']} | {'yes' if r['augment'] else 'no'} | {_pct(b['acc_val'])} | "
                     f"{_pct(b['acc_test'])} | {b['seconds']:.0f} | `{b['key'][:12]}` |")
        L.append("")
    if extra.get("command"):
        L.append(f"Command: `{extra['command']}` (each record of `results.json` carries the "
                 "command, seed and baseline it came from).\n")
    missing = _missing_experiments(recs)
    if missing:
        L.append("Not in these results (not yet run against these baselines): "
                 + "; ".join(f"{m}: {', '.join(e)}" for m, e in missing.items())
                 + " (`python -m zeroskip.experiments.results --only EXPERIMENTS --merge`).\n")
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
    grs = [r for r in recs if r["method"].startswith("granularity-")]
    for model in dict.fromkeys(r["model"] for r in grs):
        gr = [r for r in grs if r["model"] == model]
        old_style = "hw" not in gr[0]
        L.append(f"\n## Granularity (Mao et al. 2017): {model}\n")
        L.append("Per-layer pruning of every layer but the classifier at equal sparsity "
                 "(`sparsity` is over the pruned layers, `kept` in the table above over all "
                 "layers), then "
                 + ("one epoch of fine-tuning on a subset of the training set. " if old_style
                    else f"the same fine-tuning for every point ({gr[0]['finetune_epochs']} "
                    "epochs of the baseline's recipe on the whole training split, cosine "
                    "decay). ")
                 + "`index bits` = relative-index bits (4-bit deltas, fillers included) to "
                 "address the kept groups; `element index bits` = the same mask addressed "
                 "weight by weight. `packed bytes` = the zeroskip model file for the 8-PE "
                 "array (default timing parameters, memories sized to fit: `HW_VIEW` in "
                 "`results.py`); `cycles` = the cycle model's (`sw/cycles.py`) mean cycles "
                 f"per image over the first {(gr[0].get('hw') or {}).get('images', '-')} test "
                 "images.\n")
        L.append("| granularity | sparsity | acc after pruning | acc after fine-tune | "
                 "acc val | index bits | element index bits | packed bytes | cycles |")
        L.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
        for r in gr:
            hw = r.get("hw") or {}
            L.append(f"| {r['granularity']} | {r['sparsity']} | {_pct(r['acc_pruned'])} | "
                     f"{100 * r['acc_final']:.2f} | {_pct(r.get('acc_val'))} | "
                     f"{r['index_bits_4bit']} | {r['index_bits_element_same_mask']} | "
                     f"{hw.get('packed_bytes', '-')} | {hw.get('cycles_per_image', '-')} |")
        hd = extra.get("hw_dense", {}).get(model)
        if hd:
            L.append(f"\nThe dense model: {hd['packed_bytes']} packed bytes, "
                     f"{hd['cycles_per_image']} cycles per image.")
        base = extra.get("baselines", {}).get(model)
        if base and not old_style:
            floor = base["acc_val"] - 0.005
            L.append(f"\nAt the same accuracy (validation accuracy at least the baseline's "
                     f"{100 * base['acc_val']:.2f}% minus 0.5 points), the sparsest point of "
                     "each granularity:\n")
            L.append("| granularity | sparsity | acc test | packed bytes | cycles |")
            L.append("|---|---:|---:|---:|---:|")
            for g in GRANULARITIES:
                ok = [r for r in gr if r["granularity"] == g and r["acc_val"] >= floor]
                if not ok:
                    L.append(f"| {g} | none of the tested sparsities | - | - | - |")
                    continue
                r = max(ok, key=lambda r: r["sparsity"])
                L.append(f"| {g} | {r['sparsity']} | {100 * r['acc_final']:.2f} | "
                         f"{r['hw']['packed_bytes']} | {r['hw']['cycles_per_image']} |")
        L.append(f"\n![accuracy vs sparsity](img/granularity_accuracy_{model}.png)\n")
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
                    f"{h['params']} ({100 * h.get('acc_val', h.get('acc', 0)):.2f}%)"
                    for h in hist))
        seeds = extra.get("progressive_seeds", {})
        for model, runs in seeds.items():
            L.append(f"\n{model}, over {len(runs.get('global', []))} seeds (each with its own "
                     "baseline and validation split; floor = the baseline's validation "
                     "accuracy minus 1 point):\n")
            L.append("| mode | params kept (mean ± sd) | per seed | test acc (mean ± sd) | "
                     "loss vs baseline (points, mean) |")
            L.append("|---|---:|---|---:|---:|")
            for mode, rs in runs.items():
                if not rs:
                    continue
                pk = [r["params"] / r["params_dense"] for r in rs]
                ac = [r["acc_test"] for r in rs]
                ls = [100 * (r["acc_dense"] - r["acc_test"]) for r in rs]
                L.append(f"| {mode} | {100 * _mean(pk):.2f}% ± {100 * _sd(pk):.2f} | "
                         + ", ".join(f"{100 * v:.2f}%" for v in pk)
                         + f" | {100 * _mean(ac):.2f}% ± {100 * _sd(ac):.2f} | "
                         f"{_mean(ls):+.2f} |")
            g, u = runs.get("global", []), runs.get("uniform", [])
            wins = sum(a["params"] < b["params"] for a, b in zip(g, u))
            L.append(f"\nGlobal ends with fewer parameters than uniform in {wins} of "
                     f"{len(g)} seeds.")
        L.append("\nParameters (validation accuracy) after each round, rounds below the floor "
                 "included: "
                 "after such a round the search retries from the last model at or above the "
                 "floor with half the fraction (twice at most); the result is the last model "
                 "at or above the floor.\n")
        L.append("![progressive](img/progressive.png)\n")
    return "\n".join(L) + "\n"


def _targets(recs, quick):
    out = []

    def line(ok, text):
        out.append(f"- **{'met' if ok else 'NOT met'}**: {text}")

    for model, ratio_target in (("lenet-300-100", 40), ("lenet-5", 40),
                                ("digits-mlp", 40), ("digits-cnn", 40)):
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
        if g and u and "floor_val" in g:
            gs = [r for r in recs if r["model"] == model
                  and r["method"].startswith("progressive-global")]
            us = {r.get("prog_seed"): r for r in recs if r["model"] == model
                  and r["method"].startswith("progressive-uniform")}
            pairs = [(a, us[a.get("prog_seed")]) for a in gs if a.get("prog_seed") in us]
            wins = sum(a["params"] < b["params"] for a, b in pairs)
            line(len(pairs) >= 3 and wins == len(pairs),
                 f"{model} progressive global pruning reaches the same validation floor "
                 f"(baseline minus 1 point) with fewer parameters than uniform in every one of "
                 f">= 3 seeds: fewer in {wins} of {len(pairs)}; params global "
                 + ", ".join(str(a["params"]) for a, _ in pairs) + " vs uniform "
                 + ", ".join(str(b["params"]) for _, b in pairs))
            ua = _find(recs, model, "uniform-at-global-params")
            if ua:
                out.append(f"  - at an equal parameter count ({ua['params']}, seed "
                           f"{g['seed']}), uniform pruning reaches {100 * ua['acc_final']:.2f}% "
                           f"vs global {100 * g['acc_final']:.2f}%")
    for r in recs:
        if r["method"].startswith("slimming-"):
            loss = 100 * (r["acc_dense"] - r["acc_final"])
            line(r["channels_removed"] >= 0.5 and loss <= 0.5,
                 f"{r['model']} network slimming removes at least 50% of the conv channels "
                 f"with at most 0.5 points loss: {100 * r['channels_removed']:.1f}% removed "
                 f"({100 * r['params_kept_fraction']:.1f}% of the parameters left), accuracy "
                 f"{100 * r['acc_final']:.2f}% vs BN baseline {100 * r['acc_dense']:.2f}% "
                 f"({loss:+.2f} points loss)")
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
    ap.add_argument("--export-dir", default=None, metavar="DIR",
                    help="also write the pruned float models (<model>-pruned.pt state_dict "
                         "and .json: factory, accuracies, density per layer) to DIR")
    ap.add_argument("--no-cache", action="store_true",
                    help="train everything afresh and store nothing (the cache is "
                         "$ZEROSKIP_RESULTS_CACHE or the user cache dir's zeroskip/results)")
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
        try:
            merge_file(a.merge_from, a.out, plots=not a.no_plots, note=a.note)
        except ZeroskipError as e:
            print(f"error: {e}", file=sys.stderr)
            return 1
        return 0
    command = " ".join(["python -m zeroskip.experiments.results",
                        *(shlex.quote(v) for v in (sys.argv[1:] if argv is None else argv))])
    try:
        run(a.dataset, quick=a.quick, out=a.out, data_path=a.data_path, models=models,
            seed=a.seed, progress=not a.no_progress, plots=not a.no_plots, only=only,
            merge=a.merge, cache=ModelCache(enabled=not a.no_cache), command=command,
            export_dir=a.export_dir)
    except ZeroskipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
