"""Terminal rendering of engine events: a tqdm bar for steps, transient bars for the per-case
stages (tokens, validation and prediction windows, case loading), one line per stage change."""

from __future__ import annotations

import sys

from tqdm import tqdm

from dinomix_core.engine.events import CheckpointEvent, FinishedEvent, StageEvent, StepEvent, ValidationEvent

# Stages reported unit by unit: (bar label, unit). Loading counts cases; the others count
# slices or windows of one case, so they get one bar per case.
_BAR_STAGES = {"teacher-tokens": ("tokens", "slice"), "validating": ("validating", "window"),
               "predicting": ("predicting", "window"), "loading": ("loading", "case"),
               "post-processing": ("choosing the mask clean-up", "window")}


class ConsoleProgress:
    """Callable event sink for the CLI; quiet=True prints stage lines only."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._bar: tqdm | None = None
        self._stage_bar: tqdm | None = None
        self._stage_key: tuple | None = None
        self._last_line: tuple | None = None

    def __call__(self, event) -> None:
        if isinstance(event, StepEvent):
            if self.quiet:
                return
            if self._bar is None:
                self._bar = tqdm(total=event.total_steps, initial=event.step - 1, desc="training", unit="step",
                                 file=sys.stderr, dynamic_ncols=True)
            self._bar.update(1)
            shown = {k: round(v, 3) for k, v in event.losses.items() if k in ("total", "sup", "unl", "fkd")}
            self._bar.set_postfix(shown)
        elif isinstance(event, StageEvent):
            if event.stage in _BAR_STAGES and event.total > 0:
                self._stage_progress(event)
                return
            if event.stage == "done":
                self.close()
            line = (event.stage, event.message)
            if line != self._last_line:  # e.g. "training" again after each validation: said once
                self._close_stage()
                self._write(f"[{event.stage}] {event.message}")
                self._last_line = line
        elif isinstance(event, ValidationEvent):
            if event.mean_dice is not None:
                tail = "n/a" if event.tail_dice is None else f"{event.tail_dice:.1f}"
                where = "" if event.held_out else " (training cases, not held out)"
                self._write(f"[validation] step {event.step}: mean Dice {event.mean_dice:.1f}%, tail Dice {tail}%{where}")
        elif isinstance(event, FinishedEvent):
            self.close()
        elif isinstance(event, CheckpointEvent):
            pass

    def _stage_progress(self, event: StageEvent) -> None:
        if self.quiet:
            return
        label, unit = _BAR_STAGES[event.stage]
        key = (event.stage,) if event.stage == "loading" else (event.stage, event.message)
        if self._stage_bar is None or self._stage_key != key:
            self._close_stage()
            desc = label if event.stage == "loading" else f"{label} {event.message}"
            self._stage_bar = tqdm(total=event.total, desc=desc, unit=unit, file=sys.stderr, leave=False,
                                   dynamic_ncols=True)
            self._stage_key = key
        self._stage_bar.total = event.total
        self._stage_bar.n = event.done
        if event.stage == "loading":
            self._stage_bar.set_postfix_str(event.message, refresh=False)
        self._stage_bar.refresh()

    def _write(self, message: str) -> None:
        if self._bar is not None:
            self._bar.write(message, file=sys.stderr)
        else:
            print(message, file=sys.stderr)

    def _close_stage(self) -> None:
        if self._stage_bar is not None:
            self._stage_bar.close()
            self._stage_bar = None
            self._stage_key = None

    def close(self) -> None:
        self._close_stage()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
