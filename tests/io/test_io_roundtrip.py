"""Every format keeps voxels and geometry bit for bit; labels are written small and exact."""

from __future__ import annotations

import gzip

import numpy as np
import pytest
import SimpleITK as sitk

from dinomix_core.io import LabelMap, Volume, read_labels, read_volume, write_image, write_labels

FORMATS = [".nii.gz", ".nii", ".nrrd", ".mha", ".mhd"]


def assert_same_geometry(a: Volume, b: Volume) -> None:
    assert a.shape == b.shape
    np.testing.assert_allclose(a.spacing_zyx, b.spacing_zyx, atol=1e-6)
    np.testing.assert_allclose(a.origin_xyz, b.origin_xyz, atol=1e-5)
    np.testing.assert_allclose(a.direction, b.direction, atol=1e-6)


@pytest.mark.parametrize("suffix", FORMATS)
def test_image_round_trip_keeps_voxels_and_oblique_geometry(tmp_path, ct_volume, suffix):
    path = write_image(ct_volume, tmp_path / f"ct{suffix}")
    back = read_volume(path)
    assert back.array.dtype == np.int16
    np.testing.assert_array_equal(back.array, ct_volume.array)
    assert_same_geometry(back, ct_volume)
    assert back.source == path
    assert back.meta["format"] == suffix


@pytest.mark.parametrize("suffix", FORMATS + [".seg.nrrd"])
def test_label_round_trip_gets_reference_geometry(tmp_path, ct_volume, label_volume, suffix):
    path = write_labels(label_volume.array, tmp_path / f"seg{suffix}", reference=ct_volume)
    back = read_labels(path, reference=ct_volume, labelmap=LabelMap.preset("btcv13"))
    assert back.array.dtype == np.uint8
    assert back.modality == "SEG"
    np.testing.assert_array_equal(back.array, label_volume.array)
    assert_same_geometry(back, ct_volume)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt8


def test_mhd_writes_header_and_compressed_data_under_final_names(tmp_path, ct_volume):
    write_image(ct_volume, tmp_path / "ct.mhd")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ct.mhd", "ct.zraw"]
    assert "ElementDataFile = ct.zraw" in (tmp_path / "ct.mhd").read_text()


def test_writes_are_compressed(tmp_path, ct_volume, label_volume):
    write_labels(label_volume, tmp_path / "seg.nii.gz", reference=ct_volume)
    write_labels(label_volume, tmp_path / "seg.nrrd", reference=ct_volume)
    write_labels(label_volume, tmp_path / "seg.mha", reference=ct_volume)
    with gzip.open(tmp_path / "seg.nii.gz") as fh:
        assert fh.read(4) == (348).to_bytes(4, "little")
    assert b"encoding: gzip" in (tmp_path / "seg.nrrd").read_bytes()[:2000]
    assert b"CompressedData = True" in (tmp_path / "seg.mha").read_bytes()[:2000]


def test_labels_above_255_are_uint16(tmp_path, ct_volume):
    labels = np.zeros(ct_volume.shape, dtype=np.int32)
    labels[0, 0, :3] = [1, 255, 300]
    path = write_labels(labels, tmp_path / "many.nii.gz", reference=ct_volume)
    assert sitk.ReadImage(str(path)).GetPixelID() == sitk.sitkUInt16
    back = read_labels(path)
    assert back.array.dtype == np.uint16
    assert back.array[0, 0, :3].tolist() == [1, 255, 300]


def test_label_volume_takes_reference_geometry_bit_for_bit(tmp_path, ct_volume, label_volume):
    nudged = label_volume.with_array(label_volume.array, origin_xyz=tuple(o + 1e-6 for o in ct_volume.origin_xyz))
    path = write_labels(nudged, tmp_path / "seg.nii.gz", reference=ct_volume)
    header = sitk.ReadImage(str(path))
    expected = ct_volume.to_sitk()
    assert header.GetOrigin() == pytest.approx(expected.GetOrigin(), abs=1e-6)
    assert header.GetDirection() == pytest.approx(expected.GetDirection(), abs=1e-7)


@pytest.mark.parametrize(
    ("values", "dtype"),
    [
        (np.array([0, 1, -3, 7], dtype=np.int32), np.int16),  # int32 file, values fit -> int16
        (np.array([0.0, 1.0, -3.0, 7.0], dtype=np.float32), np.int16),  # whole-number floats -> int16
        (np.array([0.5, 1.25, -3.0, 7.0], dtype=np.float32), np.float32),  # fractional stays float32
        (np.array([0, 1, 40000, 7], dtype=np.uint16), np.float32),  # does not fit int16 -> float32
    ],
)
def test_image_dtype_policy(tmp_path, ct_volume, values, dtype):
    array = np.resize(values, ct_volume.shape).astype(values.dtype)
    path = write_image(ct_volume.with_array(array), tmp_path / "img.nii.gz")
    back = read_volume(path)
    assert back.array.dtype == dtype
    np.testing.assert_array_equal(back.array, array.astype(dtype))
    assert back.array.flags.writeable


def test_nifti_scale_slope_is_applied_as_hu(tmp_path, ct_volume):
    """A NIfTI storing (HU + 1024) / 2 with scl_slope=2, scl_inter=-1024 reads back as HU."""
    stored = ((ct_volume.array.astype(np.int32) + 1024) // 2 * 2 - 1024).astype(np.int16)
    raw = ct_volume.with_array(((stored.astype(np.int32) + 1024) // 2).astype(np.int16)).to_sitk()
    path = tmp_path / "scaled.nii"
    sitk.WriteImage(raw, str(path))
    data = bytearray(path.read_bytes())
    data[112:116] = np.float32(2.0).tobytes()  # scl_slope
    data[116:120] = np.float32(-1024.0).tobytes()  # scl_inter
    path.write_bytes(bytes(data))
    back = read_volume(path)
    np.testing.assert_array_equal(back.array, stored)
    assert back.array.dtype == np.int16


def test_seg_nrrd_carries_class_names_and_colours(tmp_path, ct_volume, label_volume):
    labelmap = LabelMap.preset("btcv13")
    path = write_labels(label_volume, tmp_path / "case.seg.nrrd", reference=ct_volume, labelmap=labelmap)
    header = sitk.ReadImage(str(path))
    assert header.GetMetaData("Segment5_Name") == "liver"
    assert header.GetMetaData("Segment5_LabelValue") == "6"
    back = read_labels(path)
    assert back.meta["labelmap"].names == labelmap.names
    assert back.meta["labelmap"].colors == labelmap.colors
