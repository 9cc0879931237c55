"""Autosave of label edits: every change of a napari Labels layer becomes a draft revision.

Why it looks like this: napari 0.9.2 does not give one "data changed" event. Measured on a
``Labels`` layer inside a viewer (see tests/plugins/test_plugin_autosave.py):

==============================================  =========================================
change                                          events that fire
==============================================  =========================================
``paint`` / mouse brush or eraser stroke        ``paint`` (once per stroke), ``labels_update``,
``fill``, ``data_setitem``, ``paint_polygon``   ``set_data``
``undo()`` / ``redo()`` (Ctrl-Z, Shift-Ctrl-Z)  only ``set_data`` (from ``refresh()``); no ``paint``
``layer.data = new_array``                      ``data``, ``features``, ``set_data``
in-place numpy write + ``layer.refresh()``      only ``set_data``
==============================================  =========================================

A mouse stroke calls ``refresh()`` on press and on every move, and fires ``paint`` once, on
release; the timer does not save while a stroke is open (napari's ``_block_history`` flag).
``set_data`` also fires on colormap, contour and 2D/3D changes, so it says nothing about
the voxels. We therefore hook ``paint`` and ``data``, and wrap the instance's ``undo``,
``redo`` and ``refresh`` (the key bindings call ``layer.undo()``, so they hit the wrappers).
Today undo, redo and ``data =`` also go through ``refresh()``; hooking them directly too
keeps them covered if napari stops refreshing there.
A ``refresh`` that changed nothing costs one copy and one hash in the worker: a snapshot
whose voxels equal the last saved ones is not saved again.

Assigning ``layer.data`` does NOT clear napari's undo history: an undo after loading another
case writes the old case's strokes into the new one. :func:`replace_labels` (used by
:meth:`LabelsAutosave.switch_case`) assigns the data and then clears the history through
public API: napari resets it whenever a Labels layer turns non-editable, so ``editable`` is
toggled and the mode restored (no private ``_reset_history``, which a plugin's proxied
layer warns about). A test pins both facts, so a napari change shows up there.

Plugin widgets get layers wrapped in napari's ``PublicOnlyProxy``; the method wrappers are
installed on the wrapped layer itself (which is what setting an attribute on the proxy does).

Threading: the snapshot is copied on the GUI thread (only it touches layers), the save runs
in one worker thread (saves never overlap and keep their order), the result comes back to
the GUI thread through a queued Qt signal. SQLite connections belong to their thread, so
:func:`make_project_saver` opens the project inside the worker for each save.
"""

from __future__ import annotations

import concurrent.futures
import hashlib
import itertools
import os
import threading
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Callable

import numpy as np
from qtpy.QtCore import QObject, QTimer, Signal

SaveFn = Callable[[np.ndarray], object]

SAVED, UNSAVED, SAVING, ERROR = "saved", "unsaved", "saving", "error"


def make_project_saver(project_root: str | os.PathLike, case_id: str, *, note: str = "autosave",
                       busy_timeout: float | None = None) -> SaveFn:
    """A ``save_fn`` that stores a (z, y, x) label array as a draft human revision of ``case_id``.

    The project is opened in the calling thread (the autosave worker) and closed after each
    save, because a SQLite connection may only be used by the thread that opened it.
    Identical voxels are not saved twice (``unless_identical=True``). ``busy_timeout``: how
    long a save waits for another program's write lock before it fails as "busy" (the GUI
    waits for the save on Accept and case switches, so this bounds those waits; None: the
    store's default).
    """
    from dinomix_core.project import Project

    root = Path(project_root)

    def save(array_zyx: np.ndarray):
        options = {} if busy_timeout is None else {"busy_timeout": busy_timeout}
        with Project.open(root, tidy=False, **options) as project:
            return project.save_labels(case_id, array_zyx, final=False, note=note, unless_identical=True)

    save.__qualname__ = f"project_saver({root.name}, {case_id})"
    return save


def replace_labels(layer, labels_zyx: np.ndarray) -> None:
    """Show another case's (z, y, x) labels in ``layer`` with an empty undo history.

    napari keeps the undo history across ``layer.data = ...``; an undo would then paint the
    previous case's strokes into this one. napari clears the history when a Labels layer
    becomes non-editable, so we toggle ``editable`` through that state (public API only;
    the mode is put back). A fresh layer per case avoids the problem too; this keeps the
    user's layer settings (selected label, brush, opacity).
    """
    mode, editable = layer.mode, layer.editable
    layer.data = labels_zyx
    layer.editable = not editable
    layer.editable = editable
    if not editable:  # the history is cleared on the way to non-editable only
        layer.editable = True
        layer.editable = False
    layer.mode = mode


def _digest(array: np.ndarray) -> str:
    """Identity of a snapshot: shape, dtype and voxel bytes."""
    h = hashlib.blake2b(repr((array.shape, array.dtype.str)).encode(), digest_size=20)
    h.update(np.ascontiguousarray(array).data)
    return h.hexdigest()


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if isinstance(exc, ValueError) and str(exc) else f"{type(exc).__name__}: {text}"


@dataclass
class _Job:
    """One unit of worker work: a save (``gen`` > 0 may be saved) or a new baseline."""

    epoch: int
    gen: int
    baseline: bool
    future: concurrent.futures.Future | None = None
    handled: bool = False


class LabelsAutosave(QObject):
    """Keeps one Labels layer saved: debounced draft saves in a worker, flush on demand.

    ``save_fn(array_zyx) -> Revision`` runs in the worker thread with a copy of the layer's
    (z, y, x) data taken on the GUI thread. Use from the GUI thread only.
    """

    state_changed = Signal(str)   # "saved", "unsaved", "saving", "error"
    saved = Signal(object)        # the Revision returned by save_fn
    error = Signal(str)           # one-line reason a save failed (the edit stays unsaved)
    _job_done = Signal(object)    # worker -> GUI thread (queued)

    def __init__(self, save_fn: SaveFn, *, delay_ms: int = 2000, parent: QObject | None = None):
        super().__init__(parent)
        self._save_fn = save_fn
        self._executor = concurrent.futures.ThreadPoolExecutor(max_workers=1, thread_name_prefix="dinomix-autosave")
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(delay_ms))
        self._timer.timeout.connect(self._save_now)
        self._job_done.connect(self._finish)
        self._layer = None
        self._unhook: list[Callable[[], None]] = []
        self._epochs = itertools.count(1)
        self._epoch = 0
        self._edit_gen = 0       # bumped by every edit
        self._saved_gen = 0      # newest edit generation known to be in the store
        self._pending: list[_Job] = []
        self._last_error: str | None = None
        self._state = SAVED
        self._last_saved_at: datetime | None = None
        self._worker_digest: str | None = None   # touched by the worker thread only
        self._closed = False

    # -- public state ------------------------------------------------------------------

    @property
    def dirty(self) -> bool:
        """True while the layer holds edits that are not (yet) in the store."""
        return self._edit_gen > self._saved_gen

    @property
    def state(self) -> str:
        return self._state

    @property
    def last_error(self) -> str | None:
        """The one-line reason the last save failed (None after a successful one)."""
        return self._last_error

    @property
    def last_saved_at(self) -> datetime | None:
        """UTC time of the last successful save (None before the first)."""
        return self._last_saved_at

    @property
    def layer(self):
        return self._layer

    @property
    def delay_ms(self) -> int:
        return self._timer.interval()

    # -- attaching ---------------------------------------------------------------------

    def attach(self, layer, *, save_fn: SaveFn | None = None) -> None:
        """Watch ``layer`` (a napari Labels layer); its current data counts as saved.

        ``save_fn`` replaces the saving function (another case). Detaches the previous layer.
        """
        if self._closed:
            raise RuntimeError("this LabelsAutosave was closed; create a new one.")
        if self._layer is not None:
            self.detach()
        if getattr(layer, "multiscale", False):
            raise ValueError(f"layer {layer.name!r} is multiscale; autosave needs a single (z, y, x) label array. "
                             "Fix: load the labels as one array.")
        if save_fn is not None:
            self._save_fn = save_fn
        self._layer = layer
        self._epoch = next(self._epochs)
        self._edit_gen = self._saved_gen = 0
        self._last_error = None
        self._hook(layer)
        self._submit(baseline=True)
        self._update_state()

    def detach(self, timeout: float = 30) -> bool:
        """Save pending edits, then stop watching. False (and ``error`` emitted) if the save failed."""
        if self._layer is None:
            return True
        ok = self.flush(timeout)
        self._timer.stop()
        for undo in reversed(self._unhook):
            undo()
        self._unhook.clear()
        self._layer = None
        return ok

    def switch_case(self, layer, labels_zyx: np.ndarray, save_fn: SaveFn, timeout: float = 30) -> bool:
        """Flush the current case, then show ``labels_zyx`` (z, y, x) in ``layer`` and autosave it.

        Returns False, and changes nothing, when the current case's edits could not be saved
        (the caller should keep the case open and show the error).
        """
        if self._layer is not None and not self.flush(timeout):
            return False
        self.detach(timeout)
        replace_labels(layer, labels_zyx)
        self.attach(layer, save_fn=save_fn)
        return True

    def close(self, timeout: float = 30) -> bool:
        """Flush, unhook and stop the worker (on window close). Returns the flush result."""
        if self._closed:
            return True
        ok = self.detach(timeout)
        self._closed = True
        self._executor.shutdown(wait=ok)
        return ok

    # -- saving ------------------------------------------------------------------------

    def mark_dirty(self) -> None:
        """Record an edit made some other way (e.g. a tool writing voxels into the layer)."""
        if self._layer is None:
            return
        self._edit_gen += 1
        self._timer.start()  # restarts: the save happens delay_ms after the LAST edit
        self._update_state()

    def mark_clean(self) -> None:
        """The layer's current data is in the store (after an explicit save or Accept)."""
        if self._layer is None:
            return
        self._timer.stop()
        self._saved_gen = self._edit_gen
        self._last_error = None
        self._submit(baseline=True)
        self._update_state()

    def flush(self, timeout: float = 30) -> bool:
        """Save now and wait for it (case switch, close). False if not everything was saved."""
        self._timer.stop()
        if self._layer is not None and self.dirty:
            self._submit(baseline=False)
        self.settle(timeout)
        return not self.dirty  # a timed-out or failed save leaves it dirty

    def settle(self, timeout: float = 30) -> bool:
        """Wait for the saves under way, start none (an explicit save of the same voxels follows:
        Accept, Save draft). False if one failed or timed out; a pending edit stays pending,
        its timer running, so a failed explicit save still leaves the draft to come."""
        deadline = _Deadline(timeout)
        failed = False
        for job in list(self._pending):
            try:
                job.future.result(timeout=deadline.left())
            except concurrent.futures.TimeoutError:
                msg = f"saving the labels took longer than {timeout:g} s; they are not saved yet."
                self._last_error = msg
                self._update_state()
                self.error.emit(msg)
                return False
            except Exception:  # noqa: BLE001 - reported by _finish
                failed = True
            self._finish(job)
        return not failed

    def _save_now(self) -> None:
        if self._layer is None or not self.dirty:
            return
        if self._stroke_in_progress():
            self._timer.start()  # the release ends the stroke with a paint event; save after it
            return
        self._submit(baseline=False)

    def _stroke_in_progress(self) -> bool:
        """True between mouse press and release of a brush stroke (napari stages it as one undo step).

        Press and every move call ``refresh()``, so a user holding the mouse still longer than
        the delay would otherwise get a half-stroke saved. napari has no public flag for it.
        """
        return bool(getattr(getattr(self._layer, "__wrapped__", self._layer), "_block_history", False))

    def _submit(self, *, baseline: bool) -> None:
        array = np.array(self._layer.data, copy=True)  # GUI thread: the layer is only touched here
        job = _Job(epoch=self._epoch, gen=self._edit_gen, baseline=baseline)
        save_fn = self._save_fn
        job.future = self._executor.submit(self._work, job, array, save_fn)
        self._pending.append(job)
        job.future.add_done_callback(lambda _f, job=job: self._job_done.emit(job))
        self._update_state()

    def _work(self, job: _Job, array: np.ndarray, save_fn: SaveFn):
        """Worker thread: skip voxels that are already saved, else call save_fn."""
        digest = _digest(array)
        if job.baseline or digest == self._worker_digest:
            self._worker_digest = digest
            return None
        revision = save_fn(array)
        self._worker_digest = digest
        return revision

    def _finish(self, job: _Job) -> None:
        """GUI thread: account for a finished job (called once per job; later calls do nothing)."""
        if job.handled or not job.future.done():
            return
        job.handled = True
        self._pending.remove(job)
        exc = job.future.exception()
        current = job.epoch == self._epoch and self._layer is not None
        if exc is not None:
            msg = _one_line(exc)
            if current:
                self._last_error = msg
            self._update_state()
            self.error.emit(msg)
            return
        if current and not job.baseline:
            self._saved_gen = max(self._saved_gen, job.gen)
            self._last_error = None
            self._last_saved_at = datetime.now(timezone.utc)
        self._update_state()
        revision = job.future.result()
        if revision is not None:
            self.saved.emit(revision)

    def _update_state(self) -> None:
        if any(not j.baseline for j in self._pending):
            state = SAVING
        elif self.dirty and self._last_error:
            state = ERROR
        elif self.dirty:
            state = UNSAVED
        else:
            state = SAVED
        if state != self._state:
            self._state = state
            self.state_changed.emit(state)

    # -- hooks -------------------------------------------------------------------------

    def _hook(self, layer) -> None:
        def on_event(_event=None):
            self.mark_dirty()

        for name in ("paint", "data"):
            emitter = getattr(layer.events, name)
            emitter.connect(on_event)
            self._unhook.append(lambda emitter=emitter: emitter.disconnect(on_event))
        for name in ("undo", "redo", "refresh"):
            self._wrap_method(layer, name)

    def _wrap_method(self, layer, name: str) -> None:
        """Replace ``layer.<name>`` on this instance by a version that marks the layer dirty."""
        layer = getattr(layer, "__wrapped__", layer)  # a plugin's PublicOnlyProxy forwards to it
        original = getattr(layer, name)
        had_own = name in vars(layer)

        def wrapper(*args, **kwargs):
            result = original(*args, **kwargs)
            if threading.current_thread() is threading.main_thread():
                self.mark_dirty()
            return result

        setattr(layer, name, wrapper)

        def unwrap():
            if vars(layer).get(name) is wrapper:
                if had_own:
                    setattr(layer, name, original)
                else:
                    delattr(layer, name)

        self._unhook.append(unwrap)


class _Deadline:
    def __init__(self, seconds: float):
        self._end = time.monotonic() + seconds

    def left(self) -> float:
        return max(0.0, self._end - time.monotonic())
