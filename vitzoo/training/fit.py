"""The one training loop under every recipe.

    results = fit(args, accelerator=accelerator, run=run, zoo=zoo, model=model, objective=objective,
                  train_loader=train_loader, eval_loader=eval_loader, splits=splits,
                  metadata={"recipe": "finetune"})

`fit` owns what every method shares: the optimizer (AdamW groups, layer decay) and the warm-up +
cosine schedule, `--channels-last`, `--compile`, `accelerator.prepare`, the EMA of the weights
(`--ema-decay`), resume (model, optimizer, EMA, the objective's state, every RNG, the data
position, the best evaluation with all its metrics), gradient accumulation, clipping, autocast,
the NaN/inf checks, logging to metrics.jsonl and the trackers, evaluation every `--eval-steps`
and at each epoch end, keeping model/ (the best by the objective's metric, or the newest),
checkpoints, results.json and `--push-to-hub`; and `--peft lora` (`vitzoo.training.adapters`: the
model wrapped before everything else, model/ saved merged and adapter/ beside it). The objective (`vitzoo.training.objective`) brings
the method's maths; callbacks watch (benchmarks time steps, compare follows progress).

A resume continues the same run only: a checkpoint of another model or other data is refused, a run whose
model/ is gone gets it back from the checkpoint of its best evaluation (or is refused), and a finished run
resumed with nothing left to train keeps its results.json as it was. SIGINT and SIGTERM end the step in
progress, save a checkpoint, release the folder and raise `Interrupted` (exit code 130 or 143).
"""

from __future__ import annotations

import dataclasses
import hashlib
import math
import os
import signal
import threading
import time
from collections.abc import Sequence
from typing import Any

import torch
from accelerate import Accelerator
from tqdm.auto import tqdm

import vitzoo
from vitzoo.errors import BadInputError, Interrupted
from vitzoo.io import read_json
from vitzoo.training.adapters import ADAPTER_DIR, Adapter, adapt, count_parameters
from vitzoo.training.budget import UNLIMITED_EPOCHS, TimeBudget
from vitzoo.training.checkpoint import TrainState, load_checkpoint, save_checkpoint
from vitzoo.training.curves import Curves
from vitzoo.training.distributed import Gathered, local_parameter_count, shard, strategy_of
from vitzoo.training.engine import (
    MODEL_DIR,
    RunFolder,
    Throughput,
    build_ema,
    check_finite,
    check_finite_weights,
    environment,
    save_model,
)
from vitzoo.training.objective import Callback, Context, Objective, Plan
from vitzoo.training.optim import build_optimizer, build_scheduler
from vitzoo.training.watch import Watch
from vitzoo.zoo import ZooModel

OBJECTIVE_PREFIX, EMA_PREFIX = "objective.", "ema."


def plan_steps(args: Any, train_loader: torch.utils.data.DataLoader, accelerator: Accelerator) -> Plan:
    """Optimizer updates per epoch and in all, from the (not yet sharded) training loader."""
    per_process = math.ceil(len(train_loader) / accelerator.num_processes)
    steps_per_epoch = math.ceil(per_process / args.gradient_accumulation_steps)
    return Plan(epochs=args.epochs, steps_per_epoch=steps_per_epoch, total_steps=steps_per_epoch * args.epochs,
                batches_per_epoch=per_process, warmup_ratio=args.warmup_ratio)


def fit(
    args: Any,
    *,
    accelerator: Accelerator,
    run: RunFolder,
    zoo: ZooModel,
    model: torch.nn.Module,
    objective: Objective,
    train_loader: torch.utils.data.DataLoader,
    eval_loader: torch.utils.data.DataLoader | None = None,
    test_loader: torch.utils.data.DataLoader | None = None,
    splits: Any = None,
    metadata: dict[str, Any],
    learning_rate: float | None = None,
    betas: tuple[float, float] = (0.9, 0.999),
    callbacks: Sequence[Callback] = (),
    description: str = "training",
) -> dict[str, Any]:
    """Train `model` with `objective` as `args` say; returns what results.json holds.

    `metadata` names the recipe (and method, and what else describes the run) in results.json and
    model/vitzoo.json, and the tracker's project; `learning_rate` overrides `args.learning_rate`
    (pretraining's --blr scaling). `test_loader` (the test split kept apart by `load_data(..., keep_test=True)`)
    scores the kept model/ once after training, by the objective's own evaluation (results.json "test").
    """
    watch = Watch(stop=args.stop_on_collapse)  # signs of collapse or stall: warned of, or the run's end
    callbacks = [Curves(), watch, *callbacks]  # curves.png in every run folder
    # model/ is the best by this metric, or the newest when None; with --stop-on-collapse DINO keeps its best teacher
    select = objective.select or (objective.watched_select if args.stop_on_collapse else None)
    if len(train_loader) == 0:  # every recipe's training loader drops an incomplete last batch
        raise BadInputError(f"the training split has {len(train_loader.dataset)} images, fewer than --batch-size "
                            f"{args.batch_size} (the last incomplete batch is dropped, so no step would run); lower "
                            "--batch-size")
    plan = plan_steps(args, train_loader, accelerator)
    strategy = strategy_of(accelerator)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    model, adapter = adapt(args, zoo, model)  # before the EMA copy, sharding and the optimizer: they see the adapters
    trainable, total = count_parameters(model)
    if adapter is not None:
        accelerator.print(adapter.describe())
    ema = build_ema(model, getattr(args, "ema_decay", None))  # whole on every process, whatever the strategy
    if strategy.shards_here:  # FSDP on CPU processes: vitzoo shards (Accelerate's FSDP needs GPUs)
        model = shard(model.to(accelerator.device), strategy)
    base_rate = args.learning_rate if learning_rate is None else learning_rate
    # a PeftModel's own names are prefixed: its inner model names the blocks as the layer-decay matchers expect
    optimizer = build_optimizer(model.get_base_model() if adapter else model, learning_rate=base_rate, weight_decay=args.weight_decay,
                                layer_decay=args.layer_decay, depth=zoo.spec.architecture.depth, betas=betas)
    budget = TimeBudget.from_args(args, plan.total_steps, plan.steps_per_epoch)

    def schedule(total_steps: int) -> Any:
        return build_scheduler(optimizer, total_steps=total_steps, warmup_steps=int(args.warmup_ratio * total_steps),
                               min_lr=args.min_learning_rate)

    scheduler = schedule(plan.total_steps)
    if args.compile:
        model = torch.compile(model)
    loaders = [train_loader] if eval_loader is None else [train_loader, eval_loader]
    if strategy.shards_here:
        optimizer, *loaders = accelerator.prepare(optimizer, *loaders)
    else:
        model, optimizer, *loaders = accelerator.prepare(model, optimizer, *loaders)
    train_loader, eval_loader = loaders[0], (loaders[1] if len(loaders) > 1 else None)
    if ema is not None:
        ema.module.to(accelerator.device)
    for loader in (train_loader, eval_loader):
        describe = getattr(getattr(loader, "dataset", None), "describe", None)
        if describe is not None and accelerator.is_main_process:
            print(f"data: {describe()}", flush=True)
    parameters = accelerator.gather(torch.tensor([local_parameter_count(model)], device=accelerator.device)).tolist()
    if args.report_to:
        accelerator.init_trackers(f"vitzoo-{metadata['recipe']}", config={k: v for k, v in dataclasses.asdict(args).items() if v is not None})
    state = TrainState()
    context = Context(accelerator=accelerator, run=run, plan=plan, state=state, preprocessing=zoo.spec.preprocessing,
                      channels_last=args.channels_last, model=model, optimizer=optimizer, objective=objective,
                      train_loader=train_loader, eval_loader=eval_loader)
    objective.setup(context)

    checkpoint = run.resume_from()
    about_model, about_data = describe_model(zoo, adapter), describe_data(args, splits)
    if checkpoint:
        state, tensors = load_checkpoint(accelerator, checkpoint, model=model, optimizer=optimizer, describe=about_model,
                                         data=about_data)
        context.state = state
        expected = set(_split(objective.state_dict(), OBJECTIVE_PREFIX)[1])
        expected |= {EMA_PREFIX + key for key in ema.module.state_dict()} if ema is not None else set()
        missing = sorted(expected - set(tensors))
        if missing:
            raise BadInputError(
                f"{checkpoint} has no saved {', '.join(missing[:3])}{' ...' if len(missing) > 3 else ''}: it was written "
                "by another method, without these flags (--ema-decay?) or by an older vitzoo. Resume with the run's own "
                "arguments (--config OUTPUT_DIR/args.json), or start afresh in a new --output-dir")
        objective.load_state_dict({**state.extra, **_strip(tensors, OBJECTIVE_PREFIX)})
        if ema is not None:
            ema.module.load_state_dict(_strip(tensors, EMA_PREFIX))
        accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, step {state.step}")
        if budget is not None:
            budget.restore(state.budget)
            if budget.planned_steps:  # the original plan, and its schedule
                plan.total_steps, scheduler = budget.planned_steps, schedule(budget.planned_steps)
    eval_model = ema.module if ema is not None else model

    def keep_model() -> None:
        """model/ from the weights of the evaluation in `state.best` (those of `eval_model` now)."""
        kept = "best_step" if select else "step"
        training = {**metadata, "dataset": args.dataset, kept: state.best["step"], "base_model": args.model,
                    "pretrained": not args.scratch, **({"peft": adapter.results()} if adapter else {})}
        saved_zoo, saved = objective.saved_model(zoo, eval_model)
        if adapter is not None and saved_zoo is zoo:  # the merged weights, and the adapter beside them
            adapter.save(accelerator, saved, run.file(MODEL_DIR), run.file(ADAPTER_DIR), {"training": training})
        else:
            save_model(accelerator, saved_zoo, saved, run.file(MODEL_DIR), extra_metadata={"training": training})

    if checkpoint and state.best is not None and not os.path.isdir(run.file(MODEL_DIR)):
        if state.best.get("step") != state.step:
            raise BadInputError(f"{run.file(MODEL_DIR)} is missing: it held the weights of step {state.best.get('step')} "
                                f"(the run's best evaluation), which resuming from step {state.step} cannot rebuild; put "
                                "it back, or start the run again with --overwrite")
        keep_model()
        accelerator.print(f"{run.file(MODEL_DIR)} was missing: rebuilt from {checkpoint}, the step of its best evaluation")
    run.save_args(args)

    def evaluate(at_start: bool = False) -> None:
        metrics = objective.evaluate(eval_model, eval_loader, context)
        position = 0 if at_start else context.epoch_position
        run.log({"step": state.step, "epoch": position, "eval": True, **metrics})
        accelerator.print(f"epoch {position}{' (before training)' if at_start else ''}: {objective.describe(metrics)}")
        state.last_eval_step = state.step
        if not at_start:
            best = state.best
            if select is None or best is None or metrics[select] > best[select]:
                state.best = {**metrics, "step": state.step, "epoch": position}
                keep_model()
        for callback in callbacks:
            callback.on_evaluate(context, metrics)

    loop_start, seconds_before = time.perf_counter(), state.train_seconds
    resumed_at = (state.step, state.last_eval_step)  # unchanged at the end: this call trained and evaluated nothing
    saved_at = state.step if checkpoint else None  # the step of the newest checkpoint on disk

    def checkpoint_now() -> None:
        nonlocal saved_at
        check_finite_weights(model, state.step, args.output_dir, accelerator)
        state.train_seconds = seconds_before + time.perf_counter() - loop_start
        state.extra, tensors = _split(objective.state_dict(), OBJECTIVE_PREFIX)
        if ema is not None:
            tensors.update({EMA_PREFIX + key: value for key, value in ema.module.state_dict().items()})
        state.model, state.data = about_model, about_data
        state.budget = budget.state() if budget is not None else None
        path = save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints, model=model, optimizer=optimizer,
                               tensors=tensors)
        saved_at = state.step
        for callback in callbacks:
            callback.on_checkpoint(context, path)

    def stop_if_interrupted(between_steps: bool = False) -> None:
        """After an optimizer step or a checkpoint: on SIGINT/SIGTERM (at the same step on every process),
        checkpoint this step unless it just was, give the folder up and raise `Interrupted`."""
        received = interruption.agreed(state.step if between_steps else None)
        if not received:
            return
        if saved_at != state.step:
            checkpoint_now()
        progress.close()
        run.release()
        raise Interrupted(f"interrupted at step {state.step}; resume with --resume auto", received)

    throughput = Throughput()
    progress = tqdm(total=plan.total_steps, initial=state.step, disable=not accelerator.is_main_process, desc=description)
    for callback in callbacks:
        callback.on_train_begin(context)
    if objective.evaluate_at_start and state.step == 0 and state.last_eval_step is None:
        evaluate(at_start=True)
    with Interruption(accelerator) as interruption:
        stopped_mid_epoch = False  # by the time budget or --stop-on-collapse: evaluated and saved after the loop
        for epoch in range(state.epoch, args.epochs):
            if watch.stops(context):  # a sign at the last epoch end's evaluation, or one a resumed run had logged
                plan.total_steps = state.step
            if state.step >= plan.total_steps:  # a resumed run whose time budget was spent
                break
            model.train()
            train_loader.set_epoch(epoch)  # the sampler's order and each sample's augmentation: f(seed, epoch)
            train_loader.dataset.set_epoch(epoch)
            skipped = state.batches_in_epoch
            batches = accelerator.skip_first_batches(train_loader, skipped) if skipped else train_loader
            for images, labels in batches:
                state.batches_in_epoch += 1
                if images.shape[0] == 0:  # every image of this batch was undecodable
                    continue
                pixels = context.pixels(images)
                with accelerator.accumulate(model):
                    with accelerator.autocast():
                        loss, logs = objective.loss(model, pixels, labels, context)
                    accelerator.backward(loss)
                    if accelerator.sync_gradients:
                        if args.max_grad_norm:
                            accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                        objective.before_update(model, optimizer, context)
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
                images_done = images.shape[0] * accelerator.num_processes
                throughput.add(images_done)
                state.images_seen += images_done
                if not accelerator.sync_gradients:
                    continue
                state.step += 1
                context.loss = loss.detach()
                if budget is not None and budget.step_done(state.step, seconds_before + time.perf_counter() - loop_start, accelerator):
                    plan.total_steps, scheduler = budget.planned_steps, schedule(budget.planned_steps)
                    progress.total = plan.total_steps
                    accelerator.print(budget.describe())
                scheduler.step_update(state.step)
                if ema is not None:
                    ema.update(Gathered(accelerator.unwrap_model(model)), step=state.step)
                objective.after_update(model, context)
                progress.update(1)
                for callback in callbacks:
                    callback.on_step(context)
                if state.step % args.log_steps == 0:
                    check_finite(loss, state.step, args.output_dir)
                    rate, seconds = throughput.window()
                    event = {"step": state.step, "epoch": context.epoch_position, "loss": loss.item(),
                             "lr": optimizer.param_groups[-1]["lr"], **{k: float(v) for k, v in logs.items()},
                             **objective.on_log(seconds), "images_per_second": rate}
                    run.log(event)
                    progress.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
                    for callback in callbacks:
                        callback.on_log(context, event)
                if args.eval_steps and state.step % args.eval_steps == 0:
                    evaluate()
                if args.checkpoint_steps and state.step % args.checkpoint_steps == 0:
                    checkpoint_now()
                if watch.stops(context):  # --stop-on-collapse: a sign at this step's log or evaluation
                    plan.total_steps = state.step
                if state.step >= plan.total_steps:  # the epoch's end evaluates and saves, then looks for a signal
                    break
                stop_if_interrupted(between_steps=True)
            if state.step >= plan.total_steps and state.batches_in_epoch < plan.batches_per_epoch:
                stopped_mid_epoch = True
                break
            state.epoch, state.batches_in_epoch = epoch + 1, 0
            check_finite_weights(model, state.step, args.output_dir, accelerator)
            epoch_end = time.perf_counter()
            if state.last_eval_step != state.step:
                evaluate()
            checkpoint_now()
            stop_if_interrupted()
            if budget is not None:
                cost = time.perf_counter() - epoch_end
                budget.outside_steps(cost)
                if budget.epoch_end(state.step, seconds_before + time.perf_counter() - loop_start, cost, accelerator):
                    plan.total_steps, scheduler = budget.planned_steps, schedule(budget.planned_steps)
                    progress.total = plan.total_steps
                    accelerator.print(budget.describe())
            if state.step >= plan.total_steps:
                break
        if stopped_mid_epoch:
            check_finite_weights(model, state.step, args.output_dir, accelerator)
            if state.last_eval_step != state.step:
                evaluate()
            checkpoint_now()
        stop_if_interrupted()
    progress.close()

    kept = finished_results(run, state.step) if checkpoint and (state.step, state.last_eval_step) == resumed_at else None
    if kept is not None:  # a finished run resumed with nothing left to do: its results.json stays as it is
        results, test = kept, kept.get("test")
    else:
        state.train_seconds = seconds_before + time.perf_counter() - loop_start
        objective.finish(ema.module if ema is not None else model, context)
        watched = watch.results()  # "warnings" (each sign of collapse or stall once) and "stopped" (--stop-on-collapse)
        test = score_kept_model(objective, test_loader, context, splits) if test_loader is not None else None
        results = {
            "model": zoo.spec.name,
            "backend": zoo.backend,
            "pretrained": not args.scratch,
            **metadata,
            "eval": state.best if test is None else {"split": splits.eval_split, **state.best},
            **({"test": test} if test is not None else {}),
            "steps": state.step,
            "epochs": None if args.epochs == UNLIMITED_EPOCHS else args.epochs,  # None: the time budget alone ended it
            "train_images_per_second": state.images_seen / state.train_seconds if state.train_seconds else 0.0,
            "wall_time_seconds": state.train_seconds,
            "num_processes": accelerator.num_processes,
            "time_budget": ({**budget.state(), "ended_by": "stop-on-collapse" if watched["stopped"] else "budget"
                             if state.step < budget.epoch_steps else "epochs",
                             "training_seconds": state.train_seconds} if budget is not None else None),
            **watched,
            "trainable_parameters": trainable,
            "total_parameters": total,
            **({"peft": adapter.results()} if adapter else {}),
            "distributed": {"strategy": strategy.kind, "description": strategy.describe(accelerator),
                            "parameters": sum(p.numel() for p in accelerator.unwrap_model(model).parameters()),
                            "parameters_per_process": parameters},
            "data": splits.summary() if splits is not None else None,  # after training: the files skipped are counted
            "environment": environment(),
            **objective.results(context),
        }
        run.save_results(results)
    if args.push_to_hub and accelerator.is_main_process:
        from vitzoo.publish import push_run

        push_run(args.output_dir, args.hub_model_id, private=args.hub_private, revision=args.hub_revision)
    if args.report_to:
        accelerator.end_training()
    run.release()
    for callback in callbacks:
        callback.on_end(context, results)
    if accelerator.is_main_process:
        skipped = (results["data"] or {}).get("skipped", 0)
        note = f"; {skipped} unreadable image file(s) skipped" if skipped else ""
        if test is not None:
            note = (f"; validated on {splits.eval_split}, which chose the model; test split {test['split']} "
                    f"({test['samples']} images, scored once): {objective.describe(test)}{note}")
        print(f"done: {objective.summary(results, run.file(MODEL_DIR))}{note}", flush=True)
    return results


def finished_results(run: RunFolder, step: int) -> dict[str, Any] | None:
    """The results.json of the run in `run` if it ended at optimizer step `step` (results.json is written at a
    run's end only), else None."""
    try:
        results = read_json(run.file("results.json"))
    except (OSError, BadInputError):
        return None
    return results if isinstance(results, dict) and results.get("steps") == step else None


def score_kept_model(objective: Objective, loader: torch.utils.data.DataLoader, context: Context,
                     splits: Any) -> dict[str, Any]:
    """The test split's metrics of the kept model/ (the best on the validation split), measured once, after
    training, by the objective's own evaluation: every process loads model/ whole (as the EMA is kept whole,
    whatever the strategy) and scores its shard of the test split, gathered as in any evaluation."""
    accelerator = context.accelerator
    kept = vitzoo.load(context.run.file(MODEL_DIR), device=accelerator.device)
    metrics = objective.evaluate(kept.model, accelerator.prepare_data_loader(loader), context)
    return {"split": splits.test_split, **metrics}


def describe_model(zoo: ZooModel, adapter: Adapter | None = None) -> dict[str, Any]:
    """What a checkpoint's weights are, for the message when a run resumes another model's."""
    architecture = zoo.spec.architecture
    return {"name": zoo.spec.name, "hidden_size": getattr(architecture, "hidden_size", None),
            "depth": getattr(architecture, "depth", None), "num_classes": len(zoo.id2label) if zoo.id2label else None,
            **({"peft": adapter.summary()} if adapter else {})}


def describe_data(args: Any, splits: Any) -> dict[str, Any] | None:
    """What a run trains on, kept in each checkpoint so that resuming on other data is refused: the dataset as
    given, each split's size, and a fingerprint of the class names, the labels and what each image is (its file
    under the data's folder, its row, its array index) -- cheap, no image is read. None without splits."""
    if splits is None:
        return None
    datasets = [dataset for dataset in (splits.train, splits.eval, splits.test) if dataset is not None]
    names = [[dataset.reader.describe(index) for index in range(len(dataset))] for dataset in datasets]
    # files are named under the folder they all share, so the same data moved elsewhere is the same data
    shared = os.path.commonprefix([name for split in names for name in split])
    shared = shared[:shared.rfind("/") + 1]
    digest = hashlib.sha256("\n".join(splits.id2label.values()).encode())
    for dataset, split in zip(datasets, names):
        digest.update(b"\0" + "\n".join(name[len(shared):] for name in split).encode())
        digest.update(dataset.labels.astype("int64").tobytes())
    return {"dataset": str(args.dataset), "train_samples": len(splits.train), "eval_samples": len(splits.eval),
            "test_samples": len(splits.test) if splits.test is not None else None, "num_classes": splits.num_classes,
            "fingerprint": digest.hexdigest()}


class Interruption:
    """SIGINT and SIGTERM while training: the handler only notes the signal, and the loop acts on it between steps
    (`agreed`), so that the step in progress ends and its checkpoint is whole. Under `accelerate launch` every
    process is signalled, not always within the same step: all stop at the first step where any one has been.
    Handlers can only be set in the main thread (elsewhere signals keep their usual effect); the previous ones
    are put back when the loop ends, however it ends. DataLoader workers forked meanwhile inherit the handler,
    so a Ctrl-C sent to the whole process group leaves them serving batches instead of dying with it."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self, accelerator: Accelerator) -> None:
        self.accelerator = accelerator
        self.received = 0  # the first signal's number; 0: none
        self._previous: dict[int, Any] = {}

    def __enter__(self) -> Interruption:
        if threading.current_thread() is threading.main_thread():
            self._previous = {number: signal.signal(number, self._note) for number in self.SIGNALS}
        return self

    def __exit__(self, *exception: object) -> None:
        for number, handler in self._previous.items():
            signal.signal(number, handler if handler is not None else signal.SIG_DFL)

    def _note(self, number: int, frame: object) -> None:
        self.received = self.received or number

    # with several processes, agreeing is a collective (a host sync on GPUs): between steps it is asked every this
    # many steps, well inside the grace a scheduler gives before SIGKILL
    EVERY = 8

    def agreed(self, step: int | None = None) -> int:
        """The signal every process stops for now (0: go on); `step`: asked between steps, where several
        processes agree only every `EVERY` steps (always at epoch ends and checkpoints, where `step` is None)."""
        if self.accelerator.num_processes == 1:
            return self.received
        if step is not None and step % self.EVERY:
            return 0
        mine = torch.tensor([self.received], device=self.accelerator.device)
        return int(self.accelerator.reduce(mine, reduction="max")[0])


def _split(values: dict[str, Any], prefix: str) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """An objective's state as (JSON values, prefixed tensors)."""
    plain = {key: value for key, value in values.items() if not isinstance(value, torch.Tensor)}
    tensors = {prefix + key: value for key, value in values.items() if isinstance(value, torch.Tensor)}
    return plain, tensors


def _strip(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    return {key[len(prefix):]: value for key, value in tensors.items() if key.startswith(prefix)}
