"""Stream NIfTI voxels straight into the final (z, y, x) array, checking them on the way.

ITK decodes a NIfTI into a buffer of the file's type (and niftilib briefly holds a second
copy), turns NaN/inf into 0 and zero-fills a truncated file. Reading the voxels here in
4 MiB chunks into an array of the final dtype (int16, else float32) needs one volume of
memory, decompresses once, and verifies length, gzip CRC and finiteness in the same pass.
Geometry still comes from ITK's header reader, so it matches a SimpleITK read exactly.

Decompression goes through ISA-L (``isal.igzip``, the gzip module's API and errors): a
512 x 512 x 300 int16 CT (150 MB) decompressed in 0.26 s against 0.68 s with the standard
library's zlib (2-core build machine, 2026-12-05). Opening that case in the app spent
0.82 s of its 1.67 s in decompression (cProfile of ``AnnotationSession.open_case``).
"""

from __future__ import annotations

import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

import numpy as np
from isal import igzip, isal_zlib

from .errors import VolumeReadError
from .validation import nonfinite_error

CHUNK = 4 << 20
FIX = "Re-export or re-download the file; it was cut short or damaged (interrupted copy, full disk)."
_TYPES = {2: "u1", 4: "i2", 8: "i4", 16: "f4", 64: "f8", 256: "i1", 512: "u2", 768: "u4", 1024: "i8", 1280: "u8"}
_INT16 = np.iinfo(np.int16)


@dataclass(frozen=True)
class NiftiHeader:
    """The single-file NIfTI-1/2 fields needed to decode the voxel data."""

    dtype: np.dtype  # element type with byte order; a void type when not a plain number
    numeric: bool
    dims_xyz: tuple[int, ...]  # dim[1..dim[0]]
    offset: int
    slope: float
    inter: float

    @property
    def voxels(self) -> int:
        return int(np.prod(self.dims_xyz, dtype=np.int64))

    @property
    def expected_bytes(self) -> int:
        return self.offset + self.voxels * self.dtype.itemsize

    @property
    def scaled(self) -> bool:
        # NIfTI: scl_slope == 0 means "no scaling"; otherwise value = slope * stored + inter.
        return self.slope != 0.0 and np.isfinite(self.slope) and (self.slope != 1.0 or self.inter != 0.0)


def parse_header(raw: bytes) -> NiftiHeader | None:
    """Parse a NIfTI-1 (348 bytes) or NIfTI-2 (540 bytes) single-file header, else None."""
    if len(raw) < 348:
        return None
    for order in ("<", ">"):
        (size,) = struct.unpack(order + "i", raw[:4])
        if size == 348 and raw[344:347] == b"n+1":
            dims = struct.unpack(order + "8h", raw[40:56])
            datatype, bitpix = struct.unpack(order + "2h", raw[70:74])
            offset, slope, inter = struct.unpack(order + "3f", raw[108:120])
            break
        if size == 540 and len(raw) >= 540 and raw[4:7] == b"n+2":
            datatype, bitpix = struct.unpack(order + "2h", raw[12:16])
            dims = struct.unpack(order + "8q", raw[16:80])
            (offset,) = struct.unpack(order + "q", raw[168:176])
            slope, inter = struct.unpack(order + "2d", raw[176:192])
            break
    else:
        return None
    ndim = max(0, min(int(dims[0]), 7))
    if ndim == 0 or bitpix <= 0 or bitpix % 8:
        return None
    numeric = datatype in _TYPES
    dtype = np.dtype(order + _TYPES[datatype]) if numeric else np.dtype(f"V{bitpix // 8}")
    return NiftiHeader(dtype, numeric, tuple(max(int(d), 1) for d in dims[1 : 1 + ndim]), int(offset),
                       float(slope), float(inter))


def read_header(path: Path) -> NiftiHeader | None:
    for chunk in _raw_chunks(path, size=540):
        return parse_header(chunk)
    return None


def _raw_chunks(path: Path, size: int | None = None) -> Iterator[bytes]:
    opener = igzip.open if path.name.lower().endswith(".gz") else open
    try:
        with opener(path, "rb") as fh:
            while chunk := fh.read(size or CHUNK):
                yield chunk
    except EOFError as exc:
        raise VolumeReadError(path, "is a truncated gzip file (the compressed stream ends early).", FIX) from exc
    except (OSError, zlib.error, isal_zlib.error) as exc:
        raise VolumeReadError(path, f"is not a valid gzip file or is corrupt ({exc}).", FIX) from exc


def voxel_chunks(path: Path, header: NiftiHeader) -> Iterator[np.ndarray]:
    """Stored voxel values in file order (x fastest); raise if the data is short or damaged.

    The stream is always read to its end, so gzip verifies its CRC and length trailer.
    """
    skip, remaining, carry, item = header.offset, header.voxels, b"", header.dtype.itemsize
    for chunk in _raw_chunks(path):
        if skip:
            cut = min(skip, len(chunk))
            chunk, skip = chunk[cut:], skip - cut
        if not remaining or not chunk:
            continue
        data = carry + chunk if carry else chunk
        count = min(len(data) // item, remaining)
        if count:
            yield np.frombuffer(data, header.dtype, count=count)
            remaining -= count
        carry = data[count * item :] if remaining else b""
    if remaining:
        got = header.voxels - remaining
        what = "after decompression" if path.name.lower().endswith(".gz") else "on disk"
        raise VolumeReadError(path, f"is truncated: {got} of the {header.voxels} voxels its header describes are there "
                              f"({what}).", FIX)


def count_nonfinite(path: Path, header: NiftiHeader) -> int:
    """Stream the whole file (length and CRC checks) and count NaN/inf among float voxels."""
    bad = 0
    for values in voxel_chunks(path, header):
        if header.numeric and values.dtype.kind == "f":
            bad += int(np.count_nonzero(~np.isfinite(values)))
    return bad


def read_image_voxels(path: Path, header: NiftiHeader, shape_zyx: tuple[int, int, int]) -> np.ndarray:
    """The scaled voxels as a (z, y, x) array: int16 when all are whole numbers that fit, else float32."""
    out = np.empty(header.voxels, dtype=np.int16)
    always_fits = not header.scaled and (header.dtype.itemsize == 1 or header.dtype.newbyteorder("=") == np.int16)
    pos, bad = 0, 0
    for values in voxel_chunks(path, header):
        if header.scaled:
            values = values * header.slope + header.inter  # float64, as the NIfTI standard defines it
        if values.dtype.kind == "f":
            finite = np.isfinite(values)
            if not finite.all():
                bad += int(values.size - np.count_nonzero(finite))
        if out.dtype == np.int16 and not always_fits and not _fits_int16(values):
            wider = np.empty(header.voxels, dtype=np.float32)
            wider[:pos] = out[:pos]
            out = wider
        out[pos : pos + values.size] = values
        pos += values.size
    if bad:
        raise nonfinite_error(path, bad)
    return out.reshape(shape_zyx)


def _fits_int16(values: np.ndarray) -> bool:
    if values.size == 0:
        return True
    if values.dtype.kind == "f" and not np.array_equal(np.floor(values), values):
        return False
    return _INT16.min <= values.min() and values.max() <= _INT16.max
