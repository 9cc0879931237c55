"""The project folder and its database: opening, locking, transactions, the class map.

A project is a folder::

    project.sqlite   the database (WAL mode; -wal/-shm files beside it while open)
    labels/<case>/   label revisions (NIfTI), one file per revision, never overwritten
    predictions/run-NNNN/  a run's predictions, stored as ``model`` revisions
    runs/run-NNNN/   training runs: checkpoints, logs, metrics
    cache/           teacher tokens (safe to delete)
    images/          images copied in with ``copy=True``
    quarantine/      leftovers moved aside on open (unfinished writes); never deleted by us

Every write to a managed file happens inside ``BEGIN IMMEDIATE``: the label file is written
atomically under a fresh name, then its row is inserted, then the transaction commits. Holding
the write lock across both steps means a second process opening the project never mistakes a
file that is being saved for a leftover of a crash.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import secrets
import sqlite3
import threading
import time
from pathlib import Path
from typing import Iterator

from dinomix_core.io import LabelMap
from dinomix_core.io.atomic import nearly_full
from dinomix_core.project import schema
from dinomix_core.project._util import utc_now
from dinomix_core.project.cases import CasesMixin
from dinomix_core.project.errors import (ClassMapError, NotAProjectError, ProjectBusyError, ProjectError,
                                         ProjectIndexLostError,
                                         ProjectReadOnlyError, sqlite_error)
from dinomix_core.project.revisions import RevisionsMixin
from dinomix_core.project.runs import RunsMixin
from dinomix_core.project.tidy import MANAGED_ENTRY_DIRS, MANAGED_FILE_DIRS

log = logging.getLogger(__name__)

DB_NAME = "project.sqlite"
SUBDIRS = ("labels", "predictions", "runs", "cache", "images", "quarantine")
MANAGED_SUBDIRS = (*MANAGED_FILE_DIRS, *MANAGED_ENTRY_DIRS)  # tidied on open: only the store writes there
DEFAULT_BUSY_TIMEOUT_S = 15.0
# Opening tidies leftovers only when nobody holds the lock within this; housekeeping can wait,
# and a full wait here came on top of the command's own (a locked `project add` took 30 s while
# saying 15).
TIDY_BUSY_TIMEOUT_S = 0.5


def is_project(path: str | os.PathLike) -> bool:
    return (Path(path) / DB_NAME).is_file()


class Project(CasesMixin, RevisionsMixin, RunsMixin):
    """An open annotation project. Use :meth:`init` or :meth:`open`; close when done.

    Safe to share between threads (each thread gets its own SQLite connection, so a reader in
    the GUI thread never waits for a worker's save: WAL readers see the last commit) and to
    open from several processes at once (a writer waits up to ``busy_timeout`` seconds for
    another, then raises :class:`ProjectBusyError`).
    """

    def __init__(self, root: Path, conn: sqlite3.Connection, busy_timeout: float, readonly: bool = False):
        self.root = root
        self.busy_timeout = busy_timeout
        self.readonly = readonly
        self._local = threading.local()
        self._local.conn = conn
        self._all = [conn]
        self._all_lock = threading.Lock()
        self._closed = False

    # -- opening -----------------------------------------------------------------------

    @classmethod
    def init(cls, root: str | os.PathLike, *, label_map: LabelMap | None = None,
             busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S) -> "Project":
        """Create a project in ``root`` (created if missing; may hold other files)."""
        root = Path(root).expanduser().resolve()
        if is_project(root):
            raise ProjectError(root, "is already a DINO-Mix project.", "Open it instead, or choose an empty folder.")
        if root.exists() and not root.is_dir():
            raise ProjectError(root, "exists and is not a folder.", "Choose a folder path for the project.")
        for sub in MANAGED_SUBDIRS:
            if (root / sub).is_dir() and any((root / sub).iterdir()):
                # Opening tidies these folders: files we did not write would be moved aside.
                raise ProjectError(root / sub, "already holds files, and a project manages this folder itself.",
                                   "Create the project in an empty folder (or a new subfolder).")
        root.mkdir(parents=True, exist_ok=True)
        project = cls._connect(root, busy_timeout)
        try:
            with project.write() as conn:
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('created_at', ?)", (utc_now(),))
                # Seed of the random next-scan order before any run: fixed per project so the
                # suggestion does not change between calls.
                conn.execute("INSERT OR IGNORE INTO meta VALUES ('random_seed', ?)", (str(secrets.randbits(31)),))
            if label_map is not None:
                project.set_label_map(label_map)
        except BaseException:
            project.close()
            raise
        return project

    @classmethod
    def open(cls, root: str | os.PathLike, *, busy_timeout: float = DEFAULT_BUSY_TIMEOUT_S,
             tidy: bool = True, readonly: bool = False) -> "Project":
        """Open an existing project; migrate an older schema; tidy leftovers of a crash.

        ``readonly=True`` (status, listings, export) creates and changes nothing: no folders,
        no migration, no tidy, a ``mode=ro`` SQLite connection, and :meth:`write` refuses.
        A database that is missing or empty while the folder holds committed work is refused
        in both modes: opening it as new would set every label file aside as a leftover.
        """
        root = Path(root).expanduser().resolve()
        _refuse_lost_index(root)
        if not is_project(root):
            raise NotAProjectError(root, f"is not a DINO-Mix project (no {DB_NAME}).",
                                   f"Create one with `dinomix project init {root}`.")
        project = cls._connect(root, busy_timeout, readonly=readonly)
        try:
            if tidy and not readonly:
                try:
                    with project._busy_wait(TIDY_BUSY_TIMEOUT_S):
                        project.tidy()
                except ProjectBusyError:
                    log.info("%s: busy, leftovers not tidied this time", root)  # housekeeping can wait
        except BaseException:
            project.close()
            raise
        return project

    @classmethod
    def _connect(cls, root: Path, busy_timeout: float, *, readonly: bool = False) -> "Project":
        db_path = root / DB_NAME
        if not readonly:
            for sub in SUBDIRS:
                (root / sub).mkdir(exist_ok=True)
        conn = _new_connection(db_path, busy_timeout, readonly=readonly)
        try:
            with _translate_sqlite(db_path, busy_timeout):
                try:
                    version = schema.check_version(conn, db_path)
                except sqlite3.OperationalError:
                    if not (readonly and _all_in_main_file(db_path) and nearly_full(root)):
                        raise
                    # A full disk leaves no room for the -shm file a WAL reader needs. With no
                    # -wal content every commit is in the main file, and nobody can write to a
                    # full disk, so reading it as immutable is exact.
                    conn.close()
                    conn = _new_connection(db_path, busy_timeout, readonly=True, immutable=True)
                    version = schema.check_version(conn, db_path)
                if version == 0 and not readonly:
                    _refuse_lost_index(root, tables_checked=True)
                if readonly:
                    _check_readable(root, db_path, version)
                    conn.execute("PRAGMA foreign_keys=ON")
                else:
                    conn.execute("PRAGMA journal_mode=WAL")
                    _configure(conn)
                    try:
                        schema.migrate(conn, db_path)
                    except sqlite3.DatabaseError as exc:
                        if _environmental(exc):
                            raise
                        raise ProjectError(db_path, f"upgrading the database from schema version {version} to "
                                           f"{schema.SCHEMA_VERSION} failed ({exc}); nothing was changed.",
                                           "Keep using the release that wrote it, and report this bug.") from exc
        except BaseException:
            conn.close()
            raise
        return cls(root, conn, busy_timeout, readonly)

    def close(self) -> None:
        """Close every thread's connection. Call when no thread is still using the project."""
        with self._all_lock:
            self._closed = True
            for conn in self._all:
                conn.close()
            self._all.clear()

    @property
    def _conn(self) -> sqlite3.Connection:
        """This thread's connection (opened on first use)."""
        conn = getattr(self._local, "conn", None)
        if conn is None:
            with self._all_lock:
                if self._closed:
                    raise ProjectError(self.root, "the project was closed.", "Open it again with Project.open().")
                conn = _new_connection(self.db_path, self.busy_timeout, readonly=self.readonly)
                with _translate_sqlite(self.db_path, self.busy_timeout):
                    if self.readonly:
                        conn.execute("PRAGMA foreign_keys=ON")
                    else:
                        _configure(conn)
                self._all.append(conn)
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def _busy_wait(self, seconds: float) -> Iterator[None]:
        """Wait at most ``seconds`` for the write lock in this block (this thread's connection)."""
        conn = self._conn
        conn.execute(f"PRAGMA busy_timeout = {int(seconds * 1000)}")
        try:
            yield
        finally:
            conn.execute(f"PRAGMA busy_timeout = {int(self.busy_timeout * 1000)}")

    def __enter__(self) -> "Project":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Project({str(self.root)!r})"

    # -- folders -----------------------------------------------------------------------

    @property
    def db_path(self) -> Path:
        return self.root / DB_NAME

    @property
    def cache_dir(self) -> Path:
        """Teacher-token cache of this project (disposable; rebuilt when missing)."""
        return self.root / "cache"

    @property
    def quarantine_dir(self) -> Path:
        return self.root / "quarantine"

    def abspath(self, stored: str) -> Path:
        """A path as stored in the database: relative to the project, or absolute."""
        path = Path(stored)
        return path if path.is_absolute() else self.root / path

    def relpath(self, path: Path) -> str:
        """Store paths inside the project relative to it (the folder can move), others absolute."""
        path = Path(path).resolve()
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def is_inside(self, path: str | os.PathLike) -> bool:
        """True when ``path`` resolves to somewhere under the project folder (links followed)."""
        try:
            Path(path).resolve().relative_to(self.root)
        except ValueError:
            return False
        return True

    # -- database ----------------------------------------------------------------------

    @contextlib.contextmanager
    def write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction (``BEGIN IMMEDIATE``) of this thread; nested calls join the outer one."""
        if self.readonly:
            raise ProjectReadOnlyError(self.root, "was opened read-only, so nothing can be changed.",
                                       "Open it with Project.open(root) (readonly=False) to make changes.")
        conn = self._conn
        if conn.in_transaction:
            yield conn
            return
        with _translate_sqlite(self.db_path, self.busy_timeout):
            conn.execute("BEGIN IMMEDIATE")
        try:
            yield conn
            with _translate_sqlite(self.db_path, self.busy_timeout):
                conn.execute("COMMIT")
        except BaseException as exc:
            with contextlib.suppress(sqlite3.Error):
                conn.execute("ROLLBACK")
            if isinstance(exc, sqlite3.Error):
                raise sqlite_error(exc, self.db_path, timeout=self.busy_timeout) from exc
            raise

    def query(self, sql: str, params: tuple = ()) -> list[dict]:
        with _translate_sqlite(self.db_path, self.busy_timeout):
            cursor = self._conn.execute(sql, params)
            names = [d[0] for d in cursor.description]
            return [dict(zip(names, row)) for row in cursor.fetchall()]

    def query_one(self, sql: str, params: tuple = ()) -> dict | None:
        rows = self.query(sql, params)
        return rows[0] if rows else None

    def meta(self, key: str, default: str | None = None) -> str | None:
        row = self.query_one("SELECT value FROM meta WHERE key = ?", (key,))
        return default if row is None else row["value"]

    def set_meta(self, key: str, value: str) -> None:
        with self.write() as conn:
            conn.execute("INSERT OR REPLACE INTO meta VALUES (?, ?)", (key, str(value)))

    # -- class map ---------------------------------------------------------------------

    @property
    def label_map(self) -> LabelMap | None:
        """The project's classes (value = index), or None before one is set."""
        rows = self.query("SELECT value, name, color FROM classes ORDER BY value")
        if not rows:
            return None
        return LabelMap([r["name"] for r in rows], [tuple(json.loads(r["color"])) for r in rows],
                        title=self.meta("label_map_title", "") or "")

    def set_label_map(self, label_map: LabelMap) -> None:
        """Set the class map. Once labels exist, only adding classes at the end is allowed."""
        with self.write() as conn:
            current = self.label_map
            in_use = conn.execute("SELECT COUNT(*) FROM revisions").fetchone()[0]
            if current is not None and in_use:
                kept = label_map.names[: current.num_classes]
                if [_key(n) for n in kept] != [_key(n) for n in current.names]:
                    raise ClassMapError(
                        self.root, f"the project's labels use classes {current.names}; the new map "
                        f"{label_map.names} renames or reorders them.",
                        "Keep the existing classes and only append new ones, or start a new project.")
            conn.execute("DELETE FROM classes")
            conn.executemany("INSERT INTO classes VALUES (?, ?, ?)",
                             [(v, n, json.dumps(list(c))) for v, (n, c) in enumerate(zip(label_map.names, label_map.colors))])
            conn.execute("INSERT OR REPLACE INTO meta VALUES ('label_map_title', ?)", (label_map.title or "",))

    def require_label_map(self) -> LabelMap:
        label_map = self.label_map
        if label_map is None:
            raise ClassMapError(self.root, "has no class map yet, so label values cannot be checked.",
                                f"Set one with `dinomix project classes {self.root} --labels btcv13|amos15|dataset.json`.")
        return label_map

    def image_state(self, case, *, verify: bool = False) -> str:
        """As :meth:`CasesMixin.image_state`; read-only, a changed size/mtime is re-hashed but not recorded."""
        if not self.readonly:
            return super().image_state(case, verify=verify)
        from dinomix_core.project.cases import IMAGE_CHANGED, IMAGE_MISSING, IMAGE_OK
        from dinomix_core.project.scan import image_hash, stat_signature

        case = self.case(case, include_removed=True) if isinstance(case, str) else case
        path = case.image_path
        if not path.exists():
            return IMAGE_MISSING
        row = self.query_one("SELECT stat_sig FROM cases WHERE id = ?", (case.id,))
        if not verify and row is not None and row["stat_sig"] == stat_signature(path):
            return IMAGE_OK
        return IMAGE_OK if image_hash(path) == case.content_hash else IMAGE_CHANGED

    # -- housekeeping (implemented in tidy.py / summary.py / ranking.py) -----------------

    def tidy(self):
        """Move unfinished writes (temp files, files with no row) to ``quarantine/``."""
        from dinomix_core.project.tidy import tidy

        return tidy(self)

    def purge(self, *, dry_run: bool = False):
        """Delete removed cases and revisions for good (files inside the project only)."""
        from dinomix_core.project.tidy import purge

        return purge(self, dry_run=dry_run)

    def status(self, *, verify: bool = False) -> dict:
        """A JSON-ready summary: counts, each case's status, the latest run."""
        from dinomix_core.project.summary import status_report

        return status_report(self, verify=verify)

    def next_cases(self, n: int = 5, *, seed: int | None = None) -> list[dict]:
        """Unlabeled cases to annotate next, most informative first (see ranking.py)."""
        from dinomix_core.project.ranking import rank_next

        return rank_next(self, n=n, seed=seed)


def _new_connection(db_path: Path, busy_timeout: float, *, readonly: bool = False,
                    immutable: bool = False) -> sqlite3.Connection:
    query = "?mode=ro&immutable=1" if immutable else "?mode=ro"
    target, uri = (f"{db_path.as_uri()}{query}", True) if readonly else (db_path, False)
    try:
        # Autocommit mode: transactions are explicit (BEGIN IMMEDIATE in Project.write).
        return sqlite3.connect(target, timeout=busy_timeout, isolation_level=None, check_same_thread=False, uri=uri)
    except sqlite3.Error as exc:
        raise sqlite_error(exc, db_path, timeout=busy_timeout) from exc


def _all_in_main_file(db_path: Path) -> bool:
    """True when no -wal file holds commits that are not yet in the database file itself."""
    wal = db_path.with_name(DB_NAME + "-wal")
    return not wal.exists() or wal.stat().st_size == 0


# Folders whose files only the store writes: any file there is committed work (or a leftover).
_WORK_DIRS = ("labels", "predictions", "runs", "images")


def _committed_work(root: Path) -> list[Path]:
    """A few files (at most 3) under the folders that hold a project's committed work."""
    found: list[Path] = []
    for sub in _WORK_DIRS:
        folder = root / sub
        if folder.is_dir():
            for path in folder.rglob("*"):
                if path.is_file():
                    found.append(path)
                    if len(found) >= 3:
                        return found
    return found


def _refuse_lost_index(root: Path, *, tables_checked: bool = False) -> None:
    """Refuse a folder with committed work but no usable database (missing, 0 bytes, no tables).

    Opening it as a new project would quarantine every label file as an "unfinished write".
    """
    db_path = root / DB_NAME
    wal = db_path.with_name(DB_NAME + "-wal")
    if tables_checked:
        state = "holds no tables (it is empty)"
    elif not db_path.exists():
        state = "is missing"
    elif db_path.is_file() and db_path.stat().st_size == 0 and not (wal.is_file() and wal.stat().st_size):
        state = "is empty (0 bytes)"
    else:
        return
    work = _committed_work(root)
    if not work:
        return
    raise ProjectIndexLostError(
        db_path, f"{state}, but the folder holds committed work ({', '.join(p.relative_to(root).as_posix() for p in work)}"
        f"{', ...' if len(work) >= 3 else ''}). Nothing was changed: your label files are where they were.",
        f"Restore {DB_NAME} from a backup (a {DB_NAME}.v*.bak beside it, or your backup of the folder); do not run "
        "`dinomix project init` here and do not open it in the app until then.")


def _check_readable(root: Path, db_path: Path, version: int) -> None:
    """A read-only open needs an initialised database at the current schema (it cannot migrate)."""
    if version == 0:
        _refuse_lost_index(root, tables_checked=True)
        raise ProjectError(db_path, "holds no tables (an interrupted `dinomix project init`?).",
                           f"Delete it and run `dinomix project init {root}` again.")
    if version < schema.SCHEMA_VERSION:
        raise ProjectError(db_path, f"uses schema version {version}; this release reads version "
                           f"{schema.SCHEMA_VERSION} and only upgrades the database when it writes.",
                           f"Run a command that changes the project once (e.g. `dinomix project classes {root} "
                           "--labels ...`), or open it in the app.")


def _environmental(exc: Exception) -> bool:
    """True for SQLite failures caused by the disk or another process, not by the database's contents."""
    text = str(exc).lower()
    return any(n in text for n in ("lock", "busy", "full", "disk i/o", "readonly", "read-only", "unable to open"))


def _configure(conn: sqlite3.Connection) -> None:
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA synchronous=FULL")  # a committed correction survives power loss too


def _key(name: str) -> str:
    return name.strip().lower().replace(" ", "_")


@contextlib.contextmanager
def _translate_sqlite(db_path: Path, timeout: float) -> Iterator[None]:
    """Turn any SQLite error into the one-line ProjectError that names its real cause.

    A lock message says how long this statement really waited (measured), not the setting.
    """
    start = time.monotonic()
    try:
        yield
    except sqlite3.Error as exc:
        waited = time.monotonic() - start
        shown = timeout if waited < 0.1 else round(waited) if waited >= 1 else round(waited, 1)
        raise sqlite_error(exc, db_path, timeout=shown) from exc
