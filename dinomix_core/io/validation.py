"""Checks that turn bad voxels or geometry into a clear error naming the file and the fix.

Every check works on the (z, y, x) array in z-slabs, so validating a large CT adds no
full-size temporary array.
"""

from __future__ import annotations

import os

import numpy as np
import SimpleITK as sitk

from .errors import GeometryMismatchError, LabelValueError, VolumeReadError
from .label_counts import label_counts
from .volume import Volume

_SLAB = 16  # z slices per chunk for whole-volume checks
_INT16 = np.iinfo(np.int16)


def check_3d_scalar(dimension: int, size: tuple[int, ...], components: int, path, *, fix_hint: str = "") -> None:
    """Raise unless the header describes one 3D scalar volume (a 4D file with t == 1 passes).

    Called on the header before the voxels are loaded, so a wrong file costs no memory.
    """
    if components > 1:
        raise VolumeReadError(
            path, f"has {components} values per voxel (RGB/vector image), not one intensity.",
            fix_hint or "Export a single-channel (grey-level) 3D volume.",
        )
    if dimension == 4 and size[3] == 1:
        dimension, size = 3, tuple(size[:3])
    if dimension > 3:
        raise VolumeReadError(
            path, f"is a {dimension}D image of size {tuple(size)} (x, y, z, t...); a 3D volume is needed.",
            fix_hint or "Split the time points/channels and pass one 3D volume per file (nnU-Net: one file per channel, _0000).",
        )
    if dimension < 3 or min(size) < 2:
        raise VolumeReadError(
            path, f"is a 2D image (size {tuple(size)}); CT segmentation needs a 3D volume.",
            "Pass the whole 3D volume (for DICOM: the folder of the series, not one slice).",
        )


def squeeze_time(image: sitk.Image) -> sitk.Image:
    """Drop a trailing time axis of length 1 (x, y, z, 1) -> (x, y, z), keeping the 3D geometry."""
    if image.GetDimension() == 4 and image.GetSize()[3] == 1:
        return sitk.Extract(image, (*image.GetSize()[:3], 0), (0, 0, 0, 0))
    return image


def count_nonfinite(array: np.ndarray) -> int:
    if not np.issubdtype(array.dtype, np.floating):
        return 0
    return int(sum(int(np.count_nonzero(~np.isfinite(array[z : z + _SLAB]))) for z in range(0, array.shape[0], _SLAB)))


def nonfinite_error(path, count: int) -> VolumeReadError:
    return VolumeReadError(
        path, f"contains {count} NaN/inf voxel(s).",
        "Replace them with a real value (e.g. -1024 HU for air) in the tool that made the file.",
    )


def check_finite(array: np.ndarray, path) -> None:
    bad = count_nonfinite(array)
    if bad:
        raise nonfinite_error(path, bad)


def integral_range(array: np.ndarray) -> tuple[bool, float, float]:
    """(all values are whole numbers, min, max), computed slab by slab."""
    lo, hi, integral = np.inf, -np.inf, True
    for z in range(0, array.shape[0], _SLAB):
        slab = array[z : z + _SLAB]
        lo, hi = min(lo, float(slab.min())), max(hi, float(slab.max()))
        if integral and np.issubdtype(array.dtype, np.floating):
            integral = bool(np.all(np.floor(slab) == slab))
    return integral, lo, hi


def image_dtype(array: np.ndarray) -> np.dtype:
    """int16 when every value is a whole number inside int16's range, else float32."""
    if array.dtype == np.int16:
        return np.dtype(np.int16)
    integral, lo, hi = integral_range(array)
    if integral and _INT16.min <= lo and hi <= _INT16.max:
        return np.dtype(np.int16)
    return np.dtype(np.float32)


def label_dtype(array: np.ndarray, path, *, num_classes: int = 0) -> np.dtype:
    """uint8 for up to 256 values (0..255), uint16 above; raise for fractions, NaN or negatives."""
    if np.issubdtype(array.dtype, np.floating):
        bad = count_nonfinite(array)
        if bad:
            raise LabelValueError(path, f"label map contains {bad} NaN/inf voxel(s).",
                                  "Labels must be whole numbers 0..N; re-export the segmentation as integers.")
    elif not np.issubdtype(array.dtype, np.integer) and array.dtype != np.bool_:
        raise LabelValueError(path, f"label map has dtype {array.dtype}, not integers.", "Save the labels as integers 0..N.")
    integral, lo, hi = integral_range(array)
    if not integral:
        raise LabelValueError(
            path, "label map holds fractional values (e.g. probabilities or a linearly resampled mask).",
            "Save integer class values 0..N; resample labels with nearest neighbour (resample_like(..., is_label=True)).",
        )
    if lo < 0:
        raise LabelValueError(path, f"label map holds negative value {int(lo)}.", "Use values 0 (background) .. N.")
    top = max(hi, num_classes - 1)
    if top > np.iinfo(np.uint16).max:
        raise LabelValueError(path, f"label map holds value {int(hi)}, above 65535.", "Renumber the classes 0..N.")
    return np.dtype(np.uint8) if top <= 255 else np.dtype(np.uint16)


def present_values(array: np.ndarray) -> np.ndarray:
    """Sorted distinct values of a non-negative integer label array."""
    return np.flatnonzero(label_counts(array))


def check_label_values(array: np.ndarray, labelmap, path) -> None:
    """Raise when the label array holds a value the label map does not name."""
    present = present_values(array)
    unknown = present[present >= labelmap.num_classes]
    if unknown.size:
        shown = ", ".join(str(int(v)) for v in unknown[:10]) + (" ..." if unknown.size > 10 else "")
        raise LabelValueError(
            path, f"label map holds value(s) {shown} not in the class map {labelmap.title or ''} "
            f"(values 0..{labelmap.num_classes - 1}: {', '.join(labelmap.names[1:4])}, ...).",
            "Choose the class map (dataset.json) this file was made with, or remap those values.",
        )


def grid_differences(moving: Volume, reference: Volume, *, atol: float = 1e-4) -> list[str]:
    """Human-readable differences between two voxel grids (empty when they match)."""
    fmt = lambda values: "(" + ", ".join(f"{v:g}" for v in values) + ")"  # noqa: E731
    out = []
    if moving.shape != reference.shape:
        out.append(f"size (z, y, x) {moving.shape} vs image {reference.shape}")
    if not np.allclose(moving.spacing_zyx, reference.spacing_zyx, atol=atol):
        out.append(f"spacing (z, y, x) {fmt(moving.spacing_zyx)} mm vs image {fmt(reference.spacing_zyx)} mm")
    if not np.allclose(moving.origin_xyz, reference.origin_xyz, atol=atol):
        out.append(f"origin (x, y, z) {fmt(moving.origin_xyz)} mm vs image {fmt(reference.origin_xyz)} mm")
    if not np.allclose(moving.direction, reference.direction, atol=atol):
        out.append(f"direction {fmt(moving.direction)} vs image {fmt(reference.direction)}")
    return out


def check_same_grid(labels: Volume, reference: Volume, path: str | os.PathLike | None) -> None:
    diffs = grid_differences(labels, reference)
    if diffs:
        image = f" ({reference.source})" if reference.source else ""
        raise GeometryMismatchError(
            path, f"label map does not lie on its image's voxel grid{image}: " + "; ".join(diffs) + ".",
            "Use the labels made for this image, or resample them onto it with "
            "dinomix_core.io.resample_like(labels, image, is_label=True).",
        )
