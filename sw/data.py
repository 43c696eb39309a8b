"""Data sets that ship with the machine: nothing is downloaded at run time.

* ``digits``: scikit-learn's bundled 8x8 handwritten digits (1,797 images, values 0..16).
* ``fashion-mnist``: Fashion-MNIST from Debian's ``dataset-fashion-mnist`` package
  (``/usr/share/datasets/fashion-mnist/``, or a folder the user names).

Every loader returns float tensors scaled to ``[0, 1]`` and int64 labels, split into a training
and a test set, so that models and the quantizer see the same value range for every data set.
"""

from __future__ import annotations

import gzip
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .errors import ZeroskipError

__all__ = ["Dataset", "DatasetError", "load_dataset", "load_digits", "load_fashion_mnist",
           "FASHION_MNIST_DIRS"]

FASHION_MNIST_DIRS = ("/usr/share/datasets/fashion-mnist",)


class DatasetError(ZeroskipError):
    """A data set cannot be read (missing files, wrong format)."""


@dataclass
class Dataset:
    """A train/test split. Images are ``float32`` in ``[0, 1]``, shaped ``(N, C, H, W)``."""
    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor
    y_test: torch.Tensor
    classes: int = 10

    @property
    def image_shape(self) -> tuple[int, ...]:
        return tuple(self.x_train.shape[1:])

    @property
    def features(self) -> int:
        return int(np.prod(self.image_shape))


def load_digits(test_fraction: float = 0.25, seed: int = 0) -> Dataset:
    """scikit-learn's 8x8 digits, split with a fixed seed (stratified)."""
    from sklearn.datasets import load_digits as _load
    from sklearn.model_selection import train_test_split

    bunch = _load()
    x = (bunch.images.astype(np.float32) / 16.0)[:, None, :, :]
    y = bunch.target.astype(np.int64)
    x_tr, x_te, y_tr, y_te = train_test_split(
        x, y, test_size=test_fraction, random_state=seed, stratify=y)
    return Dataset("digits", torch.from_numpy(x_tr), torch.from_numpy(y_tr),
                   torch.from_numpy(x_te), torch.from_numpy(y_te))


def _read_idx(path: Path) -> np.ndarray:
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4 or raw[0] != 0 or raw[1] != 0:
        raise DatasetError(f"{path}: not an IDX file")
    dtype_code, ndim = raw[2], raw[3]
    if dtype_code != 0x08:
        raise DatasetError(f"{path}: IDX element type {dtype_code:#x} is not unsigned byte")
    dims = struct.unpack(f">{ndim}I", raw[4:4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(dims)):
        raise DatasetError(f"{path}: truncated ({data.size} of {int(np.prod(dims))} bytes)")
    return data.reshape(dims)


def _find(folder: Path, stem: str) -> Path:
    for name in (stem, stem + ".gz"):
        if (folder / name).is_file():
            return folder / name
    raise DatasetError(f"{folder}: missing {stem}[.gz]")


def load_fashion_mnist(path: str | os.PathLike | None = None) -> Dataset:
    """Fashion-MNIST (60,000 training and 10,000 test images, 28x28).

    ``path`` is a folder with the four IDX files (``train-images-idx3-ubyte[.gz]`` ...); by
    default the folder Debian's ``dataset-fashion-mnist`` package installs, or the folder named
    by the environment variable ``ZEROSKIP_FASHION_MNIST``.
    """
    candidates = [Path(path)] if path is not None else (
        [Path(os.environ["ZEROSKIP_FASHION_MNIST"])] if "ZEROSKIP_FASHION_MNIST" in os.environ
        else [Path(p) for p in FASHION_MNIST_DIRS])
    folder = next((c for c in candidates if c.is_dir()), None)
    if folder is None:
        raise DatasetError(
            f"Fashion-MNIST not found in {', '.join(map(str, candidates))}; install it with "
            "`apt-get install dataset-fashion-mnist` or pass the folder that holds the IDX files")
    x_tr = _read_idx(_find(folder, "train-images-idx3-ubyte"))
    y_tr = _read_idx(_find(folder, "train-labels-idx1-ubyte"))
    x_te = _read_idx(_find(folder, "t10k-images-idx3-ubyte"))
    y_te = _read_idx(_find(folder, "t10k-labels-idx1-ubyte"))

    def imgs(a):
        return torch.from_numpy(a.astype(np.float32) / 255.0)[:, None, :, :]

    return Dataset("fashion-mnist", imgs(x_tr), torch.from_numpy(y_tr.astype(np.int64)),
                   imgs(x_te), torch.from_numpy(y_te.astype(np.int64)))


def load_dataset(name: str, path: str | os.PathLike | None = None) -> Dataset:
    """Load a data set by name: ``digits`` or ``fashion-mnist``."""
    key = name.lower().replace("_", "-")
    if key == "digits":
        return load_digits()
    if key in ("fashion-mnist", "fashionmnist", "fmnist"):
        return load_fashion_mnist(path)
    raise DatasetError(f"unknown data set {name!r}; choose 'digits' or 'fashion-mnist'")
