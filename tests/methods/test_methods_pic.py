"""Class frequencies, curriculum sampling and bidirectional CutMix (dinomix_core.methods.pic)."""

from __future__ import annotations

import pytest
import torch

from dinomix_core.methods.pic import (
    ClassFrequency,
    PICCurriculum,
    bidirectional_cutmix,
    class_loss_weights,
    class_sampling_probs,
    curriculum_alpha,
    sample_box,
    sample_class,
)

FREQS = torch.tensor([0.9, 0.06, 0.03, 0.009, 0.001], dtype=torch.float64)


def test_class_frequency_from_labels_then_pseudo_ema():
    cf = ClassFrequency(4, momentum=0.5, eps=1e-6)
    torch.testing.assert_close(cf.freqs, torch.full((4,), 0.25, dtype=torch.float64))
    labels = torch.tensor([0] * 6 + [1] * 3 + [2] * 1).view(1, 2, 5)
    cf.update_labeled(labels)
    f0 = torch.tensor([0.6, 0.3, 0.1, 0.0], dtype=torch.float64)
    assert torch.all(cf.freqs > 0)  # class 3 unseen: floored, never zero
    torch.testing.assert_close(cf.freqs, (f0.clamp_min(1e-6) / f0.clamp_min(1e-6).sum()))
    pseudo = torch.tensor([0, 0, 3, 3, 1, 1, 1, 1]).view(2, 4)
    mask = torch.tensor([True, True, True, True, False, False, False, False]).view(2, 4)
    cf.update_pseudo(pseudo, mask)  # confident counts: bg 2, class 3 2
    expected = 0.5 * f0 + 0.5 * torch.tensor([0.5, 0.0, 0.0, 0.5], dtype=torch.float64)
    torch.testing.assert_close(cf.freqs, expected.clamp_min(1e-6) / expected.clamp_min(1e-6).sum())
    before = cf.freqs.clone()
    cf.update_pseudo(pseudo, torch.zeros_like(mask))  # empty mask: no change
    torch.testing.assert_close(cf.freqs, before)
    restored = ClassFrequency(4)
    restored.load_state_dict(cf.state_dict())
    torch.testing.assert_close(restored.freqs, cf.freqs)
    assert restored.pseudo_updates == 1
    with pytest.raises(ValueError, match="label map changed"):
        ClassFrequency(5).load_state_dict(cf.state_dict())


def test_pseudo_counts_update_equals_pseudo_label_update():
    labels = torch.tensor([0, 0, 0, 1, 1, 2]).view(1, 6)
    pseudo = torch.tensor([0, 2, 2, 3, 1, 1]).view(1, 6)
    mask = torch.tensor([True, True, True, True, False, True]).view(1, 6)
    a, b = ClassFrequency(4, momentum=0.8), ClassFrequency(4, momentum=0.8)
    a.update_labeled(labels)
    b.update_labeled(labels)
    a.update_pseudo(pseudo, mask)
    b.update_pseudo_counts(torch.tensor([1, 1, 2, 1]))  # e.g. summed over DDP ranks
    torch.testing.assert_close(a.freqs, b.freqs)
    assert a.pseudo_updates == b.pseudo_updates == 1
    b.update_pseudo_counts(torch.zeros(4))
    torch.testing.assert_close(a.freqs, b.freqs)
    with pytest.raises(ValueError, match="expected 4 counts"):
        b.update_pseudo_counts(torch.ones(5))


def _share(probs: torch.Tensor, n: int, seed: int) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    draws = [sample_class(probs, None, g) for _ in range(n)]
    return torch.bincount(torch.tensor(draws), minlength=probs.numel()).double() / n


def test_sampling_histogram_moves_from_tail_heavy_to_uniform():
    k_fg = FREQS.numel() - 1
    shares = []
    for t in (0.0, 0.25, 0.5, 0.75, 1.0):
        probs = class_sampling_probs(FREQS, curriculum_alpha(t, gamma=1.0))
        assert probs[0] == 0.0  # background is never the paste target
        share = _share(probs, 4000, seed=int(t * 100))
        assert share[0] == 0.0
        shares.append(share)
    assert shares[0][-1] > 3 * (1 / k_fg)  # rarest class dominates at t = 0
    rarest = [s[-1].item() for s in shares]
    assert rarest == sorted(rarest, reverse=True)
    for c in range(1, k_fg + 1):
        assert abs(shares[-1][c].item() - 1 / k_fg) < 0.03  # uniform over organs at t = 1
    # restricted to the classes present in the source
    present = torch.tensor([True, True, True, False, False])
    share = _share(class_sampling_probs(FREQS, 1.0), 500, seed=7)
    g = torch.Generator().manual_seed(3)
    picks = {sample_class(class_sampling_probs(FREQS, 1.0), present, g) for _ in range(200)}
    assert picks == {1, 2} and share[-1] > 0.5
    assert sample_class(class_sampling_probs(FREQS, 1.0), torch.tensor([True, False, False, False, False]), g) is None


def test_curriculum_alpha_and_class_loss_weights():
    assert curriculum_alpha(0.0) == 1.0 and curriculum_alpha(1.0) == 0.0
    assert curriculum_alpha(0.5, gamma=2.0) == pytest.approx(0.25)
    w = class_loss_weights(FREQS, beta=0.5, max_ratio=1000.0)
    assert w.dtype == torch.float32 and w.mean().item() == pytest.approx(1.0, abs=1e-6)
    assert torch.all(w[1:] > w[:-1])  # rarer -> heavier
    torch.testing.assert_close(w / w[0], (FREQS[0] / FREQS).pow(0.5).float(), rtol=1e-5, atol=0)
    capped = class_loss_weights(FREQS, beta=0.5, max_ratio=10.0)
    assert capped.max() / capped.min() == pytest.approx(10.0, rel=1e-5)
    assert capped.mean().item() == pytest.approx(1.0, abs=1e-6)
    torch.testing.assert_close(class_loss_weights(FREQS, beta=0.0), torch.ones(5))


def test_sample_box_is_centred_on_the_class_voxel_and_snapped_to_stride():
    shape, stride = (16, 32, 32), 4
    labels = torch.zeros(shape, dtype=torch.long)
    voxel = (7, 13, 18)
    labels[voxel] = 2
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        z0, z1, y0, y1, x0, x1 = sample_box(labels, 2, shape, g, size_range=(0.25, 0.5), stride=stride)
        assert z0 <= voxel[0] < z1 and y0 <= voxel[1] < y1 and x0 <= voxel[2] < x1
        assert all(v % stride == 0 for v in (y0, y1, x0, x1))
        assert 4 <= z1 - z0 <= 8 and 8 <= y1 - y0 <= 16 and 8 <= x1 - x0 <= 16
        assert abs((z0 + z1) / 2 - voxel[0]) <= 1
        assert abs((y0 + y1) / 2 - voxel[1]) <= stride and abs((x0 + x1) / 2 - voxel[2]) <= stride
    corner = torch.zeros(shape, dtype=torch.long)
    corner[15, 31, 0] = 1
    for _ in range(20):
        z0, z1, y0, y1, x0, x1 = sample_box(corner, 1, shape, g, stride=stride)
        assert z1 == 16 and y1 == 32 and x0 == 0  # shifted inside, never shrunk below the range
        assert z1 - z0 >= 4 and y1 - y0 >= 8
    z0, z1, y0, y1, x0, x1 = sample_box(labels, 3, shape, g, stride=stride)  # absent class
    assert 0 <= z0 < z1 <= 16 and 0 <= y0 < y1 <= 32 and y0 % stride == 0
    with pytest.raises(ValueError, match="multiples"):
        sample_box(torch.zeros(4, 30, 32, dtype=torch.long), 1, (4, 30, 32), g, stride=4)


def _batches(b_l: int = 2, b_u: int = 2, k: int = 4, stride: int = 4):
    d, h, w = 6, 16, 16
    g = torch.Generator().manual_seed(11)
    idx = torch.arange(d * h * w, dtype=torch.float32).view(1, 1, d, h, w)
    gt = torch.zeros(b_l, d, h, w, dtype=torch.long)
    gt[:, 1:4, 2:7, 3:9] = 1
    gt[:, 2:5, 9:14, 9:12] = 2
    gt[0, 3, 12, 2] = 3  # one voxel of a tail organ in the first labeled patch
    pseudo = torch.randint(0, k, (b_u, d, h, w), generator=g)
    confident = torch.rand(b_u, d, h, w, generator=g) > 0.5
    grid = (d, h // stride, w // stride)

    def tokens(sign: float, n: int) -> torch.Tensor:
        # channel 0 = source sign, channel 1 = batch item, channels 2-4 = (z, i, j) of the cell
        z, i, j = torch.meshgrid(*(torch.arange(v, dtype=torch.float32) for v in grid), indexing="ij")
        t = torch.stack([torch.full(grid, sign), torch.zeros(grid), z, i, j])
        t = t.unsqueeze(0).repeat(n, 1, 1, 1, 1)
        t[:, 1] = torch.arange(n, dtype=torch.float32).view(n, 1, 1, 1)
        return t.half()

    labeled = {"image": (1.0 + idx).repeat(b_l, 1, 1, 1, 1), "target": gt, "tokens": tokens(1.0, b_l)}
    unlabeled = {
        "image": -(1.0 + idx).repeat(b_u, 1, 1, 1, 1),
        "target": pseudo,
        "confident": confident,
        "tokens": tokens(-1.0, b_u),
        "weight": torch.full((b_u, d, h, w), 0.5),
    }
    return labeled, unlabeled


def _box_mask(box, shape) -> torch.Tensor:
    z0, z1, y0, y1, x0, x1 = box
    m = torch.zeros(shape, dtype=torch.bool)
    m[z0:z1, y0:y1, x0:x1] = True
    return m


def test_sample_box_depth_has_its_own_range_and_the_default_draws_are_unchanged():
    shape, stride = (16, 32, 32), 4
    labels = torch.zeros(shape, dtype=torch.long)
    labels[7, 13, 18] = 2
    same = [sample_box(labels, 2, shape, torch.Generator().manual_seed(s), stride=stride) for s in range(20)]
    own = [sample_box(labels, 2, shape, torch.Generator().manual_seed(s), stride=stride, z_range=(1.0, 1.0))
           for s in range(20)]
    for (z0, z1, *yx), (w0, w1, *yx_own) in zip(same, own):
        assert (w0, w1) == (0, 16)  # whole columns: the organ never ends at a box face in z
        assert yx == yx_own  # the in-plane box is drawn as without the option
        assert 4 <= z1 - z0 <= 8
    with pytest.raises(ValueError, match="z_range"):
        sample_box(labels, 2, shape, torch.Generator(), z_range=(0.0, 1.0))


def test_bidirectional_cutmix_targets_validity_and_tokens_follow_the_box():
    stride = 4
    labeled, unlabeled = _batches(stride=stride)
    snapshot = {k: v.clone() for k, v in unlabeled.items()}
    probs = class_sampling_probs(torch.tensor([0.9, 0.08, 0.015, 0.005]), 1.0)
    mixed_u, mixed_l = bidirectional_cutmix(
        labeled, unlabeled, probs_t=probs, generator=torch.Generator().manual_seed(0), stride=stride
    )
    shape = tuple(labeled["target"].shape[1:])
    for mixed, ctx, src, ctx_labeled in ((mixed_u, unlabeled, labeled, False), (mixed_l, labeled, unlabeled, True)):
        assert mixed["image"].shape == ctx["image"].shape
        for b, (box, cls) in enumerate(zip(mixed["boxes"], mixed["classes"])):
            inside = _box_mask(box, shape)
            from_lab = mixed["from_labeled"][b]
            assert torch.equal(from_lab, ~inside if ctx_labeled else inside)
            img, tgt, val = mixed["image"][b, 0], mixed["target"][b], mixed["valid"][b]
            # pasted at the same place: images and targets are exact copies, inside and outside
            assert torch.equal(img[inside], src["image"][b, 0][inside])
            assert torch.equal(img[~inside], ctx["image"][b, 0][~inside])
            assert torch.equal(tgt[from_lab], labeled["target"][b][from_lab])  # GT where labeled landed
            assert torch.equal(tgt[~from_lab], unlabeled["target"][b][~from_lab])
            assert torch.all(val[from_lab])
            assert torch.equal(val[~from_lab], unlabeled["confident"][b][~from_lab])
            assert torch.equal(mixed["weight"][b][from_lab], torch.ones(int(from_lab.sum())))
            assert torch.all(mixed["weight"][b][~from_lab] == 0.5)
            # the box is centred on a voxel of the drawn class that the source may be trusted on
            assert cls in (1, 2, 3)
            if ctx_labeled:
                src_ok = (unlabeled["target"][b] == cls) & unlabeled["confident"][b]
            else:
                src_ok = labeled["target"][b] == cls
            assert torch.any(src_ok & inside)
            # tokens: the same box on the token grid, cell by cell, from the right item
            tok = mixed["tokens"][b].float()
            cell_from_lab = from_lab[:, ::stride, ::stride]
            assert torch.equal(
                from_lab, cell_from_lab.repeat_interleave(stride, 1).repeat_interleave(stride, 2)
            )
            assert torch.equal(tok[0] > 0, cell_from_lab)
            assert torch.all(tok[1] == b)
            z, i, j = torch.meshgrid(*(torch.arange(v) for v in cell_from_lab.shape), indexing="ij")
            assert torch.equal(tok[2:], torch.stack([z, i, j]).float())
    for k, v in unlabeled.items():
        assert torch.equal(v, snapshot[k])


def test_bidirectional_cutmix_unequal_batches_and_nothing_confident():
    labeled, unlabeled = _batches(b_l=1, b_u=3)
    unlabeled["confident"] = torch.zeros_like(unlabeled["confident"])
    labeled["tokens"] = unlabeled["tokens"] = None
    probs = class_sampling_probs(torch.tensor([0.9, 0.08, 0.015, 0.005]), 0.0)
    mixed_u, mixed_l = bidirectional_cutmix(
        labeled, unlabeled, probs_t=probs, generator=torch.Generator().manual_seed(1), stride=4
    )
    assert mixed_u["image"].shape[0] == 3 and mixed_l["image"].shape[0] == 1
    assert mixed_u["tokens"] is None and mixed_l["tokens"] is None
    assert mixed_l["classes"] == [-1]  # no confident class to centre on: random box
    inside = _box_mask(mixed_l["boxes"][0], tuple(labeled["target"].shape[1:]))
    assert not torch.any(mixed_l["valid"][0][inside]) and torch.all(mixed_l["valid"][0][~inside])
    labeled["tokens"] = torch.zeros(1, 5, 6, 4, 4)
    with pytest.raises(ValueError, match="both"):
        bidirectional_cutmix(labeled, unlabeled, probs_t=probs, generator=torch.Generator(), stride=4)


def test_pic_curriculum_end_to_end_and_resume():
    cur = PICCurriculum(4, gamma=1.0, beta=0.5, momentum=0.9)
    labels = torch.zeros(2, 4, 8, 8, dtype=torch.long)
    labels[:, :, :4, :4] = 1
    labels[:, 1:3, 5:7, 5:7] = 2
    labels[0, 2, 7, 7] = 3
    cur.update_labeled(labels)
    p0, p1 = cur.probs(0.0), cur.probs(1.0)
    assert p0[3] > p0[2] > p0[1] and p0[0] == 0
    torch.testing.assert_close(p1, torch.tensor([0.0, 1 / 3, 1 / 3, 1 / 3], dtype=torch.float64))
    w = cur.loss_weights()
    assert w.mean().item() == pytest.approx(1.0, abs=1e-6) and w[3] == w.max()
    # Annealed with the curriculum: beta at t = 0, half way at alpha = 0.5, uniform at t = 1.
    torch.testing.assert_close(cur.loss_weights(0.0), w)
    torch.testing.assert_close(cur.loss_weights(0.5), class_loss_weights(cur.freqs, beta=0.25))
    torch.testing.assert_close(cur.loss_weights(1.0), torch.ones(4))
    cur.update_pseudo(torch.full((1, 4, 8, 8), 3), torch.ones(1, 4, 8, 8, dtype=torch.bool))
    assert cur.probs(0.0)[3] < p0[3]  # the tail class became more common -> sampled less
    resumed = PICCurriculum(4)
    resumed.load_state_dict(cur.state_dict())
    torch.testing.assert_close(resumed.probs(0.3), cur.probs(0.3))
    torch.testing.assert_close(resumed.loss_weights(), cur.loss_weights())
