"""Errors a project raises: each names the folder or case, what is wrong and how to fix it."""

from __future__ import annotations

from pathlib import Path

from dinomix_core.io.errors import DinomixInputError


class ProjectError(DinomixInputError):
    """A project folder or an operation on it cannot go ahead."""


class NotAProjectError(ProjectError):
    """The folder holds no project database."""


class ProjectVersionError(ProjectError):
    """The project was written by a newer DINO-Mix Studio (schema version above ours)."""


class ProjectBusyError(ProjectError):
    """Another process held the project's write lock longer than the busy timeout."""


class CaseNotFoundError(ProjectError):
    """No case (or no active case) has that id."""


class RevisionNotFoundError(ProjectError):
    """No revision has that id for that case."""


class ImageChangedError(ProjectError):
    """A case's image is missing or its content hash no longer matches the one recorded."""


class ClassMapError(ProjectError):
    """A class map conflicts with the project's (different names for the same values)."""


class ProjectReadOnlyError(ProjectError):
    """A write was attempted on a project opened read-only (a bug in the caller)."""


class ProjectIndexLostError(ProjectError):
    """project.sqlite is missing or empty while the folder holds committed work."""


class ProjectStorageError(ProjectError):
    """The disk, not the database, failed: full, read-only, I/O error, cannot open."""


RESTORE_FIX = "Restore it from a backup (project.sqlite.v*.bak if present)."


def sqlite_error(exc: Exception, db_path, *, timeout: float | None = None) -> ProjectError:
    """The one-line error that says what really went wrong with ``db_path``.

    Why: a full disk once read as "not a readable project database... restore it from a
    backup", advice that can make a user throw away a good database. Only real corruption
    (SQLITE_CORRUPT / SQLITE_NOTADB) suggests restoring; everything else names the disk.
    """
    code = getattr(exc, "sqlite_errorname", "") or ""
    text = str(exc).lower()

    def kind(name: str, *needles: str) -> bool:
        return code.startswith(name) or any(n in text for n in needles)

    from dinomix_core.io.atomic import nearly_full

    io_trouble = kind("SQLITE_IOERR", "disk i/o error") or kind("SQLITE_CANTOPEN", "unable to open database")
    if kind("SQLITE_FULL", "database or disk is full") or "no space left" in text or (
            io_trouble and nearly_full(Path(db_path).parent)):
        return ProjectStorageError(None, f"disk full at {db_path}: SQLite cannot write its journal (-wal/-shm) or "
                                   f"the database ({exc}). The database itself is not damaged.",
                                   "Free disk space on that disk and run the command again; do not delete or "
                                   "restore project.sqlite.")
    if kind("SQLITE_BUSY", "database is locked", "busy") or kind("SQLITE_LOCKED", "locked"):
        wait = f" for more than {timeout:g} s" if timeout is not None else ""
        return ProjectBusyError(db_path, f"another program kept the project locked{wait} ({exc}).",
                                "Wait for the other DINO-Mix process (training, the app) to finish saving, then retry.")
    if kind("SQLITE_READONLY", "readonly database", "read-only"):
        return ProjectStorageError(db_path, f"cannot be written: the file, its -wal/-shm files or its folder is "
                                   f"read-only ({exc}). The database itself is not damaged.",
                                   "Give yourself write permission on the project folder (SQLite writes its journal "
                                   "beside the database), or copy the project to a writable disk.")
    if kind("SQLITE_CANTOPEN", "unable to open database"):
        return ProjectStorageError(db_path, f"cannot be opened ({exc}): the folder is missing, not readable, or SQLite "
                                   "cannot create its -wal/-shm files there.",
                                   "Check that the project folder exists and that you can read and write it, and "
                                   "that its disk is not full.")
    if kind("SQLITE_IOERR", "disk i/o error"):
        return ProjectStorageError(db_path, f"the disk reported an I/O error ({exc}); the database is probably intact.",
                                   "Check the disk (free space, a network share or USB drive that went away), then "
                                   "retry; copy the whole project folder elsewhere before anything else.")
    if kind("SQLITE_CORRUPT", "malformed") or kind("SQLITE_NOTADB", "not a database"):
        return ProjectError(db_path, f"is not a readable project database ({exc}).", RESTORE_FIX)
    return ProjectError(db_path, f"SQLite failed ({exc}).",
                        "Check the disk and the folder's permissions and retry; report this bug if it persists.")
