"""Predict panel: predict in the background, show the overlay, correct, accept; revision history."""

from __future__ import annotations

from qtpy.QtCore import Qt
from qtpy.QtWidgets import (QCheckBox, QGroupBox, QHBoxLayout, QLabel, QListWidget, QListWidgetItem, QProgressBar,
                            QPushButton, QVBoxLayout, QWidget)


class PredictPanel(QWidget):
    def __init__(self, session, jobs, parent=None):
        super().__init__(parent)
        self.session = session
        self.jobs = jobs
        self.device = "cpu"
        layout = QVBoxLayout(self)
        row = QHBoxLayout()
        self.predict_current_button = QPushButton("Predict current case")
        self.predict_all_button = QPushButton("Predict all unlabeled")
        self.cancel_button = QPushButton("Cancel")
        for button in (self.predict_current_button, self.predict_all_button, self.cancel_button):
            row.addWidget(button)
        layout.addLayout(row)
        self.progress = QProgressBar()
        self.progress.setFormat("%p%")
        layout.addWidget(self.progress)
        self.status = QLabel("")
        self.status.setWordWrap(True)
        layout.addWidget(self.status)
        self.show_uncertainty = QCheckBox("Show uncertainty overlay")
        layout.addWidget(self.show_uncertainty)
        self.clean_up = QCheckBox("Clean up masks (drop stray islands)")
        self.clean_up.setChecked(True)
        self.clean_up.setToolTip("Drop the stray islands of each organ the way training measured helps it: keep its largest "
                                 "connected piece, or its pieces of 10% or more of the largest (the model records "
                                 "which). Untick to see the raw network output.")
        layout.addWidget(self.clean_up)
        row = QHBoxLayout()
        self.accept_button = QPushButton("Accept as label")
        self.accept_button.setToolTip("Save the (corrected) labels as a final human label: the case becomes labeled")
        self.draft_button = QPushButton("Save draft")
        row.addWidget(self.accept_button)
        row.addWidget(self.draft_button)
        layout.addLayout(row)
        box = QGroupBox("Revisions of this case (newest first)")
        inner = QVBoxLayout(box)
        self.revisions = QListWidget()
        self.restore_button = QPushButton("Restore selected revision")
        inner.addWidget(self.revisions)
        inner.addWidget(self.restore_button)
        layout.addWidget(box, stretch=1)

        self.predict_current_button.clicked.connect(self.predict_current)
        self.predict_all_button.clicked.connect(self.predict_unlabeled)
        self.cancel_button.clicked.connect(jobs.cancel_prediction)
        self.show_uncertainty.toggled.connect(self._toggle_uncertainty)
        self.accept_button.clicked.connect(session.accept)
        self.draft_button.clicked.connect(session.save_draft)
        self.restore_button.clicked.connect(self._restore)
        jobs.prediction_progress.connect(self._on_progress)
        jobs.prediction_ready.connect(self._on_ready)
        jobs.prediction_finished.connect(self._on_finished)
        session.case_opened.connect(lambda _c: self.refresh())
        session.revision_saved.connect(lambda _r: self.refresh())
        session.labels_changed.connect(lambda _l: self.refresh())
        self._set_running(False)
        self.refresh()

    def predict_current(self) -> bool:
        if self.session.case_id is None:
            self.session.message.emit("warning", "Open a case first.")
            return False
        self.session.flush_edits()
        started = self.jobs.predict([self.session.case_id], device=self.device, postprocess=self._postprocess())
        self._set_running(started)
        return started

    def predict_unlabeled(self) -> bool:
        if self.session.project is None:
            return False
        cases = [r.case_id for r in self.session.case_rows() if r.status in ("unlabeled", "predicted") and r.image == "ok"]
        started = self.jobs.predict(cases, device=self.device, postprocess=self._postprocess())
        self._set_running(started)
        return started

    def _postprocess(self) -> str:
        return "auto" if self.clean_up.isChecked() else "off"

    def _on_progress(self, done: int, total: int, what: str) -> None:
        self.progress.setRange(0, max(total, 1))
        self.progress.setValue(done)
        self.status.setText(f"predicting {what}: {done}/{total} windows")

    def _on_ready(self, event) -> None:
        self.status.setText(f"{event.case_id} predicted (uncertainty {event.score:.3f})"
                            + (f" — {event.teacher_note}" if "RANDOM" in (event.teacher_note or "") else ""))
        if event.case_id == self.session.case_id and event.revision_id is not None:
            self.session.show_prediction_soon(event.case_id, event.revision_id)  # with its uncertainty if wanted

    def _on_finished(self, outcome) -> None:
        self._set_running(False)
        if outcome.status == "completed":
            self.progress.setValue(self.progress.maximum())
        self.status.setText(f"prediction {outcome.status}: {outcome.message}")

    def _set_running(self, running: bool) -> None:
        self.predict_current_button.setEnabled(not running)
        self.predict_all_button.setEnabled(not running)
        self.cancel_button.setEnabled(running)

    def _toggle_uncertainty(self, on: bool) -> None:
        self.session.uncertainty_wanted = on  # kept for the next predictions and cases
        layer = self.session.uncertainty_layer
        if layer is not None:
            layer.visible = on
            return
        rev_id = None if self.session.labels_layer is None else self.session.labels_layer.metadata.get("dinomix_revision")
        if on and rev_id is not None:
            rev = self.session.project.revision(rev_id)
            if rev.kind == "model" and self.session.show_uncertainty(rev.id, visible=True):
                return
        if on:
            self.status.setText("No uncertainty map for these labels: it comes with a model prediction.")

    def refresh(self) -> None:
        self.revisions.clear()
        for rev in reversed(self.session.revisions()):
            kind = "prediction" if rev.kind == "model" else ("LABEL" if rev.final else "draft")
            text = f"#{rev.id}  {kind:<10}  {rev.created_at[:19].replace('T', ' ')}  {rev.author}"
            if rev.note:
                text += f"  ({rev.note})"
            item = QListWidgetItem(text)
            item.setData(Qt.UserRole, rev.id)
            self.revisions.addItem(item)
        has_case = self.session.case_id is not None
        for button in (self.accept_button, self.draft_button, self.restore_button, self.predict_current_button):
            button.setEnabled(has_case and (button is not self.predict_current_button or not self.jobs.predicting))

    def _restore(self) -> None:
        item = self.revisions.currentItem()
        if item is not None:
            self.session.restore(int(item.data(Qt.UserRole)))
