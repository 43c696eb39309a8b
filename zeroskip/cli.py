"""The ``zeroskip`` command.

    zeroskip demo                       train, prune, quantize, pack, run on the RTL, compare
                                        (digits CNN; --model mlp; --dataset fashion-mnist)
    zeroskip pack MODEL -o FILE.zsk     pack a saved PyTorch model (or state_dict + --arch);
                                        --board icebreaker|ulx3s packs for a board
    zeroskip inspect FILE.zsk           layers, shapes, densities, bytes, encoding, board fit
    zeroskip ref FILE.zsk INPUT.npy     outputs of the bit-exact integer reference
    zeroskip run FILE.zsk INPUT.npy     run on the Verilated RTL and compare with the reference
                                        (--labels, --out, --compare-dense; builds are cached
                                        in the user cache directory or $ZEROSKIP_SIM_BUILD)
    zeroskip compress ...               the compression toolkit (see ``zeroskip compress -h``)
    zeroskip board ...                  flash a board, load a model, run inputs on it (or on the
                                        simulated board: --port sim:icebreaker)

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


def _import_modules(names) -> list:
    """Import the modules given with ``--import`` (the current directory is searched too)."""
    import importlib
    mods = []
    if names and "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    for name in names or []:
        try:
            mods.append(importlib.import_module(name))
        except Exception as e:  # noqa: BLE001 - any import failure is a user error
            raise CliError(f"--import {name}: cannot import ({type(e).__name__}: "
                           f"{str(e).splitlines()[0] if str(e) else ''})") from None
    return mods


def _factory(spec: str):
    """``--arch``: a name from ``zeroskip.sw.models.FACTORIES`` or ``module.path:factory``."""
    import importlib

    from zeroskip.sw.models import FACTORIES
    if ":" not in spec:
        if spec not in FACTORIES:
            raise CliError(f"--arch {spec}: unknown architecture; give one of "
                           f"{', '.join(FACTORIES)} or module.path:factory")
        return FACTORIES[spec]
    mod, _, attr = spec.partition(":")
    if "" not in sys.path and "." not in sys.path:
        sys.path.insert(0, "")
    try:
        fn = getattr(importlib.import_module(mod), attr)
    except Exception as e:  # noqa: BLE001
        raise CliError(f"--arch {spec}: cannot import {attr} from {mod} ({type(e).__name__})") \
            from None
    if not callable(fn):
        raise CliError(f"--arch {spec}: {attr} is not callable")
    return fn


def _unpickler_module(extra_modules):
    """A ``pickle_module`` for torch.load that also finds classes pickled as ``__main__.X`` in
    the modules given with ``--import``."""
    import pickle
    import types

    class Unpickler(pickle.Unpickler):
        def find_class(self, module, name):
            try:
                return super().find_class(module, name)
            except (AttributeError, ModuleNotFoundError):
                if module == "__main__":
                    for m in extra_modules:
                        if hasattr(m, name):
                            return getattr(m, name)
                raise

    mod = types.ModuleType("zeroskip_pickle")
    mod.Unpickler = Unpickler
    mod.load = lambda f, **kw: Unpickler(f, **kw).load()
    mod.__dict__.update({k: getattr(pickle, k) for k in ("Pickler", "dump", "dumps", "loads",
                                                         "UnpicklingError", "HIGHEST_PROTOCOL",
                                                         "DEFAULT_PROTOCOL")})
    return mod


_NO_CLASS = ("{path}: the model's class {cls} cannot be found ({why}); the file stores only "
             "a reference to it. Make it importable: give --import MODULE (the module that "
             "defines {name}; a class defined in a script's __main__ is looked up there too), "
             "or save model.state_dict() and give --arch NAME or --arch module.path:factory")


def load_torch_model(path: str, arch: str | None = None, imports=()):
    """The model to pack: a whole saved ``nn.Module``, or a state_dict plus ``--arch``.

    A state_dict says nothing about activations or the order of operations, so it is refused
    without an architecture (never guessed)."""
    import re

    import torch
    from torch import nn
    mods = _import_modules(imports)
    if not Path(path).is_file():
        raise CliError(f"{path}: no such file" if not Path(path).exists() else
                       f"{path}: not a file")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=False,
                         pickle_module=_unpickler_module(mods))
    except (AttributeError, ModuleNotFoundError) as e:
        msg = str(e)
        m = re.search(r"attribute '([\w.]+)' on <module '([\w.]+)'", msg)
        m2 = re.search(r"No module named '([\w.]+)'", msg)
        if m and m.group(2).split(".")[-1] == "__main__":
            cls, why, name = m.group(1), "it was defined in the script that saved the " \
                "model (__main__)", m.group(1)
        elif m:
            cls, why, name = f"{m.group(2)}.{m.group(1)}", f"no {m.group(1)} in module " \
                f"{m.group(2)}", m.group(1)
        elif m2:
            cls, why, name = "", f"no module named {m2.group(1)}", "the class"
        else:
            cls, why, name = "", f"{type(e).__name__}", "the class"
        raise CliError(_NO_CLASS.format(path=path, cls=cls or "(unknown)", why=why,
                                        name=name)) from None
    except Exception as e:  # noqa: BLE001 - unpickling errors of any kind are user errors
        raise CliError(f"{path}: not a PyTorch model or state_dict ({type(e).__name__})") \
            from None
    if isinstance(obj, torch.jit.ScriptModule):
        raise CliError(f"{path}: a TorchScript model cannot be traced; save the nn.Module "
                       "itself, or its state_dict with --arch")
    if isinstance(obj, nn.Module):
        if arch:
            raise CliError(f"{path}: holds a whole nn.Module; --arch is only for state_dicts")
        return obj.eval()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict) or not obj or not all(
            isinstance(v, torch.Tensor) for v in obj.values()):
        raise CliError(f"{path}: holds a {type(obj).__name__}, not an nn.Module or state_dict")
    from zeroskip.sw.models import FACTORIES
    if not arch:
        raise CliError(f"{path}: holds a state_dict, which does not say which activations and "
                       "operations the model uses; give its architecture with --arch NAME ("
                       f"{', '.join(FACTORIES)}) or --arch module.path:factory")
    try:
        model = _factory(arch)()
    except CliError:
        raise
    except Exception as e:  # noqa: BLE001
        raise CliError(f"--arch {arch}: the factory failed ({type(e).__name__}: {e})") from None
    if not isinstance(model, nn.Module):
        raise CliError(f"--arch {arch}: the factory returned a {type(model).__name__}, not an "
                       "nn.Module")
    try:
        model.load_state_dict(obj)
    except RuntimeError as e:
        lines = [ln.strip() for ln in str(e).splitlines() if ln.strip()]
        detail = "; ".join(lines[1:3]) if len(lines) > 1 else lines[0] if lines else ""
        raise CliError(f"{path}: the state_dict does not match --arch {arch}: "
                       f"{detail[:300]}") from None
    return model.eval()


def _load_npy(path: str, what: str) -> np.ndarray:
    """An ``.npy`` array of numbers (no pickles), at least one element, at least 1-d."""
    try:
        x = np.load(path, allow_pickle=False)
    except FileNotFoundError:
        raise CliError(f"{path}: no such file") from None
    except IsADirectoryError:
        raise CliError(f"{path}: is a directory") from None
    except (OSError, ValueError, EOFError) as e:
        raise CliError(f"{path}: cannot read {what} from an .npy array ("
                       f"{str(e).splitlines()[0] if str(e) else type(e).__name__})") from None
    if not isinstance(x, np.ndarray):
        raise CliError(f"{path}: holds several arrays (.npz); give one .npy array")
    if x.dtype.kind not in "biuf":
        raise CliError(f"{path}: holds {x.dtype} values, not numbers")
    if x.ndim == 0:
        raise CliError(f"{path}: holds a single number (a 0-d array); give {what} of shape "
                       "(N, ...)")
    if x.size == 0:
        raise CliError(f"{path}: is empty (shape {x.shape})")
    return x


def _calibration(spec: str | None, first):
    """Float calibration inputs for the model whose first layer is ``first``."""
    from zeroskip.sw.data import load_dataset
    if spec is None:
        if first.kind == "fc" and first.weight.shape[1] == 64:
            spec = "digits"
        else:
            raise CliError("give calibration data with --calib ('digits', 'fashion-mnist' or "
                           "a .npy of float inputs (N, C, H, W)): the input size of "
                           + ("a convolutional model is not part of the model"
                              if first.kind == "conv" else
                              f"a {first.weight.shape[1]}-input model is not the digits'"))
    if spec in ("digits", "fashion-mnist"):
        ds = load_dataset(spec)
        return ds.x_train[:2000]
    x = _load_npy(spec, "calibration data")
    if x.dtype.kind == "f":
        with np.errstate(all="ignore"):
            finite = bool(np.isfinite(x).all())
        if not finite:
            raise CliError(f"{spec}: calibration data contains NaN or infinite values")
    return x.astype(np.float32)


def _read_inputs(path: str, n_features: int, as_float: bool, input_scale: float):
    x = _load_npy(path, "inputs")
    if x.ndim == 1:
        x = x[None, :]
    x = x.reshape(x.shape[0], -1)
    if x.shape[1] != n_features:
        raise CliError(f"{path}: inputs have {x.shape[1]} features, the model takes {n_features}")
    if as_float:
        with np.errstate(all="ignore"):
            finite = bool(np.isfinite(x).all())
            if not finite:
                raise CliError(f"{path}: inputs contain NaN or infinite values")
            return np.clip(np.round(x.astype(np.float64) / input_scale), 0, 255).astype(np.int64)
    if not np.issubdtype(x.dtype, np.integer):
        raise CliError(f"{path}: holds {x.dtype} values; give uint8 codes or use --float")
    if x.size and (x.min() < 0 or x.max() > 255):
        raise CliError(f"{path}: codes must be in 0..255")
    return x.astype(np.int64)


def _input_shape(spec: str | None):
    """``--input-shape C,H,W``."""
    if spec is None:
        return None
    try:
        shape = tuple(int(v) for v in spec.replace("x", ",").split(","))
    except ValueError:
        shape = ()
    if len(shape) != 3 or min(shape) < 1:
        raise CliError(f"--input-shape {spec}: give three positive integers C,H,W")
    return shape


def _check_output_path(path: str, opt: str) -> None:
    """Fail early (before any work) when ``path`` cannot be a new file."""
    p = Path(path)
    if p.is_dir():
        raise CliError(f"{opt} {path}: is a directory")
    folder = p.parent if str(p.parent) else Path(".")
    if not folder.is_dir():
        raise CliError(f"{opt} {path}: directory {folder} does not exist")


# ------------------------------------------------------------------------------ commands

def cmd_pack(args) -> int:
    from zeroskip.sw.model_import import extract_layers
    from zeroskip.sw.pack import pack_model, write_model
    from zeroskip.sw.quant import quantize_model
    _check_output_path(args.output, "-o")
    model = load_torch_model(args.model, args.arch, args.imports)
    chain = extract_layers(model)
    params = _params(args)
    x = _calibration(args.calib, chain[0])
    qm = quantize_model(chain, x, params, percentile=args.percentile,
                        input_shape=_input_shape(args.input_shape))
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
        g = q.geom
        layers.append({
            "layer": i, "kind": g.kind, "in": q.in_features, "out": q.out_features,
            "in_shape": list(g.in_shape), "out_shape": list(g.out_shape(q.out_features)),
            "kernel": list(g.kernel), "stride": g.stride, "padding": g.padding,
            "pool": list(g.pool) if g.pool else None,
            "encoding": "relative-index", "index_bits": p.index_bits,
            "nonzeros": pl.nonzeros, "density": pl.nonzeros / q.weight.size,
            "entries": pl.n_entries, "zero_entries": zero_entries,
            "entries_per_pe": [len(e) for e in pl.entries],
            "stream_bytes": pl.stream_bytes(p),
            "output": "uint8 (requantized, ReLU)" if q.requant else "int32",
        })
    return {"params": p.as_dict(), "format_version": pm.format_version,
            "input_shape": list(pm.in_shape), "input_scale": pm.input_scale, "layers": layers}


def _print_board_fit(fit: dict) -> None:
    print("boards:")
    for name, f in fit.items():
        if f["packed_for_it"]:
            print(f"  {name:<11} fits (packed for it)" if f["fits"]
                  else f"  {name:<11} does not run on it: {f['limit']}")
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
    print(f"format version {pm.format_version}; input map {'x'.join(map(str, pm.in_shape))}")
    print(f"{'layer':>5} {'kind':<28} {'shape':>11} {'nonzeros':>9} {'density':>8} "
          f"{'entries':>8} {'zeros':>7} {'bytes':>7}  encoding        output")
    for lay in info["layers"]:
        shape = f"{lay['out']}x{lay['in']}"
        kind = lay["kind"]
        if kind == "conv":
            kind += f" {lay['kernel'][0]}x{lay['kernel'][1]}/s{lay['stride']}/p{lay['padding']}"
        if lay["pool"]:
            kind += f" pool {lay['pool'][0]}/s{lay['pool'][1]}"
        kind += " -> " + "x".join(map(str, lay["out_shape"]))
        print(f"{lay['layer']:>5} {kind:<28} {shape:>11} {lay['nonzeros']:>9} "
              f"{lay['density']:>8.3f} {lay['entries']:>8} {lay['zero_entries']:>7} "
              f"{lay['stream_bytes']:>7}  {lay['encoding']:<15} {lay['output']}")
    _print_board_fit(info["boards"])
    return 0


def cmd_ref(args) -> int:
    import io

    from zeroskip.sw.modelfile import write_atomic
    from zeroskip.sw.pack import read_model
    from zeroskip.sw.ref import run_model
    if args.out:
        _check_output_path(args.out, "--out")
    pm = read_model(args.file)
    x = _read_inputs(args.input, pm.layers[0].q.in_size, args.float, pm.input_scale)
    out = run_model(pm, x).numpy()
    if args.out:
        buf = io.BytesIO()
        np.save(buf, out, allow_pickle=False)
        write_atomic(args.out, buf.getvalue())     # exactly this name (np.save adds .npy)
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
    from zeroskip.sw.pack import FitError, pack_model, read_model, unsupported_layer
    from zeroskip.sw.ref import run_model
    pm = read_model(args.file)
    x = _read_inputs(args.input, pm.layers[0].q.in_size, args.float, pm.input_scale)
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
        why = unsupported_layer([pl.q for pl in pm.layers], hw)
        if why is not None:
            raise CliError(f"{args.file} does not run on the {args.board}: {why}")
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
        acc_ref = float((exp.argmax(1) == labels).mean())
        print(f"accuracy: {acc:.2%} on {len(labels)} labelled input(s) (integer reference "
              f"{acc_ref:.2%}{'' if acc == acc_ref else ': DIFFERENT'})")
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
                    quick=args.quick, dataset=args.dataset, model=args.model, load=args.load,
                    dense_images=args.dense_images, out_dir=args.out_dir)


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

    p = sub.add_parser("demo", help="the whole flow on digits (a CNN), through the Verilated "
                                    "RTL")
    p.add_argument("--dataset", default="digits", choices=["digits", "fashion-mnist"],
                   help="digits (scikit-learn's, embedded; default) or fashion-mnist (when "
                        "installed: LeNet-5)")
    p.add_argument("--model", default=None,
                   choices=["cnn", "mlp", "lenet5", "lenet5_classic"],
                   help="digits: cnn (digits_cnn, default) or mlp (64-256-128-10); "
                        "fashion-mnist: lenet5 (Caffe 20-50-500-10, default) or lenet5_classic")
    p.add_argument("--load", default=None, metavar="STATE.pt",
                   help="a trained (pruned) state_dict of the model: no training or pruning")
    p.add_argument("--images", type=int, default=None,
                   help="test images run on the RTL (default: all of digits' 450; 200 of "
                        "Fashion-MNIST's)")
    p.add_argument("--dense-images", type=int, default=None,
                   help="images of the dense baseline run (default 16; 2 for LeNet-5)")
    p.add_argument("--sparsity", type=float, default=None,
                   help="weights pruned (default: 0.8 cnn, 0.9 mlp, 0.93 lenet5, 0.9 "
                        "lenet5_classic; a CNN's first conv at most 0.5, its last layer 0.8)")
    p.add_argument("--pes", type=int, default=8, help="PEs (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--quick", action="store_true", help="fewer epochs (for tests)")
    p.add_argument("--out-dir", default="build/demo",
                   help="where the packed model is written (default build/demo)")
    p.set_defaults(func=cmd_demo)

    p = sub.add_parser("pack", help="quantize and pack a saved PyTorch model")
    p.add_argument("model", help="torch.save'd nn.Module, or a state_dict with --arch")
    p.add_argument("-o", "--output", required=True, help="model file to write (.zsk)")
    p.add_argument("--arch", default=None,
                   help="architecture of a state_dict: a zeroskip.sw.models factory name "
                        "(lenet5, lenet5_classic, digits_cnn, digits_mlp, lenet_300_100) or "
                        "module.path:factory")
    p.add_argument("--import", dest="imports", action="append", default=[], metavar="MODULE",
                   help="import MODULE first (the module defining the saved model's class; "
                        "repeatable)")
    p.add_argument("--calib", default=None,
                   help="calibration inputs: 'digits', 'fashion-mnist' or a float .npy "
                        "(N, C, H, W) (default: digits for 64-input MLPs; required for CNNs)")
    p.add_argument("--input-shape", default=None, metavar="C,H,W",
                   help="input map of a CNN when --calib is a flat (N, C*H*W) array")
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
    from zeroskip.board_cli import add_subcommands as add_board_subcommands
    add_board_subcommands(sub)
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
