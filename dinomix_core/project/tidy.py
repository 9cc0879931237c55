"""Housekeeping: set aside leftovers of interrupted writes, and purge what users removed.

``tidy`` never deletes: a file that no row refers to (a save killed between writing its file
and committing its row, or a temp file of an interrupted atomic write) is moved to
``quarantine/<time>/`` with its relative path, where a person can still look at it.
``purge`` deletes for good what was soft-deleted, and only files inside the project's own
``labels/``, ``predictions/`` and ``images/`` folders: an image referenced in place is the
user's file and is never touched.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

log = logging.getLogger(__name__)

MANAGED_FILE_DIRS = ("labels", "predictions")  # one file per revision, any depth
MANAGED_ENTRY_DIRS = ("images",)  # one entry (file or DICOM folder) per copied case


@dataclass
class TidyReport:
    moved: list[tuple[Path, Path]] = field(default_factory=list)  # (from, to)
    missing: list[tuple[int, str, Path]] = field(default_factory=list)  # (revision id, case id, path)


@dataclass
class PurgeReport:
    cases: list[str] = field(default_factory=list)
    revisions: list[int] = field(default_factory=list)
    deleted: list[Path] = field(default_factory=list)
    kept_outside: list[Path] = field(default_factory=list)  # paths outside the project: left alone


def _referenced(conn) -> tuple[set[str], set[str]]:
    files = {row[0] for row in conn.execute("SELECT file FROM revisions")}
    images = {row[0] for row in conn.execute("SELECT image_path FROM cases WHERE stored = 'copy'")}
    return files, images


def tidy(project) -> TidyReport:
    """Move unreferenced files of labels/, predictions/, images/ to quarantine; list missing ones.

    Runs under the write lock, so a save in progress in another process (file written, row
    not yet committed) is waited for, never mistaken for a leftover.
    """
    report = TidyReport()
    root: Path = project.root
    batch = project.quarantine_dir / datetime.now(timezone.utc).strftime("%Y%m%dT%H%M%S%f")
    with project.write() as conn:
        files, images = _referenced(conn)
        for top in MANAGED_FILE_DIRS:
            for path in sorted((root / top).rglob("*")):
                if path.is_file() and path.relative_to(root).as_posix() not in files:
                    report.moved.append((path, _quarantine(path, root, batch)))
        for top in MANAGED_ENTRY_DIRS:
            folder = root / top
            for entry in sorted(folder.iterdir()) if folder.is_dir() else []:
                if entry.relative_to(root).as_posix() not in images:
                    report.moved.append((entry, _quarantine(entry, root, batch)))
        for rev_id, case_id, rel in conn.execute("SELECT id, case_id, file FROM revisions ORDER BY id"):
            if not (root / rel).exists():
                report.missing.append((rev_id, case_id, root / rel))
    for src, dst in report.moved:
        log.warning("%s: moved unfinished write %s to %s", root, src, dst)
    return report


def _quarantine(path: Path, root: Path, batch: Path) -> Path:
    dest = batch / path.relative_to(root)
    dest.parent.mkdir(parents=True, exist_ok=True)
    os.replace(path, dest)
    return dest


def purge(project, *, dry_run: bool = False) -> PurgeReport:
    """Delete removed cases (with all their revisions) and removed revisions, rows then files.

    Rows go first, in one transaction: a crash afterwards leaves only unreferenced files,
    which the next open sets aside. Files are deleted only when they resolve inside the
    project's managed folders.
    """
    report = PurgeReport()
    root: Path = project.root
    doomed_files: list[str] = []
    with project.write() as conn:
        report.cases = [r[0] for r in conn.execute("SELECT id FROM cases WHERE deleted_at IS NOT NULL ORDER BY id")]
        marks = ",".join("?" * len(report.cases))
        rev_rows = conn.execute(
            f"SELECT id, file FROM revisions WHERE deleted_at IS NOT NULL OR case_id IN ({marks}) ORDER BY id",
            report.cases).fetchall()
        report.revisions = [r[0] for r in rev_rows]
        doomed_files = [r[1] for r in rev_rows]
        images = [r[0] for r in conn.execute(f"SELECT image_path FROM cases WHERE id IN ({marks})", report.cases)]
        if dry_run:
            conn.execute("SELECT 1")  # nothing changes; the transaction just ends
        else:
            for rev_id in report.revisions:
                # Keep the lineage of surviving revisions: skip over the purged one.
                conn.execute("UPDATE revisions SET parent_id = (SELECT parent_id FROM revisions WHERE id = ?) "
                             "WHERE parent_id = ?", (rev_id, rev_id))
            rev_marks = ",".join("?" * len(report.revisions))
            conn.execute(f"DELETE FROM predictions WHERE revision_id IN ({rev_marks}) OR case_id IN ({marks})",
                         [*report.revisions, *report.cases])
            conn.execute(f"DELETE FROM revisions WHERE id IN ({rev_marks})", report.revisions)
            conn.execute(f"DELETE FROM cases WHERE id IN ({marks})", report.cases)
    for stored in [*doomed_files, *images]:
        path = project.abspath(stored)
        if not _is_managed(path, root):
            report.kept_outside.append(path)
            continue
        if dry_run:
            report.deleted.append(path)
            continue
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
            report.deleted.append(path)
    return report


def _is_managed(path: Path, root: Path) -> bool:
    """True only for a path strictly inside labels/, predictions/ or images/ of this project."""
    try:
        rel = path.resolve().relative_to(root.resolve())
    except ValueError:
        return False
    return len(rel.parts) >= 2 and rel.parts[0] in (*MANAGED_FILE_DIRS, *MANAGED_ENTRY_DIRS)
