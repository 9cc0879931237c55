"""npe2 reader: CT files and DICOM series (by content, any file names) as napari layers.

``get_reader`` only decides, cheaply, whether a path is ours (napari tries other readers on
None); the returned function reads through :mod:`dinomix_core.io`, so a broken file of a
supported type raises the engine's one-line error naming the file and the fix instead of
being passed on. Label maps (``.seg.nrrd``, or integer files that are clearly class maps)
open as Labels layers with their class names and colours.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Callable

import numpy as np

from dinomix_core.io import FILE_SUFFIXES, DinomixInputError, LabelMap, Volume, read_labels, read_volume
from dinomix_core.io.dicom import find_series_folders, is_dicom_file, series_uid_of_file
from dinomix_core.io.formats import suffix_of
from dinomix_core.io.label_counts import label_counts
from dinomix_core.project.scan import looks_like_label

from ._layers import generic_labelmap, image_layer_data, labels_layer_data

log = logging.getLogger(__name__)

# A class map has at most this many distinct values; a grey-level image has more.
_MAX_LABEL_VALUES = 128
_LABEL_PIXEL_TYPES = ("8-bit unsigned integer", "16-bit unsigned integer", "8-bit signed integer")
SERIES_KEY = "dinomix_series"


def get_reader(path: str | list[str]) -> Callable | None:
    """The reader for ``path`` (a file, a DICOM folder or a list of them), or None if not ours."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    if not paths or not all(_is_ours(p) for p in paths):
        return None
    return read_layers


def read_layers(path: str | list[str]) -> list[tuple]:
    """Layer data tuples for every path: one image (or labels) layer per file or series."""
    paths = [Path(p) for p in path] if isinstance(path, (list, tuple)) else [Path(path)]
    layers, seen_series = [], set()
    for p in paths:
        if p.is_file() and is_dicom_file(p):
            key = (p.parent.resolve(), _series_uid_of(p))
            if key in seen_series:  # several slices of one series selected: read it once
                continue
            seen_series.add(key)
        layers.append(read_one(p))
    return layers


def read_one(path: str | os.PathLike) -> tuple:
    """One layer data tuple: image in HU, or labels with their class map."""
    path = Path(path).expanduser()
    if path.is_dir():
        return _dicom_layer(_series_folder(path))
    if is_dicom_file(path):
        return _dicom_layer(path)
    if suffix_of(path) == ".seg.nrrd":
        labels = read_labels(path)
        return labels_layer_data(labels, labels.meta.get("labelmap") or generic_labelmap(labels.array, path.name))
    volume = read_volume(path)
    labelmap = _as_labelmap(volume, path)
    if labelmap is None:
        return image_layer_data(volume)
    labels = volume.with_array(volume.array.astype(np.uint8), modality="SEG")
    return labels_layer_data(labels, labelmap)


def _is_ours(path: Path) -> bool:
    if path.is_dir():
        return bool(_direct_dicom_files(path)) or bool(find_series_folders(path, max_depth=3))
    if not path.is_file():
        return False
    return suffix_of(path) in FILE_SUFFIXES or is_dicom_file(path)


def _direct_dicom_files(folder: Path) -> list[Path]:
    try:
        return [p for p in sorted(folder.iterdir()) if p.is_file() and is_dicom_file(p)]
    except OSError:
        return []


def _series_folder(folder: Path) -> Path:
    """``folder`` itself when it holds slices, else the sub-folder (patient/study/series) with the most."""
    if _direct_dicom_files(folder):
        return folder
    found = find_series_folders(folder)
    if not found:
        raise DinomixInputError(folder, "holds no DICOM series (no DICOM slices in it or its sub-folders).",
                                "Open a CT file or the folder of one DICOM series.")
    counts = {f: len(_direct_dicom_files(f)) for f in found}
    best = max(found, key=lambda f: (counts[f], str(f)))
    if len(found) > 1:
        others = ", ".join(f"{f.relative_to(folder)} ({counts[f]} files)" for f in found if f != best)
        _notify(f"{folder}: opening {best.relative_to(folder)} ({counts[best]} files), the largest series folder; "
                f"others: {others} (open one of them to see it).")
    return best


def _dicom_layer(path: Path) -> tuple:
    volume = read_volume(path)
    data, kwargs, kind = image_layer_data(volume, name=_series_name(volume, path))
    kwargs["metadata"][SERIES_KEY] = {"series_uid": volume.meta.get("series_uid", ""),
                                      "choice": volume.meta.get("series_choice", ""),
                                      "num_series": volume.meta.get("num_series", 1)}
    if volume.meta.get("num_series", 1) > 1:
        _notify(f"{path}: opened DICOM series {volume.meta.get('series_uid')} ({volume.meta.get('series_choice')}); "
                "open one slice file of another series to see that one.")
    return data, kwargs, kind


def _series_name(volume: Volume, path: Path) -> str:
    """The folder's name; with several series in it, also which one (description, else uid)."""
    folder = path if path.is_dir() else path.parent
    name = folder.name or "DICOM"
    if volume.meta.get("num_series", 1) > 1:
        name += f" [{volume.meta.get('series_description') or volume.meta.get('series_uid')}]"
    return name


def _series_uid_of(path: Path) -> str:
    """The series a slice belongs to, for de-duplicating a multi-file selection (header only)."""
    try:
        return series_uid_of_file(path) or str(path)
    except DinomixInputError:
        return str(path)  # read_one reports the damaged file


def _as_labelmap(volume: Volume, path: Path) -> LabelMap | None:
    """The class map when ``volume`` is clearly a label map, else None (an image).

    Clearly: whole values in 0..255, few distinct ones, and a hint beyond the values (an
    unsigned-integer file, a label-like name or folder, or a dataset.json naming its classes).
    """
    array = volume.array
    if not np.issubdtype(array.dtype, np.integer) or array.size == 0:
        return None
    low, high = int(array.min()), int(array.max())
    if low < 0 or high > 255:
        return None
    present = np.flatnonzero(label_counts(array.astype(np.uint8, copy=False)))
    if present.size > _MAX_LABEL_VALUES:
        return None
    named = _classes_beside(path, high)
    hinted = (volume.meta.get("source_pixel_type") in _LABEL_PIXEL_TYPES or looks_like_label(path)
              or named is not None)
    if not hinted:
        return None
    return named or generic_labelmap(array, path.name)


def _classes_beside(path: Path, top: int) -> LabelMap | None:
    """Class names from ``<name>.dataset.json``, ``dataset.json`` beside or one folder up (nnU-Net)."""
    stem = path.name[: -len(suffix_of(path))] if suffix_of(path) else path.stem
    for candidate in (path.parent / f"{stem}.dataset.json", path.parent / "dataset.json",
                      path.parent.parent / "dataset.json"):
        if not candidate.is_file():
            continue
        try:
            labelmap = LabelMap.from_dataset_json(candidate)
        except DinomixInputError as exc:
            log.warning("%s: class names not used (%s)", candidate, exc)
            continue
        if labelmap.num_classes > top:
            return labelmap
    return None


def _notify(message: str) -> None:
    log.info(message)
    try:
        from napari.utils.notifications import show_info
    except ImportError:  # napari absent: the log line is the report
        return
    show_info(message)
