"""The training loop (one for every method), evaluation and a progress line; CPU-friendly and
deterministic with a seed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["train", "evaluate", "predict", "Progress", "Callback"]


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


class Callback:
    """Hooks into :func:`train`; override the ones you need (each gets the model).

    * ``on_train_begin(model)``: before the first batch (after ``model.train()``).
    * ``after_backward(model)``: gradients are computed, the optimizer has not stepped: edit
      ``p.grad`` here.
    * ``after_step(model)``: after each optimizer step (keep derived state in sync here).
    * ``on_train_end(model)``: after the last step (before ``model.eval()``).

    What the compression methods need is not in callbacks but on the modules: pruning masks,
    shared-weight codebooks and ternary straight-through estimators are
    ``torch.nn.utils.parametrize`` parametrizations of ``weight`` (:mod:`zeroskip.sw.prune`,
    :mod:`zeroskip.sw.compress.sharing`, :mod:`zeroskip.sw.compress.ternary`), so this loop,
    or any other, trains them correctly.
    """

    def on_train_begin(self, model: nn.Module) -> None:
        pass

    def after_backward(self, model: nn.Module) -> None:
        pass

    def after_step(self, model: nn.Module) -> None:
        pass

    def on_train_end(self, model: nn.Module) -> None:
        pass


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10,
          lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0,
          masks=None, loss_fn: LossFn | None = None,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
          params: Iterable[torch.nn.Parameter] | None = None,
          callbacks: Iterable[Callback] = (), seed: int = 0, progress: bool = False,
          desc: str = "training") -> nn.Module:
    """Train ``model`` in place with Adam on ``(x, y)``; returns ``model`` (in eval mode).

    This is the one training loop of zeroskip: pruning schedules, progressive pruning,
    centroid fine-tuning and ternary training all call it.

    Parameters
    ----------
    loss_fn : ``loss_fn(logits, x, y)`` replaces cross-entropy (knowledge distillation plugs
        in here, :func:`zeroskip.sw.compress.distillation_loss`).
    extra_loss : ``extra_loss(model)`` is added to the loss (e.g. an L1 penalty on BatchNorm
        scales for network slimming).
    params : the parameters to optimize (default: every parameter of ``model``).
    callbacks : :class:`Callback` objects called around every step.
    masks : ignored (kept for compatibility): pruning masks live on the modules and hold
        pruned weights at zero in every loop.
    seed : seeds the batch order (the same seed gives the same run).
    """
    del masks
    gen = torch.Generator().manual_seed(seed)
    opt = torch.optim.Adam(list(params) if params is not None else model.parameters(), lr=lr,
                           weight_decay=weight_decay)
    callbacks = list(callbacks)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    bar = Progress(steps, desc, enabled=progress)
    model.train()
    for cb in callbacks:
        cb.on_train_begin(model)
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
            for cb in callbacks:
                cb.after_backward(model)
            opt.step()
            for cb in callbacks:
                cb.after_step(model)
            bar.update(1, f"loss {loss.item():.3f}")
    for cb in callbacks:
        cb.on_train_end(model)
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
