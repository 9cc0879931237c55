"""The project side of a training job: which cases train, which validate, where the run goes,
and how its predictions come back.

Final human labels are the labeled set, every other case is unlabeled. With at least
``MIN_LABELS_TO_HOLD_OUT`` labels one labeled case (the user's choice, else the last by id) is
held out for validation; with fewer, validation measures the training cases and says so.
Each unlabeled case gets the new model's prediction as a ``model`` revision with its
uncertainty (a case score for the next-scan ranking and a per-voxel map); human revisions are
never touched. :func:`dinomix_core.engine.jobs.run_train_job` puts these pieces together.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Sequence

import numpy as np

from dinomix_core.data.dataset import CaseSpec
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.distributed import DistContext
from dinomix_core.engine.events import PredictionStoredEvent, StageEvent, check_cancel
from dinomix_core.engine.pipeline import LoadedModel, predict_with_uncertainty
from dinomix_core.io import LabelMap, read_labels, read_volume
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.io.label_counts import label_counts
from dinomix_core.project import Project, Run
from dinomix_core.project.ranking import tail_class_weights

MIN_LABELS_TO_HOLD_OUT = 3


@dataclass
class ProjectSplit:
    """What a project run trains and validates on (paths checked against the store's hashes)."""

    labelmap: LabelMap
    labeled: list[CaseSpec]  # trained on, with labels
    unlabeled: list[CaseSpec]  # trained on without labels; predicted afterwards
    validation: list[CaseSpec] = field(default_factory=list)  # held out, with labels
    held_out: bool = False  # False: validation measures the labeled training cases

    @property
    def validation_ids(self) -> tuple[str, ...]:
        cases = self.validation if self.held_out else self.labeled
        return tuple(c.case_id for c in cases)


def project_split(project: Project, validation_case: str | None = None) -> ProjectSplit:
    """The labeled / unlabeled / held-out split of ``project`` (see the module docstring)."""
    labeled, unlabeled = project.training_split()
    if not labeled:
        raise DinomixInputError(project.root, "has no case with a final human label.",
                                f"label at least one case: `dinomix project label {project.root} CASE LABELFILE`.")
    labelmap = project.require_label_map()
    specs_l = [CaseSpec(c.case_id, Path(c.image_path), Path(c.label_path)) for c in labeled]
    specs_u = [CaseSpec(c.case_id, Path(c.image_path), None) for c in unlabeled]
    ids = [c.case_id for c in specs_l]
    if validation_case is not None and validation_case not in ids:
        raise DinomixInputError(project.root, f"case {validation_case!r} cannot be the validation case: it has no "
                                "final human label.", f"choose one of the labeled cases: {', '.join(ids)}.")
    if len(specs_l) < MIN_LABELS_TO_HOLD_OUT:
        return ProjectSplit(labelmap, specs_l, specs_u, [], held_out=False)
    chosen = validation_case if validation_case is not None else ids[-1]
    val = [c for c in specs_l if c.case_id == chosen]
    return ProjectSplit(labelmap, [c for c in specs_l if c.case_id != chosen], specs_u, val, held_out=True)


def run_to_resume(project: Project) -> Run:
    """The project's latest run, which must be unfinished (cancelled, failed or interrupted)."""
    run = project.latest_run()
    if run is None or run.status == "completed":
        raise DinomixInputError(project.root, "has no unfinished run to resume.", "start a new run without resume.")
    return run


def open_run(project: Project, config: TrainConfig, teacher_id: str, previous: Run | None, dist: DistContext) -> int:
    """Record a new run (or reopen ``previous`` under this process); returns its id.

    Only rank 0 writes to the project; other ranks follow its run.
    """
    if previous is not None:
        if dist.is_main:  # refused while the run is still alive in another process
            project.resume_run(previous.id)
        dist.barrier()
        return previous.id
    if not dist.is_main:
        dist.barrier()
        return project.latest_run().id
    run_id = project.start_run(config.to_dict(), config.method, teacher_id)
    dist.barrier()
    return run_id


def resumed_config(run: Run, requested: dict) -> dict:
    """The config of a resumed run: what it recorded, updated with what was asked for now."""
    return {**(run.config or {}), **(requested or {})}


def class_weights(label_arrays: Sequence[np.ndarray], num_classes: int) -> np.ndarray:
    """Tail-favouring class weights for the uncertainty score, from the labeled voxel counts."""
    counts = np.zeros(num_classes, np.int64)
    for labels in label_arrays:
        counts += label_counts(labels, num_classes)[:num_classes]
    return tail_class_weights(counts)


def project_class_weights(project: Project) -> np.ndarray | None:
    """:func:`class_weights` of the project's final human labels (None without labels)."""
    labelmap = project.label_map
    labeled, _ = project.training_split(strict=False)
    if labelmap is None or not labeled:
        return None
    return class_weights((read_labels(c.label_path, labelmap=labelmap).array for c in labeled), labelmap.num_classes)


def predicted_by(project: Project, run_id: int) -> set[str]:
    """Cases that already hold a (not removed) prediction of run ``run_id``."""
    return {row["case_id"] for row in project.predictions(run_id)}


def store_predictions(project: Project, run_id: int, model: LoadedModel, specs: Sequence[CaseSpec], weights,
                      emit: Callable, cancel: Callable[[], bool] | None, *, skip: set[str] = frozenset(),
                      first: str | None = None) -> int:
    """Predict ``specs`` with ``model`` and store each as a ``model`` revision of ``run_id``.

    Emits ``StageEvent("predicting", case id, windows done, windows total)`` window batch by
    window batch and a ``PredictionStoredEvent`` as each case is stored; ``cancel`` stops
    between window batches (raising ``InferenceCancelled``) and between cases; a case is
    stored whole or not at all. Cases in ``skip`` (predicted by this run before it was
    interrupted) are not predicted again. ``first``: a case id to predict before the others
    (the one a user has open). Returns the number stored.
    """
    todo = sorted((s for s in specs if s.case_id not in skip), key=lambda s: s.case_id != first)
    for spec in todo:
        check_cancel(cancel, "storing predictions")
        volume = read_volume(spec.image_path)
        labels, uncertainty, score, per_class = predict_with_uncertainty(
            model, volume, class_weights=weights, cancel=cancel,
            progress=lambda done, total, cid=spec.case_id: emit(StageEvent("predicting", cid, done, total)),
        )
        revision = project.add_prediction(run_id, spec.case_id, labels, score, per_class, uncertainty_map=uncertainty)
        emit(PredictionStoredEvent(spec.case_id, int(revision), float(score)))
    return len(todo)
