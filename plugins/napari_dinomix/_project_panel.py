"""Project panel: new / open a project, add scans, the case table, next suggested case."""

from __future__ import annotations

from qtpy.QtCore import Qt, Signal
from qtpy.QtGui import QColor
from qtpy.QtWidgets import (QAbstractItemView, QFileDialog, QHBoxLayout, QHeaderView, QLabel, QPushButton,
                            QTableWidget, QTableWidgetItem, QVBoxLayout, QWidget)

STATUS_COLORS = {"labeled": "#66bb6a", "draft": "#ffca28", "predicted": "#42a5f5", "unlabeled": "#9e9e9e"}
COLUMNS = ("case", "status", "uncertainty", "last change")


class ProjectPanel(QWidget):
    """Everything about which project and which case is open."""

    case_requested = Signal(str)

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        self.path_label = QLabel("No project open.")
        self.path_label.setWordWrap(True)
        layout.addWidget(self.path_label)
        row = QHBoxLayout()
        self.new_button = QPushButton("New…")
        self.open_button = QPushButton("Open…")
        self.add_files_button = QPushButton("Add scans…")
        self.add_dicom_button = QPushButton("Add DICOM folder…")
        for button, tip in ((self.new_button, "Create a project in an empty folder"),
                            (self.open_button, "Open a project folder"),
                            (self.add_files_button, "Add CT files (NIfTI, NRRD, MHA/MHD, DICOM files)"),
                            (self.add_dicom_button, "Add a DICOM series folder")):
            button.setToolTip(tip)
            row.addWidget(button)
        layout.addLayout(row)
        self.table = QTableWidget(0, len(COLUMNS))
        self.table.setHorizontalHeaderLabels([c.capitalize() for c in COLUMNS])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        self.table.setMinimumHeight(140)
        layout.addWidget(self.table)
        row = QHBoxLayout()
        self.open_case_button = QPushButton("Open case")
        self.next_button = QPushButton("Next suggested")
        self.next_button.setToolTip("Open the case the project ranks first to annotate next")
        row.addWidget(self.open_case_button)
        row.addWidget(self.next_button)
        layout.addLayout(row)
        self.reason_label = QLabel("")
        self.reason_label.setWordWrap(True)
        layout.addWidget(self.reason_label)

        self.new_button.clicked.connect(self._new)
        self.open_button.clicked.connect(self._open)
        self.add_files_button.clicked.connect(self._add_files)
        self.add_dicom_button.clicked.connect(self._add_dicom)
        self.table.cellDoubleClicked.connect(lambda row, _col: self._open_row(row))
        self.open_case_button.clicked.connect(lambda: self._open_row(self.table.currentRow()))
        self.next_button.clicked.connect(self.open_next)
        session.project_changed.connect(self._on_project)
        session.cases_changed.connect(self.refresh)
        session.case_opened.connect(self._select_case)
        self._on_project(session.root)

    # -- actions ---------------------------------------------------------------------------

    def _new(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Folder for the new project (empty)")
        if folder:
            self.session.new_project(folder)

    def _open(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Open a DINO-Mix project folder")
        if folder:
            self.session.open_project(folder)

    def _add_files(self) -> None:
        files, _ = QFileDialog.getOpenFileNames(
            self, "Add CT scans", "", "CT images (*.nii *.nii.gz *.nrrd *.mha *.mhd *.dcm);;All files (*)")
        if files:
            self.session.add_scans(files)

    def _add_dicom(self) -> None:
        folder = QFileDialog.getExistingDirectory(self, "Add a DICOM series folder")
        if folder:
            self.session.add_scans([folder])

    def _open_row(self, row: int) -> None:
        if row < 0:
            return
        item = self.table.item(row, 0)
        if item is not None:
            self.case_requested.emit(item.text())
            self.session.open_case_soon(item.text())

    def open_next(self) -> None:
        if self.session.project is None:
            return
        item = self.session.next_suggested()
        if item is None:
            self.reason_label.setText("Every case is labeled.")
            return
        self.reason_label.setText(f"Suggested {item['id']}: {item['reason']}")
        self.session.open_case_soon(item["id"])

    # -- view ------------------------------------------------------------------------------

    def _on_project(self, root) -> None:
        has = root is not None
        self.path_label.setText(f"Project: {root}" if has else "No project open. Create one, open one, or load "
                                "File ▸ Open Sample ▸ DINO-Mix ▸ Sample DINO-Mix project.")
        for button in (self.add_files_button, self.add_dicom_button, self.open_case_button, self.next_button):
            button.setEnabled(has)
        self.refresh()

    def refresh(self) -> None:
        selected = self.selected_case()
        self.table.setRowCount(0)
        if self.session.project is None:
            return
        rows = self.session.case_rows()
        self.table.setRowCount(len(rows))
        for i, row in enumerate(rows):
            status = row.status if row.image == "ok" else f"{row.status} (image {row.image})"
            values = (row.case_id, status, "" if row.uncertainty is None else f"{row.uncertainty:.3f}",
                      (row.last_change or "")[:19].replace("T", " "))
            for j, value in enumerate(values):
                item = QTableWidgetItem(value)
                if j == 1:
                    item.setForeground(QColor(STATUS_COLORS.get(row.status, "#ffffff")))
                self.table.setItem(i, j, item)
        if selected:
            self._select_case(selected)

    def selected_case(self) -> str | None:
        row = self.table.currentRow()
        item = self.table.item(row, 0) if row >= 0 else None
        return None if item is None else item.text()

    def _select_case(self, case_id: str) -> None:
        matches = self.table.findItems(case_id, Qt.MatchExactly)
        for item in matches:
            if item.column() == 0:
                self.table.setCurrentCell(item.row(), 0)
                return
