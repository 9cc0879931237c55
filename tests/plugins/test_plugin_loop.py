"""The clinician's loop through the DINO-Mix dock widget, end to end, with real worker processes.

Open the sample project → create a project of one's own → label a case → train in the
background → stop → resume → predict → paint and undo → autosave → accept → close and reopen
and find the edit. Then: a training worker killed with SIGKILL leaves the GUI alive and the
run marked failed. Tiny networks and a few steps keep it within a minute or two.
"""

from __future__ import annotations

import os
import signal
from pathlib import Path

import numpy as np
import pytest
from _screenshot_checks import class_colours_seen, not_blank
from PIL import Image

from dinomix_core.data.phantom import generate_case, phantom_labelmap
from dinomix_core.io import write_image
from dinomix_core.project import Project

TINY_TEACHER = dict(depth=1, embed_dim=32, num_heads=2)
TINY = dict(student_width=4, student_depth=2, patch_size=(16, 32, 32), batch_labeled=1, batch_unlabeled=1,
            val_every=0)
TRAIN_WAIT_MS = 240_000


@pytest.fixture
def scans(tmp_path):
    """Three phantom CT files on disk, as a user would have them, and their ground truth."""
    paths, truths = [], []
    for index in range(3):
        image, labels = generate_case(index, seed=3, size="small")
        paths.append(write_image(image, tmp_path / "scans" / f"abdomen_{index:02d}_0000.nii.gz"))
        truths.append(labels.array)
    return paths, truths


@pytest.fixture
def widget(make_napari_viewer_proxy, qtbot, tmp_path, monkeypatch):
    from napari_dinomix._widget import DinomixWidget

    monkeypatch.setenv("DINOMIX_SAMPLE_DIR", str(tmp_path / "sample"))
    monkeypatch.setenv("DINOMIX_CACHE_DIR", str(tmp_path / "cache"))
    viewer = make_napari_viewer_proxy()
    w = DinomixWidget(viewer, autosave_delay_ms=150)
    viewer.window.add_dock_widget(w, name="DINO-Mix")
    w.train_panel.config_overrides = dict(TINY)
    w.train_panel.teacher_overrides = TINY_TEACHER
    yield viewer, w
    w.shutdown()
    w.deleteLater()
    qtbot.wait(20)


def _wait_training(qtbot, w, states=("completed", "cancelled", "failed")):
    qtbot.waitUntil(lambda: w.jobs.state in states and not w.jobs.training, timeout=TRAIN_WAIT_MS)
    return w.jobs.state


def _choose_teacher(w, data):
    w.train_panel.teacher.setCurrentIndex(w.train_panel.teacher.findData(data))
    w.train_panel._update_teacher_warning()


def test_clinician_loop(widget, scans, qtbot, tmp_path):
    viewer, w = widget
    session = w.session
    paths, truths = scans

    # 1. the sample project opens with one click, with its labeled cases
    viewer.open_sample("dinomix-studio", "project")
    qtbot.waitUntil(lambda: session.case_id is not None, timeout=120_000)
    assert session.root.parent == tmp_path / "sample" or tmp_path in session.root.parents
    assert sum(r.status == "labeled" for r in session.case_rows()) == 2
    assert session.labels_layer is not None and session.labels_layer.data.any()

    # 2. a project of one's own, from scans on disk
    assert session.new_project(tmp_path / "my-project", phantom_labelmap())
    summary = session.add_scans(paths)
    assert summary.startswith("3 scan(s) added"), summary
    case_ids = [r.case_id for r in session.case_rows()]
    assert len(case_ids) == 3 and w.project_panel.table.rowCount() == 3

    # 3. label the first case (the phantom's truth stands in for the clinician's strokes) and accept
    assert session.open_case(case_ids[0])
    session.labels_layer.data = truths[0].copy()
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=20_000)
    rev = session.accept()
    assert rev is not None and rev.final
    assert [r.status for r in session.case_rows()][0] == "labeled"

    # 4. train in the background with a (reported) random teacher; stop; resume
    _choose_teacher(w, "random")
    assert "RANDOM TEACHER" in w.train_panel.teacher_warning.text()
    w.train_panel.steps.setValue(40)
    assert w.train_panel.start()
    qtbot.waitUntil(lambda: w.train_panel.progress.value() >= 1 and w.jobs.state == "running", timeout=TRAIN_WAIT_MS)
    w.jobs.stop_training()
    assert _wait_training(qtbot, w) == "cancelled"
    with Project.open(session.root, tidy=False) as p:
        run = p.latest_run()
        assert run.status == "cancelled" and (p.runs_dir(run.id) / "last.pt").exists()
    assert w.train_panel.resume_button.isEnabled()
    assert w.train_panel.resume()
    assert _wait_training(qtbot, w) == "completed", w.train_panel.log.toPlainText()
    with Project.open(session.root, tidy=False) as p:
        runs = p.runs()
        assert len(runs) == 1 and runs[0].status == "completed"  # the same run, resumed
        assert len(p.predictions(runs[0].id)) == 2  # every unlabeled case got a prediction
    assert len(w.train_panel.plot.steps) > 0
    assert any(r.status == "predicted" for r in session.case_rows())

    # 5. predict the current case in the background: an editable layer named after its run
    assert session.open_case(case_ids[1])
    assert w.predict_panel.predict_current()
    # the case already shows the training run's prediction: wait for this job's (read in a worker thread)
    qtbot.waitUntil(lambda: not w.jobs.predicting and session.labels_layer.metadata.get("dinomix_revision")
                    == _newest_model_revision(session.root, case_ids[1]), timeout=120_000)
    assert "prediction run-" in session.labels_layer.name
    predicted = np.asarray(session.labels_layer.data).copy()
    assert session.labels_layer.editable

    # 6. paint, undo (napari's paint event does not fire on undo): both reach the store
    layer = session.labels_layer
    layer.selected_label = 6  # stomach
    layer.brush_size = 9
    layer.paint((24, 40, 40), 6, refresh=True)
    painted = np.asarray(layer.data).copy()
    assert not np.array_equal(painted, predicted)
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=20_000)
    with Project.open(session.root, tidy=False) as p:
        newest = p.current_revision(case_ids[1])
        assert newest.kind == "human" and not newest.final
        assert np.array_equal(p.load_labels(newest.id).array, painted)
    layer.undo()
    qtbot.waitUntil(lambda: w.save_state == "saved" and _newest_voxels(session.root, case_ids[1]) is not None
                    and np.array_equal(_newest_voxels(session.root, case_ids[1]), predicted), timeout=20_000)
    layer.redo()
    qtbot.waitUntil(lambda: np.array_equal(_newest_voxels(session.root, case_ids[1]), painted), timeout=20_000)

    # 7. accept the corrected prediction; the model's revision is still there beside it
    rev = session.accept()
    assert rev.final and rev.kind == "human"
    with Project.open(session.root, tidy=False) as p:
        kinds = [r.kind for r in p.revisions(case_ids[1])]
        assert kinds.count("model") >= 2 and p.label_revision(case_ids[1]).id == rev.id

    # 8. a screenshot with the overlay shows the class colours (the canvas draws once shown)
    viewer.window.show()
    shot = viewer.screenshot(canvas_only=True, flash=False)
    Image.fromarray(shot).save(tmp_path / "loop_overlay.png")
    w.grab().save(str(tmp_path / "loop_widget.png"))
    assert not_blank(shot)
    colours = phantom_labelmap().colors
    assert len(class_colours_seen(shot, colours[1:], session.labels_layer.opacity)) >= 2

    # 9. close and reopen: the accepted edit is what the case opens with
    root = session.root
    assert session.close_project()
    assert session.open_project(root)
    assert session.open_case(case_ids[1])
    assert np.array_equal(np.asarray(session.labels_layer.data), painted)


def test_killed_worker_leaves_gui_alive(widget, scans, qtbot, tmp_path):
    viewer, w = widget
    session = w.session
    paths, truths = scans
    assert session.new_project(tmp_path / "p", phantom_labelmap())
    session.add_scans(paths[:2])
    case_ids = [r.case_id for r in session.case_rows()]
    session.open_case(case_ids[0])
    session.labels_layer.data = truths[0].copy()
    session.accept()
    w.train_panel.method.setCurrentText("mean-teacher")
    w.train_panel.steps.setValue(100_000)
    assert w.train_panel.start()
    qtbot.waitUntil(lambda: w.jobs.state == "running", timeout=TRAIN_WAIT_MS)
    pid = w.jobs.train_worker.pid
    # an edit made while training runs is saved as usual
    session.labels_layer.paint((20, 50, 50), 3, refresh=True)
    os.kill(pid, signal.SIGKILL)
    assert _wait_training(qtbot, w) == "failed"
    assert "unexpectedly" in w.last_message[1] or "signal" in w.last_message[1], w.last_message
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=20_000)
    with Project.open(session.root, tidy=False) as p:
        assert p.latest_run().status == "failed"
        assert np.array_equal(p.load_labels(p.current_revision(case_ids[0]).id).array, session.labels_layer.data)
    # the GUI still works: switch case, paint, it saves
    assert session.open_case(case_ids[1])
    session.labels_layer.paint((20, 50, 50), 1, refresh=True)
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=20_000)
    assert w.train_panel.start_button.isEnabled()


def _newest_voxels(root: Path, case_id: str):
    with Project.open(root, tidy=False) as p:
        rev = p.current_revision(case_id)
        return None if rev is None else p.load_labels(rev.id).array


def _newest_model_revision(root: Path, case_id: str) -> int | None:
    with Project.open(root, tidy=False) as p:
        model = [r.id for r in p.revisions(case_id) if r.kind == "model"]
        return model[-1] if model else None
