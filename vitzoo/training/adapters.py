"""Parameter-efficient fine-tuning in the shared loop: `--peft lora` through Hugging Face PEFT.

`fit` calls `adapt` first, before the EMA copy, FSDP sharding, the optimizer and
`accelerator.prepare`: the model becomes a `peft.PeftModel` whose LoRA matrices (on the family's
attention projections, `Family.lora_targets` / `timm_lora_targets`, or `--lora-targets`) and
classification head (PEFT's `modules_to_save`: the top-level modules named in `Family.head_names`)
are the only parameters that require gradients, so the optimizer holds only those and their state.
Everything else in the loop is unchanged: checkpoints hold the wrapped model's whole state dict by
name (frozen weights too, so a checkpoint resumes on its own), DDP reduces only the trainable
gradients, and FSDP2 shards blocks that mix frozen and trainable parameters.

model/ is saved merged: W + (alpha / r) B A for each adapted Linear and the trained head under the
plain model's names, computed from the gathered state dict, written through a copy of the ZooModel
whose module is a meta-device replica of the model as loaded (so transformers' `from_pretrained` and
`vitzoo.load` read it with no PEFT installed, and the live model is never changed). adapter/ beside it
holds PEFT's adapter files (`PeftModel.from_pretrained(base, "RUN/adapter")`).
"""

from __future__ import annotations

import copy
import dataclasses
import os
import warnings
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from vitzoo.errors import BadInputError
from vitzoo.io import FolderKind, atomic_directory
from vitzoo.training.distributed import full_state_dict

if TYPE_CHECKING:
    from accelerate import Accelerator

    from vitzoo.zoo import ZooModel

INSTALL = 'pip install "vitzoo[peft]"'
ADAPTER_DIR = "adapter"
# PEFT's files, in the adapter/ of a run folder vitzoo holds (PEFT writes no marker of vitzoo's)
ADAPTER_FOLDER = FolderKind("LoRA adapter folder", ("adapter_config.json", "adapter_model.safetensors", "README.md"),
                            lambda folder: os.path.isfile(os.path.join(folder, "adapter_config.json")))
NAME = "default"  # PEFT's adapter name
PREFIX = "base_model.model."  # what PeftModel puts before the wrapped model's names
LORA_DEFAULTS = {"lora_rank": 8, "lora_alpha": 16.0, "lora_dropout": 0.0, "lora_targets": None}


def peft_installed() -> bool:
    try:
        import peft  # noqa: F401
    except ImportError:
        return False
    return True


def check_peft_arguments(args: Any) -> None:
    """Refuse, before anything loads, a `--peft` run that cannot happen and LoRA flags that would do nothing."""
    if args.peft is None:
        given = [name for name, default in LORA_DEFAULTS.items() if getattr(args, name) != default]
        if given:
            flags = ", ".join(f"--{name.replace('_', '-')}" for name in given)
            verb = "is" if len(given) == 1 else "are"
            raise BadInputError(f"{flags} {verb} used only with --peft lora; add --peft lora, or drop {flags}")
        return
    if getattr(args, "freeze_backbone", False):
        raise BadInputError("--freeze-backbone trains the head alone and --peft lora trains adapters and the head: "
                            "choose one")
    if not peft_installed():
        raise BadInputError(f"--peft {args.peft} needs the peft package, which is not installed: {INSTALL}")
    if args.lora_targets is not None and not _split(args.lora_targets):
        raise BadInputError("--lora-targets is empty; give Linear layer names, e.g. q_proj,v_proj")


def _split(names: str) -> list[str]:
    return [name.strip() for name in names.split(",") if name.strip()]


def count_parameters(model: nn.Module) -> tuple[int, int]:
    """(trainable, total) parameters of a model that is not sharded."""
    parameters = list(model.parameters())
    return sum(p.numel() for p in parameters if p.requires_grad), sum(p.numel() for p in parameters)


def meta_replica(module: nn.Module) -> nn.Module:
    """A copy of `module` whose parameters and buffers are on the meta device: its structure, names and
    attributes (a transformers config, timm's pretrained_cfg) without holding any weight."""
    memo: dict[int, Any] = {}
    for tensor in (*module.parameters(), *module.buffers()):
        empty = torch.empty_like(tensor, device="meta")
        memo[id(tensor)] = nn.Parameter(empty, requires_grad=tensor.requires_grad) if isinstance(tensor, nn.Parameter) else empty
    return copy.deepcopy(module, memo)


@dataclasses.dataclass
class Adapter:
    """A model wrapped by `adapt`: what the loop prints, records and saves about it."""

    method: str
    rank: int
    alpha: float
    dropout: float
    targets: list[str]  # the names asked for (the family's or --lora-targets)
    heads: list[str]  # the top-level head modules trained whole
    scaling: dict[str, float]  # adapted Linear (name in the plain model) -> alpha / r
    shell: ZooModel  # the ZooModel with a meta replica of the plain model: what model/ is written through
    trainable: int
    total: int  # every parameter of the wrapped model (PEFT's "all params": the head's original copy too)
    model_parameters: int  # of the plain (merged) model

    def describe(self) -> str:
        """The start-up line."""
        share = 100 * self.trainable / self.total if self.total else 0.0
        return (f"peft: LoRA rank {self.rank}, alpha {self.alpha:g}, dropout {self.dropout:g} on {len(self.scaling)} "
                f"Linear layers ({', '.join(self.targets)}), head {', '.join(self.heads)} trained whole: "
                f"{self.trainable:,} trainable of {self.total:,} parameters ({share:.2f}%); model/ gets the merged "
                f"{self.model_parameters:,}, adapter/ the adapter")

    def summary(self) -> str:
        """How a checkpoint's model is named in messages (a resume of another rank or of a full fine-tune)."""
        return f"LoRA rank {self.rank} on {','.join(self.targets)}"

    def results(self) -> dict[str, Any]:
        """results.json's "peft" (and model/vitzoo.json's training.peft)."""
        return {"method": self.method, "rank": self.rank, "alpha": self.alpha, "dropout": self.dropout,
                "targets": self.targets, "adapted_layers": len(self.scaling), "heads": self.heads,
                "trainable_parameters": self.trainable, "total_parameters": self.total,
                "model_parameters": self.model_parameters}

    def merge(self, state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """The plain model's state dict from the wrapped one's: each adapted weight plus (alpha / r) B A, the
        trained copy of the head, nothing of PEFT's own."""
        merged: dict[str, torch.Tensor] = {}
        for key, value in state.items():
            key = key.removeprefix(PREFIX)
            if ".lora_" in key or ".original_module." in key:
                continue
            merged[key.replace(f".modules_to_save.{NAME}.", ".").replace(".base_layer.", ".")] = value
        for layer, scale in self.scaling.items():
            down, up = (state[f"{PREFIX}{layer}.lora_{part}.{NAME}.weight"].float() for part in "AB")
            weight = merged[f"{layer}.weight"]
            merged[f"{layer}.weight"] = (weight.float() + scale * (up @ down)).to(weight.dtype)
        expected = self.shell.model.state_dict().keys()
        if merged.keys() != expected:
            odd = sorted(set(merged) ^ set(expected))
            raise RuntimeError(f"the merged LoRA weights do not name the model's ({len(odd)} differ, e.g. {odd[0]})")
        return merged

    def save(self, accelerator: Accelerator, module: nn.Module, model_dir: str, adapter_dir: str,
             extra_metadata: dict[str, Any] | None = None) -> None:
        """model/ (merged) and adapter/ from `module`, the wrapped model or its EMA (gathered from every
        process under FSDP: every process must call this)."""
        unwrapped = accelerator.unwrap_model(module, keep_torch_compile=False)
        state = {key.replace("_orig_mod.", ""): value.detach().cpu() for key, value in full_state_dict(unwrapped).items()}
        if accelerator.is_main_process:
            self.shell.save_pretrained(model_dir, extra_metadata=extra_metadata, state_dict=self.merge(state))
            with atomic_directory(adapter_dir, ADAPTER_FOLDER) as scratch:
                unwrapped.save_pretrained(scratch, state_dict=state)
        accelerator.wait_for_everyone()


def adapt(args: Any, zoo: ZooModel, model: nn.Module) -> tuple[nn.Module, Adapter | None]:
    """`model` wrapped as `args.peft` says (before any EMA, sharding, optimizer or prepare), with what
    describes it; `(model, None)` for full fine-tuning."""
    method = getattr(args, "peft", None)
    if method is None:
        return model, None
    if not peft_installed():
        raise BadInputError(f"--peft {method} needs the peft package, which is not installed: {INSTALL}")
    from peft import LoraConfig, get_peft_model
    from peft.tuners.lora import LoraLayer

    from vitzoo.registry import head_names

    family = zoo.family
    targets = _split(args.lora_targets) if args.lora_targets else list(
        family.timm_lora_targets if zoo.backend == "timm" else family.lora_targets)
    heads = [name for name, child in model.named_children() if name in head_names() and any(True for _ in child.parameters())]
    if not heads:
        raise BadInputError(f"--peft {method}: {zoo.spec.name} has no classification head to train "
                            f"(looked for {', '.join(sorted(head_names()))})")
    _check_targets(model, targets, heads, zoo)
    shell = copy.copy(zoo)
    shell.model = meta_replica(model)
    config = LoraConfig(r=args.lora_rank, lora_alpha=args.lora_alpha, lora_dropout=args.lora_dropout,
                        target_modules=targets, modules_to_save=heads)
    with warnings.catch_warnings():  # transformers' deprecation of a name PEFT still reads: not the user's concern
        warnings.filterwarnings("ignore", message=".*is_gradient_checkpointing.*")
        _check_called(get_peft_model(meta_replica(model), copy.deepcopy(config)), zoo, LoraLayer)
        wrapped = get_peft_model(model, config)
    scaling = {name: float(layer.scaling[NAME]) for name, layer in wrapped.get_base_model().named_modules()
               if isinstance(layer, LoraLayer)}
    trainable, total = count_parameters(wrapped)
    return wrapped, Adapter(method=method, rank=args.lora_rank, alpha=float(args.lora_alpha),
                            dropout=float(args.lora_dropout), targets=targets, heads=heads, scaling=scaling, shell=shell,
                            trainable=trainable, total=total, model_parameters=count_parameters(shell.model)[1])


def _check_called(replica: nn.Module, zoo: ZooModel, layer_type: type) -> None:
    """Refuse adapters the model's forward would never run: a layer whose weight the model reads itself
    (timm's BEiT multiplies by `qkv.weight` beside its own q/v biases) never calls the LoRA path, so training
    would move nothing and the merge would change the model. `replica`: the model wrapped on the meta device
    (no compute, and the live model is untouched when this refuses); one that cannot run there is not checked."""
    adapted = {name for name, module in replica.get_base_model().named_modules() if isinstance(module, layer_type)}
    called: set[str] = set()
    for name in adapted:
        replica.get_base_model().get_submodule(name).register_forward_hook(lambda *_, name=name: called.add(name))
    try:
        with torch.no_grad():
            replica(torch.empty(1, 3, zoo.image_size, zoo.image_size, device="meta"))
    except Exception:  # noqa: BLE001 - an op without a meta kernel: the check cannot run, training can
        return
    skipped = sorted(adapted - called)
    if skipped:
        other = "--backend transformers, or " if zoo.backend == "timm" else ""
        raise BadInputError(f"--peft: {zoo.spec.name} ({zoo.backend}) never calls {skipped[0]}"
                            f"{f' (nor {len(skipped) - 1} more)' if len(skipped) > 1 else ''} as a layer: its forward "
                            "uses the weight directly, so an adapter there would never train. Use "
                            f"{other}other --lora-targets")


def _check_targets(model: nn.Module, targets: list[str], heads: list[str], zoo: ZooModel) -> None:
    """Each target must name at least one Linear layer outside the head (the merge is a Linear's)."""
    linear = {name for name, module in model.named_modules() if isinstance(module, nn.Linear)}
    available = sorted({name.rsplit(".", 1)[-1] for name in linear if name.split(".")[0] not in heads})
    where = f"{zoo.spec.name} ({zoo.backend})"
    for target in targets:
        matched = [name for name, _ in model.named_modules() if name == target or name.endswith("." + target)]
        if not matched:
            raise BadInputError(f"--lora-targets {target}: {where} has no layer of that name; its Linear layers are "
                                f"{', '.join(available) or 'none'}")
        if any(name.split(".")[0] in heads for name in matched):
            raise BadInputError(f"--lora-targets {target} is the classification head, which --peft trains whole; "
                                f"choose among {', '.join(available)}")
        odd = [name for name in matched if name not in linear]
        if odd:
            raise BadInputError(f"--lora-targets {target}: {odd[0]} of {where} is a {type(model.get_submodule(odd[0])).__name__}, "
                                f"not a Linear layer; vitzoo adapts Linear layers only: {', '.join(available)}")
