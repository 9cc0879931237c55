"""The desktop app's main window: napari's viewer in the middle, the DINO-Mix panels docked.

The viewer is embedded through napari's public ``napari.qt.QtViewer(ViewerModel())`` (the
``Window.qt_viewer`` route is deprecated, ``_qt_window`` private), so the window, menus and
status bar are ours; the panels are the napari plugin's own widget, so the plugin and the app
behave identically. No engine logic lives here.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from napari.components import ViewerModel
from napari.qt import QtViewer, get_qapp, get_stylesheet
from qtpy.QtCore import QByteArray, QObject, Qt, QTimer, Signal
from qtpy.QtGui import QAction, QKeySequence
from qtpy.QtWidgets import (QApplication, QComboBox, QDialog, QDialogButtonBox, QDockWidget, QFileDialog,
                            QFormLayout, QHBoxLayout, QLabel, QLineEdit, QMainWindow, QMessageBox, QPushButton,
                            QSpinBox, QWidget)

from dinomix_core.io import WINDOW_PRESETS
from napari_dinomix._status_line import StatusLine
from napari_dinomix._widget import DinomixWidget
from napari_dinomix._worker import prewarm_worker, prewarming

from dinomix_app import __version__
from dinomix_app.icon import app_icon
from dinomix_app.settings import AppSettings
from dinomix_app.shortcuts import SHORTCUTS, help_text, key_of

ABOUT_METHOD = ("DINO-Mix trains a 3D student on your few labeled CT scans plus all unlabeled ones, taught by a "
                "frozen DINOv3 foundation model (knowledge distillation) and a progressive, imbalance-aware CutMix "
                "curriculum that keeps small organs from collapsing into background.")
DINOV3_LICENCE = ("DINOv3 weights are Meta's, under the DINOv3 License (https://ai.meta.com/resources/models-and-"
                  "libraries/dinov3-license/); they are never downloaded by this app: add them in the Train panel.")


def give_canvas_its_own_window(canvas: QWidget) -> bool:
    """Make the viewer's OpenGL canvas a native child window, on X11; True when done.

    A window holding an OpenGL widget is composed through OpenGL whenever any of its widgets
    repaints. With software OpenGL (virtual desktops, remote sessions, Xvfb: llvmpipe) that
    costs 11-13 ms for a status-bar text change at 1500x950. With the canvas alone in its own
    X window (its parents and siblings stay non-native), the panels, menus and status bar
    flush as plain pixels: 0.6 ms; a pan's repaint goes from 27-32 to 23-24 ms (median,
    ``python -m benchmarks.gui_step_cost``, section ``canvas_window``). Only X11 was
    measured, so other platforms keep Qt's default.
    """
    if QApplication.platformName() != "xcb":
        return False
    QApplication.setAttribute(Qt.AA_DontCreateNativeWidgetSiblings)  # else every dock turns native too
    canvas.setAttribute(Qt.WA_DontCreateNativeAncestors)
    canvas.setAttribute(Qt.WA_NativeWindow)
    return True


class _Relay(QObject):
    """Carries a background thread's result back to the GUI thread (queued signal)."""

    done = Signal(object, object)  # callback, (ok, value)


class MainWindow(QMainWindow):
    """DINO-Mix Studio. ``project``: a folder to open at start."""

    def __init__(self, project: str | Path | None = None, *, settings: AppSettings | None = None,
                 autosave_delay_ms: int = 2000):
        get_qapp()  # registers napari's theme resources when the QApplication was made elsewhere
        super().__init__()
        # Deleted when closed: its menu actions hold Python slots, a reference cycle through C++
        # that Python's collector cannot see, so the window (and its viewer) would otherwise live on.
        self.setAttribute(Qt.WA_DeleteOnClose)
        self.settings = settings or AppSettings.load()
        if self.settings.weights_dir:
            os.environ["DINOMIX_WEIGHTS_DIR"] = self.settings.weights_dir  # workers inherit it
        self.setWindowTitle("DINO-Mix Studio[*]")  # "[*]": where Qt shows "*" while edits are unsaved
        self.viewer = ViewerModel(title="DINO-Mix Studio")
        self.qt_viewer = QtViewer(self.viewer)
        give_canvas_its_own_window(self.qt_viewer.canvas.native)
        self.setCentralWidget(self.qt_viewer)
        self.addDockWidget(Qt.LeftDockWidgetArea, self.qt_viewer.dockLayerControls)
        self.addDockWidget(Qt.LeftDockWidgetArea, self.qt_viewer.dockLayerList)
        self.panel = DinomixWidget(self.viewer, autosave_delay_ms=autosave_delay_ms)
        self.dock = QDockWidget("DINO-Mix", self)
        self.dock.setObjectName("dinomix-panel")
        self.dock.setWidget(self.panel)
        self.dock.setFeatures(QDockWidget.DockWidgetMovable | QDockWidget.DockWidgetFloatable)
        self.addDockWidget(Qt.RightDockWidgetArea, self.dock)
        self.resizeDocks([self.dock], [470], Qt.Horizontal)
        self.session = self.panel.session
        self.jobs = self.panel.jobs
        self._apply_device()
        self.actions: dict[str, QAction] = {}
        self._relay = _Relay(self)
        self._relay.done.connect(lambda callback, result: callback(*result))
        self._build_menus()
        self._build_status_bar()
        self.resize(1500, 950)
        self._restore_layout()
        self.setWindowIcon(app_icon())
        # napari's own theme (icons of the layer buttons included); the Window class would do this.
        self.setStyleSheet(get_stylesheet(self.viewer.theme))
        self.session.project_changed.connect(self._on_project)
        self.session.case_opened.connect(self._remember_case)
        if project is not None:
            self.open_project(project)

    # -- menus -----------------------------------------------------------------------------

    def _action(self, menu, text: str, slot, action_id: str | None = None) -> QAction:
        action = QAction(text, self)
        if action_id is not None and action_id in SHORTCUTS:
            action.setShortcut(QKeySequence(key_of(action_id)))
            action.setShortcutContext(Qt.ApplicationShortcut)
            self.actions[action_id] = action
        action.triggered.connect(lambda _checked=False: slot())
        menu.addAction(action)
        self.actions.setdefault(text, action)
        return action

    def _build_menus(self) -> None:
        bar = self.menuBar()
        file = bar.addMenu("&File")
        self._action(file, "New project…", self.new_project_dialog)
        self._action(file, "Open project…", self.open_project_dialog, "open_project")
        self.recent_menu = file.addMenu("Recent projects")
        self._fill_recent()
        self._action(file, "Open sample project", self.open_sample)
        file.addSeparator()
        self._action(file, "Add scans…", self.panel.project_panel._add_files)
        self._action(file, "Add DICOM folder…", self.panel.project_panel._add_dicom)
        file.addSeparator()
        self._action(file, "Export nnU-Net data set…", lambda: self.export_dialog("nnunet"))
        self._action(file, "Export 3D Slicer segmentations…", lambda: self.export_dialog("slicer"))
        file.addSeparator()
        self._action(file, "Quit", self.close, "quit")

        edit = bar.addMenu("&Edit")
        self._action(edit, "Undo labels edit", lambda: self._labels_call("undo"))  # napari's Ctrl-Z does the same
        self._action(edit, "Redo labels edit", lambda: self._labels_call("redo"))
        edit.addSeparator()
        self._action(edit, "Save draft", self.session.save_draft, "save_draft")
        self._action(edit, "Accept as label", self.session.accept, "accept")
        self._action(edit, "Next suggested case", self.panel.project_panel.open_next, "next_case")
        self._action(edit, "Previous class", lambda: self._step_class(-1), "previous_class")
        self._action(edit, "Next class", lambda: self._step_class(+1), "next_class")

        view = bar.addMenu("&View")
        for key in WINDOW_PRESETS:
            name = key.replace("_", " ").capitalize()
            self._action(view, f"Window: {name}", lambda n=name: self.session.set_window(n), f"window_{key}")
        view.addSeparator()
        self._action(view, "Show / hide prediction", self.toggle_prediction, "toggle_prediction")
        self._action(view, "Show / hide uncertainty", self.toggle_uncertainty, "toggle_uncertainty")

        settings = bar.addMenu("&Settings")
        self._action(settings, "Preferences…", self.settings_dialog)

        helpm = bar.addMenu("&Help")
        self._action(helpm, "Keyboard shortcuts", self.show_shortcuts)
        self._action(helpm, "About DINO-Mix Studio", self.show_about)

    def _fill_recent(self) -> None:
        self.recent_menu.clear()
        for path in self.settings.recent_projects:
            action = self.recent_menu.addAction(path)
            action.triggered.connect(lambda _c=False, p=path: self.open_project(p))
        self.recent_menu.setEnabled(bool(self.settings.recent_projects))

    # -- status bar ------------------------------------------------------------------------

    def _build_status_bar(self) -> None:
        bar = self.statusBar()
        self.device_label = QLabel()
        self.project_label = QLabel("no project")
        # Changes every second while training: a StatusLine repaints without re-laying out the bar.
        self.training_label = StatusLine("training: idle")
        self.saved_label = QLabel("")
        for widget in (self.device_label, self.project_label):
            bar.addWidget(widget)
        bar.addWidget(self.training_label, 1)
        bar.addPermanentWidget(self.saved_label)
        self._show_device()
        self.session.save_state.connect(self._show_saved)
        self.session.labels_changed.connect(lambda layer: self._show_saved("none" if layer is None else "saved"))
        self.jobs.progress.connect(self._on_progress)  # once a second, in the panel's repaint
        self.jobs.validation.connect(self._on_validation)
        self.jobs.training_state.connect(self._on_training_state)
        self._last_dice: str = ""
        self._show_saved("none")

    def _show_device(self) -> None:
        self.device_label.setText(f"device: {self.settings.resolved_device().upper()}")

    def _show_saved(self, state: str) -> None:
        from napari_dinomix._widget import SAVE_TEXT

        text, color = SAVE_TEXT.get(state, (state, "#cfd8dc"))
        self.saved_label.setText(text)
        self.saved_label.setStyleSheet(f"color: {color};")
        self.setWindowModified(state in ("unsaved", "saving", "error"))  # the title's "*"

    def _on_progress(self, ev) -> None:
        minutes, seconds = divmod(int(ev.eta_seconds), 60)
        self.training_label.setText(f"training: step {ev.step} / {ev.total_steps}, ETA {minutes}:{seconds:02d}"
                                    + (f", last Dice {self._last_dice}" if self._last_dice else ""))

    def _on_validation(self, ev) -> None:
        if ev.mean_dice is not None:
            self._last_dice = f"{ev.mean_dice:.1f}%" + ("" if ev.held_out else " (training cases)")

    def _on_training_state(self, state: str) -> None:
        if state not in ("running",):
            self.training_label.setText(f"training: {state}" + (f", last Dice {self._last_dice}" if self._last_dice else ""))

    def _on_project(self, root) -> None:
        self.project_label.setText("no project" if root is None else f"project: {Path(root).name}")
        self.setWindowTitle("DINO-Mix Studio" + ("" if root is None else f" — {Path(root).name}") + "[*]")
        if root is not None:
            self.settings.add_recent(root)
            self._save_settings()
            self._fill_recent()

    # -- actions ---------------------------------------------------------------------------

    def open_project(self, root: str | Path) -> bool:
        """Open a project and show a case: the one open when the project was last left, else the
        first labeled one (its overlay), else the next suggested."""
        if not self.session.open_project(root):
            return False
        rows = self.session.case_rows()
        remembered = self.settings.case_to_reopen(root)
        first = remembered if any(r.case_id == remembered for r in rows) else None
        if first is None:
            first = next((r.case_id for r in rows if r.status == "labeled"), None)
        if first is None:
            suggested = self.session.next_suggested()
            first = None if suggested is None else suggested["id"]
        if first is not None:
            self.session.open_case(first)
        return True

    def open_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a DINO-Mix project folder")
        if folder:
            self.open_project(folder)

    def new_project_dialog(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the new project (empty)")
        if folder:
            self.session.new_project(folder)

    def open_sample(self) -> bool:
        from dinomix_core.project.sample import create_sample_project

        return self.open_project(create_sample_project())

    def export_dialog(self, kind: str) -> None:
        if self.session.project is None:
            self.session.message.emit("warning", "Open a project first.")
            return
        folder = QFileDialog.getExistingDirectory(self, "Export into this (empty) folder")
        if folder:
            self.export(kind, folder)

    def export(self, kind: str, folder: str | Path, done=None) -> None:
        """Export in a background thread; the result is reported in the status bar."""
        from dinomix_core.project import Project
        from dinomix_core.project.export import export_nnunet, export_slicer

        root = self.session.root
        self.session.flush_edits()

        def work():
            with Project.open(root, busy_timeout=5.0, tidy=False) as project:
                return (export_nnunet if kind == "nnunet" else export_slicer)(project, folder)

        def finished(ok, value):
            if ok:
                self.session.message.emit("info", f"Exported to {folder}")
            else:
                self.session.message.emit("error", f"Export failed: {str(value).splitlines()[0] if str(value) else value!r}")
            if done is not None:
                done(ok, value)

        self._in_thread(work, finished)

    def _in_thread(self, work, callback) -> None:
        def run():
            try:
                result = (True, work())
            except Exception as exc:  # reported to the user as a message
                result = (False, exc)
            self._relay.done.emit(callback, result)

        threading.Thread(target=run, name="dinomix-app-task", daemon=True).start()

    def _labels_call(self, name: str) -> None:
        layer = self.session.labels_layer
        if layer is not None:
            getattr(layer, name)()

    def _step_class(self, delta: int) -> None:
        layer = self.session.labels_layer
        label_map = self.session.label_map
        if layer is None or label_map is None:
            return
        value = (int(layer.selected_label) - 1 + delta) % (label_map.num_classes - 1) + 1
        layer.selected_label = value

    def toggle_prediction(self) -> None:
        for layer in self.viewer.layers:
            if "prediction" in layer.name:
                layer.visible = not layer.visible

    def toggle_uncertainty(self) -> None:
        box = self.panel.predict_panel.show_uncertainty
        box.setChecked(not box.isChecked())

    def show_shortcuts(self) -> QMessageBox:
        box = QMessageBox(QMessageBox.Information, "Keyboard shortcuts", "DINO-Mix Studio keys", parent=self)
        box.setInformativeText(help_text() + "\n\nnapari's Labels keys also work: 2/P paint, 1/E erase, 4/F fill, "
                               "[ ] brush size, Z pan/zoom.")
        box.setStyleSheet("QLabel { font-family: monospace; }")
        box.open()
        return box

    def about_text(self) -> str:
        teacher = self.panel.train_panel.teacher.currentData()
        note = ("The current teacher is RANDOM (no DINOv3 weights installed): results are for trying the app only."
                if teacher == "random" else f"Current teacher weights: {teacher}.")
        return f"DINO-Mix Studio {__version__}\n\n{ABOUT_METHOD}\n\n{DINOV3_LICENCE}\n\n{note}"

    def show_about(self) -> QMessageBox:
        box = QMessageBox(QMessageBox.Information, "About DINO-Mix Studio", self.about_text(), parent=self)
        box.open()
        return box

    def settings_dialog(self) -> "SettingsDialog":
        dialog = SettingsDialog(self.settings, self)
        dialog.accepted.connect(lambda: self._settings_changed(dialog))
        dialog.open()
        return dialog

    def _settings_changed(self, dialog: "SettingsDialog") -> None:
        dialog.apply(self.settings)
        self._save_settings()
        if self.settings.weights_dir:
            os.environ["DINOMIX_WEIGHTS_DIR"] = self.settings.weights_dir
        self.panel.train_panel.fill_teachers()
        self._apply_device()
        self._show_device()

    def _apply_device(self) -> None:
        combo = self.panel.train_panel.device
        index = combo.findData(self.settings.resolved_device())
        if index >= 0:
            combo.setCurrentIndex(index)
        self.panel.train_panel.num_threads = self.settings.thread_count()
        if prewarming():  # the standby must match the new thread count
            prewarm_worker(self.settings.thread_count())

    def start_worker_standby(self) -> None:
        """Keep a worker process started and its imports done for the next job (``_worker.prewarm_worker``).

        The app calls it once its window is up; the first Start then skips the interpreter and
        torch start-up (see benchmarks/results/gui.json ``first_overlay_s``)."""
        prewarm_worker(self.settings.thread_count())

    def _remember_case(self, case_id: str) -> None:
        """Kept in memory; written with the other settings on project switch and on close."""
        if self.session.root is not None:
            self.settings.remember_case(self.session.root, case_id)

    def _restore_layout(self) -> None:
        """The size, position and dock layout the window had when it was last closed.

        Qt checks the geometry against the screens present now: a window last shown on a
        monitor that is gone comes back on one that is there.
        """
        # A hand-edited value is ignored, not fatal: Qt returns False on bytes it cannot read.
        if self.settings.window_geometry:
            self.restoreGeometry(QByteArray.fromBase64(self.settings.window_geometry.encode("ascii", "ignore")))
        if self.settings.window_state:
            self.restoreState(QByteArray.fromBase64(self.settings.window_state.encode("ascii", "ignore")))

    def _keep_layout(self) -> None:
        self.settings.window_geometry = bytes(self.saveGeometry().toBase64()).decode("ascii")
        self.settings.window_state = bytes(self.saveState().toBase64()).decode("ascii")

    def _save_settings(self) -> None:
        try:
            self.settings.save()
        except OSError as exc:
            self.session.message.emit("warning", f"Settings not saved: {exc}")

    # -- closing ---------------------------------------------------------------------------

    def confirm_stop_training(self) -> bool:
        """Ask whether to stop the running training to close. Tests replace this."""
        answer = QMessageBox.question(
            self, "Training is running",
            "A model is training. Stop it and quit? Its checkpoint is kept, so you can resume it later.",
            QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.Cancel, QMessageBox.StandardButton.Cancel)
        return answer == QMessageBox.StandardButton.Yes

    def closeEvent(self, event) -> None:  # noqa: N802 (Qt's name)
        if getattr(self, "_closed", False):
            event.accept()
            return
        if self.jobs.training:
            if not self.confirm_stop_training():
                event.ignore()
                return
            self.jobs.stop_training()
            self._wait_for_training_end()
        if not self.panel.shutdown():
            answer = QMessageBox.warning(self, "Edits not saved", "Some edits could not be saved (see the message). "
                                         "Quit anyway?", QMessageBox.StandardButton.Yes | QMessageBox.StandardButton.No)
            if answer != QMessageBox.StandardButton.Yes:
                event.ignore()
                return
        self._keep_layout()
        self._save_settings()
        self.qt_viewer.close()  # napari's own clean-up of the canvas and its connections
        self._closed = True
        super().closeEvent(event)

    def _wait_for_training_end(self, timeout_s: float = 60.0) -> None:
        """Keep the GUI alive while the worker writes its checkpoint and ends."""
        import time

        deadline = time.monotonic() + timeout_s
        self.training_label.setText("training: stopping (saving the checkpoint)…")
        while self.jobs.training and time.monotonic() < deadline:
            QApplication.processEvents()
            time.sleep(0.02)
        if self.jobs.training:
            self.jobs.train_worker.kill()


class SettingsDialog(QDialog):
    def __init__(self, settings: AppSettings, parent=None):
        super().__init__(parent)
        self.setWindowTitle("Preferences")
        form = QFormLayout(self)
        self.device = QComboBox()
        for label, value in (("Automatic (CUDA when present)", "auto"), ("CPU", "cpu"), ("CUDA", "cuda")):
            self.device.addItem(label, value)
        self.device.setCurrentIndex(max(0, self.device.findData(settings.device)))
        self.weights_dir = QLineEdit(settings.weights_dir)
        browse = QPushButton("Browse…")
        browse.clicked.connect(self._browse)
        row = QHBoxLayout()
        row.addWidget(self.weights_dir)
        row.addWidget(browse)
        holder = QWidget()
        holder.setLayout(row)
        self.threads = QSpinBox()
        self.threads.setRange(0, 256)
        self.threads.setSpecialValueText("all cores")
        self.threads.setValue(settings.worker_threads)
        form.addRow("Device", self.device)
        form.addRow("Teacher weights folder", holder)
        form.addRow("Worker threads", self.threads)
        buttons = QDialogButtonBox(QDialogButtonBox.Ok | QDialogButtonBox.Cancel)
        buttons.accepted.connect(self.accept)
        buttons.rejected.connect(self.reject)
        form.addRow(buttons)

    def _browse(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder with DINOv3 weights")
        if folder:
            self.weights_dir.setText(folder)

    def apply(self, settings: AppSettings) -> None:
        settings.device = self.device.currentData()
        settings.weights_dir = self.weights_dir.text().strip()
        settings.worker_threads = int(self.threads.value())


def render_and_wait(window: QMainWindow, ms: int = 600) -> None:
    """Let the window lay out and draw (the canvas paints asynchronously)."""
    import time

    window.show()
    deadline = time.monotonic() + ms / 1000.0
    while time.monotonic() < deadline:
        QApplication.processEvents()
        time.sleep(0.01)
    QTimer.singleShot(0, lambda: None)
