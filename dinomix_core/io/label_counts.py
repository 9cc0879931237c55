"""Voxels per label value of a class map, fast enough for a full CT on the GUI's schedule.

Why not a plain ``np.bincount``: it first casts every voxel to int64. For a 512 x 512 x 300
uint8 map that is 330-440 ms and a 630 MB temporary; ``torch.bincount`` counts the uint8 data
as it lies in 49 ms on 2 cores and releases the GIL, so a count in a worker thread leaves
the GUI thread free (measured 2026-12-05 on the 2-core build machine, random labels 0..13:
``python -m benchmarks.gui_step_cost`` times the whole table update). torch is used only
when the process has already imported it (the app, the training worker): importing it for
one count costs 1.5 s, more than the count saves. Otherwise numpy counts in slabs of 4 M
voxels: 210 ms for the same map, with a 32 MB temporary.
"""

from __future__ import annotations

import sys

import numpy as np

_SLAB_VOXELS = 1 << 22  # numpy's int64 temporary per slab: 32 MB


def label_counts(labels_zyx: np.ndarray, minlength: int = 0) -> np.ndarray:
    """Number of voxels of each value in a non-negative integer (z, y, x) map, int64, index = value.

    The result has ``max(minlength, largest value + 1)`` entries. Any array shape is accepted;
    only the values matter (no spacing involved: multiply by the voxel volume in mm^3 for mm^3).
    """
    array = np.asarray(labels_zyx)
    if not np.issubdtype(array.dtype, np.integer):
        raise TypeError(f"label_counts needs an integer class map, got {array.dtype}")
    torch = sys.modules.get("torch")
    if torch is not None and array.dtype == np.uint8 and array.size:
        flat = torch.from_numpy(np.ascontiguousarray(array).reshape(-1))
        return torch.bincount(flat, minlength=minlength).numpy().astype(np.int64, copy=False)
    flat = array.reshape(-1)
    counts = np.zeros(int(minlength), np.int64)
    for start in range(0, flat.size, _SLAB_VOXELS):
        part = np.bincount(flat[start:start + _SLAB_VOXELS].astype(np.int64, copy=False))
        if part.size > counts.size:
            part[: counts.size] += counts
            counts = part
        else:
            counts[: part.size] += part
    return counts
