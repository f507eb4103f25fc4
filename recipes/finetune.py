"""Fine-tune any vitzoo model (any family, either backend) on an image-classification dataset.

    # one process (CPU or one GPU); `vitzoo finetune ...` runs this same code
    python recipes/finetune.py --model deit-tiny --dataset digits --scratch --image-size 32 \
        --epochs 20 --output-dir runs/digits

    # data parallel: N GPUs, or N CPU processes over gloo on a machine without GPUs
    accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --model deit-small --dataset beans

    # FSDP / DeepSpeed / multi-node: same script, another config (see recipes/accelerate_configs/)
    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml recipes/finetune.py ...

The run folder (--output-dir) gets args.json, metrics.jsonl, results.json, checkpoints/ and
model/ (the best model by eval accuracy: `vitzoo.load("runs/digits/model")`, or transformers
`from_pretrained`). `--resume auto` continues an interrupted run from its newest checkpoint.
"""

from __future__ import annotations

import math
import sys

import torch
from accelerate.utils import set_seed
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from tqdm.auto import tqdm

import vitzoo
from vitzoo.data import eval_transform, make_loader, mixup_fn, train_transform
from vitzoo.training.arguments import FinetuneArguments, load_data, parse
from vitzoo.training.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from vitzoo.training.engine import (
    MODEL_DIR,
    RunFolder,
    Throughput,
    banner,
    build_ema,
    check_finite,
    check_finite_weights,
    environment,
    evaluate_and_keep_best,
    forward_logits,
    make_accelerator,
    prepare_pixels,
)
from vitzoo.training.optim import build_optimizer, build_scheduler

MODES = [
    "any registry family (ViT, DeiT, BEiT, DINO, MAE, DINOv2), local folder or timm model; --backend timm|transformers",
    "pretrained or --scratch (random init, --config-overrides for the architecture); --image-size interpolates positions",
    "RandAugment/TrivialAugment, mixup/cutmix, label smoothing (timm); EMA of weights",
    "AdamW with layer-wise LR decay and no decay on biases/norms/positions/tokens; warm-up + cosine",
    "gradient accumulation and clipping; bf16/fp16 autocast; --freeze-backbone for linear probing",
    "one process, DDP on GPUs or CPU (gloo), FSDP and DeepSpeed through accelerate configs",
    "atomic checkpoints, --resume auto (mid-epoch too)",
]


def main(argv: list[str] | None = None) -> dict:
    args = parse(FinetuneArguments, argv, description=__doc__)
    if args.push_to_hub:
        from vitzoo.publish import check_push

        check_push(args.hub_model_id)  # a bad repo id or a missing token stops here, not after training
    accelerator = make_accelerator(args)
    banner("fine-tuning", MODES, accelerator)
    set_seed(args.seed)
    run = RunFolder(args.output_dir, accelerator)

    # ---- data: label names travel from the dataset into the model's config
    splits = load_data(args)

    # the source may ask for other augmentation defaults (digits: no flips); flags always win
    augmentation = {"hflip": 0.5, "crop_scale": 0.08, **splits.augmentation}
    hflip = augmentation["hflip"] if args.hflip is None else args.hflip
    crop_scale = augmentation["crop_scale"] if args.crop_scale is None else args.crop_scale

    # ---- model: a fresh head with the dataset's classes on any checkpoint
    zoo = vitzoo.load(
        args.model,
        task="classification",
        id2label=splits.id2label,
        pretrained=not args.scratch,
        backend=args.backend,
        revision=args.revision,
        image_size=args.image_size,
        config_overrides=args.config_overrides,
    )
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"model: {zoo.spec.name} ({zoo.backend}, {weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {zoo.image_size}px; data: {splits.summary()}", flush=True)
        print(f"augmentation: flip {hflip}, crop scale >= {crop_scale}, auto-augment {args.auto_augment}, "
              f"mixup {args.mixup}, cutmix {args.cutmix}, label smoothing {args.label_smoothing}", flush=True)
    model = zoo.model.train()
    if args.freeze_backbone:
        freeze_all_but_head(model)
    preprocessing = zoo.spec.preprocessing
    train_loader = make_loader(
        splits.train,
        batch_size=args.batch_size,
        shuffle=True,
        drop_last=True,
        seed=args.seed,
        num_workers=args.num_workers,
        transform=train_transform(
            preprocessing,
            image_size=zoo.image_size,
            auto_augment=args.auto_augment,
            hflip=hflip,
            random_resized_crop=args.random_resized_crop,
            scale=(crop_scale, 1.0),
        ),
    )
    eval_loader = make_loader(
        splits.eval,
        batch_size=args.eval_batch_size or 2 * args.batch_size,
        shuffle=False,
        num_workers=args.num_workers,
        transform=eval_transform(preprocessing, zoo.image_size),
    )

    # ---- optimisation
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.epochs
    optimizer = build_optimizer(
        model,
        learning_rate=args.learning_rate,
        weight_decay=args.weight_decay,
        layer_decay=args.layer_decay,
        depth=zoo.spec.architecture.depth,
    )
    scheduler = build_scheduler(
        optimizer, total_steps=total_steps, warmup_steps=int(args.warmup_ratio * total_steps), min_lr=args.min_learning_rate
    )
    mixup = mixup_fn(args.mixup, args.cutmix, args.label_smoothing, splits.num_classes)
    criterion = SoftTargetCrossEntropy() if mixup else LabelSmoothingCrossEntropy(args.label_smoothing)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    if args.compile:
        model = torch.compile(model)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    accelerator.register_for_checkpointing(scheduler)
    ema = build_ema(model, args.ema_decay, accelerator)
    if args.report_to:
        accelerator.init_trackers("vitzoo-finetune", config={k: v for k, v in vars(args).items() if v is not None})

    # ---- resume: model, optimizer, scheduler, EMA and every RNG, then skip the batches done
    state = TrainState()
    checkpoint = latest_checkpoint(args.output_dir) if args.resume == "auto" else args.resume
    if checkpoint:
        state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, step {state.step}")
    run.save_args(args)

    # ---- the loop
    throughput = Throughput()
    eval_model = ema.module if ema is not None else model
    best = {"accuracy": state.best_metric} if state.best_metric is not None else None
    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_main_process, desc="training")
    for epoch in range(state.epoch, args.epochs):
        model.train()
        train_loader.set_epoch(epoch)  # the sampler's order and each sample's augmentation: f(seed, epoch)
        train_loader.dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
        for images, labels in batches:
            state.batches_in_epoch += 1
            if images.shape[0] == 0:  # every image of this batch was undecodable
                continue
            pixels = prepare_pixels(images, preprocessing, args.channels_last)
            targets = labels
            if mixup is not None:
                pixels, targets = mixup(pixels, labels)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss = criterion(forward_logits(model, pixels), targets)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(model.parameters(), args.max_grad_norm)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            throughput.add(images.shape[0] * accelerator.num_processes)
            if not accelerator.sync_gradients:
                continue
            state.step += 1
            state.images_seen += images.shape[0] * accelerator.num_processes
            scheduler.step_update(state.step)
            if ema is not None:
                ema.update(accelerator.unwrap_model(model), step=state.step)
            progress.update(1)
            if state.step % args.log_steps == 0:
                check_finite(loss, state.step, args.output_dir)
                event = {"step": state.step, "epoch": epoch + state.batches_in_epoch / len(train_loader),
                         "loss": loss.item(), "lr": optimizer.param_groups[-1]["lr"], "images_per_second": throughput.window()}
                run.log(event)
                progress.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
            if args.eval_steps and state.step % args.eval_steps == 0:
                best = evaluate_and_keep_best(accelerator, zoo, eval_model, eval_loader, preprocessing, run, state, epoch, best, args,
                                              {"recipe": "finetune"})
            if args.checkpoint_steps and state.step % args.checkpoint_steps == 0:
                check_finite_weights(model, state.step, args.output_dir)
                save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
        state.epoch, state.batches_in_epoch = epoch + 1, 0
        check_finite_weights(model, state.step, args.output_dir)
        best = evaluate_and_keep_best(accelerator, zoo, eval_model, eval_loader, preprocessing, run, state, epoch, best, args,
                                              {"recipe": "finetune"})
        save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
    progress.close()

    # ---- results: the best model's metrics, speed, data accounting, environment
    images_per_second, wall_time = throughput.total()
    results = {
        "model": zoo.spec.name,
        "backend": zoo.backend,
        "pretrained": not args.scratch,
        "eval": best,
        "steps": state.step,
        "epochs": args.epochs,
        "train_images_per_second": images_per_second,
        "wall_time_seconds": wall_time,
        "num_processes": accelerator.num_processes,
        "data": splits.summary(),
        "environment": environment(),
    }
    run.save_results(results)
    if args.push_to_hub and accelerator.is_main_process:
        from vitzoo.publish import push_run

        push_run(args.output_dir, args.hub_model_id, private=args.hub_private, revision=args.hub_revision)
    if args.report_to:
        accelerator.end_training()
    if accelerator.is_main_process:
        print(f"done: eval accuracy {best['accuracy']:.4f} (top-5 {best['top5']:.4f}, macro F1 {best['macro_f1']:.4f}), "
              f"{images_per_second:.1f} train images/s, {wall_time / 60:.1f} min; model in {run.file(MODEL_DIR)}")
    return results


def freeze_all_but_head(model: torch.nn.Module) -> None:
    """Linear probing: only the classifier (transformers `classifier*`, timm `head*`) trains."""
    trainable = 0
    for name, parameter in model.named_parameters():
        is_head = name.split(".")[0] in {"classifier", "cls_classifier", "distillation_classifier", "head", "head_dist"}
        parameter.requires_grad_(is_head)
        trainable += parameter.numel() if is_head else 0
    if trainable == 0:
        raise vitzoo.BadInputError("--freeze-backbone found no classification head to train")


if __name__ == "__main__":
    try:
        main()
    except vitzoo.VitzooError as error:
        print(f"finetune: error: {error}", file=sys.stderr)
        sys.exit(2)
