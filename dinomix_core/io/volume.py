"""The in-memory CT volume: a (z, y, x) array with its physical geometry in mm."""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
import SimpleITK as sitk


@dataclass
class Volume:
    """A 3D image or label map.

    ``array`` is indexed (z, y, x). ``spacing_zyx`` is the voxel size in mm in the same axis
    order as the array. ``origin_xyz`` (mm, LPS world point of voxel 0) and ``direction``
    (row-major 3x3, ITK's x,y,z convention) are kept exactly as SimpleITK reports them, so a
    write-back reproduces the source geometry bit for bit.
    """

    array: np.ndarray
    spacing_zyx: tuple[float, float, float] = (1.0, 1.0, 1.0)
    origin_xyz: tuple[float, float, float] = (0.0, 0.0, 0.0)
    direction: tuple[float, ...] = (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    source: Path | None = None
    modality: str = "CT"
    meta: dict = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.array.ndim != 3:
            raise ValueError(f"Volume needs a 3D (z, y, x) array, got shape {self.array.shape}")
        self.spacing_zyx = tuple(float(s) for s in self.spacing_zyx)
        self.origin_xyz = tuple(float(o) for o in self.origin_xyz)
        self.direction = tuple(float(d) for d in self.direction)

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.array.shape)

    @property
    def spacing_xyz(self) -> tuple[float, float, float]:
        return tuple(reversed(self.spacing_zyx))

    def with_array(self, array: np.ndarray, **changes) -> "Volume":
        """Same geometry, new voxels (e.g. a prediction for this image)."""
        return replace(self, array=array, meta=dict(self.meta), **changes)

    def same_grid(self, other: "Volume", *, atol: float = 1e-4) -> bool:
        """True when both volumes share size, spacing, origin and direction (mm tolerance)."""
        return (
            self.shape == other.shape
            and np.allclose(self.spacing_zyx, other.spacing_zyx, atol=atol)
            and np.allclose(self.origin_xyz, other.origin_xyz, atol=atol)
            and np.allclose(self.direction, other.direction, atol=atol)
        )

    def to_sitk(self) -> sitk.Image:
        image = sitk.GetImageFromArray(np.ascontiguousarray(self.array))
        image.SetSpacing(self.spacing_xyz)
        image.SetOrigin(self.origin_xyz)
        image.SetDirection(self.direction)
        return image

    @classmethod
    def from_sitk(cls, image: sitk.Image, **kwargs) -> "Volume":
        return cls(
            array=sitk.GetArrayFromImage(image),
            spacing_zyx=tuple(reversed(image.GetSpacing())),
            origin_xyz=image.GetOrigin(),
            direction=image.GetDirection(),
            **kwargs,
        )
