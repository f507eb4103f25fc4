"""How the processes of a run share the work: one process, DDP, FSDP (parameters sharded) or DeepSpeed.

Whatever `accelerate launch` was configured with is what runs, and the start-up line names it:

- **DDP** (`multi_gpu.yaml`, `multi_cpu.yaml`, `multi_node.yaml`): Accelerate wraps the model; on
  machines without GPUs the processes talk over gloo (the Accelerator is built with `cpu=True`).
- **FSDP** (`fsdp.yaml`): on GPUs Accelerate applies it. On CPU processes Accelerate cannot (its
  FSDP type exists only for accelerators), so vitzoo applies torch's FSDP2 itself (`fully_shard`
  on each transformer block, then on the whole model, over gloo): the same sharding, honouring
  the config's wrap policy, layer classes and `fsdp_reshard_after_forward`. Parameters are kept in
  fp32 and bf16 comes from autocast, as in every other vitzoo run.
- **DeepSpeed** (`deepspeed_zero2.yaml`): needs CUDA GPUs and the `deepspeed` package; refused at
  start, with the reason, where either is missing.

What vitzoo keeps *unsharded* under FSDP, by choice: the EMA of the weights (`--ema-decay`) and
DINO's EMA teacher are full copies on every process, updated each step from the student's
gathered parameters (one all-gather per step, as the forward pass does), so that evaluation, the
k-NN and saving need no collective; the frozen DeiT teacher is never wrapped (it has no gradients
or optimizer state to shard; every process holds it whole). Checkpoints and `model/` hold full
(gathered) state dicts, so a run saved under FSDP resumes under DDP or on one process and back.
"""

from __future__ import annotations

import dataclasses
import importlib.util
import os
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from vitzoo.errors import BadInputError

CONFIGS = "recipes/accelerate_configs"


def _env(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def _flag(name: str) -> bool:
    return _env(name, "false").lower() in ("1", "true", "yes")


@dataclasses.dataclass(frozen=True)
class Strategy:
    """The parallelism in force. `shards_here`: vitzoo applies FSDP2 itself (CPU processes)."""

    kind: str  # "single" | "ddp" | "fsdp" | "deepspeed"
    shards_here: bool = False
    reshard_after_forward: bool = True
    wrap_policy: str = "TRANSFORMER_BASED_WRAP"
    layer_classes: tuple[str, ...] = ()

    @property
    def sharded(self) -> bool:
        return self.kind == "fsdp"

    def describe(self, accelerator: Any) -> str:
        """The start-up line's `distributed:` part."""
        processes, device = accelerator.num_processes, accelerator.device.type
        backend = "gloo" if device == "cpu" else "nccl"
        if self.kind == "fsdp":
            who = "vitzoo's FSDP2 (Accelerate's FSDP needs GPUs)" if self.shards_here else "Accelerate"
            return (f"FSDP: parameters, gradients and optimizer state sharded over {processes} {device.upper()} "
                    f"process(es), {backend}, applied by {who}")
        if self.kind == "ddp":
            return f"DDP over {processes} {device.upper()} processes ({backend}, {accelerator.distributed_type.value})"
        if self.kind == "deepspeed":
            return f"DeepSpeed over {processes} process(es)"
        return f"none (one process, {accelerator.distributed_type.value})"


def check_launch(use_cpu: bool) -> None:
    """Refuse, at start and by name, a launch config this machine cannot run (rather than train
    with another strategy than the one asked for)."""
    if _flag("ACCELERATE_USE_DEEPSPEED"):
        if use_cpu:
            raise BadInputError(
                "this run was launched with a DeepSpeed config (distributed_type: DEEPSPEED), which needs CUDA GPUs; this "
                f"machine has none (or --cpu was given). On CPUs launch with {CONFIGS}/fsdp.yaml (sharded) or "
                f"{CONFIGS}/multi_cpu.yaml (DDP)")
        if importlib.util.find_spec("deepspeed") is None:
            raise BadInputError("this run was launched with a DeepSpeed config, but the deepspeed package is not "
                                "installed: `pip install deepspeed`, or launch with fsdp.yaml instead")
    if _flag("ACCELERATE_USE_FSDP") and use_cpu:
        version = _env("FSDP_VERSION", "1")
        if version != "2":
            raise BadInputError(f"the FSDP config asks for fsdp_version {version}; on CPU processes vitzoo runs FSDP2 "
                                f"only: set `fsdp_version: 2` (as {CONFIGS}/fsdp.yaml does)")
        policy = _env("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
        if policy not in ("TRANSFORMER_BASED_WRAP", "NO_WRAP"):
            raise BadInputError(f"the FSDP config's fsdp_auto_wrap_policy {policy} is not supported on CPU processes; "
                                "use TRANSFORMER_BASED_WRAP (each transformer block is a unit) or NO_WRAP")


def strategy_of(accelerator: Any) -> Strategy:
    """What the launched run does, from the Accelerator and the launcher's environment."""
    from accelerate.utils import DistributedType

    kind = accelerator.distributed_type
    if kind == DistributedType.DEEPSPEED:
        return Strategy("deepspeed")
    fsdp_here = _flag("ACCELERATE_USE_FSDP") and kind == DistributedType.MULTI_CPU
    if kind == DistributedType.FSDP or fsdp_here:
        classes = tuple(name.strip() for name in _env("FSDP_TRANSFORMER_CLS_TO_WRAP").split(",") if name.strip())
        return Strategy("fsdp", shards_here=fsdp_here,
                        reshard_after_forward=_env("FSDP_RESHARD_AFTER_FORWARD", "true").lower() != "false",
                        wrap_policy=_env("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP"), layer_classes=classes)
    if kind == DistributedType.NO:
        return Strategy("single")
    return Strategy("ddp")


# --------------------------------------------------------------------------- sharding
def layer_classes(model: nn.Module) -> set[str]:
    """The repeated units FSDP wraps one by one: transformers' `_no_split_modules` of every
    pretrained model inside `model` (what Accelerate's TRANSFORMER_BASED_WRAP uses), and the class
    of timm's `blocks`."""
    from transformers import PreTrainedModel

    names: set[str] = set()
    for module in model.modules():
        if isinstance(module, PreTrainedModel):
            names.update(module._no_split_modules or [])
        blocks = getattr(module, "blocks", None)
        if isinstance(blocks, (nn.Sequential, nn.ModuleList)) and len(blocks):
            names.add(type(blocks[0]).__name__)
    return names


def shard(model: nn.Module, strategy: Strategy) -> nn.Module:
    """Apply FSDP2 in place: each transformer block (per the wrap policy), then the whole model.
    Needs the process group (Accelerate has created it). Returns `model`, now an FSDPModule."""
    from torch.distributed.fsdp import fully_shard

    wrapped: set[str] = set()
    if strategy.wrap_policy == "TRANSFORMER_BASED_WRAP":
        wrapped = set(strategy.layer_classes) or layer_classes(model)
        found = {type(module).__name__ for module in model.modules()}
        unknown = set(strategy.layer_classes) - found
        if unknown:
            raise BadInputError(f"the FSDP config names layer classes to wrap that this model lacks: {', '.join(sorted(unknown))}; "
                                f"its blocks are {', '.join(sorted(layer_classes(model))) or 'unnamed'}")
    for module in reversed(list(model.modules())):  # inner units first: a unit may hold another
        if module is not model and type(module).__name__ in wrapped:
            fully_shard(module, reshard_after_forward=strategy.reshard_after_forward)
    fully_shard(model, reshard_after_forward=strategy.reshard_after_forward)
    return model


def is_sharded(module: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(parameter, DTensor) for parameter in module.parameters())


def _full(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.full_tensor() if isinstance(tensor, DTensor) else tensor


def _local(tensor: torch.Tensor) -> torch.Tensor:
    from torch.distributed.tensor import DTensor

    return tensor.to_local() if isinstance(tensor, DTensor) else tensor


def full_state_dict(module: nn.Module) -> dict[str, torch.Tensor]:
    """`module`'s weights whole, on every process: sharded tensors are all-gathered (a collective:
    every process must call this, in the same order), others are returned as they are."""
    return {key: _full(value) for key, value in module.state_dict().items()}


def gathered_parameters(module: nn.Module) -> Iterator[torch.Tensor]:
    """`module`'s parameters whole, one at a time (all-gathered where sharded)."""
    for parameter in module.parameters():
        yield _full(parameter.detach())


class Gathered:
    """A read-only view of a (possibly sharded) module whose `state_dict()` is whole: what timm's
    ModelEmaV3 reads when it updates a full EMA from a sharded model."""

    def __init__(self, module: nn.Module) -> None:
        self.module = module

    def state_dict(self) -> dict[str, torch.Tensor]:
        return full_state_dict(self.module)

    def parameters(self) -> Iterator[torch.Tensor]:
        return gathered_parameters(self.module)

    def buffers(self) -> Iterator[torch.Tensor]:
        return self.module.buffers()


def local_parameter_count(module: nn.Module) -> int:
    """Parameters this process holds (its shards under FSDP)."""
    return sum(_local(parameter).numel() for parameter in module.parameters())


def all_finite(module: nn.Module) -> bool:
    """Whether this process's (local) weights are all finite."""
    return all(bool(torch.isfinite(_local(parameter)).all()) for parameter in module.parameters())
