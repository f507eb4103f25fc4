"""Collapse and stalls caught as they happen: the engine callback that asks the objective for the signs
of its method (`Objective.health`: DINO's teacher entropy and k-NN, a classifier's loss at chance, a
masked-image loss that does not fall) at each log and each evaluation from the `MIN_STEPS`-th update on,
and reports each sign once per run: a `warning:` line in the console, a `{"type": "warning", ...}` event
in metrics.jsonl and the list under "warnings" in results.json. A resumed run reads back the warnings
already logged and never repeats one.

With `--stop-on-collapse` the first sign ends the run by the loop's own way of stopping early (the one
`--time-budget` takes: evaluated, checkpointed, model/ kept), and results.json says why under "stopped".
The main process reads the signs, from the values it logs; every process follows its decision.
"""

from __future__ import annotations

from typing import Any

import torch

from vitzoo.training.objective import Callback, Context, History

MIN_STEPS = 50  # no sign is read before this many optimizer updates: fewer tell a stall from a slow start
WARNING = "warning"  # the "type" of a warning event in metrics.jsonl (training and evaluation events have none)


class Watch(Callback):
    """Reads the objective's signs and reports them (see the module docstring); `stop`: --stop-on-collapse."""

    def __init__(self, stop: bool = False) -> None:
        self.stop = stop
        self.history = History()
        self.warnings: list[dict[str, Any]] = []
        self.cause: dict[str, Any] | None = None  # the warning that ends the run (--stop-on-collapse)
        self.stop_step: int | None = None  # where the run ends, on every process
        self.ended = False
        self._read_at: int | None = None  # the step of the newest log or evaluation read

    def on_train_begin(self, context: Context) -> None:
        step = context.state.step
        for event in context.run.events():  # every process reads them: a resumed run's stop is known to all
            if event.get("type") == WARNING:
                self.warnings.append({key: value for key, value in event.items() if key != "type"})
            elif event.get("step", 0) <= step:  # later events were logged past the checkpoint resumed from
                _add(self.history.evaluations if event.get("eval") else self.history.training, event)
        if self.stop and self.warnings:
            self.cause = self.warnings[0]
            self.stop_step = self.cause["step"]

    def on_log(self, context: Context, event: dict[str, Any]) -> None:
        _add(self.history.training, event)
        self._read(context)

    def on_evaluate(self, context: Context, metrics: dict[str, Any]) -> None:
        _add(self.history.evaluations, {"step": context.state.step, "epoch": context.epoch_position, **metrics})
        self._read(context)

    def _read(self, context: Context) -> None:
        step = self._read_at = context.state.step
        if not context.accelerator.is_main_process or step < MIN_STEPS:
            return
        given = {warning["sign"] for warning in self.warnings}
        for sign in context.objective.health(context, self.history):
            if sign.name in given:
                continue
            given.add(sign.name)
            warning = {"sign": sign.name, "kind": sign.kind, "step": step,
                       "message": f"{sign.finding} at step {step}; {sign.advice}"}
            self.warnings.append(warning)
            context.run.log({"type": WARNING, **warning})
            print(f"warning: {warning['message']}", flush=True)
            if self.stop and self.cause is None:
                self.cause, self.stop_step = warning, step

    def stops(self, context: Context) -> bool:
        """With --stop-on-collapse: whether the run ends at this step, because a sign fired at this step's
        log or evaluation, or a resumed run reached the step where a logged sign had ended it."""
        if not self.stop:
            return False
        accelerator = context.accelerator
        if self._read_at == context.state.step and accelerator.num_processes > 1:  # the main process decided
            from accelerate.utils import broadcast

            decided = torch.tensor([-1 if self.stop_step is None else self.stop_step], device=accelerator.device)
            found = int(broadcast(decided, from_process=0)[0])
            self.stop_step = None if found < 0 else found
        self._read_at = None
        ends = self.stop_step is not None and context.state.step >= self.stop_step
        if ends and not self.ended and self.cause is not None and accelerator.is_main_process:
            print(f"stopping at step {context.state.step} (--stop-on-collapse): {self.cause['sign']} at step "
                  f"{self.cause['step']}; the run is evaluated and saved as it ends", flush=True)
        self.ended = self.ended or ends
        return ends

    def results(self) -> dict[str, Any]:
        """results.json's "warnings" (each sign once) and "stopped" (None unless a sign ended the run)."""
        stopped = None
        if self.cause is not None:
            stopped = {"reason": self.cause["kind"], "sign": self.cause["sign"], "step": self.cause["step"]}
        return {"warnings": self.warnings, "stopped": stopped}


def _add(events: list[dict[str, Any]], event: dict[str, Any]) -> None:
    """Append `event`, replacing those of the same or later steps (logged before a resume went back)."""
    while events and events[-1]["step"] >= event["step"]:
        events.pop()
    events.append(event)
