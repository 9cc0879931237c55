"""DICOM series folders: HU and geometry, choosing among series, incomplete series."""

from __future__ import annotations

import logging
import math
import shutil

import numpy as np
import pytest
from conftest import write_dicom_series

from dinomix_core.io import VolumeReadError, read_volume


def test_series_reads_hu_spacing_and_orientation(tmp_path, dicom_hu):
    angle = math.radians(20.0)
    row, col = (math.cos(angle), math.sin(angle), 0.0), (0.0, 0.0, -1.0)
    write_dicom_series(tmp_path / "ct", dicom_hu, series_uid="1.2.826.0.1.3680043.8.498.7", row=row, col=col)
    volume = read_volume(tmp_path / "ct")
    assert volume.shape == (5, 6, 7)
    np.testing.assert_array_equal(volume.array, dicom_hu)  # stored HU+1024, read back as HU
    assert volume.array.dtype == np.int16
    np.testing.assert_allclose(volume.spacing_zyx, (2.5, 0.7, 0.8), atol=1e-5)
    np.testing.assert_allclose(volume.origin_xyz, (10.0, -20.0, 30.0), atol=1e-5)
    normal = np.cross(row, col)
    np.testing.assert_allclose(np.reshape(volume.direction, (3, 3)), np.column_stack([row, col, normal]), atol=1e-5)
    assert volume.modality == "CT"
    assert volume.meta["series_uid"] == "1.2.826.0.1.3680043.8.498.7"


def test_non_unit_rescale_slope_gives_float_hu(tmp_path):
    hu = np.resize(np.array([-1000.0, -0.5, 40.5, 1000.0]), (4, 5, 6)).astype(np.float32)
    write_dicom_series(tmp_path / "ct", hu, series_uid="1.2.3.9", intercept=-1024.0, slope=0.5)
    volume = read_volume(tmp_path / "ct")
    assert volume.array.dtype == np.float32
    np.testing.assert_array_equal(volume.array, hu)


def test_folder_with_two_series_reads_the_largest_and_says_so(tmp_path, dicom_hu, caplog):
    folder = tmp_path / "mixed"
    write_dicom_series(folder, dicom_hu, series_uid="1.2.3.100")
    write_dicom_series(folder, dicom_hu[:3] + 500, series_uid="1.2.3.200")
    with caplog.at_level(logging.INFO, logger="dinomix_core.io.dicom"):
        volume = read_volume(folder)
    assert volume.shape[0] == 5
    assert volume.meta["series_uid"] == "1.2.3.100"
    assert volume.meta["num_series"] == 2
    assert "largest of 2 series" in volume.meta["series_choice"]
    assert "1.2.3.200 (3 files)" in volume.meta["series_choice"]
    assert "1.2.3.100" in caplog.text

    chosen = read_volume(folder, series_uid="1.2.3.200")
    assert chosen.shape[0] == 3
    np.testing.assert_array_equal(chosen.array, dicom_hu[:3] + 500)
    assert chosen.meta["series_uid"] == "1.2.3.200"
    assert "chosen by series_uid" in chosen.meta["series_choice"]


def test_unknown_series_uid_lists_the_available_ones(tmp_path, dicom_hu):
    write_dicom_series(tmp_path / "ct", dicom_hu, series_uid="1.2.3.100")
    with pytest.raises(VolumeReadError, match=r"no DICOM series with uid '9\.9'.*1\.2\.3\.100 \(5 files\)") as info:
        read_volume(tmp_path / "ct", series_uid="9.9")
    assert info.value.path == str(tmp_path / "ct")


def test_missing_slice_is_refused(tmp_path, dicom_hu):
    write_dicom_series(tmp_path / "ct", dicom_hu, series_uid="1.2.3.4", skip=(2,))
    with pytest.raises(VolumeReadError, match=r"unevenly spaced: a 5\.00 mm gap between slices 1 and 2 .*2\.50 mm.*1 slice") as info:
        read_volume(tmp_path / "ct")
    assert info.value.path == str(tmp_path / "ct")
    assert "Re-export the complete series" in info.value.fix


def test_duplicate_slice_position_is_refused(tmp_path, dicom_hu):
    files = write_dicom_series(tmp_path / "ct", dicom_hu, series_uid="1.2.3.4")
    # Same series, second acquisition of slice 0 under another instance uid.
    write_dicom_series(tmp_path / "ct2", dicom_hu[:1] + 1, series_uid="1.2.3.4")
    shutil.copy(next((tmp_path / "ct2").iterdir()), tmp_path / "ct" / "dup.dcm")
    assert len(files) == 5
    with pytest.raises(VolumeReadError, match="two slices at the same position"):
        read_volume(tmp_path / "ct")


def test_empty_folder_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(VolumeReadError, match="holds no DICOM series") as info:
        read_volume(tmp_path / "empty")
    assert info.value.path == str(tmp_path / "empty")


def test_parent_folder_hint_names_subfolders(tmp_path, dicom_hu):
    write_dicom_series(tmp_path / "patient" / "series1", dicom_hu, series_uid="1.2.3.4")
    with pytest.raises(VolumeReadError, match=r"sub-folders \(series1\)"):
        read_volume(tmp_path / "patient")


def test_single_slice_series_is_2d(tmp_path, dicom_hu):
    write_dicom_series(tmp_path / "one", dicom_hu[:1], series_uid="1.2.3.4")
    with pytest.raises(VolumeReadError, match="2D image"):
        read_volume(tmp_path / "one")
