"""Every output path of every command that writes is checked first (issue 13, "every output path").

Three classes, for predict, phantom, train, evaluate --json, project init, project export,
weights add and demo --out: a read-only folder (a real read-only tmpfs as root, else a
chmod 555 folder), a file where a folder is expected, and a folder where a file is expected.
Each ends in one line naming the path with exit 2, before any slow work (the checkpoint given
to predict is not even a checkpoint: it is never loaded), and nothing is written.
"""

from __future__ import annotations

import os
import subprocess

import numpy as np
import pytest

from dinomix_core.cli.main import main
from dinomix_core.io import LabelMap, Volume, write_dataset_json, write_image, write_labels
from dinomix_core.io.outputs import check_output_dir, check_output_file


@pytest.fixture
def readonly_dir(tmp_path):
    """A folder nobody may write into: a read-only tmpfs (root ignores permission bits), else chmod 555."""
    folder = tmp_path / "ro"
    folder.mkdir()
    if os.geteuid() == 0:
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", "ro,size=64k", "tmpfs", str(folder)], capture_output=True)
        if done.returncode != 0:
            pytest.skip(f"root cannot mount a read-only tmpfs here: {done.stderr.decode().strip()}")
        try:
            yield folder
        finally:
            subprocess.run(["umount", str(folder)], check=False)
        return
    folder.chmod(0o555)
    try:
        yield folder
    finally:
        folder.chmod(0o755)


@pytest.fixture
def work(tmp_path):
    """A CT, its labels (as pred and gt), a data set, a project, a fake checkpoint and a plain file."""
    ct = Volume(np.random.default_rng(0).integers(-1000, 1000, (8, 32, 32)).astype(np.int16),
                spacing_zyx=(2.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0))
    labels = np.zeros(ct.shape, np.uint8)
    labels[2:6, 8:20, 8:20] = 1
    for case in ("a", "b"):
        write_image(ct, tmp_path / "ds" / "imagesTr" / f"{case}_0000.nii.gz")
        write_labels(labels, tmp_path / "ds" / "labelsTr" / f"{case}.nii.gz", reference=ct)
    write_labels(labels, tmp_path / "pred" / "a.nii.gz", reference=ct)
    write_dataset_json(tmp_path / "ds" / "dataset.json", LabelMap(["background", "liver"]).to_dataset_json_dict(
        num_training=2, channel_names={"0": "CT"}, file_ending=".nii.gz", name="t"))
    assert main(["project", "init", str(tmp_path / "proj"), "--labels", str(tmp_path / "ds" / "dataset.json")]) == 0
    (tmp_path / "model.pt").write_bytes(b"never loaded")
    (tmp_path / "weights.safetensors").write_bytes(b"never read")
    (tmp_path / "afile").write_text("a plain file")
    return tmp_path


def commands(w, out):
    """Each writing command with ``out`` as its output path (folder or file, as the command takes)."""
    ct = w / "ds" / "imagesTr" / "a_0000.nii.gz"
    return {
        "predict-file": ["predict", "--checkpoint", w / "model.pt", "--input", ct, "--output", out / "x.nii.gz"
                         if out.name != "afile" else out],
        "predict-folder": ["predict", "--checkpoint", w / "model.pt", "--input", w / "ds" / "imagesTr", "--output", out],
        "phantom": ["phantom", "--out", out, "--cases", "1"],
        "train": ["train", "--data", w / "ds", "--labeled", "1", "--out", out, "--method", "supervised",
                  "--patch", "8,32,32", "--width", "4", "--depth", "2", "--token-stride", "16"],
        "evaluate": ["evaluate", "--pred", w / "pred", "--gt", w / "ds" / "labelsTr", "--json",
                     out / "r.json" if out.name != "afile" else out],
        "project-init": ["project", "init", out],
        "project-export": ["project", "export", w / "proj", out, "--format", "nnunet"],
        "weights-add": ["weights", "add", w / "weights.safetensors", "--dir", out],
        "demo": ["demo", "--out", out, "--steps", "1"],
    }


def refused(capsys, argv, named) -> str:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    lines = [ln for ln in captured.err.splitlines() if ln.strip()]
    assert code == 2, (argv, captured.err)
    assert len(lines) == 1 and lines[0].startswith("error: ") and "Traceback" not in captured.err, captured.err
    assert str(named) in lines[0], lines[0]
    return lines[0]


FOLDER_OUTPUTS = ["predict-folder", "phantom", "train", "project-init", "project-export", "weights-add", "demo"]
FILE_OUTPUTS = ["predict-file", "evaluate"]


@pytest.mark.parametrize("command", FOLDER_OUTPUTS + FILE_OUTPUTS)
def test_a_read_only_folder(work, readonly_dir, capsys, command):
    line = refused(capsys, commands(work, readonly_dir / "sub")[command], readonly_dir)
    assert "cannot be written" in line and ("read-only file system" in line or "no permission" in line)
    assert list(readonly_dir.iterdir()) == []


@pytest.mark.parametrize("command", FOLDER_OUTPUTS)
def test_a_file_where_a_folder_is_expected(work, capsys, command):
    afile = work / "afile"
    line = refused(capsys, commands(work, afile)[command], afile)
    assert "is a file" in line and "folder" in line
    # ... also when the file stands higher up the path.
    argv = commands(work, afile / "deeper")[command]
    refused(capsys, argv, afile)
    assert afile.read_text() == "a plain file"


@pytest.mark.parametrize("command", FILE_OUTPUTS)
def test_a_folder_where_a_file_is_expected(work, capsys, command):
    folder = work / "a_folder"
    folder.mkdir()
    argv = commands(work, work / "afile")[command]
    argv[argv.index(work / "afile")] = folder
    line = refused(capsys, argv, folder)
    assert "is a folder, but" in line and "names a file" in line
    assert list(folder.iterdir()) == []
    # A file standing where the output's folder belongs.
    argv[argv.index(folder)] = work / "afile" / "x.json"
    refused(capsys, argv, work / "afile")


def test_the_checks_create_nothing(tmp_path):
    target = tmp_path / "new" / "deeper" / "out.nii.gz"
    assert check_output_file(target) == target
    assert check_output_dir(tmp_path / "new" / "run") == tmp_path / "new" / "run"
    assert list(tmp_path.iterdir()) == []
