"""The sample project: phantom CTs copied in, ground truth for the first cases, built once."""

from __future__ import annotations

import numpy as np
import pytest

from dinomix_core.data.phantom import generate_case, phantom_labelmap
from dinomix_core.project import Project, ProjectError
from dinomix_core.project import sample as sample_mod
from dinomix_core.project.sample import create_sample_project, default_sample_root


def test_sample_project_has_phantom_cases_and_labeled_ones(tmp_path):
    root = create_sample_project(tmp_path / "sample", cases=3, labeled=1)
    assert root == (tmp_path / "sample").resolve()
    assert [p.name for p in tmp_path.iterdir()] == ["sample"]  # the build folder is gone
    with Project.open(root) as project:
        assert project.label_map.names == phantom_labelmap().names
        cases = project.cases()
        assert [c.id for c in cases] == ["phantom_000", "phantom_001", "phantom_002"]
        for case in cases:
            assert case.stored == "copy" and case.image_path.parent == root / "images"
        image, truth = generate_case(0, seed=0, size="small")
        np.testing.assert_array_equal(project.load_image("phantom_000").array, image.array)
        revision = project.label_revision("phantom_000")
        assert revision.author == "sample" and revision.final and revision.kind == "human"
        np.testing.assert_array_equal(project.load_labels(revision.id).array, truth.array)
        assert project.label_revision("phantom_001") is None
        assert project.label_revision("phantom_002") is None


def test_second_call_returns_the_edited_project_untouched(tmp_path):
    root = create_sample_project(tmp_path / "sample", cases=2, labeled=1)
    with Project.open(root) as project:
        project.remove_case("phantom_001")
        edited = np.zeros(project.case("phantom_000").shape_zyx, np.uint8)
        project.save_labels("phantom_000", edited, author="me")
    assert create_sample_project(tmp_path / "sample", cases=2, labeled=1) == root
    with Project.open(root) as project:
        assert [c.id for c in project.cases()] == ["phantom_000"]
        assert project.current_revision("phantom_000").author == "me"


def test_interrupted_build_leaves_nothing_and_the_next_call_builds(tmp_path, monkeypatch):
    real = sample_mod.Project.save_labels

    def crash(self, *args, **kwargs):
        raise KeyboardInterrupt  # the user quits while the sample is being made

    monkeypatch.setattr(sample_mod.Project, "save_labels", crash)
    with pytest.raises(KeyboardInterrupt):
        create_sample_project(tmp_path / "sample", cases=2, labeled=1)
    assert list(tmp_path.iterdir()) == []  # no half project, no build folder
    monkeypatch.setattr(sample_mod.Project, "save_labels", real)
    root = create_sample_project(tmp_path / "sample", cases=2, labeled=1)
    with Project.open(root) as project:
        assert len(project.cases()) == 2 and project.label_revision("phantom_000") is not None


def test_project_survives_the_rename_into_place(tmp_path):
    root = create_sample_project(tmp_path / "sample", cases=1, labeled=1)
    with Project.open(root) as project:  # paths are stored relative to the project, so they still resolve
        assert project.verify_revisions() == []
        assert project.image_state("phantom_000", verify=True) == "ok"


def test_a_folder_with_other_files_is_refused(tmp_path):
    (tmp_path / "sample").mkdir()
    (tmp_path / "sample" / "thesis.docx").write_text("mine")
    with pytest.raises(ProjectError, match="not a DINO-Mix project") as info:
        create_sample_project(tmp_path / "sample")
    assert "DINOMIX_SAMPLE_DIR" in info.value.fix
    assert [p.name for p in (tmp_path / "sample").iterdir()] == ["thesis.docx"]


def test_an_empty_folder_is_used(tmp_path):
    (tmp_path / "sample").mkdir()
    root = create_sample_project(tmp_path / "sample", cases=1, labeled=0)
    with Project.open(root) as project:
        assert [c.id for c in project.cases()] == ["phantom_000"]
        assert project.label_revision("phantom_000") is None


def test_default_root_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOMIX_SAMPLE_DIR", str(tmp_path / "env-sample"))
    assert default_sample_root() == tmp_path / "env-sample"
    assert create_sample_project(cases=1, labeled=1) == (tmp_path / "env-sample").resolve()
    monkeypatch.delenv("DINOMIX_SAMPLE_DIR")
    assert default_sample_root().name == "sample-project"
    assert "dinomix" in str(default_sample_root())


def test_bad_counts_are_refused(tmp_path):
    with pytest.raises(ValueError, match="labeled"):
        create_sample_project(tmp_path / "s", cases=2, labeled=3)
