"""Write small CT DICOM series the way PACS exports name them (files named by SOP Instance UID).

SimpleITK's series writer refuses DICOM, so each slice goes through ImageFileWriter with the
geometry, rescale and series tags a scanner writes; GDCM then finds the series by content.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk


def write_series(folder: Path, hu: np.ndarray, *, series_uid: str, description: str = "", number: int = 1,
                 spacing_zyx=(2.5, 0.7, 0.8), origin_xyz=(10.0, -20.0, 30.0)) -> list[Path]:
    """``hu`` (z, y, x) as one slice file per z, named ``CT.<SOP Instance UID>`` (no .dcm)."""
    folder.mkdir(parents=True, exist_ok=True)
    files = []
    for k in range(hu.shape[0]):
        image = sitk.GetImageFromArray(hu[k].astype(np.int16))
        image.SetSpacing((spacing_zyx[2], spacing_zyx[1]))
        sop = f"{series_uid}.{k + 1}"
        tags = {
            "0008|0060": "CT", "0008|0018": sop, "0020|000d": "1.2.826.0.1.3680043.8.498.1",
            "0020|000e": series_uid, "0020|0011": str(number), "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in (origin_xyz[0], origin_xyz[1], origin_xyz[2] + k * spacing_zyx[0])),
            "0020|0037": "1\\0\\0\\0\\1\\0", "0028|0030": f"{spacing_zyx[1]}\\{spacing_zyx[2]}",
            "0018|0050": str(spacing_zyx[0]), "0028|1052": "-1024", "0028|1053": "1",
        }
        if description:
            tags["0008|103e"] = description
        for key, value in tags.items():
            image.SetMetaData(key, value)
        writer = sitk.ImageFileWriter()
        writer.KeepOriginalImageUIDOn()
        writer.SetImageIO("GDCMImageIO")  # the name has no .dcm to pick the writer by
        path = folder / f"CT.{sop}"
        writer.SetFileName(str(path))
        writer.Execute(image)
        files.append(path)
    return files


def ct_hu(shape=(6, 24, 28), seed: int = 0) -> np.ndarray:
    """A small CT-like block (z, y, x) in HU: air around a soft-tissue ellipse with noise."""
    rng = np.random.default_rng(seed)
    _, y, x = np.mgrid[: shape[0], : shape[1], : shape[2]]
    hu = np.full(shape, -1000, np.int16)
    body = ((y - shape[1] / 2) / (shape[1] * 0.4)) ** 2 + ((x - shape[2] / 2) / (shape[2] * 0.4)) ** 2 <= 1
    hu[body] = (40 + rng.normal(0, 20, int(body.sum()))).astype(np.int16)
    return hu
