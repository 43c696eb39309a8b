"""The training loop (one for every method), evaluation and a progress line; CPU-friendly and
deterministic with a seed."""

from __future__ import annotations

import sys
import time
from collections.abc import Callable, Iterable

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["train", "evaluate", "predict", "flip_crop", "Progress", "Callback", "OPTIMIZERS",
           "LR_SCHEDULES"]


class Progress:
    """A one-line progress display on stderr (quiet when ``enabled`` is false)."""

    def __init__(self, total: int, desc: str, enabled: bool = True, stream=None,
                 interval: float = 60.0):
        self.total, self.desc, self.enabled = max(int(total), 1), desc, enabled
        self.interval = float(interval)
        self.stream = stream or sys.stderr
        self.n = 0
        self._last = -1
        self._t0 = self._t = time.monotonic()
        self._closed = False
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())

    def update(self, n: int = 1, info: str = "") -> None:
        """Advance by ``n`` steps. On a terminal the bar is redrawn at most ten times a second;
        elsewhere (logs, CI) a line is printed at most once a minute (``interval`` seconds)
        and at :meth:`close`."""
        self.n += n
        self._info = info or getattr(self, "_info", "")
        if not self.enabled:
            return
        now = time.monotonic()
        if not self._tty:
            if now - self._t >= self.interval:
                self._t = now
                self.stream.write(f"{self.desc}: {int(100 * self.n / self.total)}% "
                                  f"{self._info} ({now - self._t0:.0f} s)\n")
                self.stream.flush()
            return
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
    * ``on_epoch_end(model, epoch)``: after each epoch (``epoch`` counts from 0; the model
      is in training mode again when it returns).
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

    def on_epoch_end(self, model: nn.Module, epoch: int) -> None:
        pass

    def on_train_end(self, model: nn.Module) -> None:
        pass


Augment = Callable[[torch.Tensor, torch.Generator], torch.Tensor]
OPTIMIZERS = ("adam", "sgd")
LR_SCHEDULES = (None, "onecycle", "cosine")


def train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, *, epochs: int = 10,
          lr: float = 1e-3, batch_size: int = 64, weight_decay: float = 0.0,
          masks=None, loss_fn: LossFn | None = None,
          extra_loss: Callable[[nn.Module], torch.Tensor] | None = None,
          params: Iterable[torch.nn.Parameter] | None = None,
          callbacks: Iterable[Callback] = (), seed: int = 0, progress: bool = False,
          desc: str = "training", optimizer: str = "adam", lr_schedule: str | None = None,
          augment: Augment | None = None) -> nn.Module:
    """Train ``model`` in place on ``(x, y)``; returns ``model`` (in eval mode).

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
    seed : seeds the batch order and ``augment`` (the same seed gives the same run).
    optimizer : ``"adam"`` (default) or ``"sgd"`` (Nesterov momentum 0.9); ``weight_decay``
        is the optimizer's L2 term in both.
    lr_schedule : ``None`` (constant ``lr``), ``"onecycle"`` (warm-up over the first 15% of
        the steps to ``lr``, then cosine annealing to about zero) or ``"cosine"`` (from ``lr``
        to zero), stepped once per batch.
    augment : ``augment(xb, generator) -> xb`` applied to every training batch (e.g.
        :func:`flip_crop`).
    """
    del masks
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, not {optimizer!r}")
    if lr_schedule not in LR_SCHEDULES:
        raise ValueError(f"lr_schedule must be one of {LR_SCHEDULES}, not {lr_schedule!r}")
    gen = torch.Generator().manual_seed(seed)
    plist = list(params) if params is not None else list(model.parameters())
    opt: torch.optim.Optimizer
    if optimizer == "adam":
        opt = torch.optim.Adam(plist, lr=lr, weight_decay=weight_decay)
    else:
        opt = torch.optim.SGD(plist, lr=lr, momentum=0.9, nesterov=True,
                              weight_decay=weight_decay)
    callbacks = list(callbacks)
    n = x.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched: torch.optim.lr_scheduler.LRScheduler | None = None
    if lr_schedule == "onecycle" and steps > 0:
        sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps,
                                                    pct_start=0.15)
    elif lr_schedule == "cosine" and steps > 0:
        sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=steps)
    bar = Progress(steps, desc, enabled=progress)
    model.train()
    for cb in callbacks:
        cb.on_train_begin(model)
    for epoch in range(epochs):
        perm = torch.randperm(n, generator=gen)
        for i in range(0, n, batch_size):
            idx = perm[i:i + batch_size]
            xb, yb = x[idx], y[idx]
            if augment is not None:
                xb = augment(xb, gen)
            logits = model(xb)
            loss = loss_fn(logits, xb, yb) if loss_fn is not None else F.cross_entropy(logits, yb)
            if extra_loss is not None:
                loss = loss + extra_loss(model)
            opt.zero_grad()
            loss.backward()
            for cb in callbacks:
                cb.after_backward(model)
            opt.step()
            if sched is not None:
                sched.step()
            for cb in callbacks:
                cb.after_step(model)
            bar.update(1, f"loss {loss.item():.3f}")
        for cb in callbacks:
            cb.on_epoch_end(model, epoch)
        model.train()
    for cb in callbacks:
        cb.on_train_end(model)
    bar.close()
    model.eval()
    return model


def flip_crop(pad: int = 2, flip: bool = True) -> Augment:
    """Light augmentation for ``(N, C, H, W)`` batches: each image is mirrored left-right with
    probability 1/2 (if ``flip``), then the whole batch is shifted by one random offset of up
    to ``pad`` pixels in each direction, the uncovered border filled with zeros (a random crop
    of the zero-padded batch)."""
    if pad < 0:
        raise ValueError(f"pad must be >= 0, not {pad!r}")

    def augment(xb: torch.Tensor, gen: torch.Generator) -> torch.Tensor:
        n, _, h, w = xb.shape
        if flip:
            f = torch.rand(n, generator=gen) < 0.5
            xb = torch.where(f[:, None, None, None], xb.flip(3), xb)
        if pad:
            padded = F.pad(xb, (pad, pad, pad, pad))
            dx, dy = torch.randint(0, 2 * pad + 1, (2,), generator=gen).tolist()
            xb = padded[:, :, dy:dy + h, dx:dx + w]
        return xb

    return augment


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, batch_size: int = 1024) -> torch.Tensor:
    model.eval()
    return torch.cat([model(x[i:i + batch_size]) for i in range(0, x.shape[0], batch_size)])


@torch.no_grad()
def evaluate(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> float:
    """Top-1 accuracy in [0, 1]."""
    return float((predict(model, x).argmax(1) == y).float().mean())
