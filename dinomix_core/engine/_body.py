"""Body mask of a CT volume: where organs can be, so windows of pure air need no network pass."""

from __future__ import annotations

import numpy as np
from scipy import ndimage

# Connect only within an axial slice: a hole is what a slice's body outline encloses.
_IN_SLICE = np.zeros((3, 3, 3), dtype=bool)
_IN_SLICE[1] = ndimage.generate_binary_structure(2, 1)


def body_mask(image_hu: np.ndarray, *, threshold_hu: float = -500.0) -> np.ndarray:
    """Boolean (z, y, x) mask of the patient's body in a CT volume given in HU.

    Voxels above ``threshold_hu`` (-500 HU separates air and lung from tissue), reduced to the
    largest 3D connected component (drops the table, clothing, noise) and with the holes of
    every axial slice filled (lungs, bowel gas, airways are inside the body). Slice-wise
    filling is deliberate: lungs reach the top and bottom slices, so they are never holes
    in 3D. An image with no voxel above the threshold gives an all-False mask.
    """
    image = np.asarray(image_hu)
    if image.ndim != 3:
        raise ValueError(f"body_mask needs a 3D (z, y, x) HU array, got shape {image.shape}")
    tissue = image > threshold_hu
    out = np.zeros(image.shape, dtype=bool)
    box = _bounding_box(tissue)
    if box is None:
        return out
    # Everything outside the tissue's bounding box is air, so labelling inside it gives the
    # same components (a scan's field of view is often half air: that half is skipped).
    tissue = tissue[box]
    labels, count = ndimage.label(tissue)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    body = labels == int(np.argmax(sizes))
    del labels

    # Holes: background regions of a slice that do not reach the border. Within the body's
    # bounding box plus a one-voxel frame, a region that reaches the frame continues outward
    # to the image border, and one that does not is enclosed exactly as in the full slice.
    inner = _bounding_box(body)
    body = np.pad(body[inner], ((0, 0), (1, 1), (1, 1)))
    outside, n_outside = ndimage.label(~body, structure=_IN_SLICE)
    on_border = np.zeros(n_outside + 1, dtype=bool)
    for edge in (outside[:, 0, :], outside[:, -1, :], outside[:, :, 0], outside[:, :, -1]):
        on_border[np.unique(edge)] = True
    on_border[0] = False  # label 0 is the body itself
    filled = ~on_border[outside][:, 1:-1, 1:-1]
    out[tuple(slice(b.start + i.start, b.start + i.stop) for b, i in zip(box, inner))] = filled
    return out


def _bounding_box(mask: np.ndarray) -> tuple[slice, slice, slice] | None:
    """Smallest (z, y, x) slices holding every True voxel, or None when there is none."""
    box = []
    for axis in range(mask.ndim):
        hits = np.flatnonzero(mask.any(axis=tuple(a for a in range(mask.ndim) if a != axis)))
        if hits.size == 0:
            return None
        box.append(slice(int(hits[0]), int(hits[-1]) + 1))
    return tuple(box)
