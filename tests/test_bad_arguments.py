"""Bad arguments and bad tables: each is one line on the CLI (exit code 2, no traceback), refused before any
data or model loads, with nothing written in --output-dir; a token typed where a name belongs is neither
echoed nor sent to the Hub (docs/reliability.md)."""

from __future__ import annotations

import glob
import os
import shutil

import pytest
from recipe_runs import COMMON

import vitzoo
from vitzoo.data import load_splits
from vitzoo.data.sources import check_source
from vitzoo.errors import BadInputError

RUN = ["finetune", "--model", "deit-tiny", *COMMON]
TOKEN = "hf_" + "AbCdEfGhIjKlMnOpQrStUvWxYz01234567"  # the shape of a real access token: hf_ and 34 characters


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


def test_a_table_saved_by_excel_finds_its_columns(tmp_path):
    table = tmp_path / "data.csv"
    rows = [f"{i}.png,{i % 2}" for i in range(10)]
    table.write_text("path,label\n" + "\n".join(rows) + "\n", encoding="utf-8-sig")  # starts with a byte-order mark
    check_source(str(table))
    splits = load_splits(str(table))
    assert splits.num_classes == 2 and len(splits.train) + len(splits.eval) == 10
    assert "duplicates_dropped" not in splits.summary()  # said only where rows were dropped


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
