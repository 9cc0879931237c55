"""One reader/writer interface for every on-disk format (the nnU-Net ``BaseReaderWriter`` idea).

A :class:`ReaderWriter` turns a path into a validated 3D ``sitk.Image`` plus a metadata dict
(``read``) or straight into the final (z, y, x) voxel array with its geometry
(``read_image``), and writes an image back atomically. :func:`reader_writer_for` picks the implementation:
a folder is a DICOM series, a file goes through SimpleITK's file IOs.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from abc import ABC, abstractmethod
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from . import nifti
from .atomic import atomic_path
from .errors import VolumeReadError, VolumeWriteError
from .integrity import check_file_integrity
from .validation import check_3d_scalar, check_finite, image_dtype, squeeze_time

FILE_SUFFIXES = (".nii.gz", ".nii", ".seg.nrrd", ".nrrd", ".mha", ".mhd")
_SEG_NRRD_FIX = "In 3D Slicer, export the segmentation as a labelmap volume (one layer, no overlapping segments)."


def suffix_of(path: Path) -> str:
    name = path.name.lower()
    return next((s for s in FILE_SUFFIXES if name.endswith(s)), path.suffix.lower())


class ReaderWriter(ABC):
    """Reads a path into a checked 3D scalar ``sitk.Image``; writes one back atomically."""

    name: str = ""

    @abstractmethod
    def can_read(self, path: Path) -> bool: ...

    @abstractmethod
    def read(self, path: Path, *, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
        """Return the image (3D, scalar, HU rescaled) and metadata for ``Volume.meta``."""

    def read_image(self, path: Path, *, series_uid: str | None = None) -> tuple[np.ndarray, dict, dict]:
        """(voxels (z, y, x) int16 or float32, geometry, meta) of an image, NaN/inf refused.

        The default decodes with :meth:`read` and copies once into the final dtype.
        """
        image, meta = self.read(path, series_uid=series_uid)
        view = sitk.GetArrayViewFromImage(image)
        check_finite(view, path)
        array = np.array(view, dtype=image_dtype(view))
        return array, _geometry(image), meta

    def can_write(self, path: Path) -> bool:
        return False

    def write(self, image: sitk.Image, path: Path) -> None:
        raise VolumeWriteError(path, f"the {self.name} format cannot be written.", f"Write one of {', '.join(FILE_SUFFIXES)}.")


class SimpleITKFileIO(ReaderWriter):
    """NIfTI (.nii, .nii.gz), NRRD (.nrrd, .seg.nrrd) and MetaImage (.mha, .mhd) files."""

    name = "SimpleITK file"

    def can_read(self, path: Path) -> bool:
        return path.is_file() and suffix_of(path) in FILE_SUFFIXES

    def can_write(self, path: Path) -> bool:
        return suffix_of(path) in FILE_SUFFIXES

    def read(self, path: Path, *, series_uid: str | None = None) -> tuple[sitk.Image, dict]:
        reader = self._header(path)
        check_file_integrity(path)
        try:
            image = reader.Execute()
        except RuntimeError as exc:
            raise VolumeReadError(
                path, f"is truncated or corrupt: its header reads but its voxels do not ({_itk_reason(exc)}).",
                "Re-export or re-download the file.",
            ) from exc
        meta = {"format": suffix_of(path), "source_pixel_type": image.GetPixelIDTypeAsString()}
        if suffix_of(path) in (".nrrd", ".seg.nrrd"):
            meta["header"] = {k: image.GetMetaData(k) for k in image.GetMetaDataKeys() if k.startswith(("Segment", "Segmentation"))}
        return squeeze_time(image), meta

    def read_image(self, path: Path, *, series_uid: str | None = None) -> tuple[np.ndarray, dict, dict]:
        """NIfTI voxels are streamed into the final array (one volume of memory, see nifti.py)."""
        if suffix_of(path) not in (".nii", ".nii.gz"):
            return super().read_image(path, series_uid=series_uid)
        reader = self._header(path)
        header = nifti.read_header(path)
        size = reader.GetSize()
        if header is None or not header.numeric or header.voxels != int(np.prod(size)) or header.dims_xyz[:3] != size[:3]:
            return super().read_image(path, series_uid=series_uid)  # unusual layout: let ITK decode it
        array = nifti.read_image_voxels(path, header, tuple(reversed(size[:3])))
        meta = {"format": suffix_of(path), "source_pixel_type": sitk.GetPixelIDValueAsString(reader.GetPixelID())}
        return array, _geometry(reader), meta

    def _header(self, path: Path) -> sitk.ImageFileReader:
        """ITK's header reader, after checking the header describes one 3D scalar volume."""
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            check_file_integrity(path)  # a damaged file gets the precise message first
            raise VolumeReadError(
                path, f"is not an image SimpleITK can read ({_itk_reason(exc)}).",
                f"Pass a 3D image in one of {', '.join(FILE_SUFFIXES)}, or a DICOM series folder.",
            ) from exc
        is_seg = suffix_of(path) == ".seg.nrrd"
        check_3d_scalar(reader.GetDimension(), reader.GetSize(), reader.GetNumberOfComponents(), path,
                        fix_hint=_SEG_NRRD_FIX if is_seg else "")
        return reader

    def write(self, image: sitk.Image, path: Path) -> None:
        if suffix_of(path) == ".mhd":
            _write_header_and_data(image, path)
            return
        with atomic_path(path) as tmp:
            _execute_write(image, tmp)


def _execute_write(image: sitk.Image, tmp: Path) -> None:
    writer = sitk.ImageFileWriter()
    writer.SetFileName(str(tmp))
    writer.SetUseCompression(True)
    try:
        writer.Execute(image)
    except RuntimeError as exc:
        raise VolumeWriteError(tmp, f"could not be written ({_itk_reason(exc)}).",
                               "Check free disk space and write permission of the folder.") from exc


def _write_header_and_data(image: sitk.Image, path: Path) -> None:
    """.mhd + .zraw: write both into a hidden temp folder, then move the data, then the header.

    The header names its data file, so both must carry their final names; moving the header
    last means a reader never finds a new header without its data.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=f".{path.name}.", dir=path.parent))
    try:
        _execute_write(image, staging / path.name)
        for part in sorted(staging.iterdir(), key=lambda p: p.name == path.name):
            os.replace(part, path.parent / part.name)
    finally:
        with contextlib.suppress(OSError):
            shutil.rmtree(staging)


def _geometry(source: sitk.Image | sitk.ImageFileReader) -> dict:
    """Spacing (z, y, x) mm, origin (x, y, z) mm and 3x3 direction of the first three axes."""
    dim = source.GetDimension()
    direction = np.reshape(source.GetDirection(), (dim, dim))[:3, :3]
    return {"spacing_zyx": tuple(reversed(source.GetSpacing()[:3])), "origin_xyz": tuple(source.GetOrigin()[:3]),
            "direction": tuple(direction.ravel().tolist())}


def _itk_reason(exc: Exception) -> str:
    """The last meaningful line of an ITK exception (the rest is C++ file/line noise)."""
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    reason = lines[-1] if lines else type(exc).__name__
    return reason.replace("sitk::ERROR: ", "")


def reader_writer_for(path: Path, *, for_write: bool = False) -> ReaderWriter:
    """The reader/writer handling ``path`` (a folder is a DICOM series)."""
    from .dicom import DicomSeriesIO  # local: dicom imports this module's base class

    candidates = (DicomSeriesIO(), SimpleITKFileIO())
    for rw in candidates:
        if (rw.can_write(path) if for_write else rw.can_read(path)):
            return rw
    supported = ", ".join(FILE_SUFFIXES)
    if for_write:
        raise VolumeWriteError(path, f"cannot write format {suffix_of(path) or '(no extension)'!r}.",
                               f"Use one of {supported}.")
    raise VolumeReadError(path, f"unsupported file type {suffix_of(path) or '(no extension)'!r}.",
                          f"Pass a 3D image in one of {supported}, or a DICOM series folder.")
