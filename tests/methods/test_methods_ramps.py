"""Ramp-up and learning-rate schedules (dinomix_core.methods.ramps)."""

from __future__ import annotations

import math

import pytest

from dinomix_core.methods.ramps import linear_rampup, poly_lr, sigmoid_rampup


def test_sigmoid_rampup_values_and_clipping():
    assert sigmoid_rampup(0.0) == pytest.approx(math.exp(-5.0))
    assert sigmoid_rampup(0.5) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(1.0) == 1.0
    assert sigmoid_rampup(1.7) == 1.0
    assert sigmoid_rampup(-0.3) == pytest.approx(math.exp(-5.0))
    # a ramp over the first 40 % of training is complete at t = 0.4 and half-way at 0.2
    assert sigmoid_rampup(0.4, length=0.4) == 1.0
    assert sigmoid_rampup(0.2, length=0.4) == pytest.approx(math.exp(-1.25))
    assert sigmoid_rampup(0.0, length=0.0) == 1.0


def test_linear_rampup_and_poly_lr():
    assert linear_rampup(0.25) == 0.25
    assert linear_rampup(0.25, length=0.5) == 0.5
    assert linear_rampup(2.0) == 1.0
    assert poly_lr(0.03, 0.0) == pytest.approx(0.03)
    assert poly_lr(0.03, 0.5) == pytest.approx(0.03 * 0.5**0.9)
    assert poly_lr(0.03, 1.0) == 0.0
    assert poly_lr(0.03, 1.2) == 0.0
