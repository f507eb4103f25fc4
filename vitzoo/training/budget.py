"""`--time-budget 20m`: train for as many optimizer steps as fit in a wall-clock budget.

After `MEASURE` timed optimizer steps the loop knows its seconds per step: the median step, since
the first few steps after a start or a resume pay for first-call costs (on a 2-core CPU a tiny
model's first five steps took a second each, the next ones 15 ms), and time spent evaluating and
saving is left out; the budget left, less `RESERVE` of the whole budget, sets the number of steps, and the
learning-rate schedule (warm-up and cosine decay) is planned again for exactly those steps. At the
first epoch end after that, the cost of an epoch's evaluation and checkpoint is known, and the plan
is made once more with it (seconds per step + that cost / steps per epoch). At every later epoch end,
the pace the run actually kept since the one before (evaluation and saving included) plans the rest
again when it differs by more than `REPLAN` from the plan (another job took cores, or they were
freed); and every `CHECK_EVERY` steps a run that has used all but half of its reserve stops there
(evaluated and saved after), so that no slow-down can carry it far past its budget. With `--epochs`
too, whichever ends first. Every process plans from the slowest one's speed and clock, so all stop at
the same step. The plan is saved with each checkpoint: a resumed run keeps it, neither planned again nor
stopped late. The budget counts the training loop (evaluations and checkpoints included), not the
start-up before it.
"""

from __future__ import annotations

import math
import re
import statistics
import time
from typing import Any

import torch

from vitzoo.errors import BadInputError

MEASURE = 16
RESERVE = 0.1
REPLAN = 0.05  # a later epoch's pace this far off the plan plans the rest again
CHECK_EVERY = 8  # steps between the checks for a run that is late
_UNITS = {"h": 3600, "m": 60, "s": 1}


UNLIMITED_EPOCHS = 100_000  # --time-budget without --epochs: the budget alone ends the run


def apply_to_epochs(args: Any, given: frozenset[str]) -> None:
    """With --time-budget and no --epochs, the budget alone ends the run: `args.epochs` becomes
    `UNLIMITED_EPOCHS` (an --epochs in `given`, the fields a flag or --config set, is kept: whichever ends first)."""
    if getattr(args, "time_budget", None) and "epochs" not in given:
        parse_duration(args.time_budget)  # a bad duration is refused before anything else runs
        args.epochs = UNLIMITED_EPOCHS


def parse_duration(text: str) -> float:
    """'20m', '90s', '1h30m', '1.5h' or plain seconds ('300') -> seconds."""
    value = text.strip().lower()
    if re.fullmatch(r"\d+(\.\d+)?", value):
        seconds = float(value)
    else:
        parts = re.findall(r"(\d+(?:\.\d+)?)([hms])", value)
        if not parts or "".join(number + unit for number, unit in parts) != value:
            raise BadInputError(f"--time-budget {text!r}: write a duration such as 20m, 90s, 1h30m or 1.5h")
        seconds = sum(float(number) * _UNITS[unit] for number, unit in parts)
    if seconds <= 0:
        raise BadInputError(f"--time-budget {text!r} must be longer than zero")
    return seconds


class TimeBudget:
    """Plans the run's steps from its measured speed (see the module docstring)."""

    def __init__(self, seconds: float, epoch_steps: int, steps_per_epoch: int) -> None:
        self.seconds, self.epoch_steps, self.steps_per_epoch = seconds, epoch_steps, steps_per_epoch
        self.planned_steps: int | None = None
        self.seconds_per_step: float | None = None
        self._marks: list[tuple[int, float]] = []
        self._paused = 0.0
        self.refined = False
        self.restored = False
        self.replans = 0
        self.stopped_late: int | None = None  # the step where the late check ended the run
        self._last_epoch_end: tuple[int, float] | None = None

    @classmethod
    def from_args(cls, args: Any, total_steps: int, steps_per_epoch: int) -> TimeBudget | None:
        text = getattr(args, "time_budget", None)
        return cls(parse_duration(text), total_steps, steps_per_epoch) if text else None

    def restore(self, saved: dict[str, Any] | None) -> None:
        if saved and saved.get("planned_steps"):
            self.planned_steps, self.seconds_per_step = saved["planned_steps"], saved["seconds_per_step"]
            self.refined = self.restored = True  # a resumed run keeps the plan it saved, whatever its speed now
            self.replans = saved.get("replans", 0)

    def outside_steps(self, seconds: float) -> None:
        """Time spent evaluating or saving: not part of a step's cost."""
        self._paused += seconds

    def step_done(self, step: int, elapsed: float, accelerator: Any) -> bool:
        """Record one finished optimizer step (`elapsed`: training seconds so far, across resumes);
        True when the plan was made, or cut short, at this step."""
        if self.planned_steps is None:
            self._marks.append((step, time.perf_counter() - self._paused))
            if len(self._marks) < MEASURE + 1:
                return False
            durations = [(b[1] - a[1]) / (b[0] - a[0]) for a, b in zip(self._marks, self._marks[1:]) if b[0] > a[0]]
            self.seconds_per_step = _slowest(statistics.median(durations), accelerator)
            self._plan(step, elapsed, self.seconds_per_step)
            return True
        if step % CHECK_EVERY == 0 and step < self.planned_steps and not self.restored:
            if _slowest(elapsed, accelerator) >= self.seconds * (1 - RESERVE / 2):
                self.planned_steps = self.stopped_late = step
                return True
        return False

    def epoch_end(self, step: int, elapsed: float, cost: float, accelerator: Any) -> bool:
        """At the first epoch end that follows the plan, plan again with its evaluation and checkpoint
        `cost` spread over an epoch's steps; at later ones, plan the rest again from the pace kept since
        the previous epoch end when it is more than `REPLAN` off. True when the plan changed."""
        if self.planned_steps is None or self.stopped_late is not None:
            return False
        elapsed = _slowest(elapsed, accelerator)
        previous, self._last_epoch_end = self._last_epoch_end, (step, elapsed)
        before = self.planned_steps
        if not self.refined:
            self.refined = True
            self._plan(step, elapsed, self.seconds_per_step + _slowest(cost, accelerator) / self.steps_per_epoch)
        elif previous is not None and not self.restored and step > previous[0]:
            pace = (elapsed - previous[1]) / (step - previous[0])
            planned_pace = (self.seconds * (1 - RESERVE) - previous[1]) / max(1, before - previous[0])
            if abs(pace - planned_pace) > REPLAN * planned_pace:
                self._plan(step, elapsed, pace)
                self.replans += self.planned_steps != before
        return self.planned_steps != before

    def _plan(self, step: int, elapsed: float, seconds_per_step: float) -> None:
        left = self.seconds * (1 - RESERVE) - elapsed
        self.planned_steps = max(step, min(self.epoch_steps, step + math.floor(left / seconds_per_step)))

    def describe(self) -> str:
        if self.stopped_late is not None:
            return (f"time budget {self.seconds / 60:.1f} min: all but {RESERVE / 2:.0%} of it spent at step "
                    f"{self.stopped_late:,} (slower than planned); stopping here")
        epochs = self.planned_steps / self.steps_per_epoch
        return (f"time budget {self.seconds / 60:.1f} min: about {self.planned_steps:,} steps = {epochs:.1f} epochs "
                f"({self.seconds_per_step:.3f} s per step measured; {RESERVE:.0%} kept for evaluations and saving)")

    def state(self) -> dict[str, Any]:
        return {"seconds": self.seconds, "planned_steps": self.planned_steps, "seconds_per_step": self.seconds_per_step,
                "refined": self.refined, "replans": self.replans, "stopped_late": self.stopped_late}


def _slowest(value: float, accelerator: Any) -> float:
    """`value` (a duration or a clock) of the slowest process, so that every process plans the same steps."""
    if accelerator.num_processes == 1:
        return float(value)
    return float(accelerator.reduce(torch.tensor([float(value)], device=accelerator.device), reduction="max")[0])
