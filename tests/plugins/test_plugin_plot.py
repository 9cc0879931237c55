"""The Train panel's live plot and progress line: what a training step may cost the GUI thread."""

from __future__ import annotations

import math

from qtpy.QtWidgets import QLabel, QVBoxLayout, QWidget

from napari_dinomix._plot import TrainingPlot
from napari_dinomix._status_line import StatusLine

CLASSES = ("spleen", "liver", "left_adrenal_gland")


def _curve_points(curve) -> int:
    x, _y = curve.getData()
    return 0 if x is None else len(x)


def test_steps_redraw_only_the_loss_curves_and_validation_the_dice_curves(qtbot):
    plot = TrainingPlot(redraw_ms=0)
    qtbot.addWidget(plot)
    plot.class_colors = {"background": (0, 0, 0), "spleen": (255, 0, 0), "liver": (0, 255, 0),
                         "left_adrenal_gland": (0, 0, 255)}
    plot.prepare(CLASSES)
    assert set(plot._dice_curves) == {*CLASSES, "mean"}  # built before the run, not mid-training
    assert plot._dice_curves["liver"].opts["pen"].color().getRgb()[:3] == (0, 255, 0)

    plot.add_validation(10, {"spleen": 50.0, "liver": 80.0, "left_adrenal_gland": None}, 65.0)
    calls = {name: 0 for name in plot._dice_curves}
    for name, curve in plot._dice_curves.items():
        original = curve.setData

        def counting(*args, _name=name, _original=original, **kwargs):
            calls[_name] += 1
            return _original(*args, **kwargs)

        curve.setData = counting
    for step in range(11, 31):
        plot.add_step(step, {"total": 1.0 / step, "sup": 0.5, "unl": 0.0})
    assert sum(calls.values()) == 0  # 20 steps, no Dice curve set again
    assert _curve_points(plot._loss_curves["total"]) == 20
    unl = plot._loss_curves["unl"].getData()[1]
    assert all(math.isnan(v) for v in unl)  # log scale: a zero loss is a gap, not -inf

    plot.add_validation(30, {"spleen": 60.0, "liver": 85.0, "left_adrenal_gland": 10.0}, 51.7)
    assert all(count == 1 for count in calls.values())
    assert list(plot.dice["left_adrenal_gland"][:1]) != [None] and math.isnan(plot.dice["left_adrenal_gland"][0])
    assert plot.dice["mean"] == [65.0, 51.7]


def test_loss_curves_are_redrawn_at_most_every_redraw_ms(qtbot):
    plot = TrainingPlot(redraw_ms=60_000)
    qtbot.addWidget(plot)
    for step in range(1, 51):
        plot.add_step(step, {"total": 1.0})
    assert _curve_points(plot._loss_curves["total"]) == 1  # drawn at the first step only
    plot.redraw()
    assert _curve_points(plot._loss_curves["total"]) == 50


def test_the_last_steps_of_a_burst_are_drawn_once_the_interval_has_passed(qtbot):
    plot = TrainingPlot(redraw_ms=100)
    qtbot.addWidget(plot)
    for step in range(1, 21):  # faster than one redraw interval
        plot.add_step(step, {"total": 1.0})
    assert _curve_points(plot._loss_curves["total"]) < 20
    qtbot.waitUntil(lambda: _curve_points(plot._loss_curves["total"]) == 20, timeout=2_000)


def _panel_with(qtbot, widget) -> QWidget:
    panel = QWidget()
    QVBoxLayout(panel).addWidget(widget)
    qtbot.addWidget(panel)
    panel.resize(200, 60)
    panel.show()
    qtbot.waitExposed(panel)
    return panel


def test_status_line_changes_text_without_asking_its_layout_for_room(qtbot):
    long_text = "step 1234 / 5000, ETA 12:34, loss 0.123 " * 4
    line, label = StatusLine("idle"), QLabel("idle")
    line_panel, label_panel = _panel_with(qtbot, line), _panel_with(qtbot, label)
    hint, geometry = line.sizeHint(), line.geometry()
    line.setText(long_text)
    label.setText(long_text)
    qtbot.wait(20)
    assert line.text() == long_text and line.toolTip() == long_text
    assert line.sizeHint() == hint and line.geometry() == geometry and line_panel.width() == 200
    assert label_panel.width() > 200  # what a QLabel does to the panel around it, at every step
    image = line.grab().toImage()
    assert image.width() == line.width()  # paints (elided) without error


def test_log_axis_labels_are_1_2_5_values_and_the_curves_are_named_in_their_colours(qtbot):
    from napari_dinomix._plot import log_ticks

    assert log_ticks(0.3, 6.0) == [0.5, 1.0, 2.0, 5.0]
    assert log_ticks(0.25, 0.4) == [0.2, 0.5]  # none inside: the nearest on each side
    assert log_ticks(1e-4, 10.0) == [1e-4, 1e-3, 1e-2, 0.1, 1.0, 10.0]  # over 3 decades: 1s only
    plot = TrainingPlot(redraw_ms=0)
    qtbot.addWidget(plot)
    empty = [text for _, text in plot.loss_plot.getAxis("left")._tickLevels[0]]
    assert empty and set(empty) <= {"0.1", "0.2", "0.5", "1", "2", "5", "10"}, empty  # no crowded 2..9 before a step
    plot.class_colors = {"liver": (221, 130, 101), "mean": (255, 255, 255)}
    plot.prepare(["liver"])
    for step in range(1, 11):
        plot.add_step(step, {"total": 3.0 / step, "fkd": 0.4})
    title = plot.loss_plot.getPlotItem().titleLabel.text
    assert "total" in title and "fkd" in title and "#81c784" in title  # fkd in its curve's colour
    labels = [text for _, text in plot.loss_plot.getAxis("left")._tickLevels[0]]
    assert labels == ["0.5", "1", "2"]  # 0.3 .. 3
    names = plot.dice_names.text()
    assert names.index("mean") < names.index("liver") and "rgb(221,130,101)" in names
