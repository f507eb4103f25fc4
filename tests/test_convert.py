"""timm <-> transformers converters, `vitzoo convert` and `vitzoo parity`, on tiny models.

Every convertible family (and head layout) goes timm -> transformers -> timm bit for bit, and
the converted models agree with their source within 1e-5 on logits and features. Wrong
families, missing keys, extra keys and shape mismatches fail with a message naming the key.
"""

from __future__ import annotations

import dataclasses
import json
import os

import pytest
import timm
import torch
from tiny_hub import tiny_spec
from transformers import DeiTForImageClassificationWithTeacher

import vitzoo
from vitzoo import registry
from vitzoo.cli import main
from vitzoo.convert import (
    CONVERTIBLE_FAMILIES,
    convert_state_dict,
    convertible_names,
    family_for_timm_name,
    preprocessing_differences,
    timm_data_config,
    to_timm,
    to_transformers,
)
from vitzoo.convert.keymaps import check_against
from vitzoo.errors import BadInputError
from vitzoo.registry import Preprocessing
from vitzoo.zoo import ZooModel

ATOL = 1e-5
# (registry name, head size): every family, with and without a head where the layout differs
CASES = [
    ("vit-base", 10),
    ("vit-base-in21k", 0),
    ("deit-tiny", 10),
    ("deit-tiny-distilled", 10),
    ("deit-tiny-distilled", 0),
    ("beit-base", 10),
    ("beit-base", 0),
    ("dino-vits16", 0),
    ("mae-base", 0),
    ("mae-base", 10),
    ("dinov2-small", 0),
    ("dinov2-small", 10),
    ("dinov2-small-reg", 0),
    ("dinov2-small-reg", 10),
    ("dinov3-vits16", 0),  # transformers has no DINOv3 classifier
    ("ijepa-vith14", 0),
    ("ijepa-vith14", 10),
]
IDS = [f"{name}-{'head' if classes else 'features'}" for name, classes in CASES]


def spec_of(name: str):
    return tiny_spec(registry.get_spec(name))  # idempotent when the tiny_hub fixture already swapped specs


def randomize(model: torch.nn.Module, seed: int = 0) -> torch.nn.Module:
    """Every parameter random (layer scales, biases and tables included), so nothing maps by luck."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for parameter in model.parameters():
            parameter.copy_(torch.randn(parameter.shape, generator=generator) * 0.5)
    return model.eval()


def make_timm(spec, num_classes: int) -> torch.nn.Module:
    family = registry.get_family(spec.family)
    model = timm.create_model(
        spec.timm_name.split(".")[0], num_classes=num_classes, **family.timm_kwargs(spec.architecture)
    )
    return randomize(model)


def make_hf(spec, num_classes: int, eps: float = 1e-12):
    family = registry.get_family(spec.family)
    task = "classification" if num_classes else "features"
    labels = {"id2label": {i: f"c{i}" for i in range(num_classes)}} if num_classes else {}
    config = family.build_config(spec, task, **labels)
    config.layer_norm_eps = eps
    cls = family.transformers_class(spec, task)
    model = cls(config, **family.features_kwargs) if task == "features" else cls(config)
    model = randomize(model, seed=1)
    embeddings = model.base_model.embeddings
    if getattr(embeddings, "mask_token", None) is not None:
        torch.nn.init.zeros_(embeddings.mask_token)  # timm has none: it comes back as zeros
    if config.model_type == "dinov2_with_registers":
        with torch.no_grad():  # timm folds the CLS position row into the CLS token: it comes back folded
            embeddings.cls_token += embeddings.position_embeddings[:, :1]
            embeddings.position_embeddings[:, :1] = 0
    return model


def timm_compatible_head(model):
    """A DINOv2 classifier reading the CLS token only (timm's head), not the patch mean too."""
    if model.config.model_type in ("dinov2", "dinov2_with_registers") and hasattr(model, "classifier"):
        with torch.no_grad():
            model.classifier.weight[:, model.config.hidden_size :] = 0
    return model


def pixels(spec, n: int = 3) -> torch.Tensor:
    size = spec.architecture.image_size
    return torch.randn(n, 3, size, size, generator=torch.Generator().manual_seed(2))


def assert_agree(a: ZooModel, b: ZooModel, spec) -> None:
    batch = pixels(spec)
    with torch.no_grad():
        torch.testing.assert_close(a.features(batch), b.features(batch), atol=ATOL, rtol=0)
        if a.task == "classification":
            torch.testing.assert_close(a.logits(batch), b.logits(batch), atol=ATOL, rtol=0)


def zoo(model, spec, backend: str, classes: int) -> ZooModel:
    task = "classification" if classes else "features"
    return ZooModel(model, spec, task=task, backend=backend, pretrained=True)


def test_every_family_has_a_case():
    assert {registry.get_spec(name).family for name, _ in CASES} == set(CONVERTIBLE_FAMILIES)


@pytest.mark.parametrize("name,classes", CASES, ids=IDS)
def test_timm_round_trip_is_bit_identical_and_outputs_agree(name, classes):
    spec = spec_of(name)
    source = make_timm(spec, classes)
    hf = to_transformers(source, spec)
    timm_eps = {m.eps for m in source.modules() if isinstance(m, torch.nn.LayerNorm)}
    assert {hf.config.layer_norm_eps} == timm_eps and hf.config.layer_norm_eps != 1e-12  # timm's, not the default
    back = to_timm(hf, spec)
    before, after = source.state_dict(), back.state_dict()
    assert list(before) == list(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert_agree(zoo(source, spec, "timm", classes), zoo(hf, spec, "transformers", classes), spec)
    assert_agree(zoo(source, spec, "timm", classes), zoo(back, spec, "timm", classes), spec)


@pytest.mark.parametrize("name,classes", CASES, ids=IDS)
def test_transformers_round_trip_keeps_weights_and_eps(name, classes):
    spec = spec_of(name)
    source = timm_compatible_head(make_hf(spec, classes, eps=1e-12))
    converted = to_timm(source, spec)
    assert {m.eps for m in converted.modules() if isinstance(m, torch.nn.LayerNorm)} == {1e-12}
    back = to_transformers(converted, spec, id2label=source.config.id2label if classes else None)
    assert type(back) is type(source) and back.config.layer_norm_eps == 1e-12
    before, after = source.state_dict(), back.state_dict()
    assert list(before) == list(after)
    for key in before:
        assert torch.equal(before[key], after[key]), key
    assert_agree(zoo(source, spec, "transformers", classes), zoo(converted, spec, "timm", classes), spec)


def test_mae_pretraining_model_converts_its_encoder():
    from transformers import ViTMAEForPreTraining

    spec = spec_of("mae-base")
    config = registry.get_family("mae").build_config(spec, "pretraining")
    config.update(dict(decoder_hidden_size=32, decoder_num_hidden_layers=1, decoder_num_attention_heads=2))
    pretraining = randomize(ViTMAEForPreTraining(config))
    converted = to_timm(pretraining, spec)
    encoder = pretraining.vit.state_dict()
    again = to_transformers(converted, spec).state_dict()
    assert all(torch.equal(encoder[k], again[k]) for k in encoder)


# ----------------------------------------------------------------------------- failures
def test_wrong_family_fails_with_a_message():
    beit = make_timm(spec_of("beit-base"), 0)
    with pytest.raises(BadInputError, match="wrong family.*Beit"):
        to_transformers(beit, spec_of("vit-base"))
    hf_beit = make_hf(spec_of("beit-base"), 0)
    with pytest.raises(BadInputError, match="wrong family.*model_type 'beit'"):
        to_timm(hf_beit, spec_of("deit-tiny-distilled"))
    distilled = make_timm(spec_of("deit-tiny-distilled"), 0)
    with pytest.raises(BadInputError, match="wrong family"):
        to_transformers(distilled, spec_of("dinov2-small"))
    with pytest.raises(BadInputError, match="no timm <-> transformers converter"):
        to_transformers(distilled, dataclasses.replace(spec_of("deit-tiny"), family="timm"))
    # the token layouts of the families added with DINOv3: registers, no CLS token, RoPE (timm's Eva)
    for model, other, message in (
        (make_timm(spec_of("dinov2-small-reg"), 0), "dinov2-small", "4 register tokens, transformers' DINOv2 has 0"),
        (make_timm(spec_of("ijepa-vith14"), 0), "vit-base-in21k", "pools with global_pool='avg'"),
        (make_timm(spec_of("dinov3-vits16"), 0), "dinov2-small", "wrong family.*Eva"),
    ):
        with pytest.raises(BadInputError, match=message):
            to_transformers(model, spec_of(other))


def test_extra_timm_key_is_named():
    spec = spec_of("vit-base")
    family = registry.get_family("vit")
    with_layer_scale = timm.create_model(
        "vit_base_patch16_224", num_classes=0, init_values=1e-5, **family.timm_kwargs(spec.architecture)
    )
    with pytest.raises(BadInputError, match=r"'blocks\.0\.ls1\.gamma' has no counterpart"):
        to_transformers(with_layer_scale, spec)


def test_extra_transformers_key_is_named():
    from transformers import ViTModel

    spec = spec_of("vit-base-in21k")
    with_pooler = ViTModel(registry.get_family("vit").build_config(spec, "features"), add_pooling_layer=True)
    with pytest.raises(BadInputError, match=r"'pooler\.dense\.weight' has no counterpart"):
        to_timm(with_pooler, spec)


def test_missing_key_and_shape_mismatch_are_named():
    spec = spec_of("deit-tiny")
    source = make_timm(spec, 10)
    target = to_transformers(source, spec)
    state = source.state_dict()
    del state["blocks.1.mlp.fc1.bias"]
    with pytest.raises(BadInputError, match=r"missing key 'vit\.layers\.1\.mlp\.fc1\.bias'"):
        convert_state_dict(state, spec, "transformers", prefix="vit.", target=target.state_dict())
    state = source.state_dict()
    state["norm.weight"] = torch.ones(33)
    with pytest.raises(BadInputError, match=r"shape mismatch at 'vit\.layernorm\.weight'"):
        convert_state_dict(state, spec, "transformers", prefix="vit.", target=target.state_dict())
    state = source.state_dict()
    state["blocks.0.attn.surprise"] = torch.zeros(1)
    with pytest.raises(BadInputError, match=r"'blocks\.0\.attn\.surprise' has no counterpart"):
        convert_state_dict(state, spec, "transformers", prefix="vit.")
    hf_state = target.state_dict()
    del hf_state["vit.layers.0.attention.k_proj.weight"]
    with pytest.raises(BadInputError, match=r"'vit\.layers\.0\.attention\.k_proj\.weight' is missing"):
        convert_state_dict(hf_state, spec, "timm", prefix="vit.")
    hf_state = target.state_dict()
    hf_state["vit.layers.0.extra.weight"] = torch.zeros(1)
    with pytest.raises(BadInputError, match=r"extra key|'vit\.layers\.0\.extra\.weight' has no counterpart"):
        convert_state_dict(hf_state, spec, "timm", prefix="vit.", target=source.state_dict())
    converted = convert_state_dict(source.state_dict(), spec, "transformers", prefix="vit.")
    converted["vit.spare"] = torch.zeros(1)
    with pytest.raises(BadInputError, match=r"extra key 'vit\.spare'"):
        check_against(converted, target.state_dict(), target="ViTForImageClassification")


def test_dinov2_head_reading_patch_mean_cannot_go_to_timm():
    spec = spec_of("dinov2-small")
    model = make_hf(spec, 10)
    with pytest.raises(BadInputError, match=r"classifier\.weight.*mean of the patch tokens"):
        to_timm(model, spec)


def test_timm_names_map_to_families():
    assert family_for_timm_name("vit_small_patch14_reg4_dinov2.lvd142m") == ("dinov2_reg", False)
    assert family_for_timm_name("vit_large_patch16_dinov3.lvd1689m") == ("dinov3", False)
    assert family_for_timm_name("vit_huge_patch14_gap_224.in1k_ijepa") == ("ijepa", False)
    with pytest.raises(BadInputError, match="deit3"):  # DeiT III: no transformers class to convert to
        family_for_timm_name("deit3_small_patch16_224.fb_in1k")
    assert family_for_timm_name("deit_small_distilled_patch16_224.fb_in1k") == ("deit", True)
    assert family_for_timm_name("deit_small_patch16_224") == ("deit", False)
    assert family_for_timm_name("beit_base_patch16_224") == ("beit", False)
    assert family_for_timm_name("vit_small_patch14_dinov2.lvd142m") == ("dinov2", False)
    assert family_for_timm_name("vit_base_patch16_224") == ("vit", False)
    with pytest.raises(BadInputError, match="resnet50"):
        family_for_timm_name("resnet50")


# ----------------------------------------------------------------------------- preprocessing
def test_preprocessing_differences():
    spec = spec_of("deit-tiny")
    assert preprocessing_differences(spec, timm_cfg=dict(timm_data_config(spec.preprocessing))) == []
    real = dataclasses.replace(
        spec, preprocessing=Preprocessing(resize_size=256, crop_size=224, interpolation="bicubic")
    )
    lines = preprocessing_differences(real)  # against timm's registered cfg for deit_tiny_patch16_224.fb_in1k
    assert any(line.startswith("resize: transformers squash to 256x256, timm shortest edge to 248") for line in lines)
    assert any(line.startswith("centre crop") for line in lines)
    assert not any(line.startswith(("interpolation", "mean", "std")) for line in lines)
    vit = spec_of("vit-base")
    assert any(
        line.startswith("interpolation: transformers bilinear, timm bicubic") for line in preprocessing_differences(vit)
    )
    no_timm = registry.get_spec("vit-large")
    assert preprocessing_differences(no_timm) == []


# ----------------------------------------------------------------------------- CLI
def test_cli_convert_deit_distilled_scratch(tiny_hub, tmp_path, capsys):
    name = "deit-tiny-distilled"
    out = tmp_path / "hf"
    torch.manual_seed(123)
    assert main(["convert", name, "--to", "transformers", "--output", str(out), "--scratch"]) == 0
    assert {"config.json", "model.safetensors", "preprocessor_config.json", "vitzoo.json"} <= set(os.listdir(out))
    torch.manual_seed(123)  # the same random timm model the command converted
    reference = vitzoo.load(name, backend="timm", pretrained=False)
    model = DeiTForImageClassificationWithTeacher.from_pretrained(out).eval()
    batch = reference.preprocess([torch.randint(0, 256, (3, 40, 50), dtype=torch.uint8)] * 2)
    with torch.no_grad():
        torch.testing.assert_close(model(pixel_values=batch).logits, reference.model(batch), atol=ATOL, rtol=0)
    loaded = vitzoo.load(out)  # and vitzoo reads it back with its spec and preprocessing
    assert loaded.spec.name == name and loaded.spec.preprocessing == reference.spec.preprocessing
    assert json.loads((out / "vitzoo.json").read_text())["converted_from"]["library"] == "timm"

    # and back to timm: a folder timm.create_model loads with the spec's preprocessing in its cfg
    out_timm = tmp_path / "timm"
    assert main(["convert", str(out), "--to", "timm", "--output", str(out_timm)]) == 0
    config = json.loads((out_timm / "config.json").read_text())
    expected = timm_data_config(reference.spec.preprocessing)
    assert config["pretrained_cfg"]["crop_mode"] == expected["crop_mode"] == "squash"
    assert config["pretrained_cfg"]["crop_pct"] == pytest.approx(expected["crop_pct"])
    model_timm = timm.create_model(
        config["architecture"],
        pretrained=True,
        pretrained_cfg_overlay=dict(file=str(out_timm / "model.safetensors")),
        **config["model_args"],
    ).eval()
    with torch.no_grad():
        torch.testing.assert_close(model_timm(batch), reference.model(batch), atol=ATOL, rtol=0)
    assert "wrote" in capsys.readouterr().out


def test_cli_convert_timm_name_outside_registry(tmp_path):
    out = tmp_path / "deit"
    assert (
        main(["convert", "deit_tiny_distilled_patch16_224", "--to", "transformers", "--output", str(out), "--scratch"])
        == 0
    )
    model = DeiTForImageClassificationWithTeacher.from_pretrained(out)
    assert model.config.hidden_size == 192 and model.config.layer_norm_eps == 1e-6
    prep = json.loads((out / "preprocessor_config.json").read_text())
    assert prep["size"] == {"shortest_edge": 248} and prep["crop_size"] == {"height": 224, "width": 224}


def test_cli_convert_errors_leave_nothing(tiny_hub, tmp_path, capsys):
    out = tmp_path / "nothing"
    assert main(["convert", "vit-large", "--to", "transformers", "--output", str(out), "--scratch"]) == 2
    assert "no timm equivalent" in capsys.readouterr().err
    assert not out.exists()
    assert main(["convert", "deit_tiny_patch16_224", "--to", "timm", "--output", str(out), "--scratch"]) == 2
    assert "already" in capsys.readouterr().err


def test_cli_parity_all(tiny_hub, capsys):
    assert main(["parity", "--all", "--scratch", "--json"]) == 0
    results = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    names = convertible_names()
    assert set(results) == set(names) and len(names) >= 6
    for name, row in results.items():
        assert row["error"] is None, name
        assert row["features"] is not None and row["features"] <= ATOL, name
        assert row["preprocessing"] is not None, name
        if tiny_hub[name].num_classes:
            assert row["logits"] is not None and row["logits"] <= ATOL, name


def test_cli_parity_table_pretrained(tiny_hub, capsys):
    # the tiny Hub's two repositories hold different random weights: parity converts them first
    assert main(["parity", "deit-tiny-distilled", "dinov2-small", "beit-base"]) == 0
    out = capsys.readouterr().out
    header, *rows = out.splitlines()
    assert header.split() == ["name", "weights", "logits", "features", "preprocessing"]
    for name in ("deit-tiny-distilled", "dinov2-small", "beit-base"):
        row = next(line for line in rows if line.startswith(name + " "))
        assert "converted" in row
    assert main(["parity", "vit-large"]) == 1
    assert "no timm equivalent" in capsys.readouterr().out


def test_convert_through_timm_folder_and_back_is_lossless(tiny_hub, tmp_path):
    from transformers import AutoConfig, ViTModel

    from vitzoo.convert import convert

    summary = convert("dino-vits16", "timm", tmp_path / "timm")
    assert summary["max_abs_difference"] <= ATOL
    assert any("eps 1e-12" in note for note in summary["notes"])  # timm cannot record it: said out loud
    back = convert(tmp_path / "timm", "transformers", tmp_path / "hf")
    assert back["saved_max_abs_difference"] <= ATOL
    assert AutoConfig.from_pretrained(tmp_path / "hf").layer_norm_eps == 1e-12  # restored from vitzoo.json
    original = vitzoo.load("dino-vits16").model.state_dict()
    again = ViTModel.from_pretrained(tmp_path / "hf", add_pooling_layer=False).state_dict()
    assert list(original) == list(again)
    assert all(torch.equal(original[k], again[k]) for k in original)


def test_same_weights_detects_the_same_checkpoint():
    from vitzoo.convert.parity import same_weights

    spec = spec_of("deit-tiny-distilled")
    source = make_timm(spec, 10)
    assert same_weights(source, to_transformers(source, spec), spec)
    other = to_transformers(randomize(make_timm(spec, 10), seed=5), spec)
    assert not same_weights(source, other, spec)


# ----------------------------------------------------------------------------- the families added with DINOv3
def test_dinov3_zero_qv_biases_travel_as_timm_ships_them():
    """The released DINOv3 weights have all-zero q/v biases: timm's `vit_*_dinov3` leaves them out, so they
    go to timm's architecture without biases and come back as zeros, bit for bit; non-zero ones go to a
    timm model with q/v biases (qkv_bias=True) and back unchanged (the round-trip tests above)."""
    spec = spec_of("dinov3-vits16")
    source = make_hf(spec, 0)
    with torch.no_grad():
        for name, parameter in source.named_parameters():
            if name.endswith(("q_proj.bias", "v_proj.bias")):
                parameter.zero_()
    converted = to_timm(source, spec)
    assert not any(key.endswith(("q_bias", "v_bias")) for key in converted.state_dict())
    assert type(converted.rope).__name__ == "RotaryEmbeddingDinoV3" and converted.global_pool == "token"
    back = to_transformers(converted, spec)
    assert back.config.query_bias and back.config.value_bias and not back.config.key_bias
    before, after = source.state_dict(), back.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)
    assert_agree(zoo(source, spec, "transformers", 0), zoo(converted, spec, "timm", 0), spec)
    # RoPE: the same weights agree at any other input size too
    pixels = torch.randn(2, 3, 24, 32)
    with torch.no_grad():
        theirs = converted.forward_features(pixels)
        ours = source(pixel_values=pixels).last_hidden_state
    torch.testing.assert_close(ours, theirs, atol=ATOL, rtol=0)


def test_dinov2_registers_fold_the_cls_position_into_the_cls_token():
    """transformers adds a position row to the CLS token, timm (no_embed_class) adds none: the converter
    folds that row into the CLS token, so the function is the same and the weights are, but for the fold."""
    spec = spec_of("dinov2-small-reg")
    source = make_hf(spec, 0)
    embeddings = source.embeddings
    with torch.no_grad():
        embeddings.position_embeddings[:, :1] = torch.randn(1, 1, 32)  # a released model's non-zero row
    converted = to_timm(source, spec)
    assert converted.no_embed_class and converted.num_reg_tokens == 4
    assert_agree(zoo(source, spec, "transformers", 0), zoo(converted, spec, "timm", 0), spec)
    back = to_transformers(converted, spec)
    folded = embeddings.cls_token + embeddings.position_embeddings[:, :1]
    assert torch.equal(back.embeddings.cls_token, folded)
    assert not back.embeddings.position_embeddings[:, :1].any()
    assert torch.equal(back.embeddings.position_embeddings[:, 1:], embeddings.position_embeddings[:, 1:])
    assert_agree(zoo(source, spec, "transformers", 0), zoo(back, spec, "transformers", 0), spec)


def test_cli_parity_table_for_the_added_families(tiny_hub, capsys):
    # the tiny Hub's timm and transformers checkpoints hold different random weights: converted first
    names = ["dinov3-vits16", "dinov2-small-reg", "ijepa-vith14"]
    assert main(["parity", *names, "--json"]) == 0
    results = {row["name"]: row for row in json.loads(capsys.readouterr().out)}
    for name in names:
        assert results[name]["error"] is None and results[name]["features"] <= ATOL, name
        assert results[name]["weights"].startswith("differ")
    assert main(["parity", "deit3-small"]) == 1
    assert "no converter" in capsys.readouterr().out
