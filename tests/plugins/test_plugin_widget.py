"""The dock widget's panels on a real sample project (no training: fast)."""

from __future__ import annotations

import numpy as np
import pytest
from _plugin_data import dispose

from dinomix_core.project import Project


def test_the_manifest_widget_command_builds_the_dock_widget(make_napari_viewer_proxy, qtbot):
    from npe2 import PluginManager

    pm = PluginManager.instance()
    pm.discover()
    command = pm.get_command("dinomix-studio.widget")
    cls = command.python_name.rsplit(":", 1)
    from importlib import import_module

    widget_class = getattr(import_module(cls[0]), cls[1])
    viewer = make_napari_viewer_proxy()
    w = widget_class(napari_viewer=viewer)
    assert w.tabs.count() == 4
    dispose(w, qtbot)


def test_case_table_status_and_double_click_opens_the_best_label(widget, qtbot):
    viewer, w, root = widget
    table = w.project_panel.table
    statuses = {table.item(r, 0).text(): table.item(r, 1).text() for r in range(table.rowCount())}
    assert list(statuses.values()).count("labeled") == 2 and list(statuses.values()).count("unlabeled") == 2
    labeled_row = next(r for r in range(table.rowCount()) if table.item(r, 1).text() == "labeled")
    table.cellDoubleClicked.emit(labeled_row, 0)
    case_id = table.item(labeled_row, 0).text()
    qtbot.waitUntil(lambda: w.session.case_id == case_id, timeout=10_000)  # read in a worker thread first
    with Project.open(root, tidy=False) as p:
        truth = p.load_labels(p.label_revision(case_id).id).array
    assert np.array_equal(w.session.labels_layer.data, truth)
    # layers line up in world space (mm): same transform for image and labels
    assert np.allclose(w.session.image_layer.scale, w.session.labels_layer.scale)
    assert np.allclose(w.session.image_layer.translate, w.session.labels_layer.translate)
    assert tuple(w.session.image_layer.contrast_limits) == (-135.0, 215.0)  # Abdomen W350/L40


def test_next_suggested_says_why(widget, qtbot):
    viewer, w, root = widget
    w.project_panel.open_next()
    qtbot.waitUntil(lambda: w.session.case_id is not None, timeout=10_000)
    assert "random order" in w.project_panel.reason_label.text()


def test_classes_panel_paints_the_clicked_class_and_reports_volumes_in_ml(widget, qtbot):
    viewer, w, root = widget
    w.project_panel.open_next()  # an unlabeled case: empty labels
    qtbot.waitUntil(lambda: w.session.case_id is not None, timeout=10_000)
    panel = w.classes_panel
    label_map = w.session.label_map
    assert panel.table.rowCount() == label_map.num_classes - 1
    panel.select_class(6)
    assert w.session.labels_layer.selected_label == 6
    layer = w.session.labels_layer
    box = np.zeros(layer.data.shape, bool)
    box[10:12, 40:50, 40:50] = True  # 200 voxels of liver
    layer.data_setitem(np.nonzero(box), 6)
    qtbot.waitUntil(lambda: panel.table.item(5, 2).text() not in ("", "0.0"), timeout=5000)  # counted in a thread
    case = w.session.project.case(w.session.case_id)
    expected = 200 * float(np.prod(case.spacing_zyx)) / 1000.0
    assert float(panel.table.item(5, 2).text()) == pytest.approx(expected, abs=0.06)
    panel.window_buttons["Bone"].click()
    assert tuple(w.session.image_layer.contrast_limits) == (-100.0, 900.0)


def test_revisions_are_listed_and_any_one_can_be_restored(widget, qtbot):
    viewer, w, root = widget
    case = w.session.case_rows()[2].case_id
    w.session.open_case(case)
    layer = w.session.labels_layer
    layer.paint((20, 48, 48), 2, refresh=True)
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=10_000)
    first_draft = np.asarray(layer.data).copy()
    layer.paint((30, 20, 20), 5, refresh=True)
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=10_000)
    assert w.session.accept() is not None
    listing = [w.predict_panel.revisions.item(i).text() for i in range(w.predict_panel.revisions.count())]
    assert "LABEL" in listing[0] and any("draft" in t for t in listing[1:])
    draft_id = w.predict_panel.revisions.item(len(listing) - 1).data(0x0100)  # Qt.UserRole: the oldest draft
    assert w.session.restore(int(draft_id))
    assert np.array_equal(w.session.labels_layer.data, first_draft)
    with Project.open(root, tidy=False) as p:
        assert p.current_revision(case).note.startswith("restored from revision")


def test_accept_right_after_strokes_saves_one_final_label_and_a_failed_accept_leaves_the_draft_to_come(
        widget, qtbot, monkeypatch):
    viewer, w, root = widget
    session = w.session
    case = session.case_rows()[2].case_id
    session.open_case(case)
    layer = session.labels_layer
    layer.paint((20, 48, 48), 2, refresh=True)  # the autosave's draft is pending, not started
    rev = session.accept()
    assert rev is not None and rev.final
    with Project.open(root, tidy=False) as p:
        assert [r.id for r in p.revisions(case)] == [rev.id]  # no draft of the same voxels first
    assert w.save_state == "saved"
    qtbot.wait(300)  # the autosave's delay (100 ms) passes: it has nothing left to save
    with Project.open(root, tidy=False) as p:
        assert len(p.revisions(case)) == 1

    layer.paint((30, 20, 20), 5, refresh=True)
    monkeypatch.setattr(session.project, "save_labels", lambda *a, **k: (_ for _ in ()).throw(OSError("disk full")))
    assert session.accept() is None
    monkeypatch.undo()
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=10_000)  # the autosave still saves the strokes
    with Project.open(root, tidy=False) as p:
        newest = p.current_revision(case)
        assert not newest.final and p.load_labels(newest.id).array[30, 20, 20] == 5


def test_engine_errors_are_readable_messages(widget, tmp_path):
    viewer, w, root = widget
    assert not w.session.open_project(tmp_path / "not-a-project")
    level, text = w.last_message
    assert level == "error" and "not a DINO-Mix project" in text and "\n" not in text
    assert w.session.root == root.resolve()  # the open project is kept
    bad = tmp_path / "broken.nii.gz"
    bad.write_bytes(b"not a nifti")
    w.session.add_scans([bad])
    assert w.last_message[0] in ("warning", "error") and "broken.nii.gz" in w.last_message[1]
    # no trained model yet: predicting says so instead of failing
    w.session.open_case(w.session.case_rows()[2].case_id)
    assert not w.predict_panel.predict_current()
    assert "train" in w.last_message[1].lower()


def test_train_panel_budget_in_minutes_becomes_a_time_budget(widget):
    viewer, w, root = widget
    panel = w.train_panel
    panel.budget.setCurrentText("minutes")
    panel.steps.setValue(7)
    config = panel.request().config()
    assert config["time_budget_s"] == 420.0 and config["steps"] >= 100_000
    panel.budget.setCurrentText("steps")
    config = panel.request().config()
    from napari_dinomix._jobs import PRESETS

    assert config["time_budget_s"] == 0.0 and config["steps"] == PRESETS["Quick first model"]["steps"]


def test_clean_up_checkbox_decides_the_prediction_jobs_postprocessing(widget, monkeypatch):
    """Ticked (the default): the checkpoint's per-organ clean-up; unticked: the raw network output."""
    from napari_dinomix._worker import JobWorker

    viewer, w, root = widget
    started = []
    monkeypatch.setattr(JobWorker, "start", lambda self: started.append(self._spec))  # the specs, no process
    checkpoint = root / "model.pt"
    checkpoint.write_bytes(b"")
    monkeypatch.setattr(w.jobs, "latest_checkpoint", lambda: (1, checkpoint))
    case = next(r.case_id for r in w.session.case_rows() if r.status == "unlabeled")
    w.session.open_case(case)
    assert w.predict_panel.clean_up.isChecked()
    assert w.predict_panel.predict_current()
    assert [s.postprocess for s in started[-1]] == ["auto"] and started[-1][0].case_id == case
    w.jobs.predict_worker = None
    w.predict_panel.clean_up.setChecked(False)
    assert w.predict_panel.predict_unlabeled()
    assert started[-1] and {s.postprocess for s in started[-1]} == {"off"}
    w.jobs.predict_worker = None


def test_a_quick_first_model_stores_fast_first_overlays(widget, monkeypatch):
    """The Quick preset is about a first look: its stored predictions use the fast inference settings."""
    from napari_dinomix._jobs import TrainRequest
    from napari_dinomix._worker import JobWorker

    viewer, w, root = widget
    specs = []
    monkeypatch.setattr(JobWorker, "start", lambda self: specs.append(self._spec))  # the spec, no process
    for preset in ("Quick first model", "Better first model", "Standard"):
        assert w.jobs.start_training(TrainRequest(preset=preset))
        w.jobs.train_worker = None
        w.jobs._set_state("idle")
    assert [s.fast_predictions for s in specs] == [True, False, False]
