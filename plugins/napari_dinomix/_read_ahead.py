"""The next case's image and best labels, read in a worker thread before the user opens it.

Why: opening a 512 x 512 x 300 CT took 0.92-1.04 s of the GUI thread: 0.32 s reading the
image (``benchmarks.nifti_read_speed``), 0.2 s the labels, the rest napari's layers; and a
clinician's loop is "Next suggested" again and again. Read ahead, the same opening took
0.59 s (cProfile around ``AnnotationSession.open_case``, 2026-12-05), and 0.12 s with its
repaint once the layers were refilled instead of rebuilt (``benchmarks.gui_step_cost``,
``open_case_read_ahead``). ``AnnotationSession.open_case_soon`` reads any other case here
too, before opening it, and ``settled`` says when a read ended. The reads hold no
lock the GUI needs (a 10 ms probe on the main thread stayed within 1.1 ms of its time
during one). One case is held at most (150 MB of image for that CT). At opening, the image
is used only if its file's path, size and mtime are unchanged, the labels only if the case's
best revision is still the one read and its file still has the stored hash.
"""

from __future__ import annotations

from pathlib import Path

from qtpy.QtCore import QObject, Signal

from dinomix_core.io import read_volume
from dinomix_core.project import Project
from dinomix_core.project.revisions import Revision, check_revision_file, read_revision_file
from dinomix_core.project.scan import stat_signature

from napari_dinomix._newest_only import NewestOnly


class CaseReadAhead(QObject):
    """``request`` a case now, ``take`` it at opening: what still holds of the read, the rest read then."""

    settled = Signal(str)  # case id: its read ended (held now, or failed: ``take`` reads it again and says why)

    def __init__(self, parent=None):
        super().__init__(parent)
        self._reader = NewestOnly("case-prefetch", self)
        self._reader.done.connect(self._on_read)
        self._reader.failed.connect(self._on_failed)
        self._held: tuple | None = None  # ((image key, revision id), (image Volume, labels Volume or None))
        self._reading: tuple | None = None  # (image key, revision id) in the worker now

    @property
    def held_case(self) -> str | None:
        """The id of the case read ahead and not yet taken (None when none is)."""
        return None if self._held is None else self._held[0][0][1]

    def request(self, project: Project, case_id: str, rev: Revision | None) -> bool:
        """Read ``case_id``'s image and the labels of ``rev`` (its best revision) in the worker thread.

        True when that is held already (nothing to read; ``settled`` is not emitted). Raises
        what ``Project.check_image`` raises for a missing or changed image.
        """
        key = _image_key(project, case_id)
        wanted = (key, None if rev is None else rev.id)
        if self._held is not None and self._held[0] == wanted:
            return True
        if self._reading != wanted:  # the same read under way is not started again
            self._reading = wanted
            self._reader.request(_read_case, key[2], rev, tag=wanted)
        return False

    def take(self, project: Project, case_id: str, rev: Revision | None) -> tuple:
        """(image, labels of ``rev`` or None) of the case being opened: read ahead where it still holds."""
        key = _image_key(project, case_id)
        held, self._held = self._held, None
        if held is None or held[0][0] != key:
            return read_volume(key[2]), None if rev is None else project.load_labels(rev.id)
        (_, held_revision), (image, labels) = held
        if rev is None:
            return image, None
        if held_revision != rev.id:
            return image, project.load_labels(rev.id)
        check_revision_file(rev)  # the file is still the one saved (a hash of the small labels file)
        return image, labels

    def forget(self) -> None:
        """Drop what is held and what is being read (the project closes)."""
        self._reader.forget()
        self._held = self._reading = None

    def _on_read(self, read, wanted) -> None:
        self._held, self._reading = (wanted, read), None
        self.settled.emit(wanted[0][1])

    def _on_failed(self, _text: str, wanted) -> None:
        self._reading = None
        self.settled.emit(wanted[0][1])


def _image_key(project: Project, case_id: str) -> tuple:
    path = project.check_image(case_id).image_path  # raises if the file changed since it was added
    return project.root, case_id, path, stat_signature(path)


def _read_case(image_path: Path, rev: Revision | None) -> tuple:
    """Worker thread: a case's image and (when it has one) its best revision's labels; files only."""
    return read_volume(image_path), None if rev is None else read_revision_file(rev)
