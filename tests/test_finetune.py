"""The fine-tuning recipe end to end on tiny models and the bundled digits, plus its pieces."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import timm
import torch
import transformers
from safetensors.torch import load_file

import vitzoo
from vitzoo import methods
from vitzoo.training import checkpoint as checkpoint_module
from vitzoo.training.engine import NonFiniteLossError
from vitzoo.training.optim import build_optimizer, parameter_groups

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
TINY = ["--model", "deit-tiny", "--scratch", "--config-overrides",
        "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4",
        "--image-size", "16", "--batch-size", "16", "--num-workers", "0", "--max-train-samples", "160",
        "--max-eval-samples", "64", "--hflip", "0", "--log-steps", "2"]


def run(tmp_path, *extra: str, name: str = "run", callbacks=()) -> tuple[dict, str]:
    output = str(tmp_path / name)
    results = methods.run("finetune", [*TINY, "--output-dir", output, *extra], callbacks=callbacks)
    return results, output


def test_run_folder_contract(tmp_path):
    results, output = run(tmp_path, "--epochs", "2", "--mixup", "0.2", "--auto-augment", "rand", "--ema-decay", "0.9")
    assert sorted(os.listdir(output)) == ["args.json", "checkpoints", "curves.png", "metrics.jsonl", "model", "results.json"]
    with open(os.path.join(output, "args.json")) as handle:
        assert json.load(handle)["mixup"] == 0.2
    events = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    train = [e for e in events if "loss" in e]
    evals = [e for e in events if e.get("eval")]
    assert len(evals) == 2 and all(e["samples"] == 64 for e in evals)  # every eval image once
    assert train and all({"step", "epoch", "loss", "lr", "images_per_second"} <= set(e) for e in train)
    assert [e["step"] for e in train] == sorted(e["step"] for e in train)
    with open(os.path.join(output, "results.json")) as handle:
        saved = json.load(handle)
    assert saved["eval"]["accuracy"] == max(e["accuracy"] for e in evals) == results["eval"]["accuracy"]
    assert saved["steps"] == 2 * (160 // 16) and saved["data"]["skipped"] == 0
    # the model folder: label names kept, loads with vitzoo and with plain transformers alike (compared in fp32)
    model = vitzoo.load(os.path.join(output, "model"), precision="fp32")
    assert model.id2label == {i: str(i) for i in range(10)}
    plain = transformers.AutoModelForImageClassification.from_pretrained(os.path.join(output, "model"))
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(plain(pixel_values=pixels).logits, model.logits(pixels), atol=1e-6)
    assert plain.config.id2label[3] == "3"


def test_resume_matches_uninterrupted_run(tmp_path, crash_after_checkpoint):
    """A run killed mid-epoch and resumed with --resume auto ends with the same weights."""
    common = ["--epochs", "2", "--checkpoint-steps", "3", "--mixup", "0.3", "--auto-augment", "rand", "--seed", "3"]
    _, straight = run(tmp_path, *common, name="straight")

    with pytest.raises(KeyboardInterrupt):
        run(tmp_path, *common, name="resumed", callbacks=[crash_after_checkpoint(6)])
    assert checkpoint_module.latest_checkpoint(str(tmp_path / "resumed")).endswith("step-00000006")
    _, resumed = run(tmp_path, *common, "--resume", "auto", name="resumed")
    expected = load_file(os.path.join(straight, "model", "model.safetensors"))
    got = load_file(os.path.join(resumed, "model", "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


def test_keeps_last_checkpoints_only(tmp_path):
    _, output = run(tmp_path, "--epochs", "1", "--checkpoint-steps", "2", "--keep-checkpoints", "2")
    names = sorted(os.listdir(os.path.join(output, "checkpoints")))
    assert names == ["step-00000008", "step-00000010"]


def test_freeze_backbone_trains_only_the_head(tmp_path):
    _, output = run(tmp_path, "--epochs", "1", "--freeze-backbone", "--learning-rate", "1e-2",
                    "--checkpoint-steps", "1", "--keep-checkpoints", "100")
    saved = checkpoint_module.list_checkpoints(output)
    first = load_file(os.path.join(saved[0], "model.safetensors"))
    final = load_file(os.path.join(saved[-1], "model.safetensors"))
    for key in final:
        if key.startswith("classifier"):
            assert not torch.equal(first[key], final[key]), key
        else:
            assert torch.equal(first[key], final[key]), key


def test_timm_backend_trains(tmp_path):
    results, output = run(tmp_path, "--epochs", "1", "--backend", "timm")
    assert results["backend"] == "timm"
    assert vitzoo.load(os.path.join(output, "model")).backend == "timm"


def test_nan_loss_stops_with_step_and_keeps_checkpoint(tmp_path):
    with pytest.raises(NonFiniteLossError, match="step"):
        run(tmp_path, "--epochs", "3", "--learning-rate", "1e6", "--max-grad-norm", "0", "--checkpoint-steps", "1",
            "--log-steps", "1", "--warmup-ratio", "0")
    latest = checkpoint_module.latest_checkpoint(str(tmp_path / "run"))
    if latest is not None:  # whatever was saved holds finite weights
        weights = load_file(os.path.join(latest, "model.safetensors"))
        assert all(torch.isfinite(v).all() for v in weights.values())


def test_bad_inputs_fail_before_training(tmp_path):
    with pytest.raises(vitzoo.BadInputError, match="18 is not a whole number of deit-tiny's 4-px patches; use 16 or 20"):
        run(tmp_path, "--image-size", "18")
    one_class = tmp_path / "one"
    (one_class / "cat").mkdir(parents=True)
    from PIL import Image

    for index in range(4):
        Image.new("RGB", (8, 8), (index, 0, 0)).save(one_class / "cat" / f"{index}.png")
    with pytest.raises(vitzoo.BadInputError, match="class"):
        methods.run("finetune", [*TINY, "--dataset", str(one_class), "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_parameter_groups_match_timm():
    """No weight decay on biases, norms, positions and tokens; layer decay per block — the same
    grouping timm's own `param_groups_layer_decay` gives the same architecture (second implementation)."""
    kwargs = dict(hidden_size=32, num_hidden_layers=3, num_attention_heads=2, intermediate_size=64, patch_size=4)
    hf = vitzoo.load("deit-tiny", pretrained=False, num_labels=5, image_size=16, config_overrides=kwargs).model
    tm = timm.create_model("deit_tiny_patch16_224", num_classes=5, img_size=16, patch_size=4, embed_dim=32, depth=3, num_heads=2, mlp_ratio=2)

    def summary(groups):
        out = {}
        for group in groups:
            key = (round(group["lr_scale"], 6), group["weight_decay"])
            out[key] = out.get(key, 0) + sum(p.numel() for p in group["params"])
        return out

    ours = summary(parameter_groups(hf, weight_decay=0.05, layer_decay=0.5, depth=3))
    theirs = summary(parameter_groups(tm, weight_decay=0.05, layer_decay=0.5, depth=3))
    # one documented difference: the final norm (64 values) goes with the head, as in BEiT's and
    # MAE's reference `get_layer_id_for_vit`; timm's group matcher puts it with the last block
    theirs[(0.5, 0.0)] -= 64
    theirs[(1.0, 0.0)] += 64
    assert ours == theirs
    assert set(ours) >= {(0.0625, 0.0), (0.125, 0.05), (1.0, 0.05), (1.0, 0.0)}
    optimizer = build_optimizer(hf, learning_rate=1e-3, weight_decay=0.05, layer_decay=None, depth=3)
    no_decay = {id(p) for g in optimizer.param_groups if g["weight_decay"] == 0 for p in g["params"]}
    for name, parameter in hf.named_parameters():
        expect_no_decay = parameter.ndim == 1 or "position" in name or "token" in name
        assert (id(parameter) in no_decay) == expect_no_decay, name


def test_two_process_launch_trains_one_model(tmp_path):
    """`accelerate launch --num_processes 2 -m vitzoo finetune` on CPUs: one model, half the steps each, full eval;
    the installed package launches without a checkout's recipes/ (the other launch tests run the scripts)."""
    output = str(tmp_path / "ddp")
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               "-m", "vitzoo", "finetune", *TINY, "--epochs", "1", "--output-dir", output]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(output, "results.json")) as handle:
        results = json.load(handle)
    assert results["num_processes"] == 2
    assert results["steps"] == 160 // 16 // 2  # each process sees half the data per step
    assert results["eval"]["samples"] == 64  # gathered without duplicates
    assert "distributed: DDP over 2 CPU processes" in done.stdout


def test_fused_adamw_is_used_and_matches_the_reference_update():
    """The optimizer takes torch's fused AdamW kernel (on CPU too); its steps must move the weights
    as the plain for-loop AdamW does, groups, decay and all. (No qkv bias: the key bias gets a zero
    gradient in exact arithmetic, and Adam turns its rounding noise into full-size steps.)"""
    torch.manual_seed(0)
    kwargs = dict(img_size=32, patch_size=8, depth=2, num_classes=3, qkv_bias=False)
    model = timm.create_model("vit_tiny_patch16_224", **kwargs)
    reference = timm.create_model("vit_tiny_patch16_224", **kwargs)
    reference.load_state_dict(model.state_dict())
    fused = build_optimizer(model, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.75, depth=2)
    assert fused.defaults["fused"] is True
    plain = build_optimizer(reference, learning_rate=1e-3, weight_decay=0.05, layer_decay=0.75, depth=2)
    for group in plain.param_groups:
        group["fused"], group["foreach"] = False, False
    pixels = torch.randn(4, 3, 32, 32)
    for net, optimizer in ((model, fused), (reference, plain)):
        for _ in range(3):
            net(pixels).logsumexp(-1).sum().backward()
            optimizer.step()
            optimizer.zero_grad()
    for name, value in model.state_dict().items():
        torch.testing.assert_close(value, reference.state_dict()[name], rtol=1e-5, atol=1e-6, msg=lambda m, n=name: f"{n}: {m}")


def test_auto_mixed_precision_follows_the_hardware(monkeypatch):
    from vitzoo.training import engine

    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    assert engine.resolve_mixed_precision("auto", use_cpu=True) == "bf16"
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)
    assert engine.resolve_mixed_precision("auto", use_cpu=True) == "no"
    assert engine.resolve_mixed_precision("fp16", use_cpu=True) == "fp16"  # an explicit choice wins
    monkeypatch.setenv("ACCELERATE_MIXED_PRECISION", "no")
    assert engine.resolve_mixed_precision("auto", use_cpu=True) is None  # the launcher's config decides


def test_auto_mixed_precision_takes_bf16_only_where_the_shape_pays_on_a_cpu(monkeypatch, tmp_path, capsys):
    """On a CPU with native bf16, a single-process run's auto precision follows the measured rule of
    its shape: batch x tokens x hidden^2 >= 2e7 trains in bf16, smaller shapes in fp32."""
    from vitzoo import methods
    from vitzoo.training import autoprecision, engine

    assert autoprecision.choose(96, 17, 64).precision == "no"  # 1.0e7: measured 0.80x in bf16
    assert autoprecision.choose(96, 65, 64).precision == "bf16"  # 3.8e7: measured 1.16x
    assert autoprecision.choose(192, 197, 16).precision == "bf16"
    monkeypatch.delenv("ACCELERATE_MIXED_PRECISION", raising=False)
    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: True)
    small = ["--model", "deit-tiny", "--scratch", "--config-overrides", "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,"
             "intermediate_size=64,patch_size=4", "--image-size", "16", "--max-train-samples", "32", "--max-eval-samples", "16",
             "--epochs", "1", "--batch-size", "16", "--output-dir", str(tmp_path / "small")]
    methods.run("finetune", small)
    out = capsys.readouterr().out
    assert "mixed precision auto: fp32 (batch 16 x 17 tokens x hidden 32^2" in out and "mixed precision: no" in out
    wide = [*small[:4], "hidden_size=384,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,patch_size=4",
            *small[5:-1], str(tmp_path / "wide")]
    methods.run("finetune", wide)
    assert "mixed precision auto: bf16" in capsys.readouterr().out


def test_default_workers_leave_small_cpus_to_the_model(monkeypatch):
    from vitzoo.data import loader

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(2)), raising=False)
    assert loader.default_num_workers() == 0
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: set(range(16)), raising=False)
    assert loader.default_num_workers() == 4
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 2)
    assert loader.default_num_workers() == 7  # 16 cores shared by 2 GPUs, one left per training process


def test_save_model_takes_a_compiled_model(tmp_path):
    """--compile wraps the model in torch.compile, whose weights are named `_orig_mod.*`; the saved
    model/ must still be a plain transformers folder with the trained weights."""
    import copy

    from accelerate import Accelerator

    from vitzoo.training.engine import save_model

    zoo = vitzoo.load("deit-tiny", pretrained=False, num_labels=3, image_size=32,
                      config_overrides="hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64,patch_size=8")
    trained = copy.deepcopy(zoo.model)
    with torch.no_grad():
        trained.classifier.bias.fill_(1.5)
    compiled = torch.compile(trained)  # wrapping compiles nothing until called
    assert all(name.startswith("_orig_mod.") for name in compiled.state_dict())
    save_model(Accelerator(cpu=True), zoo, compiled, str(tmp_path / "model"))
    reloaded = transformers.AutoModelForImageClassification.from_pretrained(tmp_path / "model")
    assert torch.equal(reloaded.classifier.bias, torch.full((3,), 1.5))
    torch.testing.assert_close(reloaded.state_dict()["vit.embeddings.cls_token"], trained.vit.embeddings.cls_token)
