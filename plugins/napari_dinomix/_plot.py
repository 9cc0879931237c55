"""Live training plot: loss curves and per-class validation Dice, updated from engine events.

Step events only touch the loss curves, at most every ``redraw_ms`` (2 s; the last steps of
a burst are drawn when it has passed; the Train panel records every step and asks for a draw
with its once-a-second progress update, so both share one repaint); the Dice curves (one per class, with markers) are set
again only when a validation arrives. Setting all of them on every redraw cost 11.6 ms of
the GUI thread four times a second on 2 cores (median of 40, the app window under software
OpenGL); drawing the loss curves alone costs ~15 ms there (benchmarks.gui_step_cost), so
they are drawn every 2 s rather than at every step.
"""

from __future__ import annotations

import math
import time

import pyqtgraph as pg
from qtpy.QtCore import Qt, QTimer
from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

LOSS_KEYS = ("total", "sup", "unl", "fkd")  # drawn when present in the step's losses
LOSS_COLORS = ("#f0f0f0", "#4fc3f7", "#ffb74d", "#81c784")


class TrainingPlot(QWidget):
    """Two stacked plots: losses by step (log scale) and Dice (%) by step, one line per class."""

    def __init__(self, parent=None, *, redraw_ms: int = 2000):
        super().__init__(parent)
        self.redraw_ms = redraw_ms
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.loss_plot = pg.PlotWidget(title="losses")
        self.loss_plot.setLogMode(y=True)
        # The curves are named in the title, in their colours: a legend box covered the curves'
        # newest steps. The log axis is labelled 1-2-5 (pyqtgraph's own labels of 0.4..0.9
        # overlapped each other at this height).
        self.loss_plot.setMinimumHeight(150)
        self.dice_plot = pg.PlotWidget()
        self.dice_plot.setTitle("validation Dice (%)", size="9pt")  # as the losses' title
        self.dice_plot.setYRange(0, 100)
        self.dice_plot.setMinimumHeight(150)
        # The classes' colours in a line of text under the plot, not a legend box inside it:
        # 14 entries covered the top of the plot, where the large organs' curves run.
        self.dice_names = QLabel()
        self.dice_names.setTextFormat(Qt.TextFormat.RichText)
        self.dice_names.setWordWrap(True)
        self.dice_names.setStyleSheet("font-size: 8pt; background-color: black; padding: 2px;")  # as the plots
        layout.addWidget(self.loss_plot)
        layout.addWidget(self.dice_plot)
        layout.addWidget(self.dice_names)
        self.class_colors: dict[str, tuple[int, int, int]] = {}
        self._pending = QTimer(self)
        self._pending.setSingleShot(True)
        self._pending.timeout.connect(self._draw_losses)
        self.clear()

    def clear(self) -> None:
        self._pending.stop()
        self.loss_plot.clear()
        self.dice_plot.clear()
        self.steps: list[int] = []
        self.losses: dict[str, list[float]] = {}
        self.dice_steps: list[int] = []
        self.dice: dict[str, list[float]] = {}
        self._loss_curves: dict[str, pg.PlotDataItem] = {}
        self._dice_curves: dict[str, pg.PlotDataItem] = {}
        self._last_draw = 0.0
        self.dice_names.setText("")
        self._label_losses()

    def add_step(self, step: int, losses: dict) -> None:
        """Keep a step's losses and show them (now, or with the next due redraw)."""
        self.record_step(step, losses)
        self.show_steps()

    def record_step(self, step: int, losses: dict) -> None:
        """Keep a step's losses; nothing is drawn (the panel calls ``show_steps`` once a second)."""
        self.steps.append(int(step))
        for key in LOSS_KEYS:
            if key in losses:
                self.losses.setdefault(key, [float("nan")] * (len(self.steps) - 1))
        for key, values in self.losses.items():
            value = float(losses.get(key, float("nan")))
            values.append(value if value > 0 else float("nan"))  # log scale: non-positive terms are gaps

    def show_steps(self) -> None:
        """Draw the recorded steps if ``redraw_ms`` has passed, else when it has."""
        wait = self.redraw_ms / 1000.0 - (time.monotonic() - self._last_draw)
        if wait <= 0:
            self._draw_losses()
        elif not self._pending.isActive():  # the last steps of a burst are drawn too
            self._pending.start(max(1, int(wait * 1000)))

    def add_validation(self, step: int, per_class: dict, mean: float | None) -> None:
        self.dice_steps.append(int(step))
        items = dict(per_class)
        if mean is not None:
            items["mean"] = mean
        for name in items:
            self.dice.setdefault(name, [float("nan")] * (len(self.dice_steps) - 1))
        for name, values in self.dice.items():
            value = items.get(name)
            values.append(float("nan") if value is None else float(value))
        self._draw_dice()

    def redraw(self) -> None:
        """Every curve from the data kept so far."""
        self._draw_losses()
        self._draw_dice()

    def _draw_losses(self) -> None:
        self._pending.stop()
        self._last_draw = time.monotonic()
        for i, (key, values) in enumerate(self.losses.items()):
            curve = self._loss_curves.get(key)
            if curve is None:
                curve = self._loss_curves[key] = self.loss_plot.plot(name=key, pen=pg.mkPen(_loss_color(i, key), width=1.5),
                                                                     connect="finite")
            curve.setData(self.steps, values)
        self._label_losses()

    def _label_losses(self) -> None:
        names = " · ".join(f'<span style="color:{_loss_color(i, key)}">{key}</span>' for i, key in enumerate(self._loss_curves))
        self.loss_plot.setTitle(f"losses  {names}" if names else "losses", size="9pt")
        finite = [v for values in self.losses.values() for v in values if v == v and v > 0]
        if finite:
            ticks = log_ticks(min(finite), max(finite))
        else:  # before the first step: the empty view's decade (pyqtgraph's own labels crowd it)
            low, high = self.loss_plot.getViewBox().viewRange()[1]
            ticks = log_ticks(10.0 ** low, 10.0 ** high)
        self.loss_plot.getAxis("left").setTicks([[(math.log10(v), f"{v:g}") for v in ticks], []])

    def prepare(self, classes) -> None:
        """Build the Dice curves of ``classes`` (names) and the mean before a run starts.

        Building 14 curves and their legend entries blocks the GUI thread for about 0.1 s;
        at Start the user is waiting for the run anyway, at the first validation they may
        be painting.
        """
        for name in (*classes, "mean"):
            self._dice_curve(name)

    def _dice_curve(self, name: str) -> pg.PlotDataItem:
        curve = self._dice_curves.get(name)
        if curve is None:
            color = self.class_colors.get(name, (255, 255, 255))
            width = 3 if name == "mean" else 1.5
            curve = self._dice_curves[name] = self.dice_plot.plot(
                name=name, pen=pg.mkPen(color, width=width), symbol="o", symbolSize=4,
                symbolBrush=color, connect="finite")
            self._name_dice_curves()
        return curve

    def _name_dice_curves(self) -> None:
        def entry(name: str) -> str:
            r, g, b = [int(c) for c in self.class_colors.get(name, (255, 255, 255))[:3]]
            text = f"<b>{name}</b>" if name == "mean" else name
            return f'<span style="color:rgb({r},{g},{b})">■&nbsp;{text}</span>'

        names = sorted(self._dice_curves, key=lambda n: n != "mean")  # the mean first
        self.dice_names.setText("&nbsp; ".join(entry(n) for n in names))  # wraps between entries only

    def _draw_dice(self) -> None:
        for name, values in self.dice.items():
            self._dice_curve(name).setData(self.dice_steps, values)


def _loss_color(index: int, key: str) -> str:
    return LOSS_COLORS[LOSS_KEYS.index(key)] if key in LOSS_KEYS else LOSS_COLORS[index % len(LOSS_COLORS)]


def log_ticks(low: float, high: float) -> list[float]:
    """Axis labels for a log scale from ``low`` to ``high`` (> 0): the 1-2-5 values in between,
    thinned to 1s alone over more than three decades, and the two nearest 1-2-5 values
    outside when fewer than two fall in between."""
    low, high = min(low, high), max(low, high)
    steps = (1.0,) if math.log10(high / low) > 3 else (1.0, 2.0, 5.0)
    values = [m * 10.0 ** e for e in range(math.floor(math.log10(low)) - 1, math.ceil(math.log10(high)) + 2)
              for m in steps]
    inside = [v for v in values if low <= v <= high]
    if len(inside) >= 2:
        return inside
    below = [v for v in values if v < low][-1:]
    above = [v for v in values if v > high][:1]
    return below + inside + above
