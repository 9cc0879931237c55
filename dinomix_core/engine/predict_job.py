"""The prediction job: one CT file or project case, with uncertainty (contract: ``engine/jobs.py``)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

import numpy as np

from dinomix_core.engine._job_common import _Emitter, _failure, torch_state_guard
from dinomix_core.engine.devices import resolve_device
from dinomix_core.engine.job_specs import PredictJobSpec
from dinomix_core.engine.events import Callback, CancelToken, Cancelled, FinishedEvent, StageEvent, check_cancel
from dinomix_core.engine.pipeline import LoadedModel, predict_with_uncertainty
from dinomix_core.engine.project_training import project_class_weights
from dinomix_core.io import LabelMap, Volume, read_volume
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.project import Project


@dataclass
class CasePrediction:
    """A prediction. ``labels``: uint8 Volume on the image's exact grid (z, y, x), spacing mm.

    ``uncertainty``: float16 (z, y, x) normalised entropy of the class probabilities in [0, 1]
    (0 outside the body). ``score``: the case's uncertainty score (higher = less sure; the
    next-scan ranking's). ``class_uncertainty``: class name -> mean uncertainty of the voxels
    predicted as that class. ``teacher_note``: how the model was trained (says RANDOM TEACHER
    when its FKD teacher was random). ``revision_id``: the stored revision, when stored.
    """

    labels: Volume
    uncertainty: np.ndarray
    score: float
    class_uncertainty: dict
    teacher_note: str
    case_id: str | None = None
    revision_id: int | None = None


def run_predict_job(spec: PredictJobSpec, callbacks: Sequence[Callback] = (),
                    cancel: CancelToken | None = None) -> CasePrediction | FinishedEvent:
    """Predict one CT or project case (see the module docstring).

    Returns the :class:`CasePrediction` on success (after emitting a "completed"
    FinishedEvent), the FinishedEvent when cancelled or failed.
    """
    emit = _Emitter(callbacks)
    project: Project | None = None
    with torch_state_guard(spec.num_threads):
        try:
            project = Project.open(spec.project_dir) if spec.project_dir else None
            result = _predict(spec, project, emit, cancel)
            what = result.case_id or Path(spec.image_path or "").name
            stored = f"; stored as revision {result.revision_id}" if result.revision_id is not None else ""
            emit(FinishedEvent("completed", f"{what} predicted{stored}", run_id=emit.run_id,
                               model_path=str(spec.checkpoint)))
            return result
        except Cancelled as exc:
            finished = FinishedEvent("cancelled", f"prediction cancelled ({exc})", run_id=emit.run_id)
        except (KeyboardInterrupt, SystemExit):
            emit(FinishedEvent("cancelled", "prediction interrupted", run_id=emit.run_id))
            raise
        except Exception as exc:
            message, error, input_error = _failure(exc)
            finished = FinishedEvent("failed", message, run_id=emit.run_id, error=error, input_error=input_error)
        finally:
            if project is not None:
                project.close()
    emit(finished)
    return finished


def _predict(spec: PredictJobSpec, project: Project | None, emit: _Emitter, cancel) -> CasePrediction:
    if (spec.image_path is None) == (spec.case_id is None):
        raise DinomixInputError(None, "a prediction needs either an image path or a project case, not "
                                f"{'both' if spec.image_path else 'neither'}.",
                                "give image_path, or project_dir and case_id.")
    if spec.case_id is not None and project is None:
        raise DinomixInputError(None, f"case {spec.case_id!r} was asked for without a project.", "give project_dir too.")
    if spec.store and spec.case_id is None:
        raise DinomixInputError(spec.image_path, "only a project case can be stored.",
                                "predict the case by project_dir and case_id, or do not ask to store it.")
    check_cancel(cancel, "loading the model")
    model = LoadedModel(spec.checkpoint, device=resolve_device(spec.device, option="device"), fast=spec.fast,
                        postprocess=spec.postprocess)
    run_id = None
    weights = None
    if spec.case_id is not None:
        case = project.check_image(spec.case_id)
        run_id = _run_of_checkpoint(project, spec.checkpoint, required=spec.store)
        emit.run_id = run_id
        volume = read_volume(case.image_path)
        weights = project_class_weights(project)
        name = case.id
    else:
        volume = read_volume(spec.image_path)
        name = Path(spec.image_path).name
    check_cancel(cancel, "reading the image")
    labels, uncertainty, score, per_class = predict_with_uncertainty(
        model, volume, class_weights=weights, tta=spec.tta, cancel=cancel,
        progress=lambda done, total: emit(StageEvent("predicting", name, done, total)),
    )
    revision_id = None
    if spec.store:
        revision_id = project.add_prediction(run_id, spec.case_id, labels, score, per_class, uncertainty_map=uncertainty)
    return CasePrediction(labels=labels, uncertainty=uncertainty, score=score,
                          class_uncertainty=_named(per_class, model.labelmap), teacher_note=model.teacher_note,
                          case_id=spec.case_id, revision_id=revision_id)


def _run_of_checkpoint(project: Project, checkpoint: str, *, required: bool) -> int | None:
    """The id of the project run whose recorded checkpoint is this file."""
    target = Path(checkpoint).expanduser().resolve()
    for run in reversed(project.runs()):
        if run.checkpoint is not None and Path(run.checkpoint).resolve() == target:
            return run.id
    if required:
        raise DinomixInputError(checkpoint, f"is not the checkpoint of any completed run of project {project.root}, "
                                "so its predictions cannot be stored there.",
                                "use the model.pt of one of the project's runs (see `dinomix project status`).")
    return None


def _named(per_class: dict, labelmap: LabelMap) -> dict[str, float]:
    return {(labelmap.name_of(int(k)) if int(k) < labelmap.num_classes else str(k)): float(v)
            for k, v in per_class.items()}
