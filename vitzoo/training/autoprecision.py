"""`--mixed-precision auto` on CPUs with native bf16: bf16 autocast only where it is faster for the
model at hand, decided by a rule measured on this project's 2-core AVX512-BF16 machine.

bf16 autocast pays off when the matrix products are large enough to outweigh the casts around
them. Training steps of transformers ViTs, fp32 against bf16 autocast, AdamW, measured on
2026-12-02 (the idle machine; `rows` = batch x tokens):

| hidden | depth | tokens | batch | rows x hidden^2 | fp32 ms | bf16 ms | bf16 speed-up |
|---|---|---|---|---|---|---|---|
| 96  | 4  | 17  | 64 | 1.0e7 | 33   | 42   | 0.80x |
| 96  | 4  | 65  | 64 | 3.8e7 | 107  | 93   | 1.16x |
| 192 | 4  | 17  | 64 | 4.0e7 | 85   | 53   | 1.60x |
| 192 | 12 | 17  | 64 | 4.0e7 | 238  | 159  | 1.50x |
| 192 | 12 | 197 | 16 | 1.2e8 | 3115 | 1588 | 1.96x |
| 256 | 6  | 65  | 64 | 2.7e8 | 735  | 374  | 1.97x |

The rule: bf16 when batch x tokens x hidden^2 (the multiply-adds of one hidden x hidden projection)
is at least `BF16_FROM` = 2e7, fp32 below. A rule of the run's shape rather than a timing at
start-up, so that the same arguments always train in the same precision (a resumed run too).
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

BF16_FROM = 2e7


@dataclasses.dataclass
class Choice:
    precision: str  # "bf16" or "no"
    reason: str


def choose(hidden_size: int, tokens: int, batch_size: int) -> Choice:
    work = batch_size * tokens * hidden_size**2
    shape = f"batch {batch_size} x {tokens} tokens x hidden {hidden_size}^2 = {work:.1e}"
    if work >= BF16_FROM:
        return Choice("bf16", f"{shape} >= {BF16_FROM:.0e}: large enough for bf16 to pay")
    return Choice("no", f"{shape} < {BF16_FROM:.0e}: too small for bf16 to pay on a CPU")


def choose_for(args: Any) -> Choice:
    """`choose` for a recipe's arguments: the run's architecture (built on the meta device: no
    weights, no time), batch size and input size."""
    import vitzoo

    try:
        with torch.device("meta"):
            zoo = vitzoo.load(args.model, task="classification", id2label={0: "0", 1: "1"}, pretrained=False,
                              backend=getattr(args, "backend", None), image_size=args.image_size,
                              config_overrides=args.config_overrides)
        architecture = zoo.spec.architecture
        tokens = (zoo.image_size // architecture.patch_size) ** 2 + 1
        return choose(architecture.hidden_size, tokens, args.batch_size)
    except Exception as error:  # noqa: BLE001 - the run itself reports a bad model; bf16 is the safe default here
        return Choice("bf16", f"the model's shape is unknown before loading ({type(error).__name__})")
