"""Learning-rate schedules over training progress ``t`` in [0, 1] (a share of the steps).

Why a warm-up and a cosine: a short CPU run (the demo, the GUI's quick preset) only reaches
a usable model at a high AdamW rate, and a high rate from the first step on a randomly
initialised network with instance norm throws the first updates far off; a few percent of
linear warm-up followed by a half cosine to zero (a one-cycle shape) trains faster than the
DHC poly decay at the rate that is stable without warm-up.
"""

from __future__ import annotations

import math

from dinomix_core.methods.ramps import poly_lr

__all__ = ["learning_rate"]


def learning_rate(base: float, t: float, schedule: str = "poly", warmup: float = 0.0) -> float:
    """The rate at progress ``t`` (clipped to [0, 1]) of a ``base`` rate.

    ``warmup`` (share of the run, in [0, 1)): linear from near 0 (``base * t / warmup``, at
    least ``base / 1000``) up to ``base``; then ``schedule`` over the rest of the run: ``"poly"`` (``(1 - s)^0.9``) or ``"cosine"`` (``(1 + cos(pi s)) / 2``), with ``s``
    the progress after the warm-up.
    """
    t = min(max(float(t), 0.0), 1.0)
    warmup = float(warmup)
    if warmup > 0 and t < warmup:
        return float(base) * max(t, 1e-3 * warmup) / warmup
    s = (t - warmup) / (1.0 - warmup) if warmup > 0 else t
    if schedule == "poly":
        return poly_lr(base, s)
    if schedule == "cosine":
        return float(base) * 0.5 * (1.0 + math.cos(math.pi * s))
    raise ValueError(f"unknown learning-rate schedule {schedule!r}; use 'poly' or 'cosine'")
