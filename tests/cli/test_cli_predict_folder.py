"""`dinomix predict` over folders: a bad file does not stop the others; DICOM folders with several series.

A tiny random U-Net checkpoint (no training) predicts small CT-like volumes written here:
NIfTI files, and DICOM series named by SOP Instance UID (as PACS exports name them).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from _dicom_series import ct_hu, write_series

from dinomix_core.cli.main import main
from dinomix_core.engine.checkpoint import MODEL_KIND, save_checkpoint
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.trainer import TeacherInfo, model_meta
from dinomix_core.io import LabelMap, Volume, read_labels, read_volume, write_image
from dinomix_core.models import create_student

BIG, SMALL = "1.2.826.0.1.3680043.8.498.41", "1.2.826.0.1.3680043.8.498.42"


@pytest.fixture(scope="module")
def model_pt(tmp_path_factory):
    torch.manual_seed(0)
    student = create_student("unet3d", num_classes=3, width=2, depth=2)
    cfg = TrainConfig(patch_size=(4, 16, 16))
    labelmap = LabelMap(["background", "liver", "spleen"])
    path = tmp_path_factory.mktemp("model") / "model.pt"
    save_checkpoint(path, kind=MODEL_KIND, meta=model_meta(cfg, student, labelmap, TeacherInfo(), 0),
                    tensors={"state_dict": student.state_dict()})
    return path


def run(capsys, *argv):
    code = main([str(a) for a in argv])
    out, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, out, err


def ct_volume(seed: int, shape=(6, 20, 24)) -> Volume:
    return Volume(ct_hu(shape, seed), (2.0, 0.9, 0.9), (5.0, -3.0, 1.0), modality="CT")


def test_a_bad_file_is_reported_and_the_others_are_predicted(tmp_path, capsys, model_pt):
    cts = tmp_path / "cts"
    for name in ("a_0000", "c_0000"):
        write_image(ct_volume(len(name)), cts / f"{name}.nii.gz")
    good = (cts / "a_0000.nii.gz").read_bytes()
    (cts / "b_0000.nii.gz").write_bytes(good[: len(good) // 2])  # truncated transfer
    code, out, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", cts, "--output", tmp_path / "out")
    assert code == 2
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "c.nii.gz"]
    for case in ("a", "c"):
        labels = read_labels(tmp_path / "out" / f"{case}.nii.gz", reference=read_volume(cts / f"{case}_0000.nii.gz"))
        assert labels.array.dtype == np.uint8
    assert "predicted      a_0000.nii.gz" in out and "predicted      c_0000.nii.gz" in out
    assert "2 label maps" in out and "1 of 3 inputs not predicted" in out
    failures = [ln for ln in err.splitlines() if ln.startswith("not predicted")]
    assert len(failures) == 1 and str(cts / "b_0000.nii.gz") in failures[0]
    assert err.strip().splitlines()[-1].startswith("error: 1 of 3 inputs")


def test_a_folder_of_good_files_and_dicom_folders_exits_0(tmp_path, capsys, model_pt):
    cts = tmp_path / "cts"
    write_image(ct_volume(1), cts / "a_0000.nii.gz")
    write_series(cts / "patient7", ct_hu((5, 20, 24), 2), series_uid=BIG)
    code, out, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", cts, "--output", tmp_path / "out")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["a.nii.gz", "patient7.nii.gz"]
    assert read_labels(tmp_path / "out" / "patient7.nii.gz").shape == (5, 20, 24)


@pytest.fixture
def two_series(tmp_path):
    folder = tmp_path / "export"
    write_series(folder, ct_hu((6, 20, 24), 0), series_uid=BIG, description="VENOUS 2mm", number=3)
    write_series(folder, ct_hu((4, 20, 24), 1), series_uid=SMALL, number=4, spacing_zyx=(3.0, 0.7, 0.8))
    return folder


def test_two_series_predicts_the_largest_and_says_so(tmp_path, capsys, model_pt, two_series):
    out = tmp_path / "pred.nii.gz"
    code, stdout, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", two_series, "--output", out)
    assert code == 0, err
    assert read_labels(out).shape == (6, 20, 24)
    note = [ln for ln in err.splitlines() if ln.startswith("note:") and "DICOM series" in ln]
    assert len(note) == 1 and "holds 2 DICOM series; predicting the largest" in note[0]
    assert "'VENOUS 2mm'" in note[0] and SMALL in note[0] and "--series-uid" in note[0]


@pytest.mark.parametrize("spelling", [SMALL, f"series_uid={SMALL}"])
def test_series_uid_picks_the_series(tmp_path, capsys, model_pt, two_series, spelling):
    out = tmp_path / "pred.nii.gz"
    code, _, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", two_series, "--output", out,
                       "--series-uid", spelling)
    assert code == 0, err
    labels = read_labels(out)
    assert labels.shape == (4, 20, 24)
    np.testing.assert_allclose(labels.spacing_zyx, (3.0, 0.7, 0.8), atol=1e-4)
    assert "predicting the largest" not in err


def test_unknown_series_uid_and_misplaced_option_are_one_line(tmp_path, capsys, model_pt, two_series):
    code, _, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", two_series,
                       "--output", tmp_path / "p.nii.gz", "--series-uid", "9.9.9")
    assert code == 2 and err.count("\n") == 1 and "no DICOM series with uid '9.9.9'" in err and BIG in err and SMALL in err
    write_image(ct_volume(0), tmp_path / "ct.nii.gz")
    code, _, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", tmp_path / "ct.nii.gz",
                       "--output", tmp_path / "p.nii.gz", "--series-uid", BIG)
    assert code == 2 and err.count("\n") == 1 and "--series-uid picks one series of a DICOM folder" in err
    assert not (tmp_path / "p.nii.gz").exists()


def test_a_folder_that_yields_nothing_is_exit_2_naming_it(tmp_path, capsys, model_pt):
    empty = tmp_path / "nothing"
    empty.mkdir()
    (empty / "notes.txt").write_text("no images here")
    code, _, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", empty, "--output", tmp_path / "out")
    assert code == 2 and err.count("\n") == 1 and str(empty) in err
    assert "no CT files" in err and "no DICOM slices" in err
    write_series(empty / "PAT" / "STUDY" / "SER", ct_hu((3, 20, 24)), series_uid=BIG)
    code, _, err = run(capsys, "predict", "--checkpoint", model_pt, "--input", empty, "--output", tmp_path / "out")
    assert code == 2 and "DICOM series lie deeper, e.g. PAT/STUDY/SER" in err
    assert not (tmp_path / "out").exists()


def test_train_data_that_yields_nothing_is_exit_2_naming_it(tmp_path, capsys):
    data = tmp_path / "data"
    (data / "imagesTr").mkdir(parents=True)
    (data / "dataset.json").write_text('{"labels": {"background": 0, "liver": 1}, "channel_names": {"0": "CT"}, '
                                       '"file_ending": ".nii.gz", "numTraining": 0}')
    code, _, err = run(capsys, "train", "--data", data, "--labeled", "1", "--method", "supervised", "--steps", "1",
                       "--out", tmp_path / "run")
    assert code == 2 and err.count("\n") == 1 and str(data / "imagesTr") in err and "no images ending in .nii.gz" in err
