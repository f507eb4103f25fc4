"""`vitzoo compare`: report files that agree, FLOPs by hand, the Pareto front, failures, resuming."""

from __future__ import annotations

import csv
import json
import os

import pytest
import torch

import vitzoo
from vitzoo import compare
from vitzoo.cli import main as cli_main
from vitzoo.compare import CompareConfig, resolve_models, run_compare, runner
from vitzoo.compare.report import pareto_front, sort_rows
from vitzoo.errors import BadInputError
from vitzoo.measure import count_flops, count_params, measure

TINY = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
FILES = ("results.json", "results.csv", "report.md", "accuracy_vs_throughput.png", "accuracy_vs_params.png")


def knn_config(tmp_path, models, **kwargs):
    """k-NN on a slice of digits with the tiny Hub's checkpoints: seconds per model."""
    options = dict(
        dataset="digits",
        protocol="knn",
        k=5,
        max_train_samples=60,
        max_eval_samples=30,
        batch_size=32,
        output_dir=str(tmp_path / "cmp"),
    )
    return CompareConfig(models=models, **{**options, **kwargs})


@pytest.fixture(autouse=True)
def quick_measurement(monkeypatch):
    """Two short rounds of the speed measurement: these tests check the report, not the machine."""
    monkeypatch.setattr(runner, "MEASURE_ROUNDS", 2)
    monkeypatch.setattr(runner, "MEASURE_SECONDS", 0.0)
    monkeypatch.setattr(runner, "LATENCY_ITERS", 3)


@pytest.fixture
def broken_folder(tmp_path):
    folder = tmp_path / "broken-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    return str(folder)


# --------------------------------------------------------------------------- measure
def test_flops_of_a_tiny_vit_equal_a_hand_count():
    overrides = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64, patch_size=4)
    zoo = vitzoo.load("deit-tiny", pretrained=False, num_labels=10, image_size=16, config_overrides=overrides)
    d, depth, mlp, patch, size, classes = 32, 2, 64, 4, 16, 10
    patches = (size // patch) ** 2
    tokens = patches + 1  # + CLS
    embed = 2 * (3 * patch * patch) * d * patches  # the patch-embedding convolution, one MAC per weight per patch
    qkv = 2 * tokens * d * (3 * d)
    proj = 2 * tokens * d * d
    ffn = 2 * tokens * d * mlp * 2
    attention = 2 * tokens * tokens * d * 2  # Q @ K^T and A @ V over all heads
    head = 2 * d * classes  # the classifier on the CLS token
    expected = embed + depth * (qkv + proj + ffn + attention) + head
    assert count_flops(zoo.logits, 16, zoo.model) == expected
    assert count_flops(zoo.logits, 16, zoo.model, batch_size=3) == 3 * expected

    zoo.model.train()
    cost = measure(zoo.logits, zoo.model, 16, batch_size=4, iters=1, latency_iters=3)
    assert zoo.model.training  # measured in eval mode, the model's own mode restored
    assert cost["gflops"] == pytest.approx(expected / 1e9)
    assert cost["params"] == count_params(zoo.model) == zoo.num_params
    assert cost["images_per_second"] > 0 and 0 < cost["latency_p50_ms"] <= cost["latency_p90_ms"]
    assert cost["peak_memory_method"] == "live_tensor_peak" and cost["peak_memory_mb"] > 0


# --------------------------------------------------------------------------- report
def test_pareto_front_of_a_hand_made_table():
    # (accuracy, images/s): a dominates c (more accurate and faster); b is fastest; d ties a exactly
    points = [(0.90, 100.0), (0.80, 300.0), (0.85, 90.0), (0.90, 100.0), (0.70, 300.0), (None, 1000.0)]
    assert pareto_front(points) == [True, True, False, True, False, False]
    # accuracy vs parameters: fewer is better
    assert pareto_front([(0.9, 80e6), (0.8, 5e6), (0.85, 90e6)], maximize=(True, False)) == [True, True, False]
    rows = [{"model": m, "status": "ok", "accuracy": a, "images_per_second": s} for m, (a, s) in zip("abcd", points)]
    rows.append({"model": "x", "status": "failed", "error": "boom"})
    ordered = sort_rows(rows, "accuracy")
    assert [row["model"] for row in ordered] == ["a", "d", "c", "b", "x"]
    assert {row["model"] for row in ordered if row["pareto"]} == {"a", "b", "d"}
    assert [row["model"] for row in sort_rows(rows, "images_per_second")][:2] == ["b", "a"]
    with pytest.raises(BadInputError):
        sort_rows(rows, "colour")


def test_report_files_agree_and_a_failed_model_does_not_stop_the_others(tiny_hub, tmp_path, broken_folder):
    config = knn_config(tmp_path, f"deit-tiny,{broken_folder},dino-vits16")
    rows = run_compare(config, progress=False, echo=lambda _: None)
    status = {row["model"]: row["status"] for row in rows}
    assert status == {"deit-tiny": "ok", broken_folder: "failed", "dino-vits16": "ok"}
    failed = next(row for row in rows if row["status"] == "failed")
    assert "BadInputError" in failed["error"]
    out = tmp_path / "cmp"
    for name in FILES:
        assert (out / name).stat().st_size > 0, name

    data = json.loads((out / "results.json").read_text())
    models = data["models"]
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    markdown = (out / "report.md").read_text()
    md_rows = [line for line in markdown.splitlines() if line.startswith("| ") and not line.startswith("| model")]
    assert [m["model"] for m in models] == [r["model"] for r in table] == [r.split(" | ")[0][2:] for r in md_rows]
    assert models[-1]["status"] == "failed"  # failed models sort last
    for model, row, line in zip(models, table, md_rows):
        assert row["status"] == model["status"]
        if model["status"] != "ok":
            assert model["error"] in line
            continue
        assert float(row["accuracy"]) == pytest.approx(model["accuracy"])
        assert float(row["gflops"]) == pytest.approx(model["gflops"])
        assert f"{model['accuracy']:.4f}" in line and f"{model['gflops']:.4f}" in line
        assert row["pareto"] == str(model["pareto"])
        headers = next(line for line in markdown.splitlines() if line.startswith("| model")).split(" | ")
        cell = line.rstrip(" |").split(" | ")[headers.index("Pareto")]
        assert cell == ("" if not model["pareto"] else "* (within noise)" if model["within_noise"] else "*")
        # published numbers come from the spec, labelled as such
        assert model["published_license"] == "apache-2.0" and model["published_params"]
    assert models[0]["pareto"] is True  # the most accurate model is always on the front
    deit = next(m for m in models if m["model"] == "deit-tiny")
    assert deit["published_imagenet_top1"] == 72.2
    assert "published imagenet_top1" in markdown and data["settings"]["protocol"] == "knn"
    assert data["environment"]["torch"] and "## Versions" in markdown


def test_an_interrupted_compare_resumes_without_recomputing(tiny_hub, tmp_path, monkeypatch):
    calls = []
    real = runner.evaluate_model

    def counting(name, config, splits):
        calls.append(name)
        if name == "dino-vits16" and os.environ.get("INTERRUPT_COMPARE") == "1":
            raise KeyboardInterrupt
        return real(name, config, splits)

    monkeypatch.setattr(runner, "evaluate_model", counting)
    config = knn_config(tmp_path, "deit-tiny,dino-vits16,beit-base")
    monkeypatch.setenv("INTERRUPT_COMPARE", "1")
    with pytest.raises(KeyboardInterrupt):
        run_compare(config, progress=False, echo=lambda _: None)
    assert calls == ["deit-tiny", "dino-vits16"]
    saved = json.loads((tmp_path / "cmp" / "models" / "deit-tiny.json").read_text())
    assert saved["status"] == "ok"

    monkeypatch.setenv("INTERRUPT_COMPARE", "0")
    calls.clear()
    rows = run_compare(config, progress=False, echo=lambda _: None)
    assert calls == ["dino-vits16", "beit-base"]  # deit-tiny was not recomputed
    assert next(r for r in rows if r["model"] == "deit-tiny")["accuracy"] == saved["accuracy"]
    calls.clear()
    run_compare(config, progress=False, echo=lambda _: None)
    assert calls == []
    calls.clear()
    run_compare(knn_config(tmp_path, "deit-tiny", k=3), progress=False, echo=lambda _: None)
    assert calls == ["deit-tiny"]  # other settings: measured again


def test_bad_input_is_a_clear_error(tiny_hub, tmp_path):
    with pytest.raises(BadInputError, match="empty"):
        resolve_models(" , ")
    with pytest.raises(BadInputError, match="deit-tiny"):
        resolve_models("deit-tinyy")
    with pytest.raises(BadInputError, match="matches no registered model"):
        resolve_models("nothing-*")
    assert resolve_models("deit-tiny,deit-s*,deit-tiny") == ["deit-tiny", "deit-small", "deit-small-distilled"]
    with pytest.raises(BadInputError, match="k=100"):
        run_compare(knn_config(tmp_path, "deit-tiny", k=100), progress=False)
    with pytest.raises(BadInputError, match="protocol"):
        run_compare(knn_config(tmp_path, "deit-tiny", protocol="zeroshot"), progress=False)
    with pytest.raises(BadInputError, match="--scratch"):
        run_compare(knn_config(tmp_path, "deit-tiny", config_overrides=TINY), progress=False)
    assert cli_main(["compare", "--models", "", "--output-dir", str(tmp_path / "x")]) == 2


def test_cli_scratch_finetune_and_defaults(tmp_path, capsys):
    out = tmp_path / "ft"
    code = cli_main(
        [
            "compare",
            "--models",
            "deit-tiny",
            "--scratch",
            "--epochs",
            "1",
            "--image-size",
            "16",
            "--config-overrides",
            TINY,
            "--max-train-samples",
            "64",
            "--max-eval-samples",
            "32",
            "--batch-size",
            "32",
            "--num-workers",
            "0",
            "--no-progress",
            "--output-dir",
            str(out),
        ]
    )
    assert code == 0
    printed = capsys.readouterr().out
    assert "deit-tiny" in printed and "train img/s" in printed
    row = json.loads((out / "results.json").read_text())["models"][0]
    assert row["status"] == "ok" and row["train_images_per_second"] > 0 and row["pretrained"] is False
    assert (out / "runs" / "deit-tiny" / "model").is_dir() and row["image_size"] == 16
    assert "vitzoo compare" in (out / "report.md").read_text()

    defaults = CompareConfig(scratch=True).resolved()
    assert defaults.protocol == "finetune" and defaults.image_size == 16 and defaults.epochs == compare.SCRATCH_DEFAULTS["epochs"]
    assert defaults.config_overrides == compare.SCRATCH_OVERRIDES and defaults.batch_size == 32
    families = {vitzoo.registry.get_spec(name).family for name in defaults.models}
    assert len(families) >= 3
    assert CompareConfig(protocol="linear").resolved().epochs == compare.LINEAR_EPOCHS


def test_cli_lora_protocol_reports_the_trained_parameters_beside_the_models(tmp_path, capsys):
    """--protocol lora runs `vitzoo finetune --peft lora` per model: the row's trained parameters are the rank-8
    adapters on q_proj and v_proj of each block and the head; params are the (merged) model's."""
    out = tmp_path / "lora"
    code = cli_main(["compare", "--models", "deit-tiny", "--scratch", "--protocol", "lora", "--epochs", "1",
                     "--image-size", "16", "--config-overrides", TINY, "--max-train-samples", "64",
                     "--max-eval-samples", "32", "--batch-size", "32", "--num-workers", "0", "--no-progress",
                     "--output-dir", str(out)])
    assert code == 0
    assert "trained (M)" in capsys.readouterr().out
    report = json.loads((out / "results.json").read_text())
    row = report["models"][0]
    hidden, depth, classes = 32, 2, 10
    assert row["status"] == "ok" and row["protocol"] == "lora" and row["train_images_per_second"] > 0
    assert row["trainable_params"] == depth * 2 * 8 * (hidden + hidden) + hidden * classes + classes
    run = out / "runs" / "deit-tiny"
    assert row["params"] == json.loads((run / "results.json").read_text())["peft"]["model_parameters"]
    assert (run / "adapter" / "adapter_config.json").is_file() and (run / "model" / "model.safetensors").is_file()
    assert report["defaults_applied"]["learning_rate"] == compare.LORA_LEARNING_RATE
    assert "| trained (M) |" in (out / "report.md").read_text()


def test_a_folder_trained_again_is_measured_again(tiny_hub, tmp_path):
    """compare keys a model folder's results and cached features on its weights' content: the same
    folder with new weights gives the new accuracy, not the old one read back."""
    folder = str(tmp_path / "model")
    arch = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"

    def save(seed):
        torch.manual_seed(seed)
        vitzoo.load("dino-vits16", task="features", pretrained=False, image_size=16,
                    config_overrides=arch).save_pretrained(folder)

    save(0)
    config = knn_config(tmp_path, folder, image_size=16)
    first = run_compare(config, progress=False, write=False)[0]
    save(1)  # trained again, in place
    again = run_compare(config, progress=False, write=False)[0]
    fresh = run_compare(knn_config(tmp_path, folder, image_size=16, output_dir=str(tmp_path / "fresh")),
                        progress=False, write=False)[0]
    assert again["weights"] != first["weights"]
    assert again["accuracy"] == fresh["accuracy"]
    assert len(os.listdir(os.path.join(config.output_dir, "features"))) == 4  # two weights x two splits


# --------------------------------------------------------------------------- uncertainty
def test_wilson_and_mcnemar_match_independent_computations():
    from scipy.stats import binomtest

    from vitzoo.compare.stats import binomial_cdf, mcnemar_exact, mean_std, wilson_interval

    # Wilson by its textbook closed form, worked by hand: 8 of 10, z = 1.96 -> (0.4902, 0.9433)
    low, high = wilson_interval(8, 10)
    assert (round(low, 4), round(high, 4)) == (0.4902, 0.9433)
    for correct, total in ((0, 20), (20, 20), (137, 360), (1, 3)):
        ci = binomtest(correct, total).proportion_ci(confidence_level=0.95, method="wilson")
        assert wilson_interval(correct, total) == pytest.approx((ci.low, ci.high), abs=1e-9)
    # McNemar exact = a two-sided binomial test of the discordant pairs at p = 1/2
    first = [1] * 50 + [1] * 9 + [0] * 2 + [0] * 10  # 9 images only the first gets right, 2 only the second
    second = [1] * 50 + [0] * 9 + [1] * 2 + [0] * 10
    assert mcnemar_exact(first, second) == pytest.approx(binomtest(2, 11, 0.5).pvalue)
    assert mcnemar_exact(second, first) == mcnemar_exact(first, second)
    assert mcnemar_exact([1, 0], [1, 0]) == 1.0 and mcnemar_exact([1, 1, 1, 0], [0, 0, 0, 0]) == 0.25
    assert binomial_cdf(3, 400, 0.5) == pytest.approx(binomtest(3, 400, 0.5, alternative="less").pvalue, rel=1e-9)
    assert mean_std([0.8, 0.9, 1.0]) == pytest.approx((0.9, 0.1))
    with pytest.raises(ValueError):
        mcnemar_exact([1], [1, 0])


def test_the_report_says_within_noise_where_the_difference_to_the_best_is_not_significant():
    from vitzoo.compare.report import best_line, terminal_table

    n = 100
    best = "1" * 90 + "0" * 10  # 0.90
    close = "1" * 86 + "0" * 14  # 0.86: 4 discordant images, all one way: p = 0.125
    far = "1" * 60 + "0" * 40  # 0.60: 30 discordant, p < 1e-8
    rows = [
        {"model": name, "status": "ok", "accuracy": correct.count("1") / n, "correct": correct,
         "images_per_second": speed, "accuracy_ci_low": 0.5, "accuracy_ci_high": 0.95, "seeds": [0]}
        for name, correct, speed in (("far", far, 50.0), ("best", best, 10.0), ("close", close, 20.0))
    ]
    ordered = {row["model"]: row for row in sort_rows(rows)}
    assert ordered["best"]["best"] and ordered["best"]["vs_best"] == "best"
    assert ordered["close"]["within_noise"] and ordered["close"]["p_vs_best"] == pytest.approx(0.125)
    assert ordered["far"]["within_noise"] is False and ordered["far"]["p_vs_best"] < 1e-8
    assert ordered["close"]["rank"] == "2 (within noise of best)" and ordered["far"]["rank"] == "3"
    line = best_line(sort_rows(rows))
    assert line.startswith("best: best, top-1 0.9000 [0.500, 0.950]") and "within noise of it" in line
    assert line.endswith(": close")
    table = terminal_table(rows)
    assert "* (within noise)" in table and "p=0.125, within noise" in table


def test_seeds_give_mean_std_and_per_seed_values_in_every_file(tiny_hub, tmp_path):
    config = knn_config(tmp_path, "deit-tiny,dino-vits16", protocol="linear", epochs=3, seeds=2)
    rows = run_compare(config, progress=False, echo=lambda _: None)
    out = tmp_path / "cmp"
    data = json.loads((out / "results.json").read_text())
    assert data["settings"]["seeds"] == 2 and data["splits"]["eval_images"] == 30
    for row in data["models"]:
        assert row["seeds"] == [0, 1] and len(row["accuracy_per_seed"]) == 2
        assert row["accuracy"] == pytest.approx(sum(row["accuracy_per_seed"]) / 2)
        assert len(row["correct"]) == len(row["predictions"]) == 30 and "p_vs_best" in row
    with open(out / "results.csv") as handle:
        table = list(csv.DictReader(handle))
    assert table[0]["accuracy_per_seed"].count(";") == 1 and "correct" not in table[0]
    report = (out / "report.md").read_text()
    assert "2 runs per model" in report and "McNemar" in report and "**best: " in report
    assert "evaluation split (`train` held out" in report or "held out" in report
    knn = run_compare(knn_config(tmp_path, "deit-tiny", seeds=3, output_dir=str(tmp_path / "knn")),
                      progress=False, write=False)[0]
    assert knn["seeds"] == [0, 1, 2] and knn["accuracy_std"] >= 0  # bootstrap resamples of the training set
    assert rows[0]["status"] == "ok"


# --------------------------------------------------------------------------- splits
def _image_folder(root, counts):
    """root/<split>/<class>/<i>.png: a dark and a bright class, `counts` = {split: images per class}."""
    from PIL import Image

    generator = torch.Generator().manual_seed(0)
    for split, count in counts.items():
        for label, base in (("dark", 40), ("bright", 200)):
            folder = root / split / label
            folder.mkdir(parents=True)
            for i in range(count):
                noise = torch.randint(0, 40, (8, 8, 3), generator=generator, dtype=torch.uint8)
                Image.fromarray((noise + base).numpy()).save(folder / f"{i}.png")
    return str(root)


def test_with_a_test_split_the_choice_is_made_on_validation_and_the_test_split_is_scored_once(tmp_path):
    data = _image_folder(tmp_path / "data", {"train": 20, "test": 6})
    out = tmp_path / "split"
    code = cli_main(["compare", "--models", "deit-tiny", "--dataset", data, "--scratch", "--epochs", "1",
                     "--image-size", "16", "--config-overrides", TINY, "--batch-size", "8", "--num-workers", "0",
                     "--no-progress", "--output-dir", str(out)])
    assert code == 0
    report = json.loads((out / "results.json").read_text())
    row = report["models"][0]
    assert report["settings"]["eval_split"] == "test" and report["defaults_applied"]["eval_split"] == "test"
    assert report["settings"]["val_fraction"] == compare.config.VAL_FRACTION_WITH_TEST
    assert report["splits"]["test_mode"] and report["splits"]["eval_images"] == 12
    assert report["splits"]["train_images"] == 40 and len(row["correct"]) == 12
    run = json.loads((out / "runs" / "deit-tiny" / "results.json").read_text())
    assert row["val_accuracy"] == run["eval"]["accuracy"]  # the recipe's validation: 0.1 of train held out
    markdown = (out / "report.md").read_text()
    assert "the test split (`test`, 12 images)" in markdown and "val top-1" in markdown
    assert "validation: 0.1 of `train` held out" in markdown

    again = run_compare(CompareConfig(models="deit-tiny", dataset=data, protocol="knn", k=3, eval_split="train",
                                      scratch=True, image_size=16, config_overrides=TINY,
                                      output_dir=str(tmp_path / "knn")), progress=False, write=False)
    assert again[0]["eval_images"] == 40  # --eval-split names the split scored


def test_help_states_the_defaults_the_config_applies(capsys):
    from vitzoo.compare.config import HELD_OUT_EVAL_FRACTION, PRETRAINED_DEFAULTS, VAL_FRACTION_WITH_TEST

    with pytest.raises(SystemExit):
        cli_main(["compare", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    scratch, pretrained = CompareConfig(scratch=True).resolved(), CompareConfig().resolved()
    assert f"fine-tuning epochs (default {scratch.epochs} with --scratch, {pretrained.epochs} without)" in text
    assert f"linear-probe epochs (default {CompareConfig(protocol='linear').resolved().epochs})" in text
    assert f"(default {scratch.image_size} with --scratch" in text and scratch.epochs == compare.SCRATCH_DEFAULTS["epochs"]
    assert f"(default {scratch.batch_size} with --scratch, else {pretrained.batch_size})" in text
    assert pretrained.batch_size == PRETRAINED_DEFAULTS["batch_size"] and scratch.seeds == pretrained.seeds == 1
    assert f"default {VAL_FRACTION_WITH_TEST:g} when reporting on a test split" in text
    assert f"{HELD_OUT_EVAL_FRACTION:g} when the data has neither" in text
    docs = open(os.path.join(os.path.dirname(__file__), "..", "docs", "compare.md")).read()
    assert f"| `--epochs` | {scratch.epochs} | {pretrained.epochs} (fine-tuning); {compare.LINEAR_EPOCHS} for" in docs
