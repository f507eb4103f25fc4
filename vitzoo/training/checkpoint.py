"""Checkpoints that survive crashes, hold no pickles, and say when they are broken.

A checkpoint folder `checkpoints/step-NNNNNNNN/` holds only safetensors and JSON, so resuming one
never runs code from it (Accelerate's own `save_state` pickles RNG states and registered objects):

- `model.safetensors`: the model's whole weights (gathered from every process under FSDP);
- `optimizer.safetensors` + `optimizer.json`: the optimizer's whole state keyed by parameter name
  (`<name>/exp_avg`, ...) and its groups, so that a checkpoint written under FSDP resumes under
  DDP or on one process, on any number of processes, and back;
- `rng-<rank>.json` + `rng-<rank>.safetensors`: Python's, NumPy's and torch's generators of each process;
- `extra_state.safetensors`: tensors such as the EMA weights or DINO's teacher and centre;
- `trainer_state.json`: epoch, step, batches done in the epoch, the best evaluation with all its
  metrics, the objective's plain values, and what model and data the checkpoint belongs to;
- `manifest.json`, written last: every other file's size and SHA-256.

The learning-rate schedule is a function of the step and needs no state. A checkpoint is written
into a scratch folder and renamed into place, so a crash or a full disk while saving leaves the
previous checkpoints untouched (and the scratch folder is removed); only the newest `keep` are kept.
`--resume auto` takes the newest checkpoint whose files match its manifest and whose JSON has the shape
vitzoo writes, saying which it skipped and why.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import random
import re
import shutil
import types
import typing
import warnings
from typing import Any

import numpy as np
import torch
from accelerate import Accelerator
from safetensors import SafetensorError
from safetensors.torch import load_file, save_file
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_model_state_dict,
    set_optimizer_state_dict,
)

from vitzoo.errors import BadInputError, DiskFullError
from vitzoo.io import disk_full
from vitzoo.training.distributed import full_state_dict, is_sharded

CHECKPOINTS = "checkpoints"
STATE_FILE = "trainer_state.json"
TENSORS_FILE = "extra_state.safetensors"
MODEL_FILE = "model.safetensors"
OPTIMIZER_TENSORS, OPTIMIZER_GROUPS = "optimizer.safetensors", "optimizer.json"
MANIFEST = "manifest.json"
NAME = re.compile(r"^step-(\d+)$")
# whole (unsharded) state dicts: what a checkpoint holds, whatever the strategy that wrote it
_WHOLE = StateDictOptions(full_state_dict=True, cpu_offload=True)
_WHOLE_IN = StateDictOptions(full_state_dict=True)
# a parameter may have no optimizer state yet (DINO's last layer is frozen in the first epoch)
_WHOLE_OPTIMIZER_IN = StateDictOptions(full_state_dict=True, strict=False)


class CheckpointError(BadInputError):
    """A checkpoint that cannot be resumed: broken, or made for another model."""


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
    model: dict[str, Any] = dataclasses.field(default_factory=dict)  # what the checkpoint's weights are
    budget: dict[str, Any] | None = None  # --time-budget's plan, kept by a resumed run
    data: dict[str, Any] | None = None  # what the run trains on (`vitzoo.training.fit.describe_data`)

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Any) -> TrainState:
        """The state a trainer_state.json holds; a ValueError says what is not of the shape vitzoo writes
        (a file edited by hand or written by something else), before any of it is used."""
        if not isinstance(data, dict):
            raise ValueError(f"it holds a JSON {type(data).__name__}, not an object")
        if "step" not in data:
            raise ValueError("it has no 'step'")
        hints = typing.get_type_hints(cls)
        for field in dataclasses.fields(cls):
            value, accepted = data.get(field.name), _accepted_types(hints[field.name])
            if field.name in data and (not isinstance(value, accepted) or isinstance(value, bool) and bool not in accepted):
                raise ValueError(f"its {field.name!r} is {value!r}, not {' or '.join(kind.__name__ for kind in accepted)}")
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{key: value for key, value in data.items() if key in names})


def _accepted_types(hint: Any) -> tuple[type, ...]:
    """The classes a JSON value may have for a field annotated `hint` (`dict[str, Any] | None`: dict or None)."""
    options = typing.get_args(hint) if isinstance(hint, types.UnionType) else (hint,)
    plain = tuple(typing.get_origin(option) or option for option in options)
    return (*plain, int) if float in plain else plain  # JSON writes 3.0 as 3.0, but a hand-edited file may say 3


def list_checkpoints(output_dir: str) -> list[str]:
    """The checkpoint folders in `output_dir` (scratch folders of unfinished saves are ignored), oldest first;
    `verify` says whether each is whole."""
    folder = os.path.join(output_dir, CHECKPOINTS)
    if not os.path.isdir(folder):
        return []
    found = []
    for name in os.listdir(folder):
        match = NAME.match(name)
        path = os.path.join(folder, name)
        if match and os.path.isdir(path):
            found.append((int(match.group(1)), path))
    return [path for _, path in sorted(found)]


def newest_intact(output_dir: str) -> tuple[str | None, list[str]]:
    """The newest checkpoint that `verify` passes (None: none does), and each newer one that it skipped,
    as "PATH: what is wrong"."""
    skipped = []
    for path in reversed(list_checkpoints(output_dir)):
        problem = verify(path)
        if problem is None:
            return path, skipped
        skipped.append(f"{path}: {problem}")
    return None, skipped


def latest_checkpoint(output_dir: str, *, report: bool = True) -> str | None:
    """The newest intact checkpoint; broken newer ones are named and skipped (a warning each, with `report`)."""
    path, skipped = newest_intact(output_dir)
    for broken in skipped if report else []:
        warnings.warn(f"skipping the broken checkpoint {broken}", stacklevel=2)
    return path


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def verify(path: str) -> str | None:
    """None when every file of the checkpoint at `path` matches its manifest and its training state has the
    shape vitzoo writes, else what is wrong."""
    try:
        with open(os.path.join(path, MANIFEST)) as handle:
            manifest = json.load(handle)
    except FileNotFoundError:
        return "it has no manifest.json (an unfinished save, or written by an older vitzoo)"
    except (OSError, ValueError) as error:
        return f"its manifest.json is unreadable ({error})"
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or not all(
            isinstance(entry, dict) and isinstance(entry.get("size"), int) and isinstance(entry.get("sha256"), str)
            for entry in files.values()):
        return 'its manifest.json is not of the shape vitzoo writes ({"files": {NAME: {"size": ..., "sha256": ...}}})'
    for name, expected in files.items():
        file = os.path.join(path, name)
        if not os.path.isfile(file):
            return f"{name} is missing"
        if os.path.getsize(file) != expected["size"]:
            return f"{name} has {os.path.getsize(file)} bytes, the manifest says {expected['size']} (truncated?)"
        if _sha256(file) != expected["sha256"]:
            return f"{name} does not match its checksum"
    try:
        with open(os.path.join(path, STATE_FILE)) as handle:
            TrainState.from_dict(json.load(handle))
    except FileNotFoundError:
        return f"{STATE_FILE} is missing"
    except (OSError, ValueError) as error:
        return f"its {STATE_FILE} is unusable: {error}"
    return None


# --------------------------------------------------------------------------- saving
def save_checkpoint(
    accelerator: Accelerator,
    output_dir: str,
    state: TrainState,
    keep: int,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    tensors: dict[str, torch.Tensor] | None = None,
) -> str:
    """Save the full training state at `state.step`; every process must call this. `tensors` (the
    same on every process) go to `extra_state.safetensors`."""
    folder = os.path.join(output_dir, CHECKPOINTS)
    final = os.path.join(folder, f"step-{state.step:08d}")
    scratch = os.path.join(folder, f".tmp-step-{state.step:08d}")
    failure = torch.zeros(1, device=accelerator.device)
    try:
        if accelerator.is_main_process:
            shutil.rmtree(scratch, ignore_errors=True)
            os.makedirs(scratch)
        accelerator.wait_for_everyone()
        _save_rng(scratch, accelerator.process_index)
        # whole state dicts, gathered from every process under FSDP (collectives: all call them)
        unwrapped = accelerator.unwrap_model(model, keep_torch_compile=False)
        weights = full_state_dict(unwrapped)
        optimizer_state = get_optimizer_state_dict(unwrapped, _inner(optimizer), options=_WHOLE)
        if accelerator.is_main_process:
            save_file(_contiguous(weights), os.path.join(scratch, MODEL_FILE))
            _save_optimizer(optimizer_state, scratch)
            if tensors:
                save_file(_contiguous(tensors), os.path.join(scratch, TENSORS_FILE))
            with open(os.path.join(scratch, STATE_FILE), "w") as handle:
                json.dump(state.to_dict(), handle, indent=2)
    except (OSError, RuntimeError, SafetensorError) as error:
        if not disk_full(error):
            raise
        failure[0] = 1
    if float(accelerator.reduce(failure, reduction="sum")[0]):
        if accelerator.is_main_process:
            shutil.rmtree(scratch, ignore_errors=True)
        previous = list_checkpoints(output_dir)
        kept = f"; the previous checkpoint {previous[-1]} is intact" if previous else ""
        raise DiskFullError(f"no space left on device in {folder} while saving step {state.step}: the partial "
                            f"checkpoint was removed{kept}. Free some space and resume with --resume auto")
    accelerator.wait_for_everyone()
    if accelerator.is_main_process:
        files = sorted(name for name in os.listdir(scratch) if name != MANIFEST)
        manifest = {"files": {name: {"size": os.path.getsize(os.path.join(scratch, name)),
                                     "sha256": _sha256(os.path.join(scratch, name))} for name in files}}
        with open(os.path.join(scratch, MANIFEST), "w") as handle:
            json.dump(manifest, handle, indent=2)
            handle.flush()
            os.fsync(handle.fileno())
        if os.path.exists(final):
            shutil.rmtree(final)
        os.replace(scratch, final)
        for old in list_checkpoints(output_dir)[:-max(keep, 1)]:  # never the one just written
            shutil.rmtree(old, ignore_errors=True)
    accelerator.wait_for_everyone()
    return final


def _contiguous(tensors: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    # safetensors wants contiguous CPU tensors that share no memory
    return {key: value.detach().cpu().contiguous().clone() for key, value in tensors.items()}


def _inner(optimizer: torch.optim.Optimizer) -> torch.optim.Optimizer:
    return getattr(optimizer, "optimizer", optimizer)  # Accelerate's AcceleratedOptimizer wraps the real one


def _save_optimizer(saved: dict[str, Any], folder: str) -> None:
    """The optimizer's state keyed by parameter name (`<name>/<slot>`), so that it loads into any
    strategy's model: sharded or not, on any number of processes."""
    tensors, plain = {}, {}
    for name, values in saved["state"].items():
        for slot, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{name}/{slot}"] = value
            else:
                plain[f"{name}/{slot}"] = value
    if tensors:
        save_file(_contiguous(tensors), os.path.join(folder, OPTIMIZER_TENSORS))
    with open(os.path.join(folder, OPTIMIZER_GROUPS), "w") as handle:
        json.dump({"format": "by-name", "param_groups": saved["param_groups"], "state": plain}, handle)


def _save_rng(folder: str, rank: int) -> None:
    version, internal, gauss = random.getstate()
    kind, keys, position, has_gauss, cached = np.random.get_state()
    with open(os.path.join(folder, f"rng-{rank}.json"), "w") as handle:
        json.dump({"python": [version, list(internal), gauss],
                   "numpy": [kind, keys.tolist(), int(position), int(has_gauss), float(cached)]}, handle)
    generators = {"torch": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        generators.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(generators, os.path.join(folder, f"rng-{rank}.safetensors"))


# --------------------------------------------------------------------------- loading
def load_checkpoint(
    accelerator: Accelerator,
    path: str,
    *,
    model: torch.nn.Module,
    optimizer: torch.optim.Optimizer,
    describe: dict[str, Any] | None = None,
    data: dict[str, Any] | None = None,
) -> tuple[TrainState, dict[str, torch.Tensor]]:
    """Restore what `save_checkpoint` saved into `model`, `optimizer` and every random generator;
    returns where training stood and the extra tensors (on the CPU) for their owners to take back.
    `describe` says what this run builds and `data` what it trains on: a checkpoint of another model,
    or of other data, is refused before anything is loaded from it."""
    if not os.path.isdir(path):
        raise CheckpointError(f"--resume {path}: no such checkpoint folder (use --resume auto for the newest in --output-dir)")
    problem = verify(path)
    if problem is not None:
        raise CheckpointError(f"cannot resume from {path}: {problem}. Pass an intact checkpoint, or --resume auto "
                              "to take the newest intact one")
    try:
        with open(os.path.join(path, STATE_FILE)) as handle:
            state = TrainState.from_dict(json.load(handle))
        _check_same_data(path, state.data, data)
        weights = load_file(os.path.join(path, MODEL_FILE))
        target = accelerator.unwrap_model(model, keep_torch_compile=False)
        _check_same_model(path, state.model, describe, weights, target.state_dict())
        if is_sharded(target):  # every process reads the whole file and keeps its shards
            set_model_state_dict(target, weights, options=_WHOLE_IN)
        else:
            target.load_state_dict(weights)
        _load_optimizer(target, _inner(optimizer), path)
        _load_rng(path, accelerator.process_index)
        tensors_file = os.path.join(path, TENSORS_FILE)
        tensors = load_file(tensors_file) if os.path.isfile(tensors_file) else {}
    except (OSError, ValueError, SafetensorError) as error:
        raise CheckpointError(f"cannot resume from {path}: {error}") from None
    except (KeyError, TypeError, AttributeError) as error:  # optimizer.json or rng-N.json of another shape
        raise CheckpointError(f"cannot resume from {path}: a file in it is not of the shape vitzoo writes "
                              f"({type(error).__name__}: {error}). Pass an intact checkpoint, or --resume auto") from None
    return state, tensors


def _check_same_data(path: str, saved: dict[str, Any] | None, current: dict[str, Any] | None) -> None:
    """Refuse a checkpoint trained on other data: other images or labels, or other split sizes. The dataset's
    name as typed is not compared (the same folder may be reached by two paths), only shown."""
    if not saved or not current:  # a checkpoint of an older vitzoo, or a run given no splits
        return
    if {key: value for key, value in saved.items() if key != "dataset"} == {
            key: value for key, value in current.items() if key != "dataset"}:
        return

    def text(data: dict[str, Any]) -> str:
        test = f", test {data['test_samples']}" if data.get("test_samples") is not None else ""
        return (f"{data.get('dataset')} (train {data.get('train_samples')}, eval {data.get('eval_samples')}{test} images, "
                f"{data.get('num_classes')} classes, fingerprint {str(data.get('fingerprint'))[:12]})")

    raise CheckpointError(f"the checkpoint {path} was trained on {text(saved)}, this run loads {text(current)}. Resume "
                          "with the run's own data and arguments (--config OUTPUT_DIR/args.json) or start in a new "
                          "--output-dir")


def _check_same_model(path: str, saved: dict[str, Any], current: dict[str, Any] | None, weights: dict[str, torch.Tensor],
                      expected: dict[str, torch.Tensor]) -> None:
    mismatched = sorted(set(weights) ^ set(expected)) or sorted(
        key for key in weights if tuple(weights[key].shape) != tuple(expected[key].shape))
    if not mismatched:
        return

    def text(description: dict[str, Any] | None) -> str:
        if not description:
            return "another model"
        peft = f", {description['peft']}" if description.get("peft") else ""  # LoRA adapters (--peft)
        return (f"{description.get('name')} (hidden {description.get('hidden_size')}, depth {description.get('depth')}, "
                f"{description.get('num_classes')} classes{peft})")

    raise CheckpointError(f"the checkpoint {path} is for {text(saved)}, this run builds {text(current)} "
                          f"({len(mismatched)} weights differ, e.g. {mismatched[0]}). Resume with the run's own arguments "
                          "(--config OUTPUT_DIR/args.json) or start in a new --output-dir")


def _load_optimizer(model: torch.nn.Module, optimizer: torch.optim.Optimizer, path: str) -> None:
    with open(os.path.join(path, OPTIMIZER_GROUPS)) as handle:
        saved = json.load(handle)
    tensors_file = os.path.join(path, OPTIMIZER_TENSORS)
    by_name = saved.get("format") == "by-name"
    state: dict[Any, dict[str, Any]] = {}
    for key, value in [*(load_file(tensors_file).items() if os.path.isfile(tensors_file) else []), *saved["state"].items()]:
        owner, slot = key.rsplit("/", 1) if by_name else key.split(".", 1)
        state.setdefault(owner if by_name else int(owner), {})[slot] = value
    groups = [{**group, "betas": tuple(group["betas"])} if "betas" in group else group for group in saved["param_groups"]]
    if by_name:
        set_optimizer_state_dict(model, optimizer, {"state": state, "param_groups": groups},
                                 options=_WHOLE_OPTIMIZER_IN)
        # torch first gives every parameter a state (one AdamW step at lr 0); a parameter the checkpoint has
        # none for (DINO's last layer, frozen so far) must start afresh, as it would have in the saved run
        for name, parameter in model.named_parameters():
            if name not in state:
                optimizer.state.pop(parameter, None)
    else:  # a checkpoint of an older vitzoo numbers the parameters in the optimizer's order
        optimizer.load_state_dict({"state": state, "param_groups": groups})


def _load_rng(path: str, rank: int) -> None:
    with open(os.path.join(path, f"rng-{rank}.json")) as handle:
        saved = json.load(handle)
    version, internal, gauss = saved["python"]
    random.setstate((version, tuple(internal), gauss))
    kind, keys, position, has_gauss, cached = saved["numpy"]
    np.random.set_state((kind, np.array(keys, dtype=np.uint32), position, has_gauss, cached))
    generators = load_file(os.path.join(path, f"rng-{rank}.safetensors"))
    torch.set_rng_state(generators["torch"])
    cuda = [generators[key] for key in sorted(k for k in generators if k.startswith("cuda."))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
