"""Named training recipes: TrainConfig fields kept in one place for every front end.

Why: the demo (``dinomix demo``) and the GUI's *Quick first model* must train the same
model, and a recipe typed in two places drifts (the demo and the GUI preset once differed in
steps and neither reached a usable model). Patch sizes are (z, y, x) voxels.
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

PRESETS: dict[str, dict] = {"quick": QUICK}

# The GUI's *Quick first model* trains the "quick" recipe for this many steps (half the demo's)
# so a first overlay comes sooner; its aim is about two minutes on 2 CPU cores, which the
# measured step cost (about 1.4 s on one near-idle core) does not yet meet.
QUICK_FIRST_OVERLAY_STEPS = 300


def preset_fields(name: str, **overrides) -> dict:
    """A copy of preset ``name``'s TrainConfig fields with ``overrides`` on top."""
    if name not in PRESETS:
        raise KeyError(f"unknown training preset {name!r}; choose one of {', '.join(PRESETS)}")
    return {**PRESETS[name], **overrides}


def preset_config(name: str, **overrides) -> TrainConfig:
    """The TrainConfig of preset ``name`` with ``overrides`` (any TrainConfig field)."""
    return TrainConfig(**preset_fields(name, **overrides))
