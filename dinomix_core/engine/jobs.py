"""The job API: how every front end (napari plugin, desktop app, CLI) trains and predicts.

Two functions, each taking a plain, picklable spec, a list of callbacks and an optional
:class:`~dinomix_core.engine.events.CancelToken`::

    from dinomix_core.engine.jobs import TrainJobSpec, run_train_job
    finished = run_train_job(TrainJobSpec(project_dir="proj", config={"method": "dinomix", "steps": 200}),
                             callbacks=[print], cancel=token)

    from dinomix_core.engine.jobs import PredictJobSpec, run_predict_job
    result = run_predict_job(PredictJobSpec(checkpoint="proj/runs/run-0001/model.pt",
                                            project_dir="proj", case_id="case_007", store=True))

Both are made to run in a worker (a thread, or a spawned process that sends every event back
over a pipe: specs, events and results hold only plain data, numpy arrays and ``Volume``\\ s).

Contract
--------
* **Never raises** for bad input or engine errors. The job ends with exactly one
  :class:`~dinomix_core.engine.events.FinishedEvent` (``status`` "completed", "cancelled" or
  "failed"), emitted as the last event and returned (``run_predict_job`` returns its
  :class:`CasePrediction` instead when it completes). ``message`` is one readable line: for
  bad input (``input_error=True``) the :class:`~dinomix_core.io.errors.DinomixInputError`'s
  own text with its fix; otherwise ``"<ExceptionClass>: <first line>"``, with the traceback
  logged on ``logging.getLogger("dinomix_core")``. ``error`` names the exception class.
  Only ``KeyboardInterrupt`` / ``SystemExit`` propagate (after the run is recorded cancelled).
* **Events** (``events.py``), each stamped with the job's ``run_id`` once the project run
  exists: ``StageEvent`` for "loading" (one per case: message = case id, done/total = cases),
  "teacher-tokens" (per slice batch: case id, slices), "training" (at its start and after
  each mid-run validation: done/total = steps), "validating" (per window batch: case id,
  windows), "predicting" (per window batch: case id or file, windows) and "done"; a
  ``StepEvent`` per step; ``ValidationEvent`` (per-class Dice, ``cases`` measured,
  ``held_out``); ``CheckpointEvent`` whenever ``last.pt`` is written. A callback that raises
  is logged and skipped. Callbacks run on the job's thread: keep them quick.
* **Cancel** is honoured in every long stage: before each case read, each teacher slice
  batch, each training step, each validation and prediction window batch. A cancelled job
  ends "cancelled", never "failed"; training keeps ``last.pt`` at the steps done.
* **Global torch state** of the calling process is left as found (:func:`torch_state_guard`):
  thread count (``num_threads`` applies while the job runs), CPU and CUDA RNG states, and
  cuDNN's ``benchmark`` / ``deterministic`` flags.

Training (:func:`run_train_job`)
--------------------------------
Trains on a project: final human labels are labeled, every other case unlabeled. The run is
recorded in the project when training is about to start (``running``) and closed as
``completed`` (metrics, checkpoint), ``cancelled`` or ``failed``; bad input found before that
(no labels, no class map, missing teacher weights, a bad config) records no run and the
FinishedEvent has ``run_id`` None. Run folder: ``spec.out_dir``, else the project's
``runs/run-NNNN/`` (``model.pt``, ``last.pt``, ``run.json``).

Validation: with at least 3 labeled cases, ``validation_case`` (default: the last labeled
case by id) is held out of training and validated on (``held_out=True``); with fewer, the
Dice is measured on the labeled training cases (``held_out=False``: show it as such). Every
``config["val_every"]`` steps, by default (0) every ``max(1, steps // 5)``, and at the end.

Resume (``resume=True``): the project's latest run must be unfinished (cancelled, failed or
interrupted); it is reopened under the same run id and continues from its ``last.pt`` with
the same loss curve (from step 0 when it stopped before its first checkpoint). Its recorded
config is used, updated with ``spec.config``. Predictions that the run already stored are not
repeated. With ``predict_unlabeled`` every unlabeled case gets a ``model`` revision with its
uncertainty score and per-voxel map (``Project.prediction_uncertainty(revision_id)``).

Prediction (:func:`run_predict_job`)
------------------------------------
Predicts one CT (``image_path``: a file or a DICOM folder) or one project case (``project_dir``
+ ``case_id``: the image is checked against its recorded hash). Returns a
:class:`CasePrediction`: labels on the image's exact grid, a float16 per-voxel uncertainty
map (normalised entropy in [0, 1]), the case score of the next-scan ranking and the per-class
uncertainty keyed by class name. ``store=True`` (project case only) saves it as a ``model``
revision of the run whose checkpoint it is (found by path; any other checkpoint is refused).
"""

from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence


from dinomix_core.data.dataset import (SPILL_GROUPS, LoadedCase, load_cases, remove_spilled, resolve_target_spacing,
                                        spill_folder)
from dinomix_core.data.token_cache import TokenCache
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.distributed import DistContext
from dinomix_core.engine.devices import resolve_device
from dinomix_core.engine.events import (
    Callback,
    CancelToken,
    Cancelled,
    FinishedEvent,
    StageEvent,
    StepEvent,
    check_cancel,
)
from dinomix_core.engine._job_common import _Emitter, _failure, torch_state_guard
from dinomix_core.engine.pipeline import LoadedModel, make_teacher
from dinomix_core.engine.job_specs import PredictJobSpec, TrainJobSpec
from dinomix_core.engine.predict_job import CasePrediction, run_predict_job
from dinomix_core.engine.project_training import (
    ProjectSplit,
    class_weights,
    open_run,
    predicted_by,
    project_split,
    resumed_config,
    run_to_resume,
    store_predictions,
)
from dinomix_core.engine.trainer import TeacherInfo, Trainer
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.project import Project, Run

log = logging.getLogger("dinomix_core")

__all__ = [
    "CasePrediction",
    "PredictJobSpec",
    "TrainJobSpec",
    "default_val_every",
    "run_predict_job",
    "run_train_job",
    "torch_state_guard",
]

# ---- specs and results ------------------------------------------------------------------


# ---- shared pieces ----------------------------------------------------------------------


def default_val_every(steps: int) -> int:
    """Validation interval of a project job whose config leaves ``val_every`` at 0."""
    return max(1, int(steps) // 5)


# ---- training ---------------------------------------------------------------------------


@dataclass
class _TrainState:
    """What a training job knows so far; read when it ends, however it ends."""

    project: Project | None = None
    run_id: int | None = None
    run_dir: Path | None = None
    steps: int = 0
    model_path: Path | None = None
    recorded: bool = False  # the run's end is in the project
    main: bool = True  # this process writes to the project (DDP rank 0)


def run_train_job(spec: TrainJobSpec, callbacks: Sequence[Callback] = (), cancel: CancelToken | None = None, *,
                  dist: DistContext | None = None) -> FinishedEvent:
    """Train on ``spec.project_dir`` (see the module docstring); returns the FinishedEvent it emitted.

    ``dist``: the torch.distributed context under ``torchrun`` (the CLI); only rank 0 writes
    to the project. By default one process on ``spec.device``.
    """
    emit = _Emitter(callbacks)
    cancel = cancel if cancel is not None else CancelToken()
    state = _TrainState()
    with torch_state_guard(spec.num_threads):
        try:
            message = _train(spec, emit, cancel, dist, state)
            return _end_training(state, emit, "completed", message)
        except Cancelled as exc:
            return _end_training(state, emit, "cancelled", _cancel_message(exc, state, emit))
        except (KeyboardInterrupt, SystemExit):
            _end_training(state, emit, "cancelled", "interrupted; resume the run to continue")
            raise
        except Exception as exc:
            message, error, input_error = _failure(exc)
            return _end_training(state, emit, "failed", message, error=error, input_error=input_error)
        finally:
            if state.project is not None:
                state.project.close()


def _train(spec: TrainJobSpec, emit: _Emitter, cancel: CancelToken, dist: DistContext | None,
           state: _TrainState) -> str:
    check_cancel(cancel, "starting")  # cancelled before the first event: no run is recorded
    dist = dist or DistContext(device=resolve_device(spec.device, option="device"))
    state.main = dist.is_main
    project = state.project = Project.open(spec.project_dir)
    split = project_split(project, spec.validation_case)
    previous: Run | None = run_to_resume(project) if spec.resume else None
    requested = dict(spec.config or {})
    config = _config(resumed_config(previous, requested) if previous is not None else requested)
    config.validate(device=dist.device)  # before the teacher and any case loads
    if previous is not None:
        _check_resumable(previous, config)
    if config.uses_unlabeled and not split.unlabeled:
        raise DinomixInputError(project.root, f"has no unlabeled case, and method {config.method!r} learns from "
                                "unlabeled scans.", "add unlabeled scans to the project, or choose method 'supervised'.")
    teacher = make_teacher(config, spec.teacher_weights, dist.device, arch_overrides=spec.teacher_overrides)
    info = TeacherInfo()
    if teacher is not None:
        info = TeacherInfo(teacher_id=teacher.teacher_id, is_random=bool(teacher.is_random), embed_dim=int(teacher.embed_dim))

    run_id = state.run_id = emit.run_id = open_run(project, config, info.teacher_id, previous, dist)
    run_dir = state.run_dir = _run_dir(project, run_id, spec.out_dir, previous)
    run_dir.mkdir(parents=True, exist_ok=True)
    state.steps = config.steps

    cached = teacher is not None and config.token_source == "cache"
    cache_dir = Path(spec.cache_dir) if spec.cache_dir else project.cache_dir / "tokens"
    # Cases and tokens are memory-mapped (spilled next to the run, removed when it ends), so a
    # project of many full-size CTs does not have to fit in RAM.
    spill = spill_folder(run_dir)
    try:
        loaded_l, loaded_u, loaded_v, spacing = _load(split, config, teacher if cached else None,
                                                      TokenCache(cache_dir, mmap=True) if cached else None, emit,
                                                      cancel, spill)
        trainer = Trainer(
            config, loaded_l, loaded_u, split.labelmap, out_dir=run_dir, teacher=info,
            online_teacher=teacher if (teacher is not None and not cached) else None,
            val_cases=loaded_v if split.held_out else loaded_l, callbacks=[emit], cancel=cancel, dist=dist,
            val_held_out=split.held_out, announce_done=False, target_spacing=spacing,
        )
        result = trainer.fit(resume=previous is not None and (run_dir / "last.pt").is_file())
        state.model_path = result.model_path
        weights = class_weights([c.label for c in (*loaded_l, *loaded_v)], split.labelmap.num_classes)
        del trainer, loaded_l, loaded_u, loaded_v, teacher  # free the volumes and tokens before predicting
    finally:
        remove_spilled(spill)

    stored = 0
    if dist.is_main and spec.predict_unlabeled and split.unlabeled:
        model = LoadedModel(result.model_path, device=dist.device, fast=spec.fast_predictions)
        skip = predicted_by(project, run_id) if previous is not None else set()
        stored = store_predictions(project, run_id, model, split.unlabeled, weights, emit, cancel, skip=skip,
                                   first=spec.predict_first)
    if dist.is_main:
        metrics = {"last_losses": result.history[-1] if result.history else {}, "steps": result.steps_done,
                   "run_dir": str(run_dir), "predictions": stored}
        if result.validation:
            metrics["validation"] = result.validation
        project.finish_run(run_id, "completed", metrics, result.model_path)
        state.recorded = True
    text = f"run {run_id}: {result.steps_done} steps, model saved to {result.model_path}"
    if spec.predict_unlabeled and split.unlabeled:
        text += f"; predictions stored for {len(split.unlabeled)} unlabeled case(s)"
    emit(StageEvent("done", text, result.steps_done, config.steps))
    return text


def _config(fields: dict) -> TrainConfig:
    try:
        config = TrainConfig.from_dict(fields)
    except (TypeError, ValueError) as exc:
        raise DinomixInputError(None, f"invalid training settings: {exc}.", "fix the settings and start again.") from None
    if config.steps < 1:
        raise DinomixInputError(None, f"invalid training settings: steps must be at least 1, got {config.steps}.",
                                "ask for one step or more.")
    if not config.val_every:
        config = dataclasses.replace(config, val_every=default_val_every(config.steps))
    return config


def _check_resumable(run: Run, config: TrainConfig) -> None:
    """Refuse, before the run is reopened, settings its saved state cannot continue with."""
    try:
        saved = TrainConfig.from_dict(run.config)
    except (TypeError, ValueError):
        return  # an unreadable record: the trainer checks the state file itself
    changed = [f"{name} {getattr(saved, name)!r} -> {getattr(config, name)!r}"
               for name in ("method", "seed", "steps", "student", "student_width", "student_depth", "patch_size",
                            "target_spacing")
               if getattr(saved, name) != getattr(config, name)]
    if changed:
        raise DinomixInputError(None, f"run {run.id} cannot be resumed with other settings ({'; '.join(changed)}).",
                                "resume with the run's own settings, or start a new run.")


def _run_dir(project: Project, run_id: int, out_dir: str | None, previous: Run | None) -> Path:
    if out_dir:
        return Path(out_dir).expanduser().resolve()
    recorded = (previous.metrics or {}).get("run_dir") if previous is not None else None
    if recorded and Path(recorded).is_dir():
        return Path(recorded)
    return project.runs_dir(run_id)


def _load(split: ProjectSplit, config: TrainConfig, teacher, cache: TokenCache | None, emit: _Emitter,
          cancel: CancelToken, spill: Path) -> tuple[list[LoadedCase], list[LoadedCase], list[LoadedCase], tuple | None]:
    """Read every case of the split (with teacher tokens where they are used), reporting per case.

    Returns the three groups and the target spacing (z, y, x mm) they were resampled to: the
    config's, else the median of the labeled cases. Arrays are memory maps of files under
    ``spill`` (one folder per group, :data:`SPILL_GROUPS`)."""
    unlabeled = split.unlabeled if config.uses_unlabeled else []
    total = len(split.labeled) + len(unlabeled) + len(split.validation)
    spacing = resolve_target_spacing(config.target_spacing, split.labeled)
    groups: list[list[LoadedCase]] = []
    offset = 0
    for group, specs, tokens in zip(SPILL_GROUPS, (split.labeled, unlabeled, split.validation), (True, True, False)):
        groups.append(load_cases(
            specs, labelmap=split.labelmap, teacher=teacher if tokens else None, cache=cache if tokens else None,
            window=tuple(config.teacher_window), stride=config.token_stride, clip=config.intensity_window,
            target_spacing=spacing,
            start_progress=lambda done, _total, cid, base=offset: emit(StageEvent("loading", cid, base + done, total)),
            token_progress=lambda cid, done, slices: emit(StageEvent("teacher-tokens", cid, done, slices)),
            cancel=cancel, spill_dir=spill / group,
        ))
        offset += len(specs)
    emit(StageEvent("loading", f"{total} case(s) loaded", total, total))
    return groups[0], groups[1], groups[2], spacing


def _cancel_message(exc: BaseException, state: _TrainState, emit: _Emitter) -> str:
    if state.run_id is None:
        return "cancelled before training started; nothing was recorded"
    where = f"after {emit.steps_done} of {state.steps} steps" if state.steps else "before training"
    log.info("run %s: %s", state.run_id, exc)
    return f"run {state.run_id} cancelled {where}; resume it to continue"


def _end_training(state: _TrainState, emit: _Emitter, status: str, message: str, *, error: str | None = None,
                  input_error: bool = False) -> FinishedEvent:
    """Record how the run ended (when it was started and not yet closed), then emit and return it."""
    if status != "completed" and state.run_id is not None and state.main and not state.recorded \
            and state.project is not None:
        note = {"note": message, "steps_done": emit.steps_done}
        if state.run_dir is not None:
            note["run_dir"] = str(state.run_dir)
        if error:
            note["error"] = error
        try:
            state.project.finish_run(state.run_id, status, note)
        except Exception:  # the store itself may be what failed: the event still goes out
            log.exception("could not record the end (%s) of run %s", status, state.run_id)
        state.recorded = True
    model = state.model_path if state.model_path is not None and state.model_path.exists() else None
    finished = FinishedEvent(status, message, run_id=state.run_id, model_path=None if model is None else str(model),
                             error=error, steps_done=emit.steps_done, input_error=input_error)
    emit(finished)
    return finished
