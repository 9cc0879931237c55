"""Per-class voxel counts of the labels on screen, counted in a worker thread.

Why: the Classes panel recounts after every stroke, undo and prediction shown. On a
512 x 512 x 300 CT that count took 437 ms of the GUI thread (cProfile of ``show_prediction``,
2-core build machine); ``label_counts`` brings it to ~50 ms, and a worker thread takes even
that off the GUI thread (``torch.bincount`` releases the GIL).

A count reads the layer's array while the user may keep painting: a stroke that lands during
a count is in the next one, which every stroke schedules. Only the newest request's result
is delivered; requests made while a count runs are merged into one.
"""

from __future__ import annotations

from concurrent.futures import Future, ThreadPoolExecutor

import numpy as np
from qtpy.QtCore import QObject, Signal

from dinomix_core.io.label_counts import label_counts


class ClassCounter(QObject):
    """``request(array, n)`` -> later ``counted(counts)`` on the GUI thread, newest request only."""

    counted = Signal(object)  # np.ndarray (int64), index = class value
    failed = Signal(str)
    _finished = Signal(object, int)  # Future, generation: from the worker thread, queued to ours

    def __init__(self, parent=None):
        super().__init__(parent)
        self._pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinomix-class-counts")
        self._generation = 0
        self._running = False
        self._pending: tuple[np.ndarray, int, int] | None = None
        self._finished.connect(self._on_finished)

    def request(self, labels_zyx: np.ndarray, num_classes: int) -> None:
        """Count the values of ``labels_zyx`` (z, y, x, uint8) soon; supersedes earlier requests."""
        self._generation += 1
        job = (labels_zyx, int(num_classes), self._generation)
        if self._running:
            self._pending = job
        else:
            self._submit(job)

    def forget(self) -> None:
        """Drop the results of every request so far (the labels they counted are gone)."""
        self._generation += 1
        self._pending = None

    def _submit(self, job) -> None:
        array, num_classes, generation = job
        self._running = True
        future = self._pool.submit(label_counts, array, num_classes)
        future.add_done_callback(lambda done, g=generation: self._finished.emit(done, g))

    def _on_finished(self, future: Future, generation: int) -> None:
        self._running = False
        if self._pending is not None:
            job, self._pending = self._pending, None
            self._submit(job)
            return
        if generation != self._generation or future.cancelled():
            return
        error = future.exception()
        if error is not None:
            self.failed.emit(f"counting class volumes failed: {error}")
            return
        self.counted.emit(future.result())
