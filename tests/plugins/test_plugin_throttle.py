"""Throttle: the first value at once, a burst collapsed into its newest, the last one never lost."""

import time

from napari_dinomix._throttle import Throttle


def test_a_burst_is_passed_on_as_its_first_and_newest_values(qtbot):
    throttle = Throttle(200)
    passed = []
    throttle.passed.connect(lambda value: passed.append((value, time.monotonic())))
    start = time.monotonic()
    for value in range(1, 11):
        throttle.offer(value)
    assert [v for v, _ in passed] == [1]  # at once: a quiet spell's first value is not delayed
    qtbot.waitUntil(lambda: len(passed) == 2, timeout=2000)
    # 2..9 collapsed into the newest, passed on when the interval ends (a coarse QTimer may fire a little early)
    assert passed[1][0] == 10 and passed[1][1] - start >= 0.1
    qtbot.wait(400)
    assert len(passed) == 2  # nothing waits, nothing more comes


def test_flush_passes_on_the_waiting_value_now_and_drop_forgets_it(qtbot):
    throttle = Throttle(60_000)
    passed = []
    throttle.passed.connect(passed.append)
    throttle.offer("step 1")
    throttle.offer("step 2")
    throttle.offer("step 3")
    throttle.flush()  # e.g. the run ended: its last step is shown
    assert passed == ["step 1", "step 3"]
    throttle.flush()
    assert passed == ["step 1", "step 3"]
    throttle.offer("next run, step 1")
    throttle.offer("stale")
    throttle.drop()
    throttle.flush()
    assert passed == ["step 1", "step 3", "next run, step 1"]
