"""Self-supervised pretraining by masked image modelling: MAE, BEiT or SimMIM, on the images
of any dataset source (labels, if any, are ignored).

    # MAE from scratch on the bundled digits (a 1.2M-parameter ViT at 32 px, patch 4; ~4 min on one CPU core)
    python recipes/pretrain.py --method mae --model mae-base --scratch --dataset digits --image-size 32 \
        --config-overrides hidden_size=128,num_hidden_layers=6,num_attention_heads=4,intermediate_size=512,patch_size=4 \
        --decoder-hidden-size 128 --decoder-depth 2 --batch-size 32 --blr 3e-3 --epochs 16 --output-dir runs/mae-digits
    # then fine-tune the encoder (same architecture; --scratch with the same overrides is the baseline)
    python recipes/finetune.py --model runs/mae-digits/model --dataset digits --image-size 32 ...

    accelerate launch --multi_gpu --num_processes 2 recipes/pretrain.py --method beit ...

- mae: `ViTMAEForPreTraining` (the encoder sees only the visible patches), --mask-ratio 0.75,
  normalised-pixel MSE on masked patches, lr = --blr x total batch / 256 as in the paper (the
  paper's blr 1.5e-4 assumes batches of thousands and hundreds of epochs: short runs on small data
  need a larger --blr, e.g. 3e-3).
- beit: `BeitForMaskedImageModeling`, blockwise masking of ~40% of patches, visual-token
  targets from a tokenizer (default: a k-means codebook of raw patch pixels fitted on this
  dataset, saved in tokenizer/; see vitzoo/objectives/tokenizer.py); logs masked-token accuracy.
  Scratch models get absolute position embeddings besides the shared relative position bias.
- simmim: `ViTForMaskedImageModeling`, random masking in --mask-patch-size units, L1 on masked pixels.

The run folder is the fine-tuning recipe's (args.json, metrics.jsonl, results.json,
checkpoints/, model/) plus reconstructions.png (and tokenizer/ for BEiT). model/ holds the
pretraining model (encoder + MIM head/decoder) with vitzoo.json; `vitzoo.load(dir,
task="classification", num_labels=N)` and `recipes/finetune.py --model dir` take its encoder.
"""

from __future__ import annotations

import math
import os
import sys

import torch
from accelerate.utils import set_seed
from tqdm.auto import tqdm

import vitzoo
from vitzoo.data import eval_transform, make_loader, train_transform
from vitzoo.objectives.masking import check_mask_patch_size, check_mask_ratio, default_mask_patch_size
from vitzoo.objectives.mim import BEiTObjective, MAEObjective, SimMIMObjective
from vitzoo.objectives.tokenizer import KMeansTokenizer, check_vocab
from vitzoo.training.arguments import PretrainArguments, load_data, parse
from vitzoo.training.checkpoint import TrainState, latest_checkpoint, load_checkpoint, save_checkpoint
from vitzoo.training.engine import (
    MODEL_DIR,
    RunFolder,
    Throughput,
    banner,
    check_finite,
    check_finite_weights,
    environment,
    make_accelerator,
    prepare_pixels,
    save_model,
)
from vitzoo.training.optim import build_optimizer, build_scheduler

DEFAULT_MODEL = {"mae": "mae-base", "beit": "beit-base-pt22k", "simmim": "vit-base-in21k"}
DEFAULT_MASK_RATIO = {"mae": 0.75, "beit": 0.4, "simmim": 0.6}
TOKENIZER_DIR = "tokenizer"
FIGURE = "reconstructions.png"
MODES = [
    "mae (ViTMAEForPreTraining, visible patches only), beit (blockwise masks, visual tokens), simmim (mask tokens, L1)",
    "any dataset source, labels ignored; pretrained weights or --scratch with --config-overrides",
    "AdamW (0.9, 0.95), lr = blr x total batch / 256, warm-up + cosine; accumulation, clipping, autocast",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto; --push-to-hub",
]


def main(argv: list[str] | None = None) -> dict:
    args = parse(PretrainArguments, argv, description=__doc__)
    args.model = args.model or DEFAULT_MODEL[args.method]
    args.mask_ratio = DEFAULT_MASK_RATIO[args.method] if args.mask_ratio is None else args.mask_ratio
    check_mask_ratio(args.mask_ratio)  # bad input fails before anything is loaded
    if args.push_to_hub:
        from vitzoo.publish import check_push

        check_push(args.hub_model_id)  # a bad repo id or a missing token stops here, not after training
    accelerator = make_accelerator(args)
    banner(f"pretraining ({args.method})", MODES, accelerator)
    set_seed(args.seed)
    run = RunFolder(args.output_dir, accelerator)

    # ---- data: only the images matter
    splits = load_data(args)  # labels, if any, are ignored
    hflip = splits.augmentation.get("hflip", 0.5) if args.hflip is None else args.hflip

    # ---- model: the method's pretraining class, its masking settings in the config
    zoo = vitzoo.load(args.model, task="pretraining", pretrained=not args.scratch, revision=args.revision,
                      image_size=args.image_size, config_overrides=model_overrides(args))
    model = zoo.model
    config = model.config
    expected = {"mae": "vit_mae", "beit": "beit", "simmim": ("vit", "deit")}[args.method]
    if config.model_type not in (expected if isinstance(expected, tuple) else (expected,)):
        raise vitzoo.BadInputError(f"--method {args.method} needs a {expected} model; {args.model} is {config.model_type}")
    patch, size = int(config.patch_size), zoo.image_size
    if size % patch:
        raise vitzoo.BadInputError(f"image size {size} is not a multiple of the patch size {patch}")
    preprocessing = zoo.spec.preprocessing
    eval_tf = eval_transform(preprocessing, size)

    if args.method == "mae":
        config.mask_ratio, config.norm_pix_loss = args.mask_ratio, args.norm_pix_loss
        objective = MAEObjective(patch)
    elif args.method == "simmim":
        mask_patch = args.mask_patch_size or default_mask_patch_size(size, patch)
        check_mask_patch_size(size, patch, mask_patch)
        objective = SimMIMObjective(size, patch, mask_patch, args.mask_ratio)
    else:
        tokenizer = beit_tokenizer(args, splits.train, eval_tf, preprocessing, patch, config.vocab_size, run, accelerator)
        objective = BEiTObjective(size // patch, patch, args.mask_ratio, tokenizer, args.min_block_patches)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"model: {zoo.spec.name} as {type(model).__name__} ({weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {size}px, patch {patch}, mask ratio {args.mask_ratio}; data: {splits.summary()}", flush=True)

    model.train()
    train_loader = make_loader(splits.train, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                               num_workers=args.num_workers,
                               transform=train_transform(preprocessing, image_size=size, hflip=hflip,
                                                         scale=(args.crop_scale, 1.0)))
    eval_loader = make_loader(splits.eval, batch_size=args.eval_batch_size or 2 * args.batch_size, shuffle=False,
                              num_workers=args.num_workers, transform=eval_tf)

    # ---- optimisation: MAE's linear scaling rule and betas
    total_batch = args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    learning_rate = args.learning_rate or args.blr * total_batch / 256
    steps_per_epoch = math.ceil(len(train_loader) / accelerator.num_processes / args.gradient_accumulation_steps)
    total_steps = steps_per_epoch * args.epochs
    optimizer = build_optimizer(model, learning_rate=learning_rate, weight_decay=args.weight_decay,
                                layer_decay=None, depth=config.num_hidden_layers, betas=(0.9, 0.95))
    scheduler = build_scheduler(optimizer, total_steps=total_steps, warmup_steps=int(args.warmup_ratio * total_steps),
                                min_lr=args.min_learning_rate)
    if args.compile:
        model = torch.compile(model)
    model, optimizer, train_loader, eval_loader = accelerator.prepare(model, optimizer, train_loader, eval_loader)
    accelerator.register_for_checkpointing(scheduler)
    if args.report_to:
        accelerator.init_trackers("vitzoo-pretrain", config={k: v for k, v in vars(args).items() if v is not None})
    accelerator.print(f"learning rate {learning_rate:.3g} (total batch {total_batch}), {total_steps} steps")

    state = TrainState()
    checkpoint = latest_checkpoint(args.output_dir) if args.resume == "auto" else args.resume
    if checkpoint:
        state = load_checkpoint(accelerator, checkpoint)
        accelerator.print(f"resumed from {checkpoint}: epoch {state.epoch}, step {state.step}")
    run.save_args(args)

    # ---- the loop
    throughput = Throughput()
    last_eval: dict = {}
    progress = tqdm(total=total_steps, initial=state.step, disable=not accelerator.is_main_process, desc="pretraining")
    for epoch in range(state.epoch, args.epochs):
        model.train()
        train_loader.set_epoch(epoch)
        train_loader.dataset.set_epoch(epoch)
        batches = accelerator.skip_first_batches(train_loader, state.batches_in_epoch) if state.batches_in_epoch else train_loader
        for images, _labels in batches:
            state.batches_in_epoch += 1
            if images.shape[0] == 0:
                continue
            pixels = prepare_pixels(images, preprocessing, False)
            with accelerator.accumulate(model):
                with accelerator.autocast():
                    loss, extra = objective.loss(model, pixels)
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
                event = {"step": state.step, "epoch": epoch + state.batches_in_epoch / len(train_loader),
                         "loss": loss.item(), **{k: float(v) for k, v in extra.items()},
                         "lr": optimizer.param_groups[-1]["lr"], "images_per_second": throughput.window()}
                run.log(event)
                progress.set_postfix(loss=f"{event['loss']:.4f}", lr=f"{event['lr']:.2e}")
            if args.checkpoint_steps and state.step % args.checkpoint_steps == 0:
                check_finite_weights(model, state.step, args.output_dir)
                save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
        state.epoch, state.batches_in_epoch = epoch + 1, 0
        check_finite_weights(model, state.step, args.output_dir)
        last_eval = evaluate(model, objective, eval_loader, accelerator, preprocessing)
        run.log({"step": state.step, "epoch": epoch + 1, "eval": True, **last_eval})
        accelerator.print(f"epoch {epoch + 1}: " + ", ".join(f"eval {k} {v:.4f}" for k, v in last_eval.items()))
        save_model(accelerator, zoo, model, run.file(MODEL_DIR), extra_metadata={"training": {
            "recipe": "pretrain", "method": args.method, "mask_ratio": args.mask_ratio, "dataset": args.dataset,
            "step": state.step, "base_model": args.model, "pretrained": not args.scratch}})
        save_checkpoint(accelerator, args.output_dir, state, args.keep_checkpoints)
    progress.close()

    # ---- reconstructions.png and results
    if accelerator.is_main_process and args.num_reconstructions > 0:
        write_figure(accelerator.unwrap_model(model), objective, splits.eval, eval_tf, preprocessing,
                     args.num_reconstructions, run.file(FIGURE), accelerator.device)
    images_per_second, wall_time = throughput.total()
    results = {"model": zoo.spec.name, "method": args.method, "pretrained": not args.scratch,
               "mask_ratio": args.mask_ratio, "learning_rate": learning_rate, "eval": last_eval, "steps": state.step,
               "epochs": args.epochs, "train_images_per_second": images_per_second, "wall_time_seconds": wall_time,
               "num_processes": accelerator.num_processes, "data": splits.summary(), "environment": environment()}
    run.save_results(results)
    if args.push_to_hub and accelerator.is_main_process:
        from vitzoo.publish import push_run

        push_run(args.output_dir, args.hub_model_id, private=args.hub_private, revision=args.hub_revision)
    if args.report_to:
        accelerator.end_training()
    accelerator.print(f"done: eval {last_eval}, {images_per_second:.1f} train images/s, {wall_time / 60:.1f} min; "
                      f"encoder in {run.file(MODEL_DIR)}")
    return results


def model_overrides(args: PretrainArguments) -> dict | None:
    """--config-overrides plus the method's own architecture needs (scratch models only)."""
    from vitzoo.zoo import _parse_overrides

    overrides = _parse_overrides(args.config_overrides)
    decoder = {"decoder_hidden_size": args.decoder_hidden_size, "decoder_num_hidden_layers": args.decoder_depth}
    decoder = {k: v for k, v in decoder.items() if v is not None}
    if decoder and args.method != "mae":
        raise vitzoo.BadInputError("--decoder-hidden-size/--decoder-depth configure MAE's decoder only")
    overrides.update(decoder)
    if "decoder_hidden_size" in overrides:
        width = overrides["decoder_hidden_size"]
        overrides.setdefault("decoder_intermediate_size", 4 * width)
        overrides.setdefault("decoder_num_attention_heads", max(1, width // 64) if width % 64 == 0 else 1)
    if not args.scratch:
        return overrides or None
    if args.method == "simmim":  # the pixel-shuffle decoder must undo exactly one patch
        from vitzoo.registry import get_spec, is_registered

        patch = overrides.get("patch_size") or (get_spec(args.model).architecture.patch_size if is_registered(args.model) else None)
        if patch:
            overrides.setdefault("encoder_stride", patch)
    if args.method == "beit":
        if args.tokenizer is None:
            overrides.setdefault("vocab_size", args.tokenizer_vocab_size)
        # the shared relative position bias starts at zero, so a new BEiT alone cannot tell masked
        # positions apart until it has learnt one: learned absolute positions give it that from step 1
        overrides.setdefault("use_absolute_position_embeddings", True)
    return overrides


def beit_tokenizer(args, train_split, transform, preprocessing, patch, model_vocab, run, accelerator):
    """--tokenizer DIR, the run's own tokenizer/ (resume), or a k-means codebook fitted on the data
    (on the main process, then read by all) — checked against the model's vocabulary first."""
    path = args.tokenizer or run.file(TOKENIZER_DIR)
    if args.tokenizer is None and not os.path.isdir(path):
        if not 2 <= args.tokenizer_vocab_size <= 8192:
            raise vitzoo.BadInputError(f"--tokenizer-vocab-size must be in [2, 8192], got {args.tokenizer_vocab_size}")
        if args.tokenizer_vocab_size != model_vocab:
            check_vocab(KMeansTokenizer(torch.zeros(args.tokenizer_vocab_size, 1), patch), model_vocab)
        if accelerator.is_main_process:
            patches = []
            for index in range(min(len(train_split), args.tokenizer_images)):
                item = train_split[index]
                if item is not None:
                    patches.append(transform(item[0]))
            pixels = prepare_pixels(torch.stack(patches), preprocessing, False)
            tokenizer = KMeansTokenizer.fit_images(pixels, args.tokenizer_vocab_size, patch,
                                                   normalisation=args.tokenizer_normalisation,
                                                   iterations=args.tokenizer_iterations, seed=args.seed)
            tokenizer.save(path)
            print(f"tokenizer: k-means codebook of {tokenizer.vocab_size} codes ({tokenizer.normalisation}) "
                  f"fitted on {pixels.shape[0]} images "
                  f"({pixels.shape[0] * (pixels.shape[-1] // patch) ** 2} patches), saved in {path}", flush=True)
        accelerator.wait_for_everyone()
    tokenizer = KMeansTokenizer.load(path)
    check_vocab(tokenizer, model_vocab)
    if tokenizer.patch_size != patch:
        raise vitzoo.BadInputError(f"the tokenizer in {path} codes {tokenizer.patch_size}px patches, the model uses {patch}px")
    return tokenizer


@torch.no_grad()
def evaluate(model, objective, loader, accelerator, preprocessing) -> dict[str, float]:
    """Mean loss (and masked-token accuracy for BEiT) over the eval split, from every process."""
    model.eval()
    totals: dict[str, torch.Tensor] = {}
    count = torch.zeros((), device=accelerator.device)
    for images, _labels in loader:
        if images.shape[0] == 0:
            continue
        pixels = prepare_pixels(images, preprocessing, False)
        with accelerator.autocast():
            loss, extra = objective.loss(model, pixels)
        n = images.shape[0]
        for key, value in {"loss": loss, **extra}.items():
            totals[key] = totals.get(key, torch.zeros((), device=accelerator.device)) + value.detach().float() * n
        count += n
    model.train()
    summed = accelerator.reduce(torch.stack([count, *totals.values()]), reduction="sum")
    return {key: (summed[i + 1] / summed[0].clamp_min(1)).item() for i, key in enumerate(totals)}


def write_figure(model, objective, split, transform, preprocessing, count, path, device) -> None:
    from vitzoo.plots import save_reconstructions

    images = [split[i][0] for i in range(min(count, len(split))) if split[i] is not None]
    if not images:
        return
    pixels = prepare_pixels(torch.stack([transform(image) for image in images]).to(device), preprocessing, False)
    was_training = model.training
    model.eval()
    rows = objective.figure_rows(model, pixels)
    model.train(was_training)
    save_reconstructions(path, rows, preprocessing.mean, preprocessing.std)


if __name__ == "__main__":
    try:
        main()
    except vitzoo.VitzooError as error:
        print(f"pretrain: error: {error}", file=sys.stderr)
        sys.exit(2)
