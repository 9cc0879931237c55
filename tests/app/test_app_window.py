"""The desktop app: starts on a project, every menu action runs, screenshot, closing, settings."""

from __future__ import annotations

import numpy as np
import pytest
from _screenshot_checks import class_colours_seen, not_blank
from PIL import Image

from dinomix_core.data.phantom import phantom_labelmap
from dinomix_app.shortcuts import SHORTCUTS
from dinomix_core.project import Project

TINY_TEACHER = dict(depth=1, embed_dim=32, num_heads=2)
TINY = dict(student_width=4, student_depth=2, patch_size=(16, 32, 32), batch_labeled=1, batch_unlabeled=1)
DIALOG_ACTIONS = ("New project…", "Open project…", "Add scans…", "Add DICOM folder…", "Export nnU-Net data set…",
                  "Export 3D Slicer segmentations…", "Quit")


@pytest.fixture
def env(tmp_path, monkeypatch):
    monkeypatch.setenv("DINOMIX_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.setenv("DINOMIX_SAMPLE_DIR", str(tmp_path / "sample"))
    monkeypatch.setenv("DINOMIX_CACHE_DIR", str(tmp_path / "cache"))
    from dinomix_core.project.sample import create_sample_project

    return create_sample_project()


@pytest.fixture
def window(env, qtbot):
    from dinomix_app.main_window import MainWindow

    win = MainWindow(env, autosave_delay_ms=150)
    win.panel.train_panel.config_overrides = dict(TINY)
    win.panel.train_panel.teacher_overrides = TINY_TEACHER
    yield win
    dispose(win, qtbot)


def dispose(win, qtbot) -> None:
    """Close like a user would (the window deletes itself), so no viewer outlives the test."""
    from shiboken6 import isValid

    if isValid(win):
        win.confirm_stop_training = lambda: True
        win.close()
    qtbot.wait(50)


def test_app_opens_project_with_a_labeled_case(window):
    assert window.session.root is not None
    assert window.session.case_id is not None
    assert window.session.labels_layer.data.any()
    assert "project:" in window.project_label.text()
    assert "CPU" in window.device_label.text() or "CUDA" in window.device_label.text()


def test_every_menu_action_without_a_file_dialog_runs(window, qtbot):
    ran = []
    for text, action in list(window.actions.items()):
        if text in DIALOG_ACTIONS or text in SHORTCUTS:  # shortcut ids repeat the text entries
            continue
        action.trigger()
        qtbot.wait(10)
        ran.append(text)
    assert {"Save draft", "Accept as label", "Next suggested case", "Window: Bone", "Keyboard shortcuts",
            "About DINO-Mix Studio", "Preferences…", "Show / hide uncertainty"} <= set(ran)
    # the window presets set the CT window of the image layer
    window.actions["Window: Lung"].trigger()
    assert tuple(window.session.image_layer.contrast_limits) == (-1200.0, 200.0)
    assert "RANDOM" in window.about_text() or "teacher weights" in window.about_text()


def test_shortcuts_do_not_clash_with_napari():
    """Compared as app-model key codes, the same representation napari registers its keys in."""
    from app_model.backends.qt import qkeysequence2modelkeybinding
    from app_model.types import KeyBinding
    from napari.utils.shortcuts import _default_shortcuts
    from qtpy.QtGui import QKeySequence

    from dinomix_app.shortcuts import NAPARI_OWNED, SHORTCUTS

    napari_keys = {KeyBinding.from_int(int(combo)).to_int() for combos in _default_shortcuts.values() for combo in combos}
    napari_keys |= {qkeysequence2modelkeybinding(QKeySequence(k)).to_int() for k in ("Ctrl+Z", "Ctrl+Shift+Z")}
    ours = {a: qkeysequence2modelkeybinding(QKeySequence(k)).to_int() for a, (k, _w) in SHORTCUTS.items()}
    assert len(set(ours.values())) == len(ours), "two app actions share a key"
    clashes = {a: SHORTCUTS[a][0] for a, code in ours.items() if code in napari_keys and a not in NAPARI_OWNED}
    assert not clashes, clashes
    assert all(ours[a] in napari_keys for a in NAPARI_OWNED)  # those really are napari's keys


def test_screenshot_writes_the_window_with_overlay_colours(env, tmp_path, qtbot):
    from dinomix_app.cli import main

    out = tmp_path / "shots" / "app.png"
    assert main(["--screenshot", str(out), str(env)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[0] > 400 and image.shape[1] > 800
    assert not_blank(image)
    assert len(class_colours_seen(image, phantom_labelmap().colors[1:], 0.5)) >= 2, "no class colours in the screenshot"


def test_the_canvas_has_its_own_native_window_on_x11_and_still_draws(window, qtbot, tmp_path):
    """So a status-bar or panel repaint is not composed through (software) OpenGL with the canvas."""
    from qtpy.QtCore import Qt
    from qtpy.QtWidgets import QApplication

    window.show()
    qtbot.waitExposed(window)
    qtbot.wait(200)
    canvas = window.qt_viewer.canvas.native
    if QApplication.platformName() != "xcb":
        assert not canvas.testAttribute(Qt.WA_NativeWindow)
        return
    assert canvas.windowHandle() is not None and canvas.windowHandle() is not window.windowHandle()
    assert window.dock.windowHandle() is None and window.statusBar().windowHandle() is None, "panels stay raster"
    assert window.grab().save(str(tmp_path / "window.png"))
    pixels = np.asarray(Image.open(tmp_path / "window.png").convert("RGB"))
    assert len(class_colours_seen(pixels, phantom_labelmap().colors[1:], 0.5)) >= 2, "the labels are not drawn"


def test_bad_project_argument_is_one_line_exit_2(tmp_path, capsys):
    from dinomix_app.cli import main

    assert main([str(tmp_path / "nope")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not a DINO-Mix project" in err[0]


def test_settings_persist_across_a_restart(window, qtbot, env, tmp_path):
    from dinomix_app.main_window import MainWindow

    dialog = window.settings_dialog()
    dialog.threads.setValue(1)
    dialog.weights_dir.setText(str(tmp_path / "weights"))
    dialog.accept()
    window.panel.shutdown()
    again = MainWindow(None)
    assert again.settings.worker_threads == 1
    assert again.settings.weights_dir == str(tmp_path / "weights")
    assert str(env.resolve()) in again.settings.recent_projects
    assert again.panel.train_panel.num_threads == 1
    dispose(again, qtbot)


def test_export_nnunet_from_the_menu_runs_in_the_background(window, qtbot, tmp_path):
    results = []
    window.export("nnunet", tmp_path / "export", done=lambda ok, value: results.append((ok, value)))
    qtbot.waitUntil(lambda: bool(results), timeout=30_000)
    assert results[0][0], results
    assert len(list((tmp_path / "export" / "labelsTr").glob("*.nii.gz"))) == 2


@pytest.mark.parametrize("answer", [False, True])
def test_closing_while_training_asks_and_keeps_the_checkpoint(window, qtbot, answer):
    window.panel.train_panel.method.setCurrentText("mean-teacher")
    window.panel.train_panel.steps.setValue(100_000)
    assert window.panel.train_panel.start()
    qtbot.waitUntil(lambda: window.jobs.state == "running", timeout=240_000)
    asked = []
    root = window.session.root
    window.confirm_stop_training = lambda: asked.append(True) or answer
    window.show()
    closed = window.close()
    assert asked == [True]
    if not answer:
        assert not closed and window.jobs.training  # "go back": nothing stopped
        window.jobs.stop_training()
        qtbot.waitUntil(lambda: not window.jobs.training, timeout=120_000)
    else:
        assert closed  # and the worker has ended: its checkpoint is on disk (below)
    with Project.open(root, tidy=False) as p:
        run = p.latest_run()
        assert run.status == "cancelled"
        assert (p.runs_dir(run.id) / "last.pt").exists()


def test_step_events_reach_the_readouts_once_a_second_and_the_last_step_is_shown(window, qtbot):
    """Every step is kept for the loss plot; the bars and the status bar change at most once a
    second (one repaint each time), and the run's last step shows when it ends."""
    from dinomix_core.engine.events import StepEvent
    from napari_dinomix import _jobs

    jobs, panel = window.jobs, window.panel.train_panel
    shown = []
    jobs.progress.connect(lambda ev: shown.append(ev.step))
    for step in range(1, 31):  # a burst, faster than the readouts change
        jobs._on_train_event(StepEvent(step, 30, {"total": 1.0 / step}, 0.01, 0.1, 0.1 * (30 - step)))
    assert shown == [1] and panel.plot.steps == list(range(1, 31))
    assert "step 1 / 30" in window.training_label.text() and panel.progress.value() == 1
    qtbot.waitUntil(lambda: shown == [1, 30], timeout=3 * _jobs.PROGRESS_MS)
    assert "step 30 / 30" in window.training_label.text() and panel.progress.value() == 30
    qtbot.wait(_jobs.PROGRESS_MS + 200)  # a quiet spell: the next step shows at once
    jobs._on_train_event(StepEvent(31, 40, {"total": 0.1}, 0.01, 0.1, 0.9))
    assert shown == [1, 30, 31]
    jobs._on_train_event(StepEvent(32, 40, {"total": 0.1}, 0.01, 0.1, 0.8))
    jobs._progress.flush()  # what the end of a run does
    assert shown == [1, 30, 31, 32] and panel.progress.value() == 32


def test_reopening_shows_the_case_left_open_and_the_window_as_it_was_left(env, qtbot, tmp_path):
    """Also with no PROJECT argument: the most recent project reopens (here for a screenshot)."""
    from qtpy.QtCore import Qt

    from dinomix_app.cli import main
    from dinomix_app.main_window import MainWindow

    first = MainWindow(env, autosave_delay_ms=150)
    first.show()
    qtbot.waitExposed(first)
    first.session.open_case("phantom_001")  # not the case a project opens on by default (phantom_000)
    first.resize(1300, 900)  # not the default 1500 x 950
    first.resizeDocks([first.dock], [560], Qt.Horizontal)
    qtbot.wait(100)
    size, dock_width = (first.width(), first.height()), first.dock.width()
    assert size[0] == 1300 and dock_width > 500
    dispose(first, qtbot)

    again = MainWindow(env, autosave_delay_ms=150)
    again.show()
    qtbot.waitExposed(again)
    qtbot.wait(100)
    assert again.session.case_id == "phantom_001"
    assert (again.width(), again.height()) == size
    assert abs(again.dock.width() - dock_width) <= 2
    assert not again.windowIcon().isNull()
    dispose(again, qtbot)

    out = tmp_path / "reopened.png"
    assert main(["--screenshot", str(out)]) == 0
    image = np.asarray(Image.open(out).convert("RGB"))
    assert image.shape[:2] == size[::-1]
    assert len(class_colours_seen(image, phantom_labelmap().colors[1:], 0.5)) >= 2, "no case was reopened"


def test_the_title_marks_unsaved_edits(window, qtbot):
    layer = window.session.labels_layer
    assert "[*]" in window.windowTitle() and not window.isWindowModified()
    layer.paint((layer.data.shape[0] // 2, 10, 10), 3, refresh=True)
    qtbot.waitUntil(window.isWindowModified, timeout=2000)
    qtbot.waitUntil(lambda: not window.isWindowModified(), timeout=10000)  # the autosave wrote it
    assert window.session.autosave.state == "saved"


def test_a_hand_edited_window_layout_is_ignored_not_fatal(env, qtbot):
    import json

    from dinomix_app.main_window import MainWindow
    from dinomix_app.settings import config_dir

    config_dir().mkdir(parents=True, exist_ok=True)
    (config_dir() / "settings.json").write_text(json.dumps({"window_geometry": "é not base64", "window_state": "%%"}))
    win = MainWindow(None)
    assert (win.width(), win.height()) == (1500, 950)  # the default size
    dispose(win, qtbot)
