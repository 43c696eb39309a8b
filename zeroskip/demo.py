"""``zeroskip demo``: the whole flow on real data, ending on the Verilated RTL.

1. train a network: by default the small CNN :func:`~zeroskip.sw.models.digits_cnn` (two 3x3
   convolutions with padding and BatchNorm, max pooling, two FC layers) on scikit-learn's 8x8
   digits; ``--model mlp`` the MLP 64-256-128-10; ``--dataset fashion-mnist`` LeNet-5 (the
   Caffe 20-50-500-10 variant, or ``--model lenet5_classic``) on Fashion-MNIST, when that data
   set is installed; ``--load FILE`` takes a trained (and pruned) state_dict instead of
   training;
2. prune it to ``sparsity`` in three magnitude-pruning steps with fine-tuning (Han et al.
   2015), layer by layer (:func:`prune_plan`), distilled from the dense model;
3. quantize (:func:`~zeroskip.sw.quant.quantize_model`: BatchNorm folded, int8 weights, uint8
   activations, integer requantization) and pack it;
4. run every test image (or ``images``) through the integer reference and through the Verilated
   RTL, checking that every output of every image is bit-exact;
5. run the same hardware on the same model packed dense, with activation skipping off, on the
   first images, and report the measured speedup against the ideal one (dense MACs / useful
   MACs, over the conv pixels the hardware computes: ``docs/performance.md``).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

__all__ = ["run_demo", "demo", "DemoSpec", "DEMOS", "LENET_PARAMS", "prune_plan", "prune_finetune",
           "demo_spec", "quick_pruned_lenet5"]

#: Hardware parameters for LeNet-5 on Fashion-MNIST (28x28 maps: the activation buffer holds
#: conv1's 20x12x12 pooled output; the dense packing of the 800x500 layer needs 50 K entries
#: a PE); the conv bench uses the same ones, so one compiled simulator serves both.
LENET_PARAMS = dict(entry_depth=1 << 16, ptr_depth=4096, row_depth=256, act_depth=8192,
                    max_layers=8)


@dataclass(frozen=True)
class DemoSpec:
    """What the demo trains for one (data set, model) pair."""
    dataset: str
    model: str
    factory: str                  # a name in zeroskip.sw.models.FACTORIES
    sparsity: float               # default fraction of weights pruned
    epochs: int                   # training epochs (``quick``: ``quick_epochs``)
    quick_epochs: int
    lr: float
    finetune_epochs: int          # per pruning step
    batch_size: int = 64
    train_images: int | None = None   # a subset of the training set (None: all of it)
    images: int | None = None     # default test images run on the RTL (None: all)
    dense_images: int = 16        # images of the dense baseline run
    big: bool = False             # LENET_PARAMS instead of the default HwParams


DEMOS = {
    ("digits", "cnn"): DemoSpec("digits", "cnn", "digits_cnn", 0.8, 30, 8, 3e-3, 15),
    ("digits", "mlp"): DemoSpec("digits", "mlp", "digits_mlp", 0.9, 40, 8, 2e-3, 20),
    ("fashion-mnist", "lenet5"): DemoSpec("fashion-mnist", "lenet5", "lenet5", 0.93, 2, 1,
                                          2e-3, 1, batch_size=128, train_images=20000,
                                          images=200, dense_images=2, big=True),
    ("fashion-mnist", "lenet5_classic"): DemoSpec("fashion-mnist", "lenet5_classic",
                                                  "lenet5_classic", 0.9, 2, 1, 2e-3, 1,
                                                  batch_size=128, train_images=20000,
                                                  images=200, dense_images=2, big=True),
}
_DEFAULT_MODEL = {"digits": "cnn", "fashion-mnist": "lenet5"}


def demo_spec(dataset: str, model: str | None):
    """The :class:`DemoSpec` for ``dataset`` and ``model`` (default: the data set's CNN)."""
    from zeroskip.sw.errors import ZeroskipError
    dataset = dataset.lower().replace("_", "-")
    if dataset not in _DEFAULT_MODEL:
        raise ZeroskipError(f"--dataset {dataset}: choose digits or fashion-mnist")
    model = model or _DEFAULT_MODEL[dataset]
    if (dataset, model) not in DEMOS:
        have = ", ".join(m for d, m in DEMOS if d == dataset)
        raise ZeroskipError(f"--model {model} does not run on {dataset}; choose {have}")
    return DEMOS[dataset, model]


def _say(msg: str) -> None:
    print(msg, flush=True)


def prune_plan(model: nn.Module, sparsity: float) -> dict[str, float]:
    """Per-layer fractions to prune: ``sparsity`` for every layer of an MLP; for a CNN, at most
    half of the first convolution (a few weights per channel, each seen by every pixel) and at
    most 80% of the classifier (after Han et al. 2015, who keep 66% of LeNet-5's conv1 and
    19% of its last layer)."""
    from zeroskip.sw import prune
    layers = prune.prunable_layers(model)
    names = list(layers)
    cnn = isinstance(layers[names[0]], nn.Conv2d)
    plan = {n: sparsity for n in names}
    if cnn:
        plan[names[0]] = min(sparsity, 0.5)
        plan[names[-1]] = min(sparsity, 0.8)
    return plan


def prune_finetune(model: nn.Module, x: torch.Tensor, y: torch.Tensor, sparsity: float, *,
                   epochs: int, lr: float = 1e-3, batch_size: int = 64, seed: int = 0,
                   steps: int = 3, progress: bool = True, distill: bool = True) -> nn.Module:
    """Prune ``model`` in place to the :func:`prune_plan` of ``sparsity`` in ``steps``
    magnitude-pruning steps, fine-tuning ``epochs`` after each; the masks are then removed
    (plain layers with zeros, for the quantizer). Returns ``model``.

    ``distill`` (default): the fine-tuning learns from the dense model's soft targets as well
    as the labels (:func:`zeroskip.sw.compress.distillation_loss`, Hinton et al. 2015). On the
    demo's digits CNN at 80% sparsity that halves the loss of accuracy (3 seeds: 1.4 points
    lost on average against 2.2 without)."""
    from zeroskip.sw import prune, train
    from zeroskip.sw.compress import distillation_loss
    loss_fn = distillation_loss(model) if distill else None
    plan = prune_plan(model, sparsity)
    for step in range(1, steps + 1):
        target = {n: 1 - (1 - s) ** (step / steps) for n, s in plan.items()}
        prune.magnitude_prune(model, target, scope="layer")
        train.train(model, x, y, epochs=epochs, lr=lr, batch_size=batch_size, seed=seed + step,
                    progress=progress, loss_fn=loss_fn,
                    desc=f"  fine-tune {1 - (1 - sparsity) ** (step / steps):.0%}")
    prune.remove_masks(model)
    return model


def quick_pruned_lenet5(arch: str = "lenet5", seed: int = 0, ds=None,
                        progress: bool = False) -> tuple[nn.Module, float, float]:
    """A quickly trained and pruned LeNet-5 on Fashion-MNIST (the demo's recipe: 2 epochs on
    20,000 training images, pruned in 3 steps of one fine-tuning epoch, without distillation:
    the recipe ``docs/performance.md``'s figures were measured with): **not** a well-trained
    baseline, a stand-in where none is given. Returns ``(model, float dense accuracy, float
    pruned accuracy)`` on the test set."""
    from zeroskip.sw import data, models, train
    spec = DEMOS["fashion-mnist", arch]
    ds = ds or data.load_fashion_mnist()
    torch.manual_seed(seed)
    n = spec.train_images
    xt, yt = ds.x_train[:n], ds.y_train[:n]
    model = models.FACTORIES[spec.factory]()
    train.train(model, xt, yt, epochs=spec.epochs, lr=spec.lr, batch_size=spec.batch_size,
                seed=seed, progress=progress, desc="  training")
    acc = train.evaluate(model, ds.x_test, ds.y_test)
    prune_finetune(model, xt, yt, spec.sparsity, epochs=spec.finetune_epochs, lr=spec.lr / 2,
                   batch_size=spec.batch_size, seed=seed, progress=progress, distill=False)
    return model, acc, train.evaluate(model, ds.x_test, ds.y_test)


def run_demo(images: int | None = None, sparsity: float | None = None, pes: int = 8,
             seed: int = 0, quick: bool = False, out_dir: str | Path = "build/demo",
             dataset: str = "digits", model: str | None = None,
             load: str | None = None, dense_images: int | None = None) -> int:
    """``zeroskip demo``: :func:`demo`, then 0 if the RTL was bit-exact, else 1 (with one
    error line)."""
    res = demo(images, sparsity, pes, seed, quick, out_dir, dataset, model, load, dense_images)
    if not res["bit_exact"]:
        print("zeroskip: error: the RTL differs from the integer reference", file=sys.stderr)
        return 1
    return 0


def demo(images: int | None = None, sparsity: float | None = None, pes: int = 8,
         seed: int = 0, quick: bool = False, out_dir: str | Path = "build/demo",
         dataset: str = "digits", model: str | None = None,
         load: str | None = None, dense_images: int | None = None) -> dict:
    """Run the demo (module docstring), print its report, and return its figures: accuracies,
    ``bit_exact``, the RTL's and the reference's outputs, cycles, MACs and speedups, the
    packed model (``pm``) and the test images' codes (``x``)."""
    from zeroskip.sim.verilated import Case, ConsoleProgress, run_cases
    from zeroskip.spec import HwParams
    from zeroskip.sw import data, models, prune, train
    from zeroskip.sw.cycles import dense_macs, predict
    from zeroskip.sw.errors import ZeroskipError
    from zeroskip.sw.pack import pack_model, write_model
    from zeroskip.sw.quant import quantize_model
    from zeroskip.sw.ref import run_model

    spec = demo_spec(dataset, model)
    sparsity = spec.sparsity if sparsity is None else sparsity
    if not 0.0 <= sparsity < 1.0:
        raise ZeroskipError(f"--sparsity must be in [0, 1), not {sparsity}")
    if images is not None and images < 1:
        raise ZeroskipError(f"--images must be at least 1, not {images}")
    if dense_images is not None and dense_images < 1:
        raise ZeroskipError(f"--dense-images must be at least 1, not {dense_images}")
    t0 = time.time()
    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    ds = data.load_dataset(spec.dataset)      # DatasetError (one line) when not installed
    n_train = len(ds.y_train) if spec.train_images is None else spec.train_images
    x_tr, y_tr = ds.x_train[:n_train], ds.y_train[:n_train]
    want = images if images is not None else spec.images
    n_test = len(ds.y_test) if want is None else min(want, len(ds.y_test))
    epochs = spec.quick_epochs if quick else spec.epochs
    ft_epochs = max(1, spec.finetune_epochs // 4) if quick else spec.finetune_epochs
    net = (models.digits_mlp(hidden=(256, 128)) if spec.factory == "digits_mlp"
           else models.FACTORIES[spec.factory]())
    shape = _layer_sizes(net)
    if load is None:
        _say(f"[1/5] training {spec.factory} ({shape}) on {spec.dataset} ({n_train} train, "
             f"{len(ds.y_test)} test images)")
        train.train(net, x_tr, y_tr, epochs=epochs, lr=spec.lr, batch_size=spec.batch_size,
                    seed=seed, progress=True, desc="  training")
        acc_float = train.evaluate(net, ds.x_test, ds.y_test)
        _say(f"[2/5] pruning to {sparsity:.0%} sparsity in 3 steps with fine-tuning "
             "(distilled from the dense model)")
        prune_finetune(net, x_tr, y_tr, sparsity, epochs=max(1, ft_epochs), lr=spec.lr / 2,
                       batch_size=spec.batch_size, seed=seed)
    else:
        from zeroskip.cli import load_torch_model
        _say(f"[1/5] loading the trained {spec.factory} state_dict {load}")
        net = load_torch_model(load, spec.factory)
        acc_float = None
        _say("[2/5] (pruning skipped: the loaded model is used as it is)")
    acc_pruned = train.evaluate(net, ds.x_test, ds.y_test)
    sp = prune.sparsity(net)

    _say("[3/5] quantizing and packing")
    params = HwParams(pes=pes, **(LENET_PARAMS if spec.big else {}))
    qm = quantize_model(net, x_tr[:2000], params)
    pm = pack_model(qm, params)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{spec.dataset}-{spec.model}.zsk"
    size = write_model(path, pm)
    x = qm.quantize_input(ds.x_test[:n_test])
    y = ds.y_test[:n_test].numpy()
    ref_out = run_model(pm, x).numpy()
    acc_ref = float((ref_out.argmax(1) == y).mean())

    n_dense = min(n_test, dense_images or spec.dense_images)
    _say(f"[4/5] running {n_test} test images on the Verilated RTL ({pes} PEs), and "
         f"{n_dense} on the same hardware with the dense model (the first run of a hardware "
         "configuration compiles the simulator: a few minutes)")
    dense = pack_model(qm, params, dense=True)
    t1 = time.time()
    status = ConsoleProgress()
    try:
        sparse_res, dense_res = run_cases(params, [
            Case(pm, x, ref_out, name="sparse"),
            Case(dense, x[:n_dense], ref_out[:n_dense], skip_zero_acts=False, name="dense"),
        ], seed=seed, progress=status, quiet=True)
    finally:
        status.close()
    t_sim = time.time() - t1
    # every output of every image, compared here too (the testbench already failed on any
    # difference)
    bit_exact = bool(np.array_equal(sparse_res.outputs, ref_out)
                     and np.array_equal(dense_res.outputs, ref_out[:n_dense]))
    acc_rtl = float((sparse_res.outputs.argmax(1) == y).mean())
    cyc = np.array([c["cycles"] for c in sparse_res.counters], dtype=np.float64)
    dcyc = np.array([c["cycles"] for c in dense_res.counters], dtype=np.float64)
    useful = np.array([c["useful_macs"] for c in sparse_res.counters], dtype=np.float64)
    dmacs = dense_macs(pm)          # over the conv pixels the hardware computes
    speedup = float(dcyc.mean() / cyc[:n_dense].mean())
    ideal = float(dmacs / useful[:n_dense].mean())
    util = float(useful.sum() / (pes * cyc.sum()))
    # the cycle model, per layer, on the images of the dense run (it equals the RTL's counter)
    pred = [predict(pm, v) for v in x[:n_dense]]
    pred_total = [sum(lc.cycles for lc in p) for p in pred]
    model_ok = bool(np.array_equal(np.array(pred_total, dtype=np.float64), cyc[:n_dense]))

    _say("[5/5] results")
    sub = "" if n_test == len(ds.y_test) else f" ({n_test} images)"
    kept = sum(pl.nonzeros for pl in pm.layers)
    total_w = sum(pl.q.weight.size for pl in pm.layers)
    rows = [
        ("model", f"{spec.factory} {shape} on {spec.dataset}"
                  + (f", loaded from {load}" if load else "")),
        ("accuracy, float (dense)", "-" if acc_float is None else f"{acc_float:.2%}"),
        (f"accuracy, float (pruned {sp:.1%})", f"{acc_pruned:.2%}"),
        (f"accuracy, integer reference{sub}", f"{acc_ref:.2%}"),
        (f"accuracy, RTL{sub}", f"{acc_rtl:.2%}"),
        ("RTL bit-exact vs reference", f"{'yes' if bit_exact else 'NO'} "
                                       f"({n_test} + {n_dense} dense images, every output)"),
        ("weights kept", f"{kept} of {total_w} ({kept / total_w:.1%}); per layer "
                         + " / ".join(f"{pl.nonzeros / pl.q.weight.size:.0%}"
                                      for pl in pm.layers)),
        ("model file", f"{path} ({size} bytes)"),
        ("cycles / image, sparse", f"{cyc.mean():.1f} (activation and weight skipping)"),
        ("cycles / image, dense", f"{dcyc.mean():.1f} (same hardware, dense packing, no "
                                  f"skipping; {n_dense} images)"),
        ("speedup, measured", f"{speedup:.2f}x (ideal {ideal:.2f}x = dense MACs / useful MACs; "
                              f"measured / ideal {speedup / ideal:.2f})"),
        ("PE utilization", f"{util:.3f} (useful MACs / (PEs x cycles))"),
        ("cycles per layer (model)", " / ".join(
            f"{np.mean([p[i].cycles for p in pred]):.0f}" for i in range(len(pm.layers)))
            + f" ({'equals' if model_ok else 'DIFFERS FROM'} the RTL's counter on "
              f"{n_dense} images)"),
        ("time", f"{time.time() - t0:.0f} s total, {t_sim:.0f} s in RTL simulation"),
    ]
    width = max(len(k) for k, _ in rows)
    for k, v in rows:
        _say(f"  {k:<{width}}  {v}")
    return {
        "bit_exact": bit_exact, "acc_float": acc_float, "acc_pruned": acc_pruned,
        "acc_ref": acc_ref, "acc_rtl": acc_rtl, "sparsity": sp, "pm": pm, "x": x,
        "ref_outputs": ref_out, "rtl_outputs": sparse_res.outputs,
        "dense_outputs": dense_res.outputs, "cycles": cyc, "dense_cycles": dcyc,
        "useful_macs": useful, "dense_macs": dmacs, "speedup": speedup, "ideal": ideal,
        "utilization": util, "predicted_cycles": pred_total, "cycle_model_equal": model_ok,
        "n_dense": n_dense, "model_file": path,
    }


def _layer_sizes(net: nn.Module) -> str:
    """``8-16-32-10``: the output channels of every Conv2d and Linear in order, after the
    input features for an MLP (``64-256-128-10``)."""
    layers = [m for m in net.modules() if isinstance(m, (nn.Linear, nn.Conv2d))]
    head = [layers[0].in_features] if isinstance(layers[0], nn.Linear) else []
    return "-".join(str(v) for v in head + [m.out_features if isinstance(m, nn.Linear)
                                             else m.out_channels for m in layers])
