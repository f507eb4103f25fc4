"""`parity(name)`: one checkpoint through both backends, and how far apart their outputs are.

Both libraries load the registry name (`vitzoo.load(name, backend="timm")` and
`backend="transformers"`). When the two Hub repositories hold different weights, or with
`scratch=True`, the timm model is converted to transformers so both run the same weights. On a
fixed batch of real photos (scikit-learn's sample images) it measures the largest absolute
difference of logits and features (both models fed the same pixels), and of preprocessing:
vitzoo's spec pipeline against timm's own `create_transform(**resolve_data_config(model=...))`.
"""

from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any

import torch

from vitzoo import registry
from vitzoo.convert.keymaps import CONVERTIBLE_FAMILIES, keymap_for
from vitzoo.convert.models import convert_state_dict, hf_prefix, to_transformers
from vitzoo.convert.preprocessing import preprocessing_differences
from vitzoo.errors import BadInputError, VitzooError

SAME_WEIGHTS_ATOL = 1e-6


@dataclasses.dataclass
class ParityResult:
    name: str
    weights: str = ""  # "same" | "converted timm -> transformers" | "random, converted ..."
    logits: float | None = None  # None: no classification head
    features: float | None = None
    preprocessing: float | None = None  # None: not comparable (see notes)
    notes: list[str] = dataclasses.field(default_factory=list)
    error: str | None = None

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@functools.lru_cache(maxsize=1)
def _sample_arrays() -> tuple:
    from sklearn.datasets import load_sample_images

    return tuple(load_sample_images().images)


def sample_images() -> list:
    """The fixed batch: scikit-learn's sample photos (china.jpg, flower.jpg) as PIL images."""
    from PIL import Image

    return [Image.fromarray(array) for array in _sample_arrays()]


def convertible_names() -> list[str]:
    """Registry names with a timm equivalent in a family the converters cover."""
    return [
        name
        for name in registry.list_models()
        if registry.get_spec(name).timm_name and registry.get_spec(name).family in CONVERTIBLE_FAMILIES
    ]


def same_weights(timm_model: torch.nn.Module, hf_model: torch.nn.Module, spec) -> bool:
    """Whether the two models hold the same weights (within 1e-6), compared through the key map."""
    try:
        converted = convert_state_dict(timm_model.state_dict(), spec, "transformers", prefix=hf_prefix(hf_model))
    except BadInputError:
        return False
    keymap = keymap_for(spec.family, distilled=getattr(timm_model, "dist_token", None) is not None)
    skip = {hf_prefix(hf_model) + key for key in keymap.transformers_only}
    target = {k: v for k, v in hf_model.state_dict().items() if k not in skip}
    if set(converted) != set(target):
        return False
    for key, value in converted.items():
        other = target[key]
        if value.shape != other.shape:
            return False
        if (value.float() - other.float()).abs().max() > SAME_WEIGHTS_ATOL:
            return False
    return True


def _timm_pixels(timm_model: torch.nn.Module, images: list, size: int, notes: list[str]) -> torch.Tensor:
    from timm.data import create_transform, resolve_data_config

    config = resolve_data_config({}, model=timm_model)
    if config["input_size"][-1] != size:
        notes.append(f"timm's pipeline is for {config['input_size'][-1]}px inputs; compared at vitzoo's {size}px")
        config = dict(config, input_size=(3, size, size))
    transform = create_transform(**config, is_training=False)
    return torch.stack([transform(image.convert("RGB")) for image in images])


def _max_diff(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a.float() - b.float()).abs().max())


@torch.no_grad()
def parity(name: str, scratch: bool = False, images: list | None = None) -> ParityResult:
    """Load `name` with both backends (same weights) and measure how far apart they are."""
    from vitzoo.zoo import ZooModel, load

    spec = registry.get_spec(name)
    if spec.family not in CONVERTIBLE_FAMILIES:
        raise BadInputError(f"{name}: family {spec.family!r} has no converter")
    if spec.timm_name is None:
        raise BadInputError(f"{name} has no timm equivalent, so there is nothing to compare")
    images = images if images is not None else sample_images()
    result = ParityResult(name)
    # in fp32 whatever this machine's default: parity is about the weights and the code, not about rounding
    timm_zoo = load(name, backend="timm", pretrained=not scratch, precision="fp32")
    hf_zoo = load(name, backend="transformers", pretrained=not scratch, precision="fp32")
    if not scratch and same_weights(timm_zoo.model, hf_zoo.model, spec):
        result.weights = "same"
    else:
        converted = to_transformers(
            timm_zoo.model, spec, id2label=timm_zoo.id2label if timm_zoo.task == "classification" else None
        )
        hf_zoo = ZooModel(
            converted,
            spec,
            task=timm_zoo.task,
            backend="transformers",
            pretrained=not scratch,
            id2label=timm_zoo.id2label,
            precision="fp32",
        )
        result.weights = (
            "random, converted timm -> transformers" if scratch else "differ: converted timm -> transformers"
        )
    hf_eps = float(hf_zoo.model.config.layer_norm_eps)
    timm_eps = {m.eps for m in timm_zoo.model.modules() if isinstance(m, torch.nn.LayerNorm)}
    if timm_eps != {hf_eps}:
        result.notes.append(
            f"layer norm eps: transformers {hf_eps:g}, timm {', '.join(f'{e:g}' for e in sorted(timm_eps))}"
        )
    pixels = hf_zoo.preprocess(images)
    result.features = _max_diff(timm_zoo.features(pixels), hf_zoo.features(pixels))
    if timm_zoo.task == "classification" and hf_zoo.task == "classification":
        result.logits = _max_diff(timm_zoo.logits(pixels), hf_zoo.logits(pixels))
    timm_pixels = _timm_pixels(timm_zoo.model, images, hf_zoo.image_size, result.notes)
    if timm_pixels.shape == pixels.shape:
        result.preprocessing = _max_diff(timm_pixels, pixels)
    else:
        result.notes.append(
            f"preprocessing shapes differ: vitzoo {tuple(pixels.shape)}, timm {tuple(timm_pixels.shape)}"
        )
    result.notes.extend(preprocessing_differences(spec))
    return result


def run_parity(names: list[str], scratch: bool = False) -> list[ParityResult]:
    """`parity` for each name; a name that fails gets its error in its row, the others go on."""
    images = sample_images()
    results = []
    for name in names:
        try:
            results.append(parity(name, scratch=scratch, images=images))
        except VitzooError as error:
            results.append(ParityResult(name, error=str(error)))
    return results


def _cell(value: float | None) -> str:
    if value is None:
        return "-"
    return "0" if value == 0 else f"{value:.2e}" if math.isfinite(value) else str(value)


def format_table(results: list[ParityResult]) -> str:
    """The results as an aligned text table, notes listed under it."""
    columns = ("name", "weights", "logits", "features", "preprocessing")
    rows = [
        (r.name, "ERROR" if r.error else r.weights, _cell(r.logits), _cell(r.features), _cell(r.preprocessing))
        for r in results
    ]
    widths = [max(len(c), *(len(row[i]) for row in rows)) for i, c in enumerate(columns)]
    lines = ["  ".join(c.ljust(w) for c, w in zip(columns, widths))]
    lines += ["  ".join(v.ljust(w) for v, w in zip(row, widths)) for row in rows]
    lines.append("")
    lines.append("largest absolute differences, timm vs transformers; preprocessing: vitzoo's pipeline vs timm's own")
    for r in results:
        if r.error:
            lines.append(f"{r.name}: error: {r.error}")
        for note in r.notes:
            lines.append(f"{r.name}: {note}")
    return "\n".join(lines)
