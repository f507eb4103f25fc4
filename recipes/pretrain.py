"""Self-supervised pretraining by masked image modelling: MAE, BEiT or SimMIM, on the images
of any dataset source (labels, if any, are ignored).

    # MAE from scratch on the bundled digits (a 1.2M-parameter ViT at 32 px, patch 4; ~4 min on one CPU core)
    python recipes/pretrain.py --method mae --model mae-base --scratch --dataset digits --image-size 32 \\
        --config-overrides hidden_size=128,num_hidden_layers=6,num_attention_heads=4,intermediate_size=512,patch_size=4 \\
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

import sys
from collections.abc import Sequence

import vitzoo
from vitzoo.data import eval_transform, make_loader, train_transform
from vitzoo.objectives.masking import check_mask_ratio
from vitzoo.objectives.mim import masked_image_objective, pretraining_overrides
from vitzoo.training import smalldata
from vitzoo.training.arguments import PretrainArguments, load_data, parse, resolve_augmentation
from vitzoo.training.engine import start_run
from vitzoo.training.fit import fit
from vitzoo.training.objective import Callback

MODES = [
    "mae (ViTMAEForPreTraining, visible patches only), beit (blockwise masks, visual tokens), simmim (mask tokens, L1)",
    "any dataset source, labels ignored; pretrained weights or --scratch with --config-overrides",
    "AdamW (0.9, 0.95), lr = blr x total batch / 256, warm-up + cosine; accumulation, clipping, autocast",
    "one process, DDP on GPUs or CPU (gloo); atomic checkpoints, --resume auto; --push-to-hub",
]


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    return train(parse("pretrain", argv, description=__doc__), callbacks)


def train(args: PretrainArguments, callbacks: Sequence[Callback] = ()) -> dict:
    """The recipe on parsed arguments (`MAEArguments`, `BEiTArguments` or `SimMIMArguments`)."""
    check_mask_ratio(args.mask_ratio)  # bad input fails before anything is loaded
    accelerator, run = start_run(args, f"pretraining ({args.method})", MODES)

    # ---- data: only the images matter
    splits = load_data(args)
    hflip = resolve_augmentation(args, splits)["hflip"]
    small = smalldata.apply(args, "pretrain", splits, args.method, announce=accelerator.is_main_process)  # --scratch

    # ---- model: the method's pretraining class, its masking settings in the config
    zoo = vitzoo.load(args.model, task="pretraining", pretrained=not args.scratch, revision=args.revision,
                      image_size=args.image_size, config_overrides=pretraining_overrides(args))
    objective = masked_image_objective(args, zoo, splits, run, accelerator)
    if accelerator.is_main_process:
        weights = "RANDOM init (--scratch)" if args.scratch else "pretrained weights"
        print(f"model: {zoo.spec.name} as {type(zoo.model).__name__} ({weights}), {zoo.num_params / 1e6:.2f}M parameters, "
              f"input {zoo.image_size}px, patch {zoo.model.config.patch_size}, mask ratio {args.mask_ratio}; "
              f"data: {splits.summary()}", flush=True)
    model = zoo.model.train()
    train_loader = make_loader(splits.train, batch_size=args.batch_size, shuffle=True, drop_last=True, seed=args.seed,
                               num_workers=args.num_workers, in_memory=args.in_memory,
                               transform=train_transform(zoo.spec.preprocessing, image_size=zoo.image_size, hflip=hflip,
                                                         scale=(args.crop_scale, 1.0)))
    eval_loader = make_loader(splits.eval, batch_size=args.eval_batch_size or 2 * args.batch_size, shuffle=False,
                              num_workers=args.num_workers, in_memory=args.in_memory,
                              transform=eval_transform(zoo.spec.preprocessing, zoo.image_size))

    # ---- optimisation: MAE's linear scaling rule and betas
    total_batch = args.batch_size * args.gradient_accumulation_steps * accelerator.num_processes
    learning_rate = args.learning_rate if args.learning_rate is not None else args.blr * total_batch / 256
    accelerator.print(f"learning rate {learning_rate:.3g} (total batch {total_batch})")
    metadata = {"recipe": "pretrain", "method": args.method, "mask_ratio": args.mask_ratio, "learning_rate": learning_rate,
                "small_data_defaults": smalldata.record(small)}
    return fit(args, accelerator=accelerator, run=run, zoo=zoo, model=model, objective=objective,
                  train_loader=train_loader, eval_loader=eval_loader, splits=splits, metadata=metadata,
                  learning_rate=learning_rate, betas=(0.9, 0.95), callbacks=callbacks, description="pretraining")


if __name__ == "__main__":  # as `vitzoo pretrain`: one line and exit code 2 for bad input, 130/143 when interrupted
    from vitzoo.cli import main as command

    sys.exit(command(["pretrain", *sys.argv[1:]]))
