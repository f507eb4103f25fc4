"""Distillation: DeiT's teacher-to-student distillation, or DINO's self-distillation.

    # DeiT: a distilled student (distillation token + head) learns from any teacher
    python recipes/distill.py --method deit --model deit-tiny-distilled --teacher runs/teacher/model \\
        --dataset digits --scratch --image-size 32 --epochs 20 --output-dir runs/distill

    # DINO: self-distillation of a ViT backbone on unlabelled images (labels only feed the k-NN monitor);
    # --scratch on small data takes the small-data defaults (docs/small-data.md)
    python recipes/distill.py --method dino --model dino-vits16 --scratch --dataset digits --image-size 32 --time-budget 5m

`vitzoo distill ...` runs this same code; `accelerate launch` runs it on N processes. The run folder
is the fine-tuning recipe's, model/ being the best student (DeiT; both heads averaged) or the teacher
backbone (DINO: `vitzoo.load(path, task="features")`); DINO adds dino_curves.png (loss, teacher
entropy, k-NN accuracy from before the first step on).
"""

from __future__ import annotations

import sys
from collections.abc import Sequence

from vitzoo.methods import run
from vitzoo.training.objective import Callback


def main(argv: list[str] | None = None, callbacks: Sequence[Callback] = ()) -> dict:
    return run("distill", argv, callbacks)


if __name__ == "__main__":  # as `vitzoo distill`: one line and exit code 2 for bad input, 130/143 when interrupted
    from vitzoo.cli import main as command

    sys.exit(command(["distill", *sys.argv[1:]]))
