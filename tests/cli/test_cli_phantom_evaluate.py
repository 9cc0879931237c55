"""`dinomix phantom` and `dinomix evaluate` end to end on a tiny phantom data set."""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest

from dinomix_core.cli.main import main
from dinomix_core.io import Volume, read_labels, write_labels


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    out = tmp_path_factory.mktemp("phantom") / "ds"
    assert main(["phantom", "--out", str(out), "--cases", "2", "--seed", "3"]) == 0
    return out


def test_phantom_command_writes_data_set_and_prints_fractions(dataset, capsys, tmp_path):
    assert sorted(p.name for p in (dataset / "labelsTr").iterdir()) == ["phantom_000.nii.gz", "phantom_001.nii.gz"]
    assert json.loads((dataset / "dataset.json").read_text())["numTraining"] == 2
    out = tmp_path / "again"
    assert main(["phantom", "--out", str(out), "--cases", "1", "--seed", "3"]) == 0
    printed = capsys.readouterr().out
    assert "[1/1] phantom_000" in printed
    rows = [line for line in printed.splitlines() if "right_adrenal_gland" in line]
    assert len(rows) == 1 and float(rows[0].split()[-1]) > 0  # its fraction in %
    # Same seed, same case: identical labels to the fixture's first case.
    a = read_labels(out / "labelsTr" / "phantom_000.nii.gz").array
    b = read_labels(dataset / "labelsTr" / "phantom_000.nii.gz").array
    np.testing.assert_array_equal(a, b)


def test_phantom_refuses_existing_data_set_without_force(dataset, capsys):
    assert main(["phantom", "--out", str(dataset), "--cases", "1"]) == 2
    assert "--force" in capsys.readouterr().err


def _predictions(dataset, tmp_path):
    """Copy the ground truth as predictions, then drop the left adrenal gland in case 001."""
    pred = tmp_path / "pred"
    shutil.copytree(dataset / "labelsTr", pred)
    case = read_labels(pred / "phantom_001.nii.gz")
    arr = case.array.copy()
    arr[arr == 13] = 0
    write_labels(case.with_array(arr), pred / "phantom_001.nii.gz")
    return pred


def test_evaluate_reports_table_and_json(dataset, tmp_path, capsys):
    pred = _predictions(dataset, tmp_path)
    out_json = tmp_path / "report.json"
    rc = main(["evaluate", "--pred", str(pred), "--gt", str(dataset / "labelsTr"), "--json", str(out_json)])
    assert rc == 0
    printed = capsys.readouterr().out
    left = next(line for line in printed.splitlines() if line.startswith("left_adrenal_gland"))
    assert left.split()[1] == "50.00"  # mean of 100 (case 000) and 0 (missed in case 001)
    report = json.loads(out_json.read_text())
    pc = report["per_class"]
    assert pc["left_adrenal_gland"]["dice"] == pytest.approx(50.0)
    assert pc["left_adrenal_gland"]["missed_cases"] == 1 and pc["left_adrenal_gland"]["n_surface_cases"] == 1
    assert pc["liver"]["dice"] == pytest.approx(100.0) and pc["liver"]["hd95_mm"] == 0.0
    assert report["mean_dice"] == pytest.approx((12 * 100.0 + 50.0) / 13)
    assert len(report["tail_classes"]) == 3 and "left_adrenal_gland" in report["tail_classes"]
    assert report["per_case"]["phantom_001"]["left_adrenal_gland"]["status"] == "missed"
    assert report["per_case"]["phantom_001"]["left_adrenal_gland"]["hd95_mm"] is None
    assert list(pc)[0] == "spleen"  # names from the data set's dataset.json, BTCV order


def test_evaluate_errors_name_the_files(dataset, tmp_path, capsys):
    pred = _predictions(dataset, tmp_path)
    (pred / "phantom_000.nii.gz").unlink()
    assert main(["evaluate", "--pred", str(pred), "--gt", str(dataset / "labelsTr")]) == 2
    err = capsys.readouterr().err
    assert "phantom_000" in err and str(pred) in err

    shutil.copy(dataset / "labelsTr" / "phantom_000.nii.gz", pred / "phantom_000.nii.gz")
    moved = read_labels(pred / "phantom_001.nii.gz")
    shifted = Volume(moved.array, moved.spacing_zyx, (0.0, 0.0, 0.0), moved.direction)
    write_labels(shifted, pred / "phantom_001.nii.gz")
    assert main(["evaluate", "--pred", str(pred), "--gt", str(dataset / "labelsTr")]) == 2
    err = capsys.readouterr().err
    assert "phantom_001.nii.gz" in err and "origin" in err and str(dataset / "labelsTr") in err


def test_evaluate_without_dataset_json_numbers_the_classes(dataset, tmp_path, capsys):
    gt = tmp_path / "gt_only"
    shutil.copytree(dataset / "labelsTr", gt)  # no dataset.json next to or above it
    assert main(["evaluate", "--pred", str(gt), "--gt", str(gt), "--tail-k", "1"]) == 0
    printed = capsys.readouterr().out
    assert "class_13" in printed and "spleen" not in printed
    assert main(["evaluate", "--pred", str(gt), "--gt", str(gt), "--labels", str(dataset / "dataset.json")]) == 0
    assert "right_adrenal_gland" in capsys.readouterr().out
