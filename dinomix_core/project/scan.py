"""Finding images to add and naming them as cases, the way nnU-Net users expect.

Case ids follow nnU-Net: ``liver_007_0000.nii.gz`` -> ``liver_007`` (the ``_0000`` channel
suffix and the extension go). A DICOM series folder is named after the folder. Files with a
generic name (``ct.nii.gz``, ``imaging.nii.gz``, as TotalSegmentator and KiTS lay data out) are
named after their folder instead, so ``s0011/ct.nii.gz`` becomes ``s0011``, not ``ct_2``.

A folder holding several DICOM series (scanners export the arterial and venous phases, or
thin and thick reconstructions, side by side) gives one case per series, named from its
Series Description (0008,103E), else its Series Instance UID. Such a case is stored as the
path of the series' first slice (the reader reads the whole series a slice belongs to), and
its content hash covers exactly that series' files (:func:`image_hash`).
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from pathlib import Path

from dinomix_core.io import DinomixInputError, content_hash
# DICOM slices are recognised by content, not name (``CT.1.2.840...``, ``IM0001``, no extension).
from dinomix_core.io.dicom import SeriesInfo, describe_series, is_dicom_file, series_uid_of_file
from dinomix_core.io.hashing import _file_digest

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
    """Something to add: an image file or a DICOM series folder (``series_uid``: one series of it)."""

    path: Path
    is_dicom_folder: bool
    series_uid: str | None = None


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


def series_case_id(info: SeriesInfo) -> str:
    """The case id of one series of a multi-series folder: its description, else its uid."""
    return sanitize_case_id(info.description or info.uid)


def expand_series(cand: Candidate) -> list[tuple[Candidate, SeriesInfo | None]]:
    """A DICOM folder with several series -> one candidate per series (largest first).

    A folder with one series stays one candidate (no series info: the folder is the case);
    ``cand.series_uid`` keeps just that series. Raises the reader's error for a folder
    without a readable series.
    """
    if not cand.is_dicom_folder:
        return [(cand, None)]
    every = describe_series(cand.path)
    if len(every) == 1:
        return [(Candidate(cand.path, True), None)]
    wanted = [s for s in every if s.uid == cand.series_uid] if cand.series_uid is not None else every
    return [(Candidate(cand.path, True, info.uid), info) for info in wanted or every]


def is_series_member(path: Path) -> bool:
    """True for a case stored as one slice of a multi-series folder (not an image file, not a folder)."""
    return path.is_file() and split_image_suffix(path.name) is None


def series_files(path: Path) -> list[Path]:
    """The files of the series the slice ``path`` belongs to."""
    uid = series_uid_of_file(path)
    for info in describe_series(path.parent):
        if info.uid == uid:
            return [Path(f) for f in info.files]
    return [path]


def image_hash(path: str | os.PathLike) -> str:
    """The content hash of a case's image: :func:`io.content_hash`, except for one series of a
    multi-series folder, whose hash covers exactly its own files (the same number a folder
    holding only them would get, so a copied-in series keeps its hash)."""
    path = Path(path)
    if not is_series_member(path) or not is_dicom_file(path):
        return content_hash(path)
    return files_hash(series_files(path))


def files_hash(files) -> str:
    """sha256 over the sorted digests of ``files``: ``io.content_hash`` of a folder holding just them."""
    digest = hashlib.sha256()
    for file_digest in sorted(_file_digest(Path(f)) for f in files):
        digest.update(file_digest)
    return digest.hexdigest()


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
            elif is_dicom_file(path):  # that slice's series (the folder's only one, or one of several)
                found.append(Candidate(path.parent, True, _series_or_none(path)))
            else:
                skipped.append((path, f"is not a supported image ({', '.join(IMAGE_SUFFIXES)}, DICOM)"))
        else:
            before_found, before_skipped = len(found), len(skipped)
            searched = _scan_folder(path, exclude, found, skipped)
            if len(found) == before_found:
                labels = len(skipped) - before_skipped
                skipped.append((path, f"holds no CT image ({', '.join(IMAGE_SUFFIXES)}) and no DICOM series "
                                f"(looked in {searched} folder(s), by content for DICOM"
                                + (f"; {labels} label-like file(s) left out" if labels else "") + ")"))
    unique: dict[tuple[Path, str | None], Candidate] = {}
    for cand in found:
        unique.setdefault((cand.path, cand.series_uid), cand)
    return list(unique.values()), skipped


def _series_or_none(path: Path) -> str | None:
    try:
        return series_uid_of_file(path) or None
    except DinomixInputError:
        return None  # the reader names the damaged slice when the case is added


def _scan_folder(root: Path, exclude: Path | None, found: list[Candidate], skipped: list[tuple[Path, str]]) -> int:
    """Add what ``root`` and its sub-folders hold; return how many folders were looked in."""
    searched = 0
    for dirpath, dirnames, _ in os.walk(root):
        searched += 1
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
    return searched


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
    if path.is_dir() or is_series_member(path):  # a folder, or one series of a folder: its files
        files = visible_tree(path) if path.is_dir() else _visible_files(path.parent)
        path = path if path.is_dir() else path.parent
        h = hashlib.sha256()
        for f in files:
            st = f.stat()
            h.update(f"{f.relative_to(path).as_posix()}\0{st.st_size}\0{st.st_mtime_ns}\n".encode())
        return "dir:" + h.hexdigest()
    st = path.stat()
    return f"file:{st.st_size}:{st.st_mtime_ns}"
