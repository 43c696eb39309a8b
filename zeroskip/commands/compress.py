"""``zeroskip compress ...``: the compression methods of :mod:`zeroskip.sw.compress` from the
command line.

Models are whole ``nn.Module`` objects saved with ``torch.save`` (structured pruning and
low-rank factorization change their shapes, so a state dict alone is not enough); a model file
is a pickle: load only files you trust. Every subcommand reads a model (``--model``) and a data
set (``--dataset digits|fashion-mnist``, ``--data-path``), applies one method, writes the result
(``--out``, plain layers: pruning masks made permanent) and prints accuracy and a storage
report. ``train`` makes the starting model.

    zeroskip compress train --arch digits-mlp --out dense.pt
    zeroskip compress prune --model dense.pt --sparsity 0.9 --schedule gradual --distill --out p.pt
    zeroskip compress share --model p.pt --bits 5 --out s.pt
    zeroskip compress report --model s.pt

Errors are :class:`zeroskip.cli.CliError` (or another ``ZeroskipError``): ``zeroskip: error:
...`` on one line and exit status 1; a malformed command line exits with status 2.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import tempfile
from pathlib import Path

import torch
from torch import nn

from zeroskip.cli import CliError

__all__ = ["add_subcommands", "ARCHS"]

ARCHS = ("digits-mlp", "digits-cnn", "lenet-300-100", "lenet-5", "lenet-5-bn")


def _arch(name: str) -> nn.Module:
    from zeroskip.sw import models
    table = {"digits-mlp": lambda: models.digits_mlp(),
             "digits-cnn": lambda: models.digits_cnn(),
             "lenet-300-100": lambda: models.lenet_300_100(),
             "lenet-5": lambda: models.lenet5(),
             "lenet-5-bn": lambda: models.lenet5(bn=True)}
    if name not in table:
        raise CliError(f"unknown architecture {name!r}; choose one of {', '.join(ARCHS)}")
    return table[name]()


def _load_model(path: str) -> nn.Module:
    p = Path(path)
    if not p.exists():
        raise CliError(f"{path}: no such model file")
    if p.is_dir():
        raise CliError(f"{path}: is a directory, not a model file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except Exception as e:  # noqa: BLE001 - any unpickling problem is a user error here
        msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
        raise CliError(f"{path}: cannot load a model ({type(e).__name__}"
                       f"{': ' + msg if msg else ''})") from None
    if not isinstance(obj, nn.Module):
        raise CliError(f"{path}: holds a {type(obj).__name__}, not a saved nn.Module "
                       "(save the whole model with torch.save(model, path))")
    from zeroskip.sw.compress import check_model
    check_model(obj)
    obj.eval()
    return obj


def _check_writable(path: str) -> Path:
    target = Path(path)
    if target.is_dir():
        raise CliError(f"{path}: is a directory")
    if not target.parent.is_dir():
        raise CliError(f"{path}: the folder {target.parent} does not exist")
    return target


def _write_atomic(path: str, write) -> None:
    """``write(tmp_path)`` then rename onto ``path``: no half-written file is ever left."""
    target = _check_writable(path)
    folder = target.parent
    try:
        fd, tmp = tempfile.mkstemp(dir=folder, prefix=f".{target.name}.", suffix=".tmp")
    except OSError as e:
        raise CliError(f"{path}: cannot write ({e})") from None
    os.close(fd)
    try:
        write(tmp)
        os.replace(tmp, target)
    except (OSError, RuntimeError) as e:
        raise CliError(f"{path}: cannot write ({e})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _save_model(model: nn.Module, path: str | None) -> None:
    if path:
        from zeroskip.sw.prune import remove_masks
        remove_masks(model)                      # plain layers: masks made permanent
        _write_atomic(path, lambda tmp: torch.save(model, tmp))
        print(f"wrote {path}")


def _write_json(path: str | None, obj) -> None:
    if path:
        text = json.dumps(obj, indent=1)
        _write_atomic(path, lambda tmp: Path(tmp).write_text(text))


def _data(args):
    from zeroskip.sw.data import load_dataset
    return load_dataset(args.dataset, args.data_path)


@torch.no_grad()
def _check_fits(model: nn.Module, ds, path: str) -> None:
    """One line instead of a traceback when the model cannot take the data set's inputs."""
    shape = "x".join(str(d) for d in ds.image_shape)
    was_training = model.training
    model.eval()                        # no BatchNorm statistics change from this probe
    try:
        out = model(ds.x_test[:2])
    except Exception as e:  # noqa: BLE001 - any failure here means the shapes do not match
        msg = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise CliError(f"{path}: the model does not take {ds.name} inputs ({shape}, "
                       f"{ds.features} features): {msg}") from None
    finally:
        model.train(was_training)
    if out.dim() != 2 or out.shape[1] != ds.classes:
        raise CliError(f"{path}: the model gives outputs of shape {tuple(out.shape[1:])}, "
                       f"{ds.name} has {ds.classes} classes")


def _model_and_data(args):
    """``(model, dataset)`` checked against each other, data set first (cheap errors first)."""
    ds = _data(args)
    model = _load_model(args.model)
    _check_fits(model, ds, args.model)
    return model, ds


def _describe_input(model: nn.Module) -> str:
    from zeroskip.sw.compress import weight_count
    kept, total = weight_count(model), weight_count(model, nonzero=False)
    if kept == total:
        return "dense input"
    return f"input, {100 * kept / total:.1f}% of weights nonzero"


def _finish(args, model, ds, source=None, label=""):
    """Save, then print the accuracy of ``model`` (and of ``source``, the input model, labelled
    by what it is: dense or how sparse) and the storage report."""
    from zeroskip.sw.compress import compression_report, count_params, weight_count
    from zeroskip.sw.train import evaluate
    _save_model(model, getattr(args, "out", None))
    acc = evaluate(model, ds.x_test, ds.y_test)
    line = f"{label}: test accuracy {100 * acc:.2f}%"
    if source is not None:
        line += (f" ({_describe_input(source)}: "
                 f"{100 * evaluate(source, ds.x_test, ds.y_test):.2f}%)")
    print(line)
    print(f"parameters {count_params(model)}, nonzero weights {weight_count(model)} of "
          f"{weight_count(model, nonzero=False)}")
    rep = compression_report(model, hw=False)
    print(rep.to_markdown(), end="")
    _write_json(getattr(args, "json", None), {"accuracy": acc, **rep.to_dict()})
    return 0


def _loss(args, teacher):
    if getattr(args, "distill", False):
        from zeroskip.sw.compress import distillation_loss
        return distillation_loss(teacher, args.temperature, args.alpha)
    return None


# Defaults of `prune` (measured in docs/compression.md: the help's example on the digits MLP).
PRUNE_STEPS = 4
PRUNE_EPOCHS = 8
PRUNE_FINAL_EPOCHS = 8


def _threads() -> None:
    torch.set_num_threads(min(2, torch.get_num_threads()))


# ----------------------------------------------------------------------------- commands

def cmd_train(args):
    from zeroskip.sw.train import train
    _threads()
    ds = _data(args)
    model = _arch(args.arch)
    _check_fits(model, ds, f"--arch {args.arch}")
    train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
          batch_size=args.batch_size, seed=args.seed, progress=not args.quiet,
          desc=f"train {args.arch}")
    return _finish(args, model, ds, label=args.arch)


def cmd_prune(args):
    import copy

    from zeroskip.sw.compress import iterative_prune, sparsity_schedule
    _threads()
    sparsity_schedule(args.schedule, args.sparsity, args.steps)     # bad numbers: fail first
    source, ds = _model_and_data(args)
    model = copy.deepcopy(source)
    iterative_prune(model, ds.x_train, ds.y_train, args.sparsity, schedule=args.schedule,
                    steps=args.steps, epochs_per_step=args.epochs,
                    final_epochs=args.final_epochs, scope=args.scope,
                    granularity=args.granularity, lr=args.lr, batch_size=args.batch_size,
                    loss_fn=_loss(args, source), seed=args.seed, progress=not args.quiet)
    return _finish(args, model, ds, source, f"pruned ({args.schedule}, {args.granularity})")


def cmd_structured(args):
    from zeroskip.sw.compress import prune_structured
    from zeroskip.sw.train import train
    _threads()
    source, ds = _model_and_data(args)
    model = prune_structured(source, args.amount, criterion=args.criterion,
                             x=ds.x_train[:2000], scope=args.scope,
                             normalize=None if args.criterion == "bn" else "mean")
    if args.epochs:
        train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
              batch_size=args.batch_size, loss_fn=_loss(args, source), seed=args.seed,
              progress=not args.quiet, desc="fine-tune")
    return _finish(args, model, ds, source, f"structured ({args.criterion})")


def cmd_slim(args):
    from zeroskip.sw.compress import bn_l1_penalty
    from zeroskip.sw.train import train
    _threads()
    model, ds = _model_and_data(args)
    bn_l1_penalty(args.strength)(model)          # no BatchNorm: one line before training
    train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
          batch_size=args.batch_size, extra_loss=bn_l1_penalty(args.strength), seed=args.seed,
          progress=not args.quiet, desc="slimming (L1 on BN)")
    return _finish(args, model, ds, label="slimming-trained")


def cmd_global(args):
    from zeroskip.sw.compress import progressive_prune
    from zeroskip.sw.train import evaluate
    _threads()
    source, ds = _model_and_data(args)
    floor = args.floor if args.floor is not None else \
        evaluate(source, ds.x_test, ds.y_test) - args.max_drop
    res = progressive_prune(source, ds.x_train, ds.y_train, ds.x_test, ds.y_test, floor,
                            mode=args.mode, fraction=args.fraction, criterion=args.criterion,
                            finetune_epochs=args.epochs, max_rounds=args.rounds, lr=args.lr,
                            batch_size=args.batch_size, loss_fn=_loss(args, source),
                            seed=args.seed, progress=not args.quiet)
    for h in res.history:
        print(f"round {h['round']:2d}: {h['params']:8d} params, accuracy {100 * h['acc']:.2f}%")
    return _finish(args, res.model, ds, source, f"progressive {args.mode} (floor "
                                                f"{100 * floor:.2f}%)")


def cmd_share(args):
    import copy

    from zeroskip.sw.compress import finetune_centroids, share_weights
    _threads()
    source, ds = _model_and_data(args)
    model = copy.deepcopy(source)
    books = share_weights(model, args.bits)
    if args.epochs:
        finetune_centroids(model, books, ds.x_train, ds.y_train, epochs=args.epochs,
                           lr=args.lr, batch_size=args.batch_size,
                           loss_fn=_loss(args, source), seed=args.seed,
                           progress=not args.quiet)
    return _finish(args, model, ds, source, f"weight sharing ({args.bits} bits)")


def cmd_ternary(args):
    import copy

    from zeroskip.sw.compress import ternarize, train_ternary
    _threads()
    source, ds = _model_and_data(args)
    model = copy.deepcopy(source)
    if args.epochs:
        train_ternary(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
                      batch_size=args.batch_size, t=args.threshold,
                      loss_fn=_loss(args, source), seed=args.seed, progress=not args.quiet)
    else:
        ternarize(model, t=args.threshold)
    return _finish(args, model, ds, source, "ternary (TWN)")


def cmd_lowrank(args):
    from zeroskip.sw.compress import low_rank
    from zeroskip.sw.train import train
    _threads()
    if (args.rank is None) == (args.energy is None):
        raise CliError("give exactly one of --rank and --energy")
    source, ds = _model_and_data(args)
    model, ranks = low_rank(source, args.rank, energy=args.energy)
    print("ranks: " + (", ".join(f"{n}: {r}" for n, r in ranks.items())
                       or "none (no layer gets smaller)"))
    if args.epochs:
        train(model, ds.x_train, ds.y_train, epochs=args.epochs, lr=args.lr,
              batch_size=args.batch_size, loss_fn=_loss(args, source), seed=args.seed,
              progress=not args.quiet, desc="fine-tune")
    return _finish(args, model, ds, source, "low-rank")


def cmd_report(args):
    from zeroskip.sw.compress import compression_report
    _threads()
    model = _load_model(args.model)
    rep = compression_report(model, huffman=not args.no_huffman, index_bits=args.index_bits)
    print(rep.to_markdown(), end="")
    _write_json(args.json, rep.to_dict())
    return 0


# ----------------------------------------------------------------------------- parser

class _Number:
    """An argparse type: parses ``kind`` (int or float; a non-number exits with status 2) and
    knows its range, which :func:`_checked` enforces with a :class:`CliError` (status 1)."""

    def __init__(self, kind, lo=None, hi=None, lo_open=False, hi_open=False):
        self.kind, self.lo, self.hi, self.lo_open, self.hi_open = kind, lo, hi, lo_open, hi_open
        self.__name__ = kind.__name__             # argparse names the type in its messages

    def __call__(self, text: str):
        try:
            v = self.kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"not {'an integer' if self.kind is int else 'a number'}: {text!r}") from None
        if self.kind is float and not math.isfinite(v):
            raise argparse.ArgumentTypeError(f"not a finite number: {text!r}")
        return v

    def check(self, v) -> str | None:
        lo, hi = self.lo, self.hi
        if (lo is not None and (v < lo or (self.lo_open and v == lo))) or \
                (hi is not None and (v > hi or (self.hi_open and v == hi))):
            return (f"must be in {'(' if self.lo_open else '['}{'-inf' if lo is None else lo}, "
                    f"{'inf' if hi is None else hi}{')' if self.hi_open else ']'}, not {v}")
        return None


def _number(kind, lo=None, hi=None, lo_open=False, hi_open=False) -> _Number:
    return _Number(kind, lo, hi, lo_open, hi_open)


class _Parser(argparse.ArgumentParser):
    """Records the options whose type is a :class:`_Number` (for :func:`_checked`)."""

    def __init__(self, *a, **kw):
        super().__init__(*a, **kw)
        self.ranged: list[argparse.Action] = []

    def add_argument(self, *a, **kw):
        action = super().add_argument(*a, **kw)
        if isinstance(action.type, _Number):
            self.ranged.append(action)
        return action


def _checked(func, parser: _Parser):
    """``func`` after the range checks of ``parser``'s numeric options (one-line errors)."""
    def run(args):
        for dest in ("out", "json"):             # fail before the work, not after it
            path = getattr(args, dest, None)
            if path:
                _check_writable(path)
        for action in parser.ranged:
            v = getattr(args, action.dest, None)
            msg = action.type.check(v) if v is not None else None
            if msg:
                raise CliError(f"{action.option_strings[-1]} {msg}")
        return func(args)
    run.__name__ = func.__name__
    return run


FRACTION = _number(float, 0.0, 1.0, hi_open=True)      # [0, 1)
PROB = _number(float, 0.0, 1.0)                        # [0, 1]
POSITIVE = _number(float, 0.0, None, lo_open=True)
NONNEG = _number(float, 0.0)
EPOCHS = _number(int, 0)
COUNT = _number(int, 1)


class _DefaultsFormatter(argparse.HelpFormatter):
    """Shows ``(default: X)`` after every option that has a default worth showing."""

    def _get_help_string(self, action):
        text = action.help or ""
        default = action.default
        if "%(default)" not in text and action.option_strings and default is not None \
                and default is not False and default != argparse.SUPPRESS:
            text += " (default: %(default)s)"
        return text


def _common(p, model=True, out=True, train_opts=True, epochs=1, lr=1e-3,
            epochs_help="(fine-)tuning epochs"):
    if model:
        p.add_argument("--model", required=True, help="model file (torch.save of an nn.Module)")
    p.add_argument("--dataset", default="digits", help="digits or fashion-mnist")
    p.add_argument("--data-path", default=None, help="folder with the Fashion-MNIST files")
    if out:
        p.add_argument("--out", default=None, help="write the resulting model here")
        p.add_argument("--json", default=None, help="write accuracy and report as JSON here")
    if train_opts:
        p.add_argument("--epochs", type=EPOCHS, default=epochs, help=epochs_help)
        p.add_argument("--lr", type=POSITIVE, default=lr, help="Adam learning rate")
        p.add_argument("--batch-size", type=COUNT, default=64, help="mini-batch size")
        p.add_argument("--seed", type=int, default=0, help="random seed (batch order)")
        p.add_argument("--quiet", action="store_true", help="no progress bars")


def _distill(p):
    p.add_argument("--distill", action="store_true",
                   help="fine-tune with soft targets from the input model")
    p.add_argument("--temperature", type=POSITIVE, default=4.0,
                   help="distillation temperature")
    p.add_argument("--alpha", type=PROB, default=0.7, help="weight of the soft targets")


def add_subcommands(subparsers) -> argparse.ArgumentParser:
    """Register ``compress`` and its subcommands on an argparse ``subparsers`` object. Each
    leaf parser sets ``func`` (called with the parsed args, returns an exit status)."""
    from zeroskip.sw.compress import CRITERIA, GRANULARITIES, SCHEDULES
    fmt = _DefaultsFormatter

    class Fmt(argparse.RawDescriptionHelpFormatter, fmt):
        pass

    cp = subparsers.add_parser("compress", help="prune, quantize and compress trained models",
                               description=__doc__.split("\n\nErrors are")[0],
                               formatter_class=Fmt)
    sub = cp.add_subparsers(dest="compress_command", metavar="METHOD", required=True,
                            parser_class=_Parser)

    def leaf(name, hlp):
        return sub.add_parser(name, help=hlp, description=hlp, formatter_class=fmt)

    p = leaf("train", "train a reference model")
    p.add_argument("--arch", default="digits-mlp", choices=ARCHS, help="architecture")
    _common(p, model=False, epochs=20)
    p.set_defaults(func=_checked(cmd_train, p))

    p = leaf("prune", "magnitude pruning with a schedule (Han 2015), fine-tuning after each "
                      "step")
    _common(p, epochs=PRUNE_EPOCHS, epochs_help="fine-tuning epochs after each round")
    p.add_argument("--sparsity", type=FRACTION, required=True,
                   help="final fraction of weights removed, in [0, 1)")
    p.add_argument("--schedule", default="iterative", choices=SCHEDULES,
                   help="how the sparsity grows over the rounds")
    p.add_argument("--steps", type=COUNT, default=PRUNE_STEPS, help="pruning rounds")
    p.add_argument("--final-epochs", type=EPOCHS, default=PRUNE_FINAL_EPOCHS,
                   help="extra fine-tuning epochs after the last round")
    p.add_argument("--scope", default="layer", choices=("layer", "global"),
                   help="same sparsity in every layer, or one threshold over all layers")
    p.add_argument("--granularity", default="element", choices=GRANULARITIES,
                   help="what is removed together")
    _distill(p)
    p.set_defaults(func=_checked(cmd_prune, p))

    p = leaf("structured", "remove neurons/filters (L1, BN, mean activation, APoZ)")
    _common(p)
    p.add_argument("--amount", type=FRACTION, required=True,
                   help="fraction of units removed, in [0, 1)")
    p.add_argument("--criterion", default="l1", choices=CRITERIA, help="unit importance")
    p.add_argument("--scope", default="layer", choices=("layer", "global"),
                   help="same fraction of every layer, or the globally least important")
    _distill(p)
    p.set_defaults(func=_checked(cmd_structured, p))

    p = leaf("slim", "train with L1 on BatchNorm scales (network slimming)")
    _common(p, epochs=5)
    p.add_argument("--strength", type=NONNEG, default=1e-4, help="L1 weight on BN scales")
    p.set_defaults(func=_checked(cmd_slim, p))

    p = leaf("global", "progressive global neuron pruning to an accuracy floor")
    _common(p)
    p.add_argument("--floor", type=PROB, default=None,
                   help="accuracy floor in [0, 1] (default: dense accuracy - --max-drop)")
    p.add_argument("--max-drop", type=PROB, default=0.01,
                   help="floor = accuracy of the input model - this")
    p.add_argument("--mode", default="global", choices=("global", "uniform"),
                   help="rank units over all layers, or remove the same fraction per layer")
    p.add_argument("--fraction", type=FRACTION, default=0.1,
                   help="fraction of the units removed per round")
    p.add_argument("--criterion", default="l1", choices=CRITERIA, help="unit importance")
    p.add_argument("--rounds", type=COUNT, default=20, help="most pruning rounds")
    _distill(p)
    p.set_defaults(func=_checked(cmd_global, p))

    p = leaf("share", "k-means weight sharing + centroid fine-tuning")
    _common(p)
    p.add_argument("--bits", type=_number(int, 2, 8), default=5, help="codebook bits (2..8)")
    _distill(p)
    p.set_defaults(func=_checked(cmd_share, p))

    p = leaf("ternary", "ternary weights (TWN); --epochs 0: no retraining")
    _common(p)
    p.add_argument("--threshold", type=POSITIVE, default=0.7, help="delta = t * mean|W|")
    _distill(p)
    p.set_defaults(func=_checked(cmd_ternary, p))

    p = leaf("lowrank", "truncated SVD of Linear layers (give --rank or --energy)")
    _common(p)
    p.add_argument("--rank", type=COUNT, default=None, help="rank of every factorization")
    p.add_argument("--energy", type=_number(float, 0.0, 1.0, lo_open=True), default=None,
                   help="keep this fraction of the squared singular values, in (0, 1]")
    _distill(p)
    p.set_defaults(func=_checked(cmd_lowrank, p))

    p = leaf("report", "Deep Compression style storage report of a model")
    p.add_argument("--model", required=True, help="model file (torch.save of an nn.Module)")
    p.add_argument("--no-huffman", action="store_true", help="fixed-width codes and indices")
    p.add_argument("--index-bits", type=_number(int, 2, 8), default=None,
                   help="relative-index width in 2..8 (default: the best per layer)")
    p.add_argument("--json", default=None, help="write the report as JSON here")
    p.set_defaults(func=_checked(cmd_report, p))
    return cp
