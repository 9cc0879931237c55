"""Training configuration: one dataclass, method presets that switch DINO-Mix's parts on and off.

The baselines and ablations of METHOD.md come from the same code: ``supervised`` (labeled
patches only), ``mean-teacher`` (+ EMA pseudo-labels on unlabeled patches), ``pic`` (mean
teacher + Progressive Imbalance-aware CutMix), ``fkd`` (mean teacher + Foundational
Knowledge Distillation) and ``dinomix`` (all of it).
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

METHODS = ("supervised", "mean-teacher", "pic", "fkd", "dinomix")

_PARTS = {
    "supervised": dict(use_mean_teacher=False, use_pic=False, use_fkd=False),
    "mean-teacher": dict(use_mean_teacher=True, use_pic=False, use_fkd=False),
    "pic": dict(use_mean_teacher=True, use_pic=True, use_fkd=False),
    "fkd": dict(use_mean_teacher=True, use_pic=False, use_fkd=True),
    "dinomix": dict(use_mean_teacher=True, use_pic=True, use_fkd=True),
}

# The learning rate each optimizer gets when ``lr`` is not given: SGD per the DHC protocol;
# AdamW's measured on the phantom (3e-3 for 1,650 poly steps, benchmarks/README.md section 1).
DEFAULT_LR = {"sgd": 0.03, "adamw": 3e-3}
LR_SCHEDULES = ("poly", "cosine")


def field_default(name: str):
    """The declared default of TrainConfig field ``name`` (``lr``: None, the optimizer's own),
    so option parsers take their defaults from here instead of typing them twice."""
    for f in dataclasses.fields(TrainConfig):
        if f.name == name:
            if f.default is not dataclasses.MISSING:
                return f.default
            return f.default_factory()
    raise KeyError(f"TrainConfig has no field {name!r}")


@dataclass
class TrainConfig:
    method: str = "dinomix"
    # student
    student: str = "unet3d"
    student_width: int = 16
    student_depth: int = 4
    student_norm: str = "instance"
    # data, patches (z, y, x) in voxels
    patch_size: tuple[int, int, int] = (64, 128, 128)
    batch_labeled: int = 2
    batch_unlabeled: int = 2
    fg_fraction: float = 0.67
    # How the class a foreground-centred patch is centred on is drawn (data/patches.py):
    # "inverse-sqrt-frequency" (default), "inverse-frequency" (the rarest organs most), ...
    patch_class_weighting: str = "inverse-sqrt-frequency"
    augment: bool = True
    prefetch: int | None = None  # batches prepared ahead on a thread; None: 2 on CUDA, 0 on CPU
    intensity_window: tuple[float, float] = (-75.0, 275.0)  # DHC clip, HU
    # Voxel spacing (z, y, x mm) every case is resampled to; None: the median of the labeled cases.
    target_spacing: tuple[float, float, float] | None = None
    # optimisation (DHC protocol: SGD 0.03, momentum 0.9, Nesterov, wd 3e-5, poly). "adamw"
    # converges in far fewer steps, for short CPU runs such as the demo.
    optimizer: str = "sgd"
    steps: int = 1000
    # None: the optimizer's own default (DEFAULT_LR), filled in at construction so the recorded
    # config names the rate that ran. AdamW at SGD's 0.03 diverges or stalls.
    lr: float | None = None
    # "poly" (DHC / nnU-Net: base * (1 - t)^0.9) or "cosine" (half cosine to 0); either after a
    # linear warm-up over the first ``warmup_fraction`` of the steps (0: none).
    lr_schedule: str = "poly"
    warmup_fraction: float = 0.0
    momentum: float = 0.9
    weight_decay: float = 3e-5
    seed: int = 0
    # mean teacher
    ema_decay: float = 0.99
    confidence: float = 0.9
    tail_confidence: float = 0.7
    # Weight of the pseudo-label (unlabeled / mixed-unlabeled) loss at full ramp. 0.1, not 1: at
    # 1.0 the EMA teacher's early mistakes outweigh 2 labeled volumes and minority organs
    # collapse (phantom, 1,650 steps, seed 0: DINO-Mix 41.1% mean / 25.6% tail at 1.0, 57.2% /
    # 54.8% at 0.1; supervised-only 58.6% / 41.1%). See benchmarks/README.md, section 1.
    lambda_u: float = 0.1
    # Gaussian noise (std, clipped at 2 std) on the student's view of unlabeled patches; the EMA
    # teacher labels the clean view. 0 = student and teacher see the same input.
    student_noise: float = 0.0
    rampup_fraction: float = 0.4  # lambda_u and lambda_fkd reach full weight at this share of training
    # PIC
    pic_gamma: float = 1.0
    pic_beta: float = 0.5
    pic_box: tuple[float, float] = (0.25, 0.5)
    # The boxes' depth (z) as a fraction of the patch depth; None: as pic_box. An ablation:
    # (1, 1) pastes whole z columns (benchmarks/README.md section 1).
    pic_box_z: tuple[float, float] | None = None
    # Anneal the class-weight exponent with the sampling curriculum (beta * alpha(t)) instead of
    # keeping it at beta: the weights end uniform, as the class sampling does. The default since
    # 2026-12-01: on the phantom table's protocol it beat full-strength weights on all 3 seeds
    # (DINO-Mix mean / tail Dice 64.2 / 54.7 against 55.3 / 51.2; benchmarks/README.md section 1).
    pic_anneal_weights: bool = True
    freq_momentum: float = 0.99
    # FKD
    teacher: str = "vit_small_patch16_dinov3"
    teacher_window: tuple[float, float] = (350.0, 40.0)  # width, level (abdomen)
    token_stride: int = 8
    token_source: str = "cache"  # "cache" (tokens once per volume) or "online" (per step)
    lambda_fkd: float = 0.5
    prototype_disagree_weight: float = 0.3
    # bookkeeping
    val_every: int = 0
    checkpoint_every: int = 50
    # > 0: a time budget for the training steps, in seconds. After a probe of the first steps
    # the step count is fixed so the steps end within it (``steps`` stays the upper bound); the
    # fixed count is saved with the state, so a resumed run keeps it. One process only.
    time_budget_s: float = 0.0
    amp: bool = True
    # switches, filled from the method preset unless given explicitly
    use_mean_teacher: bool | None = None
    use_pic: bool | None = None
    use_fkd: bool | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise ValueError(f"unknown method {self.method!r}; choose one of {', '.join(METHODS)}")
        for key, value in _PARTS[self.method].items():
            if getattr(self, key) is None:
                setattr(self, key, value)
        self.patch_size = tuple(int(p) for p in self.patch_size)
        self.intensity_window = tuple(float(v) for v in self.intensity_window)
        if self.target_spacing is not None:
            spacing = tuple(float(v) for v in self.target_spacing)
            if len(spacing) != 3 or not all(0 < v < float("inf") for v in spacing):
                raise ValueError(f"target_spacing must be three positive mm values (z, y, x), got {self.target_spacing!r}")
            self.target_spacing = spacing
        self.teacher_window = tuple(float(v) for v in self.teacher_window)
        self.pic_box = tuple(float(v) for v in self.pic_box)
        if self.pic_box_z is not None:
            self.pic_box_z = tuple(float(v) for v in self.pic_box_z)
        if self.optimizer not in DEFAULT_LR:
            raise ValueError("optimizer must be 'sgd' or 'adamw'")
        from dinomix_core.data.patch_options import CLASS_WEIGHTINGS

        if self.patch_class_weighting not in CLASS_WEIGHTINGS:
            raise ValueError(f"patch_class_weighting must be one of {', '.join(CLASS_WEIGHTINGS)}, "
                             f"got {self.patch_class_weighting!r}")
        if self.lr is None:
            self.lr = DEFAULT_LR[self.optimizer]
        if self.lr_schedule not in LR_SCHEDULES:
            raise ValueError(f"lr_schedule must be one of {', '.join(LR_SCHEDULES)}, got {self.lr_schedule!r}")
        if not 0.0 <= float(self.warmup_fraction) < 1.0:
            raise ValueError(f"warmup_fraction must be within [0, 1), got {self.warmup_fraction!r}")
        if self.token_source not in ("cache", "online"):
            raise ValueError("token_source must be 'cache' or 'online'")

    def validate(self, *, device=None, names: dict | None = None) -> "TrainConfig":
        """Refuse settings that cannot train, before any slow work (one DinomixInputError line).

        Steps, learning rate, weights, batch sizes, the patch (z, y, x voxels) against the
        student's down-sampling and the token stride, and (with ``device``) a memory estimate.
        ``names`` maps fields to the user's spelling (the CLI's ``--steps``). Returns self.
        """
        from dinomix_core.engine.config_checks import validate_config

        validate_config(self, device=device, names=names)
        return self

    @property
    def uses_unlabeled(self) -> bool:
        return bool(self.use_mean_teacher)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict) -> "TrainConfig":
        """A config from ``to_dict`` output; keys that are no longer fields (``log_every`` and
        ``extra`` of older runs) are ignored, so old checkpoints and run records still load."""
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in data.items() if k in names})
