"""ClassCounter: counts in a worker thread, delivers on the GUI thread, newest request only."""

import threading

import numpy as np

from napari_dinomix import _class_counter
from napari_dinomix._class_counter import ClassCounter


def test_requests_made_during_a_count_merge_and_only_the_newest_is_shown(qtbot, monkeypatch):
    release = threading.Event()
    counted_in = []

    def slow_counts(array, n):
        counted_in.append(threading.current_thread().name)
        if len(counted_in) == 1:
            release.wait(5)  # the first count is still running while the next requests arrive
        return np.bincount(array.reshape(-1), minlength=n)

    monkeypatch.setattr(_class_counter, "label_counts", slow_counts)
    counter = ClassCounter()
    shown = []
    counter.counted.connect(lambda counts: shown.append((threading.current_thread() is threading.main_thread(),
                                                          counts.tolist())))
    counter.request(np.full((2, 2, 2), 1, np.uint8), 3)
    counter.request(np.full((2, 2, 2), 2, np.uint8), 3)  # superseded before it starts
    counter.request(np.array([[[0, 2]]], np.uint8), 3)
    release.set()
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    qtbot.wait(100)
    assert shown == [(True, [1, 0, 1])]  # the first count's result is dropped, the middle one never runs
    assert len(counted_in) == 2 and all(name.startswith("dinomix-class-counts") for name in counted_in)


def test_forget_drops_a_count_in_flight(qtbot):
    counter = ClassCounter()
    shown = []
    counter.counted.connect(shown.append)
    counter.request(np.ones((4, 4, 4), np.uint8), 2)
    counter.forget()  # e.g. the case was closed
    qtbot.wait(300)
    assert shown == []
    counter.request(np.ones((1, 1, 3), np.uint8), 2)
    qtbot.waitUntil(lambda: bool(shown), timeout=5000)
    assert shown[0].tolist() == [0, 3]
