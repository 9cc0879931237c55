"""The project database's tables and the migrations between schema versions.

The version lives in SQLite's ``PRAGMA user_version``. A migration is a list of SQL
statements that moves the schema from version ``n - 1`` to ``n``; :func:`migrate` runs the
missing ones in one transaction after backing the database file up, so a failed migration
leaves the project exactly as it was. A database from a newer release is refused rather than
guessed at: writing to it could drop columns that release relies on.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

from dinomix_core.project.errors import ProjectVersionError

# Version 1: the first released layout.
_V1 = [
    """CREATE TABLE meta (
        key   TEXT PRIMARY KEY,
        value TEXT NOT NULL
    )""",
    """CREATE TABLE classes (
        value INTEGER PRIMARY KEY CHECK (value >= 0),
        name  TEXT NOT NULL UNIQUE,
        color TEXT NOT NULL              -- JSON [r, g, b], 0-255
    )""",
    """CREATE TABLE cases (
        id           TEXT PRIMARY KEY,   -- nnU-Net style case id, unique in the project
        image_path   TEXT NOT NULL,      -- absolute (referenced) or relative to the project (copied)
        stored       TEXT NOT NULL CHECK (stored IN ('reference', 'copy')),
        content_hash TEXT NOT NULL,
        stat_sig     TEXT NOT NULL,      -- size/mtime signature: skip re-hashing unchanged files
        shape_zyx    TEXT NOT NULL,      -- JSON
        spacing_zyx  TEXT NOT NULL,      -- JSON, mm
        origin_xyz   TEXT NOT NULL,      -- JSON, mm
        direction    TEXT NOT NULL,      -- JSON, row-major 3x3
        modality     TEXT NOT NULL,
        added_at     TEXT NOT NULL,
        deleted_at   TEXT
    )""",
    "CREATE INDEX cases_hash ON cases (content_hash)",
    """CREATE TABLE runs (
        id           INTEGER PRIMARY KEY AUTOINCREMENT,
        method       TEXT NOT NULL,
        teacher      TEXT NOT NULL,      -- teacher id, or 'random' for no pretrained teacher
        teacher_hash TEXT,
        config       TEXT NOT NULL,      -- JSON
        started_at   TEXT NOT NULL,
        finished_at  TEXT,
        status       TEXT NOT NULL CHECK (status IN ('running', 'completed', 'failed', 'cancelled')),
        metrics      TEXT,               -- JSON
        checkpoint   TEXT,
        host         TEXT NOT NULL,
        pid          INTEGER NOT NULL
    )""",
    """CREATE TABLE revisions (
        id          INTEGER PRIMARY KEY AUTOINCREMENT,
        case_id     TEXT NOT NULL REFERENCES cases (id),
        kind        TEXT NOT NULL CHECK (kind IN ('human', 'model')),
        author      TEXT NOT NULL,
        created_at  TEXT NOT NULL,
        parent_id   INTEGER REFERENCES revisions (id),
        file        TEXT NOT NULL UNIQUE, -- relative to the project folder
        file_hash   TEXT NOT NULL,
        voxel_hash  TEXT NOT NULL,       -- hash of the label voxels: spots identical re-imports
        final       INTEGER NOT NULL DEFAULT 0 CHECK (final IN (0, 1)),
        note        TEXT,
        run_id      INTEGER REFERENCES runs (id),
        deleted_at  TEXT,
        CHECK (kind = 'human' OR final = 0)
    )""",
    "CREATE INDEX revisions_case ON revisions (case_id, id)",
    """CREATE TABLE predictions (
        id                INTEGER PRIMARY KEY AUTOINCREMENT,
        run_id            INTEGER NOT NULL REFERENCES runs (id),
        case_id           TEXT NOT NULL REFERENCES cases (id),
        revision_id       INTEGER NOT NULL UNIQUE REFERENCES revisions (id),
        uncertainty       REAL NOT NULL,
        class_uncertainty TEXT,          -- JSON {class name: score}
        created_at        TEXT NOT NULL
    )""",
    "CREATE INDEX predictions_run ON predictions (run_id, case_id)",
]

MIGRATIONS: dict[int, list[str]] = {1: _V1}
SCHEMA_VERSION = max(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    return int(conn.execute("PRAGMA user_version").fetchone()[0])


def check_version(conn: sqlite3.Connection, db_path: Path) -> int:
    """Return the database's version; refuse one written by a newer release."""
    version = schema_version(conn)
    latest = max(MIGRATIONS)
    if version > latest:
        raise ProjectVersionError(
            db_path,
            f"this project uses schema version {version}, newer than this DINO-Mix Studio "
            f"understands (up to {latest}); opening it could damage it.",
            "upgrade DINO-Mix Studio (pip install -U dinomix-studio) and open the project again.",
        )
    return version


def migrate(conn: sqlite3.Connection, db_path: Path) -> int:
    """Bring the schema up to date in one transaction; return the version migrated from.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A database that already
    holds tables is first copied to ``<db>.v<old>.bak`` (SQLite's online backup, taken outside
    the write transaction, which it cannot run inside), so users can go back to an older release.
    """
    latest = max(MIGRATIONS)
    old = check_version(conn, db_path)
    if old == latest:
        return old
    if old > 0:
        backup = db_path.with_name(f"{db_path.name}.v{old}.bak")
        dst = sqlite3.connect(backup)
        try:
            conn.backup(dst)
        finally:
            dst.close()
    conn.execute("BEGIN IMMEDIATE")
    try:
        old = check_version(conn, db_path)  # re-read under the write lock: another process may have migrated
        for version in range(old + 1, latest + 1):
            for statement in MIGRATIONS[version]:
                conn.execute(statement)
        conn.execute(f"PRAGMA user_version = {latest}")
        conn.execute("COMMIT")
        return old
    except BaseException:
        conn.execute("ROLLBACK")
        raise
