"""A project another program is writing (a CLI training run holds its write lock) opens at once,
and a save that cannot get the lock is a readable message after a bounded wait, not a freeze."""

from __future__ import annotations

import subprocess
import sys
import time

import numpy as np
import pytest

from dinomix_core.project import Project
from napari_dinomix._session import GUI_BUSY_TIMEOUT_S

# Another process takes the database's write lock (as a writer in the middle of a transaction
# does) and keeps it until its stdin closes.
HOLDER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1], isolation_level=None)
conn.execute("BEGIN IMMEDIATE")
print("locked", flush=True)
sys.stdin.read()
conn.execute("ROLLBACK")
"""


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOMIX_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("DINOMIX_SAMPLE_DIR", str(tmp_path / "sample"))
    from dinomix_core.project.sample import create_sample_project

    return create_sample_project(cases=3, labeled=1)


@pytest.fixture
def lock_holder(project):
    holder = subprocess.Popen([sys.executable, "-c", HOLDER, str(project / "project.sqlite")],
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    assert holder.stdout.readline().strip() == "locked"

    def release():
        if holder.poll() is None:
            holder.stdin.close()
            holder.wait(10)

    yield release
    release()


def test_a_locked_project_opens_and_a_blocked_save_says_busy_then_succeeds(project, lock_holder, qtbot):
    from dinomix_app.main_window import MainWindow

    started = time.perf_counter()
    win = MainWindow(project, autosave_delay_ms=100_000)  # no autosave: the test saves by hand
    opened_in = time.perf_counter() - started
    try:
        session = win.session
        assert session.project is not None, win.panel.last_message
        assert opened_in < GUI_BUSY_TIMEOUT_S + 10  # a reader never waits for the writer (WAL)
        unlabeled = [r.case_id for r in session.case_rows() if r.status == "unlabeled"]
        assert len(unlabeled) == 2 and session.open_case(unlabeled[0])

        session.labels_layer.paint((10, 40, 40), 6, refresh=True)
        painted = np.asarray(session.labels_layer.data).copy()
        messages = []
        session.message.connect(lambda level, text: messages.append((level, text)))
        started = time.perf_counter()
        assert session.accept() is None
        waited = time.perf_counter() - started
        assert waited < GUI_BUSY_TIMEOUT_S + 3, f"the GUI thread waited {waited:.1f} s for the lock"
        level, text = messages[-1]
        assert level == "error" and "\n" not in text and "Traceback" not in text
        assert "busy" in text.lower() or "lock" in text.lower(), text
        assert np.array_equal(np.asarray(session.labels_layer.data), painted)  # the strokes stay on screen

        lock_holder()  # the other program commits
        revision = session.accept()
        assert revision is not None and revision.final
        with Project.open(project, tidy=False) as p:
            assert p.current_revision(unlabeled[0]).id == revision.id
            assert np.array_equal(p.load_labels(revision.id).array, painted)
    finally:
        win.confirm_stop_training = lambda: True
        win.close()
        qtbot.wait(50)
