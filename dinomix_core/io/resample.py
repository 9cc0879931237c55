"""Resample volumes to a new spacing or onto another volume's grid (SimpleITK).

Images use linear interpolation and come back float32; label maps use nearest neighbour and
keep their integer dtype, so no class value is invented at organ borders.
"""

from __future__ import annotations

import numpy as np
import SimpleITK as sitk

from .volume import Volume


def resample_to_spacing(volume: Volume, spacing_zyx: tuple[float, float, float], *, is_label: bool) -> Volume:
    """Resample to ``spacing_zyx`` (mm, z, y, x), keeping origin, direction and physical extent.

    The new size along each axis is round(size * old_spacing / new_spacing), at least 1.
    """
    spacing_zyx = tuple(float(s) for s in spacing_zyx)
    if len(spacing_zyx) != 3 or min(spacing_zyx) <= 0:
        raise ValueError(f"spacing_zyx must be three positive mm values, got {spacing_zyx}")
    size_zyx = [max(1, int(round(n * old / new))) for n, old, new in zip(volume.shape, volume.spacing_zyx, spacing_zyx)]
    return _resample(volume, tuple(reversed(size_zyx)), tuple(reversed(spacing_zyx)), volume.origin_xyz,
                     volume.direction, is_label=is_label)


def resample_like(volume: Volume, reference: Volume, *, is_label: bool) -> Volume:
    """Resample onto ``reference``'s exact grid (size, spacing, origin, direction)."""
    return _resample(volume, tuple(reversed(reference.shape)), reference.spacing_xyz, reference.origin_xyz,
                     reference.direction, is_label=is_label)


def _resample(volume: Volume, size_xyz, spacing_xyz, origin_xyz, direction, *, is_label: bool) -> Volume:
    image = volume.to_sitk()
    if is_label:
        interpolator, pixel_type, fill = sitk.sitkNearestNeighbor, image.GetPixelID(), 0.0
    else:
        # Outside the source field of view take the darkest value (air / scanner padding).
        interpolator, pixel_type, fill = sitk.sitkLinear, sitk.sitkFloat32, float(np.min(volume.array))
    out = sitk.Resample(image, [int(s) for s in size_xyz], sitk.Transform(), interpolator, tuple(origin_xyz),
                        tuple(spacing_xyz), tuple(direction), fill, pixel_type)
    array = sitk.GetArrayFromImage(out)
    return Volume(array, tuple(reversed(out.GetSpacing())), out.GetOrigin(), out.GetDirection(),
                  source=volume.source, modality=volume.modality, meta=dict(volume.meta))
