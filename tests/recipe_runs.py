"""Tiny runs of every recipe and method, shared by the engine and flag tests."""

from __future__ import annotations

from vitzoo import methods


class Recipe:
    """`vitzoo NAME` in this process, as the tests run it: `main(argv, callbacks)`."""

    def __init__(self, name: str) -> None:
        self.name = name

    def main(self, argv: list[str], callbacks=()) -> dict:
        return methods.run(self.name, argv, callbacks)


finetune, distill, pretrain = Recipe("finetune"), Recipe("distill"), Recipe("pretrain")

ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
COMMON = ["--scratch", "--config-overrides", ARCH, "--image-size", "16", "--batch-size", "16", "--num-workers", "0",
          "--max-train-samples", "64", "--max-eval-samples", "32", "--log-steps", "1"]
# every recipe and method, tiny: (its recipe, its arguments)
METHODS = {
    "finetune": (finetune, ["--model", "deit-tiny", *COMMON]),
    "deit": (distill, ["--method", "deit", "--model", "deit-tiny-distilled", *COMMON, "--teacher", "resnet18",
                       "--teacher-scratch"]),
    "dino": (distill, ["--method", "dino", "--model", "dino-vits16", *COMMON, "--out-dim", "32", "--head-hidden-dim",
                       "32", "--head-bottleneck-dim", "16", "--local-crops", "2"]),
    "mae": (pretrain, ["--method", "mae", "--model", "mae-base", *COMMON, "--decoder-hidden-size", "32",
                       "--decoder-depth", "1", "--num-reconstructions", "0"]),
    "beit": (pretrain, ["--method", "beit", "--model", "beit-base-pt22k", *COMMON, "--tokenizer-vocab-size", "16",
                        "--tokenizer-images", "64", "--tokenizer-iterations", "3", "--num-reconstructions", "0"]),
    "simmim": (pretrain, ["--method", "simmim", "--model", "vit-base-in21k", *COMMON, "--num-reconstructions", "0"]),
}
