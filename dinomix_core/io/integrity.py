"""Catch truncated or corrupt files that ITK would read silently.

ITK's NIfTI reader zero-fills a truncated ``.nii``/``.nii.gz`` and turns NaN/inf voxels into
0 without a word, and MetaIO ignores a bad zlib checksum in compressed ``.mha``; a half-zero
CT would then be trained on or annotated as if it were real. These checks stream the file
once in small chunks, so they add time (one decompression) but no memory.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

from .errors import VolumeReadError
from .validation import nonfinite_error

_CHUNK = 4 << 20
_FIX = "Re-export or re-download the file; it was cut short or damaged (interrupted copy, full disk)."


def check_file_integrity(path: Path) -> None:
    """Raise :class:`VolumeReadError` when ``path`` is visibly truncated or corrupt."""
    name = path.name.lower()
    if name.endswith(".nii.gz"):
        _check_nifti(path, compressed=True)
    elif name.endswith(".nii"):
        _check_nifti(path, compressed=False)
    elif name.endswith((".mha", ".mhd")):
        _check_metaimage(path)


class _NiftiHeader:
    """The few single-file NIfTI-1/2 header fields needed to size and scan the voxel data."""

    def __init__(self, header: bytes):
        self.valid = False
        if len(header) < 348:
            return  # too short to be NIfTI; ITK's reader says what it is
        for order in ("<", ">"):
            (size,) = struct.unpack(order + "i", header[:4])
            if size == 348 and header[344:347] == b"n+1":
                dims = struct.unpack(order + "8h", header[40:56])
                datatype, bitpix = struct.unpack(order + "2h", header[70:74])
                (offset,) = struct.unpack(order + "f", header[108:112])
                break
            if size == 540 and len(header) >= 540 and header[4:7] == b"n+2":
                datatype, bitpix = struct.unpack(order + "2h", header[12:16])
                dims = struct.unpack(order + "8q", header[16:80])
                (offset,) = struct.unpack(order + "q", header[168:176])
                break
        else:
            return
        voxels = 1
        for d in dims[1 : 1 + max(0, min(int(dims[0]), 7))]:
            voxels *= max(int(d), 1)
        self.valid = True
        self.offset = int(offset)
        self.expected = self.offset + voxels * int(bitpix) // 8
        floats = {16: "f4", 64: "f8"}
        self.float_dtype = np.dtype(order + floats[datatype]) if datatype in floats else None


class _NonFiniteCounter:
    """Counts NaN/inf among float voxels fed as a byte stream (the header bytes are skipped)."""

    def __init__(self, header: _NiftiHeader):
        self.dtype = header.float_dtype if header.valid else None
        self.skip = header.offset if header.valid else 0
        self.carry = b""
        self.count = 0

    def feed(self, chunk: bytes) -> None:
        if self.dtype is None:
            return
        if self.skip:
            cut = min(self.skip, len(chunk))
            chunk, self.skip = chunk[cut:], self.skip - cut
        data = self.carry + chunk
        usable = len(data) - len(data) % self.dtype.itemsize
        self.count += int(np.count_nonzero(~np.isfinite(np.frombuffer(data[:usable], self.dtype))))
        self.carry = data[usable:]


def _check_nifti(path: Path, *, compressed: bool) -> None:
    """Size check, plus a NaN/inf scan for float data (ITK's NIfTI reader turns them into 0)."""
    opener = gzip.open if compressed else open
    total, header, counter = 0, None, None
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(_CHUNK):
                if header is None:
                    header = _NiftiHeader(chunk[:540])
                    if not compressed and (not header.valid or header.float_dtype is None):
                        total = path.stat().st_size  # integer voxels: the file size is enough
                        break
                    counter = _NonFiniteCounter(header)
                total += len(chunk)
                counter.feed(chunk)
    except EOFError as exc:
        raise VolumeReadError(path, "is a truncated gzip file (the compressed stream ends early).", _FIX) from exc
    except (OSError, zlib.error) as exc:
        raise VolumeReadError(path, f"is not a valid gzip file or is corrupt ({exc}).", _FIX) from exc
    if header is None or not header.valid:
        return
    if total < header.expected:
        what = "after decompression" if compressed else "on disk"
        raise VolumeReadError(path, f"is truncated: {total} bytes {what}, its header describes {header.expected}.", _FIX)
    if counter is not None and counter.count:
        raise nonfinite_error(path, counter.count)


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
