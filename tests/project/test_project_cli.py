"""`dinomix project ...` end to end: on tiny synthetic scans and on the shared real CT."""

from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk
from _project_fakes import organ_labels, write_image, write_labels_file

from dinomix_core.cli.main import main
from dinomix_core.io import LabelMap, read_labels
from dinomix_core.project import Project, uncertainty_score


def run(capsys, *argv) -> tuple[int, str, str]:
    code = main(["project", *map(str, argv)])
    out, err = capsys.readouterr()
    return code, out, err


def run_json(capsys, *argv):
    code, out, err = run(capsys, *argv)
    assert code == 0, err
    return json.loads(out)


def test_cli_end_to_end_on_synthetic_scans(tmp_path, capsys):
    scans = tmp_path / "scans"
    for i in range(3):
        write_image(scans / f"liver_{i:03d}_0000.nii.gz", seed=i)
    write_labels_file(scans / "labelsTr" / "liver_000.nii.gz", organ_labels(1))
    proj = tmp_path / "proj"

    assert run(capsys, "init", proj, "--labels", "btcv13")[0] == 0
    code, out, _ = run(capsys, "add", proj, scans)
    assert code == 0 and "3 added, 1 skipped" in out and "looks like a label map" in out
    code, out, _ = run(capsys, "add", proj, scans / "liver_001_0000.nii.gz")
    assert code == 0 and "duplicate" in out

    status = run_json(capsys, "status", proj, "--json")
    assert [(c["id"], c["status"]) for c in status["cases"]] == [("liver_000", "unlabeled"), ("liver_001", "unlabeled"),
                                                                ("liver_002", "unlabeled")]
    code, out, _ = run(capsys, "label", proj, "liver_000", scans / "labelsTr" / "liver_000.nii.gz")
    assert code == 0 and "final" in out
    write_labels_file(tmp_path / "draft.nii.gz", organ_labels(2))
    assert run(capsys, "label", proj, "liver_001", tmp_path / "draft.nii.gz", "--draft", "--author", "dr_x")[0] == 0
    status = run_json(capsys, "status", proj, "--json")
    assert {c["id"]: c["status"] for c in status["cases"]} == {"liver_000": "labeled", "liver_001": "draft",
                                                              "liver_002": "unlabeled"}
    assert status["counts"]["labeled"] == 1 and status["latest_run"] is None

    ranked = run_json(capsys, "next", proj, "--n", "5", "--json")
    assert sorted(r["id"] for r in ranked) == ["liver_001", "liver_002"]
    assert ranked == run_json(capsys, "next", proj, "--n", "5", "--json")

    revs = run_json(capsys, "revisions", proj, "liver_001", "--json")
    assert [(r["kind"], r["final"], r["author"]) for r in revs] == [("human", False, "dr_x")]
    code, out, _ = run(capsys, "restore", proj, "liver_001", revs[0]["id"])
    assert code == 0 and "restored as new revision" in out
    code, out, _ = run(capsys, "revisions", proj, "liver_001")
    assert out.count("human") == 2

    assert run(capsys, "remove", proj, "liver_002")[0] == 0
    assert "liver_002" not in [c["id"] for c in run_json(capsys, "status", proj, "--json")["cases"]]
    assert run(capsys, "remove", proj, "liver_002", "--undo")[0] == 0
    assert run(capsys, "remove", proj, "liver_002")[0] == 0
    code, out, _ = run(capsys, "purge", proj)
    assert code == 0 and "deleted 1 case(s)" in out and (scans / "liver_002_0000.nii.gz").exists()

    code, out, _ = run(capsys, "export", proj, tmp_path / "nn", "--format", "nnunet")
    assert code == 0 and "exported 1 labeled case(s)" in out
    assert (tmp_path / "nn" / "labelsTr" / "liver_000.nii.gz").exists()
    assert run(capsys, "export", proj, tmp_path / "sl", "--format", "slicer")[0] == 0
    assert (tmp_path / "sl" / "liver_000.seg.nrrd").exists()

    assert run(capsys, "init", tmp_path / "proj2")[0] == 0
    code, out, _ = run(capsys, "import-nnunet", tmp_path / "proj2", tmp_path / "nn")
    assert code == 0 and "1 case(s) added, 1 label(s) imported" in out
    code, out, _ = run(capsys, "classes", tmp_path / "proj2")
    assert "6 liver" in out


def test_cli_errors_are_one_clear_line_with_exit_code_2(tmp_path, capsys):
    code, _, err = run(capsys, "status", tmp_path / "nowhere")
    assert code == 2 and err.startswith("error:") and "dinomix project init" in err and err.count("\n") == 1
    scans = tmp_path / "s"
    write_image(scans / "a_0000.nii.gz", seed=1)
    run(capsys, "init", tmp_path / "p", "--labels", "btcv13")
    run(capsys, "add", tmp_path / "p", scans)
    write_labels_file(tmp_path / "wrong.nii.gz", np.zeros((8, 16, 12), np.uint8))
    code, _, err = run(capsys, "label", tmp_path / "p", "a", tmp_path / "wrong.nii.gz")
    assert code == 2 and "does not fit case 'a'" in err and "Fix:" in err
    code, _, err = run(capsys, "label", tmp_path / "p", "nope", tmp_path / "wrong.nii.gz")
    assert code == 2 and "'nope' does not exist" in err


def test_cli_on_the_real_ct(real_ct_dir, tmp_path, capsys):
    proj = tmp_path / "proj"
    assert run(capsys, "init", proj, "--labels", "btcv13")[0] == 0
    code, out, _ = run(capsys, "add", proj, real_ct_dir)
    assert code == 0 and "1 added" in out
    case_id = "totalseg_example_3mm"  # ct.nii.gz is a generic name: the folder names the case
    code, _, err = run(capsys, "label", proj, case_id, real_ct_dir / "seg_totalseg_fast.nii.gz")
    assert code == 2 and "class map" in err  # 117-class map values do not fit BTCV-13
    assert run(capsys, "label", proj, case_id, real_ct_dir / "seg_btcv13.nii.gz")[0] == 0
    status = run_json(capsys, "status", proj, "--json", "--verify")
    assert status["cases"] == [dict(status["cases"][0], id=case_id, status="labeled", image="ok")]
    assert status["cases"][0]["shape_zyx"] == [112, 101, 122]

    with Project.open(proj) as project:
        labeled, unlabeled = project.training_split()
        assert [c.case_id for c in labeled] == [case_id] and unlabeled == []
        truth = read_labels(real_ct_dir / "seg_btcv13.nii.gz").array
        assert np.array_equal(project.load_labels(project.label_revision(case_id).id).array, truth)
        assert int((truth == 6).sum()) == 41_692  # liver voxels, as the data README states

    assert run(capsys, "export", proj, tmp_path / "nn", "--format", "nnunet")[0] == 0
    exported = read_labels(tmp_path / "nn" / "labelsTr" / f"{case_id}.nii.gz")
    assert np.array_equal(exported.array, truth)
    assert run(capsys, "export", proj, tmp_path / "sl", "--format", "slicer")[0] == 0
    reader = sitk.ImageFileReader()
    reader.SetFileName(str(tmp_path / "sl" / f"{case_id}.seg.nrrd"))
    reader.ReadImageInformation()
    names = {reader.GetMetaData(f"Segment{i}_Name") for i in range(13)}
    assert set(LabelMap.preset("btcv13").names[1:]) == names


def test_cli_and_trainer_api_end_to_end_on_phantom_data(tmp_path, capsys):
    phantom = pytest.importorskip("dinomix_core.data.phantom")
    phantom.write_phantom_dataset(tmp_path / "ph", cases=3, seed=0, size="small")
    proj = tmp_path / "proj"
    assert run(capsys, "init", proj)[0] == 0
    code, out, _ = run(capsys, "import-nnunet", proj, tmp_path / "ph")
    assert code == 0 and "3 case(s) added, 3 label(s) imported" in out
    rev = run_json(capsys, "revisions", proj, "phantom_002", "--json")[0]
    assert run(capsys, "remove", proj, "phantom_002", "--revision", rev["id"])[0] == 0

    # What `dinomix train --project` does around the trainer.
    with Project.open(proj) as project:
        labeled, unlabeled = project.training_split()
        assert [c.case_id for c in labeled] == ["phantom_000", "phantom_001"]
        assert [c.case_id for c in unlabeled] == ["phantom_002"]
        run_id = project.start_run({"steps": 2}, "dinomix", "random")
        truth = read_labels(tmp_path / "ph" / "labelsTr" / "phantom_002.nii.gz").array
        probs = np.full((14, *truth.shape), 0.1 / 13, np.float32)  # a confident stand-in model
        np.put_along_axis(probs, truth[None].astype(np.int64), 0.9, axis=0)
        score = uncertainty_score(probs)
        project.add_prediction(run_id, "phantom_002", truth, score, {6: score})
        project.finish_run(run_id, "completed", {"dice": {"liver": 0.91}})

    status = run_json(capsys, "status", proj, "--json")
    assert {c["id"]: c["status"] for c in status["cases"]} == {"phantom_000": "labeled", "phantom_001": "labeled",
                                                              "phantom_002": "predicted"}
    assert status["latest_run"]["metrics"] == {"dice": {"liver": 0.91}}
    ranked = run_json(capsys, "next", proj, "--json")
    assert [(r["id"], r["score"]) for r in ranked] == [("phantom_002", pytest.approx(score))]
    assert run(capsys, "export", proj, tmp_path / "nn", "--format", "nnunet")[0] == 0
    assert json.loads((tmp_path / "nn" / "dataset.json").read_text())["numTraining"] == 2
