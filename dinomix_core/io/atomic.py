"""Atomic, verified file writes: a reader never sees a half-written file, a crash never loses
the old one, and a full disk is reported instead of leaving a cut-short file behind.

Why verify: SimpleITK's NIfTI writer reports success on a full disk and leaves a truncated
gzip (seen on a 1 MiB tmpfs), and delayed allocation can make only ``fsync`` fail. So after
the writer returns, the temp file is fsynced and checked (gzip streams decompressed to their
CRC trailer, NIfTI/NumPy lengths against their headers, zip archives for their directory)
before it is renamed over the target.
"""

from __future__ import annotations

import contextlib
import errno
import os
import tempfile
import zipfile
import zlib
from pathlib import Path
from typing import Callable, Iterator

from isal import igzip, isal_zlib

from .errors import VolumeWriteError

_FULL_ERRNOS = {errno.ENOSPC, getattr(errno, "EDQUOT", errno.ENOSPC)}
_NEARLY_FULL_BYTES = 1 << 20  # below this much free space, a failed write is taken as "disk full"
_EMPTY_IS_WRONG = (".gz", ".nii", ".nrrd", ".mha", ".mhd", ".npy", ".npz", ".pt", ".pth", ".zip")
_FREE_SPACE_FIX = "Free disk space (or choose a folder on another disk) and run the command again."


class DiskFullError(VolumeWriteError, OSError):
    """A write ran out of space (ENOSPC/EDQUOT, or a writer cut short on a full disk).

    Also an ``OSError`` with ``errno`` ENOSPC, so code that handles a full disk as the OS
    reports it keeps working; the message is the one-line "disk full at PATH".
    """

    def __init__(self, path: str | os.PathLike, detail: str = ""):
        extra = f" ({detail})" if detail else ""
        super().__init__(None, f"disk full at {os.fspath(path)}{extra}; nothing was written there and any "
                         "earlier file of that name is unchanged.", _FREE_SPACE_FIX)
        self.path = self.filename = os.fspath(path)
        self.errno, self.strerror = errno.ENOSPC, os.strerror(errno.ENOSPC)

    def __str__(self) -> str:
        return str(self.args[0])


def _read_umask() -> int:
    # Read once at import (setting it is process-wide, so never toggle it while threads run).
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def is_disk_full(exc: BaseException) -> bool:
    """True for the OSError a full disk or an exceeded quota raises (also inside sqlite3 text)."""
    return isinstance(exc, OSError) and exc.errno in _FULL_ERRNOS


def nearly_full(folder: str | os.PathLike) -> bool:
    """True when ``folder``'s file system has (almost) no space left for this user."""
    try:
        st = os.statvfs(folder)
    except OSError:
        return False
    blocks = st.f_bfree if os.geteuid() == 0 else st.f_bavail
    return blocks * st.f_frsize < _NEARLY_FULL_BYTES


@contextlib.contextmanager
def atomic_path(target: str | os.PathLike, *, verify: Callable[[Path], str | None] | None = None) -> Iterator[Path]:
    """Yield a temporary path beside ``target``; on success fsync, verify and rename it over ``target``.

    The temporary file keeps the target's suffixes (``.nii.gz``), so writers that choose a
    format by extension behave. ``verify(tmp)`` returns a problem (str) or None; by default
    the file's own framing is checked (see :func:`check_complete`). On any failure the
    temporary file is removed and the target is left untouched; a full disk raises
    :class:`DiskFullError` naming ``target``.
    """
    target = Path(target)
    tmp: Path | None = None
    try:
        target.parent.mkdir(parents=True, exist_ok=True)
        suffix = "".join(target.suffixes) or ".tmp"
        fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name.split('.')[0]}.", suffix=suffix, dir=target.parent)
        os.close(fd)
        tmp = Path(tmp_name)
        yield tmp
        with open(tmp, "rb+") as fh:
            fh.flush()
            os.fsync(fh.fileno())
        problem = (verify or (lambda p: check_complete(p, target)))(tmp)
        if problem:
            if nearly_full(target.parent):
                raise DiskFullError(target, f"the file came out cut short: {problem}")
            raise VolumeWriteError(target, f"the file came out cut short ({problem}); nothing was replaced.",
                                   "Check the disk (free space, errors) and run the command again.")
        # mkstemp makes 0600 files; give the result the mode a plain open() would (or the old file's).
        os.chmod(tmp, _mode_for(target))
        os.replace(tmp, target)
        tmp = None
        _fsync_dir(target.parent)
    except BaseException as exc:
        full = isinstance(exc, Exception) and not isinstance(exc, DiskFullError) and (
            is_disk_full(exc) or "no space left" in str(exc).lower() or nearly_full(target.parent))
        if tmp is not None:
            with contextlib.suppress(OSError):
                tmp.unlink()
        if full:
            raise DiskFullError(target, _reason(exc)) from exc
        raise


def atomic_write_bytes(target: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` atomically; the file on disk is checked to hold exactly ``len(data)`` bytes."""
    def same_size(tmp: Path) -> str | None:
        size = tmp.stat().st_size
        return None if size == len(data) else f"{size} of {len(data)} bytes on disk"

    with atomic_path(target, verify=same_size) as tmp:
        with open(tmp, "wb") as fh:
            fh.write(data)


def atomic_write_text(target: str | os.PathLike, text: str) -> None:
    atomic_write_bytes(target, text.encode("utf-8"))


# -- verification ------------------------------------------------------------------------


def check_complete(path: Path, target: Path | None = None) -> str | None:
    """Why the just-written ``path`` is incomplete, or None when its framing is intact.

    Recognised by content: gzip (decompressed to the end: CRC and length trailer), NIfTI-1/2
    (length vs header), NRRD with gzip data, ``.npy`` (length vs header), zip (torch
    checkpoints: the central directory is written last). Other content is trusted; an empty
    file is wrong only where the target's format cannot be empty.
    """
    name = (target or path).name.lower()
    size = path.stat().st_size
    if size == 0:
        return "it is empty (0 bytes)" if name.endswith(_EMPTY_IS_WRONG) else None
    with open(path, "rb") as fh:
        head = fh.read(540)
    if head[:2] == b"\x1f\x8b":
        return _check_gzip(path, 0)
    if head[:4] == b"NRRD":
        return _check_nrrd(path)
    if head[:6] == b"\x93NUMPY":
        return _check_npy(path, size)
    if head[:4] == b"PK\x03\x04":
        return None if zipfile.is_zipfile(path) else "the zip archive has no central directory"
    from .nifti import parse_header  # local: nifti imports numpy-heavy helpers

    header = parse_header(head)
    if header is not None and size < header.expected_bytes:
        return f"{size} of the {header.expected_bytes} bytes its NIfTI header describes"
    return None


def _check_gzip(path: Path, offset: int) -> str | None:
    from .nifti import parse_header

    total, head = 0, b""
    try:
        with open(path, "rb") as raw:
            raw.seek(offset)
            with igzip.GzipFile(fileobj=raw, mode="rb") as fh:  # ISA-L: 2.6x zlib's speed (see nifti.py)
                while chunk := fh.read(4 << 20):
                    if len(head) < 540:
                        head += chunk[: 540 - len(head)]
                    total += len(chunk)
    except EOFError:
        return "the gzip stream ends early"
    except (OSError, zlib.error, isal_zlib.error) as exc:
        return f"the gzip stream is damaged ({exc})"
    header = parse_header(head)
    if header is not None and total < header.expected_bytes:
        return f"{total} of the {header.expected_bytes} bytes its NIfTI header describes, after decompression"
    return None


def _check_nrrd(path: Path) -> str | None:
    with open(path, "rb") as fh:
        head = fh.read(1 << 16)
    end = head.find(b"\n\n")
    if end < 0:
        return "the NRRD header has no end"
    fields = dict(line.split(b":", 1) for line in head[:end].splitlines()[1:] if b":" in line and not line.startswith(b"#"))
    encoding = fields.get(b"encoding", b"").strip().lower()
    if encoding in (b"gzip", b"gz") and fields.get(b"data file") is None:
        return _check_gzip(path, end + 2)
    return None


def _check_npy(path: Path, size: int) -> str | None:
    import numpy as np

    try:
        with open(path, "rb") as fh:
            version = np.lib.format.read_magic(fh)
            read = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
            shape, _, dtype = read(fh)
            data_at = fh.tell()
    except (ValueError, OSError) as exc:
        return f"the .npy header is damaged ({exc})"
    if dtype.hasobject:
        return None
    expected = data_at + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    return None if size >= expected else f"{size} of the {expected} bytes its .npy header describes"


def _reason(exc: BaseException) -> str:
    if isinstance(exc, OSError) and exc.strerror:
        return exc.strerror
    problem = getattr(exc, "problem", None)  # a DinomixInputError about the temp file: keep only what went wrong
    if isinstance(problem, str):
        return problem.rstrip(".")
    lines = [ln.strip() for ln in str(exc).splitlines() if ln.strip()]
    return (lines[-1] if lines else type(exc).__name__)[:200]


def _mode_for(target: Path) -> int:
    try:
        return target.stat().st_mode & 0o7777
    except FileNotFoundError:
        return 0o666 & ~_UMASK


def _fsync_dir(directory: Path) -> None:
    # Makes the rename itself durable; not supported on every platform/filesystem.
    with contextlib.suppress(OSError):
        fd = os.open(directory, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)
