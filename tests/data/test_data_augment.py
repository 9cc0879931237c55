"""Augmentation keeps image, label and teacher tokens in register; intensity touches the image only."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from dinomix_core.data.augment import augment_batch, augment_pair

S = 4  # token stride of these tests
D, H, W = 6, 32, 48


def _voxel_ids() -> torch.Tensor:
    return torch.arange(D * H * W, dtype=torch.float32).reshape(1, 1, D, H, W)


def _coordinate_tokens() -> torch.Tensor:
    """(1, 3, D, H/S, W/S): channel k holds coordinate k (z, cell row, cell column) of the cell."""
    zz, ii, jj = torch.meshgrid(torch.arange(D), torch.arange(H // S), torch.arange(W // S), indexing="ij")
    return torch.stack([zz, ii, jj]).float().unsqueeze(0)


def test_flips_move_tokens_with_their_voxels():
    tokens = _coordinate_tokens()
    label = torch.randint(0, 4, (1, D, H, W))
    flipped_any = set()
    for seed in range(24):
        batch = {"image": _voxel_ids(), "label": label.clone(), "tokens": tokens.clone()}
        out = augment_batch(batch, torch.Generator().manual_seed(seed), rot_deg=0, scale=(1, 1), intensity=False)
        ids = out["image"][0, 0].round().long()
        z0, rest = ids // (H * W), ids % (H * W)
        y0, x0 = rest // W, rest % W
        flipped_any.add(bool((ids != _voxel_ids()[0, 0].long()).any()))
        # Augment-then-read equals read-then-augment for every voxel.
        zz, yy, xx = torch.meshgrid(torch.arange(D), torch.arange(H), torch.arange(W), indexing="ij")
        after = out["tokens"][0][:, zz, yy // S, xx // S]
        before = tokens[0][:, z0, y0 // S, x0 // S]
        torch.testing.assert_close(after, before)
        torch.testing.assert_close(out["label"][0], label[0][z0, y0, x0])
    assert flipped_any == {True, False}


def test_flip_axes_can_be_restricted():
    for seed in range(8):
        out = augment_batch({"image": _voxel_ids(), "label": None, "tokens": None}, torch.Generator().manual_seed(seed),
                            flips=("z", "y"), rot_deg=0, scale=(1, 1), intensity=False)
        ids = out["image"][0, 0].round().long()
        # x never flips: along x the ids still increase by one.
        assert bool((ids[..., 1:] - ids[..., :-1] == 1).all())
    with pytest.raises(ValueError):
        augment_batch({"image": _voxel_ids()}, torch.Generator(), flips=("w",))


def _linear_field() -> tuple[torch.Tensor, torch.Tensor]:
    """Image = smooth linear ramp; tokens = (1, ramp at the cell centre): the cell mean of the image."""
    zz, yy, xx = torch.meshgrid(torch.arange(D), torch.arange(H), torch.arange(W), indexing="ij")
    ramp = 0.3 + 0.01 * xx + 0.02 * yy + 0.001 * zz
    image = ramp.float().view(1, 1, D, H, W)
    cell_mean = F.avg_pool3d(image, (1, S, S))[:, 0]
    tokens = torch.stack([torch.ones_like(cell_mean), cell_mean], dim=1)
    return image, tokens


def test_rotation_and_scale_keep_tokens_in_register():
    image, tokens = _linear_field()
    ones = torch.ones_like(image)
    checked = 0
    for seed in range(6):
        kwargs = dict(flips=False, rot_deg=10, scale=(0.9, 1.1), intensity=False)
        out = augment_batch({"image": image, "label": None, "tokens": tokens}, torch.Generator().manual_seed(seed), **kwargs)
        inside = augment_batch({"image": ones, "label": None, "tokens": None}, torch.Generator().manual_seed(seed), **kwargs)
        assert not torch.allclose(out["image"], image, atol=1e-4)  # it did move
        # Token cells whose every voxel was sampled from inside the patch (and a margin).
        full = F.max_pool3d(1 - inside["image"], (1, S, S), stride=(1, S, S)) < 1e-6
        full = -F.max_pool3d(-full.float(), (1, 3, 3), stride=1, padding=(0, 1, 1)) > 0.5
        image_cells = F.avg_pool3d(out["image"], (1, S, S))[0, 0]
        ratio = out["tokens"][0, 1] / out["tokens"][0, 0]  # invariant to the re-normalisation
        mask = full[0, 0]
        assert mask.sum() >= 10
        torch.testing.assert_close(ratio[mask], image_cells[mask], atol=2e-4, rtol=0)
        checked += int(mask.sum())
    assert checked > 60


def test_label_stays_integer_nearest_and_in_register_with_image():
    label = torch.zeros((2, D, H, W), dtype=torch.int64)
    label[:, :, 3:11, 4:14] = 2
    label[:, 2:5, 6:9, 15:20] = 5
    image = label.float().unsqueeze(1)
    out = augment_batch({"image": image, "label": label, "tokens": None}, torch.Generator().manual_seed(1),
                        rot_deg=10, scale=(0.9, 1.1), intensity=False)
    moved = out["label"]
    assert moved.dtype == torch.int64
    assert set(moved.unique().tolist()) <= {0, 2, 5}
    assert (moved == 2).any() and (moved == 5).any()
    # Where the trilinear image is exactly a class value, the nearest label is that class.
    img = out["image"][:, 0]
    for value in (2.0, 5.0):
        where = (img - value).abs() < 1e-5
        assert where.any()
        assert bool((moved[where] == int(value)).all())


def test_rotated_tokens_are_unit_or_zero():
    gen = torch.Generator().manual_seed(0)
    tokens = F.normalize(torch.randn((2, 8, D, H // S, W // S), generator=gen), dim=1)
    tokens[:, :, :, -1] = 0  # padding tokens
    out = augment_batch({"image": torch.rand((2, 1, D, H, W), generator=gen), "label": None, "tokens": tokens},
                        torch.Generator().manual_seed(3), intensity=False)
    norms = out["tokens"].norm(dim=1)
    assert bool(((norms - 1).abs() < 1e-4).logical_or(norms == 0).all())
    assert bool((norms == 0).any())


def test_intensity_changes_only_the_image():
    gen = torch.Generator().manual_seed(0)
    image = torch.rand((4, 1, D, H, W), generator=gen)
    label = torch.randint(0, 3, (4, D, H, W), generator=gen)
    tokens = F.normalize(torch.randn((4, 5, D, H // S, W // S), generator=gen), dim=1)
    changed = 0
    for seed in range(5):
        out = augment_batch({"image": image, "label": label, "tokens": tokens}, torch.Generator().manual_seed(seed),
                            flips=False, rot_deg=0, scale=(1, 1), intensity=True)
        torch.testing.assert_close(out["label"], label, rtol=0, atol=0)
        torch.testing.assert_close(out["tokens"], tokens, rtol=0, atol=0)
        changed += int(sum(not torch.allclose(out["image"][i], image[i]) for i in range(4)))
    assert changed > 0


def test_same_generator_seed_gives_the_same_batch_and_inputs_are_untouched():
    gen = torch.Generator().manual_seed(0)
    batch = {"image": torch.rand((2, 1, D, H, W), generator=gen), "label": torch.randint(0, 3, (2, D, H, W), generator=gen),
             "tokens": F.normalize(torch.randn((2, 4, D, H // S, W // S), generator=gen), dim=1), "case_ids": ["a", "b"]}
    copy = {k: (v.clone() if torch.is_tensor(v) else v) for k, v in batch.items()}
    a = augment_batch(batch, torch.Generator().manual_seed(9))
    b = augment_batch(batch, np.random.default_rng(5))
    c = augment_batch(batch, torch.Generator().manual_seed(9))
    for key in ("image", "label", "tokens"):
        torch.testing.assert_close(a[key], c[key], rtol=0, atol=0)
        torch.testing.assert_close(batch[key], copy[key], rtol=0, atol=0)
    assert a["case_ids"] == ["a", "b"]
    assert not torch.equal(a["image"], b["image"])


def test_augment_pair_accepts_numpy_samples():
    rng = np.random.default_rng(0)
    sample = {"image": rng.random((1, D, H, W), dtype=np.float32), "label": rng.integers(0, 3, (D, H, W)),
              "tokens": None, "origin": (0, 8, 4)}
    out = augment_pair(sample, rng)
    assert out["image"].shape == (1, D, H, W) and out["label"].shape == (D, H, W)
    assert out["tokens"] is None and out["origin"] == (0, 8, 4)


def test_shape_mismatches_are_rejected():
    with pytest.raises(ValueError):
        augment_batch({"image": torch.zeros((1, D, H, W))}, torch.Generator())
    with pytest.raises(ValueError):
        augment_batch({"image": torch.zeros((1, 1, D, H, W)), "tokens": torch.zeros((1, 3, D, 3, 5))}, torch.Generator())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_matches_cpu():
    image, tokens = _linear_field()
    label = (image * 10).long()[:, 0] % 3
    batch = {"image": image, "label": label, "tokens": tokens}
    cpu = augment_batch(batch, torch.Generator().manual_seed(4))
    gpu = augment_batch({k: v.cuda() for k, v in batch.items()}, torch.Generator().manual_seed(4))
    for key in ("image", "tokens"):
        torch.testing.assert_close(gpu[key].cpu(), cpu[key], atol=1e-4, rtol=1e-4)
    assert (gpu["label"].cpu() != cpu["label"]).float().mean() < 1e-3
