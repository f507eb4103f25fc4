"""The pieces the training loop (`vitzoo.training.fit`) and the objectives are made of: the
Accelerator, the run folder, the forward pass, evaluation across processes, EMA, the NaN/inf
checks and saving the model.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import platform
import sys
import time
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from accelerate import Accelerator
from accelerate.utils import DataLoaderConfiguration, ProjectConfiguration

import vitzoo
from vitzoo.data import normalize_batch
from vitzoo.errors import BadInputError, VitzooError
from vitzoo.hardware import cpu_has_native_bf16
from vitzoo.io import atomic_write_json
from vitzoo.metrics import classification_metrics
from vitzoo.registry import Preprocessing
from vitzoo.training.autoprecision import Choice, choose_for
from vitzoo.training.checkpoint import CHECKPOINTS, newest_intact
from vitzoo.training.distributed import all_finite, check_launch, full_state_dict, strategy_of
from vitzoo.training.lock import LOCK_NAME, FolderLock
from vitzoo.zoo import ZooModel

MODEL_DIR = "model"


class NonFiniteLossError(VitzooError):
    """The loss became NaN or infinite; the last checkpoint is still good."""


def make_accelerator(args: Any) -> Accelerator:
    """An Accelerator for this machine: GPUs where present, else the CPU.

    `cpu=True` matters on GPU-less machines: only then does `accelerate launch --num_processes N`
    give N processes that train one model together over gloo (without it each trains alone).
    Outside a distributed launch each run gets a fresh Accelerate state, so one process can run
    several trainings with different settings (compare, benchmarks, tests).
    """
    if not (torch.distributed.is_available() and torch.distributed.is_initialized()):
        reset_accelerate_state()
    use_cpu = args.cpu or not torch.cuda.is_available()
    check_launch(use_cpu)
    single = int(os.environ.get("WORLD_SIZE", "1")) == 1
    precision = resolve_mixed_precision(args.mixed_precision, use_cpu,
                                        measure=(lambda: choose_for(args)) if single else None)
    if isinstance(precision, Choice):
        print(f"mixed precision auto: {'bf16' if precision.precision == 'bf16' else 'fp32'} ({precision.reason})", flush=True)
        precision = precision.precision
    return Accelerator(
        cpu=use_cpu,
        mixed_precision=precision,
        gradient_accumulation_steps=args.gradient_accumulation_steps,
        log_with=args.report_to,
        project_config=ProjectConfiguration(project_dir=args.output_dir, logging_dir=os.path.join(args.output_dir, "logs")),
        # a seeded sampler reshuffles per epoch from (seed, epoch), so a resumed run sees the same order
        # pinned batches reach the GPU asynchronously, overlapping the copy with the last step
        dataloader_config=DataLoaderConfiguration(use_seedable_sampler=True, non_blocking=not use_cpu),
    )


def reset_accelerate_state() -> None:
    """Forget the process-wide state an earlier Accelerator left (precision, accumulation, device)."""
    from accelerate.state import AcceleratorState, GradientState, PartialState

    AcceleratorState._reset_state(True)
    GradientState._reset_state()
    PartialState._reset_state()


def resolve_mixed_precision(requested: str, use_cpu: bool, measure: Callable[[], Choice] | None = None) -> str | Choice | None:
    """'auto': what `accelerate launch` was configured with, else bf16 autocast where the hardware
    computes in bf16 natively and it pays: GPUs that support it; CPUs with AVX512-BF16 or AMX, where
    a single-process run asks `measure` (`vitzoo.training.autoprecision.choose_for`: a rule of the
    run's shape, measured; small models train faster in fp32) and gets a Choice that says why; and
    full precision elsewhere. An explicit value always wins."""
    if requested != "auto":
        return requested
    if os.environ.get("ACCELERATE_MIXED_PRECISION"):
        return None  # the launcher's config (accelerate_configs/*.yaml) decides
    if use_cpu:
        if not cpu_has_native_bf16():
            return "no"
        return measure() if measure is not None else "bf16"
    return "bf16" if torch.cuda.is_bf16_supported() else "no"


def start_run(args: Any, recipe: str, name: str, modes: Sequence[str]) -> tuple[Accelerator, RunFolder]:
    """What every recipe does first: refuse a bad --push-to-hub before any work (a bad repo id or a
    missing token stops here, not after training), build the Accelerator, print the banner, seed
    everything, open the run folder."""
    from accelerate.utils import set_seed

    from vitzoo.training import budget
    from vitzoo.training.arguments import check_arguments, given
    from vitzoo.training.preflight import check_inputs

    check_arguments(args)
    check_inputs(args, recipe)  # the model's shape and the data source, read without loading either
    budget.apply_to_epochs(args, given(args))
    if args.push_to_hub:
        from vitzoo.publish import check_push

        check_push(args.hub_model_id)
    accelerator = make_accelerator(args)
    run = RunFolder(args.output_dir, accelerator, resume=args.resume, overwrite=args.overwrite)
    banner(name, modes, accelerator)
    set_seed(args.seed)
    return accelerator, run


def banner(name: str, modes: Sequence[str], accelerator: Accelerator) -> None:
    if not accelerator.is_main_process:
        return
    lines = [f"vitzoo {vitzoo.__version__} - {name}", *[f"  - {mode}" for mode in modes]]
    lines.append(f"  distributed: {strategy_of(accelerator).describe(accelerator)}")
    lines.append(
        f"  running on: {accelerator.num_processes} process(es), device {accelerator.device}, "
        f"mixed precision: {accelerator.mixed_precision}"
    )
    print("\n".join(lines), flush=True)


class RunFolder:
    """The run-folder contract: args.json, metrics.jsonl, results.json, checkpoints/, model/.

    One run per folder: a folder that holds another run is refused unless the run resumes it
    (`resume`; with "auto", only from an intact checkpoint: a run with none is refused, naming each
    checkpoint skipped and why) or clears it (`overwrite`), and a running run holds `.vitzoo.lock` (its pid and
    host) so that a second one started on the same folder is refused at once; a lock left by a
    process that is gone is taken over. Only the main process writes; metrics.jsonl gets one JSON
    object per event, flushed at once.
    """

    RUN_FILES = ("args.json", "metrics.jsonl", "results.json", "checkpoints", MODEL_DIR)
    CLEARED = (*RUN_FILES, "logs", "tokenizer", "adapter", "reconstructions.png", "dino_curves.png", "curves.png")
    LOCK = LOCK_NAME

    def __init__(self, output_dir: str, accelerator: Accelerator, *, resume: str | None = None,
                 overwrite: bool = False) -> None:
        self.path = output_dir
        self.accelerator = accelerator
        self.lock = FolderLock(output_dir)
        self.resume = resume
        self._found: tuple[str | None, list[str]] | None = None  # --resume auto: (newest intact, broken newer ones)
        self._created: list[str] = []  # the folders this run made, innermost first
        if accelerator.is_main_process:
            _OPEN_RUNS.append(self)
            self._claim(resume, overwrite)

    def _claim(self, resume: str | None, overwrite: bool) -> None:
        import shutil

        path = self.path
        if os.path.exists(path) and not os.path.isdir(path):
            raise BadInputError(f"--output-dir {path} is a file, not a folder; choose a folder")
        folder = os.path.abspath(path)
        while not os.path.exists(folder):
            self._created.append(folder)
            folder = os.path.dirname(folder)
        try:
            os.makedirs(path, exist_ok=True)
        except OSError as error:
            raise BadInputError(f"--output-dir {path} cannot be created: {error.strerror}; choose another folder") from None
        if not os.access(path, os.W_OK | os.X_OK):
            raise BadInputError(f"--output-dir {path} is not writable; choose another folder")
        self._lock()
        found = [name for name in self.RUN_FILES if os.path.exists(self.file(name))]
        if found and overwrite:
            self._check_clearable()
            for name in self.CLEARED:
                target = self.file(name)
                if os.path.isdir(target):
                    shutil.rmtree(target)
                elif os.path.exists(target):
                    os.remove(target)
        elif found and resume is None:
            self.release()
            raise BadInputError(f"--output-dir {path} holds another run ({', '.join(found)}); continue it with --resume auto, "
                                "replace it with --overwrite, or choose another folder")
        elif found and resume == "auto" and self._newest_intact()[0] is None:
            # training afresh here would replace a finished run's model/ and log its steps twice in metrics.jsonl
            self.release()
            why = "; ".join(f"skipped {broken}" for broken in self._newest_intact()[1]) or f"{CHECKPOINTS}/ holds none"
            raise BadInputError(f"--resume auto: --output-dir {path} holds a run ({', '.join(found)}) but no checkpoint to "
                                f"continue it from ({why}); start it again with --overwrite (clears the run), or "
                                "choose another folder")

    def resume_from(self) -> str | None:
        """The checkpoint this run continues from: --resume PATH as given, or with --resume auto the folder's
        newest intact checkpoint (broken newer ones are named in a warning, on the main process); None: a new run."""
        if self.resume != "auto":
            return self.resume
        checkpoint, skipped = self._newest_intact()
        for broken in skipped if self.accelerator.is_main_process else []:
            warnings.warn(f"skipping the broken checkpoint {broken}", stacklevel=2)
        return checkpoint

    def _newest_intact(self) -> tuple[str | None, list[str]]:
        if self._found is None:  # verifying reads every file of each checkpoint: once per run
            self._found = newest_intact(self.path)
        return self._found

    def _lock(self) -> None:
        self.lock.acquire()
        import atexit

        atexit.register(self.release)

    def _check_clearable(self) -> None:
        """--overwrite clears the run's own files and folders: refuse it, before anything is deleted, when one
        of those folders holds a file vitzoo did not write there (notes put in model/, say)."""
        from vitzoo.io import MODEL_FOLDER, FolderKind, check_folder
        from vitzoo.objectives.tokenizer import TOKENIZER_FOLDER
        from vitzoo.training.adapters import ADAPTER_FOLDER

        steps = FolderKind("run's checkpoints folder", ("step-*", ".step-*"), lambda folder: True)
        for name, kind in ((MODEL_DIR, MODEL_FOLDER), ("adapter", ADAPTER_FOLDER), ("tokenizer", TOKENIZER_FOLDER),
                           (CHECKPOINTS, steps)):
            if os.path.isdir(self.file(name)):
                check_folder(self.file(name), kind, overwrite=True, option="--overwrite:")

    def release(self) -> None:
        """Give the folder up (the end of the run, or the process). A run that ends before writing anything
        (refused input, a failed load) also takes back the folders it made, so the refusal leaves no trace;
        only empty folders are removed, so nothing anyone wrote goes with them."""
        self.lock.release()
        if self in _OPEN_RUNS:
            _OPEN_RUNS.remove(self)
        for folder in self._created:
            try:
                os.rmdir(folder)
            except OSError:
                break  # not empty: the run wrote there, and the folders above hold it
        self._created = []

    def file(self, name: str) -> str:
        return os.path.join(self.path, name)

    def save_args(self, args: Any) -> None:
        if self.accelerator.is_main_process:
            atomic_write_json(self.file("args.json"), dataclasses.asdict(args))

    def log(self, event: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            with open(self.file("metrics.jsonl"), "a") as handle:
                handle.write(json.dumps(event) + "\n")
        scalars = {k: v for k, v in event.items() if isinstance(v, (int, float)) and k != "step"}
        if self.accelerator.trackers:
            self.accelerator.log(scalars, step=event.get("step"))

    def events(self) -> list[dict[str, Any]]:
        """Every event logged to metrics.jsonl so far (a resumed run's included); [] before the first."""
        try:
            with open(self.file("metrics.jsonl")) as handle:
                return [json.loads(line) for line in handle if line.strip()]
        except FileNotFoundError:
            return []

    def save_results(self, results: dict[str, Any]) -> None:
        if self.accelerator.is_main_process:
            atomic_write_json(self.file("results.json"), results)


# runs of this process whose folder is claimed and not yet given up, so that a command that fails half-way
# gives them up at once (`release_open_runs`) instead of at the process's exit
_OPEN_RUNS: list[RunFolder] = []


def release_open_runs() -> None:
    """Give up every run folder this process still holds: the end of a command, however it ended."""
    for run in list(_OPEN_RUNS):
        run.release()


def environment() -> dict[str, Any]:
    """Versions and hardware, for results.json and model cards."""
    import accelerate
    import timm
    import transformers

    device = torch.cuda.get_device_name(0) if torch.cuda.is_available() else platform.processor() or platform.machine()
    return {
        "python": sys.version.split()[0],
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "timm": timm.__version__,
        "accelerate": accelerate.__version__,
        "vitzoo": vitzoo.__version__,
        "device": device,
        "cpu_count": os.cpu_count(),
    }


def forward_logits(model: torch.nn.Module, pixel_values: torch.Tensor) -> torch.Tensor:
    """Class scores from a (possibly DDP/FSDP-wrapped) transformers or timm classifier."""
    output = model(pixel_values=pixel_values) if _is_transformers(model) else model(pixel_values)
    return output.logits if hasattr(output, "logits") else output


def _is_transformers(model: torch.nn.Module) -> bool:
    from transformers import PreTrainedModel

    inner = getattr(model, "module", model)
    inner = getattr(inner, "_orig_mod", inner)
    return isinstance(inner, PreTrainedModel)


def check_finite(loss: torch.Tensor, step: int, output_dir: str) -> None:
    """Stop on a NaN/inf loss, naming the step (call at log steps: it syncs with the device)."""
    value = loss.item()
    if not math.isfinite(value):
        raise NonFiniteLossError(
            f"the loss became {value} at optimizer step {step}. Lower --learning-rate, enable --max-grad-norm, "
            f"or use bf16 instead of fp16; the last checkpoint in {output_dir}/checkpoints is intact (--resume auto)."
        )


def check_finite_weights(model: torch.nn.Module, step: int, output_dir: str, accelerator: Accelerator) -> None:
    """Refuse to checkpoint weights that hold NaN/inf, so the newest checkpoint is always usable
    (every process decides together: under FSDP each one sees only its shards)."""
    bad = torch.tensor([0.0 if all_finite(model) else 1.0], device=accelerator.device)
    if float(accelerator.reduce(bad, reduction="sum")[0]):
        raise NonFiniteLossError(
            f"the weights became NaN or infinite by optimizer step {step}; not saving them. Lower --learning-rate "
            f"or enable --max-grad-norm; the last checkpoint in {output_dir}/checkpoints is intact (--resume auto)."
        )


@torch.no_grad()
def evaluate_classifier(
    model: torch.nn.Module,
    loader: torch.utils.data.DataLoader,
    accelerator: Accelerator,
    pixels: Callable[[torch.Tensor], torch.Tensor],
) -> dict[str, float]:
    """Top-1, top-5 and macro F1 over the whole eval split, gathered from every process once
    (the padding Accelerate adds to even out the last batch is dropped). `pixels` turns a uint8
    batch into the model's input."""
    was_training = model.training
    model.eval()
    all_logits, all_labels = [], []
    for images, labels in loader:
        if images.shape[0] == 0:
            continue
        with accelerator.autocast():
            logits = forward_logits(model, pixels(images))
        logits, labels = accelerator.gather_for_metrics((logits.float(), labels))
        all_logits.append(logits.cpu())
        all_labels.append(labels.cpu())
    model.train(was_training)
    if not all_logits:
        raise BadInputError("the evaluation split yielded no decodable image")
    labels = torch.cat(all_labels)
    return {**classification_metrics(torch.cat(all_logits), labels, top_k=5), "samples": int(labels.numel())}


def prepare_pixels(images: torch.Tensor, preprocessing: Preprocessing, channels_last: bool) -> torch.Tensor:
    pixels = normalize_batch(images, preprocessing)
    return pixels.contiguous(memory_format=torch.channels_last) if channels_last else pixels


def build_ema(model: torch.nn.Module, decay: float | None) -> torch.nn.Module | None:
    """timm's ModelEmaV3 of `model`, built before the model is wrapped or sharded: a whole copy on
    every process (the loop checkpoints its weights as safetensors)."""
    if decay is None:
        return None
    from timm.utils import ModelEmaV3

    return ModelEmaV3(model, decay=decay)


def save_model(
    accelerator: Accelerator,
    zoo: ZooModel,
    model: torch.nn.Module,
    directory: str,
    extra_metadata: dict[str, Any] | None = None,
) -> None:
    """Save `model`'s weights (gathered from every process, FSDP/DeepSpeed included) as a vitzoo
    model folder described by `zoo`: transformers format + preprocessor config + vitzoo.json,
    written atomically. `model` may be another module of the same architecture than `zoo.model`
    (an EMA, DINO's teacher): its weights are written, and no live module is changed."""
    from accelerate.utils import DistributedType

    if accelerator.distributed_type == DistributedType.DEEPSPEED:
        state = accelerator.get_state_dict(model)
    else:  # FSDP shards are gathered; DDP and compile wrappers are looked through
        state = full_state_dict(accelerator.unwrap_model(model, keep_torch_compile=False))
    if accelerator.is_main_process:
        # a torch.compile'd model (--compile) names its weights "_orig_mod.<name>"
        state = {key.replace("_orig_mod.", ""): value for key, value in state.items()}
        zoo.save_pretrained(directory, extra_metadata=extra_metadata, state_dict=state)
    accelerator.wait_for_everyone()


class Throughput:
    """Images per second between log points, without per-step syncs."""

    def __init__(self) -> None:
        self.last = time.perf_counter()
        self.images_since = 0

    def add(self, count: int) -> None:
        self.images_since += count

    def window(self) -> tuple[float, float]:
        """(images/s, seconds) since the previous window."""
        now = time.perf_counter()
        seconds = max(now - self.last, 1e-9)
        rate = self.images_since / seconds
        self.last, self.images_since = now, 0
        return rate, seconds
