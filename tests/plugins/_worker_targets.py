"""Qt-free job targets for the worker-bridge tests (not a test module).

They run in the spawned worker process. The child imports them as ``_worker_targets``:
pytest puts this folder on ``sys.path`` (tests/ has no ``__init__.py``, "prepend" import
mode) and a "spawn" child starts with its parent's ``sys.path``, so whatever the test can
import, the child can. Each has the engine's job signature ``fn(spec, callbacks, cancel)``.
"""

from __future__ import annotations

import os
import signal
import time
from dataclasses import dataclass

import numpy as np

from dinomix_core.engine.events import CancelToken, StageEvent, emit_all


@dataclass(frozen=True)
class Finished:
    """Like the engine's FinishedEvent: the bridge takes status and message from it."""

    status: str
    message: str
    error: str | None = None


def stream_and_compute(spec, callbacks=(), cancel=None):
    """Emit ``spec["events"]`` numbered events, keep torch busy for ``spec["compute_s"]`` s, then
    return the thread settings seen here and a label/uncertainty pair of ``spec["shape"]`` (z, y, x)."""
    import torch

    for i in range(spec["events"]):
        emit_all(callbacks, StageEvent("training", f"event {i}", done=i, total=spec["events"]))
    a = torch.randn(256, 256)
    end = time.perf_counter() + spec["compute_s"]
    while time.perf_counter() < end:
        a = torch.tanh(a @ a)
    z, y, x = spec["shape"]
    labels = np.empty((z, y, x), dtype=np.uint8)
    labels[:] = (np.arange(z, dtype=np.uint8) % 14)[:, None, None]
    uncertainty = np.empty((z, y, x), dtype=np.float16)
    uncertainty[:] = np.linspace(0, 1, x, dtype=np.float16)[None, None, :]
    return {"torch_threads": torch.get_num_threads(), "omp_env": os.environ.get("OMP_NUM_THREADS"),
            "omp_wait_policy": os.environ.get("OMP_WAIT_POLICY"),
            "cancel_is_token": isinstance(cancel, CancelToken),
            "sigint_ignored": signal.getsignal(signal.SIGINT) is signal.SIG_IGN,
            "niceness": os.getpriority(os.PRIO_PROCESS, 0), "labels": labels, "uncertainty": uncertainty}


def raise_input_error(spec, callbacks=(), cancel=None):
    """Fail the way bad user input fails in the engine."""
    from dinomix_core.io.errors import DinomixInputError

    emit_all(callbacks, StageEvent("loading", "reading"))
    raise DinomixInputError(spec["path"], "is not a CT volume.", "choose a .nii.gz image.")


def loop_until_cancelled(spec, callbacks=(), cancel=None):
    """Emit an event every 20 ms until the cancel token is set; report how it saw it."""
    i = 0
    while not cancel.cancelled:
        emit_all(callbacks, StageEvent("training", "looping", done=i))
        i += 1
        time.sleep(0.02)
        if i > 1500:  # 30 s: the test failed to cancel; do not loop forever
            return Finished("failed", "never cancelled")
    return Finished("cancelled", f"stopped after {i} iterations; token() is {cancel()}")


def sleep_ignoring_cancel(spec, callbacks=(), cancel=None):
    """Announce itself, then sleep without ever checking ``cancel`` (for kill tests)."""
    emit_all(callbacks, StageEvent("training", "asleep"))
    time.sleep(spec.get("sleep_s", 60))
    return Finished("completed", "woke up")
