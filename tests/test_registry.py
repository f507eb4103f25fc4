"""The registry: every name the issues promise, specs that agree with both libraries."""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

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


# --------------------------------------------------------------------------- family knowledge has one home
ROOT = Path(vitzoo.__file__).resolve().parent
FAMILIES_DIR = ROOT / "families"
TIMM_FAMILY_TEST = re.compile(r"""family\s*[!=]=\s*["']timm["']""")


def _family_words() -> tuple[set[str], set[str]]:
    """(transformers model types, every name a family goes by: its name, model types and base-model prefixes)."""
    families = [get_family(name) for name in registry.list_families()]
    model_types = {model_type for family in families for model_type in family.model_types}
    names = {family.name for family in families} | model_types | set(registry.base_model_prefixes())
    return model_types, names


def family_knowledge_outside_families(source: str) -> list[str]:
    """What `source` (a module outside vitzoo/families/) writes that only a family file should: a test
    of `family` against "timm", a table from model types to families, an alternation of family
    prefixes in a regex, a comparison of a model type against a list of them."""
    model_types, names = _family_words()
    found = [f"line {source.count(chr(10), 0, m.start()) + 1}: {m.group()}" for m in TIMM_FAMILY_TEST.finditer(source)]

    def strings(node: ast.AST | None) -> list[str]:
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            return [node.value]
        if isinstance(node, (ast.Tuple, ast.List, ast.Set)):
            return [s for element in node.elts for s in strings(element)]
        return []

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Dict):
            keys = [key for key in node.keys for key in strings(key) if key in model_types]
            values = [value for value in node.values for value in strings(value)]
            if len(keys) >= 2 and values and all(value.split(" ")[0] in names for value in values):
                found.append(f"line {node.lineno}: a model_type -> family table ({', '.join(keys)})")
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            for group in re.findall(r"\w+(?:\|\w+)+", node.value):
                members = [word for word in group.split("|") if word in names]
                if len(members) >= 2:
                    found.append(f"line {node.lineno}: a list of family prefixes ({group})")
        elif isinstance(node, ast.Compare):
            operands = [node.left, *node.comparators]
            listed = [s for operand in operands for s in strings(operand) if s in model_types]
            compared = any(
                (isinstance(o, ast.Attribute) and o.attr == "model_type") or (isinstance(o, ast.Name) and o.id == "model_type")
                for o in operands
            )
            if compared and len(listed) >= 2:
                found.append(f"line {node.lineno}: model_type compared with a list of model types ({', '.join(listed)})")
    return found


def test_the_family_knowledge_check_sees_what_it_forbids():
    assert family_knowledge_outside_families('ok = spec.family != "timm"\n')
    assert family_knowledge_outside_families('T = {"vit": "vit", "deit": "deit", "vit_mae": "mae"}\n')
    assert family_knowledge_outside_families('H = {"beit": "beit", "deit": "deit (distilled)"}\n')
    assert family_knowledge_outside_families('P = r"^(vit|beit|deit|dinov2)\\.layernorm\\."\n')
    assert family_knowledge_outside_families('ok = config.model_type in ("vit", "deit", "vit_mae")\n')
    assert not family_knowledge_outside_families('ok = spec.timm_only\nK = {"vit": VIT, "deit": DEIT}\n')


def test_family_knowledge_lives_in_vitzoo_families():
    sources = [*ROOT.rglob("*.py"), *(ROOT.parent / "recipes").glob("*.py")]
    offences = {
        str(path.relative_to(ROOT.parent)): found
        for path in sources
        if FAMILIES_DIR not in path.parents
        for found in [family_knowledge_outside_families(path.read_text())]
        if found
    }
    assert not offences, f"family knowledge outside vitzoo/families/ (declare it on the Family): {offences}"


@pytest.mark.parametrize("name", vitzoo.list_models())
def test_registry_entries_are_written_literally_in_their_family_file(name):
    """grep finds every registered name, Hub id and timm tag in its family's file, as timm's default_cfgs."""
    spec = vitzoo.get_spec(name)
    source = Path(inspect.getfile(type(get_family(spec.family)))).read_text()
    assert f'name="{spec.name}"' in source
    assert f'hub_id="{spec.hub_id}"' in source
    if spec.timm_name is not None:
        assert f'timm_name="{spec.timm_name}"' in source


def test_family_declarations_agree_with_transformers():
    import transformers

    claimed = [model_type for name in registry.list_families() for model_type in get_family(name).model_types]
    assert len(claimed) == len(set(claimed)), "a model_type claimed by two families"
    assert registry.family_for_model_type("vit").name == "vit"  # DINO's and plain DeiT's checkpoints too
    assert registry.family_for_model_type("vit_mae").name == "mae"
    assert registry.family_for_model_type("resnet") is None
    for family_name in registry.list_families():
        family = get_family(family_name)
        classes = [*family.classes.values(), *getattr(family, "distilled_classes", {}).values()]
        prefixes = {getattr(transformers, cls).base_model_prefix for cls in classes if cls is not None}
        assert prefixes == set(family.base_model_prefixes), family_name
        assert family.label and family.head_names >= {"classifier", "head"}
    assert get_family("deit").label == "DeiT" and get_family("timm").label == "timm"
    assert registry.head_names() == {"classifier", "cls_classifier", "distillation_classifier", "head", "head_dist"}
