"""Bad arguments and bad tables: each is one line on the CLI (exit code 2, no traceback), refused before any
data or model loads, with nothing written in --output-dir; a token typed where a name belongs is neither
echoed nor sent to the Hub (docs/reliability.md)."""

from __future__ import annotations

import dataclasses
import glob
import math
import os
import shutil

import pytest
from recipe_runs import COMMON, METHODS
from test_faults import one_line_error

import vitzoo
from vitzoo.data import load_splits
from vitzoo.data.sources import check_source
from vitzoo.errors import BadInputError
from vitzoo.methods import parse, recipes
from vitzoo.training import arguments

RUN = ["finetune", "--model", "deit-tiny", *COMMON]
TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # the shape of a real access token: hf_ and 34 characters


def refused(capsys, tmp_path, argv: list[str]) -> str:
    """The one line `vitzoo ...argv` answers with, having written nothing: its --output-dir never made."""
    folder = tmp_path / "run"
    err = one_line_error(capsys, [*argv, "--output-dir", str(folder)])
    assert err.startswith(f"vitzoo {argv[0]}: error:"), err
    assert not folder.exists()
    return err


# --------------------------------------------------------------------------- numbers
@pytest.mark.parametrize("seed", ["-1", str(2**40)])
def test_a_seed_numpy_cannot_take(capsys, tmp_path, seed):
    assert f"--seed must be in [0, {2**32 - 1}], got {seed}" in refused(capsys, tmp_path, [*RUN, "--seed", seed])


@pytest.mark.parametrize(("flags", "named"), [
    (["--time-budget", "0", "--epochs", "2"], "--time-budget '0' must be longer than zero"),
    (["--image-size", "7"], "--image-size 7 is not a whole number of deit-tiny's 4-px patches; use 4 or 8"),
    (["--image-size", str(2**40)], "--image-size must be in [1, 8192]"),  # was int64 overflow in transformers
    (["--learning-rate", "inf"], "--learning-rate must be a finite number, got inf"),  # was accepted
    (["--cutmix", "inf"], "--cutmix must be a finite number"),  # was a traceback from timm's Mixup
    (["--epochs", str(2**40)], "--epochs must be in [1, 100000]"),
    (["--num-workers", str(2**40)], "--num-workers must be in [0, 1024]"),  # was a hang spawning workers
    (["--config-overrides", "hidden_size=64"], "--config-overrides changes the architecture"),  # needs --scratch
])
def test_a_cheap_check_comes_before_the_data_and_the_model(capsys, tmp_path, flags, named):
    argv = RUN if "--config-overrides" not in flags else ["finetune", "--model", "deit-tiny", "--image-size", "16"]
    assert named in refused(capsys, tmp_path, [*argv, *flags])


@pytest.mark.parametrize(("method", "flags", "named"), [
    ("dino", ["--out-dim", str(2**40)], "--out-dim must be in [1, 1048576]"),  # was an allocation traceback
    ("dino", ["--local-crops", "1000"], "--local-crops must be in [0, 64]"),
    ("dino", ["--global-crop-scale", "0.5,nan"], "--global-crop-scale must satisfy 0 < min <= max <= 1"),
    ("mae", ["--decoder-depth", str(2**40)], "--decoder-depth must be in [1, 256]"),  # was a hang building layers
    ("beit", ["--tokenizer-vocab-size", "0"], "--tokenizer-vocab-size must be in [2, 8192]"),
    ("beit", ["--tokenizer-iterations", str(2**40)], "--tokenizer-iterations must be in [1, 10000]"),  # was a hang
])
def test_method_flags_that_only_exhaust_memory_or_time(capsys, tmp_path, method, flags, named):
    module, argv = METHODS[method]
    assert named in refused(capsys, tmp_path, [module.name, *argv, *flags])


def numeric_fields():
    for recipe, classes in recipes().items():
        for method, cls in classes.items():
            for field in dataclasses.fields(cls):
                kind = arguments.get_type_hints(cls)[field.name]
                if {int, float} & {kind, *arguments.get_args(kind)}:
                    yield pytest.param(recipe, method, field.name, id=f"{method or recipe}-{field.name}")


@pytest.mark.parametrize(("recipe", "method", "name"), list(numeric_fields()))
def test_every_numeric_flag_refuses_negative_and_non_finite_values(recipe, method, name):
    args = parse(recipe, ["--method", method] if method else [])
    for value in (-1, math.nan, math.inf):
        with pytest.raises(BadInputError, match=f"^--{name.replace('_', '-')} must be"):
            arguments.check_arguments(dataclasses.replace(args, **{name: value}))


# --------------------------------------------------------------------------- --config files
@pytest.mark.parametrize(("name", "text", "where"), [
    ("run.yaml", "epochs: 2\nlearning_rate 1e-3\nbatch_size: 8\n", "line 2, column 1"),
    ("run.yaml", "epochs: 2\nrevision: 'main\n", "line 2, column 11"),
    ("run.json", '{"epochs": 2,\n "seed": 1,}\n', "line 2, column 12"),
])
def test_a_config_file_with_a_syntax_error_names_the_file_and_the_place(capsys, tmp_path, name, text, where):
    config = tmp_path / name
    config.write_text(text)
    assert f"--config {config}, {where}: " in refused(capsys, tmp_path, [*RUN, "--config", str(config)])


@pytest.mark.parametrize(("text", "named"), [
    ("epochs: 1.5\n", "--epochs must be a whole number, got 1.5"),
    ("time_budget: 300\n", "--time-budget must be text, got 300; quote it"),
    ("epochs: null\n", "--epochs needs a value"),
    ("mixed_precision: fp8\n", "--mixed-precision must be one of auto, no, bf16, fp16, got 'fp8'"),
    ("1: 2\n", "must hold a mapping of argument names to values"),
])
def test_a_config_value_of_another_type_is_refused_by_name(capsys, tmp_path, text, named):
    config = tmp_path / "run.yaml"
    config.write_text(text)
    assert named in refused(capsys, tmp_path, [*RUN, "--config", str(config)])


# --------------------------------------------------------------------------- --config-overrides
def test_a_size_override_that_is_not_a_number(capsys, tmp_path):
    err = refused(capsys, tmp_path, ["finetune", "--model", "deit-tiny", "--scratch", "--config-overrides", "hidden_size=abc"])
    assert "config override hidden_size=abc (--config-overrides) must be a whole number, e.g. hidden_size=64" in err


@pytest.mark.parametrize(("backend", "overrides", "named"), [
    ("transformers", "hidden_size=64,num_attention_heads=5", "hidden_size 64 is not a multiple of num_attention_heads 5"),
    ("timm", "embed_dim=64,num_heads=5", "embed_dim 64 is not a multiple of num_heads 5"),
    ("transformers", "num_attention_heads=5", "hidden_size 192 is not a multiple of num_attention_heads 5"),
])
def test_heads_that_do_not_divide_the_width(capsys, tmp_path, backend, overrides, named):
    err = refused(capsys, tmp_path, ["finetune", "--model", "deit-tiny", "--scratch", "--backend", backend,
                                     "--config-overrides", overrides])
    assert named in err and "use num" in err


@pytest.mark.parametrize("backend", ["transformers", "timm"])
def test_load_refuses_heads_that_do_not_divide_the_width(backend):
    # transformers built q/k/v of 60x64 without a word; timm failed an assertion
    with pytest.raises(BadInputError, match="hidden_size 64 is not a multiple of num_attention_heads 5"):
        vitzoo.load("deit-tiny", pretrained=False, backend=backend,
                    config_overrides="hidden_size=64,num_attention_heads=5,num_hidden_layers=1")
    with pytest.raises(BadInputError, match="decoder_hidden_size 32 is not a multiple of decoder_num_attention_heads 3"):
        vitzoo.load("mae-base", task="pretraining", pretrained=False, config_overrides={
            "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "decoder_hidden_size": 32,
            "decoder_num_attention_heads": 3})


@pytest.mark.parametrize("overrides", [f"hidden_size={TOKEN}", f"{TOKEN}", f"patch_size=4,hidden_size={TOKEN}"])
def test_a_token_in_the_overrides_is_never_echoed(capsys, tmp_path, overrides):
    err = refused(capsys, tmp_path, ["finetune", "--model", "deit-tiny", "--scratch", "--config-overrides", overrides])
    assert TOKEN not in err and TOKEN[:10] not in err and "--config-overrides" in err
    with pytest.raises(BadInputError) as raised:  # the library's path, without the CLI's redaction
        vitzoo.load("deit-tiny", pretrained=False, config_overrides=overrides)
    assert TOKEN not in str(raised.value)


# --------------------------------------------------------------------------- CSV/JSONL tables
def test_a_file_listed_twice_counts_once_however_its_path_is_spelled(tmp_path):
    rows = [f"{i}.png,{'cat' if i % 2 else 'dog'}" for i in range(12)]
    rows += ["./0.png,dog", f"{tmp_path / '1.png'},cat", "sub/../2.png,dog", "3.png,cat"]  # four spellings again
    os.symlink(tmp_path / "4.png", tmp_path / "link.png")
    rows.append("link.png,dog")  # a link to 4.png
    table = tmp_path / "data.csv"
    table.write_text("path,label\n" + "\n".join(rows) + "\n")
    splits = load_splits(str(table), val_fraction=0.25)
    train, held_out = set(splits.train.reader.paths), set(splits.eval.reader.paths)
    assert len(train) + len(held_out) == 12 and not {os.path.realpath(p) for p in train} & {
        os.path.realpath(p) for p in held_out}
    assert splits.summary()["duplicates_dropped"] == 5


@pytest.mark.parametrize("same", ["a.png", "./a.png"])
def test_a_file_under_two_labels_is_refused_naming_both(capsys, tmp_path, same):
    table = tmp_path / "data.jsonl"
    table.write_text('{"path": "a.png", "label": "cat"}\n{"path": "b.png", "label": "dog"}\n'
                     f'{{"path": "{same}", "label": "dog"}}\n')
    err = refused(capsys, tmp_path, [*RUN, "--dataset", str(table)])
    assert f"{table}: rows 1 ('a.png') and 3 ({same!r}) list the same file under two labels, 'cat' and 'dog'" in err


def test_a_table_saved_by_excel_finds_its_columns(tmp_path):
    table = tmp_path / "data.csv"
    rows = [f"{i}.png,{i % 2}" for i in range(10)]
    table.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8-sig")  # starts with a byte-order mark
    check_source(str(table))
    splits = load_splits(str(table))
    assert splits.num_classes == 2 and len(splits.train) + len(splits.eval) == 10
    assert "duplicates_dropped" not in splits.summary()  # said only where rows were dropped


# --------------------------------------------------------------------------- Hub dataset ids
def test_a_token_given_as_the_dataset_is_neither_echoed_nor_sent(capsys, tmp_path, monkeypatch):
    import datasets

    def no_hub_call(*args, **kwargs):
        raise AssertionError("a Hub call was made with the token as the name")

    monkeypatch.setattr(datasets, "load_dataset", no_hub_call)
    monkeypatch.setattr(datasets, "load_dataset_builder", no_hub_call)
    err = refused(capsys, tmp_path, [*RUN, "--dataset", TOKEN])
    assert TOKEN[:10] not in err and "--dataset looks like a Hugging Face access token" in err
    for name in (TOKEN, f"someone/{TOKEN}"):  # the library's own path
        with pytest.raises(BadInputError, match="looks like a Hugging Face access token") as raised:
            load_splits(name)
        assert TOKEN not in str(raised.value)


def test_a_hub_dataset_not_in_the_cache_while_offline(capsys, tmp_path):
    err = refused(capsys, tmp_path, [*RUN, "--dataset", "someone/not-cached"])
    assert ("cannot load dataset 'someone/not-cached': it is not in the local cache" in err
            and "the Hub is offline (HF_HUB_OFFLINE=1 and HF_DATASETS_OFFLINE=1)" in err)


def test_a_hub_dataset_in_the_cache_passes_offline(tmp_path):
    import datasets

    table = tmp_path / "data.csv"
    table.write_text("path,label\na.png,0\nb.png,1\n")
    datasets.load_dataset("csv", data_files=str(table), cache_dir=str(tmp_path / "cache"))
    # the same files as datasets caches a Hub dataset, under someone/cached
    built = next(p for p in glob.glob(str(tmp_path / "cache" / "csv" / "*" / "*" / "*")) if os.path.isdir(p))
    version, fingerprint = built.split(os.sep)[-2:]
    cached = os.path.join(datasets.config.HF_DATASETS_CACHE, "someone___cached", "default", version, fingerprint)
    shutil.copytree(built, cached)
    try:
        for file in glob.glob(os.path.join(cached, "csv-*")):
            os.rename(file, file.replace(f"{os.sep}csv-", f"{os.sep}cached-"))
        check_source("someone/cached")
    finally:
        shutil.rmtree(os.path.join(datasets.config.HF_DATASETS_CACHE, "someone___cached"))


@pytest.mark.parametrize("where", ["name", "revision"])
def test_load_never_sends_a_token_given_as_a_name_or_revision(where, monkeypatch):
    import vitzoo
    from vitzoo import hub

    asked = []
    monkeypatch.setattr(hub, "cached_file", lambda *args, **kwargs: asked.append(args))
    name, revision = (f"someone/{TOKEN}", None) if where == "name" else ("someone/model", TOKEN)
    with pytest.raises(BadInputError, match="looks like a Hugging Face access token") as error:
        vitzoo.load(name, revision=revision)
    assert TOKEN not in str(error.value) and not asked
