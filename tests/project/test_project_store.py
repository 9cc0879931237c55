"""Opening, creating and migrating a project; the class map."""

from __future__ import annotations

import sqlite3

import pytest

from dinomix_core.io import LabelMap
from dinomix_core.project import (SCHEMA_VERSION, ClassMapError, NotAProjectError, Project, ProjectError,
                                  ProjectVersionError)
from dinomix_core.project import schema
from dinomix_core.project.store import DB_NAME, SUBDIRS


def test_init_creates_folder_layout_and_wal_database(tmp_path):
    with Project.init(tmp_path / "p", label_map=LabelMap.preset("btcv13")) as proj:
        for sub in SUBDIRS:
            assert (proj.root / sub).is_dir()
        assert proj.query_one("PRAGMA journal_mode")["journal_mode"] == "wal"
        assert proj.query_one("PRAGMA foreign_keys")["foreign_keys"] == 1
        assert proj.label_map.names[6] == "liver"
        assert proj.label_map.num_classes == 14
    with Project.open(tmp_path / "p") as again:
        assert again.label_map.names == LabelMap.preset("btcv13").names
        assert again.label_map.colors == LabelMap.preset("btcv13").colors


def test_init_refuses_an_existing_project(tmp_path):
    Project.init(tmp_path / "p").close()
    with pytest.raises(ProjectError, match="already a DINO-Mix project"):
        Project.init(tmp_path / "p")


def test_init_refuses_a_folder_whose_labels_dir_holds_someone_elses_files(tmp_path):
    (tmp_path / "p" / "labels").mkdir(parents=True)
    (tmp_path / "p" / "labels" / "mine.nii.gz").write_bytes(b"user data")
    with pytest.raises(ProjectError, match="empty folder"):
        Project.init(tmp_path / "p")
    assert (tmp_path / "p" / "labels" / "mine.nii.gz").read_bytes() == b"user data"


def test_open_a_folder_that_is_not_a_project_says_how_to_create_one(tmp_path):
    with pytest.raises(NotAProjectError, match="dinomix project init"):
        Project.open(tmp_path)


def test_project_from_a_newer_schema_is_refused_untouched(tmp_path):
    Project.init(tmp_path / "p").close()
    db = tmp_path / "p" / DB_NAME
    with sqlite3.connect(db) as conn:
        conn.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    before = db.read_bytes()
    with pytest.raises(ProjectVersionError, match="upgrade DINO-Mix Studio"):
        Project.open(tmp_path / "p")
    assert db.read_bytes() == before


def test_corrupt_database_gives_a_clear_error(tmp_path):
    (tmp_path / "p").mkdir()
    (tmp_path / "p" / DB_NAME).write_bytes(b"this is not sqlite" * 100)
    with pytest.raises(ProjectError, match="not a readable project database"):
        Project.open(tmp_path / "p")


def test_older_schema_is_migrated_after_a_backup(tmp_path, monkeypatch):
    with Project.init(tmp_path / "p") as proj:
        proj.set_meta("marker", "kept")
    extra = ["ALTER TABLE cases ADD COLUMN body_part TEXT"]
    monkeypatch.setitem(schema.MIGRATIONS, SCHEMA_VERSION + 1, extra)
    with Project.open(tmp_path / "p") as proj:
        assert proj.query_one("PRAGMA user_version")["user_version"] == SCHEMA_VERSION + 1
        columns = [r["name"] for r in proj.query("PRAGMA table_info(cases)")]
        assert "body_part" in columns
        assert proj.meta("marker") == "kept"
    backup = tmp_path / "p" / f"{DB_NAME}.v{SCHEMA_VERSION}.bak"
    with sqlite3.connect(backup) as conn:
        assert conn.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert conn.execute("SELECT value FROM meta WHERE key = 'marker'").fetchone()[0] == "kept"


def test_failed_migration_leaves_the_database_as_it_was(tmp_path, monkeypatch):
    Project.init(tmp_path / "p").close()
    monkeypatch.setitem(schema.MIGRATIONS, SCHEMA_VERSION + 1,
                        ["ALTER TABLE cases ADD COLUMN body_part TEXT", "THIS IS NOT SQL"])
    with pytest.raises(ProjectError, match="nothing was changed"):
        Project.open(tmp_path / "p")
    monkeypatch.delitem(schema.MIGRATIONS, SCHEMA_VERSION + 1)
    with Project.open(tmp_path / "p") as proj:
        assert proj.query_one("PRAGMA user_version")["user_version"] == SCHEMA_VERSION
        assert "body_part" not in [r["name"] for r in proj.query("PRAGMA table_info(cases)")]


def test_class_map_can_be_extended_but_not_reordered_once_labels_exist(project):
    project.save_labels("liver_000", project.case("liver_000").grid().array.copy())
    btcv = LabelMap.preset("btcv13")
    project.set_label_map(LabelMap(btcv.names + ["kidney_cyst"]))
    assert project.label_map.names[-1] == "kidney_cyst"
    swapped = list(btcv.names)
    swapped[1], swapped[6] = swapped[6], swapped[1]
    with pytest.raises(ClassMapError, match="renames or reorders"):
        project.set_label_map(LabelMap(swapped))
    assert project.label_map.names[1] == "spleen"


def test_label_import_without_class_map_says_how_to_set_one(tmp_path, images_dir):
    with Project.init(tmp_path / "p") as proj:
        proj.add_images([images_dir])
        with pytest.raises(ClassMapError, match="dinomix project classes"):
            proj.save_labels("liver_000", proj.case("liver_000").grid().array.copy())
