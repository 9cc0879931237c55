"""Content hashes that identify a case by its bytes, not its name or location."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

from .errors import VolumeReadError

_CHUNK = 1 << 20


def content_hash(path: str | os.PathLike) -> str:
    """sha256 hex of a file's bytes, or of a folder's (DICOM series) file contents.

    A MetaImage ``.mhd`` also covers its separate data file. For a folder, every non-hidden
    file under it is hashed on its own and the sorted file digests are hashed together: adding,
    removing or changing a slice changes the result; renaming or moving files does not.
    """
    path = Path(path).expanduser()
    digest = hashlib.sha256()
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not any(part.startswith(".") for part in p.relative_to(path).parts))
        if not files:
            raise VolumeReadError(path, "is an empty folder; nothing to hash.", "Pass the folder holding the DICOM files.")
        for file_digest in sorted(_file_digest(file) for file in files):
            digest.update(file_digest)
        return digest.hexdigest()
    if not path.is_file():
        raise VolumeReadError(path, "does not exist.", "Check the path.")
    _feed(digest, path)
    if path.name.lower().endswith(".mhd"):
        data = _mhd_data_file(path)
        if data is not None and data.is_file():
            _feed(digest, data)
    return digest.hexdigest()


def _file_digest(path: Path) -> bytes:
    digest = hashlib.sha256()
    _feed(digest, path)
    return digest.digest()


def _feed(digest, path: Path) -> None:
    with open(path, "rb") as fh:
        while chunk := fh.read(_CHUNK):
            digest.update(chunk)


def _mhd_data_file(path: Path) -> Path | None:
    for line in path.read_text(encoding="latin-1", errors="replace").splitlines():
        key, _, value = line.partition("=")
        if key.strip() == "ElementDataFile" and value.strip() not in ("LOCAL", "LIST"):
            return path.parent / value.strip()
    return None
