"""read_volume's streaming NIfTI decoder gives exactly what SimpleITK would, with less memory."""

from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

import dinomix_core.io.nifti as nifti
from dinomix_core.io import VolumeReadError, read_labels, read_volume


def itk_reference(path):
    image = sitk.ReadImage(str(path))
    return sitk.GetArrayFromImage(image), image


def set_scaling(path, slope, inter):
    data = bytearray(path.read_bytes())
    data[112:120] = np.array([slope, inter], dtype="<f4").tobytes()
    path.write_bytes(bytes(data))


@pytest.mark.parametrize(
    ("dtype", "values", "expected"),
    [
        (np.uint8, [0, 7, 255], np.int16),
        (np.int8, [-128, 0, 127], np.int16),
        (np.int16, [-1024, 0, 3071], np.int16),
        (np.uint16, [0, 1000, 32767], np.int16),
        (np.uint16, [0, 1000, 40000], np.float32),
        (np.int32, [-1024, 0, 3071], np.int16),
        (np.int32, [-1024, 0, 70000], np.float32),
        (np.float32, [-1024.0, 0.0, 40.0], np.int16),
        (np.float32, [-1024.0, 0.25, 40.0], np.float32),
        (np.float64, [-1000.5, 0.0, 2.0], np.float32),
    ],
)
@pytest.mark.parametrize("suffix", [".nii.gz", ".nii"])
def test_streamed_voxels_match_simpleitk(tmp_path, ct_volume, dtype, values, expected, suffix):
    array = np.resize(np.asarray(values, dtype=dtype), ct_volume.shape)
    path = tmp_path / f"img{suffix}"
    sitk.WriteImage(ct_volume.with_array(array).to_sitk(), str(path))
    volume = read_volume(path)
    reference, image = itk_reference(path)
    assert volume.array.dtype == expected
    np.testing.assert_array_equal(volume.array, reference.astype(expected))
    assert volume.spacing_zyx == tuple(reversed(image.GetSpacing()))
    assert volume.origin_xyz == image.GetOrigin()
    assert volume.direction == image.GetDirection()
    assert volume.meta["source_pixel_type"] == image.GetPixelIDTypeAsString()


@pytest.mark.parametrize(("slope", "inter", "expected"), [(2.0, -1024.0, np.int16), (0.5, 10.0, np.float32)])
def test_scaled_nifti_matches_simpleitk(tmp_path, ct_volume, slope, inter, expected):
    stored = np.resize(np.array([0, 1, 513, 2047], dtype=np.int16), ct_volume.shape)
    path = tmp_path / "scaled.nii"
    sitk.WriteImage(ct_volume.with_array(stored).to_sitk(), str(path))
    set_scaling(path, slope, inter)
    volume = read_volume(path)
    assert volume.array.dtype == expected
    np.testing.assert_allclose(volume.array, stored * slope + inter, rtol=0, atol=1e-5)
    np.testing.assert_allclose(volume.array, itk_reference(path)[0], rtol=0, atol=1e-4)


def test_switch_to_float32_after_the_first_chunks(tmp_path):
    """A value outside int16 in the last slab, several 4 MiB chunks in, still lands exactly."""
    array = np.zeros((40, 128, 256), dtype=np.int32)  # 5 MiB of int32: two chunks
    array[5] = -1000
    array[-1, -1, -3:] = [70000, -70000, 12]
    path = tmp_path / "wide.nii.gz"
    sitk.WriteImage(sitk.GetImageFromArray(array), str(path), True)
    volume = read_volume(path)
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, array.astype(np.float32))


def test_odd_chunk_boundaries_are_stitched(tmp_path, ct_volume, monkeypatch):
    rng = np.random.default_rng(3)
    array = rng.normal(0, 100, size=ct_volume.shape)  # float64: 8-byte items across 1001-byte chunks
    path = tmp_path / "f64.nii.gz"
    sitk.WriteImage(ct_volume.with_array(array).to_sitk(), str(path))
    monkeypatch.setattr(nifti, "CHUNK", 1001)
    np.testing.assert_array_equal(read_volume(path).array, array.astype(np.float32))


def test_nan_in_a_nifti_label_file_is_refused(tmp_path, label_volume):
    labels = label_volume.array.astype(np.float32)
    labels[0, 0, 0] = np.nan
    path = tmp_path / "seg.nii.gz"
    sitk.WriteImage(label_volume.with_array(labels).to_sitk(), str(path))
    with pytest.raises(VolumeReadError, match="1 NaN/inf voxel"):
        read_labels(path)
