"""The worker bridge runs real jobs in real spawned processes and reports them on the main thread.

Targets live in ``_worker_targets.py`` (Qt-free); the child imports them because a "spawn"
child starts with the test's ``sys.path``. Spawning costs seconds (torch import), so one
streamed job is shared by several checks and the file starts six processes at most.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import time
from dataclasses import dataclass, field

import numpy as np
from multiprocessing import resource_tracker
import pytest
from qtpy.QtCore import QEventLoop, QTimer

from napari_dinomix._worker import JobOutcome, JobWorker, _died_outcome, _open_message
from napari_dinomix._worker_child import OOB_MIN_BYTES, WORKER_NICENESS, _pack, default_num_threads

SHAPE = (150, 512, 512)  # z, y, x: 39 MB of uint8 labels + 79 MB of float16 uncertainty


@dataclass
class Run:
    """What one job did, as seen from the GUI side."""

    worker: JobWorker
    events: list = field(default_factory=list)
    on_main_thread: list = field(default_factory=list)
    outcomes: list = field(default_factory=list)
    started: int = 0
    max_gap_s: float = 0.0
    seconds: float = 0.0


def _run(worker: JobWorker, *, timeout_s: float = 90.0, after_first_event=None) -> Run:
    """Start ``worker`` and spin the Qt event loop until ``finished`` (or the timeout), while
    a 10 ms probe timer measures the longest stall of the loop."""
    run = Run(worker)
    loop = QEventLoop()
    last = [time.perf_counter()]

    def probe():
        now = time.perf_counter()
        run.max_gap_s = max(run.max_gap_s, now - last[0])
        last[0] = now

    def on_event(ev):
        run.on_main_thread.append(threading.current_thread() is threading.main_thread())
        run.events.append(ev)
        if len(run.events) == 1 and after_first_event is not None:
            after_first_event(worker)

    def on_finished(outcome):
        run.outcomes.append(outcome)
        loop.quit()

    probe_timer = QTimer()
    probe_timer.setInterval(10)
    probe_timer.timeout.connect(probe)
    guard = QTimer()
    guard.setSingleShot(True)
    guard.timeout.connect(loop.quit)
    worker.started.connect(lambda: setattr(run, "started", run.started + 1))
    worker.event.connect(on_event)
    worker.finished.connect(on_finished)
    t0 = time.perf_counter()
    probe_timer.start()
    guard.start(int(timeout_s * 1000))
    worker.start()
    last[0] = time.perf_counter()
    loop.exec()
    run.seconds = time.perf_counter() - t0
    probe_timer.stop()
    assert run.outcomes, f"the job did not finish within {timeout_s} s"
    _spin(0.15)  # a second `finished` would show up here
    return run


def _spin(seconds: float) -> None:
    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def _assert_reaped(pid: int) -> None:
    """The child was joined: it is neither running nor a zombie of this process."""
    with pytest.raises(ChildProcessError):
        os.waitpid(pid, os.WNOHANG)


def _open_fds() -> set:
    """What this process's descriptors point to (Linux /proc; empty elsewhere)."""
    out = set()
    if not os.path.isdir("/proc/self/fd"):
        return out
    for fd in os.listdir("/proc/self/fd"):
        try:
            out.add(os.readlink(f"/proc/self/fd/{fd}"))
        except OSError:
            pass
    return out


@pytest.fixture(scope="module")
def streamed(qapp):
    """One job: 20 events, ~1 s of torch work, then a large label + uncertainty result."""
    resource_tracker.ensure_running()  # multiprocessing's one helper process per GUI session, not per job
    fds_before = _open_fds()
    worker = JobWorker("_worker_targets:stream_and_compute", {"events": 20, "compute_s": 1.0, "shape": SHAPE})
    run = _run(worker)
    run.fds_new = _open_fds() - fds_before
    return run


def test_events_arrive_in_order_on_the_main_thread(streamed):
    assert streamed.started == 1
    assert [ev.done for ev in streamed.events] == list(range(20))
    assert [ev.message for ev in streamed.events][:2] == ["event 0", "event 1"]
    assert streamed.on_main_thread == [True] * 20


def test_a_large_result_comes_back_whole_and_writeable(streamed):
    assert len(streamed.outcomes) == 1  # finished exactly once
    outcome = streamed.outcomes[0]
    assert isinstance(outcome, JobOutcome)
    assert outcome.status == "completed" and outcome.exitcode == 0 and outcome.error is None
    labels, uncertainty = outcome.value["labels"], outcome.value["uncertainty"]
    assert labels.shape == SHAPE and labels.dtype == np.uint8
    assert uncertainty.shape == SHAPE and uncertainty.dtype == np.float16
    np.testing.assert_array_equal(labels[:, 7, 9], np.arange(SHAPE[0]) % 14)
    np.testing.assert_array_equal(uncertainty[3, 5], np.linspace(0, 1, SHAPE[2], dtype=np.float16))
    # A labels layer must be paintable: the arrays are writeable without a copy.
    assert labels.flags.writeable and uncertainty.flags.writeable
    labels[0, 0, 0] = 9
    assert labels[0, 0, 0] == 9


def test_the_child_limits_its_threads_ignores_ctrl_c_and_gets_a_cancel_token(streamed):
    value = streamed.outcomes[0].value
    assert value["sigint_ignored"] is True  # Ctrl+C in the GUI's terminal must not kill the job
    assert value["torch_threads"] == default_num_threads() == os.cpu_count()
    assert value["omp_env"] == str(default_num_threads())
    assert value["omp_wait_policy"] == "PASSIVE"  # idle OpenMP threads sleep instead of spinning
    assert value["cancel_is_token"] is True
    # The job yields the CPU to the GUI: it runs niced relative to the process that started it.
    assert value["niceness"] >= min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)


def test_the_event_loop_stays_responsive_while_the_child_computes(streamed):
    # Covers the spawn, 1 s of computing and receiving ~118 MB of arrays.
    assert streamed.max_gap_s < 0.2, f"the Qt event loop stalled for {streamed.max_gap_s * 1000:.0f} ms"


def test_the_finished_process_is_joined_and_its_pipe_closed(streamed):
    assert not streamed.worker.running
    _assert_reaped(streamed.worker.pid)
    # Only the result's mapping stays open (Python's mmap keeps a descriptor), as long as its
    # arrays live; the pipe, the process sentinel and the buffer file's name are gone.
    assert len(streamed.fds_new) <= 1, f"descriptors left open: {streamed.fds_new}"
    assert all("dinomix-job-" in fd and fd.endswith("(deleted)") for fd in streamed.fds_new), streamed.fds_new


def test_a_raising_target_fails_with_its_message(qapp):
    run = _run(JobWorker("_worker_targets:raise_input_error", {"path": "/data/scan.png"}))
    assert [ev.stage for ev in run.events] == ["loading"]  # the event sent before the error arrived
    (outcome,) = run.outcomes
    assert outcome.status == "failed"
    assert outcome.message == "/data/scan.png: is not a CT volume. Fix: choose a .nii.gz image."
    assert "Traceback" in outcome.error and "DinomixInputError" in outcome.error
    assert outcome.exitcode == 0


def test_cancel_stops_a_job_that_checks_its_token(qapp):
    run = _run(JobWorker("_worker_targets:loop_until_cancelled", {}), after_first_event=lambda w: w.cancel())
    (outcome,) = run.outcomes
    assert outcome.status == "cancelled", outcome
    assert outcome.message.startswith("stopped after") and outcome.message.endswith("token() is True")
    assert run.seconds < 60 and len(run.events) >= 1
    _assert_reaped(run.worker.pid)


def test_sigkill_of_the_child_gives_a_readable_failure_and_the_gui_lives_on(qapp):
    ticks = []
    ticker = QTimer()
    ticker.setInterval(20)
    ticker.timeout.connect(lambda: ticks.append(time.perf_counter()))
    ticker.start()
    worker = JobWorker("_worker_targets:sleep_ignoring_cancel", {"sleep_s": 60})
    run = _run(worker, after_first_event=lambda w: os.kill(w.pid, signal.SIGKILL))
    ticks_during_job = len(ticks)
    (outcome,) = run.outcomes
    assert outcome.status == "failed" and outcome.exitcode == -signal.SIGKILL
    assert "stopped unexpectedly (killed by signal 9 (SIGKILL), possibly out of memory)" in outcome.message
    assert outcome.message.endswith("Your labels are saved.")
    assert run.seconds < 30
    # The event loop kept turning through the kill and keeps turning after it.
    n = len(ticks)
    _spin(0.3)
    ticker.stop()
    assert ticks_during_job >= 5 and len(ticks) - n >= 5
    _assert_reaped(worker.pid)


def test_close_while_running_cancels_then_kills_and_finishes_once(qapp):
    worker = JobWorker("_worker_targets:sleep_ignoring_cancel", {"sleep_s": 60})
    outcomes = []
    worker.finished.connect(outcomes.append)
    seen = []
    worker.event.connect(seen.append)
    worker.start()
    deadline = time.monotonic() + 60
    while not seen and time.monotonic() < deadline:
        _spin(0.05)
    assert seen, "the job never started"
    t0 = time.monotonic()
    worker.close()
    assert time.monotonic() - t0 < 5  # waits ~2 s for the cancel, then kills
    _spin(0.15)
    assert len(outcomes) == 1 and not worker.running
    assert outcomes[0].status == "cancelled" and "force-stopped" in outcomes[0].message
    _assert_reaped(worker.pid)
    worker.close()  # a second close is harmless
    assert len(outcomes) == 1


def test_large_buffers_travel_out_of_band_and_small_ones_in_the_pipe():
    big = np.arange(OOB_MIN_BYTES // 4 * 5, dtype=np.float32).reshape(-1, 5)
    small = np.ones((3, 4), dtype=np.int16)
    message, path = _pack("result", ({"big": big, "small": small, "note": "x"},))
    assert message[0] == "oob" and os.path.exists(path)
    assert len(message[2]) < 4096  # only the small rest goes through the pipe
    kind, value = _open_message(message)
    assert kind == "result" and not os.path.exists(path)  # unlinked once mapped
    np.testing.assert_array_equal(value["big"], big)
    np.testing.assert_array_equal(value["small"], small)
    assert value["note"] == "x"
    plain, no_path = _pack("event", (small,))
    assert plain[0] == "event" and no_path is None


def test_deaths_are_explained_in_words():
    segv = _died_outcome("napari_dinomix._job_targets:predict_cases", -11, False)
    assert segv.status == "failed"
    assert segv.message == ("The prediction worker stopped unexpectedly (killed by signal 11 (SIGSEGV), a crash "
                            "in native code). Your labels are saved; the prediction can be run again.")
    oom = _died_outcome("dinomix_core.engine.jobs:run_train_job", -9, False)
    assert oom.message == ("The training worker stopped unexpectedly (killed by signal 9 (SIGKILL), possibly out "
                           "of memory). Your labels are saved; the last checkpoint can be resumed.")
    assert "exited with code 3" in _died_outcome("a:b", 3, False).message
    assert _died_outcome("a:run_train_job", -9, True).status == "cancelled"


def test_a_malformed_target_is_refused_before_any_process_starts():
    with pytest.raises(ValueError, match="'package.module:function'"):
        JobWorker("dinomix_core.engine.jobs.run_train_job", {})
    with pytest.raises(ValueError, match="num_threads"):
        JobWorker("a:b", {}, num_threads=0)


# Tiny settings as in tests/engine/_engine_settings.py (not importable from here).
# Supervised on one labeled case: the job's end-of-run validation of every labeled case is
# most of its time (125 windows per small case), so fewer cases keep this test short.
_TINY_CONFIG = dict(method="supervised", steps=2, student_width=4, student_depth=2, patch_size=(16, 32, 32),
                    batch_labeled=1, batch_unlabeled=1, checkpoint_every=1)


def test_a_real_tiny_training_job_streams_engine_events(qapp, tmp_path):
    from dinomix_core.data.phantom import generate_case, phantom_labelmap
    from dinomix_core.engine.events import CheckpointEvent, FinishedEvent, StageEvent, StepEvent, ValidationEvent
    from dinomix_core.engine.jobs import TrainJobSpec
    from dinomix_core.io import write_image
    from dinomix_core.project import Project

    root = tmp_path / "project"
    project = Project.init(root, label_map=phantom_labelmap())
    image, labels = generate_case(0, seed=0, size="small")  # 48 x 96 x 96 (z, y, x)
    case_id = project.add_image(write_image(image, tmp_path / "case0.nii.gz"), case_id="case0").case_id
    project.save_labels(case_id, labels)
    project.close()
    spec = TrainJobSpec(project_dir=str(root), config=_TINY_CONFIG, predict_unlabeled=False, device="cpu")

    run = _run(JobWorker("dinomix_core.engine.jobs:run_train_job", spec), timeout_s=120)

    (outcome,) = run.outcomes
    assert outcome.status == "completed", outcome
    finished = outcome.value
    assert isinstance(finished, FinishedEvent) and finished.steps_done == 2 and finished.run_id is not None
    assert outcome.message == finished.message and outcome.exitcode == 0
    assert all(run.on_main_thread)
    steps = [ev.step for ev in run.events if isinstance(ev, StepEvent)]
    assert steps == [1, 2]
    assert any(isinstance(ev, CheckpointEvent) for ev in run.events)
    stages = [ev.stage for ev in run.events if isinstance(ev, StageEvent)]
    assert stages[0] == "loading" and "training" in stages and stages[-1] == "done"
    assert any(isinstance(ev, ValidationEvent) for ev in run.events)
    assert isinstance(run.events[-1], FinishedEvent)  # the engine's own last event came through too
    with Project.open(root) as project:
        assert project.latest_run().status == "completed"


def test_the_child_module_imports_no_gui_and_no_torch():
    # The child imports it before anything else: no Qt/napari ever, and torch only after
    # the thread limits are set (OMP_NUM_THREADS is read once, at torch's import).
    code = ("import sys, napari_dinomix._worker_child; "
            "bad = sorted(m for m in sys.modules if m.split('.')[0] in ('qtpy', 'PySide6', 'PyQt5', 'napari', 'torch')); "
            "print(bad)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True)
    assert out.stdout.strip() == "[]", out.stdout


# --- the standby process ------------------------------------------------------------------


def _wait_for(predicate, timeout_s: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        _spin(0.05)
    return predicate()


@pytest.fixture
def prewarming(qapp, monkeypatch):
    import napari_dinomix._worker as bridge

    monkeypatch.setattr(bridge, "_REWARM_DELAY_MS", 50)
    yield bridge
    bridge.stop_prewarming()


def test_a_prewarmed_standby_runs_the_next_job_then_a_new_standby_waits(prewarming):
    prewarming.prewarm_worker(None)
    first = prewarming.standby_pid()
    assert first is not None
    prewarming.prewarm_worker(None)  # asking again keeps the one that waits
    assert prewarming.standby_pid() == first
    run = _run(JobWorker("_worker_targets:stream_and_compute", {"events": 3, "compute_s": 0.1, "shape": (2, 4, 4)}))
    assert run.outcomes[0].status == "completed", run.outcomes[0]
    assert run.worker.pid == first  # no new interpreter: the job ran in the standby
    value = run.outcomes[0].value
    assert [ev.done for ev in run.events] == [0, 1, 2]
    assert value["sigint_ignored"] is True and value["cancel_is_token"] is True
    assert value["torch_threads"] == default_num_threads() and value["omp_wait_policy"] == "PASSIVE"
    # Niced once, not twice: the standby's set-up is not repeated when its job arrives.
    assert value["niceness"] == min(19, os.getpriority(os.PRIO_PROCESS, 0) + WORKER_NICENESS)
    _assert_reaped(first)
    assert _wait_for(lambda: prewarming.standby_pid() not in (None, first))
    second = prewarming.standby_pid()
    prewarming.stop_prewarming()
    assert prewarming.standby_pid() is None
    _assert_reaped(second)


def test_a_job_with_another_thread_count_or_a_dead_standby_gets_a_fresh_process(prewarming):
    prewarming.prewarm_worker(None)
    standby = prewarming.standby_pid()
    run = _run(JobWorker("_worker_targets:stream_and_compute", {"events": 1, "compute_s": 0.0, "shape": (2, 4, 4)},
                         num_threads=1))
    assert run.outcomes[0].status == "completed" and run.outcomes[0].value["torch_threads"] == 1
    assert run.worker.pid != standby
    _assert_reaped(standby)  # the unfitting standby was ended, not left behind
    prewarming.stop_prewarming()

    prewarming.prewarm_worker(None)
    standby = prewarming.standby_pid()
    os.kill(standby, signal.SIGKILL)
    assert _wait_for(lambda: prewarming._STANDBY.process.exitcode is not None)
    run = _run(JobWorker("_worker_targets:stream_and_compute", {"events": 1, "compute_s": 0.0, "shape": (2, 4, 4)}))
    assert run.outcomes[0].status == "completed"
    assert run.worker.pid != standby
    _assert_reaped(standby)
