"""Student and teacher intensity preprocessing: ranges, ImageNet normalisation, token alignment."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from dinomix_core.data.preprocess import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    inplane_padding,
    student_intensity,
    teacher_slices,
    token_grid,
)


def test_student_intensity_is_dhc_clip_min_max():
    hu = np.array([[[-1000, -75, 100, 275, 3000]]], dtype=np.int16)
    out = student_intensity(hu)
    assert out.dtype == np.float32 and out.shape == hu.shape
    np.testing.assert_allclose(out[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    custom = student_intensity(hu, clip=(0, 200))
    np.testing.assert_allclose(custom[0, 0], [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_token_grid_and_padding_round_up():
    assert token_grid((32, 32), 8) == (4, 4)
    assert token_grid((30, 27), 8) == (4, 4)
    assert inplane_padding((30, 27), 8) == (2, 5)
    assert inplane_padding((32, 32), 8) == (0, 0)
    with pytest.raises(ValueError):
        token_grid((32, 32), 0)


@pytest.mark.parametrize("shape,stride,expected", [
    ((16, 32, 32), 8, (16, 3, 64, 64)),
    ((3, 30, 27), 8, (3, 3, 64, 64)),
    ((2, 32, 48), 16, (2, 3, 32, 48)),
    ((2, 12, 20), 4, (2, 3, 48, 80)),
])
def test_teacher_slices_shape(shape, stride, expected):
    out = teacher_slices(np.zeros(shape, dtype=np.int16), stride=stride)
    assert out.dtype == torch.float32
    assert tuple(out.shape) == expected


def test_teacher_slices_window_and_imagenet_normalisation():
    # Abdomen window W350/L40 spans [-135, 215] HU: below is 0, above is 1 before normalising.
    hu = np.stack([np.full((16, 16), -500), np.full((16, 16), 215), np.full((16, 16), 40)]).astype(np.float32)
    out = teacher_slices(hu, stride=16)
    mean = torch.tensor(IMAGENET_MEAN).view(3, 1, 1)
    std = torch.tensor(IMAGENET_STD).view(3, 1, 1)
    for index, scaled in enumerate([0.0, 1.0, 0.5]):
        torch.testing.assert_close(out[index], ((scaled - mean) / std).expand(3, 16, 16), atol=1e-5, rtol=0)
    # The three channels are the same grey image.
    raw = out * std + mean
    torch.testing.assert_close(raw[:, 0], raw[:, 1], atol=1e-5, rtol=0)
    torch.testing.assert_close(raw[:, 0], raw[:, 2], atol=1e-5, rtol=0)


@pytest.mark.parametrize("stride", [4, 8])
def test_teacher_pixels_align_with_voxel_cells_and_padding_is_air(stride):
    # 13 x 10 voxels: not a multiple of the stride, so the high end gets air padding.
    rng = np.random.default_rng(1)
    h, w = token_grid((13, 10), stride)
    cell_values = rng.choice([-135.0, 215.0], size=(h, w))  # window floor / ceiling: 0 / 1
    cell_values[-1, :] = cell_values[:, -1] = 215.0  # bright next to the padding, so a shift would show
    volume = np.kron(cell_values, np.ones((stride, stride)))[:13, :10][None]
    out = teacher_slices(volume, stride=stride)
    grey = out[0, 0] * IMAGENET_STD[0] + IMAGENET_MEAN[0]
    assert tuple(grey.shape) == (h * 16, w * 16)
    margin = 16 // stride  # bilinear upsampling blends this many pixels at a cell border
    for i in range(h):
        for j in range(w):
            rows_real = min(stride, 13 - i * stride)
            cols_real = min(stride, 10 - j * stride)
            if rows_real < stride or cols_real < stride:
                continue
            block = grey[i * 16 + margin:(i + 1) * 16 - margin, j * 16 + margin:(j + 1) * 16 - margin]
            expected = 1.0 if cell_values[i, j] > 0 else 0.0
            torch.testing.assert_close(block, torch.full_like(block, expected), atol=1e-5, rtol=0)
    # Voxel rows 13.. (and columns 10..) are padding: air, i.e. 0 after windowing.
    first_pad_row = 13 * 16 // stride
    first_pad_col = 10 * 16 // stride
    assert torch.all(grey[first_pad_row + margin:, :].abs() < 1e-5)
    assert torch.all(grey[:, first_pad_col + margin:].abs() < 1e-5)


def test_teacher_slices_uses_the_given_normalisation():
    hu = np.full((1, 16, 16), 215.0)  # window ceiling: 1 before normalising
    out = teacher_slices(hu, stride=16, mean=(0.5, 0.25, 0.0), std=(0.5, 0.25, 2.0))
    torch.testing.assert_close(out[0, :, 0, 0], torch.tensor([1.0, 3.0, 0.5]))


def test_teacher_slices_rejects_bad_input():
    with pytest.raises(ValueError):
        teacher_slices(np.zeros((8, 8)), stride=8)
    with pytest.raises(ValueError):
        teacher_slices(np.zeros((1, 8, 8)), stride=8, window=(0, 40))
