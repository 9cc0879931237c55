"""The real TotalSegmentator CT (shared test data) reads with the right shape, spacing and labels."""

from __future__ import annotations

import numpy as np
import pytest

from dinomix_core.io import LabelMap, read_labels, read_volume, write_labels


@pytest.fixture(scope="module")
def real_ct(real_ct_dir):
    return read_volume(real_ct_dir / "ct.nii.gz")


def test_real_ct_shape_spacing_and_hu(real_ct, real_ct_dir):
    assert real_ct.shape == (112, 101, 122)  # (z, y, x); the file is 122 x 101 x 112 (x, y, z)
    np.testing.assert_allclose(real_ct.spacing_zyx, (3.0, 3.0, 3.0), atol=1e-4)
    assert real_ct.array.dtype == np.int16  # stored int32, all whole HU inside int16
    assert real_ct.meta["source_pixel_type"] == "32-bit signed integer"
    assert -1030 <= np.median(real_ct.array[:, :5, :5]) <= -990  # air outside the body is about -1000 HU
    assert real_ct.source == real_ct_dir / "ct.nii.gz"


def test_real_btcv13_labels_count_the_organs(real_ct, real_ct_dir):
    btcv = LabelMap.preset("btcv13")
    labels = read_labels(real_ct_dir / "seg_btcv13.nii.gz", reference=real_ct, labelmap=btcv)
    counts = np.bincount(labels.array.ravel(), minlength=btcv.num_classes)
    expected = {"liver": 41_692, "spleen": 9_668, "pancreas": 695, "right_adrenal_gland": 166, "esophagus": 0}
    assert {name: int(counts[btcv.value_of(name)]) for name in expected} == expected
    # Non-contrast soft tissue in HU: liver and spleen sit between water (0) and 80 HU.
    for organ in ("liver", "spleen"):
        assert 20 <= np.median(real_ct.array[labels.array == btcv.value_of(organ)]) <= 80


def test_real_labels_write_back_on_the_image_grid(tmp_path, real_ct, real_ct_dir):
    labels = read_labels(real_ct_dir / "seg_btcv13.nii.gz", reference=real_ct)
    out = write_labels(labels.array, tmp_path / "seg.nii.gz", reference=real_ct)
    back = read_labels(out, reference=real_ct)
    np.testing.assert_array_equal(back.array, labels.array)
    assert out.stat().st_size < (real_ct_dir / "seg_btcv13.nii.gz").stat().st_size * 2
