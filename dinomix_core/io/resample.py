"""Resample volumes to a new spacing or onto another volume's grid (SimpleITK), and class
probabilities back from the network's grid, slab by slab.

Images use linear interpolation (or cubic B-spline) and come back float32; label maps use
nearest neighbour and keep their integer dtype, so no class value is invented at organ borders.

Two grids that share origin and direction and differ only in spacing (what
:func:`resample_to_spacing` makes) map onto each other axis by axis: voxel ``i`` of one lies at
index ``i * spacing / other_spacing`` of the other. :func:`resample_channels_slabs` uses that to
bring (C, z, y, x) probabilities from the network's grid back to the input's grid with
separable linear interpolation, a few z slices at a time, so the input-grid probabilities never
exist in full (a 512 x 512 x 300 CT with 14 classes would need 4.4 GB of float32 for them).
Linear weights are a convex combination, so resampled probabilities still sum to one.
"""

from __future__ import annotations

from typing import Iterator, Sequence

import numpy as np
import SimpleITK as sitk

from .volume import Volume

INTERPOLATORS = {"linear": sitk.sitkLinear, "bspline": sitk.sitkBSpline}


def resampled_size(shape_zyx: Sequence[int], spacing_zyx: Sequence[float], new_spacing_zyx: Sequence[float]) -> tuple[int, int, int]:
    """Voxels per axis (z, y, x) after resampling to ``new_spacing_zyx`` (mm): round(n * old / new), at least 1."""
    return tuple(max(1, int(round(n * old / new))) for n, old, new in zip(shape_zyx, spacing_zyx, new_spacing_zyx))


def check_spacing(spacing_zyx, what: str = "spacing_zyx") -> tuple[float, float, float]:
    """Three finite positive mm values (z, y, x), or ValueError naming ``what``."""
    try:
        values = tuple(float(s) for s in spacing_zyx)
    except (TypeError, ValueError):
        raise ValueError(f"{what} must be three positive mm values (z, y, x), got {spacing_zyx!r}") from None
    if len(values) != 3 or not all(np.isfinite(values)) or min(values) <= 0:
        raise ValueError(f"{what} must be three positive mm values (z, y, x), got {spacing_zyx!r}")
    return values


def resample_to_spacing(volume: Volume, spacing_zyx: tuple[float, float, float], *, is_label: bool,
                        interpolation: str = "linear") -> Volume:
    """Resample to ``spacing_zyx`` (mm, z, y, x), keeping origin, direction and physical extent.

    The new size along each axis is :func:`resampled_size`. ``interpolation`` ("linear" or
    "bspline", cubic) applies to images; labels are always nearest neighbour.
    """
    spacing_zyx = check_spacing(spacing_zyx)
    size_zyx = resampled_size(volume.shape, volume.spacing_zyx, spacing_zyx)
    return _resample(volume, tuple(reversed(size_zyx)), tuple(reversed(spacing_zyx)), volume.origin_xyz,
                     volume.direction, is_label=is_label, interpolation=interpolation)


def resample_like(volume: Volume, reference: Volume, *, is_label: bool, interpolation: str = "linear") -> Volume:
    """Resample onto ``reference``'s exact grid (size, spacing, origin, direction)."""
    return _resample(volume, tuple(reversed(reference.shape)), reference.spacing_xyz, reference.origin_xyz,
                     reference.direction, is_label=is_label, interpolation=interpolation)


def _resample(volume: Volume, size_xyz, spacing_xyz, origin_xyz, direction, *, is_label: bool,
              interpolation: str = "linear") -> Volume:
    if interpolation not in INTERPOLATORS:
        raise ValueError(f"interpolation must be one of {', '.join(INTERPOLATORS)}, got {interpolation!r}")
    image = volume.to_sitk()
    if is_label:
        interpolator, pixel_type, fill = sitk.sitkNearestNeighbor, image.GetPixelID(), 0.0
    else:
        # Outside the source field of view take the darkest value (air / scanner padding).
        interpolator, pixel_type, fill = INTERPOLATORS[interpolation], sitk.sitkFloat32, float(np.min(volume.array))
    out = sitk.Resample(image, [int(s) for s in size_xyz], sitk.Transform(), interpolator, tuple(origin_xyz),
                        tuple(spacing_xyz), tuple(direction), fill, pixel_type)
    del image
    array = sitk.GetArrayFromImage(out)
    if not is_label and interpolation == "bspline":
        # Cubic B-splines overshoot at sharp edges (air | skin): keep the source's value range.
        np.clip(array, float(np.min(volume.array)), float(np.max(volume.array)), out=array)
    return Volume(array, tuple(reversed(out.GetSpacing())), out.GetOrigin(), out.GetDirection(),
                  source=volume.source, modality=volume.modality, meta=dict(volume.meta))


def linear_axis_weights(n_out: int, n_src: int, scale: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Source indices (lo, hi) and weight of hi for output voxels 0..n_out-1 at source index ``i * scale``.

    Positions beyond the source's first or last voxel take that voxel (edge replication).
    """
    pos = np.clip(np.arange(n_out, dtype=np.float64) * float(scale), 0.0, n_src - 1)
    lo = np.floor(pos).astype(np.int64)
    hi = np.minimum(lo + 1, n_src - 1)
    return lo, hi, (pos - lo).astype(np.float32)


def resample_channels_slabs(
    channels: np.ndarray,
    src_spacing_zyx: Sequence[float],
    dst_shape_zyx: Sequence[int],
    dst_spacing_zyx: Sequence[float],
    *,
    slab: int = 4,
) -> Iterator[tuple[int, int, np.ndarray]]:
    """Yield ``(z0, z1, block)``: float32 (C, z1 - z0, Y, X) of ``channels`` resampled onto the destination grid.

    ``channels``: (C, z, y, x) on a grid of ``src_spacing_zyx`` mm; the destination grid has
    ``dst_shape_zyx`` voxels of ``dst_spacing_zyx`` mm and the same origin and direction.
    Separable linear interpolation, ``slab`` destination z slices per block: besides the
    source only a few blocks of that size are in memory at once. Identical grids are sliced,
    not interpolated.
    """
    channels = np.asarray(channels)
    if channels.ndim != 4:
        raise ValueError(f"channels must be (C, z, y, x), got shape {channels.shape}")
    src_shape = channels.shape[1:]
    dst_shape = tuple(int(n) for n in dst_shape_zyx)
    scales = [float(d) / float(s) for d, s in zip(dst_spacing_zyx, src_spacing_zyx)]
    plans = [None if (n_dst == n_src and abs(scale - 1.0) < 1e-6) else linear_axis_weights(n_dst, n_src, scale)
             for n_dst, n_src, scale in zip(dst_shape, src_shape, scales)]
    for z0 in range(0, dst_shape[0], slab):
        z1 = min(z0 + slab, dst_shape[0])
        if plans[0] is None:
            block = np.asarray(channels[:, z0:z1], dtype=np.float32)
        else:
            lo, hi, w = (part[z0:z1] for part in plans[0])
            block = _lerp(channels, 1, lo, hi, w)
        for axis in (2, 3):
            plan = plans[axis - 1]
            if plan is not None:
                block = _lerp(block, axis, *plan)
        yield z0, z1, np.ascontiguousarray(block, dtype=np.float32)


def _lerp(array: np.ndarray, axis: int, lo: np.ndarray, hi: np.ndarray, w: np.ndarray) -> np.ndarray:
    """(1 - w) * array[lo] + w * array[hi] along ``axis`` (float32)."""
    a = np.take(array, lo, axis=axis).astype(np.float32, copy=False)
    b = np.take(array, hi, axis=axis).astype(np.float32, copy=False)
    shape = [1] * array.ndim
    shape[axis] = -1
    b -= a
    b *= w.reshape(shape)
    a += b
    return a
