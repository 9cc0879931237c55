"""The worker bridge: run an engine job in a spawned process and re-emit its events as Qt signals.

Why a process and not a thread: a crash, an out-of-memory kill or a segfault in the job
cannot take the GUI down, and no GIL is shared with the viewer. The child
(``_worker_child.child_main``) streams plain picklable events over a one-way pipe; a QTimer
polls that pipe on the Qt main thread without blocking, so every signal is emitted on the
main thread and only the main thread touches napari layers.

Large results. Receiving a pickled 512x512x300 uint8 label volume plus its float16
uncertainty map (236 MB) straight through the pipe blocked the receiving thread for 0.86 s
(``Connection.recv`` reads the whole message at once; measured on this 2-core machine), and
unpickling it in-band took another 0.24 s. So the child sends buffers of 1 MiB or more out of
band (pickle protocol 5): it writes them to a temporary file (``/dev/shm`` when available,
0.14 s in the child) and the parent maps that file copy-on-write and unpickles the small rest:
0.2 ms on the GUI thread for the same 236 MB, and the arrays are writeable (a labels layer
can be painted) without a copy. The file is unlinked as soon as it is mapped; pages are read
lazily when the viewer touches them.

Each poll round reads at most a few dozen messages and at most ~15 ms worth, so a chatty job
cannot starve the event loop either. In the tests a 10 ms probe timer never stalled more than
~20-50 ms through a spawn, 1 s of child computing and a 118 MB result.

Ending. ``finished`` waits for the process to exit (so ``JobOutcome.exitcode`` is real and the
process is joined): the child skips the interpreter teardown (``process_entry``), which cuts
the delay after the last message from 1.0-1.6 s to 40-70 ms here.

Spawn re-imports the GUI's main module in the child (as ``__mp_main__``): the app's entry
script must keep its start-up under ``if __name__ == "__main__":``, as console scripts do, or
the child exits with code 1 and the outcome says so.
"""

from __future__ import annotations

import atexit
import functools
import mmap
import multiprocessing
import os
import pickle
import signal
import time
import weakref
from dataclasses import dataclass
from multiprocessing.connection import wait

from qtpy.QtCore import QCoreApplication, QObject, QTimer, Signal

from napari_dinomix._worker_child import PickledSpec, process_entry, standby_entry

_MAX_MESSAGES_PER_ROUND = 32
_ROUND_BUDGET_S = 0.015
_EXIT_GRACE_S = 5.0  # after its last message the child only has to exit
_CLOSE_WAIT_S = 2.0  # close(): how long a cancelled job may take to stop before it is killed


@dataclass
class JobOutcome:
    """How a job ended: ``status`` is "completed", "cancelled" or "failed"; ``message`` is a
    sentence for the user; ``value`` what the job returned; ``error`` details (a traceback or
    the engine's error text); ``exitcode`` the worker process's exit code (negative: signal)."""

    status: str
    message: str
    value: object = None
    error: str | None = None
    exitcode: int | None = None


class _Child:
    """The process, pipe and cancel event of one job: plain objects, no Qt, so that stopping
    them still works after the QObject is gone (destroyed signal, interpreter exit)."""

    def __init__(self, target: str | None, spec, num_threads: int | None):
        """``target`` None: a standby process that gets its job later (:meth:`assign`)."""
        ctx = multiprocessing.get_context("spawn")
        self.conn, self._child_conn = ctx.Pipe(duplex=False)
        self.cancel_event = ctx.Event()
        self.num_threads = num_threads
        self._job_recv = self._job_send = None
        if target is None:
            self._job_recv, self._job_send = ctx.Pipe(duplex=False)
            entry, args, name = standby_entry, (self._job_recv, self._child_conn, self.cancel_event, num_threads), "dinomix-job standby"
        else:
            entry, args, name = process_entry, (target, PickledSpec(spec), self._child_conn, self.cancel_event, num_threads), f"dinomix-job {target}"
        self.process = ctx.Process(target=entry, args=args, name=name)
        self.pid: int | None = None
        self._reaped_exitcode: int | None = None
        self.reaped = False

    @property
    def exitcode(self) -> int | None:
        """None while the process runs (non-blocking check)."""
        return self._reaped_exitcode if self.reaped else self.process.exitcode

    def start(self) -> None:
        self.process.start()
        self.pid = self.process.pid
        # The parent's copy of the write end must go, or a dead child never reads as EOF.
        self._child_conn.close()
        if self._job_recv is not None:
            self._job_recv.close()
        _LIVE_CHILDREN.add(self)

    def assign(self, target: str, spec) -> bool:
        """Hand a started standby process its job; False if it has ended meanwhile (start a new one)."""
        if self._job_send is None or self.reaped or self.process.exitcode is not None:
            return False
        try:
            self._job_send.send((target, PickledSpec(spec)))
        except (BrokenPipeError, ConnectionError, EOFError, OSError):
            return False
        finally:
            self._job_send.close()
            self._job_send = None
        return True

    def stop(self, timeout: float = _CLOSE_WAIT_S) -> None:
        """Cancel, give the job ``timeout`` seconds to end, then SIGKILL; join and close all.
        Messages still arriving are dropped: nobody is listening any more."""
        if self.reaped:
            return
        if self._job_send is not None:  # an unassigned standby ends when its job pipe closes
            self._job_send.close()
            self._job_send = None
        if self.pid is None:  # never started
            self._child_conn.close()
            self.conn.close()
            self.reaped = True
            return
        self.cancel_event.set()
        deadline = time.monotonic() + timeout
        while self.process.exitcode is None and time.monotonic() < deadline:
            left = max(0.0, deadline - time.monotonic())
            ready = wait([self.conn, self.process.sentinel], timeout=left)
            if self.conn in ready:
                try:
                    _open_message(self.conn.recv())
                except (EOFError, OSError):
                    self.process.join(max(0.0, deadline - time.monotonic()))
                except Exception:  # noqa: BLE001 - a message we cannot read is dropped anyway
                    pass
        if self.process.exitcode is None:
            self.process.kill()
        self.reap()

    def kill(self) -> None:
        if not self.reaped and self.process.exitcode is None:
            self.process.kill()

    def reap(self) -> None:
        """Join the (ended or killed) process and release its pipe and sentinel fds."""
        if self.reaped:
            return
        self.process.join()
        self._reaped_exitcode = self.process.exitcode
        self.conn.close()
        self.process.close()
        self.reaped = True
        _LIVE_CHILDREN.discard(self)


_LIVE_CHILDREN: "weakref.WeakSet[_Child]" = weakref.WeakSet()

# One worker process started ahead of its job (see prewarm_worker), and the thread count the
# next jobs are expected to ask for: after each job a new standby is started for the one after.
_STANDBY: _Child | None = None
_PREWARM: dict = {"enabled": False, "num_threads": None}
_REWARM_DELAY_MS = 3000  # after a job ends: let the GUI show its result before the next standby imports


def prewarm_worker(num_threads: int | None = None) -> None:
    """Start a standby worker process now, so that the next job does not wait for Python and torch.

    Call it once the window is up (the app does; the plugin inside napari does not, that
    process is napari's). From then on a standby is kept ready after every job. A job that
    asks for another thread count than the standby's gets a fresh process as before.
    """
    global _STANDBY
    _PREWARM.update(enabled=True, num_threads=num_threads)
    if _STANDBY is not None:
        if _STANDBY.num_threads == num_threads and _STANDBY.process.exitcode is None:
            return
        _STANDBY.stop(timeout=0.5)
    _STANDBY = _Child(None, None, num_threads)
    _STANDBY.start()


def stop_prewarming() -> None:
    """No more standby processes; the one waiting (if any) ends."""
    global _STANDBY
    _PREWARM["enabled"] = False
    standby, _STANDBY = _STANDBY, None
    if standby is not None:
        standby.stop(timeout=0.5)


def prewarming() -> bool:
    """Whether a standby is kept ready after every job (``prewarm_worker`` was called)."""
    return bool(_PREWARM["enabled"])


def standby_pid() -> int | None:
    """The waiting standby process's pid (None when there is none)."""
    return None if _STANDBY is None or _STANDBY.reaped else _STANDBY.pid


def _take_standby(target: str, spec, num_threads: int | None) -> _Child | None:
    """The standby process, now running ``target``; None if there is none that fits."""
    global _STANDBY
    standby, _STANDBY = _STANDBY, None
    if standby is None:
        return None
    if standby.num_threads == num_threads and standby.assign(target, spec):
        return standby
    standby.stop(timeout=0.5)
    return None


def _rewarm() -> None:
    if _PREWARM["enabled"] and _STANDBY is None:
        prewarm_worker(_PREWARM["num_threads"])


@atexit.register
def _stop_live_children() -> None:
    # Registered after multiprocessing's own exit hook, so it runs first: without it that hook
    # would join a still-running (non-daemon) job and hang the GUI's exit.
    for child in list(_LIVE_CHILDREN):
        try:
            child.stop(timeout=1.0)
        except Exception:  # noqa: BLE001 - best effort at interpreter exit
            pass


class JobWorker(QObject):
    """Runs ``target(spec, callbacks, cancel)`` (a "package.module:function" name) in a spawned
    process; emits ``started()``, ``event(ev)`` for each engine event in order, and
    ``finished(JobOutcome)`` exactly once, all on the main thread.

    ``num_threads`` caps the child's torch/BLAS threads (default: all cores; the child runs
    niced with sleeping OpenMP threads, so the GUI still gets a core when it needs one). The target must be importable in the child: the spawned process gets the
    parent's ``sys.path``. A worker is single-use: start it once.
    """

    started = Signal()
    event = Signal(object)
    finished = Signal(object)

    def __init__(self, target: str, spec, *, num_threads: int | None = None, poll_ms: int = 40, parent=None):
        super().__init__(parent)
        module_name, sep, func_name = target.partition(":")
        if not sep or not module_name or not func_name:
            raise ValueError(f"job target {target!r} is not 'package.module:function'; "
                             "name it e.g. 'dinomix_core.engine.jobs:run_train_job'.")
        if num_threads is not None and int(num_threads) < 1:
            raise ValueError(f"num_threads must be at least 1 (or None for all cores), got {num_threads!r}.")
        self._target = target
        self._spec = spec
        self._num_threads = num_threads
        self._child: _Child | None = None
        self._state = "idle"  # idle -> running -> ending -> done
        self._terminal: JobOutcome | None = None
        self._pipe_eof = False
        self._end_deadline = 0.0
        self._cancel_requested = False
        self._force_killed = False
        self._timer = QTimer(self)
        self._timer.setInterval(int(poll_ms))
        self._timer.timeout.connect(self._poll)
        app = QCoreApplication.instance()
        if app is not None:
            app.aboutToQuit.connect(self.close)

    # -- public API -------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        """True from ``start()`` until ``finished`` is emitted."""
        return self._state in ("running", "ending")

    @property
    def pid(self) -> int | None:
        return None if self._child is None else self._child.pid

    def start(self) -> None:
        """Spawn the worker process (returns at once; importing torch there takes seconds)."""
        if self._state != "idle":
            raise RuntimeError("this JobWorker was already started; create a new one for the next job.")
        self._child = _take_standby(self._target, self._spec, self._num_threads)
        if self._child is None:
            self._child = _Child(self._target, self._spec, self._num_threads)
            self._child.start()
        self._spec = None  # the child has its own copy now
        self._state = "running"
        # If the Qt object is deleted (its parent widget closed), stop the job too.
        self.destroyed.connect(functools.partial(_stop_quietly, self._child))
        self._timer.start()
        self.started.emit()

    def cancel(self) -> None:
        """Ask the job to stop; it ends itself at its next check with a "cancelled" outcome."""
        if self.running:
            self._cancel_requested = True
            self._child.cancel_event.set()

    def kill(self) -> None:
        """Force stop: SIGKILL the worker process now (the outcome says it was force-stopped)."""
        if self.running and self._child.exitcode is None:
            self._force_killed = True
            self._child.kill()

    def close(self) -> None:
        """Stop a running job (cancel, wait briefly, then kill), emit its ``finished``, clean up.

        Blocks for at most ~2 s: meant for closing the widget or quitting the app."""
        if not self.running:
            return
        self.cancel()
        child = self._child
        deadline = time.monotonic() + _CLOSE_WAIT_S
        while child.process.exitcode is None and time.monotonic() < deadline:
            left = max(0.0, deadline - time.monotonic())
            if self._terminal is None and not self._pipe_eof:
                # Keep reading: a child blocked on a full pipe could never see the cancel.
                wait([child.conn, child.process.sentinel], timeout=left)
                self._read_messages(budget_s=0.05)
            else:
                child.process.join(left)
        if child.process.exitcode is None:
            self._force_killed = self._terminal is None
            child.process.kill()
        child.process.join()
        if self._terminal is None:
            self._read_messages(budget_s=0.05)  # what it sent before it ended
        child.reap()
        self._finish(child.exitcode)

    def __del__(self):
        child = getattr(self, "_child", None)
        if child is not None and getattr(self, "_state", "done") != "done":
            _stop_quietly(child)

    # -- polling ----------------------------------------------------------------------------

    def _poll(self) -> None:
        if self._state == "running":
            self._read_messages(_ROUND_BUDGET_S)
            if self._terminal is not None or self._pipe_eof or (self._child.exitcode is not None and not self._has_data()):
                self._state = "ending"
                self._end_deadline = time.monotonic() + _EXIT_GRACE_S
        if self._state == "ending":
            if self._child.exitcode is None and time.monotonic() < self._end_deadline:
                return  # the child is still exiting; look again next round
            self._child.kill()  # a no-op unless it sent its last word but does not exit
            self._child.reap()
            self._finish(self._child.exitcode)

    def _has_data(self) -> bool:
        try:
            return self._child.conn.poll(0)
        except (EOFError, OSError):
            return False

    def _read_messages(self, budget_s: float) -> None:
        deadline = time.perf_counter() + budget_s
        for _ in range(_MAX_MESSAGES_PER_ROUND):
            if self._terminal is not None or self._pipe_eof:
                return
            try:
                if not self._child.conn.poll(0):
                    return
                message = _open_message(self._child.conn.recv())
            except (EOFError, OSError):
                self._pipe_eof = True
                return
            except Exception as exc:  # noqa: BLE001 - e.g. a result class the GUI cannot import
                self._terminal = JobOutcome("failed", f"The job's message could not be read by the GUI: {exc}",
                                            error=repr(exc))
                self._child.cancel_event.set()
                return
            self._handle(message)
            if time.perf_counter() > deadline:
                return

    def _handle(self, message: tuple) -> None:
        kind = message[0]
        if kind == "event":
            self.event.emit(message[1])
        elif kind == "result":
            self._terminal = self._outcome_of_result(message[1])
        elif kind == "error":
            _, type_name, text, tb = message
            cancelled = self._cancel_requested and type_name.endswith("Cancelled")
            self._terminal = JobOutcome("cancelled" if cancelled else "failed", text, error=tb)

    def _outcome_of_result(self, value) -> JobOutcome:
        status = getattr(value, "status", None)
        if isinstance(status, str):
            message = getattr(value, "message", None) or status.capitalize()
            return JobOutcome(status, str(message), value, getattr(value, "error", None))
        # A plain return value: the target stopped early only if it was asked to.
        if self._cancel_requested:
            return JobOutcome("cancelled", f"The {_job_name(self._target)} was cancelled.", value)
        return JobOutcome("completed", f"The {_job_name(self._target)} finished.", value)

    def _finish(self, exitcode: int | None) -> None:
        if self._state == "done":
            return
        self._state = "done"
        self._timer.stop()
        outcome = self._terminal or _died_outcome(self._target, exitcode, self._force_killed)
        outcome.exitcode = exitcode
        if _PREWARM["enabled"] and QCoreApplication.instance() is not None:
            QTimer.singleShot(_REWARM_DELAY_MS, _rewarm)
        self.finished.emit(outcome)


def _stop_quietly(child: _Child, *_args) -> None:
    try:
        child.stop()
    except Exception:  # noqa: BLE001 - called from destructors
        pass


def _open_message(message: tuple) -> tuple:
    """Undo the child's out-of-band packing: map the buffer file and unpickle around it.

    The arrays are views of the mapping, which lives (with one descriptor: Python's mmap keeps
    its own) exactly as long as they do."""
    if message[0] != "oob":
        return message
    _, kind, payload, path, spans = message
    try:
        with open(path, "rb") as f:
            # Copy-on-write: arrays are writeable, the file is never changed, no copy is made now.
            mapped = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_COPY)
    finally:
        try:
            os.unlink(path)
        except OSError:  # Windows keeps mapped files; the temp folder cleans them later
            pass
    view = memoryview(mapped)
    return kind, pickle.loads(payload, buffers=[view[start:start + size] for start, size in spans])


def _job_name(target: str) -> str:
    func = target.partition(":")[2].lower()
    if "train" in func:
        return "training worker"
    if "predict" in func:
        return "prediction worker"
    return "worker"


def _died_outcome(target: str, exitcode: int | None, force_killed: bool) -> JobOutcome:
    """A readable outcome for a process that ended without sending a result."""
    name = _job_name(target)
    after = "Your labels are saved"
    if name == "training worker":
        after += "; the last checkpoint can be resumed."
    elif name == "prediction worker":
        after += "; the prediction can be run again."
    else:
        after += "."
    if force_killed:
        return JobOutcome("cancelled", f"The {name} was force-stopped. {after}")
    if exitcode is not None and exitcode < 0:
        try:
            sig_name = signal.Signals(-exitcode).name
        except ValueError:
            sig_name = "unknown"
        why = f"killed by signal {-exitcode} ({sig_name})"
        if -exitcode == getattr(signal, "SIGKILL", 9):
            why += ", possibly out of memory"
        elif -exitcode in (getattr(signal, "SIGSEGV", 11), getattr(signal, "SIGBUS", 7), getattr(signal, "SIGABRT", 6)):
            why += ", a crash in native code"
    elif exitcode:
        why = f"exited with code {exitcode}"
    else:
        why = "exited without sending a result"
    return JobOutcome("failed", f"The {name} stopped unexpectedly ({why}). {after}")


__all__ = ["JobOutcome", "JobWorker"]
