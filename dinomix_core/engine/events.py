"""Plain events and a cancel flag: how front ends (CLI, napari, app) follow and stop the engine.

The engine never knows who listens. A GUI wraps ``callback`` to re-emit events as Qt signals
from its worker thread; the CLI prints them. Callbacks run on the training thread and must
return quickly.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Callable, Union


@dataclass(frozen=True)
class StepEvent:
    step: int
    total_steps: int
    losses: dict[str, float]
    lr: float
    seconds_per_step: float
    eta_seconds: float


@dataclass(frozen=True)
class ValidationEvent:
    step: int
    per_class_dice: dict[str, float | None]  # percent; None where the class is absent
    mean_dice: float | None
    tail_dice: float | None


@dataclass(frozen=True)
class StageEvent:
    """A coarse phase change: 'loading', 'teacher-tokens', 'training', 'predicting', 'done'."""

    stage: str
    message: str = ""
    done: int = 0
    total: int = 0


@dataclass(frozen=True)
class CheckpointEvent:
    step: int
    path: str


Event = Union[StepEvent, ValidationEvent, StageEvent, CheckpointEvent]
Callback = Callable[[Event], None]


@dataclass
class CancelToken:
    """Thread-safe cancel flag checked by the engine between steps and window batches."""

    _event: threading.Event = field(default_factory=threading.Event)

    def cancel(self) -> None:
        self._event.set()

    @property
    def cancelled(self) -> bool:
        return self._event.is_set()

    def __call__(self) -> bool:
        return self._event.is_set()


class TrainingCancelled(RuntimeError):
    """Raised when a CancelToken stops training; the last checkpoint stays valid for --resume."""


def emit_all(callbacks: list[Callback], event: Event) -> None:
    for cb in callbacks:
        cb(event)
