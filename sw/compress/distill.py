"""Knowledge distillation with soft targets (Hinton, Vinyals & Dean 2015).

:func:`distillation_loss` builds a ``loss_fn(logits, x, y)`` that every training and
fine-tuning loop of zeroskip accepts (:func:`zeroskip.sw.train.train`, the pruning schedules,
progressive pruning, centroid fine-tuning, ternary training)::

    loss = alpha * T**2 * KL(softmax(teacher(x) / T) || softmax(logits / T))
           + (1 - alpha) * cross_entropy(logits, y)

The ``T**2`` factor keeps the soft-target gradients on the same scale as the hard-target ones
when the temperature changes. The teacher (usually the dense model) runs in eval mode without
gradients.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..errors import ZeroskipError

__all__ = ["distillation_loss", "soft_target_loss"]


def soft_target_loss(student_logits: torch.Tensor, teacher_logits: torch.Tensor,
                     temperature: float = 4.0) -> torch.Tensor:
    """``T**2 * KL(p_teacher^T || p_student^T)``, averaged over the batch."""
    t = float(temperature)
    log_p = F.log_softmax(student_logits / t, dim=1)
    q = F.softmax(teacher_logits / t, dim=1)
    return F.kl_div(log_p, q, reduction="batchmean") * t * t


def distillation_loss(teacher: nn.Module, temperature: float = 4.0, alpha: float = 0.7,
                      copy_teacher: bool = True):
    """A ``loss_fn(logits, x, y)`` mixing soft targets from ``teacher`` with the labels.

    ``copy_teacher`` (default) freezes a copy, so pruning the student in place cannot change
    the teacher when both start as the same object.
    """
    if not temperature > 0:
        raise ZeroskipError(f"temperature must be positive, not {temperature!r}")
    if not 0.0 <= alpha <= 1.0:
        raise ZeroskipError(f"alpha must be in [0, 1], not {alpha!r}")
    t_model = copy.deepcopy(teacher) if copy_teacher else teacher
    t_model.eval()
    for p in t_model.parameters():
        p.requires_grad_(False)

    def loss_fn(logits: torch.Tensor, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        with torch.no_grad():
            t_logits = t_model(x)
        hard = F.cross_entropy(logits, y)
        if alpha == 0.0:
            return hard
        return alpha * soft_target_loss(logits, t_logits, temperature) + (1 - alpha) * hard

    loss_fn.teacher = t_model
    return loss_fn
