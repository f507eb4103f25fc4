"""Checks of a run's inputs that need more than its arguments but load nothing: the model's shape from the
registry or a folder's config.json, the data source's own checks, and the paths a run reads. `start_run` calls
`check_inputs` before the run folder is opened, so a refusal here leaves no trace on disk."""

from __future__ import annotations

import os
from typing import Any

from vitzoo.errors import BadInputError
from vitzoo.zoo import parse_overrides


def check_inputs(args: Any, recipe: str) -> None:
    """Refuse what the model and the data source show to be wrong without loading either, so that it is
    refused before the run folder is opened (`start_run` calls this after `check_arguments`): attention heads
    that do not divide the width and an --image-size that is not whole patches (from the registry's spec or a
    model folder's config.json, and --config-overrides), what `vitzoo.data.sources.check_source` finds in
    --dataset, a --model or --teacher path that does not exist and a --resume folder that does not. `recipe`
    (with `args.method`) names the small-data rule that may still change the patch size."""
    from vitzoo.data.sources import check_source
    from vitzoo.io import is_local_path

    _check_shape(args, recipe)
    check_source(args.dataset, image_column=args.image_column, label_column=args.label_column)
    for option in ("model", "teacher"):
        name = getattr(args, option, None)
        if isinstance(name, str) and is_local_path(name) and not os.path.exists(os.path.expanduser(name)):
            raise BadInputError(f"--{option} {name}: no such folder; give a registry name (`vitzoo list`), a model "
                                "folder, a run folder or a timm model name")
    if args.resume not in (None, "auto") and not os.path.isdir(args.resume):
        raise BadInputError(f"--resume {args.resume}: no such checkpoint folder; give a checkpoint folder "
                            "(OUTPUT_DIR/checkpoints/step-N) or --resume auto for the newest intact one")


def _model_shape(model: str) -> dict[str, Any]:
    """hidden_size, num_attention_heads and patch_size of a registered model or a model folder (a run folder:
    its model/), as far as they are known without building it."""
    from vitzoo import registry
    from vitzoo.io import read_json

    if registry.is_registered(model):
        architecture = registry.get_spec(model).architecture
        return {} if architecture is None else {"hidden_size": architecture.hidden_size,
                                                "num_attention_heads": architecture.num_heads,
                                                "patch_size": architecture.patch_size}
    for config in (os.path.join(model, "config.json"), os.path.join(model, "model", "config.json")):
        if os.path.isfile(config):
            data = read_json(config)
            return {key: data.get(key) for key in ("hidden_size", "num_attention_heads", "patch_size")} \
                if isinstance(data, dict) else {}
    return {}


def _check_shape(args: Any, recipe: str) -> None:
    from vitzoo.backends.hf_backend import check_heads
    from vitzoo.backends.timm_backend import head_names

    overrides, shape = parse_overrides(args.config_overrides), _model_shape(args.model)
    names = head_names(overrides)
    width, heads = (overrides.get(name, shape.get(own)) for name, own in zip(names, ("hidden_size", "num_attention_heads")))
    if isinstance(width, int) and isinstance(heads, int):
        check_heads(width, heads, names)
    size, patch = args.image_size, overrides.get("patch_size", shape.get("patch_size"))
    if size and isinstance(patch, int) and size % patch and not _patch_from_data(args, recipe, patch):
        whole = [n * patch for n in (size // patch, size // patch + 1) if n]
        raise BadInputError(f"--image-size {size} is not a whole number of {args.model}'s {patch}-px patches; use "
                            f"{' or '.join(map(str, whole))}, or (with --scratch) another patch_size in --config-overrides")


def _patch_from_data(args: Any, recipe: str, patch: int) -> bool:
    """Whether the small-data defaults may give the run another patch size once the data is counted (a DINO or
    masked-image run from scratch picks patches that give enough of them), so that only then can the image
    size be judged."""
    from vitzoo.training import smalldata

    chosen = smalldata.choose(args, recipe, getattr(args, "method", None), images=1, size=args.image_size, patch=patch)
    return any(default.field == "config_overrides" and "patch_size=" in default.value for default in chosen)
