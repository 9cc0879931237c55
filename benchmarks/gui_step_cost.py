"""What each kind of training event costs the GUI thread, in the real app window.

    xvfb-run -a -s "-screen 0 1920x1080x24" python -m benchmarks.gui_step_cost --json benchmarks/results/gui_step_cost.json

The responsiveness benchmark (``gui_responsiveness``) says how late the event loop ran while
a model trained; this one says which handler made it late. It opens the app on a sample
project (1500 x 950 window, Train tab shown), then times, 40 times each, the handling of one
event plus the repaint it causes (``processEvents`` until the window is drawn):

* ``step``: a ``StepEvent`` through the app's ``step`` signal (the loss plot records it;
  nothing is drawn); ``progress_with_plot`` / ``progress_without_plot``: the once-a-second
  ``progress`` signal (progress bar with ETA and loss, status bar, and the loss plot when its
  2 s are up), and ``loss_plot_draw``, the loss plot's draw alone;
* ``progress_line`` / ``qlabel``: the Train panel's progress text changed, as the panel's
  ``StatusLine`` and, for comparison, as a plain ``QLabel`` in the same place;
* ``validation``: a ``ValidationEvent``'s curves (13 organs and the mean);
* ``prepare_curves``: building those curves, as Start does (once);
* ``show_prediction``: a stored prediction replacing the empty map of the open case (the
  first overlay; its layer is reused), then replacing an unedited prediction (reused too),
  then replacing a corrected one (kept, locked; a new layer);
* ``full_ct_512x512x300``: the same app with a 512 x 512 x 300 CT open (``measure_full_ct``);
* ``canvas_window``: a status-bar message and a pan of the view, with the napari canvas in
  its own native window (the app's default on X11) and sharing the main window's
  composition (Qt's default), ``measure_canvas_window``.

Medians and maxima in ms. Under Xvfb every OpenGL draw goes through Mesa's software
renderer, so these are upper bounds for a machine with a GPU driver.
"""

from __future__ import annotations

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

import numpy as np


def _timed(app, action, repeat: int = 40, pause_s: float = 0.02) -> dict:
    values = []
    for i in range(repeat):
        start = time.perf_counter()
        action(i)
        app.processEvents()
        values.append((time.perf_counter() - start) * 1000.0)
        time.sleep(pause_s)
    values.sort()
    return {"median_ms": round(values[len(values) // 2], 1), "max_ms": round(values[-1], 1), "n": repeat}


def measure() -> dict:
    from napari.qt import get_qapp
    from qtpy.QtWidgets import QLabel

    from dinomix_core.engine.events import StepEvent
    from dinomix_core.project import Project
    from dinomix_core.project.sample import create_sample_project

    work = Path(tempfile.mkdtemp(prefix="dinomix-gui-step-"))
    os.environ.setdefault("DINOMIX_CONFIG_DIR", str(work / "config"))
    root = create_sample_project(work / "project", cases=4, labeled=2)
    app = get_qapp()
    from dinomix_app.main_window import MainWindow

    window = MainWindow(root)
    window.resize(1500, 950)
    window.show()
    session = window.session
    case = next(r.case_id for r in session.case_rows() if r.status == "unlabeled")
    session.open_case(case)
    panel = window.panel.train_panel
    window.panel.tabs.setCurrentWidget(panel)
    _timed(app, lambda i: None, 50, 0.01)  # settle
    plot = panel.plot
    plot.class_colors = panel._class_colors()
    names = list(plot.class_colors)[1:]
    out = {"prepare_curves": _timed(app, lambda i: (plot.clear(), plot.prepare(names)), 5)}
    plot.redraw_ms = 0
    for step in range(1, 400):
        plot.add_step(step, {"total": 1.0 / step, "sup": 0.5, "unl": 0.1, "fkd": 0.2})
    plot.add_validation(100, {n: 50.0 for n in names}, 50.0)
    counter = iter(range(400, 10_000))

    def event(i):
        return StepEvent(next(counter), 5000, {"total": 0.5, "sup": 0.3, "unl": 0.1, "fkd": 0.1}, 0.01, 0.4, 1234.0 - 7 * i)

    out["step"] = _timed(app, lambda i: window.jobs.step.emit(event(i)))  # every step: recorded, nothing drawn
    out["progress_with_plot"] = _timed(app, lambda i: window.jobs.progress.emit(event(i)))  # every 2nd second
    plot.redraw_ms = 10**9
    out["progress_without_plot"] = _timed(app, lambda i: window.jobs.progress.emit(event(i)))  # the other seconds
    out["loss_plot_draw"] = _timed(app, lambda i: plot._draw_losses())
    out["progress_line"] = _timed(app, lambda i: panel.status.setText(f"step {700 + i} / 5000, ETA 12:{i % 60:02d}"))
    label = QLabel("idle")
    panel.layout().insertWidget(panel.layout().indexOf(panel.status), label)
    panel.status.hide()
    out["qlabel"] = _timed(app, lambda i: label.setText(f"step {700 + i} / 5000, ETA 12:{i % 60:02d}"))
    label.deleteLater()
    panel.status.show()
    out["validation"] = _timed(app, lambda i: plot.add_validation(200 + i, {n: 60.0 + i % 7 for n in names}, 60.0))

    shape = session.image_layer.data.shape
    revisions = []
    with Project.open(root) as project:
        for k in range(3):
            run = project.start_run({"note": "GUI step-cost benchmark"}, "supervised", "none")
            labels = np.zeros(shape, np.uint8)
            labels[shape[0] // 4: shape[0] // 2, 20:60, 20:60] = 1 + k
            revisions.append(project.add_prediction(run, case, labels, 0.5, None))
            project.finish_run(run, "completed")
    for name, revision in zip(("show_prediction_first", "show_prediction_next", "show_prediction_over_edits"), revisions):
        if name == "show_prediction_over_edits":  # a corrected prediction is kept, locked: a new layer
            session.labels_layer.paint((shape[0] // 3, 30, 30), 9, refresh=True)  # 9: not in the shown map
        out[name] = _timed(app, lambda i, r=revision: session.show_prediction(case, r), 1)
        _timed(app, lambda i: None, 20, 0.01)
    window.close()
    return out


def measure_full_ct() -> dict:
    """A 512 x 512 x 300 CT open in the app: what a prediction arriving mid-training costs.

    ``prediction_read``: reading the stored prediction (hash check, gzip, SimpleITK), done in
    a worker thread since 2026-12-05; ``prediction_shown``: the GUI thread's part, the read
    labels replacing the unedited earlier prediction in place (plus the repaint);
    ``uncertainty_read`` (worker thread too) and ``prediction_shown_with_uncertainty``: the
    same with *Show uncertainty* ticked (the overlay layer is built on the GUI thread);
    ``class_counts``: the Classes panel's recount (worker thread), with ``label_counts`` and
    with the ``np.bincount`` it replaced; ``open_case_read_ahead``: opening the case (again)
    once read ahead, its layers refilled, as *Open case* and *Next suggested* do after the
    worker thread's read; ``open_case``: the same without the read ahead (the GUI thread
    reads); ``open_case_read_ahead_new_layers``: read ahead, into new layers (how every case
    opened before 2026-12-05 evening). Each with its repaint. ``accept_after_strokes``: a
    stroke, then Accept at once (the final label written on the GUI thread; it was a draft
    flush and then the label, 1.4 s, before 2026-12-05 evening).
    """
    from napari.qt import get_qapp

    from benchmarks.gui_memory import make_big_project
    from dinomix_core.io.label_counts import label_counts
    from dinomix_core.project import Project
    from dinomix_core.project.revisions import read_revision_file
    from dinomix_core.project.runs import read_uncertainty_levels

    work = Path(tempfile.mkdtemp(prefix="dinomix-gui-step-ct-"))
    root = make_big_project(work)
    app = get_qapp()
    from dinomix_app.heap import freeze_startup_heap
    from dinomix_app.main_window import MainWindow

    window = MainWindow(root)  # opens the CT with its stored prediction
    freeze_startup_heap()
    window.resize(1500, 950)
    window.show()
    _timed(app, lambda i: None, 50, 0.01)
    session = window.session
    case, shape = session.case_id, session.image_layer.data.shape
    revisions = []
    with Project.open(root) as project:
        for k in range(3):
            run = project.start_run({"note": "GUI step-cost benchmark"}, "supervised", "none")
            labels = np.zeros(shape, np.uint8)
            labels[100:200, 150 + 20 * k: 300, 150:300] = 6
            uncertainty = np.where(labels > 0, 0.6, 0.05).astype(np.float32)
            revisions.append(project.add_prediction(run, case, labels, 0.5, None, uncertainty_map=uncertainty))
            project.finish_run(run, "completed")
        revs = [project.revision(r) for r in revisions]
        files = [project.prediction_uncertainty_file(r) for r in revisions]
    read = [read_revision_file(r) for r in revs]
    out = {"prediction_read": _timed(app, lambda i: read_revision_file(revs[i]), 3)}
    out["prediction_shown"] = _timed(app, lambda i: session.show_prediction(case, revisions[i], labels=read[i]), 3)
    levels = [read_uncertainty_levels(*f) for f in files]
    out["uncertainty_read"] = _timed(app, lambda i: read_uncertainty_levels(*files[i]), 3)
    session.uncertainty_wanted = True  # the Predict tab's "Show uncertainty" ticked
    out["prediction_shown_with_uncertainty"] = _timed(
        app, lambda i: session.show_prediction(case, revisions[i], labels=read[i], uncertainty=levels[i]), 3)
    data = np.asarray(session.labels_layer.data)
    out["class_counts"] = _timed(app, lambda i: label_counts(data, 14), 5)
    session.uncertainty_wanted = False

    def read_ahead(i):
        session.prefetch_case(case)
        wait_until = time.monotonic() + 30
        while session.read_ahead.held_case != case and time.monotonic() < wait_until:
            app.processEvents()
            time.sleep(0.01)

    def opening(i, *, new_layers: bool, ahead: bool):
        if ahead:
            read_ahead(i)
        if new_layers:
            session.close_case()
        start = time.perf_counter()
        session.open_case(case)
        app.processEvents()
        return (time.perf_counter() - start) * 1000.0

    def accept(i):
        session.labels_layer.paint((150, 250 + i, 250), 3 + i % 5, refresh=True)  # a pending autosave
        return session.accept()

    out["accept_after_strokes"] = _timed(app, accept, 3)
    for name, new_layers, ahead in (("open_case_read_ahead", False, True), ("open_case", False, False),
                                    ("open_case_read_ahead_new_layers", True, True)):
        values = sorted(opening(i, new_layers=new_layers, ahead=ahead) for i in range(3))
        out[name] = {"median_ms": round(values[1], 1), "max_ms": round(values[-1], 1), "n": 3}
    out["class_counts_np_bincount"] = _timed(app, lambda i: np.bincount(data.reshape(-1), minlength=14), 5)
    window.panel.shutdown()
    window.close()
    return out


def measure_canvas_window() -> dict:
    """The price of composing the whole window through OpenGL, with and without a native canvas."""
    from napari.qt import get_qapp

    import dinomix_app.main_window as main_window
    from dinomix_core.project.sample import create_sample_project

    work = Path(tempfile.mkdtemp(prefix="dinomix-gui-canvas-"))
    root = create_sample_project(work / "project", cases=3, labeled=1)
    app = get_qapp()
    own_window = main_window.give_canvas_its_own_window
    out = {}
    try:
        for name, give in (("own_window", own_window), ("shared_composition", lambda canvas: False)):
            main_window.give_canvas_its_own_window = give
            window = main_window.MainWindow(root)
            window.resize(1500, 950)
            window.show()
            window.session.open_case(window.session.case_rows()[-1].case_id)
            _timed(app, lambda i: None, 50, 0.01)
            camera = window.viewer.camera

            def pan(i):
                center = list(camera.center)
                center[-1] += 3 if i % 2 else -3
                camera.center = tuple(center)

            out[name] = {"status_bar_message": _timed(app, lambda i: window.statusBar().showMessage(f"step {i}")),
                         "pan": _timed(app, pan)}
            window.panel.shutdown()
            window.close()
            _timed(app, lambda i: None, 20, 0.01)
    finally:
        main_window.give_canvas_its_own_window = own_window
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    args = parser.parse_args(argv)
    import platform

    doc = {"events": measure(), "full_ct_512x512x300": measure_full_ct(), "canvas_window": measure_canvas_window(),
           "window": [1500, 950], "cpu_cores": os.cpu_count(), "platform": platform.platform(),
           "gl": "Mesa llvmpipe under Xvfb" if os.environ.get("DISPLAY") else "unknown",
           "measured_at": time.strftime("%Y-%m-%d %H:%M")}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    from dinomix_app.cli import leave

    return leave(0)


if __name__ == "__main__":
    raise SystemExit(main())
