"""`vitzoo bench` on a tiny model: every figure present and consistent with its definition."""

from __future__ import annotations

import json

import pytest
import torch

from vitzoo import bench
from vitzoo.cli import main
from vitzoo.measure import count_flops


def test_bench_model_figures_agree(tiny_hub, tmp_path):
    from vitzoo.data.photos import photo_folder

    peak = 1e12
    photos = photo_folder(str(tmp_path / "photos"), count=24)  # real JPEG photos, as the default folder holds
    result = bench.bench_model("deit-small", batch_size=4, image_size=16, device=torch.device("cpu"),
                               min_seconds=0.05, peak_flops=peak, data_dir=photos)
    for key in ("predict_images_per_second", "transformers_images_per_second", "timm_images_per_second",
                "pipeline_images_per_second", "pipeline_bf16_images_per_second", "train_images_per_second",
                "timm_train_images_per_second", "data_images_per_second", "predict_latency_ms"):
        assert result[key] > 0, key
    assert result["data_dir"] == photos and result["data_images_per_second_per_core"] == pytest.approx(
        result["data_images_per_second"] / max(1, result["data_workers"]))
    assert result["predict_vs_raw"] == pytest.approx(result["predict_images_per_second"] / result["transformers_images_per_second"])
    assert result["predict_vs_pipeline"] == pytest.approx(result["predict_images_per_second"] / result["pipeline_images_per_second"])
    assert result["predict_vs_pipeline_bf16"] == pytest.approx(
        result["predict_images_per_second"] / result["pipeline_bf16_images_per_second"])
    # the precision's cost, on the cached (tiny) released weights, over the bench's 4 photos
    assert result["precision"] == "auto" and result["agreement_weights"] == "pretrained" and result["agreement_images"] == 4
    assert 0 <= result["top1_agreement"] <= 1 and result["max_abs_logit_diff"] >= 0
    flops = result["gflops_per_image"] * 1e9
    assert result["inference_mfu"] == pytest.approx(flops * result["transformers_images_per_second"] / peak)
    assert result["train_mfu"] == pytest.approx(3 * flops * result["train_images_per_second"] / peak)
    assert result["timm_train_mfu"] == pytest.approx(3 * flops * result["timm_train_images_per_second"] / peak)
    import vitzoo

    model = vitzoo.load("deit-small", pretrained=False, image_size=16).model
    assert flops == count_flops(lambda x: model(pixel_values=x).logits, 16, model)


def test_peak_matmul_is_a_rate():
    rate = bench.peak_matmul_flops(torch.device("cpu"), torch.float32, size=128, min_seconds=0.05)
    assert 1e6 < rate < 1e14


def test_cli_writes_json_and_table(tiny_hub, tmp_path, capsys):
    from vitzoo.data.photos import photo_folder

    output, table = tmp_path / "bench.json", tmp_path / "bench.md"
    photos = photo_folder(str(tmp_path / "photos"), count=12)
    assert main(["bench", "--models", "deit-tiny", "--batch-sizes", "2", "--image-sizes", "16", "--min-seconds", "0.02",
                 "--no-pipeline", "--no-train", "--data-dir", photos, "--trainer-steps", "0", "--output", str(output),
                 "--markdown", str(table)]) == 0
    data = json.loads(output.read_text())
    assert data["results"][0]["model"] == "deit-tiny" and data["peak_matmul_gflops"] > 0
    assert data["results"][0]["data_dir"] == photos and data["results"][0]["data_images_per_second_per_core"] > 0
    assert "| deit-tiny | 2 | 16 |" in capsys.readouterr().out and "| deit-tiny | 2 | 16 |" in table.read_text()
    assert main(["bench", "--models", "deit-smal"]) == 2
    assert main(["bench", "--models", "deit-tiny", "--trainer-steps", "1"]) == 2


def test_recipe_against_trainer_with_each_sides_defaults(tiny_hub, monkeypatch):
    from vitzoo import peers
    from vitzoo.training import engine

    monkeypatch.setattr(engine, "cpu_has_native_bf16", lambda: False)  # the default precision is then fp32
    result = peers.compare_defaults("deit-tiny", image_size=16, batch_size=8, steps=4, warmup=1)
    assert result["recipe_images_per_second"] > 0 and result["trainer_images_per_second"] > 0
    assert result["recipe_vs_trainer"] == pytest.approx(result["recipe_images_per_second"] / result["trainer_images_per_second"])
    assert result["recipe_precision"] == "no"
