"""Publishing a vitzoo model to the Hugging Face Hub: a Hub-ready export with a model card, then one commit.

    export = export_model("runs/digits", "someone/deit-tiny-digits")  # runs/digits/hub_export/
    push("runs/digits", "someone/deit-tiny-digits", private=True)      # export + create_repo + one upload_folder

The export holds `model.safetensors` (never a pickle), `config.json` (label names included),
`preprocessor_config.json`, `vitzoo.json` (the spec, the base model, the training arguments and
results) and `README.md`, a model card rendered from the template of the model's kind
(`model_cards/`, installed as `vitzoo.model_cards`): fine-tuned classifier, distilled student or
self-supervised encoder. The token comes from `HF_TOKEN` or `hf auth login` and is never printed,
saved or put in the card. (`vitzoo/hub.py` is the other direction: deciding where weights are loaded from.)

One module per concern, each importing only those above it in this list (no cycle):
`tokens` (the token, scrubbing, PushError), `source` (the run or model folder being published),
`card_parts` and `card` (the model card), `export` (the Hub-ready folder), `uploading` (the commit,
`push`, `push_run`, `check_push`). Every public name is importable from `vitzoo.publish`.
"""

from vitzoo.publish.card import TEMPLATES, card_context, card_data, how_to_use, render_card, template_path
from vitzoo.publish.card_parts import CPU_NAMES, METRICS, NOT_HYPERPARAMETERS, describe_dataset
from vitzoo.publish.export import (
    CARD_FILE,
    EXPORT_DIR,
    PICKLE_SUFFIXES,
    REPO_ID,
    WEIGHT_SUFFIXES,
    Export,
    check_repo_id,
    default_export_dir,
    export_model,
    is_export,
)
from vitzoo.publish.source import (
    DISTILL_RECIPES,
    KIND_CLASSIFIER,
    KIND_DISTILLED,
    KIND_SELF_SUPERVISED,
    SELF_SUPERVISED_METHODS,
    SELF_SUPERVISED_RECIPES,
    VITZOO_FILE,
    ModelSource,
    detect_kind,
    resolve_source,
)
from vitzoo.publish.tokens import REDACTED, SECRET_KEY, PushError, scrub
from vitzoo.publish.uploading import PushResult, check_push, push, push_run, upload

__all__ = [
    "CARD_FILE",
    "CPU_NAMES",
    "DISTILL_RECIPES",
    "EXPORT_DIR",
    "KIND_CLASSIFIER",
    "KIND_DISTILLED",
    "KIND_SELF_SUPERVISED",
    "METRICS",
    "NOT_HYPERPARAMETERS",
    "PICKLE_SUFFIXES",
    "REDACTED",
    "REPO_ID",
    "SECRET_KEY",
    "SELF_SUPERVISED_METHODS",
    "SELF_SUPERVISED_RECIPES",
    "TEMPLATES",
    "VITZOO_FILE",
    "WEIGHT_SUFFIXES",
    "Export",
    "ModelSource",
    "PushError",
    "PushResult",
    "card_context",
    "card_data",
    "check_push",
    "check_repo_id",
    "default_export_dir",
    "describe_dataset",
    "detect_kind",
    "export_model",
    "how_to_use",
    "is_export",
    "push",
    "push_run",
    "render_card",
    "resolve_source",
    "scrub",
    "template_path",
    "upload",
]
