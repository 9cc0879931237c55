"""Cases: images in the project, referenced in place (default) or copied in.

An image is identified by its content hash, so the same scan added twice (or under another
name) is skipped, and an image edited or replaced on disk after it was added is caught
before anyone trains on it or saves labels against the wrong voxels.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dinomix_core.io import Volume, read_volume
from dinomix_core.io.label_like import refuse_label_like
from dinomix_core.io.dicom import SeriesInfo, choose_series
from dinomix_core.io.atomic import atomic_path
from dinomix_core.io.errors import DinomixInputError, GeometryMismatchError
from dinomix_core.project._util import utc_now
from dinomix_core.project.errors import CaseNotFoundError, ImageChangedError, ProjectError
from dinomix_core.project.scan import (DETACHED_SUFFIXES, Candidate, case_id_from_path, expand_series, files_hash,
                                       image_hash, make_unique, sanitize_case_id, scan_paths, series_case_id,
                                       split_image_suffix, stat_signature, visible_tree)

IMAGE_OK, IMAGE_CHANGED, IMAGE_MISSING = "ok", "changed", "missing"


@dataclass(frozen=True)
class Case:
    """One image of the project. Geometry: shape and spacing (z, y, x), spacing in mm."""

    id: str
    image_path: Path
    stored: str
    content_hash: str
    shape_zyx: tuple[int, int, int]
    spacing_zyx: tuple[float, float, float]
    origin_xyz: tuple[float, float, float]
    direction: tuple[float, ...]
    modality: str
    added_at: str
    removed: bool

    def volume_like(self, array: np.ndarray) -> Volume:
        """``array`` (z, y, x) with this case's geometry, e.g. a label map for this image."""
        return Volume(array, self.spacing_zyx, self.origin_xyz, self.direction, modality=self.modality)

    def grid(self) -> Volume:
        """A voxel-free stand-in (broadcast zeros) carrying this case's grid, for geometry checks."""
        return self.volume_like(np.broadcast_to(np.zeros((), np.uint8), self.shape_zyx))

    def check_grid(self, volume: Volume, source: str | os.PathLike | None) -> None:
        """Refuse a label map whose voxel grid differs from the image's, saying how."""
        if self.grid().same_grid(volume):
            return
        ref = self.grid()
        diffs = []
        if ref.shape != volume.shape:
            diffs.append(f"size (z,y,x) {volume.shape} vs image {ref.shape}")
        for name in ("spacing_zyx", "origin_xyz", "direction"):
            a, b = np.asarray(getattr(volume, name)), np.asarray(getattr(ref, name))
            if a.shape != b.shape or not np.allclose(a, b, atol=1e-4):
                diffs.append(f"{name.split('_')[0]} {tuple(round(float(x), 4) for x in a)} vs image "
                             f"{tuple(round(float(x), 4) for x in b)}")
        raise GeometryMismatchError(
            source, f"does not fit case {self.id!r}: {'; '.join(diffs)}.",
            "Export the label from the same image (same size, spacing, origin and orientation), "
            "or resample it onto the image first.")


class AddOutcome(NamedTuple):
    """One image's fate: its case id (the existing one for a duplicate), added or not, and why not."""

    case_id: str
    added: bool
    reason: str


@dataclass
class AddReport:
    """What ``add_images`` did: case ids added, and every path skipped with its reason."""

    added: list[tuple[str, Path]] = field(default_factory=list)
    skipped: list[tuple[Path, str]] = field(default_factory=list)
    existing: dict[Path, str] = field(default_factory=dict)  # skipped duplicates -> their case id
    series: dict[str, str] = field(default_factory=dict)  # case id -> which series of its folder it is


def _case_from_row(project, row: dict) -> Case:
    return Case(
        id=row["id"], image_path=project.abspath(row["image_path"]), stored=row["stored"],
        content_hash=row["content_hash"], shape_zyx=tuple(json.loads(row["shape_zyx"])),
        spacing_zyx=tuple(json.loads(row["spacing_zyx"])), origin_xyz=tuple(json.loads(row["origin_xyz"])),
        direction=tuple(json.loads(row["direction"])), modality=row["modality"], added_at=row["added_at"],
        removed=row["deleted_at"] is not None,
    )


class CasesMixin:
    """Case operations of :class:`~dinomix_core.project.store.Project`."""

    # -- adding ------------------------------------------------------------------------

    def add_images(self, paths, *, copy: bool = False) -> AddReport:
        """Add image files, DICOM series folders, or folders scanned recursively.

        Duplicates (same content hash as a case already in the project) and unreadable files
        are skipped and reported, not raised, so one bad file does not stop a batch.
        """
        candidates, skipped = scan_paths(list(paths), exclude=self.root)
        report = AddReport(skipped=list(skipped))
        for folder_or_file in candidates:
            try:
                expanded = expand_series(folder_or_file)  # a folder with several DICOM series: one case each
            except DinomixInputError as exc:
                report.skipped.append((folder_or_file.path, _reason(exc)))
                continue
            for cand, info in expanded:
                where = cand.path if info is None else Path(info.files[0])
                try:
                    case_id, added, reason = self.add_image(cand.path, copy=copy, dicom_folder=cand.is_dicom_folder,
                                                            series_uid=cand.series_uid)
                except DinomixInputError as exc:
                    report.skipped.append((where, _reason(exc)))
                    continue
                if info is not None:
                    report.series[case_id] = f"DICOM series {info.label()} of {cand.path}"
                if added:
                    report.added.append((case_id, cand.path))
                else:
                    report.skipped.append((where, reason))
                    report.existing[where] = case_id
        return report

    def add_image(self, path: str | os.PathLike, *, copy: bool = False, case_id: str | None = None,
                  dicom_folder: bool | None = None, series_uid: str | None = None) -> AddOutcome:
        """Add one image file or DICOM series folder; a duplicate is not added (``added`` False).

        ``case_id`` replaces the id derived from the name (still made unique). ``series_uid``
        adds that one series of a DICOM folder holding several (named from its description,
        else its uid; stored as its first slice, or copied into a folder of its own).
        Unreadable images raise :class:`DinomixInputError` with the reason.
        """
        path = Path(path).expanduser().resolve()
        cand = Candidate(path, path.is_dir() if dicom_folder is None else dicom_folder, series_uid)
        info: SeriesInfo | None = choose_series(path, series_uid)[0] if series_uid is not None else None
        digest = files_hash(info.files) if info is not None else image_hash(cand.path)
        dup = self._case_with_hash(digest)
        if dup is not None:
            return AddOutcome(dup[0], False, dup[1])
        volume = read_volume(cand.path, series_uid=series_uid)
        refuse_label_like(volume, cand.path)  # a label map given as a scan (values, not names)
        if case_id:
            base = sanitize_case_id(case_id)
        elif info is not None:
            base = series_case_id(info)
        else:
            base = case_id_from_path(cand.path, is_dicom_folder=cand.is_dicom_folder)
        with self.write() as conn:
            dup = self._case_with_hash(digest)
            if dup is not None:  # another process added it while we were reading
                return AddOutcome(dup[0], False, dup[1])
            taken = {r[0] for r in conn.execute("SELECT id FROM cases")}
            new_id = make_unique(base, taken)
            stored_path, stored = str(cand.path if info is None else info.files[0]), "reference"
            if copy:
                copied = self._copy_in(cand, new_id, files=None if info is None else [Path(f) for f in info.files])
                copied_hash = image_hash(copied)
                if copied_hash != digest:
                    raise ProjectError(copied, "the copy does not match its source (disk error or the file changed while copying).",
                                       "Retry the add; check the disk if it happens again.")
                stored_path, stored = self.relpath(copied), "copy"
            conn.execute(
                "INSERT INTO cases VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)",
                (new_id, stored_path, stored, digest, stat_signature(self.abspath(stored_path)),
                 json.dumps(list(volume.shape)), json.dumps(list(volume.spacing_zyx)),
                 json.dumps(list(volume.origin_xyz)), json.dumps(list(volume.direction)),
                 volume.modality or "CT", utc_now()),
            )
        return AddOutcome(new_id, True, "")

    def _case_with_hash(self, digest: str) -> tuple[str, str] | None:
        row = self.query_one("SELECT id, deleted_at FROM cases WHERE content_hash = ? ORDER BY deleted_at IS NOT NULL LIMIT 1",
                             (digest,))
        if row is None:
            return None
        if row["deleted_at"] is None:
            return row["id"], f"same content as case {row['id']!r} (duplicate)"
        return row["id"], (f"same content as removed case {row['id']!r}; bring it back with "
                           f"`dinomix project remove {self.root} {row['id']} --undo`")

    def _copy_in(self, cand: Candidate, case_id: str, *, files: list[Path] | None = None) -> Path:
        """Copy an image into images/ atomically (file: temp + rename; folder: temp folder + rename).

        ``files``: for one series of a multi-series folder, just its slices (into a folder of its own).
        """
        images = self.root / "images"
        tag = uuid.uuid4().hex[:8]
        if cand.is_dicom_folder:
            dest = images / case_id
            if dest.exists():
                dest = images / f"{case_id}-{tag}"
            tmp = images / f".{case_id}.{tag}.partial"
            tmp.mkdir(parents=True)
            try:
                for f in (files if files is not None else visible_tree(cand.path)):
                    dest_file = tmp / f.relative_to(cand.path)
                    dest_file.parent.mkdir(parents=True, exist_ok=True)
                    shutil.copyfile(f, dest_file)
                os.replace(tmp, dest)
            except BaseException:
                shutil.rmtree(tmp, ignore_errors=True)  # our own half-made temp folder
                raise
            return dest
        suffix = split_image_suffix(cand.path.name)[1]
        if suffix.lower() in DETACHED_SUFFIXES:
            raise ProjectError(cand.path, f"{suffix} keeps its voxels in a separate file, so it cannot be copied in safely.",
                               "Add it by reference (without --copy), or convert it to .nii.gz first.")
        dest = images / f"{case_id}{suffix}"
        if dest.exists():
            dest = images / f"{case_id}-{tag}{suffix}"
        with atomic_path(dest) as tmp:
            shutil.copyfile(cand.path, tmp)
        return dest

    # -- reading -----------------------------------------------------------------------

    def case(self, case_id: str, *, include_removed: bool = False) -> Case:
        row = self.query_one("SELECT * FROM cases WHERE id = ?", (case_id,))
        if row is None or (row["deleted_at"] is not None and not include_removed):
            known = [r["id"] for r in self.query("SELECT id FROM cases WHERE deleted_at IS NULL ORDER BY id LIMIT 8")]
            why = "was removed" if row is not None else "does not exist"
            fix = (f"Undo with `dinomix project remove {self.root} {case_id} --undo`." if row is not None
                   else f"Use one of: {', '.join(known) or '(no cases yet)'}; see `dinomix project status {self.root}`.")
            raise CaseNotFoundError(self.root, f"case {case_id!r} {why}.", fix)
        return _case_from_row(self, row)

    def cases(self, *, include_removed: bool = False) -> list[Case]:
        """All cases, sorted by id; removed ones only on request."""
        where = "" if include_removed else "WHERE deleted_at IS NULL"
        return [_case_from_row(self, r) for r in self.query(f"SELECT * FROM cases {where} ORDER BY id")]

    def image_state(self, case: Case | str, *, verify: bool = False) -> str:
        """``"ok"``, ``"changed"`` (content hash differs) or ``"missing"``.

        Files whose size and mtime are unchanged are trusted without re-hashing unless
        ``verify``; a changed signature with the same hash is recorded, so the next check is cheap.
        """
        case = self.case(case, include_removed=True) if isinstance(case, str) else case
        path = case.image_path
        if not path.exists():
            return IMAGE_MISSING
        row = self.query_one("SELECT stat_sig FROM cases WHERE id = ?", (case.id,))
        signature = stat_signature(path)
        if not verify and row is not None and row["stat_sig"] == signature:
            return IMAGE_OK
        if image_hash(path) != case.content_hash:
            return IMAGE_CHANGED
        with self.write() as conn:
            conn.execute("UPDATE cases SET stat_sig = ? WHERE id = ?", (signature, case.id))
        return IMAGE_OK

    def check_image(self, case_id: str) -> Case:
        """The case, if its image is still the one added; else :class:`ImageChangedError`."""
        case = self.case(case_id)
        state = self.image_state(case)
        if state != IMAGE_OK:
            raise ImageChangedError(case.image_path, _changed_problem(case.id, state),
                                    f"Put the original back, or accept the new file with "
                                    f"`dinomix project relink {self.root} {case.id} [NEW_PATH]`.")
        return case

    def load_image(self, case_id: str) -> Volume:
        """The case's image (z, y, x; spacing mm), after checking it is the one added."""
        return read_volume(self.check_image(case_id).image_path)

    # -- changing ----------------------------------------------------------------------

    def relink_case(self, case_id: str, new_path: str | os.PathLike | None = None) -> Case:
        """Accept a moved or changed image: record its new path and hash.

        The new image must have the case's voxel grid when the case has labels, so existing
        revisions stay valid; otherwise its geometry replaces the recorded one.
        """
        case = self.case(case_id)
        path = Path(new_path).expanduser().resolve() if new_path is not None else case.image_path
        if not path.exists():
            raise ProjectError(path, "does not exist.", "Give the image's current path.")
        volume = read_volume(path)
        has_labels = self.query_one("SELECT 1 AS x FROM revisions WHERE case_id = ? LIMIT 1", (case_id,))
        if has_labels and not case.grid().same_grid(volume):
            raise GeometryMismatchError(path, f"has a different voxel grid from case {case_id!r}, whose labels would no longer fit.",
                                        "Relink the original image, or add the new one as a new case.")
        digest = image_hash(path)
        dup = self._case_with_hash(digest)
        if dup is not None and dup[0] != case_id:
            raise ProjectError(path, dup[1], "Relink a different file.")
        if new_path is None:
            stored_path, stored = self.relpath(case.image_path) if case.stored == "copy" else str(path), case.stored
        else:
            stored_path, stored = str(path), "reference"
        with self.write() as conn:
            conn.execute(
                "UPDATE cases SET image_path = ?, stored = ?, content_hash = ?, stat_sig = ?, shape_zyx = ?, "
                "spacing_zyx = ?, origin_xyz = ?, direction = ? WHERE id = ?",
                (stored_path, stored, digest, stat_signature(path), json.dumps(list(volume.shape)),
                 json.dumps(list(volume.spacing_zyx)), json.dumps(list(volume.origin_xyz)),
                 json.dumps(list(volume.direction)), case_id),
            )
        return self.case(case_id)

    def remove_case(self, case_id: str) -> None:
        """Soft-delete: the case and its revisions stay on disk until :meth:`purge`."""
        self.case(case_id)
        with self.write() as conn:
            conn.execute("UPDATE cases SET deleted_at = ? WHERE id = ?", (utc_now(), case_id))

    def restore_case(self, case_id: str) -> None:
        """Undo :meth:`remove_case` (possible until purged)."""
        case = self.case(case_id, include_removed=True)
        dup = self.query_one("SELECT id FROM cases WHERE content_hash = ? AND deleted_at IS NULL AND id != ?",
                             (case.content_hash, case_id))
        if dup is not None:
            raise ProjectError(self.root, f"case {dup['id']!r} holds the same image now.",
                               f"Remove {dup['id']!r} first if you want {case_id!r} back.")
        with self.write() as conn:
            conn.execute("UPDATE cases SET deleted_at = NULL WHERE id = ?", (case_id,))


def _reason(exc: DinomixInputError) -> str:
    return exc.problem + (f" Fix: {exc.fix}" if exc.fix else "")


def _changed_problem(case_id: str, state: str) -> str:
    if state == IMAGE_MISSING:
        return f"the image of case {case_id!r} is missing (moved or deleted)."
    return f"the image of case {case_id!r} changed on disk since it was added (content hash differs)."
