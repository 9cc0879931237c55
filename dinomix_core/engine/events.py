"""Plain events and a cancel flag: how front ends (CLI, napari, app) follow and stop the engine.

The engine never knows who listens. A GUI re-emits events as Qt signals (from a worker
thread, or after they crossed a pipe from a worker process: every event is a frozen
dataclass of plain, picklable values); the CLI prints them. Callbacks run on the engine's
thread and must return quickly; one that raises is logged and skipped, never fatal.

Stages (``StageEvent.stage``), in the order a project training job goes through them:
``"loading"`` (one event per case read), ``"teacher-tokens"`` (per slice batch of a case),
``"training"``, ``"validating"`` (per window batch of a validation case), ``"predicting"``
(per window batch of a case) and ``"done"``. A job ends with exactly one
:class:`FinishedEvent`. Events of a job that records a project run carry its ``run_id``.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field
from typing import Callable, Iterable, Union

log = logging.getLogger("dinomix_core")

STAGES = ("loading", "teacher-tokens", "training", "validating", "predicting", "done")
FINISHED_STATUSES = ("completed", "cancelled", "failed")


@dataclass(frozen=True)
class StepEvent:
    step: int  # steps done (1-based)
    total_steps: int
    losses: dict[str, float]
    lr: float
    seconds_per_step: float
    eta_seconds: float
    run_id: int | None = None


@dataclass(frozen=True)
class ValidationEvent:
    """Per-class Dice after ``step`` steps.

    ``cases``: the case ids measured. ``held_out`` False means they are training cases (too
    few labels to hold one out), so the Dice is optimistic and must be shown as such.
    """

    step: int
    per_class_dice: dict[str, float | None]  # percent; None where the class is absent
    mean_dice: float | None
    tail_dice: float | None
    cases: tuple[str, ...] = ()
    held_out: bool = True
    run_id: int | None = None


@dataclass(frozen=True)
class StageEvent:
    """A phase and its progress: ``done`` of ``total`` units (cases, slices or windows)."""

    stage: str
    message: str = ""
    done: int = 0
    total: int = 0
    run_id: int | None = None


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    path: str
    run_id: int | None = None


@dataclass(frozen=True)
class PredictionStoredEvent:
    """A training job stored its prediction of one unlabeled case (a ``model`` revision).

    Sent as each case is stored, so a front end can show the case it has open without
    waiting for the other cases. ``score``: the case's uncertainty score (higher = less sure).
    """

    case_id: str
    revision_id: int
    score: float
    run_id: int | None = None


@dataclass(frozen=True)
class FinishedEvent:
    """The end of a job: ``status`` "completed", "cancelled" or "failed".

    ``message``: one readable line (for bad input, the error's own message with its fix).
    ``error``: the exception's class name when failed. ``input_error``: the failure is the
    user's to fix (a :class:`~dinomix_core.io.errors.DinomixInputError`), not a bug.
    ``model_path``: the trained (or used) model.pt; ``steps_done``: training steps finished.
    """

    status: str
    message: str = ""
    run_id: int | None = None
    model_path: str | None = None
    error: str | None = None
    steps_done: int = 0
    input_error: bool = False


Event = Union[StepEvent, ValidationEvent, StageEvent, CheckpointEvent, PredictionStoredEvent, FinishedEvent]
Callback = Callable[[Event], None]


@dataclass
class CancelToken:
    """Thread-safe cancel flag checked by the engine between steps, cases, slice and window batches."""

    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:
        return self._event.is_set()


class Cancelled(RuntimeError):
    """Base of every "stopped by a CancelToken" exception (loading, tokens, training, inference)."""


class TrainingCancelled(Cancelled):
    """Raised when a CancelToken stops training; the last checkpoint stays valid for --resume."""


def check_cancel(cancel: Callable[[], bool] | None, what: str) -> None:
    """Raise :class:`Cancelled` ("cancelled while <what>") when ``cancel()`` is True."""
    if cancel is not None and cancel():
        raise Cancelled(f"cancelled while {what}")


def emit_all(callbacks: Iterable[Callback], event: Event) -> None:
    """Give ``event`` to every callback; one that raises is logged and skipped."""
    for cb in callbacks:
        try:
            cb(event)
        except Exception:  # a listener's bug must never end a training run
            log.exception("event callback %r raised on %s; ignored", cb, type(event).__name__)
