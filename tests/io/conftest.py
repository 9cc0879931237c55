"""Small synthetic volumes and DICOM series for the io tests (real files on disk, tiny)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from dinomix_core.io import Volume

# A rotated, anisotropic grid: catches any axis-order or geometry slip in a round trip.
_ANGLE = math.radians(30.0)
OBLIQUE_DIRECTION = (
    math.cos(_ANGLE), -math.sin(_ANGLE), 0.0,
    math.sin(_ANGLE), math.cos(_ANGLE), 0.0,
    0.0, 0.0, 1.0,
)
SPACING_ZYX = (2.5, 0.8, 0.6)
ORIGIN_XYZ = (-12.5, 30.25, 100.0)


@pytest.fixture
def ct_volume() -> Volume:
    """A 6x10x12 int16 'CT' in HU on an oblique, anisotropic grid."""
    rng = np.random.default_rng(0)
    array = rng.integers(-1024, 1500, size=(6, 10, 12)).astype(np.int16)
    return Volume(array, SPACING_ZYX, ORIGIN_XYZ, OBLIQUE_DIRECTION)


@pytest.fixture
def label_volume(ct_volume) -> Volume:
    """Three box-shaped organs (values 1, 2, 6) on ct_volume's grid, uint8."""
    labels = np.zeros(ct_volume.shape, dtype=np.uint8)
    labels[1:4, 2:5, 2:6] = 1
    labels[2:5, 5:9, 6:11] = 2
    labels[4:6, 0:3, 0:3] = 6
    return ct_volume.with_array(labels, modality="SEG")


def write_dicom_series(folder: Path, hu: np.ndarray, *, series_uid: str, spacing_zyx=(2.5, 0.7, 0.8),
                       origin_xyz=(10.0, -20.0, 30.0), row=(1.0, 0.0, 0.0), col=(0.0, 1.0, 0.0),
                       skip: tuple[int, ...] = (), intercept: float = -1024.0, slope: float = 1.0) -> list[Path]:
    """Write ``hu`` (z, y, x) slice by slice as CT DICOM files with full geometry tags.

    SimpleITK's series writer refuses DICOM, so each slice goes through ImageFileWriter; GDCM
    stores (HU - intercept) / slope and a reader gets HU back through the rescale tags
    (a fractional slope needs a float ``hu``).
    """
    folder.mkdir(parents=True, exist_ok=True)
    normal = np.cross(row, col)
    study = "1.2.826.0.1.3680043.8.498.1"
    files = []
    for k in range(hu.shape[0]):
        if k in skip:
            continue
        position = np.asarray(origin_xyz) + k * spacing_zyx[0] * normal
        image = sitk.GetImageFromArray(hu[k] if hu.dtype.kind == "f" else hu[k].astype(np.int16))
        image.SetSpacing((spacing_zyx[2], spacing_zyx[1]))
        tags = {
            "0008|0060": "CT",
            "0008|0018": f"{series_uid}.{k + 1}",
            "0020|000d": study,
            "0020|000e": series_uid,
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position),
            "0020|0037": "\\".join(f"{v:.6f}" for v in (*row, *col)),
            "0028|0030": f"{spacing_zyx[1]}\\{spacing_zyx[2]}",
            "0018|0050": str(spacing_zyx[0]),
            "0028|1052": f"{intercept:g}",
            "0028|1053": f"{slope:g}",
        }
        if hu.dtype.kind == "f":  # GDCM must be told the stored integer type for float input
            tags.update({"0028|0100": "16", "0028|0101": "16", "0028|0102": "15", "0028|0103": "1"})
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        path = folder / f"{series_uid.rsplit('.', 1)[-1]}_{k:03d}.dcm"
        writer.SetFileName(str(path))
        writer.Execute(image)
        files.append(path)
    return files


@pytest.fixture
def dicom_hu() -> np.ndarray:
    """5 slices of 6x7 HU values (z, y, x), air to bone."""
    return (np.arange(5 * 6 * 7, dtype=np.int16).reshape(5, 6, 7) * 9 - 1000).astype(np.int16)
