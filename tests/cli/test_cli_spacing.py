"""`dinomix train --spacing Z,Y,X`: recorded in model.pt, predictions on the input's grid; bad values exit 2."""

from __future__ import annotations

import json

import pytest

from dinomix_core.cli.main import main
from dinomix_core.data.phantom import write_phantom_dataset
from dinomix_core.engine.checkpoint import MODEL_KIND, load_checkpoint
from dinomix_core.io import read_labels, read_volume

TINY_ARGS = ["--patch", "16,32,32", "--width", "4", "--depth", "2", "--batch-labeled", "1", "--method", "supervised"]


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli_spacing") / "data"
    write_phantom_dataset(out, 3, 5, "small")
    return out


def test_spacing_is_recorded_and_predictions_come_back_on_the_input_grid(data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--labeled", "2", "--exclude", "phantom_002", "--steps", "1",
                 "--spacing", "6,5,5", "--out", str(run), *TINY_ARGS]) == 0
    meta, _ = load_checkpoint(run / "model.pt", kind=MODEL_KIND)
    assert meta["preprocessing"]["spacing_zyx"] == [6.0, 5.0, 5.0] and meta["preprocessing"]["orientation"] == "LPS"
    assert json.loads((run / "run.json").read_text())["config"]["target_spacing"] == [6.0, 5.0, 5.0]
    image = data / "imagesTr" / "phantom_002_0000.nii.gz"
    assert main(["predict", "--checkpoint", str(run / "model.pt"), "--input", str(image),
                 "--output", str(tmp_path / "p.nii.gz")]) == 0
    ref = read_volume(image)
    assert read_labels(tmp_path / "p.nii.gz", reference=ref).same_grid(ref)


def test_default_spacing_is_the_median_of_the_labeled_cases(data, tmp_path):
    run = tmp_path / "run"
    assert main(["train", "--data", str(data), "--labeled", "1", "--exclude", "phantom_002", "--steps", "1",
                 "--out", str(run), *TINY_ARGS]) == 0
    meta, _ = load_checkpoint(run / "model.pt", kind=MODEL_KIND)
    assert meta["preprocessing"]["spacing_zyx"] == [5.0, 4.0, 4.0]  # the small phantom's own spacing


@pytest.mark.parametrize("bad", ["0,1,1", "a,b,c", "1,2", "-3", "nan,1,1"])
def test_bad_spacing_exits_2_with_one_line(data, tmp_path, capsys, bad):
    with pytest.raises(SystemExit) as info:
        main(["train", "--data", str(data), "--labeled", "1", "--steps", "1", "--spacing", bad,
              "--out", str(tmp_path / "run"), *TINY_ARGS])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "--spacing" in err and "Z,Y,X voxel spacing in mm" in err
    assert not (tmp_path / "run").exists()
