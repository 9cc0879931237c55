"""Catch truncated or corrupt files that ITK would read silently.

ITK's NIfTI reader zero-fills a truncated ``.nii``/``.nii.gz`` and turns NaN/inf voxels into
0 without a word, and MetaIO ignores a bad zlib checksum in compressed ``.mha``; a half-zero
CT would then be trained on or annotated as if it were real. These checks stream the file
once in small chunks, so they add time (one decompression) but no memory. (read_volume's
NIfTI path does the same checks while decoding, see nifti.py.)
"""

from __future__ import annotations

import zlib
from pathlib import Path

from .errors import VolumeReadError
from .nifti import CHUNK as _CHUNK
from .nifti import FIX as _FIX
from .nifti import count_nonfinite, read_header
from .validation import nonfinite_error


def check_file_integrity(path: Path) -> None:
    """Raise :class:`VolumeReadError` when ``path`` is visibly truncated or corrupt."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        _check_nifti(path, compressed=True)
    elif name.endswith(".nii"):
        _check_nifti(path, compressed=False)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


def _check_nifti(path: Path, *, compressed: bool) -> None:
    """Length, gzip CRC and (float data) NaN/inf checks; ITK reads all three silently."""
    header = read_header(path)
    if header is None:
        return  # not a single-file NIfTI; ITK's reader says what it is
    if not compressed and header.dtype.kind != "f":
        size = path.stat().st_size
        if size < header.expected_bytes:
            raise VolumeReadError(path, f"is truncated: {size} bytes on disk, its header describes "
                                  f"{header.expected_bytes}.", _FIX)
        return
    bad = count_nonfinite(path, header)
    if bad:
        raise nonfinite_error(path, bad)


def _check_metaimage(path: Path) -> None:
    """Verify the zlib stream of a compressed MetaImage (.mha inline data or .mhd + .zraw)."""
    with open(path, "rb") as fh:
        header = {}
        while line := fh.readline(4096):
            key, _, value = line.decode("latin-1").partition("=")
            header[key.strip()] = value.strip()
            if key.strip() == "ElementDataFile":
                break
        data_offset = fh.tell()
    if header.get("CompressedData", "").lower() != "true":
        return
    data_file = header.get("ElementDataFile", "")
    if data_file == "LOCAL":
        source, offset = path, data_offset
    elif data_file and data_file not in ("LIST",) and "%" not in data_file:
        source, offset = path.parent / data_file, 0
        if not source.is_file():
            raise VolumeReadError(path, f"refers to data file {data_file!r}, which is missing.",
                                  "Keep the .mhd header and its data file together in one folder.")
    else:
        return
    inflater = zlib.decompressobj()
    try:
        with open(source, "rb") as fh:
            fh.seek(offset)
            while chunk := fh.read(_CHUNK):
                inflater.decompress(chunk, _CHUNK)
                while inflater.unconsumed_tail:
                    inflater.decompress(inflater.unconsumed_tail, _CHUNK)
    except zlib.error as exc:
        raise VolumeReadError(source, f"holds corrupt compressed voxel data ({exc}).", _FIX) from exc
    if not inflater.eof:
        raise VolumeReadError(source, "is truncated: the compressed voxel data ends early.", _FIX)
