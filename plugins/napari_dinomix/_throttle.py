"""Pass on the newest of a fast stream of values at most once per interval, the last one included.

Why: a training run sends a step event 3-4 times a second on 2 CPU cores (sample project,
"Quick first model"). Each change shown on screen makes the window repaint, and under
software OpenGL every repaint costs the GUI thread ~10 ms whatever changed
(``benchmarks.gui_step_cost``): at every step that was 18-25 ms of stall 3.5 times a
second, enough to put the 99th percentile of the event loop's lateness at 17-18 ms (goal:
16). Shown once a second, the progress bar, status bar and loss plot change together in one
repaint. The first value of a quiet spell is passed on at once; the values that arrive
within the interval after it collapse into the newest, passed on when the interval ends.
"""

from __future__ import annotations

from typing import Any

from qtpy.QtCore import QObject, QTimer, Signal


class Throttle(QObject):
    """``offer(value)`` many times -> ``passed(value)`` at most every ``interval_ms``."""

    passed = Signal(object)

    def __init__(self, interval_ms: int, parent=None):
        super().__init__(parent)
        self._timer = QTimer(self)
        self._timer.setSingleShot(True)
        self._timer.setInterval(int(interval_ms))
        self._timer.timeout.connect(self._on_timeout)
        self._latest: Any = None
        self._waiting = False

    def offer(self, value: Any) -> None:
        if self._timer.isActive():
            self._latest, self._waiting = value, True
            return
        self._timer.start()
        self.passed.emit(value)

    def flush(self) -> None:
        """Pass on a waiting value now (e.g. the run's last step when it ends)."""
        self._timer.stop()
        if self._waiting:
            value, self._latest, self._waiting = self._latest, None, False
            self.passed.emit(value)

    def drop(self) -> None:
        """Forget a waiting value (e.g. a new run starts)."""
        self._timer.stop()
        self._latest, self._waiting = None, False

    def _on_timeout(self) -> None:
        if self._waiting:
            value, self._latest, self._waiting = self._latest, None, False
            self._timer.start()  # the next value waits a whole interval again
            self.passed.emit(value)
