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


# -- series found by content, not by file name (PACS exports) --------------------------------

_NAMINGS = {
    "sop_uid": lambda k: f"CT.1.2.840.113619.2.55.3.{k + 1}",  # named by SOP Instance UID
    "no_extension": lambda k: f"{k + 1:08d}",
    "im_number": lambda k: f"IM{k + 1:04d}",
}


def _renamed_series(folder, hu, naming, *, strip_preamble=False, series_uid="1.2.826.0.1.3680043.8.498.55"):
    """Write a series, then copy its slices under PACS-style names (optionally without preamble)."""
    files = write_dicom_series(folder.parent / f".{folder.name}-src", hu, series_uid=series_uid)
    folder.mkdir(parents=True)
    out = []
    for k, f in enumerate(files):
        data = f.read_bytes()
        if strip_preamble:
            assert data[128:132] == b"DICM"
            data = data[132:]  # 128-byte preamble + "DICM" marker gone, as some old writers do
        target = folder / _NAMINGS[naming](k)
        target.write_bytes(data)
        out.append(target)
    shutil.rmtree(files[0].parent)
    return out


@pytest.mark.parametrize("naming", sorted(_NAMINGS))
@pytest.mark.parametrize("strip_preamble", [False, True], ids=["preamble", "no_preamble"])
def test_series_is_found_whatever_the_file_names(tmp_path, dicom_hu, naming, strip_preamble):
    from dinomix_core.io.dicom import is_dicom_file

    files = _renamed_series(tmp_path / "ct", dicom_hu, naming, strip_preamble=strip_preamble)
    assert all(is_dicom_file(f) for f in files)
    volume = read_volume(tmp_path / "ct")
    np.testing.assert_array_equal(volume.array, dicom_hu)
    np.testing.assert_allclose(volume.spacing_zyx, (2.5, 0.7, 0.8), atol=1e-5)
    np.testing.assert_allclose(volume.origin_xyz, (10.0, -20.0, 30.0), atol=1e-5)
    assert volume.meta["series_uid"] == "1.2.826.0.1.3680043.8.498.55"


def test_a_single_slice_file_reads_its_whole_series(tmp_path, dicom_hu):
    folder = tmp_path / "mixed"
    write_dicom_series(folder, dicom_hu, series_uid="1.2.3.100")
    small = write_dicom_series(folder, dicom_hu[:3] + 500, series_uid="1.2.3.200")
    volume = read_volume(small[1])  # a slice of the smaller series: that series, not the largest
    assert volume.shape[0] == 3
    np.testing.assert_array_equal(volume.array, dicom_hu[:3] + 500)
    assert volume.meta["series_uid"] == "1.2.3.200"
    assert small[1].name in volume.meta["series_choice"]
    uid_named = _renamed_series(tmp_path / "uid", dicom_hu, "sop_uid")
    assert read_volume(uid_named[0]).shape == (5, 6, 7)


def test_non_dicom_files_are_not_taken_for_dicom(tmp_path):
    from dinomix_core.io.dicom import is_dicom_file

    (tmp_path / "notes").write_text("not a slice")
    (tmp_path / "DICOMDIR").write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)  # an index, not a slice
    (tmp_path / "fake").write_bytes(b"\x08\x00\x05\x00CS\x0a\x00garbage...." + b"\0" * 64)  # tag-like start, broken
    (tmp_path / "ct.nii.gz").write_bytes(b"\x1f\x8b" + b"\0" * 200)
    assert not any(is_dicom_file(tmp_path / n) for n in ("notes", "DICOMDIR", "fake", "ct.nii.gz"))
    with pytest.raises(VolumeReadError, match="unsupported file type"):
        read_volume(tmp_path / "notes")


def test_nested_patient_study_series_folders_are_found(tmp_path, dicom_hu):
    from dinomix_core.io.dicom import find_series_folders
    from dinomix_core.project.scan import scan_paths

    _renamed_series(tmp_path / "PAT1" / "STUDY1" / "SER1", dicom_hu, "im_number")
    _renamed_series(tmp_path / "PAT1" / "STUDY1" / "SER2", dicom_hu[:3], "no_extension", strip_preamble=True,
                    series_uid="1.2.3.300")
    (tmp_path / "PAT1" / "report.txt").write_text("x")
    expected = [tmp_path / "PAT1" / "STUDY1" / "SER1", tmp_path / "PAT1" / "STUDY1" / "SER2"]
    assert find_series_folders(tmp_path) == expected
    found, skipped = scan_paths([tmp_path])  # what `dinomix project add` sees
    assert [c.path for c in found if c.is_dicom_folder] == [p.resolve() for p in expected]
    with pytest.raises(VolumeReadError, match=r"sub-folders \(STUDY1\)"):
        read_volume(tmp_path / "PAT1")
