"""Model predictions of the open case on screen, and their uncertainty overlay."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dinomix_core.project import Project


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
