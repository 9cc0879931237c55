"""Export to nnU-Net / 3D Slicer and import from nnU-Net."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from _project_fakes import organ_labels, write_image, write_labels_file

from dinomix_core.io import LabelMap, read_labels
from dinomix_core.project import ClassMapError, Project, ProjectError
from dinomix_core.project.export import export_nnunet, export_slicer
from dinomix_core.project.nnunet_import import import_nnunet


@pytest.fixture
def labeled(project):
    project.save_labels("liver_000", organ_labels(1))
    project.save_labels("liver_001", organ_labels(2))
    project.save_labels("liver_001", organ_labels(3), final=False)  # a later draft is not exported
    return project


def test_nnunet_export_writes_the_final_human_labels(labeled, tmp_path):
    report = export_nnunet(labeled, tmp_path / "Dataset501_Liver")
    out = report.out
    assert report.cases == ["liver_000", "liver_001"]
    assert sorted(p.name for p in (out / "imagesTr").iterdir()) == ["liver_000_0000.nii.gz", "liver_001_0000.nii.gz"]
    assert sorted(p.name for p in (out / "labelsTr").iterdir()) == ["liver_000.nii.gz", "liver_001.nii.gz"]
    data = json.loads((out / "dataset.json").read_text())
    assert data["labels"]["background"] == 0 and data["labels"]["liver"] == 6 and data["labels"]["pancreas"] == 11
    assert (data["numTraining"], data["file_ending"], data["channel_names"]) == (2, ".nii.gz", {"0": "CT"})
    assert np.array_equal(read_labels(out / "labelsTr" / "liver_001.nii.gz").array, organ_labels(2))
    assert (out / "imagesTr" / "liver_000_0000.nii.gz").read_bytes() == labeled.case("liver_000").image_path.read_bytes()
    with pytest.raises(ProjectError, match="--overwrite"):
        export_nnunet(labeled, out)
    with pytest.raises(ProjectError, match="inside the project"):
        export_nnunet(labeled, labeled.root / "export")


def test_nnunet_round_trip_through_import(labeled, tmp_path):
    out = export_nnunet(labeled, tmp_path / "ds").out
    write_image(out / "imagesTr" / "liver_099_0000.nii.gz", seed=99)  # an image without a label
    write_labels_file(out / "labelsTr" / "orphan.nii.gz", organ_labels())
    with Project.init(tmp_path / "p2") as fresh:
        report = import_nnunet(fresh, out)
        assert report.added == ["liver_000", "liver_001", "liver_099"]
        assert [c for c, _ in report.labeled] == ["liver_000", "liver_001"]
        assert any("orphan" in str(p) and "no image" in r for p, r in report.skipped)
        assert fresh.label_map.names == LabelMap.preset("btcv13").names
        labeled_split, unlabeled = fresh.training_split()
        assert [c.case_id for c in labeled_split] == ["liver_000", "liver_001"]
        assert [c.case_id for c in unlabeled] == ["liver_099"]
        rev = fresh.label_revision("liver_001")
        assert rev.final and rev.kind == "human" and "imported from" in rev.note
        assert np.array_equal(fresh.load_labels(rev.id).array, organ_labels(2))
        again = import_nnunet(fresh, out)  # idempotent
        assert again.added == [] and again.labeled == []
        assert len(fresh.revisions("liver_000")) == 1


def test_import_refuses_a_conflicting_class_map(labeled, tmp_path):
    ds = tmp_path / "other"
    write_image(ds / "imagesTr" / "x_0000.nii.gz", seed=5)
    (ds / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}, "channel_names": {"0": "CT"},
                                                 "file_ending": ".nii.gz", "numTraining": 1}))
    with pytest.raises(ClassMapError, match="differ"):
        import_nnunet(labeled, ds)


def test_import_skips_extra_channels_with_a_reason(tmp_path):
    ds = tmp_path / "mc"
    write_image(ds / "imagesTr" / "a_0000.nii.gz", seed=1)
    write_image(ds / "imagesTr" / "a_0001.nii.gz", seed=2)
    (ds / "dataset.json").write_text(json.dumps({"labels": {"background": 0, "liver": 1}, "file_ending": ".nii.gz"}))
    with Project.init(tmp_path / "p") as proj:
        report = import_nnunet(proj, ds)
    assert report.added == ["a"]
    assert [(p.name, "channel" in r) for p, r in report.skipped] == [("a_0001.nii.gz", True)]


def test_slicer_export_writes_segment_header_fields(labeled, tmp_path):
    report = export_slicer(labeled, tmp_path / "slicer", images=True)
    seg = report.out / "liver_000.seg.nrrd"
    assert seg.exists() and (report.out / "liver_000.nrrd").exists()
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(seg))
    reader.ReadImageInformation()
    header = {k: reader.GetMetaData(k) for k in reader.GetMetaDataKeys()}
    assert header["Segmentation_MasterRepresentation"] == "Binary labelmap"
    assert "Segmentation_ReferenceImageExtentOffset" in header
    segments = {}
    i = 0
    while f"Segment{i}_ID" in header:
        segments[header[f"Segment{i}_Name"]] = {k: header[f"Segment{i}_{k}"] for k in ("ID", "Color", "LabelValue",
                                                                                         "Layer", "Extent")}
        i += 1
    btcv = LabelMap.preset("btcv13")
    liver = segments["liver"]
    assert liver["LabelValue"] == "6" and liver["Layer"] == "0"
    rgb = [float(c) for c in liver["Color"].split()]
    assert all(0.0 <= c <= 1.0 for c in rgb)
    assert [round(c * 255) for c in rgb] == list(btcv.colors[6])
    assert len(liver["Extent"].split()) == 6
    image = sitk.ReadImage(str(seg))
    assert np.array_equal(sitk.GetArrayFromImage(image), organ_labels(1))
    assert image.GetSpacing() == pytest.approx((1.5, 1.5, 3.0))


def test_export_refuses_when_nothing_is_labeled(project, tmp_path):
    with pytest.raises(ProjectError, match="no labeled case"):
        export_nnunet(project, tmp_path / "out")
