"""The app's per-user settings file: what survives a restart, and what a broken file costs."""

from __future__ import annotations

import json

import pytest

from dinomix_app.settings import AppSettings
from dinomix_core.project import Project


@pytest.fixture
def config(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOMIX_CONFIG_DIR", str(tmp_path / "config"))
    return tmp_path / "config"


def test_settings_round_trip_with_the_window_layout_and_last_cases(config, tmp_path):
    settings = AppSettings(device="cpu", worker_threads=2, window_geometry="AdnQywAD", window_state="AAAA/w==")
    settings.add_recent(tmp_path / "p")
    settings.remember_case(tmp_path / "p", "case_007")
    settings.save()
    again = AppSettings.load()
    assert again == settings
    assert again.case_to_reopen(tmp_path / "p") == "case_007"
    assert again.case_to_reopen(tmp_path / "other") is None


def test_a_hand_edited_file_keeps_every_valid_value(config):
    config.mkdir()
    (config / "settings.json").write_text(json.dumps({
        "device": "cpu", "worker_threads": "four", "recent_projects": ["/data/p", 3],
        "last_case": {"/data/p": "c1", "/data/q": 7}, "window_geometry": 12, "unknown_key": True}))
    settings = AppSettings.load()
    assert settings.device == "cpu"
    assert settings.worker_threads == 0  # the wrong type falls back to its default
    assert settings.recent_projects == ["/data/p"]
    assert settings.last_case == {"/data/p": "c1"}
    assert settings.window_geometry == ""
    assert (config / "settings.json").exists(), "a readable file is not moved aside"


def test_an_unreadable_file_is_kept_aside_and_the_defaults_used(config):
    config.mkdir()
    (config / "settings.json").write_text("{not json")
    assert AppSettings.load() == AppSettings()
    assert (config / "settings.json.unreadable").read_text() == "{not json"


def test_the_most_recent_project_that_still_exists_is_the_one_reopened(config, tmp_path):
    Project.init(tmp_path / "kept").close()
    settings = AppSettings()
    settings.add_recent(tmp_path / "kept")
    settings.add_recent(tmp_path / "deleted since")  # the most recent, but its folder is gone
    assert settings.project_to_reopen() == (tmp_path / "kept").resolve()
    assert AppSettings().project_to_reopen() is None


def test_last_cases_are_kept_only_for_projects_in_the_recent_list(config, tmp_path):
    settings = AppSettings()
    for name in ("a", "b"):
        settings.add_recent(tmp_path / name)
        settings.remember_case(tmp_path / name, f"{name}_case")
    settings.recent_projects.remove(str((tmp_path / "a").resolve()))  # fell off the list
    settings.remember_case(tmp_path / "b", "b_other")
    assert settings.last_case == {str((tmp_path / "b").resolve()): "b_other"}
    settings.remember_case(tmp_path / "b", None)
    assert settings.last_case == {}
