"""Label revisions: saving, refusing bad labels, drafts, model predictions, restore."""

from __future__ import annotations

import numpy as np
import pytest
from _project_fakes import SPACING_XYZ, organ_labels, write_labels_file

from dinomix_core.io import GeometryMismatchError, LabelValueError, content_hash
from dinomix_core.project import ProjectError, RevisionNotFoundError


def test_saved_revision_keeps_voxels_geometry_and_hash(project):
    labels = organ_labels(1)
    rev = project.save_labels("liver_000", labels, author="dr_a", note="first pass")
    assert (rev.kind, rev.author, rev.final, rev.note, rev.parent_id) == ("human", "dr_a", True, "first pass", None)
    assert rev.path.parent == project.root / "labels" / "liver_000"
    assert rev.file_hash == content_hash(rev.path)
    loaded = project.load_labels(rev.id)
    assert np.array_equal(loaded.array, labels)
    assert loaded.spacing_zyx == project.case("liver_000").spacing_zyx


def test_label_file_import_checks_geometry_and_names_the_difference(project, tmp_path):
    bad = write_labels_file(tmp_path / "bad.nii.gz", organ_labels(), spacing_xyz=(1.5, 1.5, 2.0))
    with pytest.raises(GeometryMismatchError, match=r"spacing.*liver_000|liver_000.*spacing"):
        project.save_labels("liver_000", bad)
    with pytest.raises(GeometryMismatchError, match="shape"):
        project.save_labels("liver_000", np.zeros((8, 16, 15), np.uint8))
    assert project.revisions("liver_000") == []


def test_label_values_outside_the_class_map_are_refused(project, tmp_path):
    labels = organ_labels()
    labels[0, 0, 0] = 14  # BTCV-13 stops at 13
    with pytest.raises(LabelValueError, match="14"):
        project.save_labels("liver_000", labels)
    with pytest.raises(LabelValueError, match="14"):
        project.save_labels("liver_000", write_labels_file(tmp_path / "l.nii.gz", labels))
    with pytest.raises(LabelValueError, match="non-integer|fraction"):
        project.save_labels("liver_000", organ_labels().astype(np.float32) * 0.5)
    assert project.revisions("liver_000") == []


def test_draft_does_not_label_a_case_until_marked_final(project):
    draft = project.save_labels("liver_000", organ_labels(), final=False)
    assert project.label_revision("liver_000") is None
    assert {c["id"]: c["status"] for c in project.status()["cases"]}["liver_000"] == "draft"
    project.set_final(draft.id)
    assert project.label_revision("liver_000").id == draft.id


def test_model_prediction_never_replaces_a_human_revision(project):
    human = project.save_labels("liver_000", organ_labels(1))
    before = human.path.read_bytes()
    run = project.start_run({}, "dinomix", "random")
    pred_id = project.add_prediction(run, "liver_000", organ_labels(2), 0.4)
    pred = project.revision(pred_id)
    assert (pred.kind, pred.final, pred.parent_id, pred.run_id) == ("model", False, human.id, run)
    assert pred.path.parent == project.root / "predictions" / f"run-{run:04d}"
    assert human.path.read_bytes() == before
    assert project.label_revision("liver_000").id == human.id  # training still uses the human label
    assert project.current_revision("liver_000").id == pred_id  # a viewer shows the newest
    with pytest.raises(ProjectError, match="only human revisions can be final"):
        project.set_final(pred_id)


def test_correction_is_a_new_revision_and_old_ones_can_be_restored(project):
    first = project.save_labels("liver_000", organ_labels(1))
    second = project.save_labels("liver_000", organ_labels(2))
    assert second.parent_id == first.id and second.path != first.path
    restored = project.restore_revision("liver_000", first.id, author="dr_b")
    assert restored.id > second.id and restored.parent_id == second.id
    assert restored.voxel_hash == first.voxel_hash and restored.author == "dr_b"
    assert "restored from revision" in restored.note
    assert np.array_equal(project.load_labels(project.label_revision("liver_000").id).array, organ_labels(1))
    assert [r.id for r in project.revisions("liver_000")] == [first.id, second.id, restored.id]


def test_removed_revision_is_hidden_recoverable_and_restorable(project):
    first = project.save_labels("liver_001", organ_labels(1))
    second = project.save_labels("liver_001", organ_labels(2))
    project.remove_revision(second.id)
    assert project.label_revision("liver_001").id == first.id
    assert [r.id for r in project.revisions("liver_001")] == [first.id]
    assert [r.removed for r in project.revisions("liver_001", include_removed=True)] == [False, True]
    project.undo_remove_revision(second.id)
    assert project.label_revision("liver_001").id == second.id


def test_restore_refuses_a_revision_of_another_case_or_an_altered_file(project):
    rev = project.save_labels("liver_000", organ_labels(1))
    with pytest.raises(RevisionNotFoundError):
        project.restore_revision("liver_001", rev.id)
    rev.path.write_bytes(rev.path.read_bytes()[:-10])
    with pytest.raises(ProjectError, match="modified outside"):
        project.restore_revision("liver_000", rev.id)
    assert project.verify_revisions() == [(rev.id, "liver_000", project.verify_revisions()[0][2])]


def test_unless_identical_makes_reimport_idempotent(project):
    first = project.save_labels("liver_002", organ_labels(3))
    again = project.save_labels("liver_002", organ_labels(3).astype(np.int32), unless_identical=True)
    assert again.id == first.id
    assert len(project.revisions("liver_002")) == 1


def test_saving_to_a_removed_case_is_refused(project):
    project.remove_case("liver_002")
    with pytest.raises(ProjectError, match="removed"):
        project.save_labels("liver_002", organ_labels())


def test_geometry_tolerates_float_noise_in_spacing(project, tmp_path):
    noisy = tuple(s + 1e-6 for s in SPACING_XYZ)
    rev = project.save_labels("liver_000", write_labels_file(tmp_path / "n.nii.gz", organ_labels(), spacing_xyz=noisy))
    assert project.load_labels(rev.id).spacing_zyx == project.case("liver_000").spacing_zyx


def test_voxel_hash_is_the_stored_definition_for_any_dtype_layout_and_size(monkeypatch):
    """SHA-256 of the shape and the values as one uint16 copy, however the map is fed in."""
    import hashlib

    from dinomix_core.project import revisions

    def reference(array):
        h = hashlib.sha256(repr(tuple(array.shape)).encode())
        h.update(np.ascontiguousarray(array, dtype=np.uint16).tobytes())
        return h.hexdigest()

    rng = np.random.default_rng(0)
    labels = rng.integers(0, 14, size=(9, 31, 17)).astype(np.uint8)
    monkeypatch.setattr(revisions, "_HASH_SLAB", 1000)  # several slabs, the last one short
    for array in (labels, labels.astype(np.int32), labels[:, ::2, :], np.transpose(labels, (2, 1, 0)),
                  np.zeros((0, 4, 4), np.uint8)):
        assert revisions.voxel_hash(array) == reference(array)
    assert revisions.voxel_hash(labels) != revisions.voxel_hash(labels.reshape(31, 9, 17))  # the shape counts
