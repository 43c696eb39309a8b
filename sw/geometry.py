"""Layer geometry: how a layer's weight-matrix columns map onto its input activation map.

Every layer zeroskip runs is a matrix ``W[O, I]`` applied to patches of an input map of shape
``(C, H, W)`` (channels, height, width), followed by an optional max pooling:

* a **convolution** (``kind="conv"``): kernel ``(KH, KW)``, one ``stride`` and ``padding`` for
  both axes; ``I = C * KH * KW`` with column ``j = (c * KH + ky) * KW + kx`` (PyTorch's
  ``Conv2d.weight.reshape(O, -1)`` order); output map ``(O, OH, OW)`` with
  ``OH = (H + 2 * padding - KH) // stride + 1`` (same for ``OW``). Padding contributes zeros.
* a **fully-connected** layer (``kind="fc"``): the kernel covers the whole input map
  (``KH = H``, ``KW = W``, stride 1, no padding), so ``I = C * H * W`` with column
  ``j = (c * H + y) * W + x``: PyTorch's ``Flatten`` order. A plain vector input is the map
  ``(I, 1, 1)``. The output is ``(O, 1, 1)``.
* **max pooling** (``pool = (k, s)``) on the output map, floor mode, no padding:
  ``PH = (OH - k) // s + 1``. It is applied after requantization (on uint8 codes: exact).

Vectors between layers are always the CHW flattening of the maps (``c * H * W + y * W + x``).
This module has no dependencies (neither torch nor Amaranth), so both sides can import it.
"""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["Geometry", "GeometryError"]


class GeometryError(ValueError):
    """Inconsistent layer geometry."""


def _pos_int(name: str, v) -> int:
    if not isinstance(v, int) or isinstance(v, bool) or v < 1:
        raise GeometryError(f"{name} must be a positive integer, not {v!r}")
    return v


@dataclass(frozen=True)
class Geometry:
    """Geometry of one layer (see the module docstring).

    Parameters
    ----------
    kind : ``"conv"`` or ``"fc"``.
    in_shape : input map ``(C, H, W)``.
    kernel : ``(KH, KW)``; for ``fc`` it must equal ``(H, W)``.
    stride, padding : of the convolution (``fc``: 1 and 0).
    pool : ``(k, s)`` max pooling after the layer, or ``None``.
    """

    kind: str
    in_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: int = 1
    padding: int = 0
    pool: tuple[int, int] | None = None

    def __post_init__(self):
        if self.kind not in ("conv", "fc"):
            raise GeometryError(f"kind must be 'conv' or 'fc', not {self.kind!r}")
        if len(tuple(self.in_shape)) != 3:
            raise GeometryError(f"in_shape must be (C, H, W), not {self.in_shape!r}")
        object.__setattr__(self, "in_shape", tuple(int(v) for v in self.in_shape))
        object.__setattr__(self, "kernel", tuple(int(v) for v in self.kernel))
        for name, v in zip(("C", "H", "W"), self.in_shape):
            _pos_int(f"in_shape {name}", v)
        if len(self.kernel) != 2:
            raise GeometryError(f"kernel must be (KH, KW), not {self.kernel!r}")
        kh, kw = self.kernel
        _pos_int("kernel height", kh)
        _pos_int("kernel width", kw)
        _pos_int("stride", self.stride)
        if not isinstance(self.padding, int) or self.padding < 0:
            raise GeometryError(f"padding must be a non-negative integer, not {self.padding!r}")
        _, h, w = self.in_shape
        if self.kind == "fc":
            if (kh, kw) != (h, w) or self.stride != 1 or self.padding != 0:
                raise GeometryError("a fully-connected layer's kernel is its whole input map "
                                    f"({h}, {w}), stride 1, padding 0; not kernel {self.kernel},"
                                    f" stride {self.stride}, padding {self.padding}")
        elif h + 2 * self.padding < kh or w + 2 * self.padding < kw:
            raise GeometryError(f"kernel {self.kernel} is larger than the padded input map "
                                f"{h + 2 * self.padding}x{w + 2 * self.padding}")
        if self.pool is not None:
            if len(tuple(self.pool)) != 2:
                raise GeometryError(f"pool must be (kernel, stride), not {self.pool!r}")
            object.__setattr__(self, "pool", tuple(int(v) for v in self.pool))
            pk, ps = self.pool
            _pos_int("pool kernel", pk)
            _pos_int("pool stride", ps)
            oh, ow = self.conv_hw
            if pk > oh or pk > ow:
                raise GeometryError(f"pool kernel {pk} is larger than the {oh}x{ow} map")

    @classmethod
    def fc(cls, in_features: int, in_shape: tuple[int, int, int] | None = None,
           pool: tuple[int, int] | None = None) -> Geometry:
        """A fully-connected layer on a vector (or on the flattening of ``in_shape``)."""
        shape = tuple(in_shape) if in_shape is not None else (int(in_features), 1, 1)
        if shape[0] * shape[1] * shape[2] != in_features:
            raise GeometryError(f"in_shape {shape} does not have {in_features} elements")
        return cls("fc", shape, (shape[1], shape[2]), 1, 0, pool)

    # derived sizes
    @property
    def columns(self) -> int:
        """``I``: columns of the weight matrix."""
        return self.in_shape[0] * self.kernel[0] * self.kernel[1]

    @property
    def in_size(self) -> int:
        """Elements of the input vector (``C * H * W``)."""
        c, h, w = self.in_shape
        return c * h * w

    @property
    def conv_hw(self) -> tuple[int, int]:
        """``(OH, OW)``: the map the matrix produces, before pooling."""
        _, h, w = self.in_shape
        kh, kw = self.kernel
        return ((h + 2 * self.padding - kh) // self.stride + 1,
                (w + 2 * self.padding - kw) // self.stride + 1)

    @property
    def out_hw(self) -> tuple[int, int]:
        """``(PH, PW)``: the output map after pooling (``conv_hw`` without pooling)."""
        oh, ow = self.conv_hw
        if self.pool is None:
            return oh, ow
        k, s = self.pool
        return (oh - k) // s + 1, (ow - k) // s + 1

    def out_shape(self, out_channels: int) -> tuple[int, int, int]:
        return (int(out_channels), *self.out_hw)

    def out_size(self, out_channels: int) -> int:
        ph, pw = self.out_hw
        return int(out_channels) * ph * pw

    @property
    def pixels(self) -> int:
        """Output pixels the matrix is applied at (``OH * OW``)."""
        oh, ow = self.conv_hw
        return oh * ow

    def column_perm(self, channel_perm) -> list[int]:
        """Column order for an input-channel permutation: hardware column ``j`` of channel
        position ``c`` reads original column ``channel_perm[c] * KH * KW + (j % (KH * KW))``."""
        kk = self.kernel[0] * self.kernel[1]
        return [int(c) * kk + t for c in channel_perm for t in range(kk)]
