"""Opening cases from the panel: read ahead, read in a worker thread, the same layers refilled."""

from __future__ import annotations

import threading

import numpy as np
import pytest

from dinomix_core.project import Project


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
