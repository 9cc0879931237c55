"""Shared fixtures of the napari plugin tests: no writes in the user's home, small CT volumes."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from _plugin_data import dispose, oblique_direction

from dinomix_core.io import Volume


@pytest.fixture(autouse=True)
def sample_dir(tmp_path, monkeypatch):
    """The sample project goes to a temporary folder, never to the user's data folder."""
    folder = tmp_path / "sample-project"
    monkeypatch.setenv("DINOMIX_SAMPLE_DIR", str(folder))
    return folder


@pytest.fixture
def oblique_ct() -> Volume:
    """A 6x10x12 int16 CT (HU) on a rotated, flipped, anisotropic grid."""
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 1500, size=(6, 10, 12)).astype(np.int16)
    return Volume(array, (2.5, 0.8, 0.6), (-12.5, 30.25, 100.0), oblique_direction())


@pytest.fixture
def oblique_labels(oblique_ct) -> Volume:
    """Boxes of classes 1, 6 and 13 (BTCV-13 spleen, liver, left adrenal) on ``oblique_ct``'s grid."""
    labels = np.zeros(oblique_ct.shape, dtype=np.uint8)
    labels[1:4, 2:5, 2:6] = 1
    labels[2:5, 5:9, 6:11] = 6
    labels[4:6, 0:3, 0:3] = 13
    return oblique_ct.with_array(labels, modality="SEG")


@pytest.fixture(scope="session")
def sample_template(tmp_path_factory):
    """The sample project, made once; ``widget`` copies it for each test."""
    from dinomix_core.project.sample import create_sample_project

    return create_sample_project(tmp_path_factory.mktemp("widget") / "sample")


@pytest.fixture
def widget(make_napari_viewer_proxy, qtbot, tmp_path, sample_template):
    """(viewer, DINO-Mix dock widget, project root) on a fresh copy of the sample project."""
    from napari_dinomix._widget import DinomixWidget

    root = tmp_path / "sample"
    shutil.copytree(sample_template, root)
    viewer = make_napari_viewer_proxy()
    w = DinomixWidget(viewer, autosave_delay_ms=100)
    qtbot.addWidget(w)
    assert w.session.open_project(root)
    yield viewer, w, root
    dispose(w, qtbot)
