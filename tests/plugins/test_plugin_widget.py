"""The dock widget's panels on a real sample project (no training: fast)."""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from dinomix_core.project import Project


@pytest.fixture(scope="module")
def sample_template(tmp_path_factory):
    from dinomix_core.project.sample import create_sample_project

    return create_sample_project(tmp_path_factory.mktemp("widget") / "sample")


@pytest.fixture
def widget(make_napari_viewer_proxy, qtbot, tmp_path, sample_template):
    from napari_dinomix._widget import DinomixWidget

    root = tmp_path / "sample"
    shutil.copytree(sample_template, root)
    viewer = make_napari_viewer_proxy()
    w = DinomixWidget(viewer, autosave_delay_ms=100)
    qtbot.addWidget(w)
    assert w.session.open_project(root)
    yield viewer, w, root
    dispose(w, qtbot)


def dispose(w, qtbot) -> None:
    """Shut down and let Qt delete the widget now: a widget left to the interpreter's exit
    is collected in arbitrary order with its Qt children, which crashed PySide at exit."""
    w.shutdown()
    w.close()
    w.deleteLater()
    qtbot.wait(20)


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


def test_switching_case_leaves_no_undo_into_the_other_case(widget, qtbot):
    viewer, w, root = widget
    rows = w.session.case_rows()
    first, second = rows[2].case_id, rows[3].case_id
    w.session.open_case(first)
    w.session.labels_layer.paint((20, 48, 48), 3, refresh=True)
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=10_000)
    w.session.open_case(second)
    before = np.asarray(w.session.labels_layer.data).copy()
    w.session.labels_layer.undo()
    assert np.array_equal(w.session.labels_layer.data, before)
    assert not before.any()


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


def _store_model_prediction(root, case_id: str, value: int, *, with_uncertainty: bool = False) -> tuple[int, int, np.ndarray]:
    """What a running training job does when it stores one case's prediction (another connection)."""
    with Project.open(root, tidy=False) as p:
        run = p.start_run({"steps": 1}, "dinomix", "none")
        labels = np.zeros(p.case(case_id).shape_zyx, np.uint8)
        labels[10:20, 30:60, 30:60] = value
        uncertainty = np.full(labels.shape, value / 16, np.float32) if with_uncertainty else None
        revision = p.add_prediction(run, case_id, labels, 0.5, None, uncertainty_map=uncertainty)
    return run, revision, labels


def _level(session) -> int:
    return int(np.asarray(session.uncertainty_layer.data).max())


def test_the_uncertainty_overlay_is_built_only_when_asked_and_follows_each_prediction(widget, qtbot):
    from dinomix_core.engine.events import PredictionStoredEvent

    viewer, w, root = widget
    session, box = w.session, w.predict_panel.show_uncertainty
    first, second = [r.case_id for r in session.case_rows() if r.status == "unlabeled"][:2]
    session.open_case(first)

    def stored(case_id: str, value: int) -> int:
        run, revision, _ = _store_model_prediction(root, case_id, value, with_uncertainty=True)
        w.jobs.prediction_stored.emit(PredictionStoredEvent(case_id, revision, 0.5, run))
        if case_id == session.case_id:
            qtbot.waitUntil(lambda: session.labels_layer.metadata.get("dinomix_revision") == revision, timeout=10_000)
        return revision

    def overlays() -> list:
        return [layer for layer in viewer.layers if "uncertainty" in layer.name]

    stored(first, 6)
    assert session.uncertainty_layer is None and not overlays()  # not asked for: nothing hidden is built
    box.setChecked(True)
    assert session.uncertainty_layer.visible and _level(session) == pytest.approx(6 / 16 * 255, abs=1)  # uint8 0..255 for 0..1
    overlay = session.uncertainty_layer
    stored(first, 9)  # a newer prediction brings its own map, into the same overlay layer
    assert overlays() == [session.uncertainty_layer] and _level(session) == pytest.approx(9 / 16 * 255, abs=1)
    assert session.uncertainty_layer is overlay and list(viewer.layers)[-1].name == session.labels_layer.name
    stored(second, 3)
    session.open_case(second)  # the box stays ticked for the next case
    assert overlays() == [session.uncertainty_layer] and session.uncertainty_layer.visible
    box.setChecked(False)
    assert not session.uncertainty_layer.visible
    stored(second, 4)  # unticked: the stale overlay leaves with the labels it belonged to
    assert session.uncertainty_layer is None and not overlays()


def test_a_prediction_stored_mid_run_is_shown_at_once_for_the_open_case_only(widget, qtbot):
    from dinomix_core.engine.events import PredictionStoredEvent

    viewer, w, root = widget
    session = w.session
    unlabeled = [r.case_id for r in session.case_rows() if r.status == "unlabeled"]
    assert len(unlabeled) >= 2
    session.open_case(unlabeled[0])
    before = session.labels_layer
    # another case's prediction: the open case's layer stays as it is
    run, revision, _ = _store_model_prediction(root, unlabeled[1], 3)
    w.jobs.prediction_stored.emit(PredictionStoredEvent(unlabeled[1], revision, 0.5, run))
    assert session.labels_layer is before and "prediction run-" not in before.name
    # the open case's prediction appears while the run is still going (no training_finished)
    run, revision, labels = _store_model_prediction(root, unlabeled[0], 6)
    w.jobs.prediction_stored.emit(PredictionStoredEvent(unlabeled[0], revision, 0.5, run))
    qtbot.waitUntil(lambda: "prediction run-" in session.labels_layer.name, timeout=10_000)
    assert np.array_equal(np.asarray(session.labels_layer.data), labels)
    # with unsaved strokes on the layer, a newer prediction never replaces the clinician's work
    session.labels_layer.paint((15, 40, 40), 2, refresh=True)
    painted = np.asarray(session.labels_layer.data).copy()
    run, revision, _ = _store_model_prediction(root, unlabeled[0], 9)
    w.jobs.prediction_stored.emit(PredictionStoredEvent(unlabeled[0], revision, 0.5, run))
    qtbot.wait(500)  # time enough for the read in the worker thread
    assert np.array_equal(np.asarray(session.labels_layer.data), painted)


def test_a_prediction_on_an_empty_map_reuses_its_layer_with_a_fresh_history(widget, qtbot):
    """No new layer (its visuals cost the GUI thread 0.2-0.4 s): the empty map's layer shows the
    prediction, undo cannot bring the empty map back, and the prediction is not saved as an edit."""
    from dinomix_core.project import Project

    viewer, w, root = widget
    session = w.session
    case = next(r.case_id for r in session.case_rows() if r.status == "unlabeled")
    session.open_case(case)
    empty = session.labels_layer
    assert not np.any(empty.data)
    count = len(viewer.layers)
    run, revision, labels = _store_model_prediction(root, case, 6)
    assert session.show_prediction(case, revision)
    layer = session.labels_layer
    assert layer is empty and len(viewer.layers) == count
    assert "prediction run-" in layer.name and layer.metadata["dinomix_revision"] == revision
    assert np.array_equal(np.asarray(layer.data), labels)
    layer.undo()
    assert np.array_equal(np.asarray(layer.data), labels)
    with Project.open(root) as project:
        kinds = [r.kind for r in project.revisions(case)]
    assert kinds == ["model"]  # showing it wrote nothing
    layer.paint((15, 40, 40), 2, refresh=True)  # a correction becomes a draft of the case
    assert session.flush_edits()
    with Project.open(root) as project:
        assert [r.kind for r in project.revisions(case)].count("human") == 1


def test_a_newer_prediction_replaces_an_unedited_one_in_place_and_locks_an_edited_one(widget, qtbot):
    """Showing a model's prediction wrote nothing of the user's: the next run's prediction takes
    its layer (no locked copy per run). Once corrected, the draft stays on screen, locked."""
    viewer, w, root = widget
    session = w.session
    case = next(r.case_id for r in session.case_rows() if r.status == "unlabeled")
    session.open_case(case)
    layer = session.labels_layer
    count = len(viewer.layers)
    _, first, _ = _store_model_prediction(root, case, 6)
    assert session.show_prediction(case, first)
    _, second, labels = _store_model_prediction(root, case, 9)
    assert session.show_prediction(case, second)
    assert session.labels_layer is layer and len(viewer.layers) == count
    assert layer.metadata["dinomix_revision"] == second and np.array_equal(np.asarray(layer.data), labels)
    layer.undo()  # the earlier prediction does not come back through undo (it is in the history)
    assert np.array_equal(np.asarray(layer.data), labels)
    layer.paint((15, 40, 40), 2, refresh=True)  # corrected: now it holds the user's work
    corrected = np.asarray(layer.data).copy()
    _, third, newest = _store_model_prediction(root, case, 3)
    assert session.show_prediction(case, third)
    assert session.labels_layer is not layer and len(viewer.layers) == count + 1
    assert not layer.editable and layer.name.endswith("(locked)") and np.array_equal(np.asarray(layer.data), corrected)
    assert np.array_equal(np.asarray(session.labels_layer.data), newest)


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


def test_a_prediction_shown_soon_is_read_in_a_worker_thread_and_dropped_if_the_case_changed(widget, qtbot, monkeypatch):
    from napari_dinomix import _predictions_shown

    viewer, w, root = widget
    session = w.session
    first, second = [r.case_id for r in session.case_rows() if r.status == "unlabeled"][:2]
    threads = []
    real_read = _predictions_shown.read_revision_file
    monkeypatch.setattr(_predictions_shown, "read_revision_file",
                        lambda rev: (threads.append(threading.current_thread().name), real_read(rev))[1])
    session.open_case(first)
    _, revision, labels = _store_model_prediction(root, first, 6)
    session.show_prediction_soon(first, revision)
    assert session.labels_layer.metadata.get("dinomix_revision") is None  # not on the GUI thread, not yet
    qtbot.waitUntil(lambda: session.labels_layer.metadata.get("dinomix_revision") == revision, timeout=10_000)
    assert np.array_equal(np.asarray(session.labels_layer.data), labels)
    assert threads and threads[0].startswith("dinomix-prediction-reader")
    # the user moves on before the read is done: the other case stays as it is
    _, late, _ = _store_model_prediction(root, first, 9)
    session.show_prediction_soon(first, late)
    session.open_case(second)
    qtbot.wait(500)
    assert session.case_id == second and session.labels_layer.metadata.get("dinomix_revision") is None
    # a prediction file changed on disk: one readable line, nothing replaced
    messages = []
    session.message.connect(lambda level, text: messages.append((level, text)))
    _, broken, _ = _store_model_prediction(root, second, 4)
    with Project.open(root) as project:
        path = project.revision(broken).path
    path.write_bytes(path.read_bytes()[:-8])
    session.show_prediction_soon(second, broken)
    qtbot.waitUntil(lambda: bool(messages), timeout=10_000)
    level, text = messages[-1]
    assert level == "error" and "Could not show the new prediction" in text and "hash differs" in text and "\n" not in text
    assert session.labels_layer.metadata.get("dinomix_revision") is None


def test_a_wanted_uncertainty_map_is_read_with_its_prediction_in_the_worker_thread(widget, qtbot, monkeypatch):
    from napari_dinomix import _predictions_shown

    viewer, w, root = widget
    session = w.session
    case = next(r.case_id for r in session.case_rows() if r.status == "unlabeled")
    session.open_case(case)
    threads = []
    real_read = _predictions_shown.read_uncertainty_levels
    monkeypatch.setattr(_predictions_shown, "read_uncertainty_levels",
                        lambda *args: (threads.append(threading.current_thread().name), real_read(*args))[1])
    w.predict_panel.show_uncertainty.setChecked(True)
    _, revision, _ = _store_model_prediction(root, case, 8, with_uncertainty=True)
    session.show_prediction_soon(case, revision)
    qtbot.waitUntil(lambda: session.uncertainty_layer is not None, timeout=10_000)
    assert threads and threads[0].startswith("dinomix-prediction-reader")
    layer = session.uncertainty_layer
    assert layer.data.dtype == np.uint8 and int(np.asarray(layer.data).max()) == round(8 / 16 * 255)
    assert tuple(layer.contrast_limits) == (0, 255)


def test_a_case_read_ahead_is_used_only_while_its_files_and_best_revision_are_unchanged(widget, qtbot, monkeypatch):
    """Opening a case whose image and labels were read ahead (a worker thread) reads nothing on
    the GUI thread; a touched image, or a newer best revision, is read again. Opening a case
    reads the next suggested one ahead."""
    import os

    from napari_dinomix import _read_ahead

    viewer, w, root = widget
    session = w.session
    images, labels = [], []
    real_image, real_labels = _read_ahead.read_volume, _read_ahead.read_revision_file
    on_gui = lambda: threading.current_thread() is threading.main_thread()  # noqa: E731
    monkeypatch.setattr(_read_ahead, "read_volume", lambda path: (images.append(on_gui()), real_image(path))[1])
    monkeypatch.setattr(_read_ahead, "read_revision_file", lambda rev: (labels.append(on_gui()), real_labels(rev))[1])

    def read_ahead(case_id):
        session.prefetch_case(case_id)
        qtbot.waitUntil(lambda: session.read_ahead.held_case == case_id, timeout=10_000)

    rows = [r.case_id for r in session.case_rows()]  # 0 and 1 labeled, 2 and 3 not
    session.open_case(rows[0])
    assert images[0] is True  # nothing was read ahead yet: the GUI thread read it
    qtbot.waitUntil(lambda: session.read_ahead.held_case is not None, timeout=10_000)
    assert images[1] is False  # the next suggested case, read ahead in the worker thread
    ahead = session.read_ahead.held_case
    assert ahead != rows[0] and ahead == session.next_suggested()["id"]
    read_ahead(rows[1])  # a labeled case: image and labels
    assert labels[-1] is False
    count = (len(images), len(labels))
    load_labels = session.project.load_labels
    monkeypatch.setattr(session.project, "load_labels", lambda rid: pytest.fail("labels read again on the GUI thread"))
    assert session.open_case(rows[1])
    monkeypatch.setattr(session.project, "load_labels", load_labels)
    assert True not in images[count[0]:] and True not in labels[count[1]:]  # both used as read ahead
    assert np.asarray(session.labels_layer.data).any()
    # a newer best revision since the read: its labels are read at opening
    read_ahead(rows[0])
    with Project.open(root) as project:
        newer = np.zeros(project.case(rows[0]).shape_zyx, np.uint8)
        newer[5:9, 20:30, 20:30] = 4
        project.save_labels(rows[0], newer)
    assert session.open_case(rows[0])
    assert np.array_equal(np.asarray(session.labels_layer.data), newer)
    # a touched image file (same bytes, newer mtime) is read again
    image_path = session.project.case(rows[3]).image_path
    read_ahead(rows[3])
    stat = image_path.stat()
    os.utime(image_path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 10**9))
    count = len(images)
    assert session.open_case(rows[3])
    assert images[count] is True
    assert np.asarray(session.image_layer.data).shape == session.project.case(rows[3]).shape_zyx


def test_the_panel_opens_a_case_once_read_in_a_worker_thread_and_the_newest_choice_wins(widget, qtbot, monkeypatch):
    from napari_dinomix import _read_ahead

    viewer, w, root = widget
    session = w.session
    rows = [r.case_id for r in session.case_rows()]
    session.open_case(rows[0])
    qtbot.waitUntil(lambda: session.read_ahead.held_case is not None, timeout=10_000)  # the next one, ahead
    first_layer = session.labels_layer
    on_gui = []
    real = _read_ahead.read_volume
    monkeypatch.setattr(_read_ahead, "read_volume",
                        lambda path: (on_gui.append(threading.current_thread() is threading.main_thread()), real(path))[1])
    others = [c for c in rows if c not in (rows[0], session.read_ahead.held_case)]
    session.open_case_soon(others[0])
    session.open_case_soon(others[1])  # chosen before the first one was read: it wins
    assert session.case_id == rows[0] and session.labels_layer is first_layer  # still open, meanwhile
    qtbot.waitUntil(lambda: session.case_id == others[1], timeout=10_000)
    assert on_gui and True not in on_gui  # nothing read on the GUI thread
    qtbot.wait(300)
    assert session.case_id == others[1]  # the superseded choice did not open afterwards
    qtbot.waitUntil(lambda: session.read_ahead.held_case is not None, timeout=10_000)
    ahead = session.read_ahead.held_case
    session.open_case_soon(ahead)  # read ahead already: opens at once
    assert session.case_id == ahead


def test_a_case_that_cannot_be_read_opens_with_a_one_line_error(widget, qtbot):
    viewer, w, root = widget
    session = w.session
    messages = []
    session.message.connect(lambda kind, text: messages.append((kind, text)))
    rows = [r.case_id for r in session.case_rows()]
    session.open_case(rows[0])
    broken = rows[2]
    path = session.project.case(broken).image_path
    path.write_bytes(path.read_bytes()[:200])  # truncated behind the project's back
    session.open_case_soon(broken)
    qtbot.waitUntil(lambda: any(kind == "error" for kind, _ in messages), timeout=10_000)
    error = next(text for kind, text in messages if kind == "error")
    assert "\n" not in error and (broken in error or path.name in error), error
    assert session.case_id == rows[0] and session.labels_layer in viewer.layers  # the open case stays open


def _add_rotated_case(root, tmp_path) -> str:
    """A smaller, x-flipped, differently spaced crop of the sample's first image, as a new case."""
    import SimpleITK as sitk

    with Project.open(root) as project:
        source = project.cases()[0].image_path
        image = sitk.ReadImage(str(source))[4:36, 2:30, 3:19]  # (x, y, z) slicing: 32 x 28 x 16
        image.SetDirection((-1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        image.SetSpacing((1.5, 1.25, 3.0))
        image.SetOrigin((40.0, -12.0, 7.5))
        path = tmp_path / "rotated.nii.gz"
        sitk.WriteImage(image, str(path))
        return project.add_image(path, copy=True, case_id="rotated").case_id


def test_opening_another_case_refills_the_same_layers_with_its_geometry_and_a_fresh_history(widget, qtbot, tmp_path):
    from napari_dinomix._layers import geometry_kwargs, window_limits

    viewer, w, root = widget
    rotated = _add_rotated_case(root, tmp_path)
    session = w.session
    plain = session.case_rows()[2].case_id
    session.open_case(plain)
    image_layer, labels_layer = session.image_layer, session.labels_layer
    session.labels_layer.paint((20, 48, 48), 3, refresh=True)
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=10_000)
    image_layer.contrast_limits = (-1000.0, 1000.0)  # the user's own window on this case

    assert session.open_case(rotated)
    assert session.image_layer is image_layer and session.labels_layer is labels_layer  # refilled, not rebuilt
    with Project.open(root) as project:
        volume = project.load_image(rotated)
    expected = geometry_kwargs(volume)
    assert image_layer.data.shape == labels_layer.data.shape == (16, 28, 32)
    assert not np.asarray(labels_layer.data).any()
    for layer in (image_layer, labels_layer):
        assert np.allclose(layer.scale, expected["scale"]) and np.allclose(layer.translate, expected["translate"])
        assert np.allclose(layer.affine.affine_matrix, expected["affine"])
    assert image_layer.name == "rotated CT" and labels_layer.name == "rotated labels"
    assert tuple(image_layer.contrast_limits) == window_limits()  # a case opens in the default window
    assert list(viewer.layers) == [image_layer, labels_layer]
    labels_layer.undo()  # nothing of the other case to undo into
    assert not np.asarray(labels_layer.data).any()

    labels_layer.paint((8, 14, 16), 5, refresh=True)  # saved to this case, not the previous one
    qtbot.waitUntil(lambda: w.save_state == "saved", timeout=10_000)
    with Project.open(root) as project:
        assert 5 in project.load_labels(project.current_revision(rotated).id).array
        assert 5 not in project.load_labels(project.current_revision(plain).id).array

    assert session.open_case(plain)  # back to an unrotated case: no flip left on it
    assert session.image_layer is image_layer
    assert np.allclose(image_layer.affine.affine_matrix, np.eye(4))
    assert np.asarray(labels_layer.data)[20, 48, 48] == 3


def test_a_case_opens_in_new_layers_when_the_user_removed_the_old_ones(widget):
    viewer, w, root = widget
    session = w.session
    rows = session.case_rows()
    session.open_case(rows[2].case_id)
    old_image = session.image_layer
    viewer.layers.remove(old_image)
    assert session.open_case(rows[3].case_id)
    assert session.image_layer is not old_image and session.image_layer in viewer.layers
    assert list(viewer.layers) == [session.image_layer, session.labels_layer]
    assert session.image_layer.name == f"{rows[3].case_id} CT"
