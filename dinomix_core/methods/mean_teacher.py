"""Mean teacher: an EMA copy of the student that makes confidence-masked pseudo-labels (METHOD §2).

Shapes (axis order z, y, x): probabilities (B, C, D, H, W); labels and masks (B, D, H, W).
"""

from __future__ import annotations

import copy

import torch
from torch import nn

__all__ = [
    "make_ema_teacher",
    "ema_update",
    "effective_decay",
    "pseudo_labels",
    "tail_aware_thresholds",
]


def make_ema_teacher(student: nn.Module) -> nn.Module:
    """A deep copy of ``student`` with ``requires_grad=False`` everywhere, in eval mode.

    Eval mode: the teacher predicts with BatchNorm running statistics (copied from the student by
    :func:`ema_update`) and without dropout, so its pseudo-labels do not depend on the batch.
    Call ``.train()`` on it yourself if you want the noisy-teacher variant.
    """
    teacher = copy.deepcopy(student)
    for p in teacher.parameters():
        p.requires_grad_(False)
        p.grad = None
    teacher.eval()
    return teacher


def _paired(teacher_items, student_items, what: str) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    t_named = list(teacher_items)
    s_named = list(student_items)
    t_names = [n for n, _ in t_named]
    s_names = [n for n, _ in s_named]
    if t_names != s_names:
        raise ValueError(
            f"teacher and student {what} differ ({len(t_names)} vs {len(s_names)} entries); "
            "build the teacher with make_ema_teacher(student)"
        )
    return [t for _, t in t_named], [s for _, s in s_named]


@torch.no_grad()
def ema_update(teacher: nn.Module, student: nn.Module, decay: float) -> None:
    """In place: ``p_t = decay * p_t + (1 - decay) * p_s`` for every parameter; buffers copied.

    Buffers (BatchNorm running mean/var, num_batches_tracked) are *copied*, not averaged: they
    already are an exponential average of batch statistics, a second EMA would only add lag, and
    copying keeps the teacher normalising with the statistics of the data the student sees now.
    Uses ``torch._foreach_*`` (one fused kernel per dtype/device group) under ``no_grad``.
    """
    if not 0.0 <= decay <= 1.0:
        raise ValueError(f"EMA decay must be in [0, 1], got {decay}")
    t_params, s_params = _paired(teacher.named_parameters(), student.named_parameters(), "parameters")
    if t_params:
        s_params = [s.detach().to(dtype=t.dtype, device=t.device) for t, s in zip(t_params, s_params)]
        t_data = [t.data for t in t_params]
        torch._foreach_mul_(t_data, decay)
        torch._foreach_add_(t_data, s_params, alpha=1.0 - decay)
    t_bufs, s_bufs = _paired(teacher.named_buffers(), student.named_buffers(), "buffers")
    if t_bufs:
        torch._foreach_copy_(t_bufs, [s.to(device=t.device) for t, s in zip(t_bufs, s_bufs)])


def effective_decay(step: int, decay: float) -> float:
    """``min(decay, 1 - 1 / (step + 1))``: the classic mean-teacher warm-up.

    In the first steps the teacher follows the student closely instead of staying near the random
    initialisation for ~1/(1-decay) steps.
    """
    return min(float(decay), 1.0 - 1.0 / (int(step) + 1))


def pseudo_labels(
    probs: torch.Tensor,
    threshold: float = 0.9,
    class_thresholds: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Arg-max labels and the confidence mask from teacher probabilities.

    Args:
        probs: (B, C, D, H, W) softmax probabilities (any float dtype).
        threshold: a voxel is confident when its max probability is >= this value.
        class_thresholds: optional (C,) per-class thresholds, indexed by the arg-max class;
            overrides ``threshold`` (use :func:`tail_aware_thresholds` to let tail organs pass
            with lower confidence, since the teacher is rarely very sure about them).

    Returns:
        labels (B, D, H, W) long, confident (B, D, H, W) bool.
    """
    if probs.dim() != 5:
        raise ValueError(f"probs must be (B, C, D, H, W), got shape {tuple(probs.shape)}")
    conf, labels = probs.float().max(dim=1)
    if class_thresholds is None:
        confident = conf >= threshold
    else:
        thr = class_thresholds.to(device=probs.device, dtype=torch.float32)
        if thr.shape != (probs.shape[1],):
            raise ValueError(f"class_thresholds must have shape ({probs.shape[1]},), got {tuple(thr.shape)}")
        confident = conf >= thr[labels]
    return labels, confident


def tail_aware_thresholds(freqs: torch.Tensor, base: float = 0.9, tail: float = 0.7) -> torch.Tensor:
    """Per-class thresholds from ``base`` (most frequent class) down to ``tail`` (rarest class).

    Rarity is measured on a log scale, ``r_c = (log f_max - log f_c) / (log f_max - log f_min)``,
    because organ frequencies span orders of magnitude (liver ~3e-2, adrenal ~1e-4): a linear
    scale would put every organ at the tail end. ``threshold_c = base - (base - tail) * r_c``.
    Equal frequencies give ``base`` everywhere. Returns float32 (C,) on ``freqs.device``.
    """
    f = freqs.detach().float().clamp_min(torch.finfo(torch.float32).tiny)
    logf = f.log()
    span = logf.max() - logf.min()
    rarity = torch.where(span > 0, (logf.max() - logf) / span.clamp_min(1e-12), torch.zeros_like(logf))
    return base - (base - tail) * rarity
