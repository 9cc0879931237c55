"""Benchmark: how long a GUI job waits for its worker process, spawned fresh or from the standby.

    xvfb-run -a .venv/bin/python -m benchmarks.worker_start [--repeat 3] [--out benchmarks/results/worker_start.json]

Times ``JobWorker.start()`` to the job's first event for a job that imports the engine's job
module (as every training and prediction job does) and returns: a fresh spawn pays the
interpreter start, ``import torch`` and the engine imports; a standby process
(``_worker.prewarm_worker``, which ``dinomix-app`` starts once its window is up) has paid them
before the click. The standby gets ``--settle`` seconds to finish its imports first, as it
does while a user looks at the window.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results"
TARGET = "benchmarks.worker_start:first_event_job"


def first_event_job(spec, callbacks=(), cancel=None):
    """A job that needs what the engine's jobs need, then says so at once."""
    import dinomix_core.engine.jobs  # noqa: F401 - the import is what is timed
    from dinomix_core.engine.events import StageEvent, emit_all

    emit_all(callbacks, StageEvent("loading", "engine imported"))
    return os.getpid()


def time_one(qapp, *, settle_s: float, standby: bool) -> float:
    from qtpy.QtCore import QEventLoop, QTimer

    from napari_dinomix import _worker

    if standby:
        _worker.prewarm_worker(None)
        _spin(settle_s)
    worker = _worker.JobWorker(TARGET, {})
    first: list[float] = []
    loop = QEventLoop()
    worker.event.connect(lambda _ev: first.append(time.perf_counter()) if not first else None)
    worker.finished.connect(lambda _o: loop.quit())
    QTimer.singleShot(120_000, loop.quit)
    t0 = time.perf_counter()
    worker.start()
    loop.exec()
    if standby:
        _worker.stop_prewarming()
    if not first:
        raise RuntimeError("the job sent no event within 120 s")
    return first[0] - t0


def _spin(seconds: float) -> None:
    from qtpy.QtCore import QEventLoop, QTimer

    loop = QEventLoop()
    QTimer.singleShot(int(seconds * 1000), loop.quit)
    loop.exec()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--settle", type=float, default=20.0, help="seconds the standby gets before the click")
    parser.add_argument("--out", type=Path, default=RESULTS / "worker_start.json")
    args = parser.parse_args(argv)
    from napari.qt import get_qapp

    qapp = get_qapp()
    fresh = [time_one(qapp, settle_s=0.0, standby=False) for _ in range(args.repeat)]
    warm = [time_one(qapp, settle_s=args.settle, standby=True) for _ in range(args.repeat)]
    result = {
        "benchmark": "JobWorker.start() to the job's first event (the job imports dinomix_core.engine.jobs)",
        "fresh_spawn_s": round(statistics.median(fresh), 2), "standby_s": round(statistics.median(warm), 2),
        "runs": {"fresh_spawn_s": [round(v, 3) for v in fresh], "standby_s": [round(v, 3) for v in warm]},
        "settle_s": args.settle,
        "machine": {"platform": platform.platform(), "cpu_count": os.cpu_count(), "load_1min": os.getloadavg()[0]},
        "measured_at": time.strftime("%Y-%m-%d %H:%M"),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"fresh spawn {result['fresh_spawn_s']:.2f} s, standby {result['standby_s']:.2f} s (median of {args.repeat}); "
          f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
