"""Small-data defaults: with --scratch on a small dataset each recipe takes its row of the rule, never over
a flag the user gave or what the data source knows, and says so at start-up and in results.json."""

from __future__ import annotations

import json
from types import SimpleNamespace

import pytest

from vitzoo.compare import CompareConfig
from vitzoo.errors import BadInputError
from vitzoo.methods import parse
from vitzoo.training import smalldata
from vitzoo.training.arguments import FinetuneArguments


def _splits(images: int, augmentation: dict | None = None) -> SimpleNamespace:
    return SimpleNamespace(train=range(images), augmentation=augmentation or {})


def test_scratch_on_small_data_takes_the_rule_and_every_flag_given_wins():
    args = parse("distill", ["--method", "dino", "--scratch", "--image-size", "32", "--out-dim", "128"])
    chosen = {d.field: d.value for d in smalldata.apply(args, "distill", _splits(1438), method="dino")}
    assert "out_dim" not in chosen and args.out_dim == 128  # given: kept
    assert chosen["head_batch_norm"] is True and args.head_batch_norm is True
    assert args.batch_size == chosen["batch_size"] == 32 and args.learning_rate == 2.5e-4
    line = smalldata.describe(smalldata.choose(parse("distill", ["--method", "dino", "--scratch"]), "distill", "dino",
                                               1438, 32), 1438, 32)
    assert line.startswith("small-data defaults (--scratch, 1,438 images at 32 px") and "--head-batch-norm:" in line


def test_no_rule_without_scratch_or_on_large_data():
    pretrained = parse("distill", ["--method", "dino"])
    assert smalldata.apply(pretrained, "distill", _splits(1438), method="dino") == [] and pretrained.out_dim == 65536
    large = parse("distill", ["--method", "dino", "--scratch"])
    assert smalldata.apply(large, "distill", _splits(smalldata.SMALL_DATA_IMAGES + 1), method="dino") == []
    assert smalldata.apply(parse("distill", ["--method", "deit", "--scratch"]), "distill", _splits(10), method="deit") == []


def test_the_source_and_a_tokenizer_keep_what_they_know():
    args = parse("finetune", ["--scratch"])
    source = {"learning_rate": 3e-4}  # a source that knew its learning rate would keep it
    chosen = smalldata.choose(args, "finetune", None, 1438, 32, source)
    assert "learning_rate" not in {d.field for d in chosen}
    beit = parse("pretrain", ["--method", "beit", "--scratch", "--image-size", "32"])
    assert {d.field: d.value for d in smalldata.choose(beit, "pretrain", "beit", 1438, 32)}["tokenizer_vocab_size"] == 32
    with_tokenizer = parse("pretrain", ["--method", "beit", "--scratch", "--image-size", "32", "--tokenizer", "tok"])
    assert "tokenizer_vocab_size" not in {d.field for d in smalldata.choose(with_tokenizer, "pretrain", "beit", 1438, 32)}
    assert "tokenizer_vocab_size" not in {d.field for d in smalldata.choose(beit, "pretrain", "beit", 1438, 224)}


def test_arguments_built_in_code_count_what_differs_from_the_defaults_as_given():
    args = FinetuneArguments(scratch=True, learning_rate=2e-3)
    chosen = {d.field for d in smalldata.apply(args, "finetune", _splits(500))}
    assert "learning_rate" not in chosen and args.learning_rate == 2e-3


def test_a_pretraining_run_prints_and_records_its_small_data_defaults(tmp_path, capsys):
    from recipe_runs import METHODS

    recipe, argv = METHODS["mae"]
    results = recipe.main([*argv, "--epochs", "1", "--max-train-samples", "64", "--output-dir", str(tmp_path / "run")])
    printed = capsys.readouterr().out
    assert "small-data defaults (--scratch, 64 images" in printed
    recorded = results["small_data_defaults"]
    assert recorded and all(f"--{field.replace('_', '-')}" in printed for field in recorded)
    with open(tmp_path / "run" / "args.json") as handle:
        saved = json.load(handle)
    assert all(saved[field] == value for field, value in recorded.items())  # args.json reruns the same run


def test_compare_splits_its_budget_among_the_trainings():
    config = CompareConfig(models="deit-tiny,dino-vits16,beit-base", scratch=True, seeds=2, time_budget="3m").resolved()
    from vitzoo.compare.config import BUDGET_RESERVE
    from vitzoo.training.budget import UNLIMITED_EPOCHS

    assert config.training_budget(3) == f"{180 * (1 - BUDGET_RESERVE) / 6:.1f}" == "25.5"
    assert config.epochs == UNLIMITED_EPOCHS  # without --epochs the budget alone ends each training
    assert CompareConfig(scratch=True, epochs=4, time_budget="3m").resolved().epochs == 4
    assert CompareConfig(scratch=True).resolved().training_budget(3) is None
    with pytest.raises(BadInputError, match="--time-budget"):
        CompareConfig(protocol="knn", time_budget="3m").resolved()
    with pytest.raises(BadInputError, match="--time-budget"):
        CompareConfig(scratch=True, time_budget="soon").resolved()


def test_dino_takes_patches_that_leave_its_local_crops_something_to_see():
    assert smalldata.patch_for(32, 16) == 8  # 4 patches of 16 px -> 16 of 8 px
    assert smalldata.patch_for(64, 16) is None and smalldata.patch_for(224, 16) is None  # 16 and 196 patches
    assert smalldata.patch_for(28, 14) == 7 and smalldata.patch_for(30, 16) == 6  # divisors of the size: 16 and 25
    chosen = {d.field: d.value for d in smalldata.choose(parse("distill", ["--method", "dino", "--scratch"]),
                                                         "distill", "dino", 1438, 32, patch=16)}
    assert chosen["config_overrides"] == f"{smalldata.SMALL_DINO_SHAPE},patch_size=8"
    many = {d.field: d.value for d in smalldata.choose(parse("distill", ["--method", "dino", "--scratch"]),
                                                       "distill", "dino", smalldata.SMALL_DINO_IMAGES, 32, patch=16)}
    assert many["config_overrides"] == "patch_size=8"  # enough images for the registry's width and depth
    shaped = parse("distill", ["--method", "dino", "--scratch", "--config-overrides", "hidden_size=64"])
    assert "config_overrides" not in {d.field for d in smalldata.choose(shaped, "distill", "dino", 1438, 32, patch=16)}
