"""Segmentation losses: soft Dice, class/voxel-weighted cross-entropy and their sum.

Shapes (all batched, axis order z, y, x):
    logits        (B, C, D, H, W)  any float dtype; the losses run in float32 with autocast off
    target        (B, D, H, W)     long class indices; values outside [0, C) are only allowed
                                   where ``valid_mask`` is False (e.g. ignore/padding = -1)
    class_weights (C,)             e.g. ``pic.class_loss_weights`` (proportional to (1/f_c)^beta)
    voxel_weights (B, D, H, W)     float trust in [0, 1] per voxel (e.g. prototype agreement)
    valid_mask    (B, D, H, W)     bool; False voxels contribute nothing

Every loss returns a float32 scalar. When nothing is valid it returns a zero that is still
connected to ``logits`` (zero gradient, never NaN), so a trainer can always call ``backward``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from dinomix_core.methods._common import float32_region

__all__ = ["soft_dice_loss", "weighted_cross_entropy", "dice_ce_loss"]

_EPS = 1e-8


def _check_shapes(logits: torch.Tensor, target: torch.Tensor, *masks: torch.Tensor | None) -> None:
    if logits.dim() != 5:
        raise ValueError(f"logits must be (B, C, D, H, W), got shape {tuple(logits.shape)}")
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if tuple(target.shape) != expected:
        raise ValueError(
            f"target must be (B, D, H, W) = {expected} to match logits {tuple(logits.shape)}, "
            f"got {tuple(target.shape)}"
        )
    for m in masks:
        if m is not None and tuple(m.shape) != expected:
            raise ValueError(f"masks/weights must be (B, D, H, W) = {expected}, got {tuple(m.shape)}")


def _voxel_weight(
    target: torch.Tensor,
    num_classes: int,
    voxel_weights: torch.Tensor | None,
    valid_mask: torch.Tensor | None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-voxel float32 weight (0 where invalid) and the target with invalid voxels set to 0."""
    valid = (target >= 0) & (target < num_classes)
    if valid_mask is not None:
        valid = valid & valid_mask.bool()
    weight = valid.float()
    if voxel_weights is not None:
        weight = weight * voxel_weights.float().clamp_min(0.0)
    safe_target = torch.where(valid, target, torch.zeros_like(target))
    return weight, safe_target


def soft_dice_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    valid_mask: torch.Tensor | None = None,
    voxel_weights: torch.Tensor | None = None,
    include_background: bool = False,
    smooth: float = 1e-5,
) -> torch.Tensor:
    """Soft Dice loss ``sum_c w_c (1 - dice_c) / sum_c w_c`` over softmax probabilities.

    Dice is computed per class over the whole batch (all valid voxels of all B volumes pooled), so
    a small organ that appears in one volume of the batch still gives a stable Dice term.
    Only classes present in the valid target are averaged: an organ absent from the patch would
    otherwise add a full "predict nothing" loss term, and with the large tail-class weights that
    pushes exactly the minority organs towards background. False positives of absent classes are
    still penalised by the cross-entropy half of :func:`dice_ce_loss` and by the denominators of
    the present classes. ``voxel_weights`` act as soft masks inside every sum. Returns 0 (with
    grad) when no selected class is present or nothing is valid.
    """
    _check_shapes(logits, target, valid_mask, voxel_weights)
    num_classes = logits.shape[1]
    with float32_region(logits.device):
        weight, safe_target = _voxel_weight(target, num_classes, voxel_weights, valid_mask)
        probs = torch.softmax(logits.float(), dim=1)
        onehot = F.one_hot(safe_target, num_classes).permute(0, 4, 1, 2, 3).float()
        w = weight.unsqueeze(1)
        dims = (0, 2, 3, 4)
        intersect = (probs * onehot * w).sum(dims)
        pred_sum = (probs * w).sum(dims)
        gt_sum = (onehot * w).sum(dims)
        dice = (2.0 * intersect + smooth) / (pred_sum + gt_sum + smooth)

        selected = gt_sum > 0
        if not include_background:
            selected[0] = False
        cw = torch.ones(num_classes, device=logits.device) if class_weights is None else (
            class_weights.to(device=logits.device, dtype=torch.float32)
        )
        if cw.shape != (num_classes,):
            raise ValueError(f"class_weights must have shape ({num_classes},), got {tuple(cw.shape)}")
        cw = cw * selected.float()
        # No Python branch on tensor values (no device sync): with nothing selected the numerator
        # is an exact 0 that is still connected to ``logits``.
        return (cw * (1.0 - dice)).sum() / cw.sum().clamp_min(_EPS)


def weighted_cross_entropy(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    voxel_weights: torch.Tensor | None = None,
    valid_mask: torch.Tensor | None = None,
) -> torch.Tensor:
    """Cross-entropy ``sum_v a_v w_{y_v} CE_v / sum_v w_{y_v}`` over valid voxels v.

    Class weights w_c are *relative*: the normaliser is their sum over the valid voxels (the
    PyTorch weighted-mean convention), so the loss scale does not depend on which organs a patch
    happens to contain. Voxel weights a_v in [0, 1] are *absolute* trust: they are left out of the
    normaliser, so a patch full of doubtful pseudo-labels (a_v = 0.3) pulls 0.3 times as hard
    instead of being renormalised back to full strength.
    """
    _check_shapes(logits, target, valid_mask, voxel_weights)
    num_classes = logits.shape[1]
    with float32_region(logits.device):
        valid_weight, safe_target = _voxel_weight(target, num_classes, None, valid_mask)
        ce = F.cross_entropy(logits.float(), safe_target, reduction="none")
        if class_weights is None:
            cw_vox = valid_weight
        else:
            cw = class_weights.to(device=logits.device, dtype=torch.float32)
            if cw.shape != (num_classes,):
                raise ValueError(f"class_weights must have shape ({num_classes},), got {tuple(cw.shape)}")
            cw_vox = cw[safe_target] * valid_weight
        trust = cw_vox
        if voxel_weights is not None:
            trust = cw_vox * voxel_weights.float().clamp_min(0.0)
        ce = torch.where(trust > 0, ce, torch.zeros_like(ce))
        return (trust * ce).sum() / cw_vox.sum().clamp_min(_EPS)


def dice_ce_loss(
    logits: torch.Tensor,
    target: torch.Tensor,
    *,
    class_weights: torch.Tensor | None = None,
    voxel_weights: torch.Tensor | None = None,
    valid_mask: torch.Tensor | None = None,
    include_background: bool = False,
    dice_weight: float = 1.0,
    ce_weight: float = 1.0,
) -> torch.Tensor:
    """``ce_weight * CE + dice_weight * Dice``, both class-weighted (METHOD §4, mixed volumes).

    The same ``class_weights``, ``voxel_weights`` and ``valid_mask`` go to both terms; with all
    of them ``None`` this is the plain supervised loss used for labeled volumes.
    """
    ce = weighted_cross_entropy(
        logits, target, class_weights=class_weights, voxel_weights=voxel_weights, valid_mask=valid_mask
    )
    dice = soft_dice_loss(
        logits,
        target,
        class_weights=class_weights,
        valid_mask=valid_mask,
        voxel_weights=voxel_weights,
        include_background=include_background,
    )
    return ce_weight * ce + dice_weight * dice
