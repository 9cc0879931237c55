"""Windowing, normalisation and resampling of (z, y, x) volumes in HU / mm."""

from __future__ import annotations

import numpy as np
import pytest

from dinomix_core.io import WINDOW_PRESETS, Volume, clip_normalize, resample_like, resample_to_spacing, window, zscore


def test_window_presets_are_slicer_values():
    assert WINDOW_PRESETS == {"abdomen": (350.0, 40.0), "bone": (1000.0, 400.0), "lung": (1400.0, -500.0),
                              "soft_tissue": (400.0, 40.0), "brain": (100.0, 50.0)}


@pytest.mark.parametrize(("preset", "low", "high"), [("abdomen", -135, 215), ("Bone", -100, 900), ("lung", -1200, 200),
                                                     ("soft tissue", -160, 240), ("brain", 0, 100), ((200, 0), -100, 100)])
def test_window_maps_low_to_0_and_high_to_1(preset, low, high):
    hu = np.array([low - 50, low, (low + high) / 2, high, high + 50], dtype=np.int16)
    out = window(hu, preset)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)


def test_unknown_window_preset():
    with pytest.raises(KeyError, match="liver_special"):
        window(np.zeros(3), "liver_special")


def test_clip_normalize_uses_the_dhc_range_and_leaves_input_alone():
    hu = np.array([-1000.0, -75.0, 100.0, 275.0, 3000.0], dtype=np.float32)
    before = hu.copy()
    out = clip_normalize(hu)
    np.testing.assert_allclose(out, [0.0, 0.0, 0.5, 1.0, 1.0], atol=1e-6)
    np.testing.assert_array_equal(hu, before)
    assert out.dtype == np.float32


def test_zscore_with_and_without_mask():
    rng = np.random.default_rng(1)
    x = rng.normal(40.0, 10.0, size=(4, 8, 8)).astype(np.float32)
    z = zscore(x)
    assert abs(float(z.mean())) < 1e-4 and abs(float(z.std()) - 1.0) < 1e-4
    mask = np.zeros(x.shape, bool)
    mask[:2] = True
    zm = zscore(x, mask)
    assert abs(float(zm[mask].mean())) < 1e-4
    with pytest.raises(ValueError, match="selects no voxels"):
        zscore(x, np.zeros(x.shape, bool))


def test_labels_resample_to_coarse_spacing_and_back_exactly(label_volume):
    # Upsample by an exact factor then come back: nearest neighbour must restore every voxel.
    fine = resample_to_spacing(label_volume, tuple(s / 2 for s in label_volume.spacing_zyx), is_label=True)
    assert fine.shape == tuple(2 * n for n in label_volume.shape)
    assert fine.array.dtype == np.uint8
    assert set(np.unique(fine.array)) == {0, 1, 2, 6}
    np.testing.assert_allclose(fine.direction, label_volume.direction)
    np.testing.assert_allclose(fine.origin_xyz, label_volume.origin_xyz)
    back = resample_like(fine, label_volume, is_label=True)
    assert back.same_grid(label_volume)
    np.testing.assert_array_equal(back.array, label_volume.array)


def test_image_resampling_is_linear_float32_and_keeps_extent():
    z, y, x = np.meshgrid(np.arange(8), np.arange(10), np.arange(12), indexing="ij")
    ramp = Volume((10 * x + 3 * z).astype(np.int16), (2.0, 1.0, 1.0), (5.0, -3.0, 7.0))
    iso = resample_to_spacing(ramp, (1.0, 1.0, 1.0), is_label=False)
    assert iso.shape == (16, 10, 12) and iso.array.dtype == np.float32
    np.testing.assert_allclose(iso.spacing_zyx, (1.0, 1.0, 1.0))
    # Linear interpolation of a linear ramp is exact inside the original field of view.
    np.testing.assert_allclose(iso.array[:15], (10 * x[:1] + 1.5 * np.arange(15)[:, None, None]).astype(np.float32), atol=1e-4)
    back = resample_like(iso, ramp, is_label=False)
    assert back.same_grid(ramp)
    np.testing.assert_allclose(back.array, ramp.array, atol=1e-3)


def test_resample_rejects_bad_spacing(label_volume):
    with pytest.raises(ValueError, match="positive"):
        resample_to_spacing(label_volume, (1.0, 0.0, 1.0), is_label=True)
