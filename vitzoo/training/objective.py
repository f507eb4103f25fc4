"""What a training method adds to the one shared loop (`vitzoo.training.fit`): its maths only.

An objective turns a batch into a loss, may act around each optimizer update (DINO's EMA teacher,
its last-layer freezing and weight-decay schedule), evaluates in its own way (classification
metrics, a k-NN of the teacher, the masked-patch loss) and says which evaluation keeps the saved
model. Everything else -- preparation, resume, accumulation, clipping, autocast, logging,
checkpoints, results, push -- is the loop's. The shape follows timm's `timm/task/` (`TrainingTask`,
`TokenDistillationTask`): a small module that owns its loss and its extra models (a teacher).

Hooks receive a `Context`: the accelerator, the run folder, the plan (epochs and steps), the
training state, and `context.pixels(images)`, the batch normalisation the loop itself uses.

An objective also knows the signs that its method has collapsed or stalled (`health`, read from the
run's `History` by `vitzoo.training.watch`): each method's signs and thresholds live with it.
"""

from __future__ import annotations

import dataclasses
from typing import TYPE_CHECKING, Any

import torch

from vitzoo.training.engine import prepare_pixels

if TYPE_CHECKING:
    from accelerate import Accelerator

    from vitzoo.registry import Preprocessing
    from vitzoo.training.checkpoint import TrainState
    from vitzoo.training.engine import RunFolder
    from vitzoo.zoo import ZooModel


@dataclasses.dataclass
class Plan:
    """How long the run is: optimizer updates per epoch (after sharding and accumulation) and in all."""

    epochs: int
    steps_per_epoch: int
    total_steps: int
    batches_per_epoch: int  # loader batches per epoch on each process
    warmup_ratio: float = 0.0  # share of the steps that warm the learning rate up

    @property
    def warmup_steps(self) -> int:
        return int(self.warmup_ratio * self.total_steps)


WINDOW = 5  # the newest logged values a sign averages: one noisy batch is never a sign


@dataclasses.dataclass(frozen=True)
class Sign:
    """A sign that a run has collapsed or stalled, as an objective's `health` reports it."""

    name: str  # stable: it keys the warning, given once per run (a resumed run's included)
    kind: str  # "collapse" or "stall"
    finding: str  # what the numbers show: "DINO collapse: teacher entropy 5.53 is 99.7% of ln(256) = 5.55 (uniform outputs)"
    advice: str  # the flags that address it: "try --head-batch-norm, ... (docs/distillation.md)"


@dataclasses.dataclass
class History:
    """What the run has logged so far, as the signs read it (a resumed run's earlier events included)."""

    training: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # training log events, by step
    evaluations: list[dict[str, Any]] = dataclasses.field(default_factory=list)  # evaluations (DINO's step 0 first)

    def recent(self, key: str, count: int = WINDOW, after: int = 0) -> list[float]:
        """The newest `count` logged values of `key` (fewer when fewer were logged), from steps after `after`."""
        values: list[float] = []
        for event in reversed(self.training):
            if len(values) == count or event["step"] <= after:
                break
            if key in event:
                values.append(event[key])
        return values[::-1]

    def first(self, key: str, until: int) -> list[float]:
        """The logged values of `key` up to step `until`."""
        values: list[float] = []
        for event in self.training:
            if event["step"] > until:
                break
            if key in event:
                values.append(event[key])
        return values


@dataclasses.dataclass
class Context:
    """What the loop shares with the objective and the callbacks."""

    accelerator: Accelerator
    run: RunFolder
    plan: Plan
    state: TrainState
    preprocessing: Preprocessing
    channels_last: bool = False
    model: torch.nn.Module | None = None  # as prepared by the accelerator (wrapped, compiled)
    optimizer: torch.optim.Optimizer | None = None
    objective: Objective | None = None
    train_loader: Any = None  # as prepared by the accelerator
    eval_loader: Any = None
    loss: torch.Tensor | None = None  # the newest training loss, kept as a tensor (no sync per step)

    @property
    def last_loss(self) -> float | None:
        return float(self.loss) if self.loss is not None else None

    def pixels(self, images: torch.Tensor) -> torch.Tensor:
        """A uint8 batch as the model's normalised input (channels-last when asked)."""
        return prepare_pixels(images, self.preprocessing, self.channels_last)

    @property
    def epoch_position(self) -> float:
        """Epochs done, fractional in the middle of one (an evaluation at batch 625 of 937 of the
        second epoch is at 1.667)."""
        state = self.state
        if state.batches_in_epoch == 0:
            return state.epoch
        return round(state.epoch + state.batches_in_epoch / max(1, self.plan.batches_per_epoch), 4)


class Objective:
    """A training method for `fit`. Subclasses implement `loss` and `evaluate`; the rest is optional."""

    name = "objective"
    # the evaluation metric whose highest value keeps model/ (ties keep the earlier model); None: model/ is
    # saved at every evaluation and the newest evaluation is the run's result
    select: str | None = None
    # with --stop-on-collapse, the metric that keeps model/ when `select` is None, so that a run a sign ends
    # keeps its best model rather than the collapsed newest one (DINO: the teacher's k-NN accuracy)
    watched_select: str | None = None
    evaluate_at_start = False  # also score the model before the first step (logged as epoch 0)

    def setup(self, context: Context) -> None:
        """After the model, optimizer and loaders are prepared, before a checkpoint is restored."""

    def loss(self, model: torch.nn.Module, pixels: torch.Tensor, labels: torch.Tensor, context: Context) -> tuple[torch.Tensor, dict[str, Any]]:
        """(loss, values to log) of one batch, under the loop's autocast; values may stay tensors
        (they are read only at log steps)."""
        raise NotImplementedError

    def before_update(self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, context: Context) -> None:
        """After backward and clipping, before `optimizer.step()`, on steps that update."""

    def after_update(self, model: torch.nn.Module, context: Context) -> None:
        """After each optimizer update (`context.state.step` already counts it)."""

    def on_log(self, seconds: float) -> dict[str, float]:
        """Values for this log event, given the seconds since the previous one."""
        return {}

    def evaluate(self, model: torch.nn.Module, loader: Any, context: Context) -> dict[str, float]:
        """Metrics of `model` (the EMA of the weights when the run keeps one) on the eval split."""
        raise NotImplementedError

    def health(self, context: Context, history: History) -> list[Sign]:
        """The signs of collapse or stall that `history` shows now; read at each log and evaluation from
        the 50th update on (`vitzoo.training.watch`). None by default."""
        return []

    def describe(self, metrics: dict[str, Any]) -> str:
        """The printed summary of one evaluation."""
        return ", ".join(f"{key} {value:.4f}" for key, value in metrics.items() if isinstance(value, float))

    def saved_model(self, zoo: ZooModel, model: torch.nn.Module) -> tuple[ZooModel, torch.nn.Module]:
        """What model/ holds: (the ZooModel that describes it, the module whose weights are saved)."""
        return zoo, model

    def summary(self, results: dict[str, Any], model_dir: str) -> str:
        """The run's closing line, after "done: "."""
        return (f"eval {results['eval']}, {results['train_images_per_second']:.1f} train images/s, "
                f"{results['wall_time_seconds'] / 60:.1f} min; model in {model_dir}")

    def finish(self, model: torch.nn.Module, context: Context) -> None:
        """After the last step, before results.json: figures and the like."""

    def results(self, context: Context) -> dict[str, Any]:
        """The method's own fields of results.json (they may replace the loop's, e.g. "eval")."""
        return {}

    def state_dict(self) -> dict[str, Any]:
        """What a resume needs: tensors go to safetensors, the rest to JSON."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Take back what `state_dict` gave (tensors on the CPU)."""


class Callback:
    """An observer of `fit`: per update, log, evaluation, checkpoint and at the end. Never an owner."""

    def on_train_begin(self, context: Context) -> None:
        """Before the first step of this process's loop (after a resume)."""

    def on_step(self, context: Context) -> None:
        """After each optimizer update."""

    def on_log(self, context: Context, event: dict[str, Any]) -> None:
        """After a training event is written to metrics.jsonl."""

    def on_evaluate(self, context: Context, metrics: dict[str, Any]) -> None:
        """After each evaluation (the kept best is `context.state.best`)."""

    def on_checkpoint(self, context: Context, path: str) -> None:
        """After a checkpoint is complete on disk."""

    def on_end(self, context: Context, results: dict[str, Any]) -> None:
        """After results.json is written."""
