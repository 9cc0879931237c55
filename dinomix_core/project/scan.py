"""Finding images to add and naming them as cases, the way nnU-Net users expect.

Case ids follow nnU-Net: ``liver_007_0000.nii.gz`` -> ``liver_007`` (the ``_0000`` channel
suffix and the extension go). A DICOM series folder is named after the folder. Files with a
generic name (``ct.nii.gz``, ``imaging.nii.gz``, as TotalSegmentator and KiTS lay data out) are
named after their folder instead, so ``s0011/ct.nii.gz`` becomes ``s0011``, not ``ct_2``.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

# DICOM slices are recognised by content, not name (``CT.1.2.840...``, ``IM0001``, no extension).
from dinomix_core.io.dicom import is_dicom_file  # noqa: F401  (re-exported for the CLI)

IMAGE_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".mhd")
# Formats whose header names a separate data file; byte-copying the header alone would break them.
DETACHED_SUFFIXES = (".mhd",)
GENERIC_STEMS = frozenset({"ct", "image", "img", "imaging", "volume", "vol", "scan", "data", "series"})
LABEL_FOLDERS = frozenset({"labelstr", "labelsts", "labels", "label", "segmentations", "segmentation",
                           "masks", "mask", "predictions", "ground_truth", "gt"})
_LABEL_NAME = re.compile(r"^(seg|segmentation|label|labels|mask|gt)([_.-]|$)|[_.-](seg|label|labels|mask|gt)$", re.I)
_CHANNEL = re.compile(r"_(\d{4})$")
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")


@dataclass(frozen=True)
class Candidate:
    """Something to add: an image file or a DICOM series folder."""

    path: Path
    is_dicom_folder: bool


def split_image_suffix(name: str) -> tuple[str, str] | None:
    """``("liver_007_0000", ".nii.gz")`` for an image file name, None for other files."""
    lower = name.lower()
    for suffix in IMAGE_SUFFIXES:
        if lower.endswith(suffix) and len(name) > len(suffix):
            return name[: -len(suffix)], name[-len(suffix):]
    return None


def sanitize_case_id(text: str) -> str:
    """Keep case ids safe as folder names on every OS: letters, digits, ``._-``."""
    cleaned = _UNSAFE.sub("_", text).strip("._-")
    return cleaned or "case"


def case_id_from_path(path: str | os.PathLike, *, is_dicom_folder: bool = False) -> str:
    """The case id for an image file or DICOM folder (not yet made unique)."""
    path = Path(path)
    if is_dicom_folder or path.is_dir():
        return sanitize_case_id(path.name)
    split = split_image_suffix(path.name)
    stem = split[0] if split else path.name
    stem = _CHANNEL.sub("", stem)
    if stem.lower() in GENERIC_STEMS and path.parent.name:
        stem = path.parent.name
    return sanitize_case_id(stem)


def make_unique(base: str, taken: set[str]) -> str:
    """``base``, or ``base_2``, ``base_3``... whichever is free."""
    if base not in taken:
        return base
    n = 2
    while f"{base}_{n}" in taken:
        n += 1
    return f"{base}_{n}"


def looks_like_label(path: Path) -> bool:
    """Name-based guess used only while scanning folders (explicit files are taken as given)."""
    split = split_image_suffix(path.name)
    stem = split[0] if split else path.name
    if ".seg" in path.name.lower():
        return True
    if _LABEL_NAME.search(stem):
        return True
    return any(part.lower() in LABEL_FOLDERS for part in path.parent.parts[-2:])


def _visible_files(folder: Path) -> list[Path]:
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    return [p for p in entries if p.is_file() and not p.name.startswith(".")]


def visible_tree(folder: Path) -> list[Path]:
    """Every non-hidden file under ``folder``, sorted (the files io's content hash covers)."""
    return sorted(p for p in folder.rglob("*") if p.is_file()
                  and not any(part.startswith(".") for part in p.relative_to(folder).parts))


def scan_paths(paths: list[str | os.PathLike], *, exclude: Path | None = None
               ) -> tuple[list[Candidate], list[tuple[Path, str]]]:
    """Expand files, DICOM folders and folders to scan into candidates; say why others were skipped.

    Files named explicitly are taken as images whatever their name. Inside scanned folders,
    label-looking files (``seg*.nii.gz``, anything under ``labelsTr/``) are skipped with a
    reason, as is anything inside ``exclude`` (the project folder itself).
    """
    found: list[Candidate] = []
    skipped: list[tuple[Path, str]] = []
    for raw in paths:
        path = Path(raw).expanduser().resolve()
        if exclude is not None and _under(path, exclude):
            skipped.append((path, "is inside the project folder"))
        elif not path.exists():
            skipped.append((path, "does not exist"))
        elif path.is_file():
            if split_image_suffix(path.name):
                found.append(Candidate(path, False))
            elif is_dicom_file(path):
                found.append(Candidate(path.parent, True))
            else:
                skipped.append((path, f"is not a supported image ({', '.join(IMAGE_SUFFIXES)}, DICOM)"))
        else:
            _scan_folder(path, exclude, found, skipped)
    unique: dict[Path, Candidate] = {}
    for cand in found:
        unique.setdefault(cand.path, cand)
    return list(unique.values()), skipped


def _scan_folder(root: Path, exclude: Path | None, found: list[Candidate], skipped: list[tuple[Path, str]]) -> None:
    for dirpath, dirnames, _ in os.walk(root):
        folder = Path(dirpath)
        dirnames[:] = sorted(d for d in dirnames if not d.startswith(".")
                             and not (exclude is not None and _under(folder / d, exclude)))
        files = _visible_files(folder)
        if any(is_dicom_file(f) for f in files):
            found.append(Candidate(folder, True))
        for f in files:
            if not split_image_suffix(f.name):
                continue
            if looks_like_label(f):
                skipped.append((f, "looks like a label map (by name or folder); import it with `dinomix project label`"))
            else:
                found.append(Candidate(f, False))


def _under(path: Path, folder: Path) -> bool:
    try:
        path.resolve().relative_to(folder.resolve())
    except ValueError:
        return False
    return True


def stat_signature(path: Path) -> str:
    """Size and modification time of a file, or of a DICOM folder's files, as one string.

    Unchanged signature -> unchanged content (the assumption git makes too); a changed one
    triggers a full content-hash check.
    """
    if path.is_dir():
        h = hashlib.sha256()
        for f in visible_tree(path):
            st = f.stat()
            h.update(f"{f.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "dir:" + h.hexdigest()
    st = path.stat()
    return f"file:{st.st_size}:{st.st_mtime_ns}"
