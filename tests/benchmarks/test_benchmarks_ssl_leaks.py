"""The leak measure behind the SSL table's HD95 analysis (benchmarks/ssl_leaks.py)."""

from __future__ import annotations

import numpy as np

from benchmarks.ssl_leaks import leaks


def test_a_thin_connected_leak_is_counted_by_distance_and_z_overshoot():
    gt = np.zeros((20, 16, 16), np.uint8)
    gt[8:12, 4:10, 4:10] = 3  # the organ: slices 8-11
    pred = gt.copy()
    pred[0:8, 6, 6] = 3  # a one-voxel column up to slice 0, touching the organ
    voxels, far, overshoot = leaks(pred, gt, 3, (5.0, 1.0, 1.0), far_mm=20.0)
    assert voxels == int((pred == 3).sum()) and overshoot == 8
    assert far == 4  # slices 0-3 lie 25-40 mm above the organ's top (slice 8, 5 mm apart)
    assert leaks(pred, gt, 4, (5.0, 1.0, 1.0), 20.0) is None  # a class in neither map
    exact = leaks(gt, gt, 3, (5.0, 1.0, 1.0), 20.0)
    assert exact == (int((gt == 3).sum()), 0, 0)
