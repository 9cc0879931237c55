"""A folder holding several DICOM series (UID-named files): one case per series, choices reported.

Scanners export phases and reconstructions side by side in one folder; each must become its
own project case (named from its Series Description, else its UID), keep its own content
hash, and every reader that has to pick one (predict, the napari reader) takes the largest
and says so.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
from _dicom_series import ct_hu, write_series

from dinomix_core.cli.main import main
from dinomix_core.io import VolumeReadError, read_volume
from dinomix_core.io.dicom import choose_series, describe_series
from dinomix_core.project import Project

BIG, SMALL = "1.2.826.0.1.3680043.8.498.61", "1.2.826.0.1.3680043.8.498.62"


@pytest.fixture
def export(tmp_path):
    """export/: a 6-slice 'ARTERIAL 1mm' series and a 4-slice series without description, all UID-named."""
    folder = tmp_path / "export"
    write_series(folder, ct_hu((6, 20, 24), 0), series_uid=BIG, description="ARTERIAL 1mm", number=2)
    write_series(folder, ct_hu((4, 20, 24), 1), series_uid=SMALL, number=5)
    assert not any(p.suffix == ".dcm" for p in folder.iterdir())
    return folder


def test_series_are_described_largest_first_and_chosen_by_uid(export):
    series = describe_series(export)
    assert [(s.uid, len(s.files), s.description, s.number) for s in series] == [
        (BIG, 6, "ARTERIAL 1mm", "2"), (SMALL, 4, "", "5")]
    assert series[0].label() == f"'ARTERIAL 1mm' (series 2, 6 files, uid {BIG})"
    chosen, others = choose_series(export, SMALL)
    assert chosen.uid == SMALL and [o.uid for o in others] == [BIG]
    with pytest.raises(VolumeReadError, match=r"no DICOM series with uid '1\.2'.*ARTERIAL 1mm"):
        choose_series(export, "1.2")


def test_reading_the_folder_warns_which_series_was_taken(export, caplog):
    with caplog.at_level(logging.WARNING, logger="dinomix_core.io.dicom"):
        volume = read_volume(export)
    assert volume.shape == (6, 20, 24) and volume.meta["series_uid"] == BIG
    warned = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warned) == 1 and "largest of 2 series" in warned[0].getMessage() and SMALL in warned[0].getMessage()
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="dinomix_core.io.dicom"):
        assert read_volume(export, series_uid=SMALL).shape == (4, 20, 24)
    assert not caplog.records  # asked for explicitly: nothing to warn about


@pytest.mark.parametrize("copy", [False, True], ids=["reference", "copy"])
def test_project_add_makes_one_case_per_series(tmp_path, export, capsys, copy):
    proj = tmp_path / "proj"
    assert main(["project", "init", str(proj), "--labels", "btcv13"]) == 0
    argv = ["project", "add", str(proj), str(export)] + (["--copy"] if copy else [])
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "2 added, 0 skipped" in out
    assert f"added    ARTERIAL_1mm             DICOM series 'ARTERIAL 1mm' (series 2, 6 files, uid {BIG}) of {export}" in out
    assert f"added    {SMALL}" in out  # no description: named by its uid

    with Project.open(proj) as project:
        cases = {c.id: c for c in project.cases()}
        assert sorted(cases) == sorted(["ARTERIAL_1mm", SMALL])
        assert cases["ARTERIAL_1mm"].content_hash != cases[SMALL].content_hash
        assert cases["ARTERIAL_1mm"].shape_zyx == (6, 20, 24) and cases[SMALL].shape_zyx == (4, 20, 24)
        np.testing.assert_array_equal(project.load_image("ARTERIAL_1mm").array, ct_hu((6, 20, 24), 0))
        np.testing.assert_array_equal(project.load_image(SMALL).array, ct_hu((4, 20, 24), 1))
        if copy:  # each series copied into a folder of its own, hash unchanged
            assert cases[SMALL].image_path.is_dir() and len(list(cases[SMALL].image_path.iterdir())) == 4
    assert main(argv) == 0  # again: both are duplicates, nothing asked for is missing
    assert "0 added, 2 skipped" in capsys.readouterr().out

    # Change one slice of the small series: that case is flagged, the other is not.
    victim = sorted(export.glob(f"CT.{SMALL}.*"))[0]
    data = bytearray(victim.read_bytes())
    data[-1] ^= 0xFF
    victim.write_bytes(bytes(data))
    with Project.open(proj, readonly=True) as project:
        states = {c.id: project.image_state(c) for c in project.cases()}
    assert states == {"ARTERIAL_1mm": "ok", SMALL: "ok" if copy else "changed"}


def test_project_add_of_one_slice_adds_its_series_only(tmp_path, export):
    with Project.init(tmp_path / "proj") as project:
        report = project.add_images([sorted(export.glob(f"CT.{SMALL}.*"))[2]])
        assert [c for c, _ in report.added] == [SMALL]
        assert [c.shape_zyx for c in project.cases()] == [(4, 20, 24)]


def test_a_single_series_folder_is_still_one_folder_case(tmp_path):
    write_series(tmp_path / "s0001", ct_hu((5, 20, 24)), series_uid=BIG, description="ignored for one series")
    with Project.init(tmp_path / "proj") as project:
        report = project.add_images([tmp_path])
        assert [c for c, _ in report.added] == ["s0001"] and not report.series
        assert project.case("s0001").image_path == (tmp_path / "s0001").resolve()


def test_project_add_of_a_path_that_yields_nothing_is_exit_2(tmp_path, capsys):
    proj = tmp_path / "proj"
    assert main(["project", "init", str(proj)]) == 0
    empty = tmp_path / "scans"
    (empty / "sub").mkdir(parents=True)
    (empty / "sub" / "readme.txt").write_text("no images")
    capsys.readouterr()
    assert main(["project", "add", str(proj), str(empty)]) == 2
    out, err = capsys.readouterr()
    assert f"skipped  {empty}: holds no CT image" in out and "no DICOM series (looked in 2 folder(s)" in out
    assert err.startswith("error: 1 of the paths given could not be added") and err.count("\n") == 1


def test_napari_reader_opens_the_largest_series_and_says_so(export, caplog):
    from napari_dinomix._reader import SERIES_KEY, read_one

    with caplog.at_level(logging.INFO):
        data, kwargs, kind = read_one(export)
    assert kind == "image" and data.shape == (6, 20, 24)
    meta = kwargs["metadata"][SERIES_KEY]
    assert meta["series_uid"] == BIG and meta["num_series"] == 2 and "largest of 2 series" in meta["choice"]
    assert f"opened DICOM series {BIG}" in caplog.text


def test_napari_reader_names_the_layer_after_the_series_and_opens_a_chosen_one(export, tmp_path, caplog):
    from napari_dinomix._reader import read_layers

    (data, kwargs, _), = read_layers(str(export))
    assert kwargs["name"] == "export [ARTERIAL 1mm]"
    (data, kwargs, _), = read_layers(str(sorted(export.glob(f"CT.{SMALL}.*"))[0]))  # a slice of the other series
    assert data.shape == (4, 20, 24) and kwargs["name"] == f"export [{SMALL}]"
    nested = tmp_path / "PAT"
    write_series(nested / "S1", ct_hu((3, 20, 24)), series_uid="1.2.3.71")
    write_series(nested / "S2", ct_hu((5, 20, 24)), series_uid="1.2.3.72")
    with caplog.at_level(logging.INFO):
        (data, kwargs, _), = read_layers(str(nested))
    assert data.shape == (5, 20, 24) and "opening S2 (5 files), the largest series folder; others: S1" in caplog.text
