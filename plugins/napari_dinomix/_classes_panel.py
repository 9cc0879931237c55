"""Classes panel: the project's class map with fixed colours, per-class volume, CT windows."""

from __future__ import annotations

from qtpy.QtCore import QTimer
from qtpy.QtGui import QColor, QPixmap, QIcon
from qtpy.QtWidgets import (QAbstractItemView, QGridLayout, QGroupBox, QHeaderView, QPushButton, QTableWidget,
                            QTableWidgetItem, QVBoxLayout, QWidget)

from dinomix_core.io.label_counts import label_counts
from napari_dinomix._newest_only import NewestOnly
from napari_dinomix._layers import WINDOW_NAMES


def color_icon(rgb) -> QIcon:
    pixmap = QPixmap(14, 14)
    pixmap.fill(QColor(*[int(c) for c in rgb[:3]]))
    return QIcon(pixmap)


class ClassesPanel(QWidget):
    """Click a class to paint with it; volumes (mL) follow the labels as they change."""

    def __init__(self, session, parent=None):
        super().__init__(parent)
        self.session = session
        layout = QVBoxLayout(self)
        self.table = QTableWidget(0, 3)
        self.table.setHorizontalHeaderLabels(["Value", "Class", "Volume (mL)"])
        self.table.setEditTriggers(QAbstractItemView.NoEditTriggers)
        self.table.setSelectionBehavior(QAbstractItemView.SelectRows)
        self.table.setSelectionMode(QAbstractItemView.SingleSelection)
        self.table.verticalHeader().setVisible(False)
        self.table.horizontalHeader().setSectionResizeMode(QHeaderView.ResizeToContents)
        self.table.horizontalHeader().setStretchLastSection(True)
        layout.addWidget(self.table)
        box = QGroupBox("CT window")
        grid = QGridLayout(box)
        self.window_buttons = {}
        for i, name in enumerate(WINDOW_NAMES):
            button = QPushButton(name)
            button.clicked.connect(lambda _=False, n=name: self.session.set_window(n))
            grid.addWidget(button, i // 3, i % 3)
            self.window_buttons[name] = button
        layout.addWidget(box)

        # Volumes are recounted shortly after edits stop, in a worker thread (_newest_only).
        self._counter = NewestOnly("class-counts", self)
        self._counter.done.connect(lambda counts, _tag: self._show_counts(counts))
        self._counter.failed.connect(lambda text, _tag: session.message.emit("error", f"Counting class volumes failed: {text}"))
        self._recount = QTimer(self)
        self._recount.setSingleShot(True)
        self._recount.setInterval(500)
        self._recount.timeout.connect(self.update_volumes)
        self._layer = None
        self.table.currentCellChanged.connect(lambda row, *_: self._pick(row))
        session.project_changed.connect(lambda _root: self.fill())
        session.labels_changed.connect(self._on_layer)
        self.fill()

    def fill(self) -> None:
        label_map = self.session.label_map
        self.table.setRowCount(0)
        if label_map is None:
            return
        self.table.setRowCount(label_map.num_classes - 1)
        for row, value in enumerate(range(1, label_map.num_classes)):
            value_item = QTableWidgetItem(str(value))
            value_item.setIcon(color_icon(label_map.colors[value]))
            self.table.setItem(row, 0, value_item)
            self.table.setItem(row, 1, QTableWidgetItem(label_map.display_name(value)))
            self.table.setItem(row, 2, QTableWidgetItem(""))
        self.update_volumes()

    def _pick(self, row: int) -> None:
        layer = self.session.labels_layer
        if layer is not None and row >= 0:
            layer.selected_label = row + 1
            if layer.mode not in ("paint", "fill", "erase"):
                layer.mode = "paint"

    def select_class(self, value: int) -> None:
        self.table.setCurrentCell(int(value) - 1, 1)

    def _on_layer(self, layer) -> None:
        if self._layer is not None:
            for emitter in (self._layer.events.paint, self._layer.events.data, self._layer.events.labels_update):
                try:
                    emitter.disconnect(self._schedule)
                except (TypeError, ValueError, RuntimeError):
                    pass
            try:
                self._layer.events.selected_label.disconnect(self._follow_selection)
            except (TypeError, ValueError, RuntimeError):
                pass
        self._layer = layer
        if layer is not None:
            for emitter in (layer.events.paint, layer.events.data, layer.events.labels_update):
                emitter.connect(self._schedule)
            layer.events.selected_label.connect(self._follow_selection)
            self._follow_selection()
        self.update_volumes()

    def _follow_selection(self, *_args) -> None:
        layer = self._layer
        if layer is not None and 0 < int(layer.selected_label) <= self.table.rowCount():
            self.table.blockSignals(True)
            self.table.setCurrentCell(int(layer.selected_label) - 1, 1)
            self.table.blockSignals(False)

    def _schedule(self, *_args) -> None:
        self._recount.start()

    def update_volumes(self) -> None:
        """Recount the shown labels' classes in the background; the table follows when done."""
        layer, label_map = self.session.labels_layer, self.session.label_map
        if layer is None or label_map is None:
            self._counter.forget()
            self._show_counts(None)
        else:
            self._counter.request(label_counts, layer.data, label_map.num_classes)

    def _show_counts(self, counts) -> None:
        volumes = {} if counts is None else self.session.class_volumes_ml(counts)
        for row in range(self.table.rowCount()):
            name_item = self.table.item(row, 1)
            label_map = self.session.label_map
            name = label_map.names[row + 1] if label_map is not None else name_item.text()
            ml = volumes.get(name)
            self.table.item(row, 2).setText("" if ml is None else f"{ml:.1f}")
