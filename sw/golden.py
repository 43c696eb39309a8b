"""Golden model files: small packed models with inputs and the integer reference's outputs.

The files live in ``tests/golden/``; per model ``<name>``:

* ``<name>.zsk`` -- the packed model file (``docs/format.md``);
* ``<name>.inputs.npy`` -- ``uint8`` input codes, shape ``(N, in)`` (``in = C * H * W`` of the
  input map, in CHW order);
* ``<name>.expected.npy`` -- ``int64`` outputs of :func:`zeroskip.sw.ref.run_model`, ``(N, out)``.

They are checked in and only rewritten on request::

    python -m zeroskip.sw.golden               # verify: decode every file, rerun the reference
    python -m zeroskip.sw.golden --regenerate  # rebuild deterministically, write atomically

Verification exits with status 1 (naming the file and the problem) when a golden file does not
decode, the inputs do not fit the model, or the reference no longer reproduces the expected
outputs. Regeneration builds every model in memory first and writes only when all succeeded.
"""

from __future__ import annotations

import argparse
import io
import os
import sys
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..spec import HwParams
from .errors import ZeroskipError
from .pack import PackedModel, pack_model, read_model, to_bytes
from .quant import QLayer, QModel
from .random_models import fitted_layer
from .ref import run_layer, run_model

__all__ = ["GOLDEN_DIR", "GOLDEN_MODELS", "Golden", "build_all", "regenerate", "verify",
           "train_digits_pruned", "main"]

GOLDEN_DIR = Path(__file__).resolve().parent.parent / "tests" / "golden"


@dataclass
class Golden:
    name: str
    packed: PackedModel
    inputs: np.ndarray      # uint8 (N, in)
    expected: np.ndarray    # int64 (N, out)
    description: str


# ----------------------------------------------------------------------------- builders

def train_digits_pruned(seed: int = 0, hidden: int = 64, sparsity: float = 0.9):
    """A digits MLP ``64 -> hidden -> 10`` trained with a fixed seed and pruned progressively
    (global magnitude pruning, fine-tuning after each step) to ``sparsity``.

    Returns ``(model, dataset)``. Takes a few seconds on one CPU thread.
    """
    import torch

    from .data import load_digits
    from .models import digits_mlp
    from .prune import magnitude_prune
    from .train import train

    threads = torch.get_num_threads()
    torch.set_num_threads(1)    # deterministic and much faster for such small matrices
    try:
        ds = load_digits()
        torch.manual_seed(seed)
        model = digits_mlp((hidden,))
        train(model, ds.x_train, ds.y_train, epochs=30, lr=1e-2, batch_size=128, seed=seed)
        masks = None
        steps = [s for s in (0.5, 0.75, 0.85) if s < sparsity] + [sparsity]
        for s in steps:
            masks = magnitude_prune(model, s, masks=masks, scope="global")
            train(model, ds.x_train, ds.y_train, epochs=25, lr=3e-3, batch_size=128,
                  masks=masks, seed=seed + 1)
        masks.remove()              # plain layers with zeros, as the quantizer expects
    finally:
        torch.set_num_threads(threads)
    return model, ds


def _digits() -> Golden:
    from .quant import quantize_mlp

    params = HwParams(pes=4, index_bits=4, entry_depth=2048, ptr_depth=256, row_depth=64,
                      act_depth=128, max_layers=4, fifo_depth=8)
    model, ds = train_digits_pruned()
    qm = quantize_mlp(model, ds.x_train, params)
    pm = pack_model(qm, params)
    x = qm.quantize_input(ds.x_test[:48])
    return Golden("digits_pruned", pm, x, _ref(pm, x),
                  "digits MLP 64-64-10 trained with seed 0, pruned to 90% (global magnitude), "
                  "4 PEs, index_bits 4, int32 logits")


def _random_inputs(rng: np.random.Generator, n: int, features: int) -> np.ndarray:
    x = rng.integers(0, 256, size=(n, features))
    x[rng.random((n, features)) < 0.4] = 0     # zero activations (skipped by the hardware)
    x[0, :] = 0                                 # an all-zero input
    x[1, :] = 255                               # the largest input
    return x.astype(np.uint8)


def _random_model(name: str, seed: int, sizes: list[int], density: float, params: HwParams,
                  last_requant: bool, dense: bool, description: str, n: int = 16,
                  version: int = 2) -> Golden:
    rng = np.random.default_rng(seed)
    x0 = _random_inputs(rng, n, sizes[0])
    layers, h = [], x0
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        requant = last_requant or i < len(sizes) - 2
        q = fitted_layer(rng, b, a, density, requant, h, params)
        layers.append(q)
        h = run_layer(q, h, params.acc_width).numpy()
    qm = QModel(layers, input_scale=1.0 / 64)
    pm = pack_model(qm, params, dense=dense)
    pm.format_version = version
    return Golden(name, pm, x0, _ref(pm, x0), description)


def _random3() -> Golden:
    params = HwParams(pes=3, index_bits=2, acc_width=24, entry_depth=1024, ptr_depth=128,
                      row_depth=32, act_depth=64, max_layers=3, fifo_depth=2)
    return _random_model("random3_pes3_k2", 3, [20, 17, 12, 5], 0.3, params, False, False,
                         "random 3-layer 20-17-12-5, density 0.3, 3 PEs, index_bits 2 "
                         "(fillers), acc_width 24, int32 logits")


def _dense() -> Golden:
    params = HwParams(pes=2, index_bits=6, entry_depth=1024, ptr_depth=64, row_depth=32,
                      act_depth=32, max_layers=2, fifo_depth=4)
    return _random_model("dense", 5, [24, 16, 10], 0.9, params, False, True,
                         "random 2-layer 24-16-10, 90% nonzero, packed dense=True (every "
                         "weight stored, zeros included), 2 PEs, int32 logits; format "
                         "version 1", version=1)


def _relu_last() -> Golden:
    params = HwParams(pes=5, index_bits=3, mult_bits=12, shift_bits=5, entry_depth=512,
                      ptr_depth=64, row_depth=16, act_depth=32, max_layers=2, fifo_depth=1)
    return _random_model("relu_last", 7, [16, 11, 9], 0.5, params, True, False,
                         "random 2-layer 16-11-9 whose last layer is requantized (ReLU, uint8 "
                         "outputs), 5 PEs (one PE idle in the last layer's rows), index_bits 3, "
                         "12-bit multipliers; format version 1", version=1)


def _store_zeros(pl, params: HwParams, rng: np.random.Generator, count: int) -> int:
    """Split ``count`` entries ``(delta, w)`` with ``delta >= 1`` into a stored zero
    ``(d1, 0)`` and ``(delta - d1 - 1, w)``: legal streams (docs/format.md 5.3) that the packer
    itself never writes, so a decoder that treats every zero-weight entry as a filler of
    ``max_delta`` fails. Returns how many were split."""
    wb = params.weight_bits
    done = 0
    for p in rng.permutation(params.pes):
        ent = [int(v) for v in pl.entries[p]]
        ptr = [int(v) for v in pl.ptrs[p]]
        cand = [k for k, v in enumerate(ent) if (v >> wb) >= 1 and v & ((1 << wb) - 1)]
        for k in sorted(rng.permutation(cand)[:count - done].tolist(), reverse=True):
            d, w = ent[k] >> wb, ent[k] & ((1 << wb) - 1)
            d1 = int(rng.integers(0, d))
            ent[k:k + 1] = [d1 << wb, ((d - d1 - 1) << wb) | w]
            ptr = [v + 1 if v > k else v for v in ptr]
            done += 1
        pl.entries[p] = np.asarray(ent, dtype=np.uint16)
        pl.ptrs[p] = np.asarray(ptr, dtype=np.uint32)
        if done >= count:
            break
    return done


def _extremes(q: QLayer, rng: np.random.Generator) -> None:
    """Put the extreme weight codes -128 and 127 on some nonzero weights."""
    nz = np.flatnonzero(q.weight)
    pick = rng.choice(nz, size=min(6, len(nz)), replace=False)
    q.weight.flat[pick[::2]] = -128
    q.weight.flat[pick[1::2]] = 127


def _cnn(name: str, seed: int, spec, density, params: HwParams, description: str,
         n: int = 12, zeros: int = 6) -> Golden:
    from .random_models import random_cnn

    rng = np.random.default_rng(seed)
    c, h, w = spec.in_shape
    x0 = _random_inputs(rng, n, c * h * w)
    qm = random_cnn(rng, spec, density, params, inputs=x0, ties=3)
    _extremes(qm.layers[0], rng)
    pm = pack_model(qm, params)
    stored = sum(_store_zeros(pl, params, rng, zeros // 2) for pl in pm.layers[:2])
    assert stored == 2 * (zeros // 2), stored
    return Golden(name, pm, x0, _ref(pm, x0), description)


def _cnn_small() -> Golden:
    from .random_models import CnnSpec, ConvSpec, FCSpec

    params = HwParams(pes=3, index_bits=2, entry_depth=2048, ptr_depth=256, row_depth=64,
                      act_depth=512, max_layers=4, fifo_depth=4)
    spec = CnnSpec((2, 10, 10), (ConvSpec(12, 3, 1, 1, (3, 2)), ConvSpec(16, 3, 2, 1),
                                 FCSpec(24), FCSpec(7)))
    return _cnn("cnn_pad_stride", 11, spec, [0.6, 0.35, 0.25, 0.5], params,
                "random CNN 2x10x10 -> conv 12@3x3 pad 1, maxpool 3/2 -> conv 16@3x3 stride 2 "
                "pad 1 -> FC 64-24-7, 3 PEs, index_bits 2 (fillers), power-of-two rows (ties), "
                "stored zero entries, extreme weights, int32 logits")


def _lenet5() -> Golden:
    from .random_models import CnnSpec, ConvSpec, FCSpec

    params = HwParams(pes=4, index_bits=3, entry_depth=4096, ptr_depth=1024, row_depth=128,
                      act_depth=4096, max_layers=5, fifo_depth=8)
    spec = CnnSpec((1, 28, 28), (ConvSpec(6, 5, 1, 2, (2, 2)), ConvSpec(16, 5, 1, 0, (2, 2)),
                                 FCSpec(120), FCSpec(84), FCSpec(10)))
    return _cnn("lenet5_classic", 13, spec, [0.5, 0.15, 0.06, 0.15, 0.3], params,
                "random pruned classic LeNet-5 (28x28, conv 6@5x5 pad 2, pool 2, conv 16@5x5, "
                "pool 2, FC 400-120-84-10), 4 PEs, index_bits 3, power-of-two rows (ties), "
                "stored zero entries, extreme weights, int32 logits", n=8)


GOLDEN_MODELS: dict[str, Callable[[], Golden]] = {
    "digits_pruned": _digits,
    "random3_pes3_k2": _random3,
    "dense": _dense,
    "relu_last": _relu_last,
    "cnn_pad_stride": _cnn_small,
    "lenet5_classic": _lenet5,
}


def _ref(pm: PackedModel, x: np.ndarray) -> np.ndarray:
    return run_model(pm, x).numpy().astype(np.int64)


def build_all() -> list[Golden]:
    return [build() for build in GOLDEN_MODELS.values()]


# ----------------------------------------------------------------------------- files

def _npy_bytes(a: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, a, allow_pickle=False)
    return buf.getvalue()


def _write_atomic(path: Path, blob: bytes) -> None:
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", dir=path.parent)
    umask = os.umask(0)
    os.umask(umask)
    try:
        os.chmod(tmp, 0o666 & ~umask)     # mkstemp makes 0600; golden files are ordinary files
        with os.fdopen(fd, "wb") as f:
            f.write(blob)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise


def paths(name: str, folder: Path = GOLDEN_DIR) -> tuple[Path, Path, Path]:
    return (folder / f"{name}.zsk", folder / f"{name}.inputs.npy",
            folder / f"{name}.expected.npy")


def regenerate(folder: Path = GOLDEN_DIR, out=sys.stdout) -> list[Golden]:
    goldens = build_all()           # everything in memory first: no half-written set
    folder.mkdir(parents=True, exist_ok=True)
    for g in goldens:
        zsk, inp, exp = paths(g.name, folder)
        _write_atomic(zsk, to_bytes(g.packed))
        _write_atomic(inp, _npy_bytes(np.ascontiguousarray(g.inputs, dtype=np.uint8)))
        _write_atomic(exp, _npy_bytes(np.ascontiguousarray(g.expected, dtype=np.int64)))
        nz = sum(pl.nonzeros for pl in g.packed.layers)
        ent = sum(pl.n_entries for pl in g.packed.layers)
        print(f"wrote {zsk.name} ({zsk.stat().st_size} bytes, {nz} nonzeros, {ent} entries): "
              f"{g.description}", file=out)
    return goldens


def verify_one(name: str, folder: Path = GOLDEN_DIR) -> None:
    """Raise :class:`ZeroskipError` (or :class:`FormatError`) when golden ``name`` is broken."""

    zsk, inp, exp = paths(name, folder)
    for p in (zsk, inp, exp):
        if not p.is_file():
            raise ZeroskipError(f"{p}: missing (run `python -m zeroskip.sw.golden --regenerate`)")
    pm = read_model(zsk)
    if to_bytes(pm) != zsk.read_bytes():
        raise ZeroskipError(f"{zsk}: decodes, but re-encoding does not give the same bytes")
    x = np.load(inp, allow_pickle=False)
    want = np.load(exp, allow_pickle=False)
    if x.dtype != np.uint8 or want.dtype != np.int64:
        raise ZeroskipError(f"{name}: inputs must be uint8 and expected int64, found "
                            f"{x.dtype} and {want.dtype}")
    got = run_model(pm, x).numpy()
    if got.shape != want.shape:
        raise ZeroskipError(f"{name}: the reference gives shape {got.shape}, expected "
                            f"{want.shape}")
    bad = np.argwhere(got != want)
    if bad.size:
        i, o = bad[0]
        raise ZeroskipError(f"{name}: {len(bad)} outputs differ from {exp.name}, first at "
                            f"sample {i} output {o}: {got[i, o]} != {want[i, o]}")


def verify(folder: Path = GOLDEN_DIR, out=sys.stdout) -> bool:
    ok = True
    for name in GOLDEN_MODELS:
        try:
            verify_one(name, folder)
            print(f"ok   {name}", file=out)
        except ZeroskipError as e:
            ok = False
            print(f"FAIL {e}", file=out)
    return ok


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m zeroskip.sw.golden", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--regenerate", action="store_true",
                    help="rebuild every golden model and overwrite the files")
    ap.add_argument("--dir", type=Path, default=GOLDEN_DIR, help=f"default: {GOLDEN_DIR}")
    args = ap.parse_args(argv)
    if args.regenerate:
        regenerate(args.dir)
    return 0 if verify(args.dir) else 1


if __name__ == "__main__":
    sys.exit(main())
