"""A one-line text readout whose changes never re-lay out the panel around it.

The Train panel's status text changes at every stage of a run (tokens, validation,
prediction of each case). As a ``QLabel`` each change asked its layout for new geometry and
the panel was laid out again: on 2 cores under software OpenGL, 20.3 ms a change against
8.5 ms for this widget (median of 40 in the app window, 2026-12-05; py-spy put the
difference in ``QLayout::activate`` and in repainting the live plot beside it;
``benchmarks.gui_step_cost`` keeps measuring both). This widget only repaints itself: its
size hint is one line of text, whatever the text.
"""

from __future__ import annotations

from qtpy.QtCore import QSize, Qt
from qtpy.QtGui import QPainter
from qtpy.QtWidgets import QSizePolicy, QWidget


class StatusLine(QWidget):
    """Elided single-line text; ``setText`` repaints, it does not resize."""

    def __init__(self, text: str = "", parent=None):
        super().__init__(parent)
        self._text = text
        self.setSizePolicy(QSizePolicy.Policy.Ignored, QSizePolicy.Policy.Fixed)
        self.setFixedHeight(self.fontMetrics().height() + 4)

    def text(self) -> str:
        return self._text

    def setText(self, text: str) -> None:  # noqa: N802 (Qt naming, drop-in for QLabel)
        if text != self._text:
            self._text = text
            self.setToolTip(text)
            self.update()

    def sizeHint(self) -> QSize:  # noqa: N802
        return QSize(self.fontMetrics().averageCharWidth() * 30, self.height())

    def paintEvent(self, _event) -> None:  # noqa: N802
        painter = QPainter(self)
        painter.setPen(self.palette().color(self.foregroundRole()))
        rect = self.rect().adjusted(2, 0, -2, 0)
        shown = self.fontMetrics().elidedText(self._text, Qt.TextElideMode.ElideRight, rect.width())
        painter.drawText(rect, int(Qt.AlignmentFlag.AlignVCenter | Qt.AlignmentFlag.AlignLeft), shown)
        painter.end()
