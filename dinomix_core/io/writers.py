"""Write images and label maps atomically, compressed, with the exact geometry of their image."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .atomic import DiskFullError, nearly_full
from .errors import GeometryMismatchError, VolumeWriteError
from .formats import reader_writer_for, suffix_of
from .labelmap import LabelMap
from .segnrrd import add_segment_header
from .validation import check_label_values, count_nonfinite, grid_differences, label_dtype
from .volume import Volume


def write_image(volume: Volume, path: str | os.PathLike) -> Path:
    """Write a (z, y, x) image with its spacing/origin (mm) and direction; atomic and compressed."""
    path = Path(path).expanduser()
    writer = reader_writer_for(path, for_write=True)
    bad = count_nonfinite(volume.array)
    if bad:
        raise VolumeWriteError(path, f"refusing to write an image with {bad} NaN/inf voxel(s).",
                               "Replace them with a real value (e.g. -1024 HU for air) before saving.")
    _write(writer, volume.to_sitk(), path)
    return path


def write_labels(volume_or_array: Volume | np.ndarray, path: str | os.PathLike, *,
                 reference: Volume | None = None, labelmap: LabelMap | None = None) -> Path:
    """Write a (z, y, x) label map as uint8 (uint16 above 255 classes), compressed and atomic.

    The file gets ``reference``'s geometry bit for bit (a bare array needs ``reference``); a
    label Volume on another grid is refused rather than silently shifted. With ``labelmap``
    the values are checked against it and, for ``.seg.nrrd``, written as Slicer segments.
    """
    path = Path(path).expanduser()
    writer = reader_writer_for(path, for_write=True)
    if isinstance(volume_or_array, Volume):
        array = volume_or_array.array
        grid = reference if reference is not None else volume_or_array
        if reference is not None:
            diffs = grid_differences(volume_or_array, reference)
            if diffs:
                raise GeometryMismatchError(path, "refusing to write labels that do not lie on their image's grid: "
                                            + "; ".join(diffs) + ".",
                                            "Resample them first: resample_like(labels, image, is_label=True).")
    else:
        if reference is None:
            raise TypeError("write_labels(array, path) needs reference=<image Volume> to know the geometry")
        array = np.asarray(volume_or_array)
        grid = reference
        if array.shape != reference.shape:
            raise GeometryMismatchError(path, f"refusing to write labels of shape (z, y, x) {array.shape} "
                                        f"for an image of shape {reference.shape}.",
                                        "Pass the label array predicted or drawn on this image.")
    dtype = label_dtype(array, path, num_classes=labelmap.num_classes if labelmap else 0)
    if labelmap is not None:
        check_label_values(array, labelmap, path)
    out = Volume(array.astype(dtype, copy=False), grid.spacing_zyx, grid.origin_xyz, grid.direction)
    image = out.to_sitk()
    if labelmap is not None and suffix_of(path) == ".seg.nrrd":
        add_segment_header(image, labelmap)
    _write(writer, image, path)
    return path


def _write(writer, image, path: Path) -> None:
    """Write through the format's writer; a failure on a full disk says so and names ``path``.

    The atomic writers already report a full disk; this also covers writers with their own
    staging (``.mhd`` + ``.zraw``), whose errors name a temp file.
    """
    try:
        writer.write(image, path)
    except DiskFullError:
        raise
    except (VolumeWriteError, OSError) as exc:
        if "no space left" in str(exc).lower() or nearly_full(path.parent):
            raise DiskFullError(path, getattr(exc, "problem", None) or str(exc)) from exc
        raise
