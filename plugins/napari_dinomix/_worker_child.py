"""The worker process side of the job bridge: run one engine job and stream its events.

Qt-free on purpose (no Qt, no napari): this module is what a spawned child imports, and it
must start fast and never create a second GUI stack. The parent (``_worker.JobWorker``) starts
``child_main`` in a ``multiprocessing`` "spawn" process and reads the pipe on the Qt main
thread.

Wire format (parent <- child), one picklable tuple per message:

* ``("event", ev)`` for each engine callback event, in order;
* ``("result", value)`` once, with what the target returned;
* ``("error", type_name, message, traceback_text)`` once, if the target raised;
* ``("oob", kind, payload, path, spans)`` replaces an ``event``/``result`` message whose value
  holds large buffers (numpy arrays of 1 MiB or more): the value is pickled with protocol 5,
  its large buffers are written to the temporary file ``path`` at the byte ``spans`` and
  only the small ``payload`` goes through the pipe. The parent maps the file copy-on-write,
  so arrays arrive writeable without being copied on the GUI thread (see ``_worker``).

A send that fails because the parent went away sets the cancel event, so the job stops at
its next cancel check, and the child then ends quietly (exit code 0, nothing printed).
"""

from __future__ import annotations

import importlib
import os
import pickle
import signal
import sys
import tempfile
import threading
import traceback
from typing import Any, Callable

from dinomix_core.engine.events import CancelToken

# Buffers at least this large leave the pipe and go through a temporary file.
OOB_MIN_BYTES = 1 << 20
_THREAD_ENV = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "VECLIB_MAXIMUM_THREADS",
               "NUMEXPR_NUM_THREADS")


class PickledSpec:
    """A job spec pickled by the parent, so the child unpickles it only after its thread limits
    are set (unpickling engine objects can import torch, which reads OMP_NUM_THREADS once)."""

    def __init__(self, spec: Any):
        self.data = pickle.dumps(spec, protocol=pickle.HIGHEST_PROTOCOL)

    def load(self) -> Any:
        return pickle.loads(self.data)


class ProcessCancelToken(CancelToken):
    """The engine's CancelToken backed by a ``multiprocessing`` Event that the GUI sets."""

    def __init__(self, mp_event):
        super().__init__(_event=mp_event)


def default_num_threads() -> int:
    """All cores: the worker runs niced, with OpenMP threads that sleep instead of spinning.

    Why (2 AVX2 cores, the 2D *Quick first model* step, worker niced +10): with a busy
    process on the other core, 1 thread took 0.71 s per step, 2 spinning threads 8.4 s (each
    waits for the preempted one), 2 passive threads 0.76 s; with the other core free, 2
    passive threads took 0.45 s. So all cores with ``OMP_WAIT_POLICY=PASSIVE`` (see
    :func:`limit_threads`) cost 7% while the GUI is busy and save 37% whenever it is idle;
    the niceness keeps the GUI first in line.
    """
    return max(1, os.cpu_count() or 1)


def load_target(target: str) -> Callable:
    """Import ``"package.module:function"``; a malformed name gives a one-line ValueError."""
    module_name, sep, func_name = target.partition(":")
    if not sep or not module_name or not func_name or ":" in func_name:
        raise ValueError(f"job target {target!r} is not 'package.module:function'; "
                         "name the function as e.g. 'dinomix_core.engine.jobs:run_train_job'.")
    fn = getattr(importlib.import_module(module_name), func_name, None)
    if not callable(fn):
        raise ValueError(f"job target {target!r}: module {module_name!r} has no function {func_name!r}.")
    return fn


def limit_threads(num_threads: int | None) -> int:
    """Cap BLAS/OpenMP/torch threads; call before anything imports torch where possible."""
    n = int(num_threads) if num_threads else default_num_threads()
    if n < 1:
        raise ValueError(f"num_threads must be at least 1, got {num_threads!r}.")
    for name in _THREAD_ENV:
        os.environ[name] = str(n)
    # Read by OpenMP when torch loads: idle threads sleep, so a thread the GUI preempts does
    # not leave the others spinning (default_num_threads). A user's own setting wins.
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    import torch

    torch.set_num_threads(n)
    try:
        torch.set_num_interop_threads(n)
    except RuntimeError:  # only settable before torch's first parallel work; then keep the default
        pass
    return n


class Sender:
    """Sends messages to the parent; after the first failed send it only keeps quiet."""

    def __init__(self, conn, cancel_event):
        self._conn = conn
        self._cancel_event = cancel_event
        self._lock = threading.Lock()
        self.parent_gone = False

    def event(self, ev) -> None:
        """The engine callback: forward one event."""
        self.send("event", ev)

    def mark_parent_gone(self) -> None:
        self.parent_gone = True
        self._cancel_event.set()

    def send(self, kind: str, *fields) -> None:
        if self.parent_gone:
            return
        message, path = _pack(kind, fields)
        with self._lock:
            try:
                self._conn.send(message)
            except (BrokenPipeError, ConnectionError, EOFError, OSError):
                self.mark_parent_gone()
                if path:
                    _unlink_quietly(path)


# How much lower than the GUI the job runs (POSIX nice increment). A training job keeps its
# cores busy for minutes; at equal priority the GUI had to queue behind it and anything else
# running, and the viewer stalled whenever the machine was busy. With the job niced, the
# scheduler hands the GUI a core the moment it has work, and the job still gets every cycle
# the GUI does not use. 19 (the lowest), not 10: while the user pans and paints during a
# run, the software-rendered frames competed with the job; median lateness of a 10 ms event-
# loop probe 18-23 ms at 19 against 27-39 ms at 10, p99 59-64 against 61-75 ms (two runs each,
# sample project, 2 cores, Xvfb; a watching user is not affected).
WORKER_NICENESS = 19


def lower_priority(increment: int = WORKER_NICENESS) -> int:
    """Make this process yield the CPU to the GUI; returns the new niceness (0 where unsupported)."""
    if not hasattr(os, "nice"):  # Windows: left as is
        return 0
    try:
        return os.nice(increment)
    except OSError:
        return 0


def prepare_process() -> None:
    """Once per worker process: ignore SIGINT, run below the GUI's priority.

    SIGINT is ignored: a Ctrl+C in the terminal that started the GUI must not kill the job
    behind the GUI's back; the GUI stops it through the cancel event. The process runs at a
    lower priority than the GUI (``WORKER_NICENESS``).
    """
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    lower_priority()


def child_main(target: str, spec, conn, cancel_event, num_threads: int | None, *, prepared: bool = False) -> None:
    """Entry of the worker process: run ``target(spec, callbacks, cancel)`` and report.

    ``prepared``: a standby process (:func:`standby_entry`) has already run
    :func:`prepare_process` and :func:`limit_threads`.
    """
    if not prepared:
        prepare_process()
    sender = Sender(conn, cancel_event)
    _watch_parent(sender)
    try:
        if not prepared:
            limit_threads(num_threads)
        if isinstance(spec, PickledSpec):
            spec = spec.load()
        fn = load_target(target)
        value = fn(spec, [sender.event], ProcessCancelToken(cancel_event))
    except BaseException as exc:  # noqa: BLE001 - every failure, SystemExit too, is reported to the GUI
        sender.send("error", type(exc).__name__, str(exc) or type(exc).__name__, traceback.format_exc())
    else:
        try:
            sender.send("result", value)
        except Exception as exc:  # noqa: BLE001 - an unpicklable result
            sender.send("error", type(exc).__name__,
                        f"the job finished but its result cannot be sent to the GUI: {exc}", traceback.format_exc())
    finally:
        for stream in (sys.stdout, sys.stderr):
            try:
                stream.flush()
            except Exception:  # noqa: BLE001 - a closed stream must not turn success into failure
                pass
        try:
            conn.close()
        except OSError:
            pass


def process_entry(target: str, spec, conn, cancel_event, num_threads: int | None) -> None:
    """What the spawned process runs: ``child_main``, then a fast exit.

    A normal interpreter exit with torch loaded took 1.0-1.6 s here after the last message
    (module teardown), and the GUI waits for the exit before it reports the outcome. The job
    has closed what it opened by then, so this runs the atexit handlers (logging, temporary
    folders, multiprocessing's own cleanup) and skips only the teardown: 40-70 ms.
    """
    child_main(target, spec, conn, cancel_event, num_threads)
    _fast_exit()


# What a standby process imports while it waits: the engine's job module pulls in torch, the
# students, the trainer and the inferer; timm (the teacher's ViTs, with torchvision) loads on first use.
STANDBY_PRELOAD = ("dinomix_core.engine.jobs", "timm")


def standby_entry(job_conn, conn, cancel_event, num_threads: int | None) -> None:
    """A worker started before it has a job: start the interpreter, import the engine, then wait.

    Why: a spawned job spent its first seconds starting Python and importing torch and the
    engine before its first event (see ``_worker`` for the figure); a standby pays that while
    the user is still looking at the window. The parent sends one ``(target, PickledSpec)``
    on ``job_conn``; a closed pipe or ``None`` ends the process quietly.
    """
    prepare_process()
    try:
        limit_threads(num_threads)
        for module in STANDBY_PRELOAD:
            importlib.import_module(module)
    except Exception:  # noqa: BLE001 - the job itself will import again and report the error
        pass
    try:
        message = job_conn.recv()
    except (EOFError, OSError):
        message = None
    finally:
        job_conn.close()
    if message is None:
        _fast_exit()
    target, spec = message
    child_main(target, spec, conn, cancel_event, num_threads, prepared=True)
    _fast_exit()


def _fast_exit() -> None:
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except Exception:  # noqa: BLE001
            pass
    os._exit(0)


def _watch_parent(sender: Sender) -> None:
    """Cancel the job if the GUI process dies (its sentinel closes), even between events."""
    import multiprocessing
    from multiprocessing.connection import wait

    parent = multiprocessing.parent_process()
    if parent is None:
        return

    def watch():
        wait([parent.sentinel])
        sender.mark_parent_gone()

    threading.Thread(target=watch, name="dinomix-parent-watch", daemon=True).start()


def _pack(kind: str, fields: tuple) -> tuple[tuple, str | None]:
    """The message for ``(kind, *fields)``; one value with large buffers goes out of band."""
    if kind not in ("event", "result"):
        return (kind, *fields), None
    buffers: list[pickle.PickleBuffer] = []

    def keep_large(buf: pickle.PickleBuffer) -> bool:
        if buf.raw().nbytes >= OOB_MIN_BYTES:
            buffers.append(buf)
            return False
        return True

    payload = pickle.dumps(fields[0], protocol=5, buffer_callback=keep_large)
    if not buffers:
        return (kind, fields[0]), None
    path, spans = _write_buffers(buffers)
    return ("oob", kind, payload, path, spans), path


def _write_buffers(buffers: list[pickle.PickleBuffer]) -> tuple[str, list[tuple[int, int]]]:
    """Write buffers to one temporary file (RAM-backed /dev/shm when it exists and has room)."""
    dirs = [d for d in ("/dev/shm",) if os.path.isdir(d) and os.access(d, os.W_OK)] + [tempfile.gettempdir()]
    last_error: OSError | None = None
    for folder in dirs:
        fd, path = tempfile.mkstemp(prefix="dinomix-job-", suffix=".buf", dir=folder)
        try:
            spans = []
            offset = 0
            with os.fdopen(fd, "wb") as f:
                for buf in buffers:
                    raw = buf.raw()
                    pad = -offset % 64  # aligned starts keep numpy's views aligned
                    f.write(b"\0" * pad)
                    offset += pad
                    f.write(raw)
                    spans.append((offset, raw.nbytes))
                    offset += raw.nbytes
            return path, spans
        except OSError as exc:  # e.g. a small /dev/shm in a container: try the next folder
            last_error = exc
            _unlink_quietly(path)
    raise OSError(f"cannot write the job's result arrays to a temporary file: {last_error}; "
                  "free disk space in the temporary folder.")


def _unlink_quietly(path: str) -> None:
    try:
        os.unlink(path)
    except OSError:
        pass
