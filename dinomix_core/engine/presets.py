"""Named training recipes: TrainConfig fields kept in one place for every front end.

Why: the demo (``dinomix demo``) and the GUI's *Better first model* must train the same
model, and a recipe typed in two places drifts (the demo and the GUI preset once differed in
steps and neither reached a usable model); the GUI's *Quick first model* is defined here too. Patch sizes are (z, y, x) voxels.
"""

from __future__ import annotations

from dinomix_core.engine.config import TrainConfig

# Students that never down-sample z (dinomix_core/models/unet2d.py): a 4-slice patch passes
# them and not the 3D students. Named here, not imported, so the presets stay free of torch.
SLICE_STUDENTS = ("unet2d", "unet2.5d")

# The 3D students' patch for the phantom-sized recipes: 16 slices clear a depth-3 unet3d's
# down-sampling; a 3D student chosen on a slice recipe trains on it (``with_student``).
PATCH_3D = (16, 64, 64)

# "quick": a first usable model on a phantom-sized CT (48 x 96 x 96 voxels at 5 x 4 x 4 mm)
# on CPU, for `dinomix demo` and the GUI's *Better first model*. Measured in README.md (the
# `make demo` paragraph) and benchmarks/README.md ("The demo's recipe").
QUICK: dict = dict(
    # The 2.5D student: axial slices with one neighbour above and below as input channels,
    # on whole 96 x 96 slices, 4 per patch. On the demo's held-out cases (2 labeled phantoms,
    # random teacher, 2 idle cores) 1,000 steps give 54.7% mean Dice with every organ above 0
    # in 228 s, where the 3D student (unet3d, 16 x 64 x 64 patches) reached 48.7-49.4% in 600
    # steps and as long, with the left adrenal gland and the pancreas or oesophagus at 0, and
    # the plain 2D student 53.2% with the oesophagus at 0 in 1,200 steps.
    student="unet2.5d", student_width=8, student_depth=3, patch_size=(4, 96, 96),
    batch_labeled=2, batch_unlabeled=2,
    # AdamW at 1e-2 needs the warm-up; the cosine then decays it to 0 (a one-cycle shape).
    optimizer="adamw", lr=1e-2, lr_schedule="cosine", warmup_fraction=0.05,
    # PIC's class weights end uniform with the sampling curriculum: at full strength to the
    # end they make the student over-segment the large organs (benchmarks/README.md section 1).
    pic_anneal_weights=True,
    # One DINOv3 token per 16 x 16 voxels: the teacher runs at the slice's own size, a quarter
    # of the tokens (and about half the time) of stride 8, for every case of the run.
    token_stride=16,
    # 9 in 10 patches centred on an organ voxel, the organ drawn by inverse class frequency:
    # a 4-slice patch at random is mostly background above and below the organs.
    fg_fraction=0.9,
    patch_class_weighting="inverse-frequency",
    steps=1000,
)

# "first-overlay": the fastest model worth showing, for the GUI's *Quick first model*: the same
# recipe with the plain 2D student, 200 steps (its own one-cycle schedule), the large organs
# first. At 200 steps the 2D student is ahead: 19.6% held-out mean Dice (liver 83, spleen 47,
# stomach 47) against 10.2% for the 2.5D one, whose extra input channels need more steps
# (one thread of the 2-core build machine, the other busy; 74-76 s of training).
FIRST_OVERLAY: dict = dict(QUICK, student="unet2d", steps=200)

PRESETS: dict[str, dict] = {"quick": QUICK, "first-overlay": FIRST_OVERLAY}


def preset_fields(name: str, **overrides) -> dict:
    """A copy of preset ``name``'s TrainConfig fields with ``overrides`` on top."""
    if name not in PRESETS:
        raise KeyError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}


def preset_config(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of preset ``name`` with ``overrides`` (any TrainConfig field)."""
    return TrainConfig(**preset_fields(name, **overrides))


def with_student(fields: dict, student: str) -> dict:
    """A copy of a recipe's ``fields`` for ``student``.

    A slice recipe's 4-slice patch cannot pass a 3D student's down-sampling, so a 3D student
    chosen on it trains on :data:`PATCH_3D` instead of being refused.
    """
    out = dict(fields, student=student)
    if fields.get("student") in SLICE_STUDENTS and student not in SLICE_STUDENTS:
        out["patch_size"] = PATCH_3D
    return out

