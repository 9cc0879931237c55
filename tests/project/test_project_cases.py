"""Adding images: case ids, scanning, duplicates, copies, DICOM folders, changed images."""

from __future__ import annotations

import os
import shutil
import warnings

import numpy as np
import pytest
from _project_fakes import organ_labels, write_dicom_folder, write_image, write_labels_file

from dinomix_core.io import GeometryMismatchError, content_hash
from dinomix_core.project import CaseNotFoundError, ImageChangedError
from dinomix_core.project.scan import case_id_from_path, make_unique, scan_paths


@pytest.mark.parametrize("name, expected", [
    ("liver_007_0000.nii.gz", "liver_007"),
    ("liver_007.nii.gz", "liver_007"),
    ("BTCV img0001_0000.nii", "BTCV_img0001"),
    ("scan.mha", "scans"),  # generic stem: named after the folder
    ("ct.nii.gz", "scans"),
    ("case_12_0001.nrrd", "case_12"),
])
def test_case_id_follows_nnunet_naming(tmp_path, name, expected):
    assert case_id_from_path(tmp_path / "scans" / name) == expected


def test_case_ids_are_made_unique():
    assert make_unique("liver_007", set()) == "liver_007"
    assert make_unique("liver_007", {"liver_007", "liver_007_2"}) == "liver_007_3"


def test_scanning_a_folder_skips_label_maps_with_a_reason(tmp_path):
    write_image(tmp_path / "d" / "imagesTr" / "a_0000.nii.gz", 1)
    write_labels_file(tmp_path / "d" / "labelsTr" / "a.nii.gz", organ_labels())
    write_labels_file(tmp_path / "d" / "seg_btcv13.nii.gz", organ_labels())
    (tmp_path / "d" / "notes.txt").write_text("x")
    found, skipped = scan_paths([tmp_path / "d"])
    assert [c.path.name for c in found] == ["a_0000.nii.gz"]
    reasons = {p.name: r for p, r in skipped}
    assert set(reasons) == {"a.nii.gz", "seg_btcv13.nii.gz"}
    assert all("label map" in r for r in reasons.values())


def test_add_reports_duplicates_by_content_not_by_name(project, tmp_path, images_dir):
    shutil.copyfile(images_dir / "liver_000_0000.nii.gz", tmp_path / "renamed_0000.nii.gz")
    write_image(tmp_path / "new_case_0000.nii.gz", seed=42)
    report = project.add_images([tmp_path / "renamed_0000.nii.gz", tmp_path / "new_case_0000.nii.gz",
                                 tmp_path / "missing.nii.gz"])
    assert report.added == [("new_case", tmp_path / "new_case_0000.nii.gz")]
    reasons = {p.name: r for p, r in report.skipped}
    assert "same content as case 'liver_000'" in reasons["renamed_0000.nii.gz"]
    assert reasons["missing.nii.gz"] == "does not exist"
    assert [c.id for c in project.cases()] == ["liver_000", "liver_001", "liver_002", "new_case"]


def test_add_image_takes_an_explicit_case_id_and_reports_duplicates(project, tmp_path, images_dir):
    src = write_image(tmp_path / "x" / "whatever.nii.gz", seed=31)
    outcome = project.add_image(src, case_id="patient 7/ct")
    assert outcome == ("patient_7_ct", True, "")
    again = project.add_image(images_dir / "liver_002_0000.nii.gz", case_id="other")
    assert again.case_id == "liver_002" and not again.added and "duplicate" in again.reason


def test_case_records_geometry_and_hash(project, images_dir):
    case = project.case("liver_001")
    assert case.shape_zyx == (8, 16, 16)
    assert case.spacing_zyx == (3.0, 1.5, 1.5)
    assert case.origin_xyz == (-10.0, 5.0, 20.0)
    assert case.stored == "reference"
    assert case.image_path == images_dir / "liver_001_0000.nii.gz"
    assert case.content_hash == content_hash(case.image_path)
    assert project.load_image("liver_001").shape == (8, 16, 16)


def test_same_name_in_two_folders_gets_a_unique_id(project, tmp_path):
    write_image(tmp_path / "other" / "liver_000_0000.nii.gz", seed=77)
    report = project.add_images([tmp_path / "other"])
    assert [c for c, _ in report.added] == ["liver_000_2"]


def test_copy_mode_copies_the_image_into_the_project(project, tmp_path):
    src = write_image(tmp_path / "ext" / "pancreas_1_0000.nii.gz", seed=9)
    report = project.add_images([src], copy=True)
    case = project.case(report.added[0][0])
    assert case.stored == "copy"
    assert case.image_path.parent == project.root / "images"
    assert case.image_path.read_bytes() == src.read_bytes()
    src.unlink()
    assert project.image_state(case) == "ok"  # the copy does not depend on the original


def test_dicom_folder_becomes_one_case_named_after_the_folder(project, tmp_path):
    folder = write_dicom_folder(tmp_path / "dicom" / "patient_17", seed=3)
    report = project.add_images([tmp_path / "dicom"])
    assert [c for c, _ in report.added] == ["patient_17"]
    case = project.case("patient_17")
    assert case.shape_zyx == (4, 16, 16)
    assert case.image_path == folder
    again = project.add_images([folder])
    assert again.added == [] and "duplicate" in again.skipped[0][1]
    copied = project.add_images([write_dicom_folder(tmp_path / "dicom2" / "p18", seed=4)], copy=True)
    case = project.case(copied.added[0][0])
    assert case.image_path.is_dir() and case.stored == "copy"
    assert project.image_state(case, verify=True) == "ok"


def test_changed_image_is_reported_and_refused_for_training(project, images_dir):
    path = images_dir / "liver_001_0000.nii.gz"
    write_image(path, seed=1234)  # same name, different voxels
    status = project.status()
    by_id = {c["id"]: c for c in status["cases"]}
    assert by_id["liver_001"]["image"] == "changed"
    assert status["counts"]["image_problems"] == 1
    with pytest.raises(ImageChangedError, match="liver_001.*relink"):
        project.training_split()
    with pytest.raises(ImageChangedError):
        project.load_image("liver_001")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        labeled, unlabeled = project.training_split(strict=False)
    assert [u.case_id for u in unlabeled] == ["liver_000", "liver_002"]
    assert any("liver_001" in str(w.message) for w in caught)


def test_touched_but_unchanged_image_stays_ok(project, images_dir):
    path = images_dir / "liver_002_0000.nii.gz"
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 5_000_000_000))
    assert project.image_state("liver_002") == "ok"


def test_missing_image_is_reported_and_relink_accepts_the_new_place(project, images_dir, tmp_path):
    moved = tmp_path / "moved.nii.gz"
    os.replace(images_dir / "liver_000_0000.nii.gz", moved)
    assert project.image_state("liver_000") == "missing"
    project.relink_case("liver_000", moved)
    assert project.image_state("liver_000") == "ok"
    assert project.case("liver_000").image_path == moved


def test_relink_refuses_an_image_on_another_grid_once_labels_exist(project, tmp_path):
    project.save_labels("liver_000", organ_labels())
    other = write_image(tmp_path / "other.nii.gz", seed=5, shape=(8, 16, 17))
    with pytest.raises(GeometryMismatchError, match="different voxel grid"):
        project.relink_case("liver_000", other)


def test_remove_is_soft_and_undoable(project):
    rev = project.save_labels("liver_000", organ_labels())
    project.remove_case("liver_000")
    assert "liver_000" not in [c.id for c in project.cases()]
    with pytest.raises(CaseNotFoundError, match="--undo"):
        project.case("liver_000")
    assert rev.path.exists()
    project.restore_case("liver_000")
    assert project.label_revision("liver_000").id == rev.id
    assert np.array_equal(project.load_labels(rev.id).array, organ_labels())


def test_unknown_case_lists_known_ids(project):
    with pytest.raises(CaseNotFoundError, match="liver_000"):
        project.case("kidney_9")
