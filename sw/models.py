"""Reference models. They are plain ``nn.Sequential`` stacks (the compression toolkit walks
them by registration order); the quantizer traces any module with ``torch.fx``
(:mod:`zeroskip.sw.model_import`), so a user's own ``nn.Module`` works as well."""

from __future__ import annotations

from torch import nn

__all__ = ["mlp", "lenet_300_100", "digits_mlp", "lenet5", "lenet5_classic", "digits_cnn",
           "FACTORIES"]


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


def lenet5(classes: int = 10, bn: bool = False) -> nn.Sequential:
    """LeNet-5 for 28x28 inputs in the Caffe variant of Han et al. 2015 / Deep Compression
    (conv 20@5x5, pool, conv 50@5x5, pool, FC 800-500-10; 431 K weights).

    ``bn=True`` adds ``BatchNorm2d`` after each convolution (for network slimming).
    """
    def block(cin, cout):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 5)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 20), *block(20, 50), nn.Flatten(),
                         nn.Linear(50 * 4 * 4, 500), nn.ReLU(), nn.Linear(500, classes))


def lenet5_classic(classes: int = 10, bn: bool = False) -> nn.Sequential:
    """The classic LeNet-5 layer sizes (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5,
    pool, FC 400-120-84-10 (61.7 K weights), for **28x28** inputs: conv1 has padding 2, which
    gives exactly the 32x32 geometry of the original (a 28x28 image centred in a 32x32 frame of
    zeros, as LeCun et al. did with MNIST). ReLU and max pooling replace the original's scaled
    tanh and trainable average pooling (zeroskip runs ReLU networks with max pooling).
    """
    def block(cin, cout, pad):
        layers: list[nn.Module] = [nn.Conv2d(cin, cout, 5, padding=pad)]
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        return layers + [nn.ReLU(), nn.MaxPool2d(2)]

    return nn.Sequential(*block(1, 6, 2), *block(6, 16, 0), nn.Flatten(),
                         nn.Linear(16 * 5 * 5, 120), nn.ReLU(), nn.Linear(120, 84), nn.ReLU(),
                         nn.Linear(84, classes))


def digits_cnn(channels: tuple[int, int] = (8, 16), hidden: int = 32, bn: bool = True,
               classes: int = 10) -> nn.Sequential:
    """A tiny conv net for the 8x8 digits: two 3x3 conv (+BN) + ReLU + 2x2 max-pool blocks, then
    ``Linear(c2*2*2, hidden)``, ReLU, ``Linear(hidden, classes)``."""
    c1, c2 = channels
    layers: list[nn.Module] = []
    for cin, cout in ((1, c1), (c1, c2)):
        layers.append(nn.Conv2d(cin, cout, 3, padding=1))
        if bn:
            layers.append(nn.BatchNorm2d(cout))
        layers += [nn.ReLU(), nn.MaxPool2d(2)]
    layers += [nn.Flatten(), nn.Linear(c2 * 4, hidden), nn.ReLU(), nn.Linear(hidden, classes)]
    return nn.Sequential(*layers)


# model factories by name (``zeroskip pack --arch NAME``); each takes no required argument
FACTORIES = {
    "lenet_300_100": lenet_300_100,
    "digits_mlp": digits_mlp,
    "lenet5": lenet5,
    "lenet5_classic": lenet5_classic,
    "digits_cnn": digits_cnn,
}
