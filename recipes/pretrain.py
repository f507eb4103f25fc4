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

from vitzoo.methods import run
from vitzoo.training.objective import Callback


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    return run("pretrain", argv, callbacks)


if __name__ == "__main__":  # as `vitzoo pretrain`: one line and exit code 2 for bad input, 130/143 when interrupted
    from vitzoo.cli import main as command

    sys.exit(command(["pretrain", *sys.argv[1:]]))
