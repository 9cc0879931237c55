"""Terminal rendering of engine events: a tqdm bar for steps, one line per stage/validation."""

from __future__ import annotations

import sys

from tqdm import tqdm

from dinomix_core.engine.events import CheckpointEvent, StageEvent, StepEvent, ValidationEvent


class ConsoleProgress:
    """Callable event sink for the CLI; quiet=True prints stage lines only."""

    def __init__(self, quiet: bool = False):
        self.quiet = quiet
        self._bar: tqdm | None = None
        self._stage_bar: tqdm | None = None

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
            if event.stage == "teacher-tokens":
                if self.quiet:
                    return
                if self._stage_bar is None or self._stage_bar.desc != f"tokens {event.message}":
                    self._close_stage()
                    self._stage_bar = tqdm(total=event.total, desc=f"tokens {event.message}", unit="slice",
                                           file=sys.stderr, leave=False, dynamic_ncols=True)
                self._stage_bar.n = event.done
                self._stage_bar.refresh()
                return
            self._close_stage()
            if event.stage == "done":
                self.close()
            print(f"[{event.stage}] {event.message}", file=sys.stderr)
        elif isinstance(event, ValidationEvent):
            if event.mean_dice is not None:
                tail = "n/a" if event.tail_dice is None else f"{event.tail_dice:.1f}"
                msg = f"[validation] step {event.step}: mean Dice {event.mean_dice:.1f}%, tail Dice {tail}%"
                (self._bar.write(msg, file=sys.stderr) if self._bar else print(msg, file=sys.stderr))
        elif isinstance(event, CheckpointEvent):
            pass

    def _close_stage(self) -> None:
        if self._stage_bar is not None:
            self._stage_bar.close()
            self._stage_bar = None

    def close(self) -> None:
        self._close_stage()
        if self._bar is not None:
            self._bar.close()
            self._bar = None
