"""Checkpoints that survive crashes, and finding the newest one to resume from.

A checkpoint is Accelerate's training state (model, optimizer, RNG of every process) plus
vitzoo's own state, never pickled: `trainer_state.json` (epoch, step, batches done in the epoch,
the best evaluation with all its metrics, the objective's plain values) and `extra_state.safetensors`
(tensors such as the EMA weights or DINO's teacher and centre). The learning-rate schedule is a
function of the step, so it needs no state of its own. A checkpoint is written into a scratch
folder and renamed into place, so a crash while saving leaves the previous checkpoints untouched;
only the newest `keep` are kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any

import torch
from accelerate import Accelerator
from safetensors.torch import load_file, save_file

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
TENSORS_FILE = "extra_state.safetensors"
NAME = re.compile(r"^step-(\d+)$")


@dataclasses.dataclass
class TrainState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of `epoch` already consumed
    best: dict[str, Any] | None = None  # the kept evaluation: every metric, its step and (fractional) epoch
    images_seen: int = 0  # training images over every process, across resumes
    train_seconds: float = 0.0  # wall time of the training loop, across resumes
    last_eval_step: int | None = None  # the step of the newest evaluation (none twice at one step)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict)  # the objective's plain values

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> TrainState:
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def list_checkpoints(output_dir: str) -> list[str]:
    """Complete checkpoints in `output_dir`, oldest first (scratch folders are ignored)."""
    folder = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = NAME.match(name)
        path = os.path.join(folder, name)
        if match and os.path.isfile(os.path.join(path, STATE_FILE)):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def latest_checkpoint(output_dir: str) -> str | None:
    found = list_checkpoints(output_dir)
    return found[-1] if found else None


def save_checkpoint(
    accelerator: Accelerator, output_dir: str, state: TrainState, keep: int, tensors: dict[str, torch.Tensor] | None = None
) -> str:
    """Save the full training state at `state.step`; every process must call this. `tensors` (the
    same on every process) go to `extra_state.safetensors`."""
    folder = os.path.join(output_dir, CHECKPOINTS)
    final = os.path.join(folder, f"step-{state.step:08d}")
    scratch = os.path.join(folder, f".tmp-step-{state.step:08d}")
    if accelerator.is_main_process:
        shutil.rmtree(scratch, ignore_errors=True)
        os.makedirs(scratch)
    accelerator.wait_for_everyone()
    accelerator.save_state(scratch, safe_serialization=True)
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        if tensors:
            save_file({key: value.detach().cpu().contiguous() for key, value in tensors.items()},
                      os.path.join(scratch, TENSORS_FILE))
        with open(os.path.join(scratch, STATE_FILE), "w") as handle:
            json.dump(state.to_dict(), handle, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(scratch, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Restore what `save_checkpoint` saved through Accelerate; returns where training stood and
    the extra tensors (on the CPU) for their owners to take back."""
    accelerator.load_state(path)
    with open(os.path.join(path, STATE_FILE)) as handle:
        state = TrainState.from_dict(json.load(handle))
    tensors_file = os.path.join(path, TENSORS_FILE)
    tensors = load_file(tensors_file) if os.path.isfile(tensors_file) else {}
    return state, tensors
