"""``zeroskip compress ...``: the compression methods from the command line.

Models are whole ``nn.Module`` objects saved with ``torch.save`` (structured pruning and
low-rank factorization change their shapes, so a state dict alone is not enough); a model file
is a pickle: load only files you trust. Every subcommand reads a model (``--model``) and a data
set (``--dataset digits|fashion-mnist``, ``--data-path``), applies one method, writes the result
(``--out``) and prints accuracy and a storage report. ``train`` makes the starting model.

    zeroskip compress train --arch digits-mlp --out dense.pt
    zeroskip compress prune --model dense.pt --sparsity 0.9 --schedule gradual --distill --out p.pt
    zeroskip compress share --model p.pt --bits 5 --out s.pt
    zeroskip compress report --model s.pt

Errors are :class:`~zeroskip.sw.errors.ZeroskipError` subclasses (the top-level CLI prints them
on one line); :func:`main` does the same when this module runs on its own.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import torch
from torch import nn

from .errors import ZeroskipError

__all__ = ["add_subcommands", "main", "CliError", "ARCHS"]


class CliError(ZeroskipError):
    """A command-line problem: unreadable model file, bad option combination."""


ARCHS = ("digits-mlp", "digits-cnn", "lenet-300-100", "lenet-5", "lenet-5-bn")


def _arch(name: str) -> nn.Module:
    from . import models
    table = {"digits-mlp": lambda: models.digits_mlp(),
             "digits-cnn": lambda: models.digits_cnn(),
             "lenet-300-100": lambda: models.lenet_300_100(),
             "lenet-5": lambda: models.lenet5(),
             "lenet-5-bn": lambda: models.lenet5(bn=True)}
    if name not in table:
        raise CliError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHS)}")
    return table[name]()


def _load_model(path: str) -> nn.Module:
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such model file") from None
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a user error here
        raise CliError(f"{path}: cannot load a model ({type(e).__name__}: {e})") from None
    if not isinstance(obj, nn.Module):
        raise CliError(f"{path}: holds a {type(obj).__name__}, not a saved nn.Module "
                       "(save the whole model with torch.save(model, path))")
    obj.eval()
    return obj


def _save_model(model: nn.Module, path: str | None) -> None:
    if path:
        torch.save(model, path)
        print(f"wrote {path}")


def _data(args):
    from .data import load_dataset
    return load_dataset(args.dataset, args.data_path)


def _finish(args, model, ds, dense=None, label=""):
    from .compress import compression_report, count_params, weight_count
    from .train import evaluate
    _save_model(model, getattr(args, "out", None))
    acc = evaluate(model, ds.x_test, ds.y_test)
    line = f"{label}: test accuracy {100 * acc:.2f}%"
    if dense is not None:
        line += f" (dense {100 * evaluate(dense, ds.x_test, ds.y_test):.2f}%)"
    print(line)
    print(f"parameters {count_params(model)}, nonzero weights {weight_count(model)} of "
          f"{weight_count(model, nonzero=False)}")
    rep = compression_report(model, hw=False)
    print(rep.to_markdown(), end="")
    if getattr(args, "json", None):
        Path(args.json).write_text(json.dumps({"accuracy": acc, **rep.to_dict()}, indent=1))
    return 0


def _loss(args, teacher):
    if getattr(args, "distill", False):
        from .compress import distillation_loss
        return distillation_loss(teacher, args.temperature, args.alpha)
    return None


# ----------------------------------------------------------------------------- commands

def cmd_train(args):
    from .train import train
    ds = _data(args)
    model = _arch(args.arch)
    train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
          batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
          desc=f"train {args.arch}")
    return _finish(args, model, ds, label=args.arch)


def cmd_prune(args):
    from .compress import iterative_prune
    ds = _data(args)
    dense = _load_model(args.model)
    model = _load_model(args.model)
    iterative_prune(model, ds.x_train, ds.y_train, args.sparsity, schedule=args.schedule,
                    steps=args.steps, epochs_per_step=args.epochs, scope=args.scope,
                    granularity=args.granularity, lr=args.lr, batch_size=args.batch_size,
                    loss_fn=_loss(args, dense), seed=args.seed, progress=not args.quiet)
    return _finish(args, model, ds, dense, f"pruned ({args.schedule}, {args.granularity})")


def cmd_structured(args):
    from .compress import prune_structured
    from .train import train
    ds = _data(args)
    dense = _load_model(args.model)
    model = prune_structured(dense, args.amount, criterion=args.criterion,
                             x=ds.x_train[:2000], scope=args.scope,
                             normalize=None if args.criterion == "bn" else "mean")
    if args.epochs:
        train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
              batch_size=args.batch_size, loss_fn=_loss(args, dense), seed=args.seed,
              progress=not args.quiet, desc="fine-tune")
    return _finish(args, model, ds, dense, f"structured ({args.criterion})")


def cmd_slim(args):
    from .compress import bn_l1_penalty
    from .train import train
    ds = _data(args)
    model = _load_model(args.model)
    train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
          batch_size=args.batch_size, extra_loss=bn_l1_penalty(args.strength), seed=args.seed,
          progress=not args.quiet, desc="slimming (L1 on BN)")
    return _finish(args, model, ds, label="slimming-trained")


def cmd_global(args):
    from .compress import progressive_prune
    from .train import evaluate
    ds = _data(args)
    dense = _load_model(args.model)
    floor = args.floor if args.floor is not None else \
        evaluate(dense, ds.x_test, ds.y_test) - args.max_drop
    res = progressive_prune(dense, ds.x_train, ds.y_train, ds.x_test, ds.y_test, floor,
                            mode=args.mode, fraction=args.fraction, criterion=args.criterion,
                            finetune_epochs=args.epochs, max_rounds=args.rounds, lr=args.lr,
                            batch_size=args.batch_size, loss_fn=_loss(args, dense),
                            seed=args.seed, progress=not args.quiet)
    for h in res.history:
        print(f"round {h['round']:2d}: {h['params']:8d} params, accuracy {100 * h['acc']:.2f}%")
    return _finish(args, res.model, ds, dense, f"progressive {args.mode} (floor "
                                               f"{100 * floor:.2f}%)")


def cmd_share(args):
    from .compress import finetune_centroids, share_weights
    ds = _data(args)
    dense = _load_model(args.model)
    model = _load_model(args.model)
    books = share_weights(model, args.bits)
    if args.epochs:
        finetune_centroids(model, books, ds.x_train, ds.y_train, epochs=args.epochs,
                           lr=args.lr, batch_size=args.batch_size, loss_fn=_loss(args, dense),
                           seed=args.seed, progress=not args.quiet)
    return _finish(args, model, ds, dense, f"weight sharing ({args.bits} bits)")


def cmd_ternary(args):
    from .compress import ternarize, train_ternary
    ds = _data(args)
    dense = _load_model(args.model)
    model = _load_model(args.model)
    if args.epochs:
        train_ternary(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, t=args.threshold, loss_fn=_loss(args, dense),
                      seed=args.seed, progress=not args.quiet)
    else:
        ternarize(model, t=args.threshold)
    return _finish(args, model, ds, dense, "ternary (TWN)")


def cmd_lowrank(args):
    from .compress import low_rank
    from .train import train
    if (args.rank is None) == (args.energy is None):
        raise CliError("give exactly one of --rank and --energy")
    ds = _data(args)
    dense = _load_model(args.model)
    model, ranks = low_rank(dense, args.rank, energy=args.energy)
    print("ranks: " + (", ".join(f"{n}: {r}" for n, r in ranks.items()) or "none (no layer "
                                                                           "gets smaller)"))
    if args.epochs:
        train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
              batch_size=args.batch_size, loss_fn=_loss(args, dense), seed=args.seed,
              progress=not args.quiet, desc="fine-tune")
    return _finish(args, model, ds, dense, "low-rank")


def cmd_report(args):
    from .compress import compression_report
    model = _load_model(args.model)
    rep = compression_report(model, huffman=not args.no_huffman, index_bits=args.index_bits)
    print(rep.to_markdown(), end="")
    if args.json:
        Path(args.json).write_text(json.dumps(rep.to_dict(), indent=1))
    return 0


# ----------------------------------------------------------------------------- parser

def _common(p, model=True, out=True, train_opts=True, epochs=1):
    if model:
        p.add_argument("--model", required=True, help="model file (torch.save of an nn.Module)")
    p.add_argument("--dataset", default="digits", help="digits (default) or fashion-mnist")
    p.add_argument("--data-path", default=None, help="folder with the Fashion-MNIST files")
    if out:
        p.add_argument("--out", default=None, help="write the resulting model here")
        p.add_argument("--json", default=None, help="write accuracy and report as JSON here")
    if train_opts:
        p.add_argument("--epochs", type=int, default=epochs, help="(fine-)tuning epochs")
        p.add_argument("--lr", type=float, default=1e-3)
        p.add_argument("--batch-size", type=int, default=64)
        p.add_argument("--seed", type=int, default=0)
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _distill(p):
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with soft targets from the input model")
    p.add_argument("--temperature", type=float, default=4.0)
    p.add_argument("--alpha", type=float, default=0.7, help="weight of the soft targets")


def add_subcommands(subparsers) -> argparse.ArgumentParser:
    """Register ``compress`` and its subcommands on an argparse ``subparsers`` object. Each
    leaf parser sets ``func`` (called with the parsed args, returns an exit status)."""
    from .compress import CRITERIA, GRANULARITIES, SCHEDULES
    cp = subparsers.add_parser("compress", help="prune, quantize and compress trained models",
                               description=__doc__,
                               formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = cp.add_subparsers(dest="compress_command", metavar="METHOD", required=True)

    p = sub.add_parser("train", help="train a reference model")
    p.add_argument("--arch", default="digits-mlp", choices=ARCHS)
    _common(p, model=False, epochs=20)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("prune", help="magnitude pruning with a schedule (Han 2015)")
    _common(p)
    p.add_argument("--sparsity", type=float, required=True, help="final fraction removed")
    p.add_argument("--schedule", default="iterative", choices=SCHEDULES)
    p.add_argument("--steps", type=int, default=3)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    p.add_argument("--granularity", default="element", choices=GRANULARITIES)
    _distill(p)
    p.set_defaults(func=cmd_prune)

    p = sub.add_parser("structured", help="remove neurons/filters (L1, BN, mean act., APoZ)")
    _common(p)
    p.add_argument("--amount", type=float, required=True, help="fraction of units removed")
    p.add_argument("--criterion", default="l1", choices=CRITERIA)
    p.add_argument("--scope", default="layer", choices=("layer", "global"))
    _distill(p)
    p.set_defaults(func=cmd_structured)

    p = sub.add_parser("slim", help="train with L1 on BatchNorm scales (network slimming)")
    _common(p, epochs=5)
    p.add_argument("--strength", type=float, default=1e-4)
    p.set_defaults(func=cmd_slim)

    p = sub.add_parser("global", help="progressive global neuron pruning to an accuracy floor")
    _common(p)
    p.add_argument("--floor", type=float, default=None, help="accuracy floor in [0, 1]")
    p.add_argument("--max-drop", type=float, default=0.01,
                   help="floor = dense accuracy - this (when --floor is not given)")
    p.add_argument("--mode", default="global", choices=("global", "uniform"))
    p.add_argument("--fraction", type=float, default=0.1)
    p.add_argument("--criterion", default="l1", choices=CRITERIA)
    p.add_argument("--rounds", type=int, default=20)
    _distill(p)
    p.set_defaults(func=cmd_global)

    p = sub.add_parser("share", help="k-means weight sharing + centroid fine-tuning")
    _common(p)
    p.add_argument("--bits", type=int, default=5, help="codebook bits (2..8)")
    _distill(p)
    p.set_defaults(func=cmd_share)

    p = sub.add_parser("ternary", help="ternary weights (TWN); --epochs 0: no retraining")
    _common(p)
    p.add_argument("--threshold", type=float, default=0.7, help="delta = t * mean|W|")
    _distill(p)
    p.set_defaults(func=cmd_ternary)

    p = sub.add_parser("lowrank", help="truncated SVD of Linear layers")
    _common(p)
    p.add_argument("--rank", type=int, default=None)
    p.add_argument("--energy", type=float, default=None)
    _distill(p)
    p.set_defaults(func=cmd_lowrank)

    p = sub.add_parser("report", help="Deep Compression style storage report of a model")
    p.add_argument("--model", required=True)
    p.add_argument("--no-huffman", action="store_true")
    p.add_argument("--index-bits", type=int, default=None, help="default: best per layer")
    p.add_argument("--json", default=None)
    p.set_defaults(func=cmd_report)
    return cp


def main(argv=None) -> int:
    """``python -m zeroskip.sw.cli_compress METHOD ...`` (same as ``zeroskip compress``)."""
    parser = argparse.ArgumentParser(prog="zeroskip")
    subs = parser.add_subparsers(dest="command", required=True)
    add_subcommands(subs)
    args = parser.parse_args(["compress", *(sys.argv[1:] if argv is None else argv)])
    torch.set_num_threads(min(2, torch.get_num_threads()))
    try:
        return int(args.func(args) or 0)
    except ZeroskipError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
