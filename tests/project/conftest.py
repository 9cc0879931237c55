"""Fixtures for the project-store tests: tiny images on disk and a project holding them."""

from __future__ import annotations

from pathlib import Path

import pytest
from _project_fakes import write_image

from dinomix_core.io import LabelMap
from dinomix_core.project import Project


@pytest.fixture
def images_dir(tmp_path) -> Path:
    """Three nnU-Net-named images: liver_000_0000.nii.gz ... liver_002_0000.nii.gz."""
    folder = tmp_path / "scans"
    for i in range(3):
        write_image(folder / f"liver_{i:03d}_0000.nii.gz", seed=i)
    return folder


@pytest.fixture
def project(tmp_path, images_dir):
    """A BTCV-13 project holding the three images of ``images_dir``, closed after the test."""
    proj = Project.init(tmp_path / "proj", label_map=LabelMap.preset("btcv13"))
    report = proj.add_images([images_dir])
    assert [c for c, _ in report.added] == ["liver_000", "liver_001", "liver_002"]
    yield proj
    proj.close()
