"""The job API the GUI and the CLI drive: run_train_job / run_predict_job on a tiny phantom project.

Jobs run on a worker thread and are cancelled from the test's thread at each stage; every job
ends with one FinishedEvent, records its run in the project, and leaves torch's global state
as it found it.
"""

from __future__ import annotations

import json
import pickle
import queue
import shutil
import threading
from pathlib import Path

import numpy as np
import pytest
import torch

from _engine_settings import TINY_TEACHER
from dinomix_core.data.phantom import generate_case
from dinomix_core.engine.events import (
    CancelToken,
    CheckpointEvent,
    FinishedEvent,
    PredictionStoredEvent,
    StageEvent,
    StepEvent,
    ValidationEvent,
)
from dinomix_core.engine.jobs import (
    CasePrediction,
    PredictJobSpec,
    TrainJobSpec,
    run_predict_job,
    run_train_job,
    torch_state_guard,
)
from dinomix_core.io import LabelMap, read_volume, write_image
from dinomix_core.project import Project

# 16 x 48 x 48 voxels around the phantom's centre: 4 windows of the 16 x 32 x 32 patch.
CROP = (slice(16, 32), slice(24, 72), slice(24, 72))
CONFIG = dict(method="dinomix", steps=4, student_width=4, student_depth=2, patch_size=(16, 32, 32),
              batch_labeled=1, batch_unlabeled=1, token_stride=16, checkpoint_every=0, val_every=2)
STAGES = ("loading", "teacher-tokens", "training", "validating", "predicting")


@pytest.fixture(scope="module")
def scans(tmp_path_factory) -> list[tuple[Path, np.ndarray]]:
    """Five small phantom CTs on disk (case0..case4) with their label arrays."""
    folder = tmp_path_factory.mktemp("scans")
    out = []
    for index in range(5):
        image, labels = generate_case(index, 5, "small")
        image = image.with_array(np.ascontiguousarray(image.array[CROP]))
        out.append((write_image(image, folder / f"case{index}.nii.gz"), np.ascontiguousarray(labels.array[CROP])))
    return out


def _make_project(root: Path, scans, labeled: int, cases: int) -> Path:
    with Project.init(root, label_map=LabelMap.preset("btcv13")) as project:
        for index, (path, labels) in enumerate(scans[:cases]):
            case_id = project.add_image(path).case_id
            if index < labeled:
                project.save_labels(case_id, labels)
    return root


@pytest.fixture(scope="module")
def base(tmp_path_factory, scans) -> Path:
    """3 labeled cases (case0..case2) and 2 unlabeled ones; never trained on (copy it)."""
    return _make_project(tmp_path_factory.mktemp("base") / "proj", scans, labeled=3, cases=5)


def _copy(project: Path, dest: Path) -> Path:
    return Path(shutil.copytree(project, dest / "proj"))


def _spec(project: Path, **changes) -> TrainJobSpec:
    config = {**CONFIG, **changes.pop("config", {})}
    return TrainJobSpec(str(project), config, teacher_weights="random", teacher_overrides=TINY_TEACHER, **changes)


@pytest.fixture(scope="module")
def trained(tmp_path_factory, base):
    """One completed run (on the test's thread) whose listeners include one that always raises."""
    project = _copy(base, tmp_path_factory.mktemp("trained"))
    events = []

    def broken(event):
        raise RuntimeError("a listener's bug")

    finished = run_train_job(_spec(project, predict_first="case4"), [broken, events.append])
    return project, finished, events


def _threaded(job, spec, stop_when, cancel_timeout=120):
    """Run ``job(spec, callbacks, cancel)`` on a worker thread; cancel from this thread when
    ``stop_when(event)`` first holds (the worker waits in its callback until the cancel is set)."""
    events: queue.Queue = queue.Queue()
    cancel = CancelToken()
    cancelled = threading.Event()
    result = []

    def callback(event):
        events.put(event)
        if not cancelled.is_set() and stop_when(event):
            cancelled.wait(30)

    worker = threading.Thread(target=lambda: result.append(job(spec, [callback], cancel)), daemon=True)
    worker.start()
    seen = []
    while True:
        event = events.get(timeout=cancel_timeout)
        seen.append(event)
        if not cancelled.is_set() and stop_when(event):
            cancel.cancel()
            cancelled.set()
        if isinstance(event, FinishedEvent):
            break
    worker.join(60)
    assert not worker.is_alive()
    return result[0], seen


def _first_stage(stage):
    return lambda event: isinstance(event, StageEvent) and event.stage == stage


# ---- a completed run -------------------------------------------------------------------------


def test_each_stored_prediction_is_announced_and_the_case_on_screen_comes_first(trained):
    project, finished, events = trained
    stored = [e for e in events if isinstance(e, PredictionStoredEvent)]
    assert [e.case_id for e in stored] == ["case4", "case3"]  # predict_first, then the others
    assert all(e.run_id == finished.run_id for e in stored)
    with Project.open(project, tidy=False) as p:
        for event in stored:
            (latest,) = [r for r in p.revisions(event.case_id) if r.kind == "model"]
            assert latest.id == event.revision_id
    # announced as soon as stored: before the run's "done" stage and its end
    done_at = next(i for i, e in enumerate(events) if isinstance(e, StageEvent) and e.stage == "done")
    assert all(events.index(e) < done_at for e in stored)


def test_a_completed_run_survives_a_raising_callback_and_reports_every_stage(trained):
    project, finished, events = trained
    assert finished.status == "completed", finished.message
    assert events[-1] == finished and finished.steps_done == CONFIG["steps"]
    assert finished.run_id is not None and all(e.run_id == finished.run_id for e in events)
    stages = [e.stage for e in events if isinstance(e, StageEvent)]
    first = [stages.index(s) for s in (*STAGES, "done")]
    assert first == sorted(first) and stages[-1] == "done"
    assert [e.step for e in events if isinstance(e, StepEvent)] == [1, 2, 3, 4]
    # Loading reports each case; tokens and windows report their own units.
    loading = [e for e in events if isinstance(e, StageEvent) and e.stage == "loading"]
    assert {e.message for e in loading} >= {"case0", "case1", "case2", "case3", "case4"}
    assert all(e.total == 5 for e in loading)
    assert any(e.stage == "predicting" and e.done == e.total > 0 for e in events if isinstance(e, StageEvent))

    with Project.open(project) as p:
        run = p.run(finished.run_id)
        assert run.status == "completed" and run.checkpoint == Path(finished.model_path)
        assert run.metrics["validation"]["held_out"] is True and run.metrics["steps"] == CONFIG["steps"]
        assert run.config["val_every"] == 2
        preds = {row["case_id"]: row for row in p.predictions(run.id)}
        assert set(preds) == {"case3", "case4"}
        for row in preds.values():
            unc = p.prediction_uncertainty(row["revision_id"])
            assert unc.shape == p.case(row["case_id"]).shape_zyx and unc.dtype == np.float32
            assert 0.0 <= unc.min() and unc.max() <= 1.0 and unc.max() > 0
        assert all(p.label_revision(c) is not None for c in ("case0", "case1", "case2"))
        assert p.prediction_uncertainty(p.label_revision("case0").id) is None  # a human label has none
    with Project.open(project) as again:  # reopening tidies: the uncertainty files stay
        assert again.prediction_uncertainty(preds["case3"]["revision_id"]) is not None


def test_with_three_labels_one_case_is_held_out_for_validation(trained):
    _, _, events = trained
    checks = [e for e in events if isinstance(e, ValidationEvent)]
    assert [e.step for e in checks] == [2, 4]
    assert all(e.held_out and e.cases == ("case2",) for e in checks)  # the last labeled case by id
    assert all(v is None or 0.0 <= v <= 100.0 for v in checks[-1].per_class_dice.values())


def test_events_and_results_are_plain_picklable_data(trained, scans):
    project, finished, events = trained
    pickle.loads(pickle.dumps(events))
    result = run_predict_job(PredictJobSpec(finished.model_path, image_path=str(scans[4][0])))
    assert isinstance(pickle.loads(pickle.dumps(result)), CasePrediction)


def test_one_label_validates_on_training_cases_and_leaves_torch_state_as_found(tmp_path, scans):
    project = _make_project(tmp_path / "proj", scans, labeled=1, cases=2)
    threads = torch.get_num_threads()
    torch.manual_seed(1234)
    rng = torch.get_rng_state()
    benchmark = torch.backends.cudnn.benchmark
    events = []
    finished = run_train_job(_spec(project, num_threads=threads + 1, config={"steps": 2, "val_every": 0}),
                             [events.append])
    assert finished.status == "completed", finished.message
    checks = [e for e in events if isinstance(e, ValidationEvent)]
    assert [e.step for e in checks] == [1, 2]  # val_every 0: every max(1, steps // 5) steps
    assert all(not e.held_out and e.cases == ("case0",) for e in checks)
    assert torch.get_num_threads() == threads
    assert torch.equal(torch.get_rng_state(), rng)
    assert torch.backends.cudnn.benchmark == benchmark


def test_torch_state_guard_restores_threads_and_random_state():
    threads = torch.get_num_threads()
    state = torch.get_rng_state()
    with torch_state_guard(threads + 1):
        assert torch.get_num_threads() == threads + 1
        torch.manual_seed(7)
        torch.rand(3)
        torch.backends.cudnn.deterministic = not torch.backends.cudnn.deterministic
    assert torch.get_num_threads() == threads and torch.equal(torch.get_rng_state(), state)
    assert torch.backends.cudnn.deterministic is False


# ---- cancel and resume ------------------------------------------------------------------------


@pytest.mark.parametrize("stage", STAGES)
def test_cancel_from_another_thread_stops_each_stage(tmp_path, base, stage):
    project = _copy(base, tmp_path)
    finished, seen = _threaded(run_train_job, _spec(project), _first_stage(stage))
    assert isinstance(finished, FinishedEvent) and finished.status == "cancelled", finished.message
    assert seen[-1] == finished and finished.run_id is not None
    # Nothing of a later stage ran after the cancel.
    at = next(i for i, e in enumerate(seen) if _first_stage(stage)(e))
    later = {e.stage for e in seen[at:] if isinstance(e, StageEvent)}
    assert later == {stage}
    assert not any(isinstance(e, StepEvent) for e in seen[at:])
    with Project.open(project) as p:
        run = p.run(finished.run_id)
        assert run.status == "cancelled"
        assert p.predictions(run.id) == []  # no half-stored prediction either
    if stage in ("training", "validating", "predicting"):
        assert (project / "runs" / f"run-{finished.run_id:04d}" / "last.pt").is_file()


def test_resume_continues_the_same_run_and_loss_curve(tmp_path, base, trained):
    project = _copy(base, tmp_path)
    finished, seen = _threaded(run_train_job, _spec(project), lambda e: isinstance(e, StepEvent) and e.step == 2)
    assert finished.status == "cancelled" and finished.steps_done == 2
    assert [e.step for e in seen if isinstance(e, CheckpointEvent)] == [2]

    events = []
    resumed = run_train_job(_spec(project, resume=True), [events.append])
    assert resumed.status == "completed", resumed.message
    assert resumed.run_id == finished.run_id
    assert [e.step for e in events if isinstance(e, StepEvent)] == [3, 4]
    with Project.open(project) as p:
        assert [r.id for r in p.runs()] == [finished.run_id] and p.run(resumed.run_id).status == "completed"
    history = json.loads((Path(resumed.model_path).parent / "run.json").read_text())["history"]
    straight = json.loads((Path(trained[1].model_path).parent / "run.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 1, 2, 3]
    np.testing.assert_allclose([h["total"] for h in history], [h["total"] for h in straight], rtol=1e-5, atol=1e-6)

    again = run_train_job(_spec(project, resume=True))  # nothing left to resume
    assert again.status == "failed" and again.input_error and "no unfinished run" in again.message


def test_a_hard_interrupt_propagates_but_records_the_run_cancelled(tmp_path, base):
    project = _copy(base, tmp_path)
    events = []

    def ctrl_c(event):
        events.append(event)
        if isinstance(event, StepEvent):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_train_job(_spec(project), [ctrl_c])
    assert isinstance(events[-1], FinishedEvent) and events[-1].status == "cancelled"
    with Project.open(project) as p:
        assert p.run(events[-1].run_id).status == "cancelled"


def test_bad_input_ends_in_a_failed_event_not_an_exception(tmp_path, scans):
    events = []
    missing = run_train_job(_spec(tmp_path / "nowhere"), [events.append])
    assert (missing.status, missing.input_error, missing.run_id) == ("failed", True, None)
    assert missing.error == "NotAProjectError" and "is not a DINO-Mix project" in missing.message
    assert events == [missing]
    unlabeled = _make_project(tmp_path / "proj", scans, labeled=0, cases=1)
    no_labels = run_train_job(_spec(unlabeled))
    assert no_labels.status == "failed" and "no case with a final human label" in no_labels.message
    bad = run_train_job(_spec(unlabeled, config={"method": "nonsense"}))
    assert bad.status == "failed" and bad.input_error
    with Project.open(unlabeled) as p:
        assert p.runs() == []  # refused before a run was recorded


# ---- prediction -------------------------------------------------------------------------------


def test_predict_a_file_gives_labels_on_its_grid_and_an_uncertainty_map(trained, scans):
    _, finished, _ = trained
    events = []
    result = run_predict_job(PredictJobSpec(finished.model_path, image_path=str(scans[3][0])), [events.append])
    assert isinstance(result, CasePrediction)
    image = read_volume(scans[3][0])
    assert result.labels.same_grid(image) and result.labels.array.dtype == np.uint8
    assert result.uncertainty.shape == image.shape and result.uncertainty.dtype == np.float16
    assert 0.0 <= float(result.uncertainty.min()) and float(result.uncertainty.max()) <= 1.0
    assert 0.0 <= result.score <= 1.0 and all(isinstance(k, str) for k in result.class_uncertainty)
    assert "RANDOM TEACHER" in result.teacher_note and result.revision_id is None
    windows = [e for e in events if isinstance(e, StageEvent)]
    assert {e.stage for e in windows} == {"predicting"} and windows[-1].done == windows[-1].total == 4
    assert isinstance(events[-1], FinishedEvent) and events[-1].status == "completed"


def test_predict_and_store_a_project_case(tmp_path, trained):
    project = _copy(trained[0], tmp_path)  # the copy's run points at the copy's model.pt
    with Project.open(project) as p:
        run = p.latest_run()
    result = run_predict_job(PredictJobSpec(str(run.checkpoint), project_dir=str(project), case_id="case4", store=True))
    assert isinstance(result, CasePrediction) and result.case_id == "case4" and result.revision_id is not None
    with Project.open(project) as p:
        rev = p.revision(result.revision_id)
        assert rev.kind == "model" and rev.run_id == run.id
        assert np.array_equal(p.load_labels(rev.id).array, result.labels.array)
        stored = p.prediction_uncertainty(rev.id)
        np.testing.assert_allclose(stored, result.uncertainty.astype(np.float32), atol=0.5 / 255 + 1e-3)

    foreign = tmp_path / "elsewhere.pt"
    shutil.copy(run.checkpoint, foreign)
    refused = run_predict_job(PredictJobSpec(str(foreign), project_dir=str(project), case_id="case4", store=True))
    assert refused.status == "failed" and refused.input_error and "is not the checkpoint" in refused.message
    neither = run_predict_job(PredictJobSpec(str(run.checkpoint)))
    assert neither.status == "failed" and neither.input_error


def test_cancel_during_prediction(trained, scans):
    spec = PredictJobSpec(trained[1].model_path, image_path=str(scans[3][0]))
    finished, seen = _threaded(run_predict_job, spec, _first_stage("predicting"))
    assert isinstance(finished, FinishedEvent) and finished.status == "cancelled"
    assert seen[-1] == finished
