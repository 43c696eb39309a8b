"""The ``zeroskip`` command.

    zeroskip demo                       train, prune, quantize, pack, run on the RTL, compare
    zeroskip pack MODEL -o FILE.zsk     pack a saved PyTorch model (or state_dict);
                                        --board icebreaker|ulx3s packs for a board
    zeroskip inspect FILE.zsk           layers, shapes, densities, bytes, encoding, board fit
    zeroskip ref FILE.zsk INPUT.npy     outputs of the bit-exact integer reference
    zeroskip run FILE.zsk INPUT.npy     run on the Verilated RTL and compare with the reference
                                        (--labels, --out, --compare-dense; builds are cached
                                        in the user cache directory or $ZEROSKIP_SIM_BUILD)
    zeroskip compress ...               the compression toolkit (see ``zeroskip compress -h``)

Every user error prints one line ``zeroskip: error: ...`` and exits with status 1; a wrong
command line exits with status 2 (argparse).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np

from zeroskip.sw.errors import ZeroskipError

__all__ = ["main", "build_parser", "CliError"]


class CliError(ZeroskipError):
    """A bad file or argument given on the command line."""


_PARAM_ARGS = (  # (option, HwParams field, help)
    ("--pes", "pes", "PEs"),
    ("--index-bits", "index_bits", "relative-index delta width"),
    ("--acc-width", "acc_width", "accumulator width in bits"),
    ("--entry-depth", "entry_depth", "weight entries per PE"),
    ("--ptr-depth", "ptr_depth", "column pointers per PE"),
    ("--row-depth", "row_depth", "output rows per PE"),
    ("--act-depth", "act_depth", "longest activation vector"),
    ("--max-layers", "max_layers", "layers in one network"),
)


def _board_params() -> dict:
    """The boards' accelerator parameters (only the table: no toolchain is imported)."""
    from zeroskip.boards.tops import BOARD_PARAMS
    return BOARD_PARAMS


def _params_args(p: argparse.ArgumentParser) -> None:
    from zeroskip.spec import HwParams
    d = HwParams()
    g = p.add_argument_group(
        "hardware parameters",
        "the hardware the model is packed for: a board's (--board) or the defaults below; a "
        "parameter given here overrides it (the file then fits only hardware built with it)")
    g.add_argument("--board", choices=sorted(_board_params()), default=None,
                   help="pack for this board's accelerator (docs/boards.md)")
    for opt, field, hlp in _PARAM_ARGS:
        g.add_argument(opt, type=int, default=None, dest=field,
                       help=f"{hlp} (default {getattr(d, field)}, or the board's)")


def _params(args):
    from dataclasses import replace

    from zeroskip.spec import HwParams
    base = _board_params()[args.board] if args.board else HwParams()
    given = {f: getattr(args, f) for _, f, _ in _PARAM_ARGS if getattr(args, f) is not None}
    return replace(base, **given)


def load_torch_model(path: str):
    """A saved ``nn.Module``, or a state_dict of Linear layers (turned into Linear/ReLU)."""
    import torch
    from torch import nn
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except Exception as e:  # noqa: BLE001 - unpickling errors of any kind are user errors
        raise CliError(f"{path}: not a PyTorch model or state_dict ({type(e).__name__})") \
            from None
    if isinstance(obj, nn.Module):
        return obj.eval()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj:
        raise CliError(f"{path}: holds a {type(obj).__name__}, not an nn.Module or state_dict")
    weights = [(k, v) for k, v in obj.items() if k.endswith("weight")]
    layers: list = [nn.Flatten()]
    for i, (k, w) in enumerate(weights):
        if not isinstance(w, torch.Tensor) or w.ndim != 2:
            shape = tuple(w.shape) if isinstance(w, torch.Tensor) else type(w).__name__
            raise CliError(f"{path}: {k} has shape {shape}; a state_dict is read as a stack of "
                           "Linear layers (save the whole nn.Module for other layer kinds)")
        lin = nn.Linear(w.shape[1], w.shape[0], bias=k[:-6] + "bias" in obj)
        with torch.no_grad():
            lin.weight.copy_(w)
            if lin.bias is not None:
                lin.bias.copy_(obj[k[:-6] + "bias"])
        if layers and isinstance(layers[-1], nn.Linear) and \
                layers[-1].out_features != lin.in_features:
            raise CliError(f"{path}: {k} takes {lin.in_features} inputs but the layer before "
                           f"gives {layers[-1].out_features}")
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers).eval()


def _calibration(spec: str | None, features: int):
    import torch

    from zeroskip.sw.data import load_dataset
    if spec is None:
        if features == 64:
            spec = "digits"
        else:
            raise CliError(f"the model takes {features} inputs: give calibration data with "
                           "--calib (a .npy of float inputs, or 'digits' / 'fashion-mnist')")
    if spec in ("digits", "fashion-mnist"):
        ds = load_dataset(spec)
        x = ds.x_train[:2000]
    else:
        try:
            x = torch.from_numpy(np.load(spec).astype(np.float32))
        except (OSError, ValueError) as e:
            raise CliError(f"{spec}: cannot read calibration data ({e})") from None
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != features:
        raise CliError(f"calibration data has {x.shape[1]} features, the model takes {features}")
    return x


def _read_inputs(path: str, n_features: int, as_float: bool, input_scale: float):
    try:
        x = np.load(path)
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: cannot read an .npy array ({e})") from None
    if x.ndim == 1:
        x = x[None, :]
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != n_features:
        raise CliError(f"{path}: inputs have {x.shape[1]} features, the model takes {n_features}")
    if as_float:
        return np.clip(np.round(x.astype(np.float64) / input_scale), 0, 255).astype(np.int64)
    if not np.issubdtype(x.dtype, np.integer):
        raise CliError(f"{path}: holds {x.dtype} values; give uint8 codes or use --float")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise CliError(f"{path}: codes must be in 0..255")
    return x.astype(np.int64)


# ------------------------------------------------------------------------------ commands

def cmd_pack(args) -> int:
    from zeroskip.sw.pack import pack_model, write_model
    from zeroskip.sw.quant import extract_fc_stack, quantize_mlp
    model = load_torch_model(args.model)
    stack = extract_fc_stack(model)
    params = _params(args)
    x = _calibration(args.calib, stack[0][0].in_features)
    qm = quantize_mlp(model, x, params, percentile=args.percentile)
    pm = pack_model(qm, params, dense=args.dense)
    size = write_model(args.output, pm)
    print(f"wrote {args.output}: {len(pm.layers)} layers, {size} bytes, "
          f"{sum(pl.nonzeros for pl in pm.layers)} nonzero weights, {params.pes} PEs")
    return 0


def describe(pm) -> dict:
    p = pm.params
    layers = []
    for i, pl in enumerate(pm.layers):
        q = pl.q
        zero_entries = int(sum(int(np.count_nonzero((e & ((1 << p.weight_bits) - 1)) == 0))
                               for e in pl.entries))
        layers.append({
            "layer": i, "kind": "fc", "in": q.in_features, "out": q.out_features,
            "encoding": "relative-index", "index_bits": p.index_bits,
            "nonzeros": pl.nonzeros, "density": pl.nonzeros / q.weight.size,
            "entries": pl.n_entries, "zero_entries": zero_entries,
            "entries_per_pe": [len(e) for e in pl.entries],
            "stream_bytes": pl.stream_bytes(p),
            "output": "uint8 (requantized, ReLU)" if q.requant else "int32",
        })
    return {"params": p.as_dict(), "input_scale": pm.input_scale, "layers": layers}


def _print_board_fit(fit: dict) -> None:
    print("boards:")
    for name, f in fit.items():
        if f["packed_for_it"]:
            print(f"  {name:<11} fits (packed for it)")
            continue
        diff = ", ".join(f"{k} {a} vs {b}" for k, (a, b) in f["differs"].items())
        head = f"  {name:<11} not packed for it ({diff})"
        if f["fits"]:
            print(f"{head}; fits once repacked: zeroskip pack --board {name}")
        else:
            print(f"{head}; does not fit even repacked: {f['limit']}")


def cmd_inspect(args) -> int:
    from zeroskip.sw.pack import read_model
    pm = read_model(args.file)
    info = describe(pm)
    info["file_bytes"] = Path(args.file).stat().st_size
    from zeroskip.api import board_fit
    info["boards"] = board_fit(pm)
    if args.json:
        print(json.dumps(info, indent=2))
        return 0
    p = pm.params
    print(f"{args.file}: zeroskip model, {len(pm.layers)} layers, {info['file_bytes']} bytes")
    print(f"packed for {p.pes} PEs, index {p.index_bits} bits, weights int{p.weight_bits}, "
          f"acc {p.acc_width} bits; input scale {pm.input_scale:.6g}")
    print(f"{'layer':>5} {'shape':>11} {'nonzeros':>9} {'density':>8} {'entries':>8} "
          f"{'zeros':>7} {'bytes':>7}  encoding        output")
    for lay in info["layers"]:
        shape = f"{lay['out']}x{lay['in']}"
        print(f"{lay['layer']:>5} {shape:>11} {lay['nonzeros']:>9} {lay['density']:>8.3f} "
              f"{lay['entries']:>8} {lay['zero_entries']:>7} {lay['stream_bytes']:>7}  "
              f"{lay['encoding']:<15} {lay['output']}")
    _print_board_fit(info["boards"])
    return 0


def cmd_ref(args) -> int:
    from zeroskip.sw.pack import read_model
    from zeroskip.sw.ref import run_model
    pm = read_model(args.file)
    x = _read_inputs(args.input, pm.layers[0].q.in_features, args.float, pm.input_scale)
    out = run_model(pm, x).numpy()
    if args.out:
        np.save(args.out, out)
        print(f"wrote {args.out}: {out.shape[0]} x {out.shape[1]} outputs")
    else:
        for row in out:
            print(" ".join(str(int(v)) for v in row), f"  argmax {int(np.argmax(row))}")
    return 0


def _save_npy_atomic(path: str, arr: np.ndarray) -> None:
    """``np.save`` to exactly ``path`` (no ``.npy`` appended) through a temporary file + rename,
    so a failed write never leaves a truncated file in place of a good one."""
    import os
    import tempfile
    target = Path(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent)
    except OSError as e:
        raise CliError(f"{path}: cannot write ({e.strerror})") from None
    try:
        with os.fdopen(fd, "wb") as f:
            np.save(f, arr)
            f.flush()
            os.fsync(f.fileno())
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, target)
    except OSError as e:
        raise CliError(f"{path}: cannot write ({e.strerror})") from None
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _read_labels(path: str, n: int) -> np.ndarray:
    try:
        y = np.load(path)
    except (OSError, ValueError) as e:
        raise CliError(f"{path}: cannot read an .npy array ({e})") from None
    if not np.issubdtype(y.dtype, np.integer) or y.ndim != 1:
        raise CliError(f"{path}: labels must be a 1-d integer array, not {y.dtype} {y.shape}")
    if len(y) != n:
        raise CliError(f"{path}: {len(y)} labels for {n} inputs")
    return y.astype(np.int64)


def cmd_run(args) -> int:
    from zeroskip.sim.verilated import Case, ConsoleProgress, SimulationFailed, run_cases
    from zeroskip.sw.pack import FitError, pack_model, read_model
    from zeroskip.sw.ref import run_model
    pm = read_model(args.file)
    x = _read_inputs(args.input, pm.layers[0].q.in_features, args.float, pm.input_scale)
    labels = None if args.labels is None else _read_labels(args.labels, len(x))
    if args.out is not None:
        out_dir = Path(args.out).parent
        if not out_dir.is_dir():
            raise CliError(f"{args.out}: directory {out_dir} does not exist")
        if Path(args.out).is_dir():
            raise CliError(f"{args.out}: is a directory")
    hw, counter_width = pm.params, 32
    if args.board:
        from zeroskip.boards.tops import BOARD_COUNTER_WIDTH
        hw, counter_width = _board_params()[args.board], BOARD_COUNTER_WIDTH[args.board]
        if not pm.params.packs_like(hw):
            raise CliError(f"{args.file} was not packed for the {args.board}'s accelerator "
                           f"(see zeroskip inspect; repack with zeroskip pack --board "
                           f"{args.board})")
    exp = run_model(pm, x).numpy()
    cases = [Case(pm, x, exp, name=args.file)]
    if args.compare_dense:
        try:
            dense = pack_model(pm.qmodel(), pm.params, dense=True)
        except FitError as e:
            raise CliError(f"--compare-dense: the dense packing does not fit the hardware "
                           f"the file was packed for ({e})") from None
        cases.append(Case(dense, x, exp, skip_zero_acts=False, name=f"{args.file} (dense)"))
    print(f"running {len(x)} input(s){' twice (sparse, dense)' if args.compare_dense else ''} "
          f"on the Verilated RTL ({pm.params.pes} PEs"
          f"{', the ' + args.board + ' configuration' if args.board else ''})", file=sys.stderr)
    status = ConsoleProgress()
    try:
        results = run_cases(hw, cases, seed=args.seed, progress=status,
                            counter_width=counter_width, quiet=True)
    except SimulationFailed as e:
        status.close()
        # the first line names the failing outputs' case, the seed and the log
        raise CliError(f"the RTL simulation failed: {str(e).splitlines()[0]}") from None
    except RuntimeError as e:  # Verilator missing
        status.close()
        raise CliError(str(e)) from None
    status.close()
    res = results[0]
    bit_exact = all(np.array_equal(r.outputs, exp) for r in results)
    cycles = np.array([c["cycles"] for c in res.counters], dtype=np.float64)
    runs = f"{len(x)} input(s)" + (" (sparse and dense)" if args.compare_dense else "")
    print(f"bit-exact: {bit_exact} on {runs}; "
          f"cycles per inference: mean {cycles.mean():.1f}, max {int(cycles.max())}")
    if labels is not None:
        acc = float((res.outputs.argmax(1) == labels).mean())
        print(f"accuracy: {acc:.2%} on {len(labels)} labelled input(s)")
    if args.compare_dense:
        dcyc = np.array([c["cycles"] for c in results[1].counters], dtype=np.float64)
        print(f"dense (same hardware, dense packing, no activation skipping): "
              f"{dcyc.mean():.1f} cycles per inference; speedup {dcyc.mean() / cycles.mean():.2f}x")
    if args.out is not None:
        _save_npy_atomic(args.out, res.outputs)
        print(f"wrote {args.out}: {res.outputs.shape[0]} x {res.outputs.shape[1]} outputs")
    return 0


def cmd_demo(args) -> int:
    from zeroskip.demo import run_demo
    return run_demo(images=args.images, sparsity=args.sparsity, pes=args.pes, seed=args.seed,
                    quick=args.quick)


_RUN_EPILOG = """\
The simulator is compiled once per hardware configuration (PEs, widths, depths) and reused by
every model and every later call; the model is loaded at run time. The first build of a
configuration takes a few minutes (progress is shown), later calls a few seconds.
Builds go to {cache}
(the user cache directory; set ZEROSKIP_SIM_BUILD=DIR to put them elsewhere).
"""


def _run_args(p: argparse.ArgumentParser) -> None:
    import os

    from zeroskip.sim.runner import sim_build_root
    cache = "$ZEROSKIP_SIM_BUILD" if os.environ.get("ZEROSKIP_SIM_BUILD") else sim_build_root()
    p.epilog = _RUN_EPILOG.format(cache=cache)
    p.formatter_class = argparse.RawDescriptionHelpFormatter
    p.add_argument("--labels", metavar="L.npy", default=None,
                   help="1-d integer .npy of the inputs' classes: print the accuracy")
    p.add_argument("--out", metavar="FILE", default=None,
                   help="write the RTL outputs (N, out) to this .npy (written atomically)")
    p.add_argument("--compare-dense", action="store_true",
                   help="also run the model packed dense with activation skipping off, on the "
                        "same hardware, and print the measured speedup")
    p.add_argument("--board", choices=sorted(_board_params()), default=None,
                   help="simulate this board's accelerator exactly (hardware-only parameters "
                        "and counter width too); default: the parameters in the file")
    p.add_argument("--seed", type=int, default=None, help="simulation seed")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="zeroskip", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = ap.add_subparsers(dest="command", metavar="COMMAND", required=True)

    p = sub.add_parser("demo", help="the whole flow on digits, through the Verilated RTL")
    p.add_argument("--images", type=int, default=None,
                   help="test images run on the RTL (default: all)")
    p.add_argument("--sparsity", type=float, default=0.9, help="weights pruned (default 0.9)")
    p.add_argument("--pes", type=int, default=8, help="PEs (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer epochs (for tests)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("pack", help="quantize and pack a saved PyTorch model")
    p.add_argument("model", help="torch.save'd nn.Module or state_dict of Linear layers")
    p.add_argument("-o", "--output", required=True, help="model file to write (.zsk)")
    p.add_argument("--calib", default=None,
                   help="calibration inputs: 'digits', 'fashion-mnist' or a float .npy "
                        "(default: digits for 64-input models)")
    p.add_argument("--percentile", type=float, default=100.0,
                   help="activation range percentile for calibration (default 100: max)")
    p.add_argument("--dense", action="store_true", help="store zero weights too (baseline)")
    _params_args(p)
    p.set_defaults(func=cmd_pack)

    p = sub.add_parser("inspect", help="describe a model file")
    p.add_argument("file")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.set_defaults(func=cmd_inspect)

    for name, func, hlp in (("ref", cmd_ref, "outputs of the integer reference"),
                            ("run", cmd_run, "run on the Verilated RTL, compare with reference")):
        p = sub.add_parser(name, help=hlp)
        p.add_argument("file", help="model file (.zsk)")
        p.add_argument("input", help=".npy of uint8 codes (N, in) or (in,)")
        p.add_argument("--float", action="store_true",
                       help="the .npy holds float inputs: quantize with the file's input scale")
        if name == "ref":
            p.add_argument("--out", help="write the outputs to this .npy instead of printing")
        else:
            _run_args(p)
        p.set_defaults(func=func)

    from zeroskip.commands.compress import add_subcommands
    add_subcommands(sub)
    return ap


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args) or 0)
    except ZeroskipError as e:
        print(f"zeroskip: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("zeroskip: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
