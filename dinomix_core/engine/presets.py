"""Named training recipes: TrainConfig fields kept in one place for every front end.

Why: the demo (``dinomix demo``) and the GUI's *Better first model* must train the same
model, and a recipe typed in two places drifts (the demo and the GUI preset once differed in
steps and neither reached a usable model); the GUI's *Quick first model* is defined here too. Patch sizes are (z, y, x) voxels.
"""

from __future__ import annotations

from dinomix_core.engine.config import TrainConfig

# "quick": a first usable model on a phantom-sized CT (48 x 96 x 96 voxels at 5 x 4 x 4 mm)
# on CPU. Measured in README.md (the `make demo` paragraph).
QUICK: dict = dict(
    student="unet3d", student_width=8, student_depth=3, patch_size=(16, 64, 64),
    batch_labeled=2, batch_unlabeled=2,
    # AdamW at 1e-2 needs the warm-up; the cosine then decays it to 0 (a one-cycle shape).
    optimizer="adamw", lr=1e-2, lr_schedule="cosine", warmup_fraction=0.05,
    # PIC's class weights end uniform with the sampling curriculum: at full strength to the
    # end they make the student over-segment the large organs (benchmarks/README.md section 1).
    pic_anneal_weights=True,
    # One DINOv3 token per 16 x 16 voxels: the teacher runs at the slice's own size, a quarter
    # of the tokens (and about half the time) of stride 8, for every case of the run.
    token_stride=16,
    # Foreground-centred patches drawn by inverse class frequency: at 500 steps and the
    # default inverse-sqrt the left adrenal gland stayed at 0 Dice (48.2% mean); with it,
    # 600 steps reach 50.3% with every organ above 0 (README.md, the `make demo` paragraph).
    patch_class_weighting="inverse-frequency",
    steps=600,
)

# "first-overlay": the fastest model worth showing, for the GUI's *Quick first model*. The 2D
# student (axial slices, no z context) on whole 96 x 96 slices, 4 per patch, costs a quarter of
# the "quick" step on CPU (0.33 against 1.16 s on 2 idle cores; 0.87 s since 3D students train
# channels-last). On the demo's held-out cases (2 labeled phantoms, random teacher, one core of
# the shared build machine): 200 steps 18.1% mean Dice (liver 89, stomach 55, spleen 49, right
# kidney 44, the rest 0) in 134 s of training; 300 steps 29.6% in 188 s; 600 steps 46.5%
# (esophagus and left adrenal still 0), where the 3D "quick" recipe reaches 47.7-50.3% with
# the small organs. So it gives the large organs first, and the 3D recipe is the better model
# that follows.
FIRST_OVERLAY: dict = dict(QUICK, student="unet2d", patch_size=(4, 96, 96), steps=200)

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

    The 2D recipe's 4-slice patch cannot pass a 3D student's down-sampling, so a 3D student
    chosen on it trains on the 3D "quick" recipe's patch instead of being refused.
    """
    out = dict(fields, student=student)
    if fields.get("student") == "unet2d" and student != "unet2d":
        out["patch_size"] = QUICK["patch_size"]
    return out

