"""Make the README's GUI screenshots from the real programs (not mock-ups).

    xvfb-run -a -s "-screen 0 1920x1080x24" python resources/readme/make_screenshots.py [--steps N]

1. ``napari_plugin.png``: napari with Plugins ▸ DINO-Mix docked, the sample project open, a
   model trained with the Train panel's quick settings (random teacher: no DINOv3 weights are
   installed here), and its prediction of an unlabeled case shown as an editable layer.
2. ``app_window.png``: ``dinomix-app --screenshot`` of the same project.
Everything runs in a temporary folder; nothing is written to the user's data folders.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent


def pump(app, seconds: float, until=None) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        app.processEvents()
        if until is not None and until():
            return True
        time.sleep(0.01)
    return until is None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--steps", type=int, default=0, help="training steps (default: the quick preset's)")
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="dinomix-shots-"))
    os.environ["DINOMIX_SAMPLE_DIR"] = str(work / "sample")
    os.environ["DINOMIX_CONFIG_DIR"] = str(work / "config")
    os.environ["DINOMIX_CACHE_DIR"] = str(work / "cache")

    import napari
    from napari.qt import get_qapp

    from napari_dinomix._widget import DinomixWidget

    app = get_qapp()
    viewer = napari.Viewer(title="napari + DINO-Mix")
    viewer.window.resize(1600, 1000)
    widget = DinomixWidget(viewer)
    viewer.window.add_dock_widget(widget, name="DINO-Mix", area="right")
    viewer.open_sample("dinomix-studio", "project")
    session = widget.session
    pump(app, 60, lambda: session.case_id is not None)
    unlabeled = next(r.case_id for r in session.case_rows() if r.status == "unlabeled")
    session.open_case(unlabeled)
    if args.steps:
        widget.train_panel.steps.setValue(args.steps)
    widget.tabs.setCurrentWidget(widget.train_panel)
    widget.train_panel.start()
    pump(app, 3600, lambda: widget.jobs.state in ("completed", "failed", "cancelled") and not widget.jobs.training)
    print("training:", widget.jobs.state, widget.train_panel.status.text())
    pump(app, 5)
    session.set_window("Abdomen")
    shot = viewer.screenshot(canvas_only=False, flash=False)
    from PIL import Image

    out = args.out / "napari_plugin.png"
    Image.fromarray(shot).save(out)
    print("wrote", out)
    root = session.root
    widget.shutdown()
    viewer.close()
    subprocess.run([sys.executable, "-m", "dinomix_app", "--screenshot", str(args.out / "app_window.png"), str(root)],
                   check=True)
    return 0


if __name__ == "__main__":
    from dinomix_app.cli import leave

    # Not a plain exit: the interpreter's final collection after a Qt session can abort in a
    # C extension ("none_dealloc", seen here after both screenshots were written).
    leave(main())
