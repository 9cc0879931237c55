"""Training runs and their predictions, and the labeled/unlabeled split a run trains on.

A run is recorded when it starts (so a crash still leaves a trace: a ``running`` run whose
process is gone reads as ``interrupted``) and closed with its status, per-class metrics and
checkpoint. Its predictions become ``model`` revisions: they sit beside the human revisions
and never replace them.

A prediction may keep its per-voxel uncertainty (normalised entropy, quantised to uint8
0..255 on the case's grid) in ``runs/run-NNNN/uncertainty/<revision file>.uncertainty.nii.gz``:
named after the revision's own file, so no table records it, and kept under ``runs/``
because ``tidy`` sets aside every file of ``predictions/`` that no revision row names.
"""

from __future__ import annotations

import json
import math
import os
import socket
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np

from dinomix_core.io import read_labels, write_labels
from dinomix_core.project._util import utc_now
from dinomix_core.project.cases import IMAGE_OK
from dinomix_core.project.errors import ImageChangedError, ProjectError

FINISHED_STATUSES = ("completed", "failed", "cancelled")
UNCERTAINTY_SUFFIX = ".uncertainty.nii.gz"
UNCERTAINTY_LEVELS = 255



def read_uncertainty_levels(path: Path, shape_zyx: tuple[int, int, int]) -> np.ndarray | None:
    """A stored uncertainty map as uint8 (z, y, x) levels; None (with a warning) if it does not fit the case."""
    array = read_labels(path).array
    if array.shape != tuple(shape_zyx):
        warnings.warn(f"{path}: shape {array.shape} does not match its case's {tuple(shape_zyx)}; ignored", stacklevel=2)
        return None
    return array

class LabeledCase(NamedTuple):
    case_id: str
    image_path: Path
    label_path: Path


class UnlabeledCase(NamedTuple):
    case_id: str
    image_path: Path


@dataclass(frozen=True)
class Run:
    """A training run. ``status``: running, completed, failed, cancelled, or interrupted
    (recorded as running but its process on this machine is gone)."""

    id: int
    method: str
    teacher: str
    teacher_hash: str | None
    config: dict
    started_at: str
    finished_at: str | None
    status: str
    metrics: dict | None
    checkpoint: Path | None
    host: str
    pid: int


def _pid_alive(pid: int) -> bool:
    """Whether a process of this machine still runs (signal 0 probes without touching it)."""
    if os.name == "nt":  # os.kill there terminates the process: never probe, assume alive
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _row_to_run(project, row: dict) -> Run:
    status = row["status"]
    if status == "running" and row["host"] == socket.gethostname() and not _pid_alive(row["pid"]):
        status = "interrupted"
    return Run(
        id=row["id"], method=row["method"], teacher=row["teacher"], teacher_hash=row["teacher_hash"],
        config=json.loads(row["config"]), started_at=row["started_at"], finished_at=row["finished_at"],
        status=status, metrics=None if row["metrics"] is None else json.loads(row["metrics"]),
        checkpoint=None if row["checkpoint"] is None else project.abspath(row["checkpoint"]),
        host=row["host"], pid=row["pid"],
    )


class RunsMixin:
    """Run and prediction operations of :class:`~dinomix_core.project.store.Project`."""

    def start_run(self, config: dict, method: str, teacher_id: str, *, teacher_hash: str | None = None) -> int:
        """Record a run that is starting; returns its id. ``teacher_id`` is ``"random"`` without a teacher."""
        if not isinstance(config, dict):
            raise TypeError(f"config must be a dict, got {type(config).__name__}")
        with self.write() as conn:
            cur = conn.execute(
                "INSERT INTO runs (method, teacher, teacher_hash, config, started_at, status, host, pid) "
                "VALUES (?, ?, ?, ?, ?, 'running', ?, ?)",
                (str(method), str(teacher_id), teacher_hash, json.dumps(config, sort_keys=True, default=str),
                 utc_now(), socket.gethostname(), os.getpid()))
            run_id = cur.lastrowid
        self.runs_dir(run_id)
        return run_id

    def finish_run(self, run_id: int, status: str, metrics: dict | None = None,
                   checkpoint_path: str | os.PathLike | None = None) -> Run:
        """Close a run: ``status`` completed/failed/cancelled, metrics (JSON-able dict), checkpoint."""
        if status not in FINISHED_STATUSES:
            raise ValueError(f"status must be one of {FINISHED_STATUSES}, got {status!r}")
        run = self.run(run_id)
        if run.finished_at is not None:
            raise ProjectError(self.root, f"run {run_id} already finished ({run.status}).", "Start a new run.")
        checkpoint = None
        if checkpoint_path is not None:
            path = Path(checkpoint_path).resolve()
            if not path.exists():
                raise ProjectError(path, f"checkpoint of run {run_id} does not exist.", "Save the checkpoint before finishing the run.")
            checkpoint = self.relpath(path)
        with self.write() as conn:
            conn.execute("UPDATE runs SET status = ?, finished_at = ?, metrics = ?, checkpoint = ? WHERE id = ?",
                         (status, utc_now(), None if metrics is None else json.dumps(metrics, sort_keys=True, default=float),
                          checkpoint, int(run_id)))
        return self.run(run_id)

    def resume_run(self, run_id: int) -> Run:
        """Reopen an interrupted, cancelled or failed run so this process can continue it.

        The run becomes ``running`` again under this process (finish it with :meth:`finish_run`
        as usual). A completed run, or one still alive in another process, is refused.
        """
        run = self.run(run_id)
        if run.status == "completed":
            raise ProjectError(self.root, f"run {run_id} already completed.", "Start a new run instead of resuming it.")
        if run.status == "running" and run.pid != os.getpid():
            raise ProjectError(self.root, f"run {run_id} is still running (process {run.pid} on {run.host}).",
                               "Wait for it to finish or stop it before resuming.")
        with self.write() as conn:
            conn.execute("UPDATE runs SET status = 'running', finished_at = NULL, host = ?, pid = ? WHERE id = ?",
                         (socket.gethostname(), os.getpid(), int(run_id)))
        return self.run(run_id)

    def run(self, run_id: int) -> Run:
        row = self.query_one("SELECT * FROM runs WHERE id = ?", (int(run_id),))
        if row is None:
            raise ProjectError(self.root, f"there is no run {run_id}.", f"See `dinomix project status {self.root}`.")
        return _row_to_run(self, row)

    def runs(self) -> list[Run]:
        """All runs, oldest first."""
        return [_row_to_run(self, r) for r in self.query("SELECT * FROM runs ORDER BY id")]

    def latest_run(self, *, status: str | None = None) -> Run | None:
        """The newest run (optionally with this status), or None."""
        runs = [r for r in self.runs() if status is None or r.status == status]
        return runs[-1] if runs else None

    def runs_dir(self, run_id: int) -> Path:
        """``runs/run-NNNN/``: where a run keeps its checkpoints, logs and metrics (created)."""
        self.run(run_id)
        path = self.root / "runs" / f"run-{int(run_id):04d}"
        path.mkdir(parents=True, exist_ok=True)
        return path

    def add_prediction(self, run_id: int, case_id: str, labels, uncertainty: float,
                       class_uncertainty: dict | None = None, *, uncertainty_map=None) -> int:
        """Store a run's prediction for a case as a ``model`` revision; returns the revision id.

        ``labels``: Volume, (z, y, x) integer array on the case's grid, or a label file.
        ``uncertainty``: the case score (see :func:`ranking.uncertainty_score`), higher = less sure.
        ``uncertainty_map``: optional per-voxel uncertainty in [0, 1], (z, y, x) on the case's
        grid; kept with the revision (read it back with :meth:`prediction_uncertainty`).
        Human revisions are never touched.
        """
        run = self.run(run_id)
        if run.finished_at is not None and run.status != "completed":
            raise ProjectError(self.root, f"run {run_id} ended as {run.status}; its predictions are not stored.",
                               "Store predictions from a running or completed run.")
        score = float(uncertainty)
        if not math.isfinite(score):
            raise ValueError(f"uncertainty must be a finite number, got {uncertainty!r}")
        per_class = None if class_uncertainty is None else json.dumps({str(k): float(v) for k, v in class_uncertainty.items()})
        case = self.case(case_id)
        volume = self._label_volume(case, labels)
        quantised = None if uncertainty_map is None else _quantise_uncertainty(uncertainty_map, case)

        def insert_prediction(conn, revision_id: int) -> None:
            conn.execute("INSERT INTO predictions (run_id, case_id, revision_id, uncertainty, class_uncertainty, created_at) "
                         "VALUES (?, ?, ?, ?, ?, ?)", (run.id, case.id, revision_id, score, per_class, utc_now()))
            if quantised is not None:  # inside the transaction: a failed write stores no revision
                (stored,) = conn.execute("SELECT file FROM revisions WHERE id = ?", (revision_id,)).fetchone()
                path = self._uncertainty_path(run.id, stored)
                path.parent.mkdir(parents=True, exist_ok=True)
                write_labels(case.volume_like(quantised), path)

        rev = self._commit_revision(case, volume=volume, kind="model", author=f"model: run {run.id} ({run.method})",
                                    final=False, note=None, folder=f"predictions/run-{run.id:04d}", run_id=run.id,
                                    after_insert=insert_prediction)
        return rev.id

    def prediction_uncertainty(self, revision_id: int) -> np.ndarray | None:
        """The per-voxel uncertainty stored with a prediction: float32 (z, y, x) in [0, 1].

        None when the revision is not a prediction or was stored without one.
        """
        levels = self.prediction_uncertainty_levels(revision_id)
        return None if levels is None else levels.astype(np.float32) / np.float32(UNCERTAINTY_LEVELS)

    def prediction_uncertainty_levels(self, revision_id: int) -> np.ndarray | None:
        """The same map as stored: uint8 (z, y, x), 0..``UNCERTAINTY_LEVELS`` for 0..1 (no float copy)."""
        where = self.prediction_uncertainty_file(revision_id)
        return None if where is None else read_uncertainty_levels(*where)

    def prediction_uncertainty_file(self, revision_id: int) -> tuple[Path, tuple[int, int, int]] | None:
        """(file, the case's (z, y, x) shape) of a prediction's stored uncertainty, or None.

        What :func:`read_uncertainty_levels` needs, looked up in the store: a reader in another
        thread (the GUI's) then needs no database connection.
        """
        rev = self.revision(revision_id)
        if rev.kind != "model" or rev.run_id is None:
            return None
        path = self._uncertainty_path(rev.run_id, self.relpath(rev.path))
        if not path.is_file():
            return None
        return path, tuple(self.case(rev.case_id, include_removed=True).shape_zyx)

    def _uncertainty_path(self, run_id: int, revision_file: str) -> Path:
        name = Path(revision_file).name
        stem = name[: -len(".nii.gz")] if name.endswith(".nii.gz") else Path(name).stem
        return self.root / "runs" / f"run-{int(run_id):04d}" / "uncertainty" / f"{stem}{UNCERTAINTY_SUFFIX}"

    def predictions(self, run_id: int) -> list[dict]:
        """A run's stored predictions: case_id, revision_id, uncertainty, class_uncertainty."""
        rows = self.query("SELECT p.case_id, p.revision_id, p.uncertainty, p.class_uncertainty FROM predictions p "
                          "JOIN revisions r ON r.id = p.revision_id WHERE p.run_id = ? AND r.deleted_at IS NULL "
                          "ORDER BY p.id", (int(run_id),))
        for row in rows:
            row["class_uncertainty"] = None if row["class_uncertainty"] is None else json.loads(row["class_uncertainty"])
        return rows

    def training_split(self, *, strict: bool = True) -> tuple[list[LabeledCase], list[UnlabeledCase]]:
        """Labeled cases (newest final human revision) and unlabeled ones, sorted by case id.

        Every image is checked against its recorded hash and every label file against its
        own. ``strict`` (default): any mismatch raises :class:`ImageChangedError` naming every
        bad case, because training on a swapped image or an altered label silently teaches the
        model wrong anatomy. ``strict=False`` leaves those cases out with a warning.
        """
        labeled: list[LabeledCase] = []
        unlabeled: list[UnlabeledCase] = []
        problems: list[str] = []
        for case in self.cases():
            state = self.image_state(case)
            if state != IMAGE_OK:
                problems.append(f"{case.id} (image {state}: {case.image_path})")
                continue
            rev = self.label_revision(case.id)
            if rev is None:
                unlabeled.append(UnlabeledCase(case.id, case.image_path))
                continue
            try:
                self._check_file(rev)
            except ProjectError as exc:
                problems.append(f"{case.id} ({exc.problem})")
                continue
            labeled.append(LabeledCase(case.id, case.image_path, rev.path))
        if problems:
            message = f"{len(problems)} case(s) cannot be trained on: {'; '.join(problems)}."
            fix = (f"Put the original files back, accept new images with `dinomix project relink {self.root} CASE [PATH]`, "
                   f"or remove the cases with `dinomix project remove {self.root} CASE`.")
            if strict:
                raise ImageChangedError(self.root, message, fix)
            warnings.warn(f"{self.root}: {message} They are left out. Fix: {fix}", stacklevel=2)
        return labeled, unlabeled


def _quantise_uncertainty(values, case) -> np.ndarray:
    """[0, 1] floats (z, y, x) on ``case``'s grid -> uint8 0..255 (NaN counts as fully unsure)."""
    array = np.asarray(values)
    if array.shape != tuple(case.shape_zyx):
        raise ValueError(f"uncertainty_map has shape (z,y,x) {array.shape}, case {case.id!r} has {tuple(case.shape_zyx)}")
    out = np.empty(array.shape, dtype=np.uint8)
    for z in range(0, array.shape[0], 16):  # slab by slab: no full-size float temporaries
        slab = np.nan_to_num(array[z : z + 16].astype(np.float32), nan=1.0)
        out[z : z + 16] = np.rint(np.clip(slab, 0.0, 1.0) * UNCERTAINTY_LEVELS)
    return out
