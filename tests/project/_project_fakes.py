"""Tiny synthetic CT files (8x16x16 NIfTI, a 4-slice DICOM series) for the project tests."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


SHAPE = (8, 16, 16)  # z, y, x
SPACING_XYZ = (1.5, 1.5, 3.0)
ORIGIN_XYZ = (-10.0, 5.0, 20.0)


def write_image(path: Path, seed: int, *, shape=SHAPE, spacing_xyz=SPACING_XYZ, origin_xyz=ORIGIN_XYZ) -> Path:
    """A random int16 'CT' (HU) with fixed geometry; different seeds give different content."""
    path.parent.mkdir(parents=True, exist_ok=True)
    array = np.random.default_rng(seed).integers(-1000, 1000, size=shape).astype(np.int16)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin_xyz)
    sitk.WriteImage(image, str(path), True)
    return path


def organ_labels(seed: int = 0, *, shape=SHAPE, values=(1, 6, 11)) -> np.ndarray:
    """Box-shaped organs (BTCV values: spleen, liver, pancreas) at seed-dependent places."""
    rng = np.random.default_rng(seed)
    labels = np.zeros(shape, dtype=np.uint8)
    for value in values:
        z, y, x = (int(rng.integers(0, s - 3)) for s in shape)
        labels[z : z + 3, y : y + 4, x : x + 4] = value
    return labels


def write_labels_file(path: Path, array: np.ndarray, *, spacing_xyz=SPACING_XYZ, origin_xyz=ORIGIN_XYZ) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing_xyz)
    image.SetOrigin(origin_xyz)
    sitk.WriteImage(image, str(path), True)
    return path


def write_dicom_folder(folder: Path, seed: int, *, shape=(4, 16, 16)) -> Path:
    """A CT DICOM series, one file per slice, with position/orientation tags."""
    folder.mkdir(parents=True, exist_ok=True)
    hu = np.random.default_rng(seed).integers(-1000, 1000, size=shape).astype(np.int16)
    uid = f"1.2.826.0.1.3680043.8.498.{seed + 100}"
    for k in range(shape[0]):
        image = sitk.GetImageFromArray(hu[k])
        image.SetSpacing((0.8, 0.8))
        tags = {"0008|0060": "CT", "0020|000d": uid + ".0", "0020|000e": uid, "0008|0018": f"{uid}.{k + 1}",
                "0020|0013": str(k + 1), "0020|0032": f"0\\0\\{2.5 * k:.3f}", "0020|0037": "1\\0\\0\\0\\1\\0",
                "0028|0030": "0.8\\0.8", "0018|0050": "2.5", "0028|1052": "0", "0028|1053": "1"}
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(image)
    return folder
