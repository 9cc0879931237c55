"""The annotation session: one open project, one open case, its layers and its autosave.

State lives here, apart from the panels that show it (the split micro-sam's annotators use):
panels only display the session and call its methods, so the desktop app and the napari
plugin share one behaviour. It runs on the Qt main thread only, since it adds and removes
layers; file writes go through the autosave's background thread or the job worker process.

Label rules the clinician can rely on:
* a case opens with its best label: the newest final human revision, else the newest draft,
  else the newest model prediction, else an empty map;
* every edit becomes a draft revision (autosave); Accept makes the edited map a final human
  revision, and the case counts as labeled;
* a model prediction never replaces a human or draft revision: it arrives as its own
  layer, and the human layer stays in the store (and on screen, locked) until the user
  switches to the prediction by editing it;
* each case starts with an empty undo history (its labels layer is a fresh one or a reused
  one cleared), so napari's undo can never reach into another case.
"""

from __future__ import annotations

import napari_dinomix._no_triton  # noqa: F401  (first: see the module)

from dataclasses import dataclass
from pathlib import Path

import numpy as np
from qtpy.QtCore import QObject, Signal

from dinomix_core.io import LabelMap
from dinomix_core.io.label_counts import label_counts
from dinomix_core.project import Project, ProjectError
from dinomix_core.project.revisions import Revision

from napari_dinomix._autosave import LabelsAutosave, make_project_saver, replace_labels
from napari_dinomix._layers import LAYER_TAG, image_layer_data, labels_layer_data, retarget_layer, window_limits
from napari_dinomix._newest_only import NewestOnly
from napari_dinomix._predictions_shown import PredictionsShown, prediction_name, revision_text
from napari_dinomix._read_ahead import CaseReadAhead

GUI_BUSY_TIMEOUT_S = 3.0  # a project another program is writing answers within this, or says it is busy


@dataclass(frozen=True)
class CaseRow:
    """One line of the case table."""

    case_id: str
    status: str  # labeled, draft, predicted, unlabeled
    uncertainty: float | None
    last_change: str | None
    image: str  # ok, changed, missing


def describe_error(exc: BaseException) -> str:
    """A one-line, readable message for any engine error (the GUI shows it; no traceback)."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    if isinstance(exc, MemoryError):
        return "Out of memory: close other programs or pick a smaller student / patch size."
    return text


class AnnotationSession(PredictionsShown, QObject):
    """The project, the open case and its layers. Main thread only."""

    project_changed = Signal(object)  # project root (Path) or None
    cases_changed = Signal()  # the case table must be refreshed
    case_opened = Signal(str)
    labels_changed = Signal(object)  # the active labels layer (or None)
    save_state = Signal(str)  # saved / unsaved / saving / error
    revision_saved = Signal(object)  # Revision
    message = Signal(str, str)  # level ("info", "warning", "error"), text

    def __init__(self, viewer, *, autosave_delay_ms: int = 2000, parent=None):
        super().__init__(parent)
        self.viewer = viewer
        self.autosave_delay_ms = autosave_delay_ms
        self.project: Project | None = None
        self.case_id: str | None = None
        self.image_layer = None
        self.labels_layer = None
        self.uncertainty_layer = None
        # Whether the user asked to see the uncertainty overlay (the Predict tab's box): it is
        # then built with every prediction put on screen, and not at all otherwise.
        self.uncertainty_wanted = False
        self._locked_layers: list = []
        self.autosave: LabelsAutosave | None = None
        self._prediction_reader = NewestOnly("prediction-reader", self)  # see PredictionsShown
        self._prediction_reader.done.connect(self._on_prediction_read)
        self._prediction_reader.failed.connect(
            lambda text, _tag: self.message.emit("error", f"Could not show the new prediction: {text}"))
        self.read_ahead = CaseReadAhead(self)
        self.read_ahead.settled.connect(self._on_case_read)
        self.opening: str | None = None  # the case open_case_soon is reading, to open when read

    # -- project ---------------------------------------------------------------------------

    @property
    def root(self) -> Path | None:
        return None if self.project is None else self.project.root

    @property
    def label_map(self) -> LabelMap | None:
        return None if self.project is None else self.project.label_map

    def open_project(self, root: str | Path) -> bool:
        """Open a project folder; a readable message (not an exception) when it cannot be."""
        return self._take(lambda: Project.open(root, busy_timeout=GUI_BUSY_TIMEOUT_S), "Opened")

    def new_project(self, root: str | Path, label_map: LabelMap | None = None) -> bool:
        return self._take(lambda: Project.init(root, label_map=label_map or LabelMap.preset("btcv13"),
                                               busy_timeout=GUI_BUSY_TIMEOUT_S), "Created")

    def _take(self, make, verb: str) -> bool:
        """Switch to the project ``make()`` opens; on failure keep the current one and say why."""
        try:
            project = make()
        except (ProjectError, OSError) as exc:
            self.message.emit("error", describe_error(exc))
            return False
        self.close_project()
        self.project = project
        self.project_changed.emit(project.root)
        self.cases_changed.emit()
        self.message.emit("info", f"{verb} project {project.root}")
        return True

    def close_project(self) -> bool:
        """Flush unsaved edits, drop our layers, close the store. False if an edit could not be saved."""
        ok = self.close_case()
        self.read_ahead.forget()
        self.opening = None
        if self.project is not None:
            self.project.close()
            self.project = None
            self.project_changed.emit(None)
        return ok

    def add_scans(self, paths) -> str:
        """Add image files / DICOM folders; returns the one-line summary it also reports."""
        project = self._require_project()
        try:
            report = project.add_images([str(p) for p in paths])
        except (ProjectError, OSError) as exc:
            self.message.emit("error", describe_error(exc))
            return describe_error(exc)
        summary = f"{len(report.added)} scan(s) added"
        if report.skipped:
            summary += f", {len(report.skipped)} skipped: " + "; ".join(f"{Path(p).name}: {why}" for p, why in report.skipped[:3])
        self.message.emit("warning" if report.skipped and not report.added else "info", summary)
        self.cases_changed.emit()
        return summary

    def case_rows(self) -> list[CaseRow]:
        project = self._require_project()
        report = project.status()
        scores: dict[str, float] = {}
        for run in project.runs():
            if run.status == "completed":
                for pred in project.predictions(run.id):
                    scores[pred["case_id"]] = pred["uncertainty"]
        changes = {r["case_id"]: r["t"] for r in project.query(
            "SELECT case_id, MAX(created_at) AS t FROM revisions WHERE deleted_at IS NULL GROUP BY case_id")}
        return [CaseRow(c["id"], c["status"], scores.get(c["id"]), changes.get(c["id"]), c["image"])
                for c in report["cases"]]

    def next_suggested(self) -> dict | None:
        """The store's top-ranked case to annotate next, with why it was chosen (``reason``)."""
        items = self._require_project().next_cases(1)
        return items[0] if items else None

    # -- the open case ---------------------------------------------------------------------

    def best_revision(self, case_id: str) -> Revision | None:
        """Final human label, else newest draft, else newest model prediction."""
        project = self._require_project()
        label = project.label_revision(case_id)
        if label is not None:
            return label
        revisions = project.revisions(case_id)
        drafts = [r for r in revisions if r.kind == "human"]
        if drafts:
            return drafts[-1]
        return revisions[-1] if revisions else None

    def open_case(self, case_id: str, revision_id: int | None = None) -> bool:
        """Show a case with its best label (or ``revision_id``); flushes the previous case's edits first.

        The previous case's image and labels layers take the new case's data when they are
        still there (see ``retarget_layer``): adding the two layers of a 512 x 512 x 300 CT cost
        the GUI thread 0.5 s of napari's visual building, refilling them 60-75 ms.
        """
        project = self._require_project()
        self.opening = None  # a newer choice than any case still being read for open_case_soon
        if not self._flush_or_say_why():  # first: the best revision may be the draft being saved
            return False
        try:
            rev = self.best_revision(case_id) if revision_id is None else project.revision(revision_id, case_id=case_id)
            image, labels = self.read_ahead.take(project, case_id, rev)
        except (ProjectError, OSError, ValueError) as exc:
            self.message.emit("error", describe_error(exc))  # the open case stays as it was
            return False
        kept = self._leave_case()
        if kept is None:
            return False
        old_image, old_labels = kept
        label_map = project.require_label_map()
        self.case_id = case_id
        data, kwargs, _ = image_layer_data(image, name=f"{case_id} CT")
        kwargs.setdefault("metadata", {})[LAYER_TAG] = "image"
        if old_image is not None and old_image.data.dtype == data.dtype:
            retarget_layer(old_image, data, kwargs)
            old_image.contrast_limits_range = kwargs["contrast_limits"]  # as a new layer would have it
            old_image.contrast_limits = kwargs["contrast_limits"]
            self.image_layer = old_image
        else:
            self._remove_layers(old_image)
            self.image_layer = self.viewer.add_image(data, **kwargs)
            if old_labels is not None:  # under the labels it will show, not over them
                layers = self.viewer.layers
                layers.move(layers.index(self.image_layer), layers.index(old_labels))
        array = np.zeros(image.shape, np.uint8) if labels is None else labels.array
        name = f"{case_id} labels" if rev is None or rev.kind == "human" else prediction_name(rev)
        self._show_labels(array, label_map, image, name, revision=rev, reuse=old_labels)
        if rev is not None and rev.kind == "model" and self.uncertainty_wanted:
            self.show_uncertainty(rev.id, visible=True)
        self._center_on_labels(array)
        self._prefetch_next(case_id)
        self.case_opened.emit(case_id)
        self.message.emit("info", f"Opened {case_id}" + ("" if rev is None else f" ({revision_text(rev)})"))
        return True

    def open_case_soon(self, case_id: str) -> None:
        """Open a case once its files are read in the worker thread (at once if read ahead).

        For the panel's buttons and the table: reading a 512 x 512 x 300 CT and its labels held
        the GUI thread 0.6 s on top of the opening itself. The open case stays on screen, and
        editable, meanwhile; the newest request wins; a read that fails opens the case anyway,
        which reads again and says what is wrong.
        """
        if self.project is None:
            return
        self.opening = case_id
        try:
            held = self.read_ahead.request(self.project, case_id, self.best_revision(case_id))
        except (ProjectError, OSError, ValueError):
            held = True  # open_case says what is wrong
        if held:
            self._on_case_read(case_id)
        else:
            self.message.emit("info", f"Opening {case_id}…")

    def _on_case_read(self, case_id: str) -> None:
        if self.opening == case_id and self.project is not None:
            self.opening = None
            self.open_case(case_id)

    # -- reading the next case ahead -------------------------------------------------------

    def prefetch_case(self, case_id: str) -> None:
        """Read a case's image and best labels in a worker thread now (see ``_read_ahead``)."""
        if self.project is None:
            return
        try:
            self.read_ahead.request(self.project, case_id, self.best_revision(case_id))
        except (ProjectError, OSError):
            return  # opening it will say what is wrong

    def _prefetch_next(self, current: str) -> None:
        """Read ahead the case *Next suggested* would open from here (the open one excluded)."""
        try:
            items = self._require_project().next_cases(2)
        except (ProjectError, OSError):
            return
        following = next((item["id"] for item in items if item["id"] != current), None)
        if following is not None:
            self.prefetch_case(following)

    def close_case(self) -> bool:
        """Flush edits and remove the case's layers. False (and nothing removed) if the save failed."""
        kept = self._leave_case()
        if kept is None:
            return False
        self._remove_layers(*kept)
        return True

    def _leave_case(self) -> tuple | None:
        """Flush and stop the case's autosave, remove its locked and uncertainty layers.

        Returns its (image, labels) layers where still in the viewer (else None), for the
        next case to reuse or for ``close_case`` to remove; None, with nothing changed, if the
        edits could not be saved.
        """
        if not self._flush_or_say_why():
            return None
        self._stop_autosave()
        self._remove_layers(self.uncertainty_layer, *self._locked_layers)
        kept = tuple(layer if layer is not None and layer in self.viewer.layers else None
                     for layer in (self.image_layer, self.labels_layer))
        self.image_layer = self.labels_layer = self.uncertainty_layer = None
        self._locked_layers = []
        self.case_id = None
        self.labels_changed.emit(None)
        return kept

    def _flush_or_say_why(self) -> bool:
        """Save the open case's pending edits now; False, with the reason shown, if that failed."""
        if not self.flush_edits():
            self.message.emit("error", "Your edits could not be saved; they stay on screen. Fix the cause "
                                       "shown above and press Save draft.")
            return False
        return True

    def _stop_autosave(self) -> None:
        """Detach and drop the autosave of the labels about to be replaced (flushed before)."""
        if self.autosave is not None:
            self.autosave.detach()
            self.autosave.deleteLater()
            self.autosave = None

    def _remove_layers(self, *layers) -> None:
        for layer in layers:
            if layer is not None and layer in self.viewer.layers:
                self.viewer.layers.remove(layer)

    def _show_labels(self, array: np.ndarray, label_map: LabelMap, image, name: str, *, revision=None, reuse=None):
        """Add an editable labels layer for the open case and put the autosave on it.

        ``reuse``: a labels layer (its autosave detached) to show the labels in instead, its
        undo history emptied and its geometry set to the case's. Adding a Labels layer builds napari's visuals and overlays: 141-181 ms of the
        GUI thread with its repaint under software OpenGL against 50-55 ms reusing one
        (``benchmarks.gui_step_cost``); see ``_holds_nothing_of_the_users`` for when.
        """
        # Both callers pass a map read or made for this call: the layer may own it without a copy
        # (20 ms of the GUI thread for a 512 x 512 x 300 map).
        data, kwargs, _ = labels_layer_data(np.asarray(array, dtype=np.uint8), label_map, name=name, reference=image)
        meta = kwargs.setdefault("metadata", {})
        meta[LAYER_TAG] = "labels"
        meta["dinomix_case"] = self.case_id
        meta["dinomix_revision"] = None if revision is None else revision.id
        if reuse is not None:
            replace_labels(reuse, data)  # with an empty undo history
            retarget_layer(reuse, None, kwargs)
            layer = reuse
        else:
            layer = self.viewer.add_labels(data, **kwargs)
            layer.selected_label = max(1, int(getattr(self.labels_layer, "selected_label", 1) or 1))
            layer.brush_size = 6
        self.labels_layer = layer
        self.autosave = LabelsAutosave(make_project_saver(self.project.root, self.case_id, busy_timeout=GUI_BUSY_TIMEOUT_S),
                                       delay_ms=self.autosave_delay_ms, parent=self)
        self.autosave.state_changed.connect(self.save_state)
        self.autosave.saved.connect(self._on_autosaved)
        self.autosave.error.connect(lambda text: self.message.emit("error", f"Autosave failed: {text}"))
        self.autosave.attach(layer)
        self.viewer.layers.selection.active = layer
        self.labels_changed.emit(layer)
        return layer

    def set_window(self, preset: str) -> None:
        if self.image_layer is not None:
            self.image_layer.contrast_limits = window_limits(preset)

    # -- saving ----------------------------------------------------------------------------

    def flush_edits(self) -> bool:
        """Write pending strokes now (before training reads the store, on switch and on close)."""
        return True if self.autosave is None else self.autosave.flush()

    def save_draft(self) -> Revision | None:
        """Save the current labels now as a draft (also when the autosave has nothing pending)."""
        return self._save(final=False)

    def accept(self) -> Revision | None:
        """Save the (corrected) current labels as a final human revision: the case is labeled."""
        return self._save(final=True)

    def _save(self, *, final: bool) -> Revision | None:
        if self.project is None or self.case_id is None or self.labels_layer is None:
            self.message.emit("warning", "Open a case first.")
            return None
        # The saves under way end first (revisions stay in order); a pending one is not started:
        # this save holds the same voxels (a draft and then the final label of a 512 x 512 x 300
        # map held the GUI thread 1.4 s, the final label alone 0.4 s).
        if self.autosave is not None and not self.autosave.settle():
            # e.g. another program holds the project's write lock: say so now instead of
            # waiting again for the same lock; the strokes stay on screen and in the autosave.
            self.message.emit("error", f"{self.case_id}: not saved yet ({self.autosave.last_error or 'the save failed'}). "
                                       "Your strokes stay on screen; try again in a moment.")
            return None
        try:
            rev = self.project.save_labels(self.case_id, np.asarray(self.labels_layer.data), final=final,
                                           note="accepted" if final else "saved draft", unless_identical=True)
        except (ProjectError, OSError, ValueError) as exc:
            self.message.emit("error", describe_error(exc))
            return None
        if self.autosave is not None:
            self.autosave.mark_clean()
        self.labels_layer.metadata["dinomix_revision"] = rev.id
        self.revision_saved.emit(rev)
        self.cases_changed.emit()
        self.message.emit("info", f"{self.case_id}: {'accepted as label' if final else 'draft saved'} (revision {rev.id})")
        return rev

    def _on_autosaved(self, rev) -> None:
        if self.labels_layer is not None and rev is not None:
            self.labels_layer.metadata["dinomix_revision"] = rev.id
        self.revision_saved.emit(rev)
        self.cases_changed.emit()

    def revisions(self) -> list[Revision]:
        if self.project is None or self.case_id is None:
            return []
        return self.project.revisions(self.case_id)

    def restore(self, revision_id: int) -> bool:
        """Make an older revision the newest (a copy; nothing is lost) and show it."""
        if self.project is None or self.case_id is None:
            return False
        case_id = self.case_id
        if self.autosave is not None and not self.autosave.flush():
            return False
        try:
            restored = self.project.restore_revision(case_id, revision_id)
        except (ProjectError, OSError) as exc:
            self.message.emit("error", describe_error(exc))
            return False
        self.cases_changed.emit()
        # Shown explicitly: a final label elsewhere in the history would win the "best" rule.
        return self.open_case(case_id, restored.id)

    # -- measurements ----------------------------------------------------------------------

    def class_volumes_ml(self, counts: np.ndarray | None = None) -> dict[str, float]:
        """Volume of every class in the current labels, in mL (voxel counts x voxel volume in mm^3 / 1000).

        ``counts``: voxels per class value when already counted (the Classes panel counts in
        a worker thread); else the labels layer is counted here.
        """
        if self.labels_layer is None or self.project is None or self.case_id is None:
            return {}
        label_map = self.project.require_label_map()
        case = self.project.case(self.case_id)
        voxel_ml = float(np.prod(case.spacing_zyx)) / 1000.0
        if counts is None:
            counts = label_counts(self.labels_layer.data, label_map.num_classes)
        counts = np.pad(counts, (0, max(0, label_map.num_classes - len(counts))))
        return {label_map.names[v]: float(counts[v]) * voxel_ml for v in range(1, label_map.num_classes)}

    # -- helpers ---------------------------------------------------------------------------

    def _require_project(self) -> Project:
        if self.project is None:
            raise ProjectError(None, "no project is open.", "Open or create a project first.")
        return self.project

    def _center_on_labels(self, array: np.ndarray) -> None:
        """Start on the axial slice with the most labelled voxels (else the middle one).

        Counted slice by slice: ``np.count_nonzero`` of a whole slice takes numpy's fast path,
        with ``axis=1`` it does not (512 x 512 x 300: 7.5 against 72 ms).
        """
        per_slice = np.array([np.count_nonzero(plane) for plane in array]) if array.size else np.zeros(1)
        z = int(np.argmax(per_slice)) if per_slice.any() else array.shape[0] // 2
        layer = self.labels_layer
        world = layer.data_to_world((z, 0, 0)) if layer is not None else (z, 0, 0)
        step = list(self.viewer.dims.point)
        if step:
            step[0] = float(world[0])
            self.viewer.dims.point = step
        self.viewer.reset_view()
