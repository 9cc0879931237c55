"""No command writes over one of its own inputs (issue 13, data loss item 1).

Same path, a symlink, a hard link, `./` spellings, an output folder that is the input folder,
and two inputs that would write one output: each is refused with exit 2 and one line naming
the file, before any slow work (the checkpoint is not even loaded), and every input keeps
its bytes.
"""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np
import pytest

from dinomix_core.cli.main import main
from dinomix_core.io import LabelMap, Volume, write_dataset_json, write_image, write_labels
from dinomix_core.io.paths import refuse_overwriting_inputs, same_file


def digest(folder: Path) -> dict[str, str]:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def run_cli(capsys, *argv) -> tuple[int, str]:
    code = main([str(a) for a in argv])
    return code, capsys.readouterr().err


def assert_refused(code: int, err: str, named: Path) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in err, err
    assert str(named) in lines[0] and "input" in lines[0], lines[0]


@pytest.fixture
def work(tmp_path) -> Path:
    """cts/a_0000.nii.gz, cts/b_0000.nii.gz, a dummy checkpoint, and labels for evaluate."""
    ref = Volume(np.random.default_rng(0).integers(-1000, 1000, (6, 12, 12)).astype(np.int16),
                 spacing_zyx=(2.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0))
    for case in ("a", "b"):
        write_image(ref, tmp_path / "cts" / f"{case}_0000.nii.gz")
        labels = np.zeros(ref.shape, np.uint8)
        labels[2:4, 3:8, 3:8] = 1
        write_labels(labels, tmp_path / "gt" / f"{case}.nii.gz", reference=ref)
        write_labels(labels, tmp_path / "pred" / f"{case}.nii.gz", reference=ref)
    write_dataset_json(tmp_path / "gt" / "dataset.json",
                       LabelMap(["background", "liver"]).to_dataset_json_dict(num_training=2, channel_names={"0": "CT"},
                                                                              file_ending=".nii.gz", name="t"))
    (tmp_path / "model.pt").write_bytes(b"not loaded: the refusal comes first")
    return tmp_path


def test_predict_onto_its_own_input(work, capsys):
    ct = work / "cts" / "a_0000.nii.gz"
    before = digest(work)
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", ct, "--output", ct)
    assert_refused(code, err, ct)
    # Another spelling of the same path.
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", ct,
                        "--output", work / "cts" / ".." / "cts" / "a_0000.nii.gz")
    assert code == 2 and "is also an input" in err
    assert digest(work) == before


@pytest.mark.parametrize("link", ["symlink", "hardlink"])
def test_predict_onto_a_link_of_its_input(work, capsys, link):
    ct = work / "cts" / "a_0000.nii.gz"
    alias = work / "alias.nii.gz"
    (os.symlink if link == "symlink" else os.link)(ct, alias)
    before = digest(work)
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", ct, "--output", alias)
    assert_refused(code, err, alias)
    assert digest(work) == before
    assert same_file(alias, ct)


def test_predict_onto_its_checkpoint(work, capsys):
    ct = work / "cts" / "a_0000.nii.gz"
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", ct, "--output", work / "model.pt")
    assert code == 2 and "Traceback" not in err and "model.pt" in err


def test_predict_folder_into_the_input_folder(work, capsys):
    before = digest(work)
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", work / "cts",
                        "--output", work / "cts")
    assert_refused(code, err, work / "cts")
    # A symlink to the input folder is the same folder.
    os.symlink(work / "cts", work / "cts_link")
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", work / "cts",
                        "--output", work / "cts_link")
    assert code == 2 and "input folder" in err
    assert digest(work) == before


def test_predict_folder_whose_outputs_would_hit_an_input(work, capsys):
    """Input a.nii.gz has case id "a": OUT/a.nii.gz, a hard link of it, is that same file."""
    mixed, out = work / "mixed", work / "out"
    mixed.mkdir()
    out.mkdir()
    os.replace(work / "gt" / "a.nii.gz", mixed / "a.nii.gz")
    os.link(mixed / "a.nii.gz", out / "a.nii.gz")
    before = digest(work)
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", mixed, "--output", out)
    assert_refused(code, err, out / "a.nii.gz")
    assert digest(work) == before


def test_predict_folder_where_two_inputs_share_an_output(work, capsys):
    (work / "cts" / "a_0000.nii").write_bytes((work / "cts" / "a_0000.nii.gz").read_bytes())  # same case id "a"
    code, err = run_cli(capsys, "predict", "--checkpoint", work / "model.pt", "--input", work / "cts",
                        "--output", work / "out")
    assert code == 2 and "written twice" in err and "Traceback" not in err
    assert not (work / "out").exists()


@pytest.mark.parametrize("target", ["gt/a.nii.gz", "pred/b.nii.gz", "gt/dataset.json"])
def test_evaluate_json_onto_an_input(work, capsys, target):
    before = digest(work)
    code, err = run_cli(capsys, "evaluate", "--pred", work / "pred", "--gt", work / "gt", "--json", work / target)
    assert_refused(code, err, work / target)
    assert digest(work) == before


def test_evaluate_json_elsewhere_still_works(work, capsys):
    code, err = run_cli(capsys, "evaluate", "--pred", work / "pred", "--gt", work / "gt", "--json", work / "r.json")
    assert code == 0, err
    assert (work / "r.json").is_file()


def test_export_onto_the_images_it_reads(tmp_path, capsys):
    """Re-exporting into the nnU-Net folder a project references its images from is refused."""
    from dinomix_core.data.phantom import write_phantom_dataset

    data = tmp_path / "ph"
    write_phantom_dataset(data, 1, 0, "small")
    project = tmp_path / "proj"
    assert main(["project", "init", str(project), "--labels", "btcv13"]) == 0
    assert main(["project", "import-nnunet", str(project), str(data)]) == 0
    capsys.readouterr()
    before = digest(data)
    code, err = run_cli(capsys, "project", "export", project, data, "--format", "nnunet", "--overwrite")
    assert_refused(code, err, data / "imagesTr" / "phantom_000_0000.nii.gz")
    assert digest(data) == before


def test_helper_allows_distinct_files(tmp_path):
    (tmp_path / "in.nii.gz").write_bytes(b"x")
    refuse_overwriting_inputs([tmp_path / "out.nii.gz", tmp_path / "new" / "x.nii.gz"], [tmp_path / "in.nii.gz"])
