"""DICOM series: choose a series, check its slices are complete, read it in HU.

Series are found by GDCM from the file contents, never by file name: PACS exports name
slices ``CT.1.2.840...`` (their SOP Instance UID), ``IM0001`` or give them no extension, and
some writers drop the 128-byte preamble. SimpleITK's ``ImageSeriesReader`` applies Rescale
Slope/Intercept (HU) and takes the slice spacing from the Image Position tags; a missing
slice would silently stretch the anatomy, so the positions are checked first.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import VolumeReadError
from .formats import ReaderWriter, _itk_reason
from .validation import check_3d_scalar

log = logging.getLogger(__name__)

# A gap this much longer (relative) than the typical one means slices are missing.
_GAP_TOLERANCE = 0.1
# Auto-detection of the ImageIO needs the "DICM" preamble; naming GDCM reads files without it.
_GDCM_IO = "GDCMImageIO"
# Suffixes that are never DICOM slices: skipped without opening the file.
_NOT_DICOM_SUFFIXES = frozenset({".nii", ".gz", ".nrrd", ".mha", ".mhd", ".raw", ".zraw", ".json", ".txt", ".csv",
                                 ".xml", ".md", ".html", ".pdf", ".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff",
                                 ".zip", ".py", ".sqlite", ".log", ".ini", ".yaml", ".yml"})
# First group of a DICOM stream without preamble: the file meta (0002) or identifying (0008) group.
_RAW_GROUPS = (b"\x02\x00", b"\x08\x00")


def is_dicom_file(path: str | os.PathLike) -> bool:
    """True for a DICOM slice whatever its name (``CT.1.2.840...``, ``IM0001``, none, ``.dcm``).

    ``.dcm`` is trusted by name; other files are recognised by the ``DICM`` marker at byte
    128, or, for files written without the preamble, by a leading DICOM tag confirmed by
    GDCM. ``DICOMDIR`` (an index, not a slice) is not counted.
    """
    path = Path(path)
    name = path.name
    if name.upper() == "DICOMDIR" or name.startswith("."):
        return False
    suffix = path.suffix.lower()
    if suffix == ".dcm":
        return True
    if suffix in _NOT_DICOM_SUFFIXES:
        return False
    try:
        with open(path, "rb") as fh:
            head = fh.read(132)
    except OSError:
        return False
    if head[128:132] == b"DICM":
        return True
    if len(head) < 8 or head[:2] not in _RAW_GROUPS:
        return False
    explicit_vr = head[4:6].isalpha() and head[4:6].isupper()
    implicit_len = int.from_bytes(head[4:8], "little")
    if not explicit_vr and implicit_len > 1 << 16:  # a header element is never this long
        return False
    return _gdcm_reads(path)


def _gdcm_reads(path: Path) -> bool:
    reader = sitk.ImageFileReader()
    reader.SetImageIO(_GDCM_IO)
    reader.SetFileName(str(path))
    try:
        reader.ReadImageInformation()
    except RuntimeError:
        return False
    return True


def find_series_folders(root: str | os.PathLike, *, max_depth: int = 4) -> list[Path]:
    """Folders at or below ``root`` (patient/study/series layouts) that directly hold DICOM slices.

    Depth-first, sorted; ``max_depth`` bounds the walk so pointing at a home folder stays cheap.
    """
    root = Path(root)
    found: list[Path] = []

    def walk(folder: Path, depth: int) -> None:
        try:
            entries = sorted(folder.iterdir())
        except OSError:
            return
        files = [p for p in entries if p.is_file()]
        if any(is_dicom_file(f) for f in files):
            found.append(folder)
        if depth < max_depth:
            for sub in entries:
                if sub.is_dir() and not sub.name.startswith("."):
                    walk(sub, depth + 1)

    walk(root, 0)
    return found


class DicomSeriesIO(ReaderWriter):
    """A folder holding one or more DICOM series, or one slice of a series (read only)."""

    name = "DICOM series"

    def can_read(self, path: Path) -> bool:
        return path.is_dir() or (path.is_file() and is_dicom_file(path))

    def read(self, path: Path, *, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
        """Read a series folder, or the whole series a single slice file belongs to."""
        if path.is_dir():
            return self._read_series(path, list_series(path), series_uid)
        folder = path.parent
        _header(str(path), path)  # a damaged slice is named as such, not as an empty folder
        try:
            series = list_series(folder)
        except VolumeReadError:
            series = {}
        why = None
        if series_uid is None:
            series_uid = _series_of_file(path, series)
            why = f"the series of file {path.name}"
        image, meta = self._read_series(folder, series, series_uid, why=why)
        meta["file"] = str(path)
        return image, meta

    def _read_series(self, path: Path, series: dict[str, list[str]], series_uid: str | None,
                     *, why: str | None = None) -> tuple[sitk.Image, dict]:
        if series_uid is not None:
            if series_uid not in series:
                raise VolumeReadError(
                    path, f"holds no DICOM series with uid {series_uid!r}.",
                    f"Use one of: {_describe(series)}.",
                )
            uid, note = series_uid, why or f"series {series_uid} chosen by series_uid"
        else:
            uid = max(series, key=lambda u: (len(series[u]), u))
            others = {u: f for u, f in series.items() if u != uid}
            note = (f"only series in the folder ({len(series[uid])} files)" if not others else
                    f"largest of {len(series)} series ({len(series[uid])} files); others: {_describe(others)}")
        # Several series and none asked for: a warning, so every front end shows the choice (stderr, napari).
        log.log(logging.WARNING if series_uid is None and len(series) > 1 else logging.INFO,
                "%s: reading DICOM series %s (%s)", path, uid, note)
        files = series[uid]
        first = _header(files[0], path)
        if len(files) == 1 and first.GetDimension() == 3:  # one multi-frame (enhanced) file
            reader = sitk.ImageFileReader()
            reader.SetImageIO(_GDCM_IO)
            reader.SetFileName(files[0])
            check_3d_scalar(3, first.GetSize(), first.GetNumberOfComponents(), path)
        else:
            check_3d_scalar(3, (*first.GetSize()[:2], len(files)), first.GetNumberOfComponents(), path)
            check_slice_positions(files, path)
            reader = sitk.ImageSeriesReader()
            reader.SetImageIO(_GDCM_IO)
            reader.SetFileNames(files)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeReadError(path, f"series {uid} cannot be read ({_itk_reason(exc)}).",
                                  "Re-export the series from the PACS or scanner.") from exc
        modality = _tag(first, "0008|0060") or "CT"
        meta = {"format": "dicom", "series_uid": uid, "series_choice": note, "num_series": len(series),
                "series_description": _tag(first, "0008|103e"),
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


@dataclass(frozen=True)
class SeriesInfo:
    """One DICOM series of a folder: uid, slice files (sorted along the normal), description, number."""

    uid: str
    files: tuple[str, ...]
    description: str
    number: str

    def label(self) -> str:
        """``'ARTERIAL 1.0mm' (series 3, 212 files, uid 1.2.840...)`` for reports."""
        name = f"{self.description!r} " if self.description else ""
        number = f"series {self.number}, " if self.number else ""
        return f"{name}({number}{len(self.files)} files, uid {self.uid})"


def describe_series(folder: str | os.PathLike) -> list[SeriesInfo]:
    """Every series directly in ``folder``, largest first (one header read per series).

    Raises :class:`VolumeReadError` naming the folder when it holds none.
    """
    folder = Path(folder)
    out = []
    for uid, files in list_series(folder).items():
        header = _header(files[0], folder)
        out.append(SeriesInfo(uid, tuple(files), _tag(header, "0008|103e"), _tag(header, "0020|0011")))
    return sorted(out, key=lambda s: (-len(s.files), s.uid))


def choose_series(folder: str | os.PathLike, series_uid: str | None = None) -> tuple[SeriesInfo, list[SeriesInfo]]:
    """The series to read from ``folder`` and the others: ``series_uid``'s, else the largest.

    An unknown ``series_uid`` raises :class:`VolumeReadError` listing the folder's series.
    """
    series = describe_series(folder)
    if series_uid is None:
        return series[0], series[1:]
    for info in series:
        if info.uid == series_uid:
            return info, [s for s in series if s is not info]
    raise VolumeReadError(folder, f"holds no DICOM series with uid {series_uid!r}.",
                          f"Use one of: {'; '.join(s.label() for s in series)}.")


def series_uid_of_file(path: str | os.PathLike) -> str:
    """Series Instance UID (0020,000E) of one slice, from its header ("" when absent)."""
    path = Path(path)
    return _tag(_header(str(path), path.parent), "0020|000e")


def _series_of_file(path: Path, series: dict[str, list[str]]) -> str:
    """The uid of the series GDCM put ``path`` in; raise when it is in none (not a readable slice)."""
    for uid, files in series.items():
        if any(Path(f).name == path.name for f in files):
            return uid
    raise VolumeReadError(path, "is not a DICOM slice GDCM can read (no series in its folder holds it).",
                          "Re-export the series, or open the folder holding its slices.")


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
    reader.SetImageIO(_GDCM_IO)
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
