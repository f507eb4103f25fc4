"""`--peft lora` in the shared loop (vitzoo.training.adapters): only the adapters and the head train, as
many parameters as the rank says and no optimizer state for the rest; model/ is the merged model (plain
transformers or timm, no PEFT needed), adapter/ loads with PEFT and gives the same logits; resume is exact;
the flags are refused where they do not apply; FSDP and DDP launches train and save it."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
import torch
from recipe_runs import COMMON
from safetensors.torch import load_file

import vitzoo
from vitzoo import methods
from vitzoo.training.objective import Callback

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
HIDDEN, DEPTH, CLASSES = 32, 2, 10  # recipe_runs.ARCH, on the digits
LORA = ["--model", "deit-tiny", *COMMON, "--peft", "lora", "--lora-rank", "4", "--learning-rate", "1e-2"]
PREFIX = "base_model.model."


def head(classes: int = CLASSES) -> int:
    return HIDDEN * classes + classes


class Watch(Callback):
    """The wrapped model's parameters before the first update, and the optimizer's state at the end."""

    def on_train_begin(self, context):
        model = context.accelerator.unwrap_model(context.model)
        self.before = {name: p.detach().clone() for name, p in model.named_parameters()}
        self.trainable = {name for name, p in model.named_parameters() if p.requires_grad}
        self.names = {p: name for name, p in model.named_parameters()}

    def on_end(self, context, results):
        model = context.accelerator.unwrap_model(context.model)
        self.after = {name: p.detach().clone() for name, p in model.named_parameters()}
        optimizer = context.optimizer.optimizer if hasattr(context.optimizer, "optimizer") else context.optimizer
        self.in_groups = {self.names[p] for group in optimizer.param_groups for p in group["params"]}
        self.state = {self.names[p]: state for p, state in optimizer.state.items()}


def base_weights(checkpoint_dir: str) -> dict[str, torch.Tensor]:
    """The frozen model inside a LoRA checkpoint, under the plain model's names (what the adapter was trained on)."""
    weights = load_file(os.path.join(checkpoint_dir, "model.safetensors"))
    return {key.removeprefix(PREFIX).replace(".base_layer.", ".").replace(".original_module.", "."): value
            for key, value in weights.items() if ".lora_" not in key and ".modules_to_save." not in key}


def final_checkpoint(output: str) -> str:
    folder = os.path.join(output, "checkpoints")
    return os.path.join(folder, sorted(os.listdir(folder))[-1])


def test_lora_trains_the_adapters_and_head_only_as_many_as_the_rank_says_and_saves_merged(tmp_path, capsys):
    from peft import PeftModel
    from transformers import AutoModelForImageClassification

    output = str(tmp_path / "lora")
    watch = Watch()
    results = methods.run("finetune", [*LORA, "--epochs", "1", "--output-dir", output], callbacks=[watch])

    # r x (in + out) per adapted Linear (q_proj and v_proj, 32 -> 32, in each of 2 blocks) plus the whole head
    expected = DEPTH * 2 * 4 * (HIDDEN + HIDDEN) + head()
    assert results["trainable_parameters"] == results["peft"]["trainable_parameters"] == expected == 1354
    assert f"{expected:,} trainable of {results['total_parameters']:,} parameters" in capsys.readouterr().out
    merged_count = sum(t.numel() for t in load_file(os.path.join(output, "model", "model.safetensors")).values())
    assert results["peft"]["model_parameters"] == merged_count
    # the wrapped model holds the plain one, the adapters and the head's trained copy
    assert results["total_parameters"] == merged_count + expected

    # what trains: the LoRA matrices and the head's copy; the optimizer holds those and state for those only
    assert watch.trainable and all(".lora_A." in n or ".lora_B." in n or n.startswith(f"{PREFIX}classifier.modules_to_save.")
                                   for n in watch.trainable)
    assert sum(watch.before[n].numel() for n in watch.trainable) == expected
    assert watch.in_groups == set(watch.state) == watch.trainable
    assert sum(state[slot].numel() for state in watch.state.values() for slot in ("exp_avg", "exp_avg_sq")) == 2 * expected
    # the frozen weights are bit-identical after training; the adapters and the head moved
    for name, before in watch.before.items():
        if name in watch.trainable:
            assert not torch.equal(before, watch.after[name]) or ".lora_A." in name, name
        else:
            assert torch.equal(before, watch.after[name]), name

    # model/ is a plain transformers model (and a vitzoo one), merged: the adapter on its base gives its logits
    merged = AutoModelForImageClassification.from_pretrained(os.path.join(output, "model")).eval()
    assert not any("lora" in key for key in merged.state_dict())
    base = AutoModelForImageClassification.from_pretrained(os.path.join(output, "model"))
    base.load_state_dict(base_weights(final_checkpoint(output)), strict=False)
    pixels = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        unadapted = base.eval()(pixels).logits
        adapted = PeftModel.from_pretrained(base, os.path.join(output, "adapter")).eval()
        torch.testing.assert_close(adapted(pixels).logits, merged(pixels).logits, rtol=0, atol=1e-5)
        assert not torch.allclose(unadapted, merged(pixels).logits, atol=1e-4)  # the merge added the adapters
    zoo = vitzoo.load(os.path.join(output, "model"))
    assert zoo.num_params == merged_count
    training = json.load(open(os.path.join(output, "model", "vitzoo.json")))["training"]
    assert training["peft"]["rank"] == 4 and training["peft"]["targets"] == ["q_proj", "v_proj"]


def test_lora_on_the_timm_backend_adapts_the_fused_qkv(tmp_path):
    from peft import PeftModel

    output = str(tmp_path / "timm")
    results = methods.run("finetune", [*LORA, "--backend", "timm", "--epochs", "1", "--output-dir", output])
    # one qkv Linear per block, 32 -> 96
    assert results["trainable_parameters"] == DEPTH * 4 * (HIDDEN + 3 * HIDDEN) + head()
    assert results["peft"]["targets"] == ["qkv"] and results["peft"]["heads"] == ["head"]
    merged = vitzoo.load(os.path.join(output, "model"))
    assert merged.backend == "timm"
    base = vitzoo.load(os.path.join(output, "model")).model
    base.load_state_dict(base_weights(final_checkpoint(output)), strict=False)
    adapted = PeftModel.from_pretrained(base, os.path.join(output, "adapter")).eval()
    pixels = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapted(pixels), merged.model.eval()(pixels), rtol=0, atol=1e-5)


def test_lora_resume_after_an_interruption_ends_with_the_same_weights(tmp_path, crash_after_checkpoint):
    argv = [*LORA, "--epochs", "2", "--checkpoint-steps", "3", "--lora-dropout", "0.1", "--lora-targets",
            "q_proj,k_proj,v_proj,o_proj", "--max-train-samples", "96"]
    straight, resumed = str(tmp_path / "straight"), str(tmp_path / "resumed")
    methods.run("finetune", [*argv, "--output-dir", straight])
    with pytest.raises(KeyboardInterrupt):
        methods.run("finetune", [*argv, "--output-dir", resumed], callbacks=[crash_after_checkpoint(3)])
    # another rank cannot take this checkpoint: the message names both
    with pytest.raises(vitzoo.BadInputError, match="LoRA rank 4 on q_proj,k_proj,v_proj,o_proj.*LoRA rank 2"):
        methods.run("finetune", [*argv, "--lora-rank", "2", "--output-dir", resumed, "--resume", "auto"])
    methods.run("finetune", [*argv, "--output-dir", resumed, "--resume", "auto"])
    for name in ("model/model.safetensors", "adapter/adapter_model.safetensors", f"{final_checkpoint(straight)[len(straight) + 1:]}/model.safetensors"):
        expected, got = (load_file(os.path.join(folder, name)) for folder in (straight, resumed))
        assert expected.keys() == got.keys() and all(torch.equal(expected[k], got[k]) for k in expected), name


def every_family():
    """One checkpoint of each family (and the distilled DeiT, two heads), on each backend that can classify with it."""
    from vitzoo import registry

    names = {}
    for spec in registry.all_specs():
        names.setdefault(spec.family, spec.name)
    cases = []
    for family, name in sorted({**names, "deit_distilled": "deit-tiny-distilled"}.items()):
        spec = registry.get_spec(name)
        classifies = registry.get_family(spec.family).classes.get("classification") and not registry.get_family(
            spec.family).no_transformers
        cases += [(name, "transformers")] if classifies else []
        cases += [(name, "timm")] if spec.timm_name and family != "deit_distilled" else []
    return cases


@pytest.mark.parametrize(("name", "backend"), every_family(), ids=[f"{n}-{b}" for n, b in every_family()])
def test_every_family_merges_to_the_adapter_models_logits(tiny_hub, tmp_path, name, backend):
    """adapt + save on each family's tiny model, with random adapters and head: the saved merged model
    (read back by vitzoo.load) computes the adapter model's logits, and differs from the unadapted one."""
    from accelerate import Accelerator

    from vitzoo.training.adapters import adapt
    from vitzoo.training.arguments import FinetuneArguments

    zoo = vitzoo.load(name, task="classification", num_labels=3, pretrained=False, backend=backend)
    if (name, backend) == ("beit-base", "timm"):  # timm's BEiT reads qkv.weight itself: an adapter would never run
        with pytest.raises(vitzoo.BadInputError, match=r"beit-base \(timm\) never calls blocks.0.attn.qkv .*"
                                                       "--backend transformers, or other --lora-targets"):
            adapt(FinetuneArguments(peft="lora"), zoo, zoo.model)
        # the live model was left as it was: other targets adapt it
        assert adapt(FinetuneArguments(peft="lora", lora_targets="attn.proj,fc1"), zoo, zoo.model)[1].heads == ["head"]
        return
    pixels = torch.randn(2, 3, zoo.image_size, zoo.image_size)
    model, adapter = adapt(FinetuneArguments(peft="lora", lora_rank=2), zoo, zoo.model)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in model.parameters():
            if parameter.requires_grad:  # B (zero at init) and the head's copy
                parameter.copy_(0.2 * torch.randn(parameter.shape, generator=generator))
        adapted = forward(model.eval(), pixels)
        with model.disable_adapter():
            plain = forward(model, pixels)
    assert len(adapter.scaling) == zoo.spec.architecture.depth * (1 if backend == "timm" else 2)  # qkv; q_proj, v_proj
    adapter.save(Accelerator(cpu=True), model, str(tmp_path / "model"), str(tmp_path / "adapter"))
    merged = vitzoo.load(str(tmp_path / "model"))
    assert merged.backend == backend and merged.num_params == adapter.model_parameters
    with torch.no_grad():
        torch.testing.assert_close(forward(merged.model.eval(), pixels), adapted, rtol=0, atol=1e-5)
    assert not torch.allclose(plain, adapted, atol=1e-3)


def forward(model, pixels):
    output = model(pixels)
    return output.logits if hasattr(output, "logits") else output


def test_lora_flags_are_checked_before_anything_runs(tmp_path, capsys, monkeypatch):
    from vitzoo.cli import main as cli

    never = str(tmp_path / "never")
    assert cli(["pretrain", "--method", "mae", "--peft", "lora", "--output-dir", never]) == 2
    assert "vitzoo pretrain --method mae does not use --peft (used by vitzoo finetune)" in capsys.readouterr().err
    with pytest.raises(vitzoo.BadInputError, match="--lora-rank is used only with --peft lora"):
        methods.run("finetune", [*COMMON, "--lora-rank", "4", "--output-dir", never])
    with pytest.raises(vitzoo.BadInputError, match="--freeze-backbone .* choose one"):
        methods.run("finetune", [*LORA, "--freeze-backbone", "--output-dir", never])
    with pytest.raises(vitzoo.BadInputError, match="--lora-dropout must be in \\[0, 1\\)"):
        methods.run("finetune", [*LORA, "--lora-dropout", "1", "--output-dir", never])
    with pytest.raises(vitzoo.BadInputError, match="no layer of that name; its Linear layers are fc1, fc2, k_proj, o_proj, q_proj, v_proj"):
        methods.run("finetune", [*LORA, "--lora-targets", "query", "--output-dir", str(tmp_path / "a")])
    with pytest.raises(vitzoo.BadInputError, match="is the classification head"):
        methods.run("finetune", [*LORA, "--lora-targets", "classifier", "--output-dir", str(tmp_path / "b")])
    with pytest.raises(vitzoo.BadInputError, match="is a Conv2d, not a Linear"):
        methods.run("finetune", [*LORA, "--lora-targets", "projection", "--output-dir", str(tmp_path / "c")])
    with pytest.raises(vitzoo.BadInputError, match="has no classification head"):
        _adapt_a_model_without_a_head()
    assert not os.path.exists(never)
    monkeypatch.setitem(sys.modules, "peft", None)  # as if it were not installed
    with pytest.raises(vitzoo.BadInputError, match='needs the peft package.*pip install "vitzoo\\[peft\\]"'):
        methods.run("finetune", [*LORA, "--output-dir", never])


def _adapt_a_model_without_a_head():
    """`adapt` on a model without a classification head (an MAE pretraining model)."""
    from vitzoo.training.adapters import adapt
    from vitzoo.training.arguments import FinetuneArguments

    zoo = vitzoo.load("mae-base", task="pretraining", pretrained=False,
                      config_overrides="hidden_size=32,num_hidden_layers=1,num_attention_heads=2,intermediate_size=64")
    adapt(FinetuneArguments(peft="lora"), zoo, zoo.model)


def test_vitzoo_imports_and_refuses_peft_clearly_without_peft_installed(tmp_path):
    code = ("import sys; sys.modules['peft'] = None\n"
            "import vitzoo, vitzoo.training.fit, vitzoo.methods.finetune\n"
            "from vitzoo.cli import main\n"
            f"sys.exit(main(['finetune', '--peft', 'lora', '--output-dir', {str(tmp_path / 'never')!r}]))\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert done.returncode == 2, done.stderr[-2000:]
    assert 'needs the peft package, which is not installed: pip install "vitzoo[peft]"' in done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.slow
def test_lora_under_fsdp_and_ddp_trains_the_same_and_saves_a_loadable_merged_model(tmp_path):
    from peft import PeftModel
    from test_distributed import COMMON as LAUNCH
    from test_distributed import assert_close, checkpoint, launch
    from test_distributed import results as read_results
    from transformers import AutoModelForImageClassification

    argv = ["--model", "deit-tiny", *LAUNCH, "--max-train-samples", "128", "--max-eval-samples", "32", "--hflip", "0",
            "--epochs", "2", "--peft", "lora", "--lora-rank", "4", "--learning-rate", "1e-2", "--ema-decay", "0.9"]
    fsdp, ddp = str(tmp_path / "fsdp"), str(tmp_path / "ddp")
    stdout = launch("fsdp", "finetune", [*argv, "--output-dir", fsdp])
    assert "distributed: FSDP" in stdout and "peft: LoRA rank 4" in stdout
    run = read_results(fsdp)
    layout = run["distributed"]
    assert layout["strategy"] == "fsdp" and max(layout["parameters_per_process"]) < 0.6 * layout["parameters"]
    assert run["trainable_parameters"] == DEPTH * 2 * 4 * (HIDDEN + HIDDEN) + head()
    launch("multi_cpu", "finetune", [*argv, "--output-dir", ddp])
    steps = run["steps"]
    assert steps == 2 * 128 // 16 // 2
    assert_close(checkpoint(fsdp, steps), checkpoint(ddp, steps), 1e-4)
    assert_close(checkpoint(fsdp, steps, "optimizer"), checkpoint(ddp, steps, "optimizer"), 1e-4)
    # the frozen weights did not move under either strategy
    first, last = checkpoint(fsdp, steps // 2), checkpoint(fsdp, steps)
    assert all(torch.equal(first[key], last[key]) for key in first if ".lora_" not in key and ".modules_to_save." not in key)

    merged = AutoModelForImageClassification.from_pretrained(os.path.join(fsdp, "model")).eval()
    base = AutoModelForImageClassification.from_pretrained(os.path.join(fsdp, "model"))
    base.load_state_dict(base_weights(final_checkpoint(fsdp)), strict=False)
    adapted = PeftModel.from_pretrained(base, os.path.join(fsdp, "adapter")).eval()
    pixels = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        torch.testing.assert_close(adapted(pixels).logits, merged(pixels).logits, rtol=0, atol=1e-5)
