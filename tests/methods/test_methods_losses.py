"""Dice / weighted CE losses on hand-computed cases (dinomix_core.methods.losses)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

from dinomix_core.methods.losses import dice_ce_loss, soft_dice_loss, weighted_cross_entropy


def _two_class_logits(p1: list[float]) -> torch.Tensor:
    """(1, 2, 1, 1, N) logits whose softmax gives P(class 1) = p1 exactly."""
    p = torch.tensor(p1, dtype=torch.float64)
    logit1 = torch.log(p / (1 - p))
    logits = torch.stack([torch.zeros_like(logit1), logit1])  # (2, N)
    return logits.float().view(1, 2, 1, 1, -1)


def test_dice_is_zero_for_confident_perfect_prediction():
    target = torch.tensor([[0, 1, 2, 3], [3, 3, 2, 0]]).view(1, 1, 2, 4)
    logits = (F.one_hot(target, 4).permute(0, 4, 1, 2, 3).float() * 60.0 - 30.0).requires_grad_(True)
    loss = soft_dice_loss(logits, target)
    assert loss.item() < 1e-6
    assert soft_dice_loss(logits, target, include_background=True).item() < 1e-6
    loss.backward()
    assert torch.isfinite(logits.grad).all()


def test_dice_hand_value_and_class_weights():
    logits = _two_class_logits([0.8, 0.6, 0.3, 0.1])
    target = torch.tensor([1, 1, 0, 0]).view(1, 1, 1, 4)
    dice1 = 2 * (0.8 + 0.6) / ((0.8 + 0.6 + 0.3 + 0.1) + 2)
    dice0 = 2 * (0.7 + 0.9) / ((0.2 + 0.4 + 0.7 + 0.9) + 2)
    fg = soft_dice_loss(logits, target, smooth=0.0)
    assert fg.item() == pytest.approx(1 - dice1, abs=1e-6)
    both = soft_dice_loss(logits, target, include_background=True, smooth=0.0)
    assert both.item() == pytest.approx(((1 - dice0) + (1 - dice1)) / 2, abs=1e-6)
    weighted = soft_dice_loss(
        logits, target, include_background=True, class_weights=torch.tensor([1.0, 3.0]), smooth=0.0
    )
    assert weighted.item() == pytest.approx((1 * (1 - dice0) + 3 * (1 - dice1)) / 4, abs=1e-6)


def test_dice_averages_only_classes_present_in_target():
    # class 2 is absent from the target but gets probability mass: it must not add a (1 - 0) term.
    probs = torch.tensor([[0.1, 0.1, 0.7, 0.7], [0.7, 0.7, 0.1, 0.1], [0.2, 0.2, 0.2, 0.2]])
    logits = probs.log().view(1, 3, 1, 1, 4)
    target = torch.tensor([1, 1, 0, 0]).view(1, 1, 1, 4)
    dice1 = 2 * (0.7 + 0.7) / (1.6 + 2)
    loss = soft_dice_loss(logits, target, smooth=0.0)
    assert loss.item() == pytest.approx(1 - dice1, abs=1e-6)


def test_cross_entropy_matches_torch_and_weights_behave():
    g = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 2, 3, 3, generator=g)
    target = torch.randint(0, 3, (2, 2, 3, 3), generator=g)
    cw = torch.tensor([0.5, 1.0, 4.0])
    plain = weighted_cross_entropy(logits, target)
    assert plain.item() == pytest.approx(F.cross_entropy(logits, target).item(), abs=1e-6)
    weighted = weighted_cross_entropy(logits, target, class_weights=cw)
    assert weighted.item() == pytest.approx(F.cross_entropy(logits, target, weight=cw).item(), abs=1e-6)
    # voxel weights are absolute trust: a uniform 0.3 scales the loss by 0.3 (no renormalisation)
    third = weighted_cross_entropy(logits, target, class_weights=cw, voxel_weights=torch.full(target.shape, 0.3))
    assert third.item() == pytest.approx(0.3 * weighted.item(), rel=1e-5)
    # a valid mask restricts the mean to the selected voxels
    mask = torch.zeros_like(target, dtype=torch.bool)
    mask[0, 1] = True
    sub = weighted_cross_entropy(logits, target, valid_mask=mask)
    ref = F.cross_entropy(logits[0:1, :, 1], target[0:1, 1])
    assert sub.item() == pytest.approx(ref.item(), abs=1e-6)


def test_invalid_voxels_may_hold_ignore_values():
    logits = torch.randn(1, 3, 1, 2, 2)
    target = torch.tensor([[[[1, -1], [2, 255]]]])
    valid = target.clone().ge(0) & target.lt(3)
    loss = dice_ce_loss(logits, target, valid_mask=valid)
    ref = weighted_cross_entropy(logits[..., 0:1, 0:1], target[..., 0:1, 0:1]).item()
    assert torch.isfinite(loss)
    assert weighted_cross_entropy(logits, target, valid_mask=valid).item() == pytest.approx(
        (ref + F.cross_entropy(logits[..., 1, 0], target[..., 1, 0]).item()) / 2, abs=1e-6
    )


def test_empty_valid_mask_gives_zero_with_grad_and_no_nan():
    logits = torch.randn(2, 4, 2, 4, 4, requires_grad=True)
    target = torch.full((2, 2, 4, 4), -1)
    empty = torch.zeros(2, 2, 4, 4, dtype=torch.bool)
    for fn in (soft_dice_loss, weighted_cross_entropy, dice_ce_loss):
        loss = fn(logits, target, valid_mask=empty)
        assert loss.item() == 0.0
        assert loss.requires_grad
        logits.grad = None
        loss.backward()
        assert torch.equal(logits.grad, torch.zeros_like(logits))


def test_dice_ce_is_sum_and_runs_in_float32_under_autocast():
    g = torch.Generator().manual_seed(1)
    logits = torch.randn(1, 3, 2, 4, 4, generator=g)
    target = torch.randint(0, 3, (1, 2, 4, 4), generator=g)
    cw = torch.tensor([0.2, 1.0, 2.5])
    total = dice_ce_loss(logits, target, class_weights=cw, dice_weight=0.5, ce_weight=2.0)
    expected = 2.0 * weighted_cross_entropy(logits, target, class_weights=cw) + 0.5 * soft_dice_loss(
        logits, target, class_weights=cw
    )
    assert total.item() == pytest.approx(expected.item(), abs=1e-6)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = dice_ce_loss(logits.bfloat16(), target, class_weights=cw)
    assert low.dtype == torch.float32
    ref = dice_ce_loss(logits.bfloat16().float(), target, class_weights=cw)
    assert low.item() == pytest.approx(ref.item(), abs=1e-5)


def test_shape_mismatch_is_a_clear_error():
    with pytest.raises(ValueError, match="target must be"):
        soft_dice_loss(torch.zeros(1, 2, 2, 2, 2), torch.zeros(1, 2, 2, 3, dtype=torch.long))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_losses_on_cuda_under_fp16_autocast_match_cpu():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(2, 4, 4, 8, 8, generator=g)
    target = torch.randint(0, 4, (2, 4, 8, 8), generator=g)
    cw = torch.tensor([0.3, 1.0, 2.0, 3.0])
    ref = dice_ce_loss(logits.half().float(), target, class_weights=cw)
    with torch.autocast("cuda", dtype=torch.float16):
        out = dice_ce_loss(logits.cuda().half(), target.cuda(), class_weights=cw.cuda())
    assert out.dtype == torch.float32
    assert math.isclose(out.item(), ref.item(), abs_tol=1e-4)
