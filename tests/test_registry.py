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


# the names added with DINOv3, DINOv2 with registers, DeiT III and I-JEPA
ADDED = "dinov3-vits16 dinov3-vitb16 dinov3-vitl16 dinov2-small-reg dinov2-base-reg deit3-small deit3-base ijepa-vith14".split()


def test_every_promised_name_is_registered():
    assert set(REQUIRED) <= set(vitzoo.list_models())
    assert set(ADDED) <= set(vitzoo.list_models())


def test_added_names_as_published(capsys):
    from vitzoo.cli import main

    assert vitzoo.list_models(family="dinov3") == ["dinov3-vits16", "dinov3-vitb16", "dinov3-vitl16"]
    # the licenses as published, the paper of each family
    assert {vitzoo.get_spec(n).license for n in ADDED if n.startswith("dinov3")} == {"dinov3-license"}
    assert vitzoo.get_spec("ijepa-vith14").license == "cc-by-nc-4.0"
    assert vitzoo.get_spec("deit3-base").license == vitzoo.get_spec("dinov2-base-reg").license == "apache-2.0"
    for name in ADDED:
        spec = vitzoo.get_spec(name)
        assert spec.to_dict()["paper"]["url"].startswith("https://arxiv.org/abs/") and spec.num_params, name
        assert vitzoo.ModelSpec.from_dict(spec.to_dict()) == spec
    # `vitzoo list` shows them; `vitzoo info` says what the license and the timm-only backend mean
    assert main(["list"]) == 0
    listed = capsys.readouterr().out
    assert all(name in listed for name in ADDED)
    assert main(["info", "dinov3-vits16"]) == 0
    info = capsys.readouterr().out
    assert "dinov3-license" in info and "gated" in info and "DINOv3 License" in info
    assert main(["info", "deit3-small"]) == 0
    assert "transformers has no DeiT III class" in capsys.readouterr().out


def test_missing_dinov3_weights_say_the_repository_is_gated(tmp_path, monkeypatch):
    """The one error for weights missing from the cache carries the family's note: accept the DINOv3 License."""
    from huggingface_hub import constants

    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(tmp_path / "empty"))
    for backend in ("transformers", "timm"):
        with pytest.raises(vitzoo.WeightsNotFoundError) as error:
            vitzoo.load("dinov3-vits16", backend=backend)
        message = str(error.value)
        assert "gated" in message and "DINOv3 License" in message and "hf auth login" in message, backend
    with pytest.raises(vitzoo.WeightsNotFoundError) as error:
        vitzoo.load("dinov2-small")
    assert "note:" not in str(error.value)  # only families with something to say add a note


def test_hub_ids_as_published():
    assert vitzoo.get_spec("vit-base").hub_id == "google/vit-base-patch16-224"
    assert vitzoo.get_spec("deit-small").hub_id == "facebook/deit-small-patch16-224"
    assert vitzoo.get_spec("deit-small-distilled").hub_id == "facebook/deit-small-distilled-patch16-224"
    assert vitzoo.get_spec("beit-base").hub_id == "microsoft/beit-base-patch16-224"
    assert vitzoo.get_spec("dino-vits16").hub_id == "facebook/dino-vits16"
    assert vitzoo.get_spec("mae-base").hub_id == "facebook/vit-mae-base"
    assert vitzoo.get_spec("dinov2-small").hub_id == "facebook/dinov2-small"
    assert vitzoo.get_spec("dinov3-vits16").hub_id == "facebook/dinov3-vits16-pretrain-lvd1689m"
    assert vitzoo.get_spec("dinov2-small-reg").hub_id == "facebook/dinov2-with-registers-small"
    assert vitzoo.get_spec("ijepa-vith14").hub_id == "facebook/ijepa_vith14_1k"
    assert vitzoo.get_spec("deit3-small").hub_id == "timm/deit3_small_patch16_224.fb_in1k"  # timm's repository
    timm_names = {"dinov3-vitl16": "vit_large_patch16_dinov3.lvd1689m", "deit3-small": "deit3_small_patch16_224.fb_in1k",
                  "dinov2-base-reg": "vit_base_patch14_reg4_dinov2.lvd142m",
                  "ijepa-vith14": "vit_huge_patch14_gap_224.in1k_ijepa"}
    assert {name: vitzoo.get_spec(name).timm_name for name in timm_names} == timm_names


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
        hf_model = None  # DeiT III: transformers has no class for it
        if not family.no_transformers:
            hf_model = hf_backend.build(spec, task, id2label=labels, config_overrides={}, image_size=None)
        timm_model = None
        if spec.timm_name:
            arch = spec.timm_name.split(".")[0]
            timm_model = timm.create_model(arch, num_classes=spec.num_classes, **family.timm_kwargs(spec.architecture))
    if spec.num_params is None:
        pytest.skip(f"{name}: no published count")
    # transformers' DINOv2 models carry a mask token (one hidden vector) the timm model does not; with
    # registers, also the CLS token's position row (timm folds it into the CLS token); DINOv3's, its zero
    # q and v biases, which timm leaves out
    arch = spec.architecture
    extra = {
        "dinov2": arch.hidden_size,
        "dinov2_reg": 2 * arch.hidden_size,
        "dinov3": arch.hidden_size + 2 * arch.hidden_size * arch.depth,
    }.get(spec.family, 0)
    if hf_model is not None:
        assert _count(hf_model) == spec.num_params + extra
    if timm_model is not None:
        assert _count(timm_model) == spec.num_params


# parameter counts as the READMEs and model cards round them (millions): DINOv3's and DINOv2's repository
# tables, DeiT III's 22M/86M, the I-JEPA ViT-H/14's 631M on its Hub page. They round loosely (DINOv2's
# "21 M" ViT-S/14 has 22.06M parameters, DINOv3's "300M" ViT-L/16 303M): a check of the magnitude, the exact
# counts are the meta-device test's
ROUNDED_COUNTS = {"dinov3-vits16": 21, "dinov3-vitb16": 86, "dinov3-vitl16": 300, "dinov2-small-reg": 21,
                  "dinov2-base-reg": 86, "deit3-small": 22, "deit3-base": 86, "ijepa-vith14": 631}


@pytest.mark.parametrize("name", ROUNDED_COUNTS)
def test_added_counts_agree_with_the_published_rounded_ones(name):
    assert vitzoo.get_spec(name).num_params / 1e6 == pytest.approx(ROUNDED_COUNTS[name], rel=0.06)


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
