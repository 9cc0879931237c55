"""All method parts composed into one tiny DINO-Mix step, as the trainer will (CPU, bf16 autocast)."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from dinomix_core.methods.fkd import (
    PrototypeBank,
    ProjectionHead,
    TokenBank,
    fkd_loss,
    labels_to_token_grid,
    pool_to_token_grid,
    prototype_agreement_weights,
)
from dinomix_core.methods.losses import dice_ce_loss
from dinomix_core.methods.mean_teacher import ema_update, make_ema_teacher, pseudo_labels, tail_aware_thresholds
from dinomix_core.methods.pic import PICCurriculum, bidirectional_cutmix
from dinomix_core.methods.ramps import sigmoid_rampup


class _Student(nn.Module):
    def __init__(self, classes: int) -> None:
        super().__init__()
        self.body = nn.Sequential(nn.Conv3d(1, 6, 3, padding=1), nn.BatchNorm3d(6), nn.ReLU())
        self.out = nn.Conv3d(6, classes, 1)

    def forward(self, x):
        feats = self.body(x)
        return self.out(feats), feats


def test_one_full_step_is_finite_and_only_moves_the_student():
    torch.manual_seed(0)
    k, stride, ct, grid = 4, 4, 8, (4, 4, 4)
    gen = torch.Generator().manual_seed(0)
    img_l, img_u = torch.rand(2, 1, 4, 16, 16), torch.rand(2, 1, 4, 16, 16)
    gt = torch.zeros(2, 4, 16, 16, dtype=torch.long)
    gt[:, :, 2:8, 2:8], gt[:, 1:3, 10:13, 10:12], gt[0, 2, 14, 3] = 1, 2, 3
    tok_l = F.normalize(torch.randn(2, ct, *grid), dim=1).half()
    tok_u = F.normalize(torch.randn(2, ct, *grid), dim=1).half()

    student, head = _Student(k), ProjectionHead(6, ct)
    teacher = make_ema_teacher(student)
    cur = PICCurriculum(k)
    cur.update_labeled(gt)
    protos, bank = PrototypeBank(k, ct), TokenBank(ct, capacity=256)
    protos.update_from_batch(tok_l, labels_to_token_grid(gt, stride, num_classes=k))
    before = [p.clone() for p in teacher.parameters()]

    with torch.no_grad():
        probs_u = torch.softmax(teacher(img_u)[0], dim=1)
    pseudo, confident = pseudo_labels(probs_u, class_thresholds=tail_aware_thresholds(cur.freqs, tail=0.3))
    cur.update_pseudo(pseudo, confident)
    trust = prototype_agreement_weights(tok_u, protos.prototypes, protos.present, pseudo, stride)
    mixed_u, mixed_l = bidirectional_cutmix(
        {"image": img_l, "target": gt, "tokens": tok_l},
        {"image": img_u, "target": pseudo, "confident": confident, "tokens": tok_u, "weight": trust},
        probs_t=cur.probs(0.1), generator=gen, stride=stride,
    )
    with torch.autocast("cpu", dtype=torch.bfloat16):
        logits_l, feats_l = student(img_l)
        loss = dice_ce_loss(logits_l, gt)
        cw = cur.loss_weights()
        for mixed in (mixed_u, mixed_l):
            logits_m, feats_m = student(mixed["image"])
            loss = loss + sigmoid_rampup(0.1) * dice_ce_loss(
                logits_m, mixed["target"], class_weights=cw, voxel_weights=mixed["weight"], valid_mask=mixed["valid"]
            )
            loss = loss + sigmoid_rampup(0.1) * fkd_loss(
                pool_to_token_grid(head(feats_m), grid), mixed["tokens"], bank=bank
            )
    assert loss.dtype == torch.float32 and torch.isfinite(loss)
    loss.backward()
    assert all(p.grad is not None and torch.isfinite(p.grad).all() for p in student.parameters())
    assert all(p.grad is not None for p in head.parameters())
    assert all(p.grad is None for p in teacher.parameters())
    assert len(bank) > 0
    torch.optim.SGD(student.parameters(), lr=0.1).step()
    ema_update(teacher, student, 0.99)
    moved = [not torch.equal(a, b) for a, b in zip(before, teacher.parameters())]
    assert all(moved)
