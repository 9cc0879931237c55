"""EMA teacher and pseudo-labels (dinomix_core.methods.mean_teacher)."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from dinomix_core.methods.mean_teacher import (
    effective_decay,
    ema_update,
    make_ema_teacher,
    pseudo_labels,
    tail_aware_thresholds,
)


def _tiny_student() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv3d(1, 3, 3, padding=1), nn.BatchNorm3d(3), nn.ReLU(), nn.Conv3d(3, 2, 1))


def test_teacher_is_a_frozen_independent_copy():
    student = _tiny_student()
    teacher = make_ema_teacher(student)
    assert not teacher.training
    for (name, p_t), (_, p_s) in zip(teacher.named_parameters(), student.named_parameters()):
        assert not p_t.requires_grad and p_s.requires_grad
        assert torch.equal(p_t, p_s) and p_t.data_ptr() != p_s.data_ptr(), name


def test_ema_update_is_exact_over_two_steps_and_copies_buffers():
    student = _tiny_student()
    teacher = make_ema_teacher(student)
    t0 = [p.detach().clone() for p in teacher.parameters()]
    with torch.no_grad():
        for p in student.parameters():
            p.add_(torch.randn_like(p))
    s1 = [p.detach().clone() for p in student.parameters()]
    student.train()
    student(torch.randn(2, 1, 4, 4, 4))  # moves BN running statistics
    ema_update(teacher, student, 0.9)
    t1 = [0.9 * a + 0.1 * b for a, b in zip(t0, s1)]
    for p, e in zip(teacher.parameters(), t1):
        torch.testing.assert_close(p, e, rtol=0, atol=1e-6)
    bn_t, bn_s = teacher[1], student[1]
    assert torch.equal(bn_t.running_mean, bn_s.running_mean)
    assert torch.equal(bn_t.running_var, bn_s.running_var)
    assert int(bn_t.num_batches_tracked) == int(bn_s.num_batches_tracked) == 1

    with torch.no_grad():
        for p in student.parameters():
            p.mul_(-2.0)
    s2 = [p.detach().clone() for p in student.parameters()]
    ema_update(teacher, student, 0.9)
    for p, a, b in zip(teacher.parameters(), t1, s2):
        torch.testing.assert_close(p, 0.9 * a + 0.1 * b, rtol=0, atol=1e-6)
    assert all(p.grad is None and not p.requires_grad for p in teacher.parameters())


def test_gradients_reach_the_student_and_never_the_teacher():
    student = _tiny_student()
    teacher = make_ema_teacher(student)
    x = torch.randn(2, 1, 4, 4, 4)
    with torch.no_grad():
        target_probs = torch.softmax(teacher(x + 0.1 * torch.randn_like(x)), dim=1)
    loss = ((torch.softmax(student(x), dim=1) - target_probs) ** 2).mean()
    loss.backward()
    assert all(p.grad is None for p in teacher.parameters())
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in student.parameters())


def test_ema_update_rejects_a_different_architecture():
    student = _tiny_student()
    other = nn.Sequential(nn.Conv3d(1, 3, 3, padding=1))
    with pytest.raises(ValueError, match="make_ema_teacher"):
        ema_update(other, student, 0.99)
    with pytest.raises(ValueError, match="decay"):
        ema_update(make_ema_teacher(student), student, 1.5)


def test_effective_decay_warms_up_then_caps():
    assert effective_decay(0, 0.99) == 0.0
    assert effective_decay(9, 0.99) == pytest.approx(0.9)
    assert effective_decay(10_000, 0.99) == 0.99


def test_pseudo_labels_global_and_per_class_thresholds():
    # three voxels: confident background, unsure tail class 2, confident class 1
    probs = torch.tensor([[0.95, 0.03, 0.02], [0.10, 0.15, 0.75], [0.05, 0.92, 0.03]]).T.reshape(1, 3, 1, 1, 3)
    labels, conf = pseudo_labels(probs, threshold=0.9)
    assert labels.flatten().tolist() == [0, 2, 1]
    assert conf.flatten().tolist() == [True, False, True]
    labels, conf = pseudo_labels(probs, class_thresholds=torch.tensor([0.9, 0.9, 0.7]))
    assert conf.flatten().tolist() == [True, True, True]
    labels, conf = pseudo_labels(probs, class_thresholds=torch.tensor([0.96, 0.9, 0.7]))
    assert conf.flatten().tolist() == [False, True, True]
    assert labels.dtype == torch.long and conf.dtype == torch.bool


def test_tail_aware_thresholds_interpolate_on_log_rarity():
    thr = tail_aware_thresholds(torch.tensor([1e-1, 1e-2, 1e-3]), base=0.9, tail=0.7)
    torch.testing.assert_close(thr, torch.tensor([0.9, 0.8, 0.7]), rtol=0, atol=1e-6)
    flat = tail_aware_thresholds(torch.full((4,), 0.25))
    torch.testing.assert_close(flat, torch.full((4,), 0.9))
