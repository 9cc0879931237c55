"""Image geometry without the voxels: what a target spacing needs to know about every case.

The median spacing of the labeled cases is known before any case is loaded (teacher tokens
are computed on the resampled grid, so the target must be fixed first). File headers give it
for NIfTI, NRRD and MetaImage without decoding the voxels; a DICOM series is read whole.
"""

from __future__ import annotations

import os
from pathlib import Path

import SimpleITK as sitk

from .errors import VolumeReadError
from .formats import FILE_SUFFIXES, _geometry, _itk_reason, suffix_of
from .readers import read_volume


def read_geometry(path: str | os.PathLike) -> dict:
    """``{"shape_zyx", "spacing_zyx" (mm), "origin_xyz" (mm), "direction"}`` of a CT file or DICOM folder."""
    path = Path(path).expanduser()
    if path.is_file() and suffix_of(path) in FILE_SUFFIXES:
        reader = sitk.ImageFileReader()
        reader.SetFileName(str(path))
        try:
            reader.ReadImageInformation()
        except RuntimeError as exc:
            raise VolumeReadError(path, f"is not an image SimpleITK can read ({_itk_reason(exc)}).",
                                  f"Pass a 3D image in one of {', '.join(FILE_SUFFIXES)}, or a DICOM series folder.") from exc
        if reader.GetDimension() >= 3:
            return {"shape_zyx": tuple(int(n) for n in reversed(reader.GetSize()[:3])), **_geometry(reader)}
    volume = read_volume(path)  # DICOM folder, or an unusual file: the reader's own checks and messages
    return {"shape_zyx": volume.shape, "spacing_zyx": volume.spacing_zyx, "origin_xyz": volume.origin_xyz,
            "direction": volume.direction}
