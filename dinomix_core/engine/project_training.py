"""`dinomix train --project`: train on an annotation project and write predictions back.

Final human labels are the labeled set, every other case is unlabeled. The run is recorded
in the project (config, teacher, status, metrics, checkpoint); each unlabeled case gets the
new model's prediction as a ``model`` revision with an uncertainty score, which orders the
next-scan ranking. Human revisions are never touched.
"""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from dinomix_core.data.dataset import CaseSpec
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.distributed import DistContext
from dinomix_core.engine.events import CancelToken, StageEvent, TrainingCancelled, emit_all
from dinomix_core.engine.pipeline import LoadedModel, make_teacher, train_on_specs
from dinomix_core.engine.trainer import TrainResult
from dinomix_core.io import read_labels, read_volume
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.project import Project
from dinomix_core.project.ranking import tail_class_weights, uncertainty_summary


def train_project(
    project_dir: str | Path,
    config: TrainConfig,
    *,
    out_dir: str | Path | None = None,
    teacher_weights: str | None = None,
    teacher_overrides: dict | None = None,
    callbacks: Sequence = (),
    cancel: CancelToken | None = None,
    dist: DistContext | None = None,
    resume: bool = False,
    cache_dir: str | Path | None = None,
    predict: bool = True,
) -> TrainResult:
    dist = dist or DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    callbacks = list(callbacks)
    project = Project.open(project_dir)
    try:
        labeled, unlabeled = project.training_split()
        if not labeled:
            raise DinomixInputError(project_dir, "has no case with a final human label.",
                                    f"label at least one case: `dinomix project label {project_dir} CASE LABELFILE`.")
        labelmap = project.require_label_map()
        teacher = make_teacher(config, teacher_weights, dist.device, arch_overrides=teacher_overrides)
        teacher_id = "none" if teacher is None else teacher.teacher_id
        run_id = _run_to_use(project, config, teacher_id, resume, dist)
        run_dir = Path(out_dir) if out_dir else project.runs_dir(run_id)
        specs_l = [CaseSpec(c.case_id, Path(c.image_path), Path(c.label_path)) for c in labeled]
        specs_u = [CaseSpec(c.case_id, Path(c.image_path), None) for c in unlabeled]
        try:
            result = train_on_specs(
                config, specs_l, specs_u, labelmap, run_dir, teacher=teacher, callbacks=callbacks, cancel=cancel,
                dist=dist, resume=resume, cache_dir=cache_dir if cache_dir is not None else project.cache_dir / "tokens",
            )
            if dist.is_main and predict:
                _store_predictions(project, run_id, result.model_path, specs_l, specs_u, labelmap, callbacks, cancel)
        except TrainingCancelled:
            if dist.is_main:
                project.finish_run(run_id, "cancelled", {"note": "cancelled; resume with --resume"})
            raise
        except BaseException:
            if dist.is_main:
                project.finish_run(run_id, "failed")
            raise
        if dist.is_main:
            metrics = {"last_losses": result.history[-1] if result.history else {}, "steps": result.steps_done}
            if result.validation:
                metrics["validation"] = result.validation
            project.finish_run(run_id, "completed", metrics, result.model_path)
        return result
    finally:
        project.close()


def _run_to_use(project: Project, config: TrainConfig, teacher_id: str, resume: bool, dist: DistContext) -> int:
    if resume:
        run = project.latest_run()
        if run is None or run.status == "completed":
            raise DinomixInputError(project.root, "has no unfinished run to resume.", "start a new run without --resume.")
        if dist.is_main and run.finished_at is not None:  # cancelled or failed: reopen it
            project.resume_run(run.id)
        dist.barrier()
        return run.id
    if not dist.is_main:
        # Ranks other than 0 never write to the project; they follow rank 0's run folder.
        dist.barrier()
        return project.latest_run().id
    run_id = project.start_run(config.to_dict(), config.method, teacher_id)
    dist.barrier()
    return run_id


def _store_predictions(project, run_id, model_path, specs_l, specs_u, labelmap, callbacks, cancel) -> None:
    model = LoadedModel(model_path)
    counts = np.zeros(labelmap.num_classes, np.int64)
    for spec in specs_l:
        image = read_volume(spec.image_path)
        lab = read_labels(spec.label_path, reference=image, labelmap=labelmap).array
        counts += np.bincount(lab.reshape(-1), minlength=labelmap.num_classes)[: labelmap.num_classes]
    weights = tail_class_weights(counts)
    for number, spec in enumerate(specs_u, start=1):
        if cancel is not None and cancel.cancelled:
            raise TrainingCancelled("cancelled while storing predictions")
        emit_all(callbacks, StageEvent("predicting", spec.case_id, number - 1, len(specs_u)))
        volume = read_volume(spec.image_path)
        labels, probs = model.predict(volume, return_probs=True)
        score, per_class = uncertainty_summary(probs.numpy(), weights)
        project.add_prediction(run_id, spec.case_id, labels, score, per_class)
    emit_all(callbacks, StageEvent("predicting", f"{len(specs_u)} predictions stored", len(specs_u), len(specs_u)))
