"""Distillation: DeiT's teacher-to-student distillation, or DINO's self-distillation.

    # DeiT: a distilled student (distillation token + head) learns from any teacher
    python recipes/distill.py --method deit --model deit-tiny-distilled --teacher runs/teacher/model \
        --dataset digits --scratch --image-size 32 --epochs 20 --output-dir runs/distill

    # DINO: self-distillation of a ViT backbone on unlabelled images (labels ignored)
    python recipes/distill.py --method dino --model dino-vits16 --scratch --dataset digits --out-dim 256 \
        --local-crops 4 --head-batch-norm --batch-size 32 --image-size 32 --output-dir runs/dino
    # (the README's "DINO on small data" has the full command for digits and what each flag changed)

`vitzoo distill ...` runs this same code; `accelerate launch` runs it on N processes. The run folder
is the fine-tuning recipe's: args.json, metrics.jsonl, results.json, checkpoints/, model/ (DeiT: the
best student, which classifies with both heads averaged; DINO: the teacher backbone, for
`vitzoo.load(path, task="features")`, `vitzoo evaluate` or `recipes/finetune.py --model path`).
DINO also writes dino_curves.png: loss and teacher entropy per step, the teacher's k-NN accuracy per
epoch from the start (epoch 0, before any step) on.
"""

from __future__ import annotations

import copy
import math
import sys
import time
import warnings

import torch
from accelerate.data_loader import prepare_data_loader
from accelerate.utils import set_seed
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy
from tqdm.auto import tqdm

import vitzoo
from vitzoo.data import eval_transform, make_loader, mixup_fn, normalize_batch, train_transform
from vitzoo.objectives import dino
from vitzoo.objectives.deit_distill import (
    FrozenTeacher,
    IndexedDataset,
    TeacherLogitCache,
    check_cacheable,
    deit_distillation_loss,
    enable_distilled_training,
    has_distillation_token,
    split_labels,
    student_heads,
    teacher_class_index,
)
from vitzoo.probe import extract_features, knn_evaluate
from vitzoo.training.arguments import DistillArguments, load_data, parse
from vitzoo.training.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from vitzoo.training.engine import (
    MODEL_DIR,
    RunFolder,
    Throughput,
    banner,
    check_finite,
    check_finite_weights,
    environment,
    evaluate_and_keep_best,
    make_accelerator,
    prepare_pixels,
    save_model,
)
from vitzoo.training.optim import build_optimizer, build_scheduler
from vitzoo.zoo import ZooModel

CURVES = "dino_curves.png"  # DINO's loss, teacher entropy and k-NN per epoch, in the run folder
MODES = [
    "--method deit: distillation token + head (distilled students) or logit distillation (any other student)",
    "teacher: registry name, model folder or timm model (CNNs too); frozen, eval mode, no gradients, same autocast",
    "--distill-type none|soft|hard, --alpha, --tau (DeiT: hard, 0.5, 1.0); --label-map for other label sets",
    "--cache-teacher-logits: the teacher runs once over the training set (runs without augmentation)",
    "--method dino: multi-crop, EMA teacher, centring + sharpening, DINO head (see vitzoo/objectives/dino.py)",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto",
]


def main(argv: list[str] | None = None) -> dict:
    args = parse(DistillArguments, argv, description=__doc__)
    if args.method == "dino" and args.cache_teacher_logits:
        raise vitzoo.BadInputError("--cache-teacher-logits is for --method deit (DINO's teacher changes every step)")
    if args.push_to_hub:
        from vitzoo.publish import check_push

        check_push(args.hub_model_id)  # a bad repo id or a missing token stops here, not after training
    return train_dino(args) if args.method == "dino" else train_deit(args)


def push_if_asked(args: DistillArguments, accelerator) -> None:
    """--push-to-hub: publish the run's model/ (as `vitzoo push`) once training is over, from the main process."""
    if args.push_to_hub and accelerator.is_main_process:
        from vitzoo.publish import push_run

        push_run(args.output_dir, args.hub_model_id, private=args.hub_private, revision=args.hub_revision)


def train_deit(args: DistillArguments) -> dict:
    if args.teacher is None and args.distill_type != "none":
        raise vitzoo.BadInputError("--method deit needs --teacher (or --distill-type none to train on labels alone)")
    if not 0.0 <= args.alpha <= 1.0 or args.tau <= 0:
        raise vitzoo.BadInputError(f"--alpha must lie in [0, 1] and --tau be positive (got {args.alpha}, {args.tau})")
    training = {"recipe": "distill", "method": "deit", "teacher": args.teacher, "distill_type": args.distill_type}
    accelerator = make_accelerator(args)
    banner("distillation (DeiT)", MODES, accelerator)
    set_seed(args.seed)
    run = RunFolder(args.output_dir, accelerator)

    splits = load_data(args)
    augmentation = {"hflip": 0.5, "crop_scale": 0.08, **splits.augmentation}
    hflip = augmentation["hflip"] if args.hflip is None else args.hflip
    crop_scale = augmentation["crop_scale"] if args.crop_scale is None else args.crop_scale
    caching = args.cache_teacher_logits and args.distill_type != "none"
    if caching:  # before any model is built: cached logits must belong to the images trained on
        check_cacheable(random_resized_crop=args.random_resized_crop, hflip=hflip, auto_augment=args.auto_augment,
                        mixup=args.mixup, cutmix=args.cutmix)

    # ---- student, then teacher: label sets checked before any training
    zoo = vitzoo.load(
        args.model, task="classification", id2label=splits.id2label, pretrained=not args.scratch, backend=args.backend,
        revision=args.revision, image_size=args.image_size, config_overrides=args.config_overrides,
    )
    teacher = None
    if args.distill_type != "none":
        teacher_zoo = vitzoo.load(
            args.teacher, task="classification", pretrained=not args.teacher_scratch, backend=args.teacher_backend,
            id2label=splits.id2label if args.teacher_scratch else None,
        )
        index = teacher_class_index(teacher_zoo.id2label, zoo.id2label or splits.id2label, args.label_map)
        teacher = FrozenTeacher(teacher_zoo, zoo.spec.preprocessing, index).to(accelerator.device)
    model = zoo.model.train()
    token = has_distillation_token(model)
    enable_distilled_training(model)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        kind = "distillation token" if token else "logit distillation (no distillation token)"
        print(f"student: {zoo.spec.name} ({zoo.backend}, {weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {zoo.image_size}px, {kind}; data: {splits.summary()}", flush=True)
        if teacher is not None:
            print(f"teacher: {teacher.zoo.spec.name} ({teacher.zoo.backend}, "
                  f"{'RANDOM init' if args.teacher_scratch else 'trained weights'}), {teacher.zoo.num_params / 1e6:.2f}M "
                  f"parameters, frozen; distill type {args.distill_type}, alpha {args.alpha}, tau {args.tau}", flush=True)
    preprocessing = zoo.spec.preprocessing
    transform = train_transform(preprocessing, image_size=zoo.image_size, auto_augment=args.auto_augment, hflip=hflip,
                                random_resized_crop=args.random_resized_crop, scale=(crop_scale, 1.0))
    # with cached logits each batch also carries its samples' indices: labels come as (label, index) pairs
    train_loader = make_loader(
        IndexedDataset(splits.train) if caching else splits.train, batch_size=args.batch_size, shuffle=True,
        drop_last=True, seed=args.seed, num_workers=args.num_workers, transform=transform,
    )
    eval_loader = make_loader(
        splits.eval, batch_size=args.eval_batch_size or 2 * args.batch_size, shuffle=False,
        num_workers=args.num_workers, transform=eval_transform(preprocessing, zoo.image_size),
    )

    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.epochs
    optimizer = build_optimizer(model, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                                layer_decay=args.layer_decay, depth=zoo.spec.architecture.depth)
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_steps=int(args.warmup_ratio * total_steps),
                                min_lr=args.min_learning_rate)
    mixup = mixup_fn(args.mixup, args.cutmix, args.label_smoothing, splits.num_classes)
    criterion = SoftTargetCrossEntropy() if mixup else LabelSmoothingCrossEntropy(args.label_smoothing)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    accelerator.register_for_checkpointing(scheduler)

    state = TrainState()
    checkpoint = latest_checkpoint(args.output_dir) if args.resume == "auto" else args.resume
    if checkpoint:
        state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, step {state.step}")
    run.save_args(args)

    # ---- cached teacher: one pass over the training set (the same images as every epoch), then look-ups
    cache = None
    if caching:
        loader = make_loader(IndexedDataset(splits.train), batch_size=args.eval_batch_size or 2 * args.batch_size,
                             shuffle=False, num_workers=args.num_workers, transform=transform)
        # sharded among the processes like a prepared loader, but not registered with the accelerator
        # (its checkpoints keep the same layout with or without the cache)
        loader = prepare_data_loader(loader, accelerator.device, num_processes=accelerator.num_processes,
                                     process_index=accelerator.process_index, put_on_device=True)
        with torch.random.fork_rng(devices=[]):  # the run's random stream stays as without the cache
            cache = TeacherLogitCache.build(
                teacher, loader, len(splits.train), len(teacher.class_index), accelerator=accelerator,
                pixels=lambda images: prepare_pixels(images, preprocessing, args.channels_last),
            )
        accelerator.print(f"cached the teacher's logits of {len(splits.train)} training images in {cache.seconds:.1f} s; "
                          "the teacher does not run again")

    # ---- the loop: the class head learns the labels, the distillation head the teacher
    throughput = Throughput()
    best = {"accuracy": state.best_metric} if state.best_metric is not None else None
    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_main_process, desc="distilling")
    loop_teacher_seconds = teacher.seconds if teacher is not None else 0.0
    window_start, teacher_seconds = throughput.last, loop_teacher_seconds
    for epoch in range(state.epoch, args.epochs):
        model.train()
        train_loader.set_epoch(epoch)
        train_loader.dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
        for images, labels in batches:
            state.batches_in_epoch += 1
            if images.shape[0] == 0:
                continue
            if cache is not None:
                labels, indices = split_labels(labels)
            pixels = prepare_pixels(images, preprocessing, args.channels_last)
            targets = labels
            if mixup is not None:
                pixels, targets = mixup(pixels, labels)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    if cache is not None:
                        teacher_logits = cache(indices)
                    else:
                        teacher_logits = teacher(pixels) if teacher is not None else None
                    cls_logits, dist_logits = student_heads(model, pixels)
                    loss = deit_distillation_loss(cls_logits, dist_logits, teacher_logits, targets,
                                                  distill_type=args.distill_type, alpha=args.alpha, tau=args.tau,
                                                  criterion=criterion)
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
            progress.update(1)
            if state.step % args.log_steps == 0:
                check_finite(loss, state.step, args.output_dir)
                elapsed = max(1e-9, time.perf_counter() - window_start)
                spent = (teacher.seconds - teacher_seconds) if teacher is not None else 0.0
                event = {"step": state.step, "epoch": epoch + state.batches_in_epoch / len(train_loader),
                         "loss": loss.item(), "lr": optimizer.param_groups[-1]["lr"],
                         "images_per_second": throughput.window(), "teacher_time_share": spent / elapsed}
                window_start, teacher_seconds = throughput.last, teacher.seconds if teacher is not None else 0.0
                run.log(event)
                progress.set_postfix(loss=f"{event['loss']:.4f}", teacher=f"{event['teacher_time_share']:.0%}")
            if args.eval_steps and state.step % args.eval_steps == 0:
                best = evaluate_and_keep_best(accelerator, zoo, model, eval_loader, preprocessing, run, state, epoch, best, args,
                                              training)
            if args.checkpoint_steps and state.step % args.checkpoint_steps == 0:
                check_finite_weights(model, state.step, args.output_dir)
                save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
        state.epoch, state.batches_in_epoch = epoch + 1, 0
        check_finite_weights(model, state.step, args.output_dir)
        best = evaluate_and_keep_best(accelerator, zoo, model, eval_loader, preprocessing, run, state, epoch, best, args,
                                              training)
        save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
    progress.close()

    images_per_second, wall_time = throughput.total()
    results = {
        "model": zoo.spec.name,
        "backend": zoo.backend,
        "pretrained": not args.scratch,
        "method": "deit",
        "teacher": args.teacher,
        "distill_type": args.distill_type,
        "distillation_token": token,
        "teacher_time_share": ((teacher.seconds - loop_teacher_seconds) / wall_time) if teacher is not None else 0.0,
        "cached_teacher_logits": cache is not None,
        "teacher_cache_seconds": cache.seconds if cache is not None else 0.0,
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
    push_if_asked(args, accelerator)
    if accelerator.is_main_process:
        print(f"done: eval accuracy {best['accuracy']:.4f} (top-5 {best['top5']:.4f}, macro F1 {best['macro_f1']:.4f}), "
              f"teacher {results['teacher_time_share']:.0%} of the time, {wall_time / 60:.1f} min; model in {run.file(MODEL_DIR)}")
    return results


def train_dino(args: DistillArguments) -> dict:
    """DINO self-distillation of a backbone; labels are ignored (only the k-NN monitor reads them)."""
    if args.backend == "timm":
        raise vitzoo.BadInputError("--method dino runs transformers backbones (multi-crop needs interpolated positions); drop --backend timm")
    accelerator = make_accelerator(args)
    banner("self-distillation (DINO)", MODES, accelerator)
    set_seed(args.seed)
    run = RunFolder(args.output_dir, accelerator)
    splits = load_data(args)
    zoo = vitzoo.load(args.model, task="features", pretrained=not args.scratch, backend=args.backend,
                      revision=args.revision, image_size=args.image_size, config_overrides=args.config_overrides)
    arch = zoo.spec.architecture
    global_size, local_size = dino.scaled_sizes(zoo.image_size, arch.patch_size, args.local_crop_size)
    if args.batch_size < 16:
        warnings.warn(f"DINO with {args.batch_size} images per process: the centre of the teacher outputs is "
                      "estimated from few samples and may be unstable (use 16 or more)", stacklevel=2)
    augmentation = {"hflip": 0.5, **splits.augmentation}
    hflip = augmentation["hflip"] if args.hflip is None else args.hflip
    head = dino.DINOHead(arch.hidden_size, args.out_dim, args.head_hidden_dim, args.head_bottleneck_dim,
                         batch_norm=args.head_batch_norm, norm_last_layer=args.norm_last_layer)
    student = dino.DINOModel(zoo.model.train(), head, zoo.family, arch, zoo.image_size)
    if head.has_batch_norm and accelerator.num_processes > 1 and accelerator.device.type == "cuda":
        student = torch.nn.SyncBatchNorm.convert_sync_batchnorm(student)
    teacher = copy.deepcopy(student).eval()  # the EMA of the student; never trained by gradients
    teacher.head.train(head.has_batch_norm)  # as in DINO, a batch-norm head normalises with the batch's statistics
    for parameter in teacher.parameters():
        parameter.requires_grad_(False)
    teacher.to(accelerator.device)
    num_crops = 2 + args.local_crops
    criterion = dino.DINOLoss(args.out_dim, num_crops, args.warmup_teacher_temp, args.teacher_temp,
                              args.warmup_teacher_temp_epochs, args.epochs, args.student_temp,
                              args.center_momentum).to(accelerator.device)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"backbone: {zoo.spec.name} ({weights}), {zoo.num_params / 1e6:.2f}M parameters; crops: 2 x {global_size}px "
              f"+ {args.local_crops} x {local_size}px; head out_dim {args.out_dim}; data: {splits.summary()} (labels ignored)",
              flush=True)
    preprocessing = zoo.spec.preprocessing
    train_loader = make_loader(
        splits.train, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed, num_workers=args.num_workers,
        transform=dino.MultiCrop(global_size, local_size, args.local_crops,
                                 dino.parse_scale(args.global_crop_scale, "--global-crop-scale"),
                                 dino.parse_scale(args.local_crop_scale, "--local-crop-scale"), hflip),
    )
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.epochs
    optimizer = build_optimizer(student, learning_rate=args.learning_rate, weight_decay=args.weight_decay,
                                layer_decay=args.layer_decay, depth=arch.depth)
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_steps=int(args.warmup_ratio * total_steps),
                                min_lr=args.min_learning_rate)
    momentum = dino.cosine_schedule(args.momentum_teacher, 1.0, args.epochs, steps_per_epoch)
    weight_decay = dino.cosine_schedule(args.weight_decay, args.weight_decay_end, args.epochs, steps_per_epoch)
    student, optimizer, train_loader = accelerator.prepare(student, optimizer, train_loader)
    accelerator.register_for_checkpointing(scheduler)
    accelerator.register_for_checkpointing(teacher)
    accelerator.register_for_checkpointing(criterion)  # the centre

    state = TrainState()
    checkpoint = latest_checkpoint(args.output_dir) if args.resume == "auto" else args.resume
    if checkpoint:
        state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, step {state.step}")
    run.save_args(args)

    throughput = Throughput()
    teacher_zoo = ZooModel(teacher.backbone, zoo.spec, task="features", backend=zoo.backend,
                           pretrained=not args.scratch, image_size=args.image_size)
    knn, last_loss = None, None
    starts = [e["knn_accuracy"] for e in run.events() if e.get("epoch") == 0 and "knn_accuracy" in e]
    knn_start = starts[0] if starts else None
    if state.step == 0:  # the backbone as it starts (random init with --scratch): the baseline of every later epoch
        knn_start = knn_monitor(teacher_zoo, splits, preprocessing, args, accelerator)
        run.log({"step": 0, "epoch": 0, "eval": True, "knn_accuracy": knn_start})
        accelerator.print(f"epoch 0 (before training): teacher k-NN accuracy {knn_start:.4f}")
    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_main_process, desc="DINO")
    for epoch in range(state.epoch, args.epochs):
        student.train()
        train_loader.set_epoch(epoch)
        train_loader.dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
        for canvases, _labels in batches:
            state.batches_in_epoch += 1
            if canvases.shape[0] == 0:
                continue
            crops = [prepare_pixels(crop, preprocessing, False)
                     for crop in dino.unpack_crops(canvases, global_size, local_size, args.local_crops)]
            index = min(state.step, total_steps - 1)
            for group in optimizer.param_groups:
                if group["weight_decay"] > 0:
                    group["weight_decay"] = float(weight_decay[index])
            with accelerator.accumulate(student):
                with accelerator.autocast():
                    with torch.no_grad():
                        teacher_output = teacher(crops[:2])  # only the global views reach the teacher
                    loss = criterion(student(crops), teacher_output, epoch)
                accelerator.backward(loss)
                if accelerator.sync_gradients and args.max_grad_norm:
                    accelerator.clip_grad_norm_(student.parameters(), args.max_grad_norm)
                dino.cancel_last_layer_gradients(student, epoch, args.freeze_last_layer)
                optimizer.step()
                optimizer.zero_grad(set_to_none=True)
            throughput.add(canvases.shape[0] * accelerator.num_processes)
            if not accelerator.sync_gradients:
                continue
            dino.ema_update(accelerator.unwrap_model(student), teacher, float(momentum[index]))
            state.step += 1
            state.images_seen += canvases.shape[0] * accelerator.num_processes
            scheduler.step_update(state.step)
            progress.update(1)
            if state.step % args.log_steps == 0:
                check_finite(loss, state.step, args.output_dir)
                event = {"step": state.step, "epoch": epoch + state.batches_in_epoch / len(train_loader),
                         "loss": loss.item(), "lr": optimizer.param_groups[-1]["lr"],
                         "weight_decay": float(weight_decay[index]), "momentum": float(momentum[index]),
                         "teacher_temp": criterion.teacher_temperature(epoch),
                         "teacher_entropy": float(criterion.teacher_entropy),
                         "mean_teacher_entropy": float(criterion.mean_teacher_entropy),
                         "center_norm": float(criterion.center.norm()), "images_per_second": throughput.window()}
                run.log(event)
                progress.set_postfix(loss=f"{event['loss']:.4f}")
            if args.checkpoint_steps and state.step % args.checkpoint_steps == 0:
                check_finite_weights(student, state.step, args.output_dir)
                save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
        state.epoch, state.batches_in_epoch = epoch + 1, 0
        check_finite_weights(student, state.step, args.output_dir)
        knn = knn_monitor(teacher_zoo, splits, preprocessing, args, accelerator)
        last_loss = loss.item()
        run.log({"step": state.step, "epoch": epoch + 1, "eval": True, "knn_accuracy": knn})
        accelerator.print(f"epoch {epoch + 1}: loss {last_loss:.4f}, teacher entropy {float(criterion.teacher_entropy):.3f} "
                          f"(uniform {math.log(args.out_dim):.3f}), teacher k-NN accuracy {knn:.4f}")
        collapse = criterion.collapse()
        if collapse and accelerator.is_main_process:
            warnings.warn(f"DINO's teacher outputs look collapsed ({collapse}) after epoch {epoch + 1}. On small data and "
                          "tiny scratch ViTs, try --head-batch-norm, a lower --momentum-teacher (0.99), a smaller --out-dim, "
                          "and --teacher-temp between 0.02 and 0.04", stacklevel=2)
        save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
    progress.close()
    if knn is None:  # resumed after the last epoch
        knn = knn_monitor(teacher_zoo, splits, preprocessing, args, accelerator)
    # the teacher's backbone is DINO's output model
    save_model(accelerator, teacher_zoo, teacher.backbone, run.file(MODEL_DIR),
               extra_metadata={"training": {"recipe": "distill", "method": "dino", "dataset": args.dataset,
                                            "base_model": args.model, "pretrained": not args.scratch, "steps": state.step}})
    images_per_second, wall_time = throughput.total()
    results = {
        "model": zoo.spec.name, "backend": zoo.backend, "pretrained": not args.scratch, "method": "dino",
        "eval": {"knn_accuracy": knn, "knn_accuracy_at_start": knn_start, "k": 20}, "final_loss": last_loss,
        "steps": state.step, "epochs": args.epochs, "train_images_per_second": images_per_second,
        "wall_time_seconds": wall_time, "num_processes": accelerator.num_processes, "data": splits.summary(),
        "environment": environment(),
    }
    run.save_results(results)
    if accelerator.is_main_process:
        from vitzoo.plots import save_dino_curves

        save_dino_curves(run.file(CURVES), run.events(), args.out_dim)
    push_if_asked(args, accelerator)
    if accelerator.is_main_process:
        start = f" ({knn_start:.4f} at the start)" if knn_start is not None else ""
        print(f"done: teacher k-NN accuracy {knn:.4f}{start}, {wall_time / 60:.1f} min; backbone in {run.file(MODEL_DIR)}")
    return results


def knn_monitor(teacher_zoo, splits, preprocessing, args, accelerator) -> float:
    """Weighted 20-NN accuracy of the teacher's features (train split -> eval split), on the main process."""
    accuracy = torch.zeros(1, device=accelerator.device)
    if accelerator.is_main_process:
        def batches(split):
            loader = make_loader(split, batch_size=args.eval_batch_size or 2 * args.batch_size, shuffle=False,
                                 num_workers=0, transform=eval_transform(preprocessing, teacher_zoo.image_size))
            for images, labels in loader:
                if images.shape[0]:
                    yield normalize_batch(images, preprocessing).to(accelerator.device), labels

        train_x, train_y = extract_features(teacher_zoo, batches(splits.train), progress=False)
        test_x, test_y = extract_features(teacher_zoo, batches(splits.eval), progress=False)
        k = min(20, train_x.shape[0])
        accuracy[0] = knn_evaluate(train_x, train_y, test_x, test_y, ks=(k,))[k]["accuracy"]
    accuracy = accelerator.reduce(accuracy, reduction="sum")
    return float(accuracy[0])


if __name__ == "__main__":
    try:
        main()
    except vitzoo.VitzooError as error:
        print(f"distill: error: {error}", file=sys.stderr)
        sys.exit(2)
