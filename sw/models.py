"""Reference models. Every model is a plain ``nn.Sequential`` so that the quantizer and the
packer can walk it layer by layer."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp", "lenet_300_100", "digits_mlp"]


def mlp(sizes: list[int] | tuple[int, ...]) -> nn.Sequential:
    """``Flatten, Linear(s0, s1), ReLU, ..., Linear(s[-2], s[-1])`` (no ReLU after the last)."""
    sizes = list(sizes)
    if len(sizes) < 2 or any(int(s) < 1 for s in sizes):
        raise ValueError(f"an MLP needs at least two positive layer sizes, not {sizes!r}")
    layers: list[nn.Module] = [nn.Flatten()]
    for i, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(nn.Linear(a, b))
        if i < len(sizes) - 2:
            layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def lenet_300_100(inputs: int = 784, classes: int = 10) -> nn.Sequential:
    """LeNet-300-100 (LeCun et al. 1998; the pruning benchmark of Han et al. 2015)."""
    return mlp([inputs, 300, 100, classes])


def digits_mlp(hidden: tuple[int, ...] = (128, 64)) -> nn.Sequential:
    """A small MLP for scikit-learn's 8x8 digits (64 inputs, 10 classes)."""
    return mlp([64, *hidden, 10])
