"""Select on validation, report on test: with a test split, finetune and distill --method deit evaluate on a
validation split (the data's, or --val-fraction of train held out) during training and keep model/ by it, then
score that model once on the test split; results.json and the model card keep both, labelled."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from huggingface_hub import ModelCard
from huggingface_hub.repocard_data import model_index_to_eval_results
from PIL import Image

import vitzoo
from vitzoo import methods, publish
from vitzoo.data import load_splits
from vitzoo.data.sources import VAL_FRACTION, VAL_FRACTION_WITH_TEST

ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
TINY = ["--scratch", "--config-overrides", ARCH, "--image-size", "16", "--batch-size", "8", "--num-workers", "0",
        "--mixed-precision", "no", "--log-steps", "1"]
CLASSES = {"red": (160, 110, 110), "green": (110, 160, 110), "blue": (110, 110, 160)}
TRAIN_PER_CLASS, TEST_PER_CLASS = 20, 5


def make_folder(root, splits: dict[str, int]) -> str:
    """Split folders of class folders of noisy 16 px colour squares (noisier in test: a tiny model errs there)."""
    rng = np.random.default_rng(0)
    for split, count in splits.items():
        spread = 220 if split == "test" else 110
        for name, colour in CLASSES.items():
            os.makedirs(root / split / name)
            for index in range(count):
                noisy = np.clip(np.array(colour) + rng.normal(0, spread, (16, 16, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(noisy).save(root / split / name / f"{index}.png")
    return str(root)


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return make_folder(tmp_path_factory.mktemp("data"), {"train": TRAIN_PER_CLASS, "test": TEST_PER_CLASS})


@pytest.fixture(scope="module")
def finetune_run(folder, tmp_path_factory):
    output = str(tmp_path_factory.mktemp("runs") / "finetune")
    results = methods.run("finetune", ["--model", "deit-tiny", *TINY, "--epochs", "2", "--dataset", folder,
                             "--output-dir", output])
    return results, output


def eval_events(output: str) -> list[dict]:
    with open(os.path.join(output, "metrics.jsonl")) as handle:
        return [event for event in map(json.loads, handle) if event.get("eval")]


def accuracy_by_hand(output: str, folder: str) -> float:
    """model/ loaded with vitzoo and run over the test folder's files by hand (fp32, as the run evaluated)."""
    model = vitzoo.load(os.path.join(output, "model"), precision="fp32")
    files = [(os.path.join(folder, "test", name, file), name) for name in sorted(CLASSES)
             for file in sorted(os.listdir(os.path.join(folder, "test", name)))]
    predicted = model.predict([path for path, _ in files], top_k=1)
    return sum(top[0]["label"] == name for top, (_, name) in zip(predicted, files)) / len(files)


def test_finetune_selects_on_validation_and_reports_on_test(finetune_run, folder):
    results, output = finetune_run
    train_total = TRAIN_PER_CLASS * len(CLASSES)
    held_out = round(VAL_FRACTION_WITH_TEST * train_total)  # 0.1 of train: the default with a test split
    assert results["data"]["eval_split"] == "train (held-out 0.1)" and results["data"]["eval_samples"] == held_out
    assert results["data"]["train_samples"] == train_total - held_out
    assert results["data"]["test_split"] == "test" and results["data"]["test_samples"] == TEST_PER_CLASS * len(CLASSES)
    # stratified: the same share of every class
    splits = load_splits(folder, seed=0, keep_test=True)
    assert np.bincount(splits.eval.labels).tolist() == [held_out // len(CLASSES)] * len(CLASSES)

    # every evaluation during training saw the validation images only, and the best of them kept model/
    events = eval_events(output)
    assert len(events) == 2 and all(event["samples"] == held_out for event in events)
    best = max(events, key=lambda event: event["accuracy"])  # ties: the earlier, as the loop keeps
    assert results["eval"]["split"] == "train (held-out 0.1)"
    assert (results["eval"]["step"], results["eval"]["accuracy"]) == (best["step"], best["accuracy"])

    # the test split scored model/ once, at the end, as an independent evaluation of the saved folder does
    assert results["test"]["split"] == "test" and results["test"]["samples"] == TEST_PER_CLASS * len(CLASSES)
    assert results["test"]["accuracy"] == pytest.approx(accuracy_by_hand(output, folder))
    with open(os.path.join(output, "results.json")) as handle:
        assert json.load(handle)["test"] == results["test"]


def test_card_shows_validation_and_test_each_labelled(finetune_run):
    results, output = finetune_run
    card = ModelCard.load(os.path.join(publish.export_model(output, "someone/colours").path, "README.md"))
    assert "| metric | validation: <code>train (held-out 0.1)</code> | test: <code>test</code> |" in card.text
    assert "Selected on validation, reported on test" in card.text
    # model-index: the validation metrics and the test metrics, each with its split
    _, entries = model_index_to_eval_results(card.data.to_dict()["model-index"])
    reported = {(entry.dataset_split, entry.metric_name): entry.metric_value for entry in entries}
    assert reported[("test", "Top-1 accuracy")] == results["test"]["accuracy"]
    assert reported[("train (held-out 0.1)", "Top-1 accuracy")] == results["eval"]["accuracy"]


def test_deit_student_is_scored_on_a_named_test_split(folder, tmp_path):
    """--eval-split test names the test split itself: it is kept apart, and --val-fraction of train validates."""
    output = str(tmp_path / "deit")
    results = methods.run("distill", ["--method", "deit", "--model", "deit-tiny-distilled", *TINY, "--distill-type", "none",
                            "--epochs", "1", "--dataset", folder, "--eval-split", "test", "--val-fraction", "0.2",
                            "--max-train-samples", "24", "--output-dir", output])
    held_out = round(0.2 * TRAIN_PER_CLASS * len(CLASSES))
    assert results["eval"]["split"] == "train (held-out 0.2)" and results["eval"]["samples"] == held_out
    assert all(event["samples"] == held_out for event in eval_events(output))
    assert results["test"]["split"] == "test" and results["test"]["samples"] == TEST_PER_CLASS * len(CLASSES)
    assert results["test"]["accuracy"] == pytest.approx(accuracy_by_hand(output, folder))


def test_which_split_validates_and_which_tests(tmp_path):
    """The rule, on folders: a test split is kept apart only when asked (finetune, DeiT); without one, or
    with --eval-split naming a validation split, nothing changes."""
    train_only = make_folder(tmp_path / "a", {"train": 10})
    splits = load_splits(train_only, keep_test=True)
    assert splits.test is None and splits.eval_split == f"train (held-out {VAL_FRACTION:g})" and len(splits.eval) == 6
    assert "test_split" not in splits.summary()

    with_test = make_folder(tmp_path / "b", {"train": 10, "test": 2})
    assert load_splits(with_test).test is None  # DINO and pretraining: evaluation as before
    assert load_splits(with_test).eval_split == "train (held-out 0.2)"
    kept = load_splits(with_test, keep_test=True, max_eval_samples=4)
    assert kept.test_split == "test" and len(kept.test) == 4 and len(kept.eval) == 3  # 0.1 of 30, then the limit

    everything = make_folder(tmp_path / "c", {"train": 10, "validation": 2, "test": 3})
    kept = load_splits(everything, keep_test=True)
    assert (kept.eval_split, len(kept.eval), kept.test_split, len(kept.test), len(kept.train)) == (
        "validation", 6, "test", 9, 30)
    named = load_splits(everything, keep_test=True, eval_split="validation")  # a validation split: no test
    assert named.test is None and named.eval_split == "validation"


def test_an_unlabelled_test_split_gives_no_test_score():
    """Hub datasets often ship their test split without labels (-1): it is left out, with a warning."""
    import datasets

    def split(labels):
        images = [Image.new("RGB", (8, 8), (40 * i, 0, 0)) for i in range(len(labels))]
        return datasets.Dataset.from_dict({"image": images, "label": labels}, features=datasets.Features(
            {"image": datasets.Image(), "label": datasets.ClassLabel(names=["a", "b"])}))

    data = datasets.DatasetDict({"train": split([0, 1] * 5), "test": split([-1] * 4)})
    with pytest.warns(UserWarning, match="'test' split .* is unlabelled"):
        splits = load_splits(data, keep_test=True)
    assert splits.test is None and splits.eval_split == "train (held-out 0.2)"


@pytest.mark.parametrize("value", ["0", "1", "1.5"])
def test_val_fraction_out_of_range_is_refused_by_name(tmp_path, value):
    with pytest.raises(vitzoo.BadInputError, match=r"--val-fraction must be in \(0, 1\)"):
        methods.run("finetune", ["--model", "deit-tiny", *TINY, "--val-fraction", value, "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
