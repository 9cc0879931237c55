"""How the product runs sliding-window inference: the measured defaults and the ``fast`` preset.

Why one place: ``dinomix predict``, the predictions a project stores after a training run and
the GUI's *Predict* all go through ``engine/pipeline.py``; they read their window overlap,
batch size, precision, layout and compilation from here, so one measurement changes all of
them together. The figures behind each choice are in benchmarks/README.md section 3
(``python -m benchmarks.inference --levers``): a trained default student (``unet3d`` width
16, depth 4) on held-out phantom cases, each lever against the float32, overlap-0.5
reference, for speed and for Dice / label agreement.

* ``DEFAULT`` keeps the mean Dice within 0.5 points of that reference: it is the reference's
  overlap (0.5) in the faster contiguous layout, with the same labels.
* ``FAST`` is for a first overlay (``dinomix predict --fast``, the GUI's "fast first
  overlay", ``PredictJobSpec.fast``): fewer windows, no blending across window seams.

Test-time flips are not a setting here: they stay off unless asked for (``--tta``), at 4x
the time.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

from dinomix_core.engine.inferer import PRECISIONS


@dataclass(frozen=True)
class InferenceSettings:
    """Speed options of ``inferer.sliding_window_probs`` / ``_slab_inferer.stream_probabilities``.

    ``overlap``: fraction of a window shared with its neighbour on every axis (z, y, x).
    ``sw_batch_size``: windows per network call. ``precision``: see ``inferer`` ("auto":
    bf16 on CUDA and on CPUs with native bf16, float32 elsewhere). ``channels_last``: None =
    on CPU. ``compile``: ``torch.compile`` with an eager fallback.
    """

    overlap: float = 0.5
    sw_batch_size: int = 2
    precision: str = "auto"
    channels_last: bool | None = None
    compile: bool = False

    def __post_init__(self) -> None:
        if not 0.0 <= float(self.overlap) < 1.0:
            raise ValueError(f"overlap must be in [0, 1), got {self.overlap!r}")
        if not isinstance(self.sw_batch_size, int) or self.sw_batch_size < 1:
            raise ValueError(f"sw_batch_size must be a positive int, got {self.sw_batch_size!r}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    def options(self) -> dict:
        """Keyword options for the inferer functions."""
        return asdict(self)


# The float32, overlap-0.5 reference every lever is measured against (nnU-Net's overlap).
REFERENCE = InferenceSettings(overlap=0.5, sw_batch_size=2, precision="float32", channels_last=None, compile=False)

# Measured (benchmarks/README.md section 3, 2-core AMD EPYC, the default student trained
# 1,000 steps, 35.7% mean Dice on two held-out phantom cases): overlap 0.25 ran 64 instead of
# 125 windows per case (0.43x the CPU time) but cost 4.1 Dice points (liver 85.7 -> 80.3 on
# one case), far over the 0.5-point budget, so the default keeps nnU-Net's 0.5. The
# contiguous layout gives the same labels as channels-last at 0.82x its CPU time. bf16 is
# emulated on AVX2 CPUs (much slower), so "auto" picks float32 there and bf16 on CUDA / AMX /
# AVX512-BF16. torch.compile costs ~41 CPU s of compilation before its first window, more than
# it saves on one CT at the student's spacing, so it stays an option. A 512x512x200 CT
# (0.98 mm, 1.2 mm slices) through `dinomix predict` with these settings: see section 3.
DEFAULT = InferenceSettings(overlap=0.5, sw_batch_size=2, precision="auto", channels_last=False, compile=False)

# A first overlay: windows only touch (27 instead of 125 windows on a held-out phantom case,
# 0.20x the CPU time, 2.9 Dice points below the default); seams between windows are not blended.
FAST = InferenceSettings(overlap=0.0, sw_batch_size=2, precision="auto", channels_last=False, compile=False)


def inference_settings(fast: bool = False) -> InferenceSettings:
    """``FAST`` for a first overlay, else ``DEFAULT``."""
    return FAST if fast else DEFAULT
