"""Training, fine-tuning and evaluation loops (CPU-friendly, deterministic with a seed)."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

from .prune import Masks

__all__ = ["train", "evaluate", "predict", "Progress"]


class Progress:
    """A one-line progress display on stderr (quiet when ``enabled`` is false)."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None):
        self.total, self.desc, self.enabled = max(int(total), 1), desc, enabled
        self.stream = stream or sys.stderr
        self.n = 0
        self._last = -1
        self._t0 = self._t = time.monotonic()
        self._closed = False
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1, info: str = "") -> None:
        """Advance by ``n`` steps. On a terminal the bar is redrawn at most ten times a second;
        elsewhere (logs, CI) only :meth:`close` prints, one line."""
        self.n += n
        self._info = info or getattr(self, "_info", "")
        if not self.enabled or not self._tty:
            return
        now = time.monotonic()
        pct = int(100 * self.n / self.total)
        if pct != self._last and now - self._t >= 0.1:
            self._last, self._t = pct, now
            bar = "#" * (pct // 5) + "." * (20 - pct // 5)
            self.stream.write(f"\r{self.desc:<28} [{bar}] {pct:3d}% {self._info}")
            self.stream.flush()

    def close(self, info: str = "") -> None:
        if not self.enabled or self._closed:
            return
        self._closed = True
        info = info or getattr(self, "_info", "")
        secs = time.monotonic() - self._t0
        if self._tty:
            self.stream.write(f"\r{self.desc:<28} [{'#' * 20}] 100% {info} ({secs:.0f} s)\n")
        else:
            self.stream.write(f"{self.desc}: done, {info} ({secs:.0f} s)\n")
        self.stream.flush()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


LossFn = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10,
          lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0,
          masks: Masks | None = None, loss_fn: LossFn | None = None,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
          seed: int = 0, progress: bool = False, desc: str = "training") -> nn.Module:
    """Train with Adam on ``(x, y)``.

    ``masks`` are re-applied after every step (pruned weights stay zero). ``loss_fn(logits, x,
    y)`` replaces cross-entropy (knowledge distillation plugs in here); ``extra_loss(model)`` is
    added to the loss (e.g. an L1 penalty on BatchNorm scales for network slimming).
    """
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=weight_decay)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    bar = Progress(steps, desc, enabled=progress)
    model.train()
    if masks is not None:
        masks.apply()
    for _ in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            logits = model(xb)
            loss = loss_fn(logits, xb, yb) if loss_fn is not None else F.cross_entropy(logits, yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            if masks is not None:
                masks.apply()  # zero the gradients of pruned weights
            opt.step()
            if masks is not None:
                masks.apply()
            bar.update(1, f"loss {loss.item():.3f}")
    bar.close()
    model.eval()
    return model


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict(model, x).argmax(1) == y).float().mean())
