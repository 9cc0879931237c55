"""GUI responsiveness while a model trains, time to the first overlay, and memory of a full CT.

    xvfb-run -a -s "-screen 0 1920x1080x24" python -m benchmarks.gui_responsiveness --json benchmarks/results/gui.json

What it does, in the real app (``dinomix_app.MainWindow``, the plugin's widgets, real worker
processes):

1. opens a phantom project (6 small cases, 2 labeled) on an unlabeled case;
2. baseline: for ``--baseline-s`` seconds, pans, zooms, changes slices and paints strokes
   programmatically (every 50 ms) while a 10 ms QTimer probe records how late each tick
   fires (lateness = actual gap - 10 ms);
3. clicks Start with the Train panel's fastest settings ("Quick first model", the default
   DINO-Mix method; without DINOv3 weights the teacher is random, and the JSON says so),
   while the user only watches, as a clinician waiting for the first overlay does, and
   records the time from the click to the first prediction overlay of the open case
   (``first_overlay_s``; skip with ``--no-watch``);
3b. clicks Start again with the same settings (the teacher-token cache emptied again, so both
   runs start cold) and keeps interacting (4 s on, 4 s off): the lateness for the whole run
   and ``first_overlay_interacting_s``. The two first-overlay figures differ because software
   OpenGL (no GPU here) takes one of the two cores while the user pans, slowing training;
4. in a fresh process (``benchmarks.gui_memory``), the peak RSS of the app with a 512 x 512 x 300 CT open
   and a stored model revision plus its uncertainty shown as layers. Those labels come from an
   intensity threshold (a stand-in: predicting a CT this size with a trained model is the
   prediction-speed benchmark's job); memory depends on the layers, not on the model.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


class StallProbe:
    """A 10 ms QTimer; each tick's lateness is how long the event loop could not run it.

    Each tick is tagged with whether the simulated user was interacting at the time, so the
    app's own main-thread cost (event pipe, plots, layers) can be told apart from the cost of
    rendering the interaction (software OpenGL on a machine without a GPU).
    """

    def __init__(self, interval_ms: int = 10, interacting=lambda: False):
        from qtpy.QtCore import QTimer

        self.interval = interval_ms / 1000.0
        self.interacting = interacting
        self.timer = QTimer()
        self.timer.setInterval(interval_ms)
        self.timer.timeout.connect(self._tick)
        self.last = None
        self.lateness: list[float] = []
        self.tags: list[bool] = []

    def start(self) -> None:
        self.last = time.perf_counter()
        self.lateness = []
        self.tags = []
        self.timer.start()

    def stop(self) -> list[float]:
        self.timer.stop()
        return self.lateness

    def split(self) -> tuple[list[float], list[float]]:
        """(lateness while interacting, lateness while not)."""
        on = [v for v, t in zip(self.lateness, self.tags) if t]
        off = [v for v, t in zip(self.lateness, self.tags) if not t]
        return on, off

    def _tick(self) -> None:
        now = time.perf_counter()
        self.lateness.append(max(0.0, now - self.last - self.interval) * 1000.0)
        self.tags.append(bool(self.interacting()))
        self.last = now


class StallTracer:
    """Samples the main thread's Python stack whenever the probe is late by more than ``threshold_ms``.

    A background thread looks every 25 ms; while a stall lasts it records where the main
    thread is, keyed by the innermost frame of the product's own code and the innermost
    frame overall. The totals say which code the long stalls come from.
    """

    OURS = ("dinomix_core", "napari_dinomix", "dinomix_app", "benchmarks")

    def __init__(self, probe: StallProbe, threshold_ms: float = 100.0, period_s: float = 0.025):
        import threading

        self.probe = probe
        self.threshold = threshold_ms / 1000.0
        self.period = period_s
        self.main_id = threading.main_thread().ident
        self.samples: dict[str, float] = {}
        self.long: list[dict] = []  # stalls of 500 ms or more: when, and what every thread was doing
        self.t0 = time.perf_counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="stall-tracer", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> list[tuple[str, float]]:
        self._stop.set()
        self._thread.join(1.0)
        top = sorted(self.samples.items(), key=lambda kv: -kv[1])[:10]
        return [(where, round(ms)) for where, ms in top]

    def _run(self) -> None:
        import traceback

        while not self._stop.wait(self.period):
            last = self.probe.last
            if last is None or not self.probe.timer.isActive():
                continue
            if time.perf_counter() - last < self.threshold:
                continue
            frame = sys._current_frames().get(self.main_id)
            if frame is None:
                continue
            stack = traceback.extract_stack(frame)
            ours = [f for f in stack if any(part in f.filename for part in self.OURS)]
            inner = stack[-1]
            mine = ours[-1] if ours else None
            key = (f"{_short(mine.filename)}:{mine.lineno} {mine.name}" if mine else "(no product frame)") + \
                f" <- {_short(inner.filename)}:{inner.lineno} {inner.name}"
            self.samples[key] = self.samples.get(key, 0.0) + self.period * 1000.0
            late = time.perf_counter() - last
            if late >= 0.5 and (not self.long or self.long[-1]["since"] != last):
                others = {}
                for ident, other in sys._current_frames().items():
                    if ident != self.main_id and ident != threading_ident():
                        inner = traceback.extract_stack(other)[-1]
                        others[str(ident)] = f"{_short(inner.filename)}:{inner.lineno} {inner.name}"
                self.long.append({"since": last, "at_s": round(last - self.t0, 1), "main": key, "others": others})


def threading_ident() -> int:
    import threading

    return threading.get_ident()


def _short(filename: str) -> str:
    parts = Path(filename).parts
    return "/".join(parts[-3:])


class Interaction:
    """What a user does meanwhile: pan, zoom, scroll slices, paint strokes (every 50 ms)."""

    def __init__(self, window):
        from qtpy.QtCore import QTimer

        self.window = window
        viewer = window.viewer
        image = window.session.image_layer
        self.scratch = viewer.add_labels(np.zeros(image.data.shape, np.uint8), name="scratch strokes",
                                         scale=image.scale, translate=image.translate, opacity=0.4,
                                         units=image.units, axis_labels=image.axis_labels)
        window.session.viewer.layers.selection.active = window.session.labels_layer
        self.i = 0
        self.timer = QTimer()
        self.timer.setInterval(50)
        self.timer.timeout.connect(self._act)

    def _act(self) -> None:
        viewer = self.window.viewer
        self.i += 1
        k = self.i % 40
        center = list(viewer.scene.camera.center)
        center[-1] += 2.0 if k < 20 else -2.0
        viewer.scene.camera.center = tuple(center)
        viewer.scene.camera.zoom *= 1.01 if k < 20 else 1 / 1.01
        step = list(viewer.dims.current_step)
        nz = self.scratch.data.shape[0]
        step[0] = (step[0] + (1 if k < 20 else -1)) % nz
        viewer.dims.current_step = tuple(step)
        z, y, x = step[0], 30 + (self.i * 3) % 40, 30 + (self.i * 5) % 40
        self.scratch.paint((z, y, x), 1 + self.i % 5, refresh=True)


def stats(lateness: list[float]) -> dict:
    values = np.asarray(lateness or [0.0])
    return {"max_ms": round(float(values.max()), 1), "p99_ms": round(float(np.percentile(values, 99)), 1),
            "p50_ms": round(float(np.percentile(values, 50)), 2), "ticks": int(values.size)}


def wait(app, seconds: float, until=None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.002)
    return until is None


def responsiveness(args) -> dict:
    from napari.qt import get_qapp

    from dinomix_core.project.sample import create_sample_project

    work = Path(tempfile.mkdtemp(prefix="dinomix-gui-bench-"))
    os.environ.setdefault("DINOMIX_CONFIG_DIR", str(work / "config"))
    os.environ.setdefault("DINOMIX_CACHE_DIR", str(work / "cache"))
    project = create_sample_project(work / "project", cases=args.cases, labeled=2)
    app = get_qapp()
    from dinomix_app.heap import freeze_startup_heap
    from dinomix_app.main_window import MainWindow

    window = MainWindow(project)
    freeze_startup_heap()  # as `dinomix-app` does after building its window
    window.resize(1500, 950)
    window.show()
    window.start_worker_standby()  # as `dinomix-app` does once its window is up
    wait(app, 0.5)
    renderer = gl_renderer(window)
    session = window.session
    unlabeled = [r.case_id for r in session.case_rows() if r.status == "unlabeled"]
    session.open_case(unlabeled[0])
    wait(app, 2.0)
    interaction = Interaction(window)
    wait(app, 1.0)  # its scratch layer's first render is not part of "idle"
    probe = StallProbe(interacting=interaction.timer.isActive)

    probe.start()
    wait(app, args.baseline_s / 2)
    idle = stats(probe.stop())
    interaction.timer.start()
    probe.start()
    wait(app, args.baseline_s)
    baseline = stats(probe.stop())

    panel = window.panel.train_panel
    panel.preset.setCurrentText("Quick first model")
    panel.device.setCurrentIndex(max(0, panel.device.findData(args.device)))
    if args.steps:
        panel.steps.setValue(args.steps)
    teacher = panel.teacher.currentData()
    interaction.timer.stop()
    watching = None if args.no_watch else _watching_run(app, window, panel, args)
    interaction.timer.start()
    shutil.rmtree(session.project.cache_dir / "tokens", ignore_errors=True)
    wait(app, 8.0)  # the app's next standby worker comes up
    tracer = StallTracer(probe)
    timeline: list[tuple[float, str]] = []
    seen: set[str] = set()

    def on_stage(event) -> None:
        if event.stage not in seen or event.done == 0:
            seen.add(event.stage)
            timeline.append((round(time.perf_counter() - clicked, 1), f"{event.stage}: {event.message}"))

    window.jobs.stage.connect(on_stage)
    window.jobs.step.connect(lambda e: (e.step in (1, 50, 100, 150)) and timeline.append(
        (round(time.perf_counter() - clicked, 1), f"step {e.step}")))
    probe.start()
    tracer.start()
    clicked = time.perf_counter()
    panel.start_button.click()
    first_overlay = None
    # The user interacts for 4 s, then watches for 4 s, and so on: the quiet spans measure the
    # app's own main-thread work while training, without the cost of rendering the interaction.
    from qtpy.QtCore import QTimer

    toggle = QTimer()
    toggle.setInterval(4000)
    toggle.timeout.connect(lambda: interaction.timer.stop() if interaction.timer.isActive() else interaction.timer.start())
    toggle.start()

    shown_before = session.labels_layer.name if session.labels_layer is not None else None
    if wait(app, args.timeout_s, lambda: _new_overlay(session, shown_before)):
        first_overlay = time.perf_counter() - clicked
    wait(app, args.timeout_s, lambda: not window.jobs.training)
    toggle.stop()
    during = stats(probe.stop())
    stalls = tracer.stop()
    long_stalls = [{k: v for k, v in item.items() if k != "since"} for item in tracer.long]
    interacting, quiet = probe.split()
    interaction.timer.stop()
    shot = work / "train_tab.png"
    window.panel.tabs.setCurrentWidget(panel)
    wait(app, 1.0)
    window.grab().save(str(shot))
    log = panel.log.toPlainText()
    window.panel.shutdown()
    window.close()
    return {
        "idle": idle, "baseline": baseline, "training": during,
        "training_interacting": stats(interacting), "training_quiet": stats(quiet), "stall_sources": stalls,
        "long_stalls": long_stalls, "timeline": timeline, "first_overlay_interacting_s": None if first_overlay is None else round(first_overlay, 1),
        "watching": watching,
        "first_overlay_s": None if watching is None else watching["first_overlay_s"],
        "training_state": window.jobs.state, "teacher": "random (no DINOv3 weights installed)" if teacher == "random" else teacher,
        "settings": {"preset": "Quick first model", "method": panel.method.currentText(), "steps": panel.steps.value(),
                     "device": args.device, "cases": args.cases, "labeled": 2, "phantom_size": "small",
                     "probe_interval_ms": 10, "interaction": "pan + zoom + slice change + paint stroke every 50 ms",
                     "worker_threads": "all cores, OpenMP passive wait"},
        "screenshot": str(shot), "log_tail": log.splitlines()[-6:], "gl_renderer": renderer,
    }


def _new_overlay(session, shown_before: str | None) -> bool:
    """A run's prediction of the open case is on screen, and it is not the one shown before."""
    layer = session.labels_layer
    return layer is not None and "prediction run-" in layer.name and layer.name != shown_before


def _watching_run(app, window, panel, args) -> dict:
    """Start -> first overlay of the same settings with no interaction: the user waits and watches.

    The project is fresh, as at a user's first click: no teacher tokens cached, no model yet.
    The interaction timer is stopped; the probe still records the event loop's lateness.
    """
    session = window.session
    probe = StallProbe()
    shown_before = session.labels_layer.name if session.labels_layer is not None else None
    timeline: list[tuple[float, str]] = []

    def on_stage(event) -> None:
        if event.done == 0 or not any(event.stage in line for _, line in timeline):
            timeline.append((round(time.perf_counter() - clicked, 1), f"{event.stage}: {event.message}"))

    window.jobs.stage.connect(on_stage)
    probe.start()
    clicked = time.perf_counter()
    panel.start_button.click()
    first = None
    if wait(app, args.timeout_s, lambda: _new_overlay(session, shown_before)):
        first = round(time.perf_counter() - clicked, 1)
    wait(app, args.timeout_s, lambda: not window.jobs.training)
    done = round(time.perf_counter() - clicked, 1)
    window.jobs.stage.disconnect(on_stage)
    return {"first_overlay_s": first, "run_s": done, "stalls": stats(probe.stop()), "timeline": timeline,
            "training_state": window.jobs.state}


def gl_renderer(window) -> str:
    """The OpenGL renderer the viewer's canvas draws with ("llvmpipe ..." is Mesa's software GL)."""
    from vispy.gloo import gl

    try:
        window.qt_viewer.canvas.native.makeCurrent()
        return f"{gl.glGetParameter(gl.GL_RENDERER)} | OpenGL {gl.glGetParameter(gl.GL_VERSION)}"
    except Exception as exc:  # a report without the renderer beats no report
        return f"unknown ({exc})"


def machine() -> dict:
    import torch

    return {"cpu_cores": os.cpu_count(), "platform": platform.platform(), "python": platform.python_version(),
            "torch": torch.__version__, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--cases", type=int, default=6)
    parser.add_argument("--steps", type=int, default=0, help="override the Quick preset's step count")
    parser.add_argument("--baseline-s", type=float, default=15.0)
    parser.add_argument("--timeout-s", type=float, default=900.0)
    parser.add_argument("--memory-only", action="store_true", help="only the memory measurement")
    parser.add_argument("--skip-memory", action="store_true")
    parser.add_argument("--no-watch", action="store_true", help="skip the second run, where the user only watches")
    args = parser.parse_args(argv)
    from benchmarks.gui_memory import measure_memory  # it uses this module's wait(): imported here
    previous = json.loads(args.json.read_text()) if args.json and args.json.exists() else {}
    if args.memory_only:  # into the existing JSON, the other figures kept
        mem = measure_memory()
        print(json.dumps(mem, indent=1))
        if args.json:
            _write(args.json, {**previous, "memory": mem, "memory_measured_at": time.strftime("%Y-%m-%d %H:%M")})
        return _leave(0)
    result = responsiveness(args)
    t = result["training"]
    doc = {
        "max_stall_ms": t["max_ms"], "p99_stall_ms": t["p99_ms"], "baseline_max_stall_ms": result["baseline"]["max_ms"],
        "baseline_p99_stall_ms": result["baseline"]["p99_ms"],
        "quiet_max_stall_ms": result["training_quiet"]["max_ms"], "quiet_p99_stall_ms": result["training_quiet"]["p99_ms"],
        "watching_max_stall_ms": None if result["watching"] is None else result["watching"]["stalls"]["max_ms"],
        "watching_p99_stall_ms": None if result["watching"] is None else result["watching"]["stalls"]["p99_ms"],
        "first_overlay_s": result["first_overlay_s"],
        "first_overlay_interacting_s": result["first_overlay_interacting_s"],
        **result, "machine": machine(), "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    if not args.skip_memory:
        doc["memory"] = measure_memory()
        doc["memory_measured_at"] = doc["measured_at"]
    elif "memory" in previous:  # kept from the last memory measurement, with its date
        doc["memory"] = previous["memory"]
        doc["memory_measured_at"] = previous.get("memory_measured_at")
    print(json.dumps(doc, indent=1))
    if args.json:
        _write(args.json, doc)
    return _leave(0)


def _write(path: Path, doc: dict) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(doc, indent=1) + "\n")


def _leave(code: int) -> int:
    from dinomix_app.cli import leave

    return leave(code)


if __name__ == "__main__":
    raise SystemExit(main())
