"""What the train and predict jobs share: the event emitter, the failure message, torch's state left as found.

See ``engine/jobs.py`` for the job contract these implement.
"""

from __future__ import annotations

import contextlib
import dataclasses
import logging
from typing import Iterator, Sequence

import torch

from dinomix_core.engine.events import Callback, StageEvent, StepEvent, emit_all
from dinomix_core.io.errors import DinomixInputError

log = logging.getLogger("dinomix_core")

# Seed of a CUDA generator nobody has seeded (c10's default_rng_seed_val).
_CUDA_DEFAULT_SEED = 67280421310721


@contextlib.contextmanager
def torch_state_guard(num_threads: int | None = None) -> Iterator[None]:
    """Run a job without changing the process's global torch state.

    Sets ``torch.set_num_threads(num_threads)`` for the duration (when given) and restores on
    exit: the thread count, the CPU RNG state, the CUDA RNG states (a CUDA that was not
    initialised before is reset to the state an unseeded one starts from), and
    ``torch.backends.cudnn.benchmark`` / ``deterministic``.
    """
    threads = torch.get_num_threads()
    cpu_rng = torch.random.get_rng_state()
    cuda_ready = torch.cuda.is_available() and torch.cuda.is_initialized()
    cuda_rng = torch.cuda.get_rng_state_all() if cuda_ready else None
    cudnn = torch.backends.cudnn
    benchmark, deterministic = cudnn.benchmark, cudnn.deterministic
    try:
        if num_threads:
            torch.set_num_threads(max(1, int(num_threads)))
        yield
    finally:
        torch.set_num_threads(threads)
        torch.random.set_rng_state(cpu_rng)
        if cuda_rng is not None:
            torch.cuda.set_rng_state_all(cuda_rng)
        elif torch.cuda.is_available():
            # torch.manual_seed queues a CUDA seed until CUDA starts: queue the default after it.
            torch.cuda.manual_seed_all(_CUDA_DEFAULT_SEED)
        cudnn.benchmark, cudnn.deterministic = benchmark, deterministic


class _Emitter:
    """The job's one callback: stamps ``run_id`` and keeps count of the steps done."""

    def __init__(self, callbacks: Sequence[Callback]):
        self.callbacks = list(callbacks)
        self.run_id: int | None = None
        self.steps_done = 0

    def __call__(self, event) -> None:
        if isinstance(event, StepEvent):
            self.steps_done = max(self.steps_done, event.step)
        elif isinstance(event, StageEvent) and event.stage == "training":
            self.steps_done = max(self.steps_done, event.done)
        if self.run_id is not None and getattr(event, "run_id", 0) is None:
            event = dataclasses.replace(event, run_id=self.run_id)
        emit_all(self.callbacks, event)


def _one_line(exc: BaseException) -> str:
    text = str(exc).strip()
    first = text.splitlines()[0] if text else ""
    return f"{type(exc).__name__}: {first}" if first else type(exc).__name__


def _failure(exc: Exception) -> tuple[str, str, bool]:
    """(message, error class name, input_error) of an exception that ended a job."""
    if isinstance(exc, DinomixInputError):
        return str(exc), type(exc).__name__, True
    if isinstance(exc, MemoryError):
        return ("MemoryError: out of memory; close other programs or choose a smaller student, patch size "
                "or batch", "MemoryError", False)
    log.error("job failed", exc_info=exc)
    return _one_line(exc), type(exc).__name__, False
