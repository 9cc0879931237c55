"""What a trained model records about itself in ``model.pt``: student, classes, grid, teacher, clean-up.

Split from ``trainer.py`` (which writes it) because inference, the CLI and the benchmarks
read and build the same record.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

from dinomix_core.data.geometry import CANONICAL_ORIENTATION, same_spacing
from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.postprocess import PostProcessing
from dinomix_core.io import LabelMap


@dataclass
class TeacherInfo:
    """What the run records about its DINOv3 teacher (never the teacher itself)."""

    teacher_id: str = "none"
    is_random: bool = False
    embed_dim: int | None = None


def model_meta(cfg: TrainConfig, student, labelmap: LabelMap, teacher: TeacherInfo, step: int, *,
               spacing_zyx: Sequence[float] | None = None, postprocessing: PostProcessing | None = None) -> dict:
    """What ``model.pt`` records. ``preprocessing.spacing_zyx`` (mm) and ``orientation`` tell
    inference which grid the student was trained on (absent in checkpoints from before them:
    such a model predicts on the input's own grid)."""
    preprocessing = {"clip_hu": list(cfg.intensity_window), "window": list(cfg.patch_size),
                     "orientation": CANONICAL_ORIENTATION}
    if spacing_zyx is not None:
        preprocessing["spacing_zyx"] = [float(v) for v in spacing_zyx]
    return {
        "student": student.config,
        "labelmap": labelmap.to_dataset_json_dict(),
        "preprocessing": preprocessing,
        "method": cfg.method,
        "steps": step,
        "teacher": vars(teacher),
        "teacher_note": teacher_note(teacher, cfg),
        "postprocessing": (postprocessing or PostProcessing()).to_dict(),
    }


def _run_spacing(requested: Sequence[float] | None, labeled: Sequence) -> tuple[float, float, float] | None:
    """The spacing to record: the one given, else the labeled cases' common spacing (None if they differ)."""
    if requested is not None:
        return tuple(float(v) for v in requested)
    spacings = [tuple(c.spacing_zyx) for c in labeled if getattr(c, "spacing_zyx", None) is not None]
    if spacings and all(same_spacing(s, spacings[0]) for s in spacings):
        return tuple(float(v) for v in spacings[0])
    return None


def teacher_note(teacher: TeacherInfo, cfg: TrainConfig) -> str:
    if not cfg.use_fkd:
        return "no foundation teacher used"
    if teacher.is_random:
        return "RANDOM TEACHER: DINOv3 weights were not installed; FKD distilled from a randomly initialised ViT"
    return f"DINOv3 teacher {teacher.teacher_id}"
