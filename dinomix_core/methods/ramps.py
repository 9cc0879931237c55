"""Schedules over training progress ``t`` in [0, 1] (fraction of the run, not epochs).

Progress outside [0, 1] is clipped, so a resumed or extended run never produces weights above 1
or negative learning rates.
"""

from __future__ import annotations

import math

__all__ = ["sigmoid_rampup", "linear_rampup", "poly_lr"]


def _clip01(t: float) -> float:
    return min(max(float(t), 0.0), 1.0)


def sigmoid_rampup(t: float, length: float = 1.0) -> float:
    """``exp(-5 (1 - clip(t / length, 0, 1))^2)``: the SSL baselines' ramp for lambda_u, lambda_fkd.

    ``length`` is the fraction of training the ramp takes (1.0: the whole run); ``length <= 0``
    means no ramp (always 1). Starts at exp(-5) ~ 0.0067 rather than 0, as in the baselines.
    """
    if length <= 0:
        return 1.0
    phase = 1.0 - _clip01(float(t) / length)
    return math.exp(-5.0 * phase * phase)


def linear_rampup(t: float, length: float = 1.0) -> float:
    """``clip(t / length, 0, 1)``; ``length <= 0`` means no ramp (always 1)."""
    if length <= 0:
        return 1.0
    return _clip01(float(t) / length)


def poly_lr(base: float, t: float, power: float = 0.9) -> float:
    """Polynomial decay ``base * (1 - clip(t, 0, 1))^power`` (DHC / nnU-Net schedule)."""
    return float(base) * (1.0 - _clip01(t)) ** power
