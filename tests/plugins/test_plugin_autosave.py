"""Autosave of label edits into a real project: every kind of edit reaches the store as a draft.

Each test paints into a napari Labels layer showing a phantom case and reads the project
back from disk, so a passing test means the voxels are really saved.
"""

from __future__ import annotations

import shutil
import threading

import numpy as np
import pytest

from dinomix_core.data.phantom import generate_case, phantom_labelmap
from dinomix_core.io import write_image
from dinomix_core.project import Project
from napari.utils._proxies import ReadOnlyWrapper
from napari.utils.interactions import mouse_move_callbacks, mouse_press_callbacks, mouse_release_callbacks

from napari_dinomix._autosave import LabelsAutosave, make_project_saver, replace_labels

Z = 24  # the slice painted on (the small phantom is 48 x 96 x 96, z y x)


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A project with two phantom cases, built once and copied for each test."""
    base = tmp_path_factory.mktemp("autosave")
    root = base / "project"
    project = Project.init(root, label_map=phantom_labelmap())
    ids, truths = [], []
    for index in (0, 1):
        image, labels = generate_case(index, seed=0, size="small")
        path = write_image(image, base / f"case{index}.nii.gz")
        ids.append(project.add_image(path, case_id=f"case{index}").case_id)
        truths.append(labels.array)
    project.close()
    return root, ids, truths


@pytest.fixture
def proj(template, tmp_path):
    root, ids, truths = template
    dest = tmp_path / "project"
    shutil.copytree(root, dest)
    return dest, ids, truths


def drafts(root, case_id):
    with Project.open(root, tidy=False) as project:
        return [r for r in project.revisions(case_id) if r.kind == "human" and not r.final]


def saved_voxels(root, revision_id):
    with Project.open(root, tidy=False) as project:
        return project.load_labels(revision_id).array


def labels_layer(viewer, truth):
    layer = viewer.add_labels(truth.copy(), name="labels")
    layer.brush_size = 5
    return layer


def wait_saved(qtbot, root, case_id, count, timeout=10_000):
    qtbot.waitUntil(lambda: len(drafts(root, case_id)) >= count, timeout=timeout)
    revs = drafts(root, case_id)
    assert len(revs) == count
    return revs[-1]


def test_paint_undo_redo_each_become_a_draft(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    autosave = LabelsAutosave(make_project_saver(root, ids[0]), delay_ms=100)
    states = []
    autosave.state_changed.connect(states.append)
    autosave.attach(layer)
    assert autosave.state == "saved" and not autosave.dirty

    layer.paint((Z, 48, 48), 7)
    painted = np.array(layer.data)
    assert (painted != truths[0]).sum() > 0
    assert autosave.dirty and autosave.state == "unsaved"
    rev = wait_saved(qtbot, root, ids[0], 1)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), painted)
    qtbot.waitUntil(lambda: autosave.state == "saved")
    assert states[:3] == ["unsaved", "saving", "saved"]
    assert autosave.last_saved_at is not None and rev.note == "autosave"

    layer.undo()  # napari fires no paint event here: only the wrapper sees it
    np.testing.assert_array_equal(layer.data, truths[0])
    rev = wait_saved(qtbot, root, ids[0], 2)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), truths[0])

    layer.redo()
    rev = wait_saved(qtbot, root, ids[0], 3)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), painted)
    qtbot.waitUntil(lambda: not autosave.dirty and autosave.state == "saved")
    autosave.close()


def drag(layer, MouseEvent, start_yx, end_yx):
    """A mouse stroke on slice Z, through napari's own mouse callbacks."""
    def event(kind, yx, dragging):
        return ReadOnlyWrapper(MouseEvent(type=kind, is_dragging=dragging, position=(Z, *yx), view_direction=None,
                                          dims_displayed=(1, 2), dims_point=(Z, 0, 0), button=1))

    mouse_press_callbacks(layer, event("mouse_press", start_yx, False))
    mouse_move_callbacks(layer, event("mouse_move", end_yx, True))
    return lambda: mouse_release_callbacks(layer, event("mouse_release", end_yx, False))


def test_mouse_brush_and_eraser_strokes_are_saved_after_release(qtbot, make_napari_viewer_proxy, proj, MouseEvent):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    autosave = LabelsAutosave(make_project_saver(root, ids[0]), delay_ms=100)
    autosave.attach(layer)
    real = layer.__wrapped__  # napari's mouse callbacks take the layer itself, as in the viewer
    real.mode, real.selected_label = "paint", 9

    release = drag(real, MouseEvent, (10, 10), (80, 80))
    qtbot.wait(300)
    assert drafts(root, ids[0]) == []  # a stroke is one edit: nothing is saved half-way
    release()
    painted = np.array(layer.data)
    assert (painted[Z] == 9).sum() > (truths[0][Z] == 9).sum() + 300
    rev = wait_saved(qtbot, root, ids[0], 1)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), painted)

    real.mode = "erase"
    drag(real, MouseEvent, (20, 70), (70, 20))()
    erased = np.array(layer.data)
    assert (erased[Z] == 0).sum() > (painted[Z] == 0).sum()
    rev = wait_saved(qtbot, root, ids[0], 2)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), erased)
    autosave.close()


def test_fill_setitem_replace_and_inplace_writes_are_saved(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    real_save = make_project_saver(root, ids[0])
    calls = []
    autosave = LabelsAutosave(lambda a: calls.append(1) or real_save(a), delay_ms=100)
    autosave.attach(layer)

    layer.contiguous = True
    layer.fill((Z, 2, 2), 3)  # the background around the body on this slice
    filled = np.array(layer.data)
    assert (filled != truths[0]).sum() > 100
    rev = wait_saved(qtbot, root, ids[0], 1)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), filled)

    idx = (np.array([Z, Z, Z]), np.array([40, 41, 42]), np.array([50, 50, 50]))
    layer.data_setitem(idx, 11)
    rev = wait_saved(qtbot, root, ids[0], 2)
    assert (saved_voxels(root, rev.id)[idx] == 11).all()

    layer.data[Z, 60:63, 60:63] = 12  # a tool writing straight into the array ...
    layer.refresh()                   # ... then refreshing: only refresh() tells us
    rev = wait_saved(qtbot, root, ids[0], 3)
    assert (saved_voxels(root, rev.id)[Z, 60:63, 60:63] == 12).all()

    blank = np.zeros_like(truths[0])
    layer.data = blank  # data replacement on the same case is an edit too
    rev = wait_saved(qtbot, root, ids[0], 4)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), blank)
    qtbot.waitUntil(lambda: autosave.state == "saved")

    layer.contour = 1  # refresh without a voxel change: no new revision
    assert autosave.dirty
    qtbot.waitUntil(lambda: autosave.state == "saved")
    qtbot.wait(200)
    assert len(drafts(root, ids[0])) == 4 and len(calls) == 4  # same voxels: save_fn not even called
    autosave.close()


def test_quick_strokes_save_once_in_a_worker_thread(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    real_save = make_project_saver(root, ids[0])
    threads = []

    def save(array):
        threads.append(threading.current_thread())
        return real_save(array)

    autosave = LabelsAutosave(save, delay_ms=400)
    autosave.attach(layer)
    for i in range(8):
        layer.paint((Z, 20 + 6 * i, 30), 5)
        qtbot.wait(15)  # the event loop runs between strokes, as with a mouse
    assert threads == []  # still inside the debounce window
    final = np.array(layer.data)
    rev = wait_saved(qtbot, root, ids[0], 1)
    qtbot.waitUntil(lambda: autosave.state == "saved")
    qtbot.wait(500)
    assert len(threads) == 1 and len(drafts(root, ids[0])) == 1
    assert threads[0] is not threading.main_thread()
    np.testing.assert_array_equal(saved_voxels(root, rev.id), final)
    autosave.close()


def test_edit_during_a_running_save_is_saved_next(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    real_save = make_project_saver(root, ids[0])
    started, release = threading.Event(), threading.Event()

    def slow_save(array):
        started.set()
        assert release.wait(10)
        return real_save(array)

    autosave = LabelsAutosave(slow_save, delay_ms=50)
    autosave.attach(layer)
    layer.paint((Z, 30, 30), 4)
    qtbot.waitUntil(started.is_set)
    assert autosave.state == "saving"
    layer.paint((Z, 70, 70), 9)  # arrives while the first save runs
    final = np.array(layer.data)
    release.set()
    rev = wait_saved(qtbot, root, ids[0], 2)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), final)
    qtbot.waitUntil(lambda: not autosave.dirty and autosave.state == "saved")
    autosave.close()


def test_detach_flushes_without_waiting_for_the_timer(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    autosave = LabelsAutosave(make_project_saver(root, ids[0]), delay_ms=60_000)
    saved = []
    autosave.saved.connect(saved.append)
    autosave.attach(layer)
    layer.paint((Z, 50, 50), 6)
    painted = np.array(layer.data)
    assert autosave.detach() is True
    revs = drafts(root, ids[0])
    assert len(revs) == 1 and [r.id for r in saved] == [revs[0].id]
    np.testing.assert_array_equal(saved_voxels(root, revs[0].id), painted)
    layer.paint((Z, 10, 10), 6)  # unhooked: no longer watched
    assert not autosave.dirty and "undo" not in vars(layer.__wrapped__)
    autosave.close()


def test_failed_save_keeps_the_edit_and_a_later_flush_saves_it(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    real_save = make_project_saver(root, ids[0])
    disk_full = [True]

    def save(array):
        if disk_full[0]:
            raise OSError(28, "No space left on device")
        return real_save(array)

    autosave = LabelsAutosave(save, delay_ms=100)
    errors = []
    autosave.error.connect(errors.append)
    autosave.attach(layer)
    layer.paint((Z, 40, 40), 8)
    painted = np.array(layer.data)
    qtbot.waitUntil(lambda: autosave.state == "error")
    assert autosave.dirty and drafts(root, ids[0]) == []
    assert len(errors) == 1 and "No space left on device" in errors[0] and "\n" not in errors[0]
    assert autosave.flush() is False and len(errors) == 2  # still failing: still dirty

    disk_full[0] = False
    assert autosave.flush() is True
    assert not autosave.dirty and autosave.state == "saved"
    rev = drafts(root, ids[0])[-1]
    np.testing.assert_array_equal(saved_voxels(root, rev.id), painted)
    autosave.close()


def test_removed_case_error_is_readable_and_retried_at_the_next_edit(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    autosave = LabelsAutosave(make_project_saver(root, ids[0]), delay_ms=100)
    errors = []
    autosave.error.connect(errors.append)
    autosave.attach(layer)
    with Project.open(root) as project:
        project.remove_case(ids[0])
    layer.paint((Z, 40, 40), 2)
    qtbot.waitUntil(lambda: bool(errors))
    assert ids[0] in errors[0] and "removed" in errors[0] and autosave.dirty
    with Project.open(root) as project:
        project.restore_case(ids[0])
    layer.paint((Z, 60, 60), 2)  # the next edit retries and saves both strokes
    final = np.array(layer.data)
    rev = wait_saved(qtbot, root, ids[0], 1)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), final)
    qtbot.waitUntil(lambda: autosave.state == "saved")
    autosave.close()


def test_case_switch_leaves_no_undo_into_the_old_case(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()

    # The napari fact the helper exists for: plain data replacement keeps the undo history.
    plain = viewer.add_labels(truths[0].copy(), name="plain")
    plain.brush_size = 5
    plain.paint((Z, 48, 48), 7)
    plain.data = truths[1].copy()
    plain.undo()
    assert (np.asarray(plain.data) != truths[1]).any(), "napari now resets history on data=; simplify replace_labels"

    layer = labels_layer(viewer, truths[0])
    autosave = LabelsAutosave(make_project_saver(root, ids[0]), delay_ms=100)
    autosave.attach(layer)
    layer.paint((Z, 48, 48), 7)
    case0 = np.array(layer.data)
    assert autosave.switch_case(layer, truths[1].copy(), make_project_saver(root, ids[1])) is True
    assert len(drafts(root, ids[0])) == 1  # flushed before the switch
    np.testing.assert_array_equal(saved_voxels(root, drafts(root, ids[0])[0].id), case0)
    assert not autosave.dirty and autosave.state == "saved"

    layer.undo()  # nothing to undo in the new case
    layer.redo()
    np.testing.assert_array_equal(layer.data, truths[1])
    layer.paint((Z, 30, 60), 5)
    case1 = np.array(layer.data)
    rev = wait_saved(qtbot, root, ids[1], 1)
    np.testing.assert_array_equal(saved_voxels(root, rev.id), case1)
    assert len(drafts(root, ids[0])) == 1  # the old case is left alone
    autosave.close()


def test_replace_labels_and_mark_clean(qtbot, make_napari_viewer_proxy, proj):
    root, ids, truths = proj
    viewer = make_napari_viewer_proxy()
    layer = labels_layer(viewer, truths[0])
    layer.paint((Z, 48, 48), 7)
    replace_labels(layer, truths[1].copy())
    layer.undo()
    np.testing.assert_array_equal(layer.data, truths[1])

    calls = []
    autosave = LabelsAutosave(lambda a: calls.append(a) or "rev", delay_ms=100)
    autosave.attach(layer)
    layer.paint((Z, 48, 48), 7)
    autosave.mark_clean()  # e.g. the widget saved it explicitly (Accept)
    assert not autosave.dirty and autosave.state == "saved"
    assert autosave.flush() is True
    qtbot.wait(250)
    assert calls == []  # nothing left to save: the clean data is the baseline now
    autosave.close()
