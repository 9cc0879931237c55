"""Read-only commands change nothing; a lost or empty project.sqlite never costs committed work;
SQLite failures name their real cause (issue 13, data loss items 3 and 6).

Each CLI case asserts exit code 2, one line on stderr (no traceback) naming the file, and a
byte-for-byte unchanged project folder.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import sqlite3
import subprocess
from pathlib import Path

import pytest
from _project_fakes import organ_labels, write_labels_file

from dinomix_core.cli.main import main
from dinomix_core.io import LabelMap
from dinomix_core.project import Project
from dinomix_core.project.errors import ProjectReadOnlyError

SIDECARS = ("project.sqlite-wal", "project.sqlite-shm")  # SQLite's own transient files


def snapshot(root: Path) -> dict[str, str]:
    """Every file and folder under ``root`` (SQLite's -wal/-shm aside) with its content hash."""
    out = {}
    for path in sorted(root.rglob("*")):
        rel = path.relative_to(root).as_posix()
        if path.name in SIDECARS:
            continue
        out[rel] = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
    return out


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    code = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def assert_one_line_error(code: int, err: str, *needles: str) -> None:
    assert code == 2, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), err
    assert "Traceback" not in err
    for needle in needles:
        assert needle in lines[0], (needle, lines[0])


@pytest.fixture
def labeled(project) -> Path:
    """A closed project with two labeled cases and one unlabeled; returns its folder."""
    project.save_labels("liver_000", organ_labels(1), final=True)
    project.save_labels("liver_001", organ_labels(2), final=True)
    project.save_labels("liver_001", organ_labels(3), final=False)
    root = project.root
    project.close()
    return root


READ_ONLY = [
    ("project", "status", "{root}"),
    ("project", "status", "{root}", "--verify", "--json"),
    ("project", "revisions", "{root}", "liver_001", "--all"),
    ("project", "next", "{root}"),
    ("project", "classes", "{root}"),
]


@pytest.mark.parametrize("argv", READ_ONLY, ids=lambda a: " ".join(a[1:3]))
def test_read_only_commands_create_and_change_nothing(labeled, capsys, argv):
    shutil.rmtree(labeled / "cache")  # a read-only command must not even recreate a folder
    before = snapshot(labeled)
    code, out, err = run_cli(capsys, *(a.format(root=labeled) for a in argv))
    assert code == 0, err
    assert out.strip()
    assert snapshot(labeled) == before


def test_export_reads_the_project_without_changing_it(labeled, tmp_path, capsys):
    before = snapshot(labeled)
    code, out, err = run_cli(capsys, "project", "export", labeled, tmp_path / "export", "--format", "nnunet")
    assert code == 0, err
    assert sorted(p.name for p in (tmp_path / "export" / "labelsTr").iterdir()) == ["liver_000.nii.gz", "liver_001.nii.gz"]
    assert snapshot(labeled) == before


def test_a_read_only_project_refuses_writes(labeled):
    with Project.open(labeled, readonly=True) as project:
        assert project.status()["counts"]["labeled"] == 2
        with pytest.raises(ProjectReadOnlyError, match="read-only"):
            project.save_labels("liver_002", organ_labels(4))
        with pytest.raises(ProjectReadOnlyError):
            project.set_meta("x", "y")
    assert not any((labeled / "labels" / "liver_002").glob("*")) if (labeled / "labels" / "liver_002").exists() else True


def _lose_index(root: Path, how: str) -> None:
    for name in SIDECARS:
        (root / name).unlink(missing_ok=True)
    db = root / "project.sqlite"
    if how == "empty":
        db.write_bytes(b"")
    elif how == "missing":
        db.unlink()
    else:  # a valid SQLite file with no tables (what a fresh connect would create)
        db.unlink()
        sqlite3.connect(db).close()
        assert db.exists()


EVERY_OPEN = [
    ("project", "status", "{root}"),
    ("project", "revisions", "{root}", "liver_000"),
    ("project", "next", "{root}"),
    ("project", "export", "{root}", "{out}", "--format", "nnunet"),
    ("project", "label", "{root}", "liver_002", "{labels}"),
    ("project", "add", "{root}", "{scans}"),
    ("project", "purge", "{root}"),
]


@pytest.mark.parametrize("how", ["empty", "missing", "no-tables"])
@pytest.mark.parametrize("argv", EVERY_OPEN, ids=lambda a: a[1])
def test_a_lost_index_is_refused_and_committed_labels_stay(labeled, tmp_path, images_dir, capsys, argv, how):
    _lose_index(labeled, how)
    before = snapshot(labeled)
    label_files = sorted((labeled / "labels").rglob("*.nii.gz"))
    assert len(label_files) == 3
    labels = write_labels_file(tmp_path / "new_labels.nii.gz", organ_labels(5))
    args = [a.format(root=labeled, out=tmp_path / "out", labels=labels, scans=images_dir) for a in argv]
    code, _, err = run_cli(capsys, *args)
    assert_one_line_error(code, err, str(labeled / "project.sqlite"), "committed work", "labels/liver_00",
                          "Nothing was changed")
    assert snapshot(labeled) == before
    assert sorted((labeled / "labels").rglob("*.nii.gz")) == label_files
    assert not any((labeled / "quarantine").iterdir())
    assert not (tmp_path / "out").exists()


def test_init_over_a_lost_index_is_refused_too(labeled, capsys):
    _lose_index(labeled, "missing")
    before = snapshot(labeled)
    code, _, err = run_cli(capsys, "project", "init", labeled)
    assert code == 2 and "Traceback" not in err and "labels" in err
    assert snapshot(labeled) == before


def test_an_empty_database_without_work_is_still_initialised_on_a_write_open(tmp_path):
    """An init killed before its tables existed: nothing to lose, so a writing open finishes it."""
    root = tmp_path / "fresh"
    Project.init(root).close()
    _lose_index(root, "empty")
    with Project.open(root) as project:
        assert project.cases() == []


# -- SQLite failures: say what is really wrong (item 6) -------------------------------------

class _FailingConnection:
    """Wraps a real connection; every statement fails with ``error`` (as on a full disk)."""

    def __init__(self, real, error):
        self._real, self._error = real, error

    def execute(self, *args, **kwargs):
        raise self._error

    def __getattr__(self, name):
        return getattr(self._real, name)


FAILURES = [
    (sqlite3.OperationalError("database or disk is full"), ["disk full at", "project.sqlite", "not damaged"]),
    (sqlite3.OperationalError("disk I/O error"), ["I/O error", "probably intact"]),
    (sqlite3.OperationalError("attempt to write a readonly database"), ["read-only", "not damaged"]),
    (sqlite3.OperationalError("unable to open database file"), ["cannot be opened"]),
    (sqlite3.OperationalError("database is locked"), ["locked"]),
]


@pytest.mark.parametrize("error,needles", FAILURES, ids=lambda v: str(v)[:20] if isinstance(v, Exception) else "")
def test_sqlite_failures_name_their_real_cause(labeled, capsys, monkeypatch, error, needles):
    real_connect = sqlite3.connect
    monkeypatch.setattr(sqlite3, "connect", lambda *a, **k: _FailingConnection(real_connect(*a, **k), error))
    before = snapshot(labeled)
    code, _, err = run_cli(capsys, "project", "status", labeled)
    assert_one_line_error(code, err, *needles)
    assert "Restore it from a backup" not in err
    assert snapshot(labeled) == before


def test_only_a_really_damaged_database_suggests_a_backup(labeled, capsys):
    db = labeled / "project.sqlite"
    for name in SIDECARS:
        (labeled / name).unlink(missing_ok=True)
    db.write_bytes(b"this is not an SQLite database, just text " * 200)
    code, _, err = run_cli(capsys, "project", "status", labeled)
    assert_one_line_error(code, err, str(db), "not a readable project database", "backup")


def fill_disk(path: Path) -> None:
    """Write zeros until the file system has not one byte left."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        for block in (1 << 16, 4096, 1):
            try:
                while True:
                    os.write(fd, b"\0" * block)
            except OSError:
                pass
    finally:
        os.close(fd)


def test_status_on_a_really_full_disk(tmp_path, images_dir, capsys):
    """A 1 MiB tmpfs filled to the last byte: status still reads; a save says "disk full", changes nothing."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=1m", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("cannot mount a small tmpfs here (needs root)")
    try:
        with Project.init(mnt / "proj", label_map=LabelMap.preset("btcv13")) as project:
            project.add_images([images_dir / "liver_000_0000.nii.gz"])
            project.save_labels("liver_000", organ_labels(1))
        fill_disk(mnt / "filler")
        before = snapshot(mnt / "proj")
        code, out, err = run_cli(capsys, "project", "status", mnt / "proj")
        assert code == 0, err  # reading needs no space: the database is read as it is on disk
        assert "liver_000" in out
        labels = write_labels_file(tmp_path / "edit.nii.gz", organ_labels(7))
        code, _, err = run_cli(capsys, "project", "label", mnt / "proj", "liver_000", labels)
        assert_one_line_error(code, err, "disk full")
        assert "Restore it from a backup" not in err
        assert snapshot(mnt / "proj") == before
    finally:
        subprocess.run(["umount", str(mnt)], capture_output=True)
