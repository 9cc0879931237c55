"""The GUI process never imports torch (nor timm): training and prediction run in the worker.

Why it matters: torch cost the app 2.6 s of start-up and 500 MiB of memory (``python -X
importtime``, ``ru_maxrss``) for nothing the GUI does. Checked in a fresh process, since this
test session imports torch itself: the app starts on a project, a model trains from the Train
panel, and its prediction of the open case is put on screen.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

SCRIPT = textwrap.dedent('''
    import json, sys, time
    from pathlib import Path

    def main(work):
        from napari.qt import get_qapp
        app = get_qapp()
        from dinomix_app.main_window import MainWindow
        from dinomix_core.project.sample import create_sample_project

        window = MainWindow(create_sample_project(Path(work) / "project", cases=3, labeled=2), autosave_delay_ms=150)
        window.show()
        session = window.session
        unlabeled = [r.case_id for r in session.case_rows() if r.status == "unlabeled"][0]
        session.open_case(unlabeled)
        panel = window.panel.train_panel
        panel.config_overrides = dict(student_width=4, student_depth=2, patch_size=(16, 32, 32),
                                      batch_labeled=1, batch_unlabeled=1)
        panel.teacher_overrides = dict(depth=1, embed_dim=32, num_heads=2)
        panel.steps.setValue(2)
        panel.start_button.click()
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and "prediction run-" not in session.labels_layer.name:
            app.processEvents()
            time.sleep(0.02)
        result = {"layer": session.labels_layer.name, "state": window.jobs.state,
                  "imported": sorted(m for m in ("torch", "timm", "torchvision") if m in sys.modules)}
        window.confirm_stop_training = lambda: True  # the run may still be predicting the other cases
        window.close()
        print("RESULT " + json.dumps(result), flush=True)

    if __name__ == "__main__":
        main(sys.argv[1])
''')


def test_the_app_trains_and_shows_a_prediction_without_importing_torch(tmp_path):
    script = tmp_path / "gui_process.py"
    script.write_text(SCRIPT)
    env = {**os.environ, "DINOMIX_CONFIG_DIR": str(tmp_path / "config"), "DINOMIX_CACHE_DIR": str(tmp_path / "cache"),
           "HF_HUB_OFFLINE": "1"}
    done = subprocess.run([sys.executable, str(script), str(tmp_path)], env=env, capture_output=True, text=True,
                          timeout=300)
    lines = [line for line in done.stdout.splitlines() if line.startswith("RESULT ")]
    assert done.returncode == 0 and lines, done.stderr[-3000:]
    result = json.loads(lines[-1].removeprefix("RESULT "))
    assert "prediction run-" in result["layer"], result
    assert result["imported"] == [], f"the GUI process imported {result['imported']}"
