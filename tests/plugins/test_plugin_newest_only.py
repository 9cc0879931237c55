"""NewestOnly: runs in a worker thread, delivers on the GUI thread, only the newest request."""

import threading

import numpy as np

from napari_dinomix._newest_only import NewestOnly


def test_requests_made_during_a_run_merge_and_only_the_newest_is_delivered(qtbot):
    release = threading.Event()
    ran_in = []

    def count(array, n):
        ran_in.append(threading.current_thread().name)
        if len(ran_in) == 1:
            release.wait(5)  # the first run is still going while the next requests arrive
        return np.bincount(array.reshape(-1), minlength=n)

    runner = NewestOnly("test")
    delivered = []
    runner.done.connect(lambda counts, tag: delivered.append(
        (threading.current_thread() is threading.main_thread(), counts.tolist(), tag)))
    runner.request(count, np.full((2, 2, 2), 1, np.uint8), 3, tag="a")
    runner.request(count, np.full((2, 2, 2), 2, np.uint8), 3, tag="b")  # superseded before it starts
    runner.request(count, np.array([[[0, 2]]], np.uint8), 3, tag="c")
    release.set()
    qtbot.waitUntil(lambda: bool(delivered), timeout=5000)
    qtbot.wait(100)
    assert delivered == [(True, [1, 0, 1], "c")]  # a's result is dropped, b never runs
    assert len(ran_in) == 2 and all(name.startswith("dinomix-test") for name in ran_in)


def test_forget_drops_a_run_in_flight_and_errors_come_back_as_one_line(qtbot):
    runner = NewestOnly("test")
    delivered, failed = [], []
    runner.done.connect(lambda result, tag: delivered.append(result))
    runner.failed.connect(lambda text, tag: failed.append((text, tag)))
    runner.request(sum, [1, 2])
    runner.forget()  # e.g. the case was closed
    qtbot.wait(300)
    assert delivered == []
    runner.request(sum, [1, 2, 3])
    qtbot.waitUntil(lambda: bool(delivered), timeout=5000)
    assert delivered == [6]

    def broken(path):
        raise OSError(f"{path}: cannot read")

    runner.request(broken, "x.nii.gz", tag=7)
    qtbot.waitUntil(lambda: bool(failed), timeout=5000)
    assert failed == [("x.nii.gz: cannot read", 7)]
