"""Compare models on one dataset, measured the same way on this machine in one run.

    >>> from vitzoo.compare import CompareConfig, run_compare
    >>> rows = run_compare(CompareConfig(models="deit-tiny,dino-vits16", dataset="digits", protocol="knn"))

`config` says what one comparison is, `runner` measures each model (quality by a protocol, cost,
published numbers) and `report` writes results.json, results.csv, report.md and the plots; the
report reads the config, never the runner.
"""

from vitzoo.compare.config import (
    DEFAULT_MODELS,
    FINETUNING,
    LINEAR_EPOCHS,
    LORA_LEARNING_RATE,
    PROTOCOLS,
    SCRATCH_DEFAULTS,
    SCRATCH_OVERRIDES,
    CompareConfig,
    model_slug,
    resolve_models,
)
from vitzoo.compare.runner import evaluate_model, run_compare

__all__ = [
    "DEFAULT_MODELS",
    "FINETUNING",
    "LINEAR_EPOCHS",
    "LORA_LEARNING_RATE",
    "PROTOCOLS",
    "SCRATCH_DEFAULTS",
    "SCRATCH_OVERRIDES",
    "CompareConfig",
    "evaluate_model",
    "model_slug",
    "resolve_models",
    "run_compare",
]
