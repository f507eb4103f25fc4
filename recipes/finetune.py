"""Fine-tune any vitzoo model (any family, either backend) on an image-classification dataset.

    # one process (CPU or one GPU); `vitzoo finetune ...` runs this same code
    python recipes/finetune.py --model deit-tiny --dataset digits --scratch --image-size 32 \\
        --epochs 20 --output-dir runs/digits

    # data parallel: N GPUs, or N CPU processes over gloo on a machine without GPUs
    accelerate launch --multi_gpu --num_processes 2 recipes/finetune.py --model deit-small --dataset beans

    # FSDP / DeepSpeed / multi-node: same script, another config (see recipes/accelerate_configs/)
    accelerate launch --config_file recipes/accelerate_configs/fsdp.yaml recipes/finetune.py ...

The run folder (--output-dir) gets args.json, metrics.jsonl, results.json, checkpoints/ and
model/ (the best model by eval accuracy: `vitzoo.load("runs/digits/model")`, or transformers
`from_pretrained`). `--resume auto` continues an interrupted run from its newest checkpoint.
Select on validation, report on test: with a test split (a `test/` folder, or `--eval-split test`), the
eval split is the data's validation split or --val-fraction of train, and model/ is scored once on test.
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from vitzoo.methods import run
from vitzoo.training.objective import Callback


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    return run("finetune", argv, callbacks)


if __name__ == "__main__":  # as `vitzoo finetune`: one line and exit code 2 for bad input, 130/143 when interrupted
    from vitzoo.cli import main as command

    sys.exit(command(["finetune", *sys.argv[1:]]))
