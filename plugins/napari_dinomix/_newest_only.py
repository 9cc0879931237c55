"""Reads and counts for the screen, run in a worker thread; only the newest request's result is used.

Why: work the user did not ask for at that moment must not freeze the viewer. On a
512 x 512 x 300 CT (2-core build machine, cProfile of ``show_prediction``) the Classes panel's
recount took 424-437 ms of the GUI thread after every stroke and prediction (``label_counts``
now: 29-58 ms, in slabs, so the GIL is never held for long), and reading a stored prediction
that arrives mid-training 200-210 ms. Decompression (ISA-L), SimpleITK and the file's hash
check release the GIL: while a worker thread read a full CT, a 10 ms probe on the main thread
stayed within 1.1 ms of its time.

Requests made while one runs are merged: only the newest is run next, and a result that a
newer request (or :meth:`NewestOnly.forget`) has overtaken is dropped. Results come back on
the GUI thread through a queued signal. The functions run must not touch Qt objects or the
project's SQLite connection (it belongs to the GUI thread).
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, Callable

from qtpy.QtCore import QObject, Qt, Signal


class NewestOnly(QObject):
    """``request(fn, *args, tag=...)`` -> later ``done(result, tag)`` or ``failed(message, tag)``."""

    done = Signal(object, object)  # result, tag
    failed = Signal(str, object)  # one-line message, tag
    _finished = Signal(object, int, object)  # Future, generation, tag: from the worker, queued to ours

    def __init__(self, name: str, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix=f"dinomix-{name}")
        self._generation = 0
        self._running = False
        self._pending: tuple | None = None
        # Queued even when the future is done before add_done_callback (it then calls back at once,
        # on this thread): results always arrive through the event loop, never inside request().
        self._finished.connect(self._on_finished, Qt.QueuedConnection)

    def request(self, fn: Callable[..., Any], *args, tag: Any = None) -> None:
        """Run ``fn(*args)`` soon, in the worker thread; supersedes every earlier request."""
        self._generation += 1
        job = (fn, args, tag, self._generation)
        if self._running:
            self._pending = job
        else:
            self._submit(job)

    def forget(self) -> None:
        """Drop the results of every request so far (what they read or counted is gone)."""
        self._generation += 1
        self._pending = None

    def _submit(self, job) -> None:
        fn, args, tag, generation = job
        self._running = True
        future = self._pool.submit(fn, *args)
        future.add_done_callback(lambda finished: self._finished.emit(finished, generation, tag))

    def _on_finished(self, future: Future, generation: int, tag: Any) -> None:
        self._running = False
        if self._pending is not None:
            job, self._pending = self._pending, None
            self._submit(job)
            return
        if generation != self._generation or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.failed.emit(str(error), tag)
            return
        self.done.emit(future.result(), tag)
