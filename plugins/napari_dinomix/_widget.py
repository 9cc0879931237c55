"""The DINO-Mix dock widget: project, classes, training and prediction panels in one place.

Written against napari's ``ViewerModel`` (``napari.Viewer`` is one), so the desktop app can
host the same widget beside its own ``QtViewer``. The widget owns the session (state) and the
jobs controller (worker processes); the panels only display them and call them.
"""

from __future__ import annotations

import napari_dinomix._no_triton  # noqa: F401  (first: see the module)

from pathlib import Path

from qtpy.QtCore import QTimer
from qtpy.QtWidgets import QApplication, QHBoxLayout, QLabel, QTabWidget, QVBoxLayout, QWidget

from napari_dinomix._classes_panel import ClassesPanel
from napari_dinomix._jobs import JobsController
from napari_dinomix._predict_panel import PredictPanel
from napari_dinomix._project_panel import ProjectPanel
from napari_dinomix._session import AnnotationSession
from napari_dinomix._train_panel import TrainPanel

SAVE_TEXT = {"saved": ("✓ all edits saved", "#66bb6a"), "unsaved": ("● unsaved edits", "#ffca28"),
             "saving": ("… saving", "#90caf9"), "error": ("✗ not saved (see message)", "#ef5350"),
             "none": ("no case open", "#9e9e9e")}
LEVEL_COLORS = {"info": "#cfd8dc", "warning": "#ffca28", "error": "#ef5350"}


class DinomixWidget(QWidget):
    """The whole clinician loop: open, label, train in the background, predict, correct, accept."""

    def __init__(self, napari_viewer, parent=None, *, autosave_delay_ms: int = 2000):
        super().__init__(parent)
        self.viewer = napari_viewer
        self.session = AnnotationSession(napari_viewer, autosave_delay_ms=autosave_delay_ms, parent=self)
        self.jobs = JobsController(self.session, parent=self)
        self.project_panel = ProjectPanel(self.session)
        self.classes_panel = ClassesPanel(self.session)
        self.train_panel = TrainPanel(self.session, self.jobs)
        self.predict_panel = PredictPanel(self.session, self.jobs)
        self.tabs = QTabWidget()
        self.tabs.addTab(self.project_panel, "Project")
        self.tabs.addTab(self.classes_panel, "Classes")
        self.tabs.addTab(self.train_panel, "Train")
        self.tabs.addTab(self.predict_panel, "Predict")
        layout = QVBoxLayout(self)
        layout.setContentsMargins(4, 4, 4, 4)
        layout.addWidget(self.tabs, stretch=1)
        row = QHBoxLayout()
        self.case_label = QLabel("")
        self.save_label = QLabel("")
        row.addWidget(self.case_label, stretch=1)
        row.addWidget(self.save_label)
        layout.addLayout(row)
        self.message_label = QLabel("")
        self.message_label.setWordWrap(True)
        layout.addWidget(self.message_label)
        self.setMinimumWidth(380)
        self.last_message = ("info", "")
        self.save_state = "none"

        self.session.save_state.connect(self._show_save_state)
        self.session.message.connect(self.show_message)
        self.session.case_opened.connect(self._on_case)
        self.session.labels_changed.connect(lambda layer: self._show_save_state("none" if layer is None else "saved"))
        self.session.project_changed.connect(lambda root: self.case_label.setText("" if root is None else Path(root).name))
        self.jobs.training_finished.connect(self._show_new_prediction)
        self.jobs.prediction_stored.connect(self._show_stored_prediction)
        self.train_panel.device.currentIndexChanged.connect(self._sync_device)
        self._sync_device()
        napari_viewer.layers.events.inserted.connect(self._on_layer_inserted)
        app = QApplication.instance()
        self._quit_hooked = app is not None
        if app is not None:
            app.aboutToQuit.connect(self.shutdown)
        self._show_save_state("none")
        for layer in list(napari_viewer.layers):  # a sample project opened before the widget
            self._adopt_sample(layer)

    # -- the sample project hand-off --------------------------------------------------------

    def _on_layer_inserted(self, event) -> None:
        self._adopt_sample(event.value)

    def _adopt_sample(self, layer) -> None:
        """Layers of the sample-project contribution carry its folder: open it as a project.

        The sample's own layers are replaced by the session's (which autosave and know their case)
        once the insertion event is over.
        """
        meta = getattr(layer, "metadata", {}) or {}
        root = meta.get("dinomix_project")
        if not root or meta.get("dinomix_role"):
            return
        case_id = meta.get("dinomix_case")
        QTimer.singleShot(0, lambda: self._open_sample(layer, root, case_id))

    def _open_sample(self, layer, root: str, case_id: str | None) -> None:
        for other in [l for l in self.viewer.layers if (l.metadata or {}).get("dinomix_project") == root
                      and not l.metadata.get("dinomix_role")]:
            self.viewer.layers.remove(other)
        if self.session.root is None or str(self.session.root) != str(Path(root).resolve()):
            if not self.session.open_project(root):
                return
        if case_id and self.session.case_id != case_id:
            self.session.open_case(case_id)

    def _show_new_prediction(self, outcome) -> None:
        """After a run, put its prediction of the open case on screen, unless a human works on it."""
        if outcome.status == "completed":
            self._show_latest_model_revision()

    def _show_stored_prediction(self, event) -> None:
        """A running job just stored the open case's prediction: show it now, not at the run's end."""
        if event.case_id == self.session.case_id:
            self._show_latest_model_revision()

    def _show_latest_model_revision(self) -> None:
        revision_id = self._unshown_model_revision()
        if revision_id is not None:  # read in a worker thread; still wanted when read?
            self.session.show_prediction_soon(self.session.case_id, revision_id,
                                              still_wanted=lambda r: r == self._unshown_model_revision())

    def _unshown_model_revision(self) -> int | None:
        """The open case's newest prediction when it is not on screen and no human work is in its way."""
        session = self.session
        if session.project is None or session.case_id is None:
            return None
        revisions = session.project.revisions(session.case_id)
        if any(r.kind == "human" for r in revisions) or (session.autosave is not None and session.autosave.dirty):
            return None
        model = [r for r in revisions if r.kind == "model"]
        shown = session.labels_layer.metadata.get("dinomix_revision") if session.labels_layer else None
        return model[-1].id if model and model[-1].id != shown else None

    # -- status ----------------------------------------------------------------------------

    def _on_case(self, case_id: str) -> None:
        root = self.session.root
        self.case_label.setText(f"{root.name if root else ''} ▸ {case_id}")

    def _show_save_state(self, state: str) -> None:
        text, color = SAVE_TEXT.get(state, (state, "#cfd8dc"))
        self.save_label.setText(text)
        self.save_label.setStyleSheet(f"color: {color};")
        self.save_state = state

    def show_message(self, level: str, text: str) -> None:
        self.message_label.setText(text)
        self.message_label.setStyleSheet(f"color: {LEVEL_COLORS.get(level, '#cfd8dc')};")
        self.last_message = (level, text)

    def _sync_device(self, *_args) -> None:
        self.predict_panel.device = self.train_panel.device.currentData() or "cpu"

    # -- closing ---------------------------------------------------------------------------

    def shutdown(self, *, stop_training: bool = True) -> bool:
        """Flush every edit, stop the workers (training keeps its checkpoint), close the project."""
        self.jobs.shutdown(stop_training=stop_training)
        app = QApplication.instance()
        if app is not None and self._quit_hooked:
            self._quit_hooked = False
            app.aboutToQuit.disconnect(self.shutdown)
        return self.session.close_project()

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        self.shutdown()
        super().closeEvent(event)
