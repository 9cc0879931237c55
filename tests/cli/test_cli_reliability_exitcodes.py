"""Exit codes say whether everything asked for was done, and messages say the truth (issue 13).

`project add` of unreadable files or of a label map given as a scan adds the readable ones,
lists the failures and exits 2; `project import-nnunet` with skipped files exits 2; a locked
project's message gives the time really waited.
"""

from __future__ import annotations

import sqlite3
import time

import numpy as np
import pytest

from dinomix_core.cli.main import main
from dinomix_core.io import LabelMap, Volume, write_dataset_json, write_image, write_labels
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.io.label_like import label_like_values, refuse_label_like
from dinomix_core.project import Project
from dinomix_core.project.errors import ProjectBusyError


def _ct(seed=0) -> Volume:
    return Volume(np.random.default_rng(seed).integers(-1000, 1000, (8, 32, 32)).astype(np.int16),
                  spacing_zyx=(2.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0))


def _label_volume() -> Volume:
    labels = np.zeros((8, 32, 32), np.uint8)
    labels[2:6, 8:20, 8:20] = 1
    labels[3:5, 22:28, 22:28] = 7
    return Volume(labels, spacing_zyx=(2.0, 1.0, 1.0), origin_xyz=(0.0, 0.0, 0.0))


@pytest.fixture
def proj(tmp_path):
    root = tmp_path / "proj"
    assert main(["project", "init", str(root), "--labels", "btcv13"]) == 0
    return root


def run_cli(capsys, *argv):
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_add_with_an_unreadable_file_adds_the_rest_and_exits_2(tmp_path, proj, capsys):
    good = tmp_path / "good_0000.nii.gz"
    write_image(_ct(), good)
    broken = tmp_path / "broken_0000.nii.gz"
    broken.write_bytes(good.read_bytes()[:200])  # a truncated gzip
    code, out, err = run_cli(capsys, "project", "add", proj, good, broken)
    assert code == 2, (out, err)
    assert "added    good" in out and f"skipped  {broken}" in out
    assert len(err.strip().splitlines()) == 1 and err.startswith("error: ") and "Traceback" not in err
    with Project.open(proj) as p:
        assert [c.id for c in p.cases()] == ["good"]
    # Adding it again: a duplicate is already there, which is not a failure.
    assert run_cli(capsys, "project", "add", proj, good)[0] == 0


def test_a_label_map_given_as_a_scan_is_refused(tmp_path, proj, capsys):
    scan = tmp_path / "patient7.nii.gz"  # nothing in the name says "label"
    write_image(_label_volume(), scan)
    code, out, err = run_cli(capsys, "project", "add", proj, scan)
    assert code == 2
    assert "is a label map, not a CT" in out and "dinomix project label" in out
    with Project.open(proj) as p:
        assert p.cases() == []


def test_label_like_is_only_the_clear_case():
    assert list(label_like_values(_label_volume().array)) == [0, 1, 7]
    assert label_like_values(_ct().array) is None  # HU: negative values
    # An unsigned CT stored without the -1024 offset has values far above 255.
    assert label_like_values(np.random.default_rng(1).integers(0, 3000, (4, 16, 16)).astype(np.uint16)) is None
    # A float image with fractions is no label map either.
    assert label_like_values(np.random.default_rng(2).random((4, 16, 16)).astype(np.float32) * 10) is None
    with pytest.raises(DinomixInputError, match="0, 1, 7"):
        refuse_label_like(_label_volume(), "x.nii.gz")


def test_import_nnunet_with_skipped_files_exits_2(tmp_path, proj, capsys):
    ds = tmp_path / "Dataset001"
    write_image(_ct(), ds / "imagesTr" / "a_0000.nii.gz")
    write_labels(_label_volume().array.clip(0, 1), ds / "labelsTr" / "a.nii.gz", reference=_ct())
    (ds / "imagesTr" / "b_0000.nii.gz").write_bytes(b"not an image")
    write_dataset_json(ds / "dataset.json", LabelMap.preset("btcv13").to_dataset_json_dict(
        num_training=2, channel_names={"0": "CT"}, file_ending=".nii.gz", name="t"))
    code, out, err = run_cli(capsys, "project", "import-nnunet", proj, ds)
    assert code == 2, (out, err)
    assert "added    a" in out and "labeled  a" in out and "b_0000.nii.gz" in out
    assert len(err.strip().splitlines()) == 1 and "could not be imported" in err
    # The broken file gone, the same import is complete: an identical label is not a failure.
    (ds / "imagesTr" / "b_0000.nii.gz").unlink()
    assert run_cli(capsys, "project", "import-nnunet", proj, ds)[0] == 0


def test_a_locked_project_says_how_long_it_waited(tmp_path, proj):
    ct = tmp_path / "c_0000.nii.gz"
    write_image(_ct(), ct)
    holder = sqlite3.connect(proj / "project.sqlite", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")
    try:
        start = time.monotonic()
        with Project.open(proj, busy_timeout=1.0) as p:  # opening tidies only if the lock comes quickly
            opened = time.monotonic() - start
            with pytest.raises(ProjectBusyError, match=r"locked for more than 1 s") as info:
                p.add_image(ct)
        waited = time.monotonic() - start
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert opened < 0.9, opened  # the tidy waited 0.5 s, not the full timeout
    assert waited < 2.0, waited  # so the message's 1 s is (nearly) the whole wait
    assert "\n" not in str(info.value)
