"""A cache of trained models for the results runner, keyed by the hash of their inputs.

A key is the SHA-256 of a JSON document holding everything a trained model depends on: the
step's name, its settings, the seed, the hash of the data tensors, the hash of the source files
of the code that trains it, and the keys of the models it starts from. A re-run therefore
retrains only what changed, and a cached model always comes from the code that is checked out.

Entries are ``<key>.pt`` files (``torch.save`` of plain tensors and JSON-able metadata, read
back with ``weights_only=True``) in ``platformdirs.user_cache_dir("zeroskip")/results``, or in
the folder named by ``ZEROSKIP_RESULTS_CACHE``. An entry is written to a temporary file and
renamed, so an interrupted run leaves no half-written entry; an entry that cannot be read (or
whose contents do not match its key) is reported, deleted and recomputed.
"""

from __future__ import annotations

import hashlib
import inspect
import json
import os
import sys
import tempfile
from collections.abc import Callable, Iterable
from pathlib import Path
from types import ModuleType

import torch
from torch import nn

from zeroskip.sw.prune import attach_mask, mask_of, prunable_layers, remove_masks

__all__ = ["ENV", "FORMAT", "cache_root", "source_hash", "tensor_hash", "ModelCache"]

ENV = "ZEROSKIP_RESULTS_CACHE"
FORMAT = 1


def cache_root() -> Path:
    """``$ZEROSKIP_RESULTS_CACHE`` if set, else ``user_cache_dir("zeroskip")/results``."""
    if os.environ.get(ENV):
        return Path(os.environ[ENV])
    from platformdirs import user_cache_dir
    return Path(user_cache_dir("zeroskip")) / "results"


def source_hash(modules: Iterable[ModuleType | Callable]) -> str:
    """SHA-256 over the source files of ``modules`` (modules or functions/classes: their
    module's file), in a fixed order."""
    files = set()
    for m in modules:
        mod = m if isinstance(m, ModuleType) else sys.modules[m.__module__]
        path = inspect.getsourcefile(mod)
        if path is None:
            raise ValueError(f"no source file for {mod.__name__}")
        files.add((mod.__name__, path))
    h = hashlib.sha256()
    for name, path in sorted(files):
        h.update(name.encode() + b"\0" + Path(path).read_bytes() + b"\0")
    return h.hexdigest()


def tensor_hash(*tensors: torch.Tensor) -> str:
    """SHA-256 of the tensors' dtypes, shapes and bytes."""
    h = hashlib.sha256()
    for t in tensors:
        t = t.detach().contiguous().cpu()
        h.update(f"{t.dtype}{tuple(t.shape)}".encode())
        h.update(t.numpy().tobytes())
    return h.hexdigest()


class ModelCache:
    """Trained models by key (see the module docstring). ``enabled=False`` stores nothing and
    finds nothing (``--no-cache``)."""

    def __init__(self, root: str | os.PathLike | None = None, enabled: bool = True,
                 log: Callable[[str], None] | None = None):
        self.root = Path(root) if root is not None else cache_root()
        self.enabled = enabled
        self.log = log or (lambda msg: print(msg, file=sys.stderr, flush=True))
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(step: str, **inputs) -> str:
        """The key of a step: SHA-256 of ``{"step": step, **inputs}`` as canonical JSON."""
        doc = json.dumps({"format": FORMAT, "step": step, **inputs}, sort_keys=True,
                         default=str)
        return hashlib.sha256(doc.encode()).hexdigest()

    def path(self, key: str) -> Path:
        return self.root / f"{key}.pt"

    def load(self, key: str, factory: Callable[[], nn.Module]) -> tuple[nn.Module, dict] | None:
        """``(model, meta)`` stored under ``key`` (a fresh ``factory()`` model with the stored
        weights and pruning masks), or ``None`` when there is no usable entry."""
        if not self.enabled:
            return None
        p = self.path(key)
        if not p.exists():
            self.misses += 1
            return None
        try:
            entry = torch.load(p, map_location="cpu", weights_only=True)
            if not isinstance(entry, dict) or entry.get("key") != key \
                    or entry.get("format") != FORMAT:
                raise ValueError("entry does not match its key")
            model = factory()
            model.load_state_dict(entry["state"])
            layers = prunable_layers(model)
            for name, mask in entry["masks"].items():
                attach_mask(layers[name], mask)
            meta = json.loads(entry["meta"])
        except Exception as e:  # any unreadable entry is recomputed, never trusted
            self.log(f"cache: entry {p.name} is unreadable ({type(e).__name__}: {e}); "
                     "deleting it and recomputing")
            p.unlink(missing_ok=True)
            self.misses += 1
            return None
        self.hits += 1
        return model, meta

    def store(self, key: str, model: nn.Module, meta: dict) -> None:
        """Store ``model`` (weights, and pruning masks separately) with JSON-able ``meta``."""
        if not self.enabled:
            return
        import copy
        masks = {n: mask_of(m).detach().clone() for n, m in prunable_layers(model).items()
                 if mask_of(m) is not None}
        plain = remove_masks(copy.deepcopy(model))
        entry = {"format": FORMAT, "key": key, "state": plain.state_dict(), "masks": masks,
                 "meta": json.dumps(meta, sort_keys=True, default=str)}
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".tmp-", suffix=".pt")
        try:
            with os.fdopen(fd, "wb") as f:
                torch.save(entry, f)
            os.replace(tmp, self.path(key))
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

    def get_or_train(self, key: str, factory: Callable[[], nn.Module],
                     build: Callable[[], tuple[nn.Module, dict]], what: str = "model"
                     ) -> tuple[nn.Module, dict, bool]:
        """``(model, meta, cached)``: the entry under ``key``, or ``build()``'s result, stored."""
        hit = self.load(key, factory)
        if hit is not None:
            self.log(f"cache: {what} from {self.path(key)}")
            return hit[0], hit[1], True
        model, meta = build()
        self.store(key, model, meta)
        return model, meta, False
