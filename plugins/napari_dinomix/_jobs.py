"""Training and prediction jobs of the open project, run in a worker process.

The controller turns the panels' requests into engine job specs
(``dinomix_core.engine.jobs``), starts them through the worker bridge and re-emits the
engine's events as Qt signals on the main thread. One training and one prediction job can
run at a time. When the worker process dies without saying why (SIGKILL, an out-of-memory
kill, a segfault), the run it was doing is marked failed in the project here, since the
dead process cannot do it itself.
"""

from __future__ import annotations

import napari_dinomix._no_triton  # noqa: F401  (first: see the module)

from dataclasses import dataclass, field

from qtpy.QtCore import QObject, Signal

from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.events import CheckpointEvent, PredictionStoredEvent, StageEvent, StepEvent, ValidationEvent
from dinomix_core.engine.job_specs import PredictJobSpec, TrainJobSpec
from dinomix_core.engine.presets import preset_fields, with_student

from napari_dinomix._throttle import Throttle
from napari_dinomix._worker import JobOutcome, JobWorker

TRAIN_TARGET = "dinomix_core.engine.jobs:run_train_job"
PREDICT_TARGET = "napari_dinomix._job_targets:predict_cases"

# Settings presets offered by the Train panel, fastest first: "Quick first model" is the
# engine's "first-overlay" recipe (the 2D student, 200 steps: the large organs within about
# two minutes on 2 CPU cores), "Better first model" the "quick" recipe `dinomix demo` trains
# (the 2.5D student, 1,000 steps: every phantom organ; dinomix_core/engine/presets.py),
# "Standard" the engine default for real CT.
# Progress readouts (bar, status bar, loss plot) change at most once a second: see _throttle.
PROGRESS_MS = 1000
QUICK_PRESET = "Quick first model"
BETTER_PRESET = "Better first model"
PRESETS: dict[str, dict] = {
    QUICK_PRESET: preset_fields("first-overlay", val_every=50),
    BETTER_PRESET: preset_fields("quick", val_every=100),
    "Standard": dict(student="unet3d", student_width=16, student_depth=4, patch_size=(64, 128, 128),
                     steps=1000, optimizer="sgd", lr=0.03),
}


BUDGET_STEP_LIMIT = 1_000_000


@dataclass
class TrainRequest:
    """What the Train panel asks for; turned into a TrainJobSpec."""

    method: str = "dinomix"
    preset: str = QUICK_PRESET
    student: str | None = None  # overrides the preset's
    steps: int | None = None
    minutes: float | None = None  # a time budget for the training steps instead of a step count
    device: str = "cpu"
    teacher_weights: str | None = None  # None: installed weights; "random"; or a file path
    validation_case: str | None = None
    config_overrides: dict = field(default_factory=dict)  # any TrainConfig field (advanced settings)
    teacher_overrides: dict | None = None  # a smaller random ViT (demos and tests)
    num_threads: int | None = None

    def config(self) -> dict:
        fields = dict(PRESETS[self.preset])
        if self.student and self.student != fields["student"]:
            fields = with_student(fields, self.student)
        if self.steps:
            fields["steps"] = int(self.steps)
        if self.minutes:
            fields["steps"] = BUDGET_STEP_LIMIT  # the budget fixes the count after a probe of the first steps
            fields["time_budget_s"] = float(self.minutes) * 60.0
        fields.update(self.config_overrides)
        fields["method"] = self.method
        fields["checkpoint_every"] = max(1, min(50, int(fields["steps"]) // 4))
        return TrainConfig(**fields).to_dict()  # validates here, before a process is started


class JobsController(QObject):
    """Starts, stops and follows the project's training and prediction workers."""

    stage = Signal(object)  # StageEvent
    step = Signal(object)  # StepEvent, every one (the loss plot keeps them all)
    progress = Signal(object)  # the newest StepEvent, at most once per PROGRESS_MS: what progress readouts show
    validation = Signal(object)  # ValidationEvent
    checkpoint = Signal(object)  # CheckpointEvent
    prediction_stored = Signal(object)  # PredictionStoredEvent: a training run stored one case's prediction
    log = Signal(str)
    training_state = Signal(str)  # idle, starting, running, stopping, completed, cancelled, failed
    training_finished = Signal(object)  # JobOutcome
    prediction_progress = Signal(int, int, str)  # done, total, what
    prediction_ready = Signal(object)  # a CasePrediction-like result (case_id, revision_id, ...)
    prediction_finished = Signal(object)  # JobOutcome

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        self.train_worker: JobWorker | None = None
        self.predict_worker: JobWorker | None = None
        self.run_id: int | None = None
        self.state = "idle"
        self.last_request: TrainRequest | None = None
        self._progress = Throttle(PROGRESS_MS, self)
        self._progress.passed.connect(self.progress.emit)

    # -- training --------------------------------------------------------------------------

    @property
    def training(self) -> bool:
        return self.train_worker is not None and self.train_worker.running

    def start_training(self, request: TrainRequest, *, resume: bool = False) -> bool:
        session = self.session
        if session.project is None:
            session.message.emit("warning", "Open a project first.")
            return False
        if self.training:
            session.message.emit("warning", "A training run is already going; stop it first.")
            return False
        try:
            config = request.config()
        except (ValueError, TypeError) as exc:
            session.message.emit("error", f"Training settings: {exc}")
            return False
        session.flush_edits()  # the worker reads labels from the store: unsaved strokes would be missed
        spec = TrainJobSpec(
            project_dir=str(session.root), config=config, teacher_weights=request.teacher_weights,
            teacher_overrides=request.teacher_overrides, resume=resume, validation_case=request.validation_case,
            predict_unlabeled=True, device=request.device, num_threads=request.num_threads,
            predict_first=session.case_id,  # the case on screen gets its overlay first
            # A quick first model is about a first look: its overlays use the fast inference settings.
            fast_predictions=request.preset == QUICK_PRESET,
        )
        self.last_request = request
        self.run_id = None
        self._progress.drop()
        worker = JobWorker(TRAIN_TARGET, spec, num_threads=request.num_threads, parent=self)
        worker.event.connect(self._on_train_event)
        worker.finished.connect(self._on_train_finished)
        self.train_worker = worker
        self._set_state("starting")
        budget = f"{request.minutes:g} min" if request.minutes else f"{TrainConfig.from_dict(config).steps} steps"
        self.log.emit(("Resuming" if resume else "Starting") + f" {request.method} training ({request.preset}, "
                      f"{budget}, {request.device})")
        worker.start()
        return True

    def stop_training(self) -> None:
        """Ask the run to stop at the next step; its checkpoint is kept for Resume."""
        if self.training:
            self._set_state("stopping")
            self.log.emit("Stopping: the run saves its checkpoint and ends at the next step.")
            self.train_worker.cancel()

    def resume_training(self) -> bool:
        return self.start_training(self.last_request or TrainRequest(), resume=True)

    def _on_train_event(self, event) -> None:
        run_id = getattr(event, "run_id", None)
        if run_id is not None:
            self.run_id = run_id
        if isinstance(event, StepEvent):
            if self.state == "starting":
                self._set_state("running")
            self.step.emit(event)
            self._progress.offer(event)
        elif isinstance(event, ValidationEvent):
            self.validation.emit(event)
            where = "held-out " + ", ".join(event.cases) if event.held_out else "training cases (not held out)"
            mean = "n/a" if event.mean_dice is None else f"{event.mean_dice:.1f}%"
            self.log.emit(f"step {event.step}: mean Dice {mean} on {where}")
        elif isinstance(event, StageEvent):
            self.stage.emit(event)
            if event.stage in ("loading", "teacher-tokens", "predicting", "validating") and event.done == 0:
                self.log.emit(f"{event.stage}: {event.message}")
            elif event.stage == "post-processing" and not event.total:
                self.log.emit(event.message)  # which organs keep only their largest piece, and why
        elif isinstance(event, CheckpointEvent):
            self.checkpoint.emit(event)
        elif isinstance(event, PredictionStoredEvent):
            self.prediction_stored.emit(event)

    def _on_train_finished(self, outcome: JobOutcome) -> None:
        self.train_worker = None
        self._progress.flush()  # the run's last step, if it waits
        message = outcome.message or outcome.status
        if outcome.status == "failed" and self.run_id is not None:
            self._mark_failed(self.run_id, message)
        self.log.emit(f"Training {outcome.status}: {message}")
        if outcome.status == "failed":
            self.session.message.emit("error", f"Training failed: {message}")
        elif outcome.status == "cancelled":
            self.session.message.emit("info", "Training stopped; its checkpoint is kept. Press Resume to continue.")
        else:
            self.session.message.emit("info", "Training completed; predictions stored for the unlabeled cases.")
        self._set_state(outcome.status)
        self.session.cases_changed.emit()
        self.training_finished.emit(outcome)

    def _mark_failed(self, run_id: int, message: str) -> None:
        project = self.session.project
        if project is None:
            return
        try:
            run = project.run(run_id)
            if run.finished_at is None:  # the worker died before it could record the end
                project.finish_run(run_id, "failed", {"note": message})
        except Exception as exc:  # the store itself may be the problem; say so, keep the GUI alive
            self.session.message.emit("error", f"Could not mark run {run_id} failed: {exc}")

    def _set_state(self, state: str) -> None:
        self.state = state
        self.training_state.emit(state)

    # -- prediction ------------------------------------------------------------------------

    @property
    def predicting(self) -> bool:
        return self.predict_worker is not None and self.predict_worker.running

    def latest_checkpoint(self):
        """(run id, model.pt) of the newest completed run with a checkpoint, or (None, None)."""
        project = self.session.project
        if project is None:
            return None, None
        for run in reversed(project.runs()):
            if run.status == "completed" and run.checkpoint is not None and run.checkpoint.exists():
                return run.id, run.checkpoint
        return None, None

    def predict(self, case_ids: list[str], *, device: str = "cpu", num_threads: int | None = None,
                postprocess: str = "auto") -> bool:
        """Predict ``case_ids`` in the background; ``postprocess`` as ``dinomix predict --postprocess``."""
        session = self.session
        if session.project is None:
            session.message.emit("warning", "Open a project first.")
            return False
        if self.predicting:
            session.message.emit("warning", "A prediction is already running.")
            return False
        run_id, checkpoint = self.latest_checkpoint()
        if checkpoint is None:
            session.message.emit("warning", "No trained model yet: train one first (Train tab).")
            return False
        if not case_ids:
            session.message.emit("info", "Nothing to predict.")
            return False
        specs = [PredictJobSpec(checkpoint=str(checkpoint), project_dir=str(session.root), case_id=c, store=True,
                                device=device, num_threads=num_threads, postprocess=postprocess) for c in case_ids]
        worker = JobWorker(PREDICT_TARGET, specs, num_threads=num_threads, parent=self)
        worker.event.connect(self._on_predict_event)
        worker.finished.connect(self._on_predict_finished)
        self.predict_worker = worker
        self.log.emit(f"Predicting {len(case_ids)} case(s) with run {run_id}")
        worker.start()
        return True

    def cancel_prediction(self) -> None:
        if self.predicting:
            self.predict_worker.cancel()

    def _on_predict_event(self, event) -> None:
        if isinstance(event, StageEvent) and event.stage == "predicting":
            self.prediction_progress.emit(event.done, event.total, event.message)
        elif hasattr(event, "revision_id") and hasattr(event, "case_id"):  # one case done
            self.prediction_ready.emit(event)

    def _on_predict_finished(self, outcome: JobOutcome) -> None:
        self.predict_worker = None
        if outcome.status != "completed":
            level = "info" if outcome.status == "cancelled" else "error"
            self.session.message.emit(level, f"Prediction {outcome.status}: {outcome.message}")
        self.session.cases_changed.emit()
        self.prediction_finished.emit(outcome)

    # -- shutdown --------------------------------------------------------------------------

    def shutdown(self, *, stop_training: bool = True) -> None:
        """Stop workers (training keeps its checkpoint) before the window closes."""
        if self.predicting:
            self.predict_worker.cancel()
        if stop_training and self.training:
            self.train_worker.cancel()
