"""DICOM series folders: choose a series, check its slices are complete, read it in HU.

SimpleITK's ``ImageSeriesReader`` applies Rescale Slope/Intercept (HU) and takes the slice
spacing from the Image Position tags; a missing slice would silently stretch the anatomy,
so the positions are checked first.
"""

from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import VolumeReadError
from .formats import ReaderWriter, _itk_reason
from .validation import check_3d_scalar

log = logging.getLogger(__name__)

# A gap this much longer (relative) than the typical one means slices are missing.
_GAP_TOLERANCE = 0.1


class DicomSeriesIO(ReaderWriter):
    """A folder holding one or more DICOM series (read only)."""

    name = "DICOM series folder"

    def can_read(self, path: Path) -> bool:
        return path.is_dir()

    def read(self, path: Path, *, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
        series = list_series(path)
        if series_uid is not None:
            if series_uid not in series:
                raise VolumeReadError(
                    path, f"holds no DICOM series with uid {series_uid!r}.",
                    f"Use one of: {_describe(series)}.",
                )
            uid, note = series_uid, f"series {series_uid} chosen by series_uid"
        else:
            uid = max(series, key=lambda u: (len(series[u]), u))
            others = {u: f for u, f in series.items() if u != uid}
            note = (f"only series in the folder ({len(series[uid])} files)" if not others else
                    f"largest of {len(series)} series ({len(series[uid])} files); others: {_describe(others)}")
        log.info("%s: reading DICOM series %s (%s)", path, uid, note)
        files = series[uid]
        first = _header(files[0], path)
        if len(files) == 1 and first.GetDimension() == 3:  # one multi-frame (enhanced) file
            reader = sitk.ImageFileReader()
            reader.SetFileName(files[0])
            check_3d_scalar(3, first.GetSize(), first.GetNumberOfComponents(), path)
        else:
            check_3d_scalar(3, (*first.GetSize()[:2], len(files)), first.GetNumberOfComponents(), path)
            check_slice_positions(files, path)
            reader = sitk.ImageSeriesReader()
            reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeReadError(path, f"series {uid} cannot be read ({_itk_reason(exc)}).",
                                  "Re-export the series from the PACS or scanner.") from exc
        modality = _tag(first, "0008|0060") or "CT"
        meta = {"format": "dicom", "series_uid": uid, "series_choice": note, "num_series": len(series),
                "num_files": len(files), "modality": modality, "source_pixel_type": image.GetPixelIDTypeAsString()}
        return image, meta


def list_series(folder: Path) -> dict[str, list[str]]:
    """``{series_uid: [files sorted along the slice normal]}``; raise when there is none."""
    try:
        uids = sitk.ImageSeriesReader.GetGDCMSeriesIDs(str(folder))
    except RuntimeError:
        uids = ()
    if not uids:
        subdirs = sorted(p.name for p in folder.iterdir() if p.is_dir())[:5]
        hint = f" It has sub-folders ({', '.join(subdirs)}); pass the one holding the slices." if subdirs else ""
        raise VolumeReadError(folder, "holds no DICOM series (no readable DICOM files directly in this folder)." + hint,
                              "Pass the folder that contains the .dcm files of one CT series, or an image file.")
    return {uid: list(sitk.ImageSeriesReader.GetGDCMSeriesFileNames(str(folder), uid)) for uid in uids}


def check_slice_positions(files: list[str], folder: Path) -> None:
    """Raise when the slices are not evenly spaced along their normal (missing or duplicate)."""
    positions, normal = [], None
    for name in files:
        header = _header(name, folder)
        pos, orient = _tag(header, "0020|0032"), _tag(header, "0020|0037")
        if not pos or not orient:
            raise VolumeReadError(folder, f"slice {Path(name).name} lacks Image Position/Orientation (0020,0032/0037), "
                                  "so the slice spacing is unknown.", "Export the series with patient geometry, or as NIfTI.")
        if normal is None:
            row_col = np.array([float(v) for v in orient.split("\\")]).reshape(2, 3)
            normal = np.cross(row_col[0], row_col[1])
        positions.append(float(np.dot([float(v) for v in pos.split("\\")], normal)))
    depth = np.sort(np.asarray(positions))
    gaps = np.diff(depth)
    typical = float(np.median(gaps))
    if typical <= 1e-3 or np.any(gaps <= 1e-3):
        k = int(np.argmin(gaps))
        raise VolumeReadError(folder, f"has two slices at the same position ({depth[k]:.2f} mm along the slice normal); "
                              "the folder mixes acquisitions or holds duplicate files.",
                              "Keep one copy of each slice, or separate the acquisitions into their own folders.")
    bad = np.flatnonzero(np.abs(gaps - typical) > max(_GAP_TOLERANCE * typical, 0.01))
    if bad.size:
        k = int(bad[0])
        missing = int(round(gaps[k] / typical)) - 1
        raise VolumeReadError(
            folder, f"slices are unevenly spaced: a {gaps[k]:.2f} mm gap between slices {k} and {k + 1} "
            f"(the others are {typical:.2f} mm); about {max(missing, 1)} slice(s) are missing"
            + (f", {bad.size} uneven gap(s) in all." if bad.size > 1 else "."),
            "Re-export the complete series from the PACS or scanner (a partial transfer drops slices).",
        )


def _header(name: str, folder: Path) -> sitk.ImageFileReader:
    reader = sitk.ImageFileReader()
    reader.SetFileName(name)
    try:
        reader.ReadImageInformation()
    except RuntimeError as exc:
        raise VolumeReadError(folder, f"DICOM file {Path(name).name} cannot be read ({_itk_reason(exc)}).",
                              "Remove or replace the damaged file.") from exc
    return reader


def _tag(reader: sitk.ImageFileReader, key: str) -> str:
    return reader.GetMetaData(key).strip() if reader.HasMetaDataKey(key) else ""


def _describe(series: dict[str, list[str]]) -> str:
    return ", ".join(f"{u} ({len(f)} files)" for u, f in sorted(series.items(), key=lambda kv: -len(kv[1])))
