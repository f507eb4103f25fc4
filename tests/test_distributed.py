"""Every shipped launch config, run as a user runs it: `accelerate launch --config_file
recipes/accelerate_configs/<config>.yaml` on CPU processes (gloo). FSDP shards for real (vitzoo's
FSDP2 on CPUs), matches DDP, resumes exactly and saves whole models; two "machines" on one train
one model; a config this machine cannot run is refused, never replaced by another strategy."""

from __future__ import annotations

import json
import os
import shutil
import socket
import subprocess
import sys

import pytest
import torch
from safetensors.torch import load_file

from vitzoo.errors import BadInputError
from vitzoo.training import distributed

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CONFIGS = os.path.join(ROOT, "recipes", "accelerate_configs")
ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
COMMON = ["--scratch", "--config-overrides", ARCH, "--image-size", "16", "--batch-size", "16", "--num-workers", "0",
          "--log-steps", "1", "--mixed-precision", "no"]
# fp32, clipping that bites (the gradient norm is ~5 here) and an EMA: what FSDP must get right
FINETUNE = ["--model", "deit-tiny", *COMMON, "--max-train-samples", "160", "--max-eval-samples", "64", "--hflip", "0",
            "--epochs", "2", "--max-grad-norm", "0.1", "--ema-decay", "0.9", "--learning-rate", "3e-3"]


def launch(config: str, recipe: str, argv: list[str], *launcher: str, processes: int = 2, wait: bool = True):
    """`accelerate launch --config_file <config>.yaml [launcher flags] recipes/<recipe>.py argv`."""
    command = [sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(CONFIGS, f"{config}.yaml"),
               "--num_processes", str(processes), *launcher, os.path.join(ROOT, "recipes", f"{recipe}.py"), *argv]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    if not wait:
        return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-4000:]
    return done.stdout


def results(output: str) -> dict:
    with open(os.path.join(output, "results.json")) as handle:
        return json.load(handle)


def checkpoint(output: str, step: int, name: str = "model") -> dict[str, torch.Tensor]:
    return load_file(os.path.join(output, "checkpoints", f"step-{step:08d}", f"{name}.safetensors"))


def assert_close(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor], tolerance: float) -> None:
    assert set(a) == set(b)
    worst = max((a[key].float() - b[key].float()).abs().max().item() for key in a)
    assert worst <= tolerance, worst


@pytest.mark.slow
def test_fsdp_on_cpu_shards_matches_ddp_resumes_and_saves_whole_models(tmp_path):
    fsdp, ddp, resumed = (str(tmp_path / name) for name in ("fsdp", "ddp", "resumed"))
    stdout = launch("fsdp", "finetune", [*FINETUNE, "--output-dir", fsdp])
    assert "distributed: FSDP: parameters, gradients and optimizer state sharded over 2 CPU process(es)" in stdout
    sharded = results(fsdp)
    layout = sharded["distributed"]
    assert layout["strategy"] == "fsdp" and sharded["num_processes"] == 2
    # each process holds about half of the parameters, and together all of them
    assert sum(layout["parameters_per_process"]) == layout["parameters"]
    assert all(0.4 < count / layout["parameters"] < 0.6 for count in layout["parameters_per_process"])
    steps = sharded["steps"]
    assert steps == 2 * 160 // 16 // 2

    stdout = launch("multi_cpu", "finetune", [*FINETUNE, "--output-dir", ddp])
    assert "distributed: DDP over 2 CPU processes" in stdout
    assert results(ddp)["distributed"]["parameters_per_process"] == [layout["parameters"]] * 2
    # same seed, same data order: the gathered FSDP weights, optimizer state and EMA are DDP's
    assert_close(checkpoint(fsdp, steps), checkpoint(ddp, steps), 1e-4)
    assert_close(checkpoint(fsdp, steps, "optimizer"), checkpoint(ddp, steps, "optimizer"), 1e-4)
    assert_close(checkpoint(fsdp, steps, "extra_state"), checkpoint(ddp, steps, "extra_state"), 1e-4)

    # killed after the first epoch's checkpoint: resuming under FSDP ends where the whole run ended
    shutil.copytree(fsdp, resumed)
    for name in (f"checkpoints/step-{steps:08d}", "model", "results.json"):
        target = os.path.join(resumed, name)
        shutil.rmtree(target) if os.path.isdir(target) else os.remove(target)
    stdout = launch("fsdp", "finetune", [*FINETUNE, "--output-dir", resumed, "--resume", "auto"])
    assert f"resumed from {os.path.join(resumed, 'checkpoints', f'step-{steps // 2:08d}')}" in stdout
    assert_close(checkpoint(resumed, steps), checkpoint(fsdp, steps), 0.0)

    # model/ is the whole model (the EMA's weights, kept at the best evaluation): transformers loads it
    from transformers import AutoModelForImageClassification

    with open(os.path.join(fsdp, "model", "vitzoo.json")) as handle:
        best_step = json.load(handle)["training"]["best_step"]
    loaded = AutoModelForImageClassification.from_pretrained(os.path.join(fsdp, "model"))
    ema = {key[len("ema."):]: value for key, value in checkpoint(fsdp, best_step, "extra_state").items()}
    assert_close(loaded.state_dict(), ema, 0.0)


@pytest.mark.slow
@pytest.mark.parametrize("recipe,argv", [
    ("distill", ["--method", "dino", "--model", "dino-vits16", "--out-dim", "32", "--head-hidden-dim", "32",
                 "--head-bottleneck-dim", "16", "--local-crops", "2"]),
    ("pretrain", ["--method", "mae", "--model", "mae-base", "--decoder-hidden-size", "32", "--decoder-depth", "1",
                  "--num-reconstructions", "2"]),
], ids=["dino", "mae"])
def test_self_supervised_recipes_under_fsdp(tmp_path, recipe, argv):
    """DINO (its whole EMA teacher updated from the gathered student) and MAE (reconstructions drawn
    with every process in the forward pass) train sharded; model/ loads with transformers."""
    from transformers import AutoModel

    output = str(tmp_path / "run")
    stdout = launch("fsdp", recipe, [*argv, *COMMON, "--max-train-samples", "64", "--max-eval-samples", "32",
                                     "--epochs", "1", "--output-dir", output])
    assert "distributed: FSDP" in stdout
    layout = results(output)["distributed"]
    assert layout["strategy"] == "fsdp" and max(layout["parameters_per_process"]) < 0.6 * layout["parameters"]
    AutoModel.from_pretrained(os.path.join(output, "model"))
    if recipe == "pretrain":
        assert os.path.getsize(os.path.join(output, "reconstructions.png")) > 0


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


@pytest.mark.slow
def test_two_machines_on_one_train_one_model(tmp_path):
    """multi_node.yaml as two "machines" (one process each) on this one, over gloo: one run folder,
    one model, half the steps per process."""
    output = str(tmp_path / "two")
    argv = ["--model", "deit-tiny", *COMMON, "--max-train-samples", "160", "--max-eval-samples", "64", "--epochs", "1",
            "--output-dir", output]
    port = str(_free_port())
    machines = [launch("multi_node", "finetune", argv, "--machine_rank", str(rank), "--main_process_ip", "127.0.0.1",
                       "--main_process_port", port, "--mixed_precision", "no", wait=False) for rank in (0, 1)]
    outputs = [machine.communicate(timeout=300) for machine in machines]
    for machine, (stdout, stderr) in zip(machines, outputs):
        assert machine.returncode == 0, stdout[-2000:] + stderr[-4000:]
    assert "distributed: DDP over 2 CPU processes" in outputs[0][0]
    run = results(output)
    assert run["num_processes"] == 2 and run["steps"] == 160 // 16 // 2
    assert run["eval"]["samples"] == 64  # gathered from both machines, without duplicates
    assert sorted(os.listdir(os.path.join(output, "checkpoints"))) == ["step-00000005"]


@pytest.mark.slow
def test_single_process_config_runs_one_process(tmp_path):
    output = str(tmp_path / "one")
    stdout = launch("single_gpu", "finetune", ["--model", "deit-tiny", *COMMON, "--max-train-samples", "32",
                                               "--max-eval-samples", "16", "--epochs", "1", "--output-dir", output],
                    processes=1)
    assert "distributed: none (one process" in stdout
    assert results(output)["distributed"]["strategy"] == "single"


def test_deepspeed_config_is_refused_without_gpus(tmp_path, monkeypatch):
    """On a machine without GPUs DeepSpeed cannot run: the launcher refuses it (deepspeed is not
    installed here), and so does the recipe, by name, when started with its environment."""
    done = subprocess.run(
        [sys.executable, "-m", "accelerate.commands.launch", "--config_file", os.path.join(CONFIGS, "deepspeed_zero2.yaml"),
         "--num_processes", "2", os.path.join(ROOT, "recipes", "finetune.py"), "--output-dir", str(tmp_path / "ds")],
        capture_output=True, text=True, timeout=120)
    assert done.returncode != 0 and "DeepSpeed is not installed" in done.stderr
    assert not (tmp_path / "ds").exists()
    monkeypatch.setenv("ACCELERATE_USE_DEEPSPEED", "true")
    with pytest.raises(BadInputError, match="DeepSpeed config .* needs CUDA GPUs.*fsdp.yaml"):
        distributed.check_launch(use_cpu=True)


def test_fsdp_settings_vitzoo_cannot_honour_on_cpu_are_refused(monkeypatch):
    monkeypatch.setenv("ACCELERATE_USE_FSDP", "true")
    monkeypatch.setenv("FSDP_VERSION", "1")
    with pytest.raises(BadInputError, match="fsdp_version 1.*fsdp_version: 2"):
        distributed.check_launch(use_cpu=True)
    monkeypatch.setenv("FSDP_VERSION", "2")
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "SIZE_BASED_WRAP")
    with pytest.raises(BadInputError, match="SIZE_BASED_WRAP"):
        distributed.check_launch(use_cpu=True)
    monkeypatch.setenv("FSDP_AUTO_WRAP_POLICY", "TRANSFORMER_BASED_WRAP")
    distributed.check_launch(use_cpu=True)


def test_the_wrapping_units_are_each_familys_blocks():
    import timm
    from transformers import ViTConfig, ViTMAEConfig, ViTMAEForPreTraining, ViTModel

    vit = ViTModel(ViTConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64))
    assert "ViTLayer" in distributed.layer_classes(vit)
    mae = ViTMAEForPreTraining(ViTMAEConfig(hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                                            intermediate_size=64, decoder_hidden_size=32, decoder_num_hidden_layers=1,
                                            decoder_num_attention_heads=2, decoder_intermediate_size=64))
    assert {"ViTMAELayer", "ViTMAEDecoder"} <= distributed.layer_classes(mae)
    timm_vit = timm.create_model("vit_tiny_patch16_224", depth=2, img_size=32, patch_size=8)
    assert distributed.layer_classes(timm_vit) == {"Block"}
