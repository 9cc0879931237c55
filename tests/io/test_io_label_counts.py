"""label_counts: the counts of np.bincount, through slabs of non-zero voxels."""

import numpy as np
import pytest

from dinomix_core.io import label_counts as module
from dinomix_core.io.label_counts import label_counts


def _expected(array, minlength=0):
    return np.bincount(array.reshape(-1).astype(np.int64), minlength=minlength)


def test_counts_match_bincount_across_slabs_views_and_empty_maps(monkeypatch):
    monkeypatch.setattr(module, "_SLAB_VOXELS", 1000)  # several slabs, one of them partial
    rng = np.random.default_rng(0)
    labels = rng.integers(0, 14, (7, 30, 31), dtype=np.uint8)
    labels[:2] = 0  # whole slabs of background only
    labels[6, 0, 0] = 13
    assert np.array_equal(label_counts(labels, 20), _expected(labels, 20))
    assert np.array_equal(label_counts(labels), _expected(labels))
    view = labels[:, ::-1, 1:]  # not contiguous: counted all the same
    assert np.array_equal(label_counts(view, 14), _expected(np.ascontiguousarray(view), 14))
    assert label_counts(labels, 20).dtype == np.int64
    background = np.zeros((3, 40, 40), np.uint8)
    assert np.array_equal(label_counts(background, 3), [4800, 0, 0])
    assert np.array_equal(label_counts(background), [4800])
    assert np.array_equal(label_counts(np.zeros((0, 4, 4), np.uint8), 3), [0, 0, 0])
    assert label_counts(np.zeros((0, 4, 4), np.uint8)).size == 0


def test_wide_labels_and_non_integer_maps():
    wide = np.array([[[0, 300, 300]]], np.uint16)
    counts = label_counts(wide, 5)
    assert counts.size == 301 and counts[0] == 1 and counts[300] == 2
    with pytest.raises(TypeError, match="integer class map"):
        label_counts(np.zeros((2, 2, 2), np.float32))
