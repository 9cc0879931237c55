"""Uniqueness-weighted token distillation and prototype anchoring (dinomix_core.methods.fkd)."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from dinomix_core.methods.fkd import (
    PrototypeBank,
    ProjectionHead,
    TokenBank,
    class_prototypes,
    fkd_loss,
    labels_to_token_grid,
    pool_to_token_grid,
    prototype_agreement_weights,
    uniqueness_weights,
)


def _unit(v: list[float]) -> torch.Tensor:
    return F.normalize(torch.tensor(v, dtype=torch.float32), dim=0)


def _common_and_rare(n_common: int = 20) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    common = F.normalize(torch.tensor([1.0, 0.0, 0.0, 0.0]) + 0.05 * torch.randn(n_common, 4, generator=g), dim=1)
    rare = _unit([0.0, 0.0, 1.0, 0.2]).unsqueeze(0)
    return torch.cat([common, rare])


def test_uniqueness_ranks_a_rare_token_above_common_ones_and_matches_pairwise_formula():
    tokens = _common_and_rare()
    w = uniqueness_weights(tokens)
    assert w[-1] > 3 * w[:-1].max()
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6)
    u = 1.0 - (tokens @ tokens.T).mean(1)  # the definition, N x N
    torch.testing.assert_close(w, u / u.mean(), rtol=0, atol=1e-5)


def test_uniqueness_with_a_bank_and_a_mask():
    tokens = _common_and_rare()
    # a bank full of the rare direction makes it the common one
    bank = tokens[-1:].repeat(200, 1)
    w = uniqueness_weights(tokens, bank=bank)
    assert w[-1] < w[:-1].min()
    # masked-out tokens get 0 and leave the others as if they were absent
    mask = torch.ones(tokens.shape[0], dtype=torch.bool)
    mask[-1] = False
    wm = uniqueness_weights(tokens, mask=mask)
    assert wm[-1] == 0
    torch.testing.assert_close(wm[:-1], uniqueness_weights(tokens[:-1]), rtol=0, atol=1e-6)
    identical = uniqueness_weights(tokens[:1].repeat(5, 1))
    torch.testing.assert_close(identical, torch.ones(5))


def _grid_tokens(seed: int, shape=(2, 8, 3, 2, 2)) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def test_fkd_loss_is_zero_for_equal_tokens_and_positive_otherwise():
    teacher = F.normalize(_grid_tokens(0), dim=1)
    assert fkd_loss(teacher.clone(), teacher).item() == pytest.approx(0.0, abs=1e-6)
    assert fkd_loss(5.0 * teacher, teacher).item() == pytest.approx(0.0, abs=1e-6)  # scale-free
    other = _grid_tokens(1)
    loss = fkd_loss(other, teacher)
    assert loss.item() > 0.1
    # the weighted formula by hand
    t = teacher.permute(0, 2, 3, 4, 1).reshape(-1, 8)
    s = F.normalize(other.permute(0, 2, 3, 4, 1).reshape(-1, 8), dim=1)
    w = uniqueness_weights(t)
    expected = (w * (1 - (s * t).sum(1))).sum() / w.sum()
    assert loss.item() == pytest.approx(expected.item(), abs=1e-6)
    plain = fkd_loss(other, teacher, use_uniqueness=False)
    assert plain.item() == pytest.approx((1 - (s * t).sum(1)).mean().item(), abs=1e-6)


def test_fkd_loss_ignores_padding_tokens_and_masked_tokens():
    teacher = F.normalize(_grid_tokens(2), dim=1)
    teacher[1, :, 2] = 0.0  # padded slice of the second volume
    student = teacher.clone()
    student_garbage = student.clone()
    student_garbage[1, :, 2] = torch.randn(8, 2, 2)
    assert fkd_loss(student_garbage, teacher).item() == pytest.approx(0.0, abs=1e-6)
    mask = torch.ones(2, 3, 2, 2, dtype=torch.bool)
    mask[0, 0] = False
    student_garbage[0, :, 0] = -teacher[0, :, 0]
    assert fkd_loss(student_garbage, teacher, valid_mask=mask).item() == pytest.approx(0.0, abs=1e-6)
    assert fkd_loss(student_garbage, teacher).item() > 0.1
    nothing = torch.zeros_like(mask)
    s = student_garbage.clone().requires_grad_(True)
    zero = fkd_loss(s, teacher, valid_mask=nothing)
    zero.backward()
    assert zero.item() == 0.0 and torch.isfinite(s.grad).all()


def test_fkd_gradients_reach_student_and_head_never_the_teacher():
    torch.manual_seed(0)
    image = torch.randn(2, 1, 4, 8, 8)
    student = nn.Conv3d(1, 4, 3, padding=1)
    head = ProjectionHead(4, 6, hidden_channels=5)
    frozen = nn.Conv3d(1, 6, 1)
    for p in frozen.parameters():
        p.requires_grad_(False)
    live_teacher = nn.Conv3d(1, 6, 1)  # not frozen: fkd_loss must still detach its tokens
    grid = (4, 2, 2)  # stride 4
    for teacher_module in (frozen, live_teacher):
        teacher_tokens = F.normalize(pool_to_token_grid(teacher_module(image), grid), dim=1)
        student.zero_grad(set_to_none=True)
        head.zero_grad(set_to_none=True)
        loss = fkd_loss(pool_to_token_grid(head(student(image)), grid), teacher_tokens)
        loss.backward()
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())
        assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
        assert all(p.grad is None for p in teacher_module.parameters())


def test_bank_is_used_and_filled_by_fkd_loss():
    teacher = F.normalize(_grid_tokens(3), dim=1)
    student = _grid_tokens(4)
    bank = TokenBank(8, capacity=100)
    first = fkd_loss(student, teacher, bank=bank)
    assert len(bank) == 24
    second = fkd_loss(student, teacher, bank=bank)  # reference set now includes the bank
    assert first.item() == pytest.approx(second.item(), rel=1e-5)  # bank = same tokens -> same mean
    other = TokenBank(8, capacity=100)
    other.push(F.normalize(torch.randn(50, 8), dim=1))
    assert fkd_loss(student, teacher, bank=other, update_bank=False).item() != pytest.approx(first.item())
    assert len(other) == 50


def test_token_bank_is_fifo_and_subsamples_big_pushes():
    bank = TokenBank(2, capacity=5, generator=torch.Generator().manual_seed(0))
    assert bank.tokens is None
    bank.push(torch.tensor([[1.0, 0.0]] * 3))
    bank.push(torch.tensor([[0.0, 1.0]] * 4))
    assert len(bank) == 5
    stored = bank.tokens
    assert (stored[:, 1] == 1).sum() == 4 and (stored[:, 0] == 1).sum() == 1  # oldest two evicted
    bank.push(torch.arange(40.0).view(20, 2))
    assert len(bank) == 5 and bank.tokens.shape == (5, 2)
    with pytest.raises(ValueError):
        bank.push(torch.zeros(3, 4))


def test_pool_to_token_grid_averages_cells_and_upsamples_depth():
    feats = torch.arange(2 * 8 * 8, dtype=torch.float32).view(1, 1, 2, 8, 8)
    pooled = pool_to_token_grid(feats, (2, 2, 2))
    expected = feats.view(1, 1, 2, 2, 4, 2, 4).mean(dim=(4, 6))
    torch.testing.assert_close(pooled, expected)
    depth = torch.tensor([0.0, 4.0]).view(1, 1, 2, 1, 1).expand(1, 1, 2, 4, 4).contiguous()
    up = pool_to_token_grid(depth, (4, 2, 2))
    assert up.shape == (1, 1, 4, 2, 2)
    torch.testing.assert_close(up[0, 0, :, 0, 0], torch.tensor([0.0, 1.0, 3.0, 4.0]))
    head = ProjectionHead(3, 5)
    assert head(torch.randn(1, 3, 2, 4, 4)).shape == (1, 5, 2, 4, 4)


def test_labels_to_token_grid_lets_any_foreground_win_over_background():
    labels = torch.zeros(1, 1, 4, 8, dtype=torch.long)  # stride 4 -> grid 1 x 2
    labels[0, 0, 3, 1] = 3  # one voxel of a tiny organ in cell (0, 0)
    labels[0, 0, :3, 4:] = 1  # 12 voxels of class 1 ...
    labels[0, 0, 3, 4:6] = 2  # ... and 2 of class 2 in cell (0, 1)
    grid = labels_to_token_grid(labels, 4, num_classes=4)
    assert grid.tolist() == [[[[3, 1]]]]
    ignore = torch.full((1, 1, 4, 8), -1)
    ignore[0, 0, 0, 0] = 0
    assert labels_to_token_grid(ignore, 4).tolist() == [[[[0, -1]]]]
    with pytest.raises(ValueError, match="multiples"):
        labels_to_token_grid(labels, 3)


def test_class_prototypes_and_prototype_bank():
    e0, e1, e2 = _unit([1, 0, 0]), _unit([0, 1, 0]), _unit([0, 0, 1])
    tokens = torch.stack([e0, e1, F.normalize(e1 + 0.5 * e2, dim=0), torch.zeros(3)]).T.reshape(1, 3, 1, 2, 2)
    grid_labels = torch.tensor([0, 1, 1, 1]).view(1, 1, 2, 2)  # last token is padding
    protos, present = class_prototypes(tokens, grid_labels, 3)
    assert present.tolist() == [True, True, False]
    torch.testing.assert_close(protos[0], e0)
    torch.testing.assert_close(protos[1], F.normalize(e1 + F.normalize(e1 + 0.5 * e2, dim=0), dim=0))
    assert torch.equal(protos[2], torch.zeros(3))

    bank = PrototypeBank(3, 3, momentum=0.5)
    bank.update(protos, present)
    torch.testing.assert_close(bank.prototypes[1], protos[1])
    new = torch.stack([e1, e2, e0])
    bank.update(new, torch.tensor([False, True, True]))
    torch.testing.assert_close(bank.prototypes[0], e0)  # not in this batch: unchanged
    torch.testing.assert_close(bank.prototypes[1], F.normalize(0.5 * protos[1] + 0.5 * e2, dim=0))
    torch.testing.assert_close(bank.prototypes[2], e0)  # first sighting: taken as is
    assert bank.present.tolist() == [True, True, True]
    restored = PrototypeBank(3, 3)
    restored.load_state_dict(bank.state_dict())
    assert torch.equal(restored.prototypes, bank.prototypes) and restored.momentum == 0.5
    with pytest.raises(ValueError, match="class list or teacher"):
        PrototypeBank(4, 3).load_state_dict(bank.state_dict())


def test_prototype_agreement_reduces_weight_exactly_where_the_nearest_prototype_disagrees():
    e0, e1 = _unit([1, 0, 0]), _unit([0, 1, 0])
    tilted = F.normalize(e1 + 0.6 * e0, dim=0)  # nearest e1, but fairly close to e0
    # token grid 1 x 2 x 2 (stride 2): [bg-like, organ-like; tilted organ, padding]
    tokens = torch.stack([e0, e1, tilted, torch.zeros(3)]).T.reshape(1, 3, 1, 2, 2)
    protos = torch.stack([e0, e1, torch.zeros(3)])
    present = torch.tensor([True, True, False])
    pseudo = torch.tensor(
        [[0, 1, 1, 1],
         [0, 0, 1, 0],
         [1, 1, 0, 0],
         [2, 0, 1, 1]]
    ).view(1, 1, 4, 4)
    hard = prototype_agreement_weights(tokens, protos, present, pseudo, 2, disagree_weight=0.3, temperature=None)
    nearest = torch.tensor([[0, 0, 1, 1], [0, 0, 1, 1], [1, 1, -1, -1], [1, 1, -1, -1]])
    judged = (nearest >= 0) & (pseudo[0, 0] != 2)
    expected = torch.where(judged & (pseudo[0, 0] != nearest), 0.3, 1.0)
    torch.testing.assert_close(hard[0, 0], expected)

    soft = prototype_agreement_weights(tokens, protos, present, pseudo, 2, disagree_weight=0.3, temperature=0.1)
    disagree = judged & (pseudo[0, 0] != nearest)
    assert torch.all(soft[0, 0][~disagree] == 1.0)
    assert torch.all(soft[0, 0][disagree] < 1.0) and torch.all(soft[0, 0][disagree] > 0.3)
    gap_tilted = float((tilted @ e0) - (tilted @ e1))
    assert soft[0, 0, 3, 1].item() == pytest.approx(0.3 + 0.7 * math.exp(gap_tilted / 0.1), abs=1e-6)
    # a tilted token is less sure than a clean one, so its disagreeing voxels keep more weight
    assert soft[0, 0, 3, 1] > soft[0, 0, 1, 3]
    none_present = prototype_agreement_weights(tokens, protos, torch.zeros(3, dtype=torch.bool), pseudo, 2)
    assert torch.equal(none_present, torch.ones_like(none_present))


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_fkd_on_cuda_under_autocast_matches_cpu():
    teacher = F.normalize(_grid_tokens(5), dim=1).half()
    student = _grid_tokens(6)
    ref = fkd_loss(student, teacher.float())
    with torch.autocast("cuda", dtype=torch.float16):
        out = fkd_loss(student.cuda().half(), teacher.cuda())
    assert out.dtype == torch.float32
    assert out.item() == pytest.approx(ref.item(), abs=2e-3)
    background = torch.zeros(2, 3, 2, 2, dtype=torch.long, device="cuda")
    protos, present = class_prototypes(teacher.cuda(), background, 2)
    pseudo = torch.zeros(2, 3, 8, 8, dtype=torch.long, device="cuda")
    w = prototype_agreement_weights(teacher.cuda(), protos, present, pseudo, 4)
    assert w.device.type == "cuda" and torch.all(w == 1.0)
