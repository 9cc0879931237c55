"""A time budget instead of a step count: the steps are fixed from a probe and kept on resume."""

from __future__ import annotations

import time

from dinomix_core.engine.config import TrainConfig
from dinomix_core.engine.events import CancelToken, StageEvent, StepEvent, TrainingCancelled
from dinomix_core.engine.pipeline import train_on_dataset

from _engine_settings import TINY

HELD_OUT = ["phantom_003"]


def _train(phantom_dir, out, *, budget, steps=100_000, callbacks=(), cancel=None, resume=False):
    cfg = TrainConfig(method="supervised", steps=steps, time_budget_s=budget, checkpoint_every=5, **TINY)
    return train_on_dataset(cfg, phantom_dir, 2, out, exclude=HELD_OUT, callbacks=list(callbacks), cancel=cancel,
                            resume=resume)


def test_a_time_budget_fixes_the_step_count_after_a_probe(phantom_dir, tmp_path):
    events = []
    tic = time.perf_counter()
    result = _train(phantom_dir, tmp_path / "run", budget=4.0, callbacks=[events.append])
    wall = time.perf_counter() - tic
    assert 10 <= result.steps_done < 100_000
    said = [e for e in events if isinstance(e, StageEvent) and "time budget" in e.message]
    assert len(said) == 1 and f"{result.steps_done} steps" in said[0].message
    steps = [e for e in events if isinstance(e, StepEvent)]
    assert steps[-1].step == steps[-1].total_steps == result.steps_done
    assert wall < 60  # the loop ended on its own, not at the 100,000-step upper bound


def test_a_resumed_budget_run_keeps_the_count_it_fixed(phantom_dir, tmp_path):
    cancel = CancelToken()
    fixed = {}

    def stop_after_fixing(event):
        if isinstance(event, StageEvent) and "time budget" in event.message:
            fixed["steps"] = event.total
        if isinstance(event, StepEvent) and "steps" in fixed and event.step >= 12:
            cancel.cancel()

    out = tmp_path / "run"
    try:
        _train(phantom_dir, out, budget=6.0, callbacks=[stop_after_fixing], cancel=cancel)
    except TrainingCancelled:
        pass
    result = _train(phantom_dir, out, budget=6.0, resume=True)
    assert result.steps_done == fixed["steps"]
