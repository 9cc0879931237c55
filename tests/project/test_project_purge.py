"""Purge deletes only what was removed, and never anything outside the project."""

from __future__ import annotations

from _project_fakes import organ_labels, write_image

from dinomix_core.project import Project


def test_purge_deletes_removed_revisions_and_cases_but_keeps_referenced_images(project, images_dir):
    keep = project.save_labels("liver_000", organ_labels(1))
    dropped = project.save_labels("liver_000", organ_labels(2))
    later = project.save_labels("liver_000", organ_labels(3))
    gone_case_rev = project.save_labels("liver_001", organ_labels(4))
    run = project.start_run({}, "dinomix", "random")
    pred = project.add_prediction(run, "liver_001", organ_labels(5), 0.3)
    project.remove_revision(dropped.id)
    project.remove_case("liver_001")

    preview = project.purge(dry_run=True)
    assert preview.cases == ["liver_001"] and dropped.path.exists()

    report = project.purge()
    assert report.cases == ["liver_001"]
    assert sorted(report.revisions) == sorted([dropped.id, gone_case_rev.id, pred])
    assert not dropped.path.exists() and not gone_case_rev.path.exists()
    assert keep.path.exists() and later.path.exists()
    assert project.revision(later.id).parent_id == keep.id  # lineage skips the purged revision
    assert (images_dir / "liver_001_0000.nii.gz").exists()  # the user's image, referenced in place
    assert images_dir / "liver_001_0000.nii.gz" in report.kept_outside
    assert project.predictions(run) == []
    assert [c.id for c in project.cases(include_removed=True)] == ["liver_000", "liver_002"]


def test_purge_never_deletes_a_path_outside_the_project_even_if_a_row_points_there(project, tmp_path):
    rev = project.save_labels("liver_002", organ_labels())
    precious = tmp_path / "precious.nii.gz"
    precious.write_bytes(b"someone else's file")
    escape = project.root / "labels" / ".." / ".." / "precious.nii.gz"
    with project.write() as conn:  # a damaged or hand-edited database
        conn.execute("UPDATE revisions SET file = ? WHERE id = ?", (str(precious), rev.id))
    sneaky = project.save_labels("liver_002", organ_labels(1))
    with project.write() as conn:
        conn.execute("UPDATE revisions SET file = ? WHERE id = ?", ("labels/../../precious.nii.gz", sneaky.id))
    project.remove_case("liver_002")
    report = project.purge()
    assert precious.exists() and precious.read_bytes() == b"someone else's file"
    assert precious in report.kept_outside and escape.resolve() == precious


def test_purge_deletes_copied_images_inside_the_project(project, tmp_path):
    src = write_image(tmp_path / "ext" / "kidney_1_0000.nii.gz", seed=11)
    case_id = project.add_images([src], copy=True).added[0][0]
    copy = project.case(case_id).image_path
    project.remove_case(case_id)
    project.purge()
    assert not copy.exists() and src.exists()


def test_tidy_moves_stray_files_aside_and_keeps_them(project):
    stray = project.root / "labels" / "liver_000" / "dropped_in_by_hand.nii.gz"
    stray.parent.mkdir(parents=True, exist_ok=True)
    stray.write_bytes(b"not ours, keep it")
    with Project.open(project.root) as again:
        moved = [p for p in again.quarantine_dir.rglob("*") if p.is_file()]
    assert not stray.exists()
    assert [p.read_bytes() for p in moved] == [b"not ours, keep it"]
