"""Test data of the plugin tests: oblique grids, and CT DICOM series written slice by slice and named
as PACS name them (a helper module, not conftest: tests/io has a conftest of its own)."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import SimpleITK as sitk

NAMINGS = {
    "sop_uid": lambda uid, k: f"CT.{uid}.{k + 1}",  # SOP Instance UID as the file name
    "no_extension": lambda uid, k: f"{k + 1:08d}",
    "im_number": lambda uid, k: f"IM{k + 1:04d}",
    "dcm": lambda uid, k: f"slice_{k:03d}.dcm",
}


def write_ct_series(folder: Path, hu: np.ndarray, *, series_uid: str, naming: str = "dcm",
                    spacing_zyx=(2.5, 0.7, 0.8), origin_xyz=(10.0, -20.0, 30.0),
                    strip_preamble: bool = False) -> list[Path]:
    """Write ``hu`` (z, y, x, int16) as one CT series, axial, with full geometry tags.

    SimpleITK writes one DICOM file per slice; ``strip_preamble`` then drops the 128-byte
    preamble and ``DICM`` marker, as some old writers do.
    """
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(hu.shape[0]):
        image = sitk.GetImageFromArray(hu[k].astype(np.int16))
        image.SetSpacing((spacing_zyx[2], spacing_zyx[1]))
        position = (origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * spacing_zyx[0])
        instance = f"{series_uid}.{k + 1}"
        tags = {
            "0008|0060": "CT", "0008|0018": instance, "0020|000d": "1.2.826.0.1.3680043.8.498.1",
            "0020|000e": series_uid, "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in position), "0020|0037": "1\\0\\0\\0\\1\\0",
            "0028|0030": f"{spacing_zyx[1]}\\{spacing_zyx[2]}", "0018|0050": str(spacing_zyx[0]),
            "0028|1052": "-1024", "0028|1053": "1",
        }
        for key, value in tags.items():
            image.SetMetaData(key, value)
        path = folder / NAMINGS[naming](series_uid, k)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")
        writer.SetFileName(str(path))
        writer.Execute(image)
        if strip_preamble:
            data = path.read_bytes()
            assert data[128:132] == b"DICM"
            path.write_bytes(data[132:])
        files.append(path)
    return files


def series_hu(slices: int = 5, offset: int = 0) -> np.ndarray:
    """``slices`` x 6 x 7 HU values (z, y, x), air to bone."""
    return (np.arange(slices * 6 * 7, dtype=np.int16).reshape(slices, 6, 7) * 9 - 1000 + offset).astype(np.int16)


def oblique_direction(angle_deg: float = 30.0, *, flip_xy: bool = True) -> tuple[float, ...]:
    """A rotation about z, optionally with x and y flipped (RAS-stored NIfTI read as LPS)."""
    a = math.radians(angle_deg)
    rot = np.array([[math.cos(a), -math.sin(a), 0.0], [math.sin(a), math.cos(a), 0.0], [0.0, 0.0, 1.0]])
    if flip_xy:
        rot = np.diag([-1.0, -1.0, 1.0]) @ rot
    return tuple(rot.ravel())


def dispose(w, qtbot) -> None:
    """Shut down and let Qt delete a DINO-Mix widget now: a widget left to the interpreter's exit
    is collected in arbitrary order with its Qt children, which crashed PySide at exit."""
    w.shutdown()
    w.close()
    w.deleteLater()
    qtbot.wait(20)
