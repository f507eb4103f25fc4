"""The registry: every name the issues promise, specs that agree with both libraries."""

from __future__ import annotations

import pytest
import timm
import torch

import vitzoo
from vitzoo import registry
from vitzoo.backends import hf_backend
from vitzoo.registry import get_family

REQUIRED = """vit-base vit-base-in21k vit-large deit-tiny deit-small deit-base deit-tiny-distilled
deit-small-distilled deit-base-distilled beit-base beit-base-pt22k beit-large dino-vits16 dino-vits8
dino-vitb16 dino-vitb8 mae-base mae-large mae-huge dinov2-small dinov2-base""".split()


def test_every_promised_name_is_registered():
    assert set(REQUIRED) <= set(vitzoo.list_models())


def test_hub_ids_as_published():
    assert vitzoo.get_spec("vit-base").hub_id == "google/vit-base-patch16-224"
    assert vitzoo.get_spec("deit-small").hub_id == "facebook/deit-small-patch16-224"
    assert vitzoo.get_spec("deit-small-distilled").hub_id == "facebook/deit-small-distilled-patch16-224"
    assert vitzoo.get_spec("beit-base").hub_id == "microsoft/beit-base-patch16-224"
    assert vitzoo.get_spec("dino-vits16").hub_id == "facebook/dino-vits16"
    assert vitzoo.get_spec("mae-base").hub_id == "facebook/vit-mae-base"
    assert vitzoo.get_spec("dinov2-small").hub_id == "facebook/dinov2-small"


def test_family_filter_and_wildcards():
    assert vitzoo.list_models(family="dino") == ["dino-vits16", "dino-vits8", "dino-vitb16", "dino-vitb8"]
    assert set(vitzoo.list_models(pattern="deit-*-distilled")) == {
        "deit-tiny-distilled",
        "deit-small-distilled",
        "deit-base-distilled",
    }
    with pytest.raises(vitzoo.UnknownModelError, match="known families"):
        vitzoo.list_models(family="resnet")


def test_unknown_name_suggests_closest():
    with pytest.raises(vitzoo.UnknownModelError) as error:
        vitzoo.get_spec("deit-smal")
    assert "deit-small" in str(error.value)


def test_spec_dict_round_trip():
    for name in REQUIRED:
        spec = vitzoo.get_spec(name)
        assert vitzoo.ModelSpec.from_dict(spec.to_dict()) == spec


def test_timm_names_exist_in_timm():
    for spec in registry.all_specs():
        if spec.timm_name:
            assert spec.timm_name in timm.list_pretrained(spec.timm_name), spec.name


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("name", vitzoo.list_models())
def test_full_size_parameter_counts_on_meta_device(name):
    """Both libraries build the registry's architecture with the published parameter count."""
    spec = vitzoo.get_spec(name)
    family = get_family(spec.family)
    task = "classification" if spec.num_classes else "features"
    labels = {i: str(i) for i in range(spec.num_classes)} if spec.num_classes else None
    with torch.device("meta"):
        hf_model = hf_backend.build(spec, task, id2label=labels, config_overrides={}, image_size=None)
        timm_model = None
        if spec.timm_name:
            arch = spec.timm_name.split(".")[0]
            timm_model = timm.create_model(arch, num_classes=spec.num_classes, **family.timm_kwargs(spec.architecture))
    if spec.num_params is None:
        pytest.skip(f"{name}: no published count")
    # transformers' Dinov2Model carries a mask token (one hidden vector) the timm model does not
    extra = spec.architecture.hidden_size if spec.family == "dinov2" else 0
    assert _count(hf_model) == spec.num_params + extra
    if timm_model is not None:
        assert _count(timm_model) == spec.num_params


def test_published_counts_from_the_issue():
    assert vitzoo.get_spec("deit-small").num_params == 22_050_664
    assert vitzoo.get_spec("vit-base").num_params == 86_567_656
