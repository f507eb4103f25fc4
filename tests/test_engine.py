"""The one training loop under every recipe (`vitzoo.training.fit`): resume keeps the best evaluation
whole, gradient accumulation equals a larger batch, and the loop's flags show their effect; the
recipes' arguments refuse what a method does not use."""

from __future__ import annotations

import json
import os
import re

import pytest
import torch
import transformers
from recipe_runs import COMMON, METHODS
from safetensors.torch import load_file

from vitzoo import methods
from vitzoo.methods import build_parser, recipes
from vitzoo.training.objective import Callback

CLASSIFIER_KEYS = {"accuracy", "top5", "macro_f1", "samples", "step", "epoch"}
EVAL_KEYS = {"finetune": CLASSIFIER_KEYS, "deit": CLASSIFIER_KEYS,
             "dino": {"knn_accuracy", "knn_accuracy_at_start", "k", "step", "epoch"},
             "mae": {"loss", "step", "epoch"}, "beit": {"loss", "masked_token_accuracy", "step", "epoch"},
             "simmim": {"loss", "step", "epoch"}}


def read_events(folder: str) -> list[dict]:
    with open(os.path.join(folder, "metrics.jsonl")) as handle:
        return [json.loads(line) for line in handle]


@pytest.mark.parametrize("method", list(METHODS))
def test_resume_keeps_the_best_evaluation_whole(tiny_hub, tmp_path, method):
    """Resuming a finished run trains nothing and gives the same results; resuming one whose
    evaluation never improves again (learning rate 0 from the checkpoint on) keeps the first
    evaluation with every metric, its step and epoch -- for every recipe and method."""
    recipe, argv = METHODS[method]
    folder = str(tmp_path / method)
    argv = [*argv, "--min-learning-rate", "0", "--output-dir", folder]
    first = recipe.main([*argv, "--epochs", "1"])
    assert set(first["eval"]) == EVAL_KEYS[method]
    assert first["eval"]["step"] == first["steps"] == 4 and first["eval"]["epoch"] == 1

    finished = recipe.main([*argv, "--epochs", "1", "--resume", "auto"])
    assert finished["eval"] == first["eval"] and finished["steps"] == 4
    assert finished["train_images_per_second"] > 0.5 * first["train_images_per_second"]  # the run's, not 0
    with open(os.path.join(folder, "results.json")) as handle:
        assert json.load(handle)["eval"] == first["eval"]

    # the optimizer resumes at the schedule's end (0) and the new schedule peaks at 0: the weights stay put
    resumed = recipe.main([*argv, "--epochs", "2", "--learning-rate", "0", "--resume", "auto"])
    assert resumed["steps"] == 8 and set(resumed["eval"]) == EVAL_KEYS[method]
    if method in ("finetune", "deit"):
        assert resumed["eval"] == first["eval"]  # no improvement: the first evaluation stays the best
    else:
        assert resumed["eval"]["step"] == 8 and resumed["eval"]["epoch"] == 2  # the newest evaluation
    if method in ("mae", "beit", "simmim"):  # --num-reconstructions 0: no figure
        assert not os.path.exists(os.path.join(folder, "reconstructions.png"))


def test_gradient_accumulation_equals_the_larger_batch(tmp_path):
    """Batch 16 with 2 accumulation steps = batch 32: the same weights (fp32), half the optimizer
    updates of its batches, the same logged steps and learning rates."""
    common = ["--model", "deit-tiny", *COMMON, "--max-train-samples", "160", "--mixed-precision", "no", "--epochs", "2",
              "--warmup-ratio", "0.2", "--max-grad-norm", "0.5"]
    small = str(tmp_path / "accumulated")
    large = str(tmp_path / "large")
    accumulated = methods.run("finetune", [*common, "--batch-size", "16", "--gradient-accumulation-steps", "2", "--output-dir", small])
    plain = methods.run("finetune", [*common, "--batch-size", "32", "--output-dir", large])
    assert accumulated["steps"] == plain["steps"] == 2 * 160 // 32  # 20 batches of 16 make 10 updates
    logged = [[(e["step"], e["lr"]) for e in read_events(folder) if "loss" in e] for folder in (small, large)]
    assert logged[0] == logged[1] and len(logged[0]) == 10
    expected = load_file(os.path.join(large, "model", "model.safetensors"))
    got = load_file(os.path.join(small, "model", "model.safetensors"))
    for key in expected:
        torch.testing.assert_close(got[key], expected[key], rtol=0, atol=1e-5, msg=key)
    assert not torch.equal(got["classifier.weight"], torch.zeros_like(got["classifier.weight"]))


def test_eval_steps_evaluate_mid_epoch_at_fractional_epochs(tmp_path):
    folder = str(tmp_path / "run")
    methods.run("finetune", ["--model", "deit-tiny", *COMMON, "--max-train-samples", "160", "--epochs", "2", "--eval-steps", "3",
                   "--output-dir", folder])
    evals = [(e["step"], e["epoch"]) for e in read_events(folder) if e.get("eval")]
    # 10 updates per epoch: every 3rd update, plus each epoch's end
    assert evals == [(3, 0.3), (6, 0.6), (9, 0.9), (10, 1), (12, 1.2), (15, 1.5), (18, 1.8), (20, 2)]


def test_report_to_tensorboard_writes_the_logged_scalars(tmp_path):
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    folder = str(tmp_path / "run")
    methods.run("finetune", ["--model", "deit-tiny", *COMMON, "--epochs", "1", "--report-to", "tensorboard", "--output-dir", folder])
    files = [os.path.join(root, name) for root, _, names in os.walk(os.path.join(folder, "logs"))
             for name in names if name.startswith("events.out.tfevents")]
    assert files
    events = EventAccumulator(os.path.dirname(files[0]))
    events.Reload()
    logged = [e for e in read_events(folder) if "loss" in e]
    losses = [event.value for event in events.Scalars("loss")]
    assert losses == pytest.approx([e["loss"] for e in logged], rel=1e-6)
    assert "accuracy" in events.Tags()["scalars"]


class Watch(Callback):
    """Keeps what a test needs to see of the loop, at the first update."""

    def __init__(self, look):
        self.look, self.seen = look, None

    def on_step(self, context):
        if self.seen is None:
            self.seen = self.look(context)


def test_channels_last_reaches_the_patch_embedding_and_the_inputs(tmp_path):
    def look(context):
        model = context.accelerator.unwrap_model(context.model)
        weight = model.vit.embeddings.patch_embeddings.projection.weight
        pixels = context.pixels(torch.zeros(2, 3, 16, 16, dtype=torch.uint8))
        return weight.is_contiguous(memory_format=torch.channels_last), pixels.is_contiguous(memory_format=torch.channels_last)

    seen = {}
    for flag in ([], ["--channels-last"]):
        watch = Watch(look)
        methods.run("finetune", ["--model", "deit-tiny", *COMMON, "--epochs", "1", *flag, "--output-dir", str(tmp_path / str(len(flag)))],
                      callbacks=[watch])
        seen[bool(flag)] = watch.seen
    assert seen == {False: (False, False), True: (True, True)}


def test_layer_decay_scales_each_blocks_learning_rate_in_pretraining(tmp_path):
    """--layer-decay 0.5 over 2 blocks: embeddings x 0.125, blocks x 0.25 and x 0.5, the rest x 1."""
    def look(context):
        return sorted({round(group["lr"] / group["lr_scale"], 12) for group in context.optimizer.param_groups}), sorted(
            {group["lr_scale"] for group in context.optimizer.param_groups})

    recipe, argv = METHODS["mae"]
    seen = {}
    for flag in ([], ["--layer-decay", "0.5"]):
        watch = Watch(look)
        recipe.main([*argv, "--epochs", "1", *flag, "--output-dir", str(tmp_path / str(len(flag)))], callbacks=[watch])
        seen[bool(flag)] = watch.seen
    assert seen[False][1] == [1.0]
    assert seen[True][1] == [0.125, 0.25, 0.5, 1.0]
    assert len(seen[True][0]) == 1 and seen[True][0] == seen[False][0]  # one base rate, scaled per group


def test_ema_decay_saves_the_average_and_leaves_the_training_weights_alone(tmp_path):
    """--ema-decay keeps timm's EMA of the weights: model/ holds the EMA of the best evaluation (its
    copy in that checkpoint), and saving it never overwrites the weights being trained."""
    folder = str(tmp_path / "ema")
    differs = []

    def saved_weights():  # through transformers, which names the weights as the live model does
        return transformers.AutoModelForImageClassification.from_pretrained(os.path.join(folder, "model")).state_dict()

    class Check(Callback):
        def on_evaluate(self, context, metrics):
            if context.state.best["step"] == context.state.step:  # model/ was just written
                saved = saved_weights()
                live = context.accelerator.unwrap_model(context.model).state_dict()
                assert saved.keys() == live.keys()
                differs.append(any(not torch.equal(saved[key], live[key]) for key in saved))

    results = methods.run("finetune", ["--model", "deit-tiny", *COMMON, "--epochs", "2", "--ema-decay", "0.5",
                             "--learning-rate", "1e-2", "--output-dir", folder], callbacks=[Check()])
    assert differs and all(differs)
    best = results["eval"]["step"]
    tensors = load_file(os.path.join(folder, "checkpoints", f"step-{best:08d}", "extra_state.safetensors"))
    ema = {key[len("ema."):]: value for key, value in tensors.items() if key.startswith("ema.")}
    saved = saved_weights()
    assert saved.keys() == ema.keys() and all(torch.equal(saved[key], ema[key]) for key in saved)


# --------------------------------------------------------------------------- arguments
def all_methods():
    return [(recipe, method) for recipe, classes in recipes().items() for method in classes]


def flags_of(recipe, method):
    parser = build_parser(recipe, method)
    return {option for action in parser._actions for option in action.option_strings if option.startswith("--")}


@pytest.mark.parametrize(("recipe", "method"), all_methods())
def test_a_flag_of_another_method_is_refused_by_name(tmp_path, recipe, method, capsys):
    from vitzoo.cli import main as cli

    own = flags_of(recipe, method)
    foreign = sorted({flag for other in all_methods() for flag in flags_of(*other)} - own)
    assert foreign
    head = [recipe] + (["--method", method] if method else [])
    for flag in foreign[:: max(1, len(foreign) // 6)]:
        folder = tmp_path / "never"
        assert cli([*head, flag, "1", "--output-dir", str(folder)]) == 2
        error = capsys.readouterr().err
        name = f"vitzoo {recipe}" + (f" --method {method}" if method else "")
        assert f"{name} does not use {flag}" in error and "Traceback" not in error
        assert not folder.exists()
    # a config file is held to the same rule
    config = tmp_path / "config.yaml"
    config.write_text(f"{foreign[0].lstrip('-')}: 1\n")
    assert cli([*head, "--config", str(config), "--output-dir", str(tmp_path / "never")]) == 2
    assert f"does not use {foreign[0].replace('_', '-')}" in capsys.readouterr().err


@pytest.mark.parametrize(("recipe", "method"), all_methods())
def test_help_names_the_command_and_lists_exactly_the_methods_flags(recipe, method, capsys):
    from vitzoo.cli import main as cli

    with pytest.raises(SystemExit):
        cli([recipe] + (["--method", method] if method else []) + ["--help"])
    text = capsys.readouterr().out
    assert text.startswith(f"usage: vitzoo {recipe}")
    invocations = [line.strip().split("  ")[0] for line in text.splitlines() if line.startswith("  -")]
    listed = {flag for invocation in invocations for flag in re.findall(r"--[\w-]+", invocation)}
    dashed = {flag for flag in flags_of(recipe, method) if "_" not in flag}
    assert dashed <= listed
    other_only = {flag for other in all_methods() for flag in flags_of(*other) if "_" not in flag} - dashed
    assert not (listed & other_only)
    # the examples of the recipe's docstring print line by line, not reflowed into one paragraph
    assert "\n    python recipes/" in text


def test_config_file_reruns_a_run_and_picks_its_method(tmp_path, tiny_hub):
    recipe, argv = METHODS["dino"]
    first = str(tmp_path / "first")
    recipe.main([*argv, "--epochs", "1", "--output-dir", first])
    again = str(tmp_path / "again")
    results = methods.run("distill", ["--config", os.path.join(first, "args.json"), "--output-dir", again])
    assert results["method"] == "dino" and results["steps"] == 4
    assert json.load(open(os.path.join(again, "args.json"))) == {
        **json.load(open(os.path.join(first, "args.json"))), "output_dir": again}


def test_recipe_files_have_no_loop_of_their_own():
    root = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "recipes")
    for name in ("finetune.py", "distill.py", "pretrain.py"):
        text = open(os.path.join(root, name)).read()
        assert len(text.splitlines()) <= 150, name
        assert "for epoch" not in text and "backward(" not in text and "save_checkpoint" not in text, name


def test_resume_without_the_state_a_flag_needs_is_a_clear_error(tmp_path):
    """A checkpoint saved without --ema-decay cannot resume with it: the missing EMA is named, and
    nothing is trained."""
    import vitzoo

    folder = str(tmp_path / "run")
    argv = ["--model", "deit-tiny", *COMMON, "--epochs", "1", "--output-dir", folder]
    methods.run("finetune", argv)
    with pytest.raises(vitzoo.BadInputError, match="has no saved ema.*--ema-decay"):
        methods.run("finetune", [*argv, "--epochs", "2", "--ema-decay", "0.9", "--resume", "auto"])
    assert json.load(open(os.path.join(folder, "results.json")))["steps"] == 4
