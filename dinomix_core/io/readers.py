"""Read CT images and label maps into :class:`Volume` (array (z, y, x), geometry in mm).

Memory: NIfTI voxels are streamed straight into the returned array (about one volume of
memory); other formats are decoded by SimpleITK and copied once into the final dtype, the
SimpleITK image being released right after (about two volumes).
"""

from __future__ import annotations

import difflib
import os
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import VolumeReadError
from .formats import reader_writer_for, suffix_of
from .labelmap import LabelMap
from .segnrrd import labelmap_from_segments, segments_from_header
from .validation import check_label_values, check_same_grid, label_dtype
from .volume import Volume


def read_volume(path: str | os.PathLike, *, series_uid: str | None = None) -> Volume:
    """Read a 3D CT (NIfTI, NRRD, MHA/MHD file or DICOM series folder) in HU.

    The array is (z, y, x), int16 when every value is a whole number that fits, else
    float32; spacing/origin are in mm. For a folder with several DICOM series the largest is
    read unless ``series_uid`` is given; ``meta['series_uid']``/``meta['series_choice']`` say which.
    """
    path = _existing(path)
    array, geometry, meta = reader_writer_for(path).read_image(path, series_uid=series_uid)
    meta.pop("header", None)
    return Volume(array, **geometry, source=path, modality=meta.pop("modality", "CT"), meta=meta)


def read_labels(path: str | os.PathLike, *, reference: Volume | None = None,
                labelmap: LabelMap | None = None) -> Volume:
    """Read an integer label map (z, y, x) as uint8 (uint16 above 255).

    ``reference`` (its image) must share size, spacing, origin and direction; ``labelmap``
    must name every value present. A Slicer ``.seg.nrrd`` header's classes land in
    ``meta['labelmap']``.
    """
    path = _existing(path)
    image, meta = reader_writer_for(path).read(path)
    meta.pop("modality", None)
    header = meta.pop("header", {})
    view = sitk.GetArrayViewFromImage(image)
    dtype = label_dtype(view, path, num_classes=labelmap.num_classes if labelmap else 0)
    array = np.array(view, dtype=dtype)
    labels = _volume(array, image, path, meta, modality="SEG")
    if reference is not None:
        check_same_grid(labels, reference, path)
    if labelmap is not None:
        check_label_values(labels.array, labelmap, path)
    segments = segments_from_header(header)
    if segments:
        labels.meta["labelmap"] = labelmap_from_segments(segments)
    return labels


def _volume(array: np.ndarray, image: sitk.Image, path: Path, meta: dict, *, modality: str) -> Volume:
    return Volume(
        array=array,
        spacing_zyx=tuple(reversed(image.GetSpacing())),
        origin_xyz=image.GetOrigin(),
        direction=image.GetDirection(),
        source=path,
        modality=modality,
        meta=meta,
    )


def _existing(path: str | os.PathLike) -> Path:
    """The path, or a clear error (with close file names) when it does not exist."""
    path = Path(path).expanduser()
    if path.exists():
        if path.is_file() and path.stat().st_size == 0:
            raise VolumeReadError(path, "is an empty file (0 bytes).", "Re-export or re-copy the image.")
        return path
    parent = path.parent
    if not parent.is_dir():
        raise VolumeReadError(path, f"does not exist (nor does its folder {parent}).", "Check the path for typos.")
    close = difflib.get_close_matches(path.name, [p.name for p in parent.iterdir()], n=3, cutoff=0.6)
    hint = f" Did you mean {', '.join(close)}?" if close else ""
    kind = "folder" if not suffix_of(path) else "file"
    raise VolumeReadError(path, f"{kind} does not exist.{hint}", "Check the path, or pass an image file or DICOM series folder.")
