"""Training runs, predictions and the labeled/unlabeled split the trainer receives."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from _project_fakes import organ_labels

from dinomix_core.project import LabeledCase, Project, ProjectError, UnlabeledCase


def test_training_split_uses_final_human_labels_only(project):
    final = project.save_labels("liver_000", organ_labels(1))
    project.save_labels("liver_001", organ_labels(2), final=False)  # a draft stays unlabeled
    run = project.start_run({"steps": 5}, "dinomix", "random")
    project.add_prediction(run, "liver_002", organ_labels(3), 0.2)  # a prediction is not a label
    labeled, unlabeled = project.training_split()
    assert labeled == [LabeledCase("liver_000", project.case("liver_000").image_path, final.path)]
    assert unlabeled == [UnlabeledCase(c, project.case(c).image_path) for c in ("liver_001", "liver_002")]
    case_id, image, label = labeled[0]  # plain tuples for the trainer
    assert label.exists() and image.exists()


def test_run_lifecycle_records_config_metrics_and_checkpoint(project):
    run_id = project.start_run({"lr": 0.03, "crop": [8, 16, 16]}, "dinomix", "vit_small_patch16_dinov3",
                               teacher_hash="abc123")
    run_dir = project.runs_dir(run_id)
    assert run_dir == project.root / "runs" / f"run-{run_id:04d}" and run_dir.is_dir()
    assert project.run(run_id).status == "running"
    ckpt = run_dir / "student.pt"
    ckpt.write_bytes(b"weights")
    metrics = {"dice": {"spleen": 0.8, "liver": 0.93}, "mean_dice": 0.865}
    run = project.finish_run(run_id, "completed", metrics, ckpt)
    assert (run.status, run.metrics, run.checkpoint, run.teacher_hash) == ("completed", metrics, ckpt, "abc123")
    assert run.config == {"lr": 0.03, "crop": [8, 16, 16]}
    assert run.finished_at >= run.started_at
    status = project.status()
    assert status["latest_run"]["metrics"]["dice"]["liver"] == 0.93
    with pytest.raises(ProjectError, match="already finished"):
        project.finish_run(run_id, "failed")


def test_finish_run_refuses_a_missing_checkpoint_and_unknown_status(project):
    run_id = project.start_run({}, "supervised", "random")
    with pytest.raises(ProjectError, match="does not exist"):
        project.finish_run(run_id, "completed", {}, project.runs_dir(run_id) / "nope.pt")
    with pytest.raises(ValueError, match="status"):
        project.finish_run(run_id, "done")


def test_run_of_a_dead_process_reads_as_interrupted(tmp_path, project):
    code = ("import sys; from dinomix_core.project import Project\n"
            "p = Project.open(sys.argv[1]); print(p.start_run({}, 'dinomix', 'random')); p.close()\n")
    out = subprocess.run([sys.executable, "-c", code, str(project.root)], capture_output=True, text=True, check=True)
    run_id = int(out.stdout.strip())
    assert project.run(run_id).status == "interrupted"
    assert project.run(project.start_run({}, "dinomix", "random")).status == "running"  # this process lives


def test_predictions_are_listed_with_their_scores(project):
    run = project.start_run({}, "dinomix", "random")
    rev = project.add_prediction(run, "liver_001", organ_labels(4), 0.75, {6: 0.5, 11: 0.9})
    project.finish_run(run, "completed", {"mean_dice": 0.5})
    preds = project.predictions(run)
    assert preds == [{"case_id": "liver_001", "revision_id": rev, "uncertainty": 0.75,
                      "class_uncertainty": {"6": 0.5, "11": 0.9}}]
    row = project.query_one("SELECT class_uncertainty FROM predictions WHERE revision_id = ?", (rev,))
    assert json.loads(row["class_uncertainty"]) == {"6": 0.5, "11": 0.9}


def test_failed_run_cannot_store_predictions(project):
    run = project.start_run({}, "dinomix", "random")
    project.finish_run(run, "failed")
    with pytest.raises(ProjectError, match="failed"):
        project.add_prediction(run, "liver_001", organ_labels(), 0.1)
    with pytest.raises(ValueError, match="finite"):
        project.add_prediction(project.start_run({}, "dinomix", "random"), "liver_001", organ_labels(), float("nan"))


def test_cache_dir_is_inside_the_project(project):
    assert project.cache_dir == project.root / "cache" and project.cache_dir.is_dir()
    with Project.open(project.root) as again:
        assert again.cache_dir == project.cache_dir


def test_a_cancelled_or_crashed_run_can_be_resumed_and_then_completed(project):
    run_id = project.start_run({}, "dinomix", "random")
    project.finish_run(run_id, "cancelled", {"note": "cancelled"})
    with pytest.raises(ProjectError, match="cancelled"):
        project.add_prediction(run_id, "liver_001", organ_labels(), 0.1)
    resumed = project.resume_run(run_id)
    assert (resumed.status, resumed.finished_at) == ("running", None)
    project.add_prediction(run_id, "liver_001", organ_labels(), 0.1)
    assert project.finish_run(run_id, "completed", {"steps": 4}).status == "completed"
    with pytest.raises(ProjectError, match="already completed"):
        project.resume_run(run_id)


def test_a_run_alive_in_another_process_cannot_be_resumed(project):
    code = ("import sys, time; from dinomix_core.project import Project\n"
            "p = Project.open(sys.argv[1]); print(p.start_run({}, 'dinomix', 'random'), flush=True); time.sleep(30)\n")
    proc = subprocess.Popen([sys.executable, "-c", code, str(project.root)], stdout=subprocess.PIPE, text=True)
    try:
        run_id = int(proc.stdout.readline())
        with pytest.raises(ProjectError, match="still running"):
            project.resume_run(run_id)
    finally:
        proc.kill()
        proc.wait()
    assert project.resume_run(run_id).status == "running"  # its process is gone: resumable
