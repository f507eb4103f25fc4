"""Every flag of every recipe and method has an effect a test shows (or the method refuses it, see
test_engine.py): most by a probe -- the same tiny run with and without the flag, stopped after two
optimizer updates, must differ in what the loop holds then (weights, optimizer groups, plan, loaders,
the objective's state, the run folder) -- the rest by the named test that shows what they do."""

from __future__ import annotations

import ast
import dataclasses
import glob
import os

import pytest
import torch
from recipe_runs import ARCH, METHODS

from vitzoo.methods import recipes
from vitzoo.training.arguments import FinetuneArguments, load_data
from vitzoo.training.objective import Callback

HERE = os.path.dirname(os.path.abspath(__file__))


class Stop(Exception):
    """Raised by `Probe` once it has seen what it came for."""


class Probe(Callback):
    """Records the loop's state after `steps` optimizer updates (0: before the first), then stops the run."""

    def __init__(self, steps: int = 2) -> None:
        self.steps, self.seen = steps, None

    def on_train_begin(self, context):
        if self.steps == 0:
            self.record(context)

    def on_step(self, context):
        if context.state.step == self.steps:
            self.record(context)

    def record(self, context):
        self.seen = fingerprint(context)
        raise Stop


def fingerprint(context) -> dict:
    model = context.accelerator.unwrap_model(context.model)
    objective = context.objective
    tensors = {key: value for key, value in objective.state_dict().items() if isinstance(value, torch.Tensor)}
    plain = {key: value for key, value in vars(objective).items() if isinstance(value, (bool, int, float, str, tuple))}
    train, evaluation = context.train_loader, context.eval_loader
    run = context.run.path
    return {
        "weights": torch.cat([p.detach().float().flatten() for p in model.parameters()]),
        "objective_tensors": torch.cat([t.detach().float().flatten() for t in tensors.values()]) if tensors else None,
        "objective": plain,
        "optimizer": [(g["lr"], g["weight_decay"], g["betas"], g.get("lr_scale")) for g in context.optimizer.param_groups],
        "plan": dataclasses.astuple(context.plan),
        "loaders": (len(train), train.num_workers, train.total_batch_size,
                    (len(evaluation.dataset), evaluation.total_batch_size) if evaluation is not None else None),
        "precision": context.accelerator.mixed_precision,
        "model_class": type(context.model).__name__,
        "events": len(open(os.path.join(run, "metrics.jsonl")).read().splitlines()) if os.path.exists(os.path.join(run, "metrics.jsonl")) else 0,
        "checkpoints": sorted(os.listdir(os.path.join(run, "checkpoints"))) if os.path.isdir(os.path.join(run, "checkpoints")) else [],
    }


def differences(a: dict, b: dict) -> list[str]:
    out = []
    for key in a:
        x, y = a[key], b[key]
        if isinstance(x, torch.Tensor) and isinstance(y, torch.Tensor):
            same = x.shape == y.shape and torch.equal(x, y)
        else:
            same = x == y
        if not same:
            out.append(key)
    return out


def probe(tmp_path, method: str, extra: list[str], steps: int = 2) -> dict:
    recipe, argv = METHODS[method]
    watch = Probe(steps)
    folder = tmp_path / f"probe-{len(list(tmp_path.iterdir()))}"
    with pytest.raises(Stop):
        recipe.main([*argv, "--epochs", "1", *extra, "--output-dir", str(folder)], callbacks=[watch])
    return watch.seen


ALTERED = "hidden_size=16,num_hidden_layers=2,num_attention_heads=2,intermediate_size=32,patch_size=4"
AUGMENTATION = [("label_smoothing", ["--label-smoothing", "0.4"]), ("mixup", ["--mixup", "0.8"]),
                ("cutmix", ["--cutmix", "1.0"]), ("auto_augment", ["--auto-augment", "rand"]),
                ("hflip", ["--hflip", "0.5"]), ("random_resized_crop", ["--no-random-resized-crop"]),
                ("crop_scale", ["--crop-scale", "0.9"])]
# (method, field, the flag as given, flags both runs share, updates before the probe looks)
PROBES = [
    # the loop's and the data's flags: the same code (vitzoo.training.fit, load_data) for every method
    *[("finetune", field, flags, [], 2) for field, flags in [
        ("epochs", ["--epochs", "2"]), ("batch_size", ["--batch-size", "8"]), ("eval_batch_size", ["--eval-batch-size", "8"]),
        ("learning_rate", ["--learning-rate", "1e-2"]), ("min_learning_rate", ["--min-learning-rate", "1e-4"]),
        ("weight_decay", ["--weight-decay", "0.9"]), ("layer_decay", ["--layer-decay", "0.5"]),
        ("warmup_ratio", ["--warmup-ratio", "0.5"]), ("gradient_accumulation_steps", ["--gradient-accumulation-steps", "2"]),
        ("max_grad_norm", ["--max-grad-norm", "1e-3"]),
        ("seed", ["--seed", "1"]), ("log_steps", ["--log-steps", "2"]), ("eval_steps", ["--eval-steps", "1"]),
        ("checkpoint_steps", ["--checkpoint-steps", "1"]), ("dataset", ["--dataset", "synthetic:64:16"]),
        ("max_train_samples", ["--max-train-samples", "48"]), ("max_eval_samples", ["--max-eval-samples", "16"]),
        ("num_workers", ["--num-workers", "1"]), ("val_fraction", ["--val-fraction", "0.5"]),
        ("in_memory", ["--in-memory", "off"]),
        ("model", ["--model", "beit-base"]), ("backend", ["--backend", "timm"]),
        ("config_overrides", ["--config-overrides", ALTERED]), ("image_size", ["--image-size", "8"]),
        ("freeze_backbone", ["--freeze-backbone"]),
    ]],
    ("finetune", "peft", ["--peft", "lora"], [], 2),
    *[("finetune", field, flags, ["--peft", "lora"], 2) for field, flags in [
        ("lora_rank", ["--lora-rank", "2"]), ("lora_alpha", ["--lora-alpha", "64"]),
        ("lora_dropout", ["--lora-dropout", "0.5"]), ("lora_targets", ["--lora-targets", "q_proj,k_proj,v_proj"]),
    ]],
    ("finetune", "compile", ["--compile"], [], 0),
    ("finetune", "mixed_precision", ["--mixed-precision", "bf16"], ["--mixed-precision", "no"], 2),
    *[("finetune", field, flags, [], 2) for field, flags in AUGMENTATION],
    *[("deit", field, flags, [], 2) for field, flags in AUGMENTATION],
    ("deit", "teacher", ["--teacher", "resnet10t"], [], 2),
    ("deit", "teacher_backend", ["--teacher-backend", "timm"], ["--teacher", "deit-tiny"], 2),
    ("deit", "distill_type", ["--distill-type", "soft"], [], 2),
    ("deit", "alpha", ["--alpha", "0.9"], [], 2),
    ("deit", "tau", ["--tau", "3"], ["--distill-type", "soft"], 2),
    ("deit", "label_map", ["--label-map", "0=1,1=0,2=2,3=3,4=4,5=5,6=6,7=7,8=8,9=9"], [], 2),
    *[("dino", field, flags, base, 2) for field, flags, base in [
        ("hflip", ["--hflip", "0.5"], []), ("out_dim", ["--out-dim", "16"], []),
        ("head_hidden_dim", ["--head-hidden-dim", "16"], []), ("head_bottleneck_dim", ["--head-bottleneck-dim", "8"], []),
        ("local_crops", ["--local-crops", "1"], []), ("global_crop_scale", ["--global-crop-scale", "0.8,1.0"], []),
        ("local_crop_scale", ["--local-crop-scale", "0.3,0.5"], []), ("local_crop_size", ["--local-crop-size", "4"], []),
        ("momentum_teacher", ["--momentum-teacher", "0.5"], []), ("teacher_temp", ["--teacher-temp", "0.1"], []),
        ("warmup_teacher_temp", ["--warmup-teacher-temp", "0.01"], ["--warmup-teacher-temp-epochs", "1"]),
        ("warmup_teacher_temp_epochs", ["--warmup-teacher-temp-epochs", "1"], ["--warmup-teacher-temp", "0.01"]),
        ("student_temp", ["--student-temp", "0.3"], []), ("center_momentum", ["--center-momentum", "0.1"], []),
        ("weight_decay_end", ["--weight-decay-end", "0.9"], []), ("freeze_last_layer", ["--freeze-last-layer", "0"], []),
        ("head_batch_norm", ["--head-batch-norm", "false"], []), ("norm_last_layer", ["--no-norm-last-layer"], []),
    ]],
    *[("mae", field, flags, base, 2) for field, flags, base in [
        ("mask_ratio", ["--mask-ratio", "0.5"], []), ("norm_pix_loss", ["--no-norm-pix-loss"], []),
        ("decoder_hidden_size", ["--decoder-hidden-size", "16"], []), ("decoder_depth", ["--decoder-depth", "2"], []),
        ("blr", ["--blr", "1e-2"], []), ("learning_rate", ["--learning-rate", "1e-2"], []),
        ("crop_scale", ["--crop-scale", "0.9"], []), ("hflip", ["--hflip", "0.5"], []),
    ]],
    *[("beit", field, flags, [], 2) for field, flags in [
        ("mask_ratio", ["--mask-ratio", "0.6"]), ("min_block_patches", ["--min-block-patches", "2"]),
        ("tokenizer_vocab_size", ["--tokenizer-vocab-size", "8"]), ("tokenizer_images", ["--tokenizer-images", "16"]),
        ("tokenizer_iterations", ["--tokenizer-iterations", "1"]), ("tokenizer_normalisation", ["--tokenizer-normalisation", "patch"]),
    ]],
    ("simmim", "mask_ratio", ["--mask-ratio", "0.3"], [], 2),
    ("simmim", "mask_patch_size", ["--mask-patch-size", "4"], [], 2),
]
# flags whose effect shows later than two updates, or elsewhere: the test that shows it
SHOWN_BY = {
    "time_budget": "test_budget.py::test_the_budget_sets_the_steps_and_the_schedule_ends_on_them",
    "stop_on_collapse": "test_watch.py::test_stop_on_collapse_ends_a_collapsing_dino_run_and_keeps_the_best_teacher",
    "output_dir": "test_finetune.py::test_run_folder_contract",
    "keep_checkpoints": "test_finetune.py::test_keeps_last_checkpoints_only",
    "resume": "test_finetune.py::test_resume_matches_uninterrupted_run",
    "overwrite": "test_faults.py::test_a_folder_with_another_run_is_refused_then_resumed_or_overwritten",
    "report_to": "test_engine.py::test_report_to_tensorboard_writes_the_logged_scalars",
    "channels_last": "test_engine.py::test_channels_last_reaches_the_patch_embedding_and_the_inputs",
    "ema_decay": "test_engine.py::test_ema_decay_saves_the_average_and_leaves_the_training_weights_alone",
    "cpu": "test_flags.py::test_cpu_keeps_training_on_the_cpu",
    "push_to_hub": "test_distill.py::test_push_to_hub_checked_first_and_run_pushed_at_the_end",
    "hub_model_id": "test_distill.py::test_push_to_hub_checked_first_and_run_pushed_at_the_end",
    "hub_revision": "test_distill.py::test_push_to_hub_checked_first_and_run_pushed_at_the_end",
    "hub_private": "test_pretrain.py::test_push_to_hub_checked_first_and_run_pushed_at_the_end",
    "scratch": "test_flags.py::test_scratch_and_revision_choose_the_weights",
    "revision": "test_flags.py::test_scratch_and_revision_choose_the_weights",
    "image_column": "test_flags.py::test_column_and_split_flags_pick_the_data",
    "label_column": "test_flags.py::test_column_and_split_flags_pick_the_data",
    "train_split": "test_flags.py::test_column_and_split_flags_pick_the_data",
    "eval_split": "test_flags.py::test_column_and_split_flags_pick_the_data",
    "method": "test_engine.py::test_help_names_the_command_and_lists_exactly_the_methods_flags",
    "teacher_scratch": "test_distill.py::test_teacher_with_other_classes_fails_before_training",
    "cache_teacher_logits": "test_distill.py::test_cached_teacher_logits_give_the_live_loss",
    "num_reconstructions": "test_engine.py::test_resume_keeps_the_best_evaluation_whole",
    "tokenizer": "test_flags.py::test_beit_trains_on_a_given_tokenizer",
}
# the recipes' shared groups are one code path: a flag probed in one method stands for all that share it
PROBED = {field for _, field, _, _, _ in PROBES}


@pytest.mark.parametrize(("method", "field", "flags", "base", "steps"), PROBES,
                         ids=[f"{method}-{field}" for method, field, *_ in PROBES])
def test_flag_changes_the_run(tmp_path, method, field, flags, base, steps):
    before = probe(tmp_path, method, base, steps)
    after = probe(tmp_path, method, [*base, *flags], steps)
    assert differences(before, after), f"{' '.join(flags)} changed nothing in {method}"


def test_every_flag_is_probed_or_shown_by_a_named_test():
    tests = {}
    for path in glob.glob(os.path.join(HERE, "test_*.py")):
        tree = ast.parse(open(path).read())
        tests[os.path.basename(path)] = {node.name for node in tree.body if isinstance(node, ast.FunctionDef)}
    for place in SHOWN_BY.values():
        module, name = place.split("::")
        assert name in tests[module], place
    for recipe, classes in recipes().items():
        for method, cls in classes.items():
            missing = {f.name for f in dataclasses.fields(cls)} - PROBED - set(SHOWN_BY)
            assert not missing, f"{recipe} {method}: no test shows what {sorted(missing)} do"


def test_cpu_keeps_training_on_the_cpu(monkeypatch):
    """--cpu: the Accelerator is built for the CPU even where a GPU exists (the GPU is only pretended
    here, so the Accelerator itself is not built)."""
    from vitzoo.training import engine

    built = []
    monkeypatch.setattr(engine, "Accelerator", lambda **kwargs: built.append(kwargs) or kwargs)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda: True)
    for cpu in (True, False):
        engine.make_accelerator(FinetuneArguments(cpu=cpu, output_dir="unused"))
    assert [kwargs["cpu"] for kwargs in built] == [True, False]


def test_scratch_and_revision_choose_the_weights(tiny_hub, tmp_path):
    """Without --scratch the run starts from the cached weights, with it from a random init; --revision
    asks the Hub cache for that revision of the weights."""
    import vitzoo
    from vitzoo import methods

    pretrained = vitzoo.load("deit-tiny", task="classification", num_labels=10).model.state_dict()

    class Weights(Callback):
        def on_train_begin(self, context):
            self.state = context.accelerator.unwrap_model(context.model).state_dict()
            raise Stop

    seen = {}
    for scratch in (False, True):
        watch = Weights()
        with pytest.raises(Stop):
            methods.run("finetune", ["--model", "deit-tiny", "--max-train-samples", "32", "--max-eval-samples", "16",
                           "--batch-size", "16", "--num-workers", "0", "--epochs", "1", *(["--scratch"] if scratch else []),
                           "--output-dir", str(tmp_path / str(scratch))], callbacks=[watch])
        seen[scratch] = watch.state
    body = [key for key in pretrained if not key.startswith("classifier")]
    assert body and all(torch.equal(seen[False][key], pretrained[key]) for key in body)  # the cached weights
    assert not all(torch.equal(seen[True][key], pretrained[key]) for key in body)  # a random init
    with pytest.raises(vitzoo.WeightsNotFoundError, match="revision 'no-such-revision'"):
        methods.run("finetune", ["--model", "deit-tiny", "--revision", "no-such-revision", "--output-dir", str(tmp_path / "r")])


def test_column_and_split_flags_pick_the_data():
    """--image-column, --label-column, --train-split and --eval-split choose the columns and splits of a
    Hub-style dataset (as `datasets` gives it)."""
    import datasets
    import numpy as np
    from PIL import Image

    def split(count):
        grey = [Image.fromarray(np.full((8, 8, 3), 10 * i, np.uint8)) for i in range(count)]
        white = [Image.fromarray(np.full((8, 8, 3), 250, np.uint8)) for _ in range(count)]
        return datasets.Dataset.from_dict({"photo": grey, "sketch": white, "kind": [str(i % 2) for i in range(count)],
                                           "other": [f"c{i % 3}" for i in range(count)]})

    data = datasets.DatasetDict({"fit": split(12), "check": split(6)})
    args = FinetuneArguments(dataset=data, image_column="photo", label_column="kind", train_split="fit", eval_split="check")
    splits = load_data(args)
    assert (len(splits.train), len(splits.eval), splits.num_classes) == (12, 6, 2)
    assert splits.train[3][0].float().mean() == 30  # the photo column, not the white sketches
    other = load_data(dataclasses.replace(args, image_column="sketch", label_column="other"))
    assert other.num_classes == 3 and other.train[3][0].float().mean() == 250


def test_beit_trains_on_a_given_tokenizer(tmp_path):
    """--tokenizer DIR: BEiT's targets come from that tokenizer, and none is fitted into the run folder."""
    from vitzoo.objectives.tokenizer import KMeansTokenizer

    given = KMeansTokenizer(torch.randn(16, 4 * 4 * 3), 4)
    given.save(str(tmp_path / "given"))
    recipe, argv = METHODS["beit"]
    watch = Seen()
    folder = tmp_path / "run"
    recipe.main([*argv, "--tokenizer", str(tmp_path / "given"), "--config-overrides", ARCH + ",vocab_size=16",
                 "--epochs", "1", "--output-dir", str(folder)], callbacks=[watch])
    assert torch.equal(watch.tokenizer.codebook, given.codebook)
    assert not (folder / "tokenizer").exists()


class Seen(Callback):
    def on_train_begin(self, context):
        self.tokenizer = context.objective.tokenizer
