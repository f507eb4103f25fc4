"""Checkpoints that survive crashes, and finding the newest one to resume from.

A checkpoint is Accelerate's full training state (model, optimizer, scheduler, EMA, RNG of
every process) plus `trainer_state.json` (epoch, step, batches done in the epoch, best metric).
It is written into a scratch folder and renamed into place, so a crash while saving leaves the
previous checkpoints untouched; only the newest `keep` are kept.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
from typing import Any

from accelerate import Accelerator

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
NAME = re.compile(r"^step-(\d+)$")


@dataclasses.dataclass
class TrainState:
    """Where training stands; saved with every checkpoint."""

    step: int = 0  # optimizer updates done
    epoch: int = 0  # current epoch
    batches_in_epoch: int = 0  # batches of `epoch` already consumed
    best_metric: float | None = None
    images_seen: int = 0

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


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


def save_checkpoint(accelerator: Accelerator, output_dir: str, state: TrainState, keep: int) -> str:
    """Save the full training state at `state.step`; every process must call this."""
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
        with open(os.path.join(scratch, STATE_FILE), "w") as handle:
            json.dump(state.to_dict(), handle, indent=2)
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(scratch, final)
        for old in list_checkpoints(output_dir)[:-keep] if keep > 0 else []:
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def load_checkpoint(accelerator: Accelerator, path: str) -> TrainState:
    """Restore everything `save_checkpoint` saved; returns where training stood."""
    accelerator.load_state(path)
    with open(os.path.join(path, STATE_FILE)) as handle:
        return TrainState(**json.load(handle))
