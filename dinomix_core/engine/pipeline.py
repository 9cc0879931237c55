"""End-to-end jobs shared by the CLI, the benchmarks and the GUI: train from a data set, predict files.

These functions do the wiring (data set → cases → teacher tokens → trainer; checkpoint →
sliding window → label file) so every front end runs the very same code path.
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Callable, Sequence

import numpy as np
import torch

from dinomix_core.data.dataset import (CaseSpec, load_cases, load_nnunet_dataset, remove_spilled, resolve_target_spacing,
                                        select_labeled, spill_folder)
from dinomix_core.data.geometry import CANONICAL_ORIENTATION
from dinomix_core.data.preprocess import student_intensity
from dinomix_core.data.token_cache import TokenCache
from dinomix_core.engine.checkpoint import MODEL_KIND, load_checkpoint
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.config_checks import check_split
from dinomix_core.engine.distributed import DistContext
from dinomix_core.engine.events import CancelToken, Cancelled, StageEvent, TrainingCancelled, emit_all
from dinomix_core.engine._regrid import needs_regrid, predict_labels_regridded, predict_with_uncertainty_regridded
from dinomix_core.engine._uncertainty import predict_with_uncertainty_bounded
from dinomix_core.engine.inference_settings import inference_settings
from dinomix_core.engine.inferer import predict_volume
from dinomix_core.engine.postprocess import PostProcessing, plan_for
from dinomix_core.engine.trainer import TeacherInfo, Trainer, TrainResult
from dinomix_core.io import LabelMap, Volume, read_volume, write_labels
from dinomix_core.io.errors import DinomixInputError
from dinomix_core.models import student_from_config
from dinomix_core.models.teacher import build_teacher

_SLAB = 8  # z-slices per step of the per-voxel uncertainty: bounds its temporaries


def default_cache_dir() -> Path:
    """Teacher-token cache shared by runs: $DINOMIX_CACHE_DIR or the per-user cache."""
    env = os.environ.get("DINOMIX_CACHE_DIR")
    if env:
        return Path(env)
    import platformdirs

    return Path(platformdirs.user_cache_dir("dinomix")) / "tokens"


def make_teacher(config: TrainConfig, weights: str | None, device: torch.device, *, arch_overrides: dict | None = None):
    """The frozen DINOv3 teacher for FKD, or None when the method does not use it.

    ``weights``: a path, "random" (explicit, reported as such) or None/"auto" (installed
    weights; a clear error that says where to get them when missing).
    """
    if not config.use_fkd:
        return None
    teacher = build_teacher(config.teacher, weights=weights or "auto", **(arch_overrides or {}))
    return teacher.to(device)


def train_on_specs(
    config: TrainConfig,
    labeled: Sequence[CaseSpec],
    unlabeled: Sequence[CaseSpec],
    labelmap: LabelMap,
    out_dir: str | Path,
    *,
    teacher_weights: str | None = None,
    teacher_overrides: dict | None = None,
    teacher=None,
    val: Sequence[CaseSpec] = (),
    cache_dir: str | Path | None = None,
    callbacks: Sequence[Callable] = (),
    cancel: CancelToken | None = None,
    dist: DistContext | None = None,
    resume: bool = False,
) -> TrainResult:
    """Load the cases (with cached DINOv3 tokens when FKD is on) and train one model.

    ``teacher``: an already built teacher (see :func:`make_teacher`); by default it is built
    here from ``teacher_weights``. Every case is resampled to ``config.target_spacing``
    (z, y, x mm; None: the labeled cases' median spacing) in LPS order before its tokens are
    computed; ``model.pt`` records that spacing.
    """
    dist = dist or DistContext(device=torch.device("cuda" if torch.cuda.is_available() else "cpu"))
    callbacks = list(callbacks)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if teacher is None:
        teacher = make_teacher(config, teacher_weights, dist.device, arch_overrides=teacher_overrides)
    info = TeacherInfo()
    if teacher is not None:
        info = TeacherInfo(teacher_id=teacher.teacher_id, is_random=bool(teacher.is_random), embed_dim=int(teacher.embed_dim))
    cached = teacher is not None and config.token_source == "cache"
    cache = TokenCache(cache_dir if cache_dir is not None else default_cache_dir(), mmap=True) if cached else None
    spacing = resolve_target_spacing(config.target_spacing, labeled)
    # Cases are memory-mapped from files next to the run (removed when it ends): a data set of
    # many full-size CTs costs page cache, not process memory (``load_cases``' ``spill_dir``).
    spill = spill_folder(out_dir)

    def load(specs, what, group, **tokens):
        emit_all(callbacks, StageEvent("loading", f"{len(specs)} {what} cases"))
        return load_cases(
            specs, labelmap=labelmap, window=tuple(config.teacher_window), stride=config.token_stride,
            clip=config.intensity_window, target_spacing=spacing,
            start_progress=lambda done, total, cid: emit_all(callbacks, StageEvent("loading", cid, done, total)),
            token_progress=lambda cid, done, total: emit_all(callbacks, StageEvent("teacher-tokens", cid, done, total)),
            cancel=cancel, spill_dir=spill / group, **tokens,
        )

    unl_specs = [replace(s, label_path=None) for s in unlabeled] if config.uses_unlabeled else []
    with_tokens = {"teacher": teacher if cached else None, "cache": cache}
    try:
        try:
            loaded_l = load(labeled, "labeled", "labeled", **with_tokens)
            loaded_u = load(unl_specs, "unlabeled", "unlabeled", **with_tokens)
            loaded_v = load(val, "validation", "validation") if val else []
        except Cancelled as exc:
            raise TrainingCancelled(f"{exc}; nothing trained yet") from None
        trainer = Trainer(
            config, loaded_l, loaded_u, labelmap, out_dir=out_dir, teacher=info,
            online_teacher=teacher if (teacher is not None and not cached) else None,
            val_cases=loaded_v, callbacks=callbacks, cancel=cancel, dist=dist, target_spacing=spacing,
        )
        return trainer.fit(resume=resume)
    finally:
        remove_spilled(spill)


def train_on_dataset(
    config: TrainConfig,
    data_dir: str | Path,
    labeled_spec,
    out_dir: str | Path,
    *,
    exclude: Sequence[str] = (),
    val_ids: Sequence[str] = (),
    **kwargs,
) -> TrainResult:
    """Train on an nnU-Net folder: ``labeled_spec`` (N, ids or split file) picks the labeled cases,
    the rest is unlabeled; ``exclude`` (held-out test ids) and ``val_ids`` stay out of training."""
    cases, labelmap, _ = load_nnunet_dataset(data_dir, allow_unlabeled=True)
    held_out = set(exclude) | set(val_ids)
    missing = held_out - {c.case_id for c in cases}
    if missing:
        raise DinomixInputError(data_dir, f"has no case(s) {', '.join(sorted(missing))}.", "check the held-out case ids.")
    pool = [c for c in cases if c.case_id not in held_out]
    labeled, unlabeled = select_labeled(pool, labeled_spec)
    check_split(config, len(labeled), len(unlabeled), data_dir)  # before the teacher and any case loads
    unlabeled_without = [c for c in labeled if c.label_path is None]
    if unlabeled_without:
        raise DinomixInputError(unlabeled_without[0].image_path, "is chosen as labeled but has no label in labelsTr.",
                                "pick labeled cases that have a label file.")
    val = [c for c in cases if c.case_id in set(val_ids)]
    return train_on_specs(config, labeled, unlabeled, labelmap, out_dir, val=val, **kwargs)


class LoadedModel:
    """A trained student with what it needs to predict: class map and preprocessing."""

    def __init__(self, path: str | Path, device: torch.device | str | None = None, *, fast: bool = False,
                 postprocess: str = "auto"):
        """``postprocess``: ``auto`` (the per-class clean-up ``model.pt`` records), ``largest``
        (largest component of every organ) or ``off`` (raw argmax); see ``engine/postprocess.py``."""
        meta, payload = load_checkpoint(path, kind=MODEL_KIND)
        # Overlap, batch, precision, layout, compilation: engine/inference_settings.py (measured).
        self.inference = inference_settings(fast)
        self.path = Path(path)
        self.meta = meta
        self.device = torch.device(device) if device else torch.device("cuda" if torch.cuda.is_available() else "cpu")
        self.model = student_from_config(meta["student"])
        self.model.load_state_dict(payload["state_dict"])
        self.model.to(self.device).eval()
        self.labelmap = LabelMap.from_dataset_json(meta["labelmap"])
        self.clip = tuple(meta["preprocessing"]["clip_hu"])
        self.window = tuple(meta["preprocessing"]["window"])
        # The grid the student was trained on; checkpoints from before these were recorded
        # predict on the input's own grid, as they did.
        spacing = meta["preprocessing"].get("spacing_zyx")
        self.target_spacing = None if spacing is None else tuple(float(v) for v in spacing)
        self.reorient = meta["preprocessing"].get("orientation") == CANONICAL_ORIENTATION
        self.postprocessing = PostProcessing.from_dict(meta.get("postprocessing"))
        self.clean_plan = plan_for(postprocess, self.postprocessing, self.labelmap.num_classes)

    def postprocess_note(self) -> str:
        """What clean-up this model applies, in one line."""
        names = dict(enumerate(self.labelmap.names))
        recorded = self.postprocessing
        if not self.clean_plan:
            return "mask clean-up: off" if recorded.decided_on else recorded.summary(names)
        if self.clean_plan == plan_for("auto", recorded, self.labelmap.num_classes):
            return recorded.summary(names)
        return f"mask clean-up: largest component kept for every organ ({len(self.clean_plan.largest)} classes)"

    def clean(self, labels: Volume) -> Volume:
        """``labels`` with the clean-up applied in place (a no-op when none is chosen)."""
        self.clean_plan.apply(labels.array)
        return labels

    @property
    def teacher_note(self) -> str:
        return self.meta.get("teacher_note", "")

    def preprocess(self, hu: np.ndarray) -> np.ndarray:
        return student_intensity(hu, self.clip)

    def predict(self, volume: Volume, *, tta: bool = False, progress=None, cancel=None, return_probs: bool = False,
                skip_mask: np.ndarray | None = None):
        """Labels on ``volume``'s exact grid (z, y, x); optionally (C, z, y, x) probabilities.

        Windows outside the body of a CT are skipped (its labels there are background), or
        outside ``skip_mask`` when given (labels there are then left as predicted). The
        student runs on the grid it was trained on (LPS, ``target_spacing`` mm); probabilities
        come back to ``volume``'s grid before the argmax (``engine/_regrid.py``).
        """
        if needs_regrid(self, volume):
            out = predict_labels_regridded(self, volume, tta=tta, progress=progress, cancel=cancel,
                                           return_probs=return_probs, skip_mask=skip_mask)
        else:
            options = {} if skip_mask is None else {"skip_mask": skip_mask, "skip_outside_body": False}
            out = predict_volume(
                self.model, volume, preprocess=self.preprocess, window=self.window, **self.inference.options(),
                device=self.device, tta_flips=(1, 2) if tta else (), progress=progress,
                cancel=cancel, return_probs=return_probs, **options,
            )
        # Clean-up on the labels only: probabilities stay the network's own.
        if return_probs:
            return self.clean(out[0]), out[1]
        return self.clean(out)


def voxel_uncertainty(probs: torch.Tensor | np.ndarray) -> np.ndarray:
    """Per-voxel normalised entropy of (C, z, y, x) class probabilities: float16 (z, y, x) in [0, 1].

    0 = one class is certain, 1 = all classes equally likely. Computed slab by slab, so the
    only full-size array besides ``probs`` is the float16 result.
    """
    probs = torch.as_tensor(probs)
    classes = probs.shape[0]
    out = np.empty(tuple(probs.shape[1:]), dtype=np.float16)
    norm = float(np.log(classes)) if classes > 1 else 1.0
    for z0 in range(0, probs.shape[1], _SLAB):
        p = probs[:, z0 : z0 + _SLAB].float()
        entropy = torch.special.xlogy(p, p).sum(dim=0).neg_().div_(norm).clamp_(0.0, 1.0)
        out[z0 : z0 + _SLAB] = entropy.numpy()
    return out


def predict_with_uncertainty(model: LoadedModel, volume: Volume, *, class_weights=None, tta: bool = False,
                             progress=None, cancel=None):
    """Labels, per-voxel uncertainty and the case score of one CT volume.

    Returns ``(labels, uncertainty, score, class_uncertainty)``: the label Volume on
    ``volume``'s exact grid; float16 (z, y, x) normalised entropy in [0, 1] (0 outside the
    body of a CT, where the labels are background by construction); the case score and the
    per-class mean entropy (class value -> [0, 1]) of :func:`ranking.uncertainty_summary`
    with ``class_weights``. ``progress(done, total)`` counts windows; ``cancel()`` raises
    ``InferenceCancelled`` between window batches.
    """
    if needs_regrid(model, volume):  # on the model's grid, back to volume's (engine/_regrid.py)
        labels, *rest = predict_with_uncertainty_regridded(model, volume, class_weights=class_weights, tta=tta,
                                                           progress=progress, cancel=cancel)
    else:
        # Bounded memory: z-slabs are reduced to labels/entropy as windows finish (engine/_uncertainty.py).
        labels, *rest = predict_with_uncertainty_bounded(
            model.model, volume, preprocess=model.preprocess, window=model.window, class_weights=class_weights,
            tta=tta, **model.inference.options(), device=model.device, progress=progress, cancel=cancel)
    # The uncertainty stays the network's own: an island the clean-up removes was still uncertain.
    return (model.clean(labels), *rest)


def predict_file(model: LoadedModel, input_path: str | Path, output_path: str | Path, *, tta: bool = False, progress=None) -> Volume:
    """Read a CT, predict, write the label map atomically with the image's exact geometry."""
    volume = read_volume(input_path)
    labels = model.predict(volume, tta=tta, progress=progress)
    write_labels(labels, output_path, reference=volume)
    return labels

