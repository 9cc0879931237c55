"""Start-up of the desktop app: from launching the process to its window on screen, and its memory then.

    xvfb-run -a -s "-screen 0 1920x1080x24" python -m benchmarks.app_start --json benchmarks/results/app_start.json

Each run is a fresh process (``--child``), as a user's ``dinomix-app PROJECT`` is: the
interpreter starts, the app's modules are imported, the main window is built on the sample
project (its first labeled case opened), shown, and the viewer's canvas draws its first
frame. The phases are timed from the moment the parent launched the process; the JSON
also says whether the GUI process imported torch (it must not: the worker process trains)
and its resident memory once the window is drawn. Median of ``--runs`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _first_paint(widget):
    """Notes the first paint event the viewer's canvas gets (a Qt event filter: public API only)."""
    from qtpy.QtCore import QEvent, QObject

    class Filter(QObject):
        seen = False

        def eventFilter(self, _obj, event):  # noqa: N802 (Qt's name)
            if event.type() == QEvent.Type.Paint:
                Filter.seen = True
            return False

    watcher = Filter(widget)
    widget.installEventFilter(watcher)
    return watcher


def child(launched: float, project: Path) -> dict:
    started = time.time()
    from napari.qt import get_qapp

    app = get_qapp()
    from dinomix_app.main_window import MainWindow

    imported = time.time()
    window = MainWindow(project)
    built = time.time()
    painted = _first_paint(window.qt_viewer.canvas.native)
    window.show()
    drawn: list[float] = []
    deadline = time.monotonic() + 30
    while not drawn and time.monotonic() < deadline:
        app.processEvents()  # returns once the paint event it delivered has been drawn
        if painted.seen:
            drawn.append(time.time())
        time.sleep(0.002)
    from benchmarks.gui_memory import _proc_status_mib

    result = {
        "interpreter_s": round(started - launched, 2), "imports_s": round(imported - started, 2),
        "window_built_s": round(built - imported, 2), "first_frame_s": round(drawn[0] - built, 2) if drawn else None,
        "total_s": round((drawn[0] if drawn else float("nan")) - launched, 2),
        "rss_mib": round(_proc_status_mib("VmRSS") or 0.0, 1), "case_open": window.session.case_id,
        "torch_in_gui_process": "torch" in sys.modules, "timm_in_gui_process": "timm" in sys.modules,
    }
    window.panel.shutdown()
    window.close()
    return result


def run_once(project: Path, config: Path) -> dict:
    env = {**os.environ, "DINOMIX_CONFIG_DIR": str(config)}
    launched = time.time()
    out = subprocess.run([sys.executable, "-m", "benchmarks.app_start", "--child", str(launched), str(project)],
                         capture_output=True, text=True, env=env, check=False)
    lines = [line for line in out.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise SystemExit(f"app_start: the app process failed: {out.stderr.strip().splitlines()[-1:]}")
    return json.loads(lines[-1])


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--child", nargs=2, metavar=("LAUNCHED", "PROJECT"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        print(json.dumps(child(float(args.child[0]), Path(args.child[1]))), flush=True)
        from dinomix_app.cli import leave

        return leave(0)
    from dinomix_core.project.sample import create_sample_project

    work = Path(tempfile.mkdtemp(prefix="dinomix-app-start-"))
    project = create_sample_project(work / "project")
    run_once(project, work / "config")  # not counted: the first start after install fills the OS file cache
    runs = [run_once(project, work / f"config{i}") for i in range(args.runs)]
    keys = ("interpreter_s", "imports_s", "window_built_s", "first_frame_s", "total_s", "rss_mib")
    doc = {"median": {k: round(statistics.median(r[k] for r in runs), 2) for k in keys}, "runs": runs,
           "measured_at": time.strftime("%Y-%m-%d %H:%M"), "cpu_cores": os.cpu_count(),
           "settings": {"project": "sample (6 phantom cases, 2 labeled)", "screen": os.environ.get("DISPLAY")}}
    print(json.dumps(doc, indent=1))
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(doc, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
