"""Inference precision: "auto" follows the hardware, fp32 is the plain forward bit for bit, every
precision returns fp32, a trained model keeps its top-1 answers in bf16, cached features never mix
precisions, and --precision reaches the ZooModel on every command that has it."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from recipe_runs import ARCH

import vitzoo
from vitzoo import hardware
from vitzoo.cli import main
from vitzoo.precision import resolve_precision
from vitzoo.zoo import ZooModel


@pytest.fixture
def native_bf16(monkeypatch):
    """This machine's CPU, pretended to compute bf16 natively: "auto" is bf16 whatever the real CPU."""
    monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda: True)


@pytest.fixture
def compute_dtypes(monkeypatch):
    """The compute dtype of every ZooModel.logits / features call, in order."""
    seen = []
    for method in ("logits", "features"):
        original = getattr(ZooModel, method)

        def spy(self, pixel_values, original=original):
            seen.append(self.compute_dtype)
            return original(self, pixel_values)

        monkeypatch.setattr(ZooModel, method, spy)
    return seen


@pytest.fixture
def image_file(tmp_path, sample_image):
    path = tmp_path / "china.png"
    Image.fromarray(sample_image).save(path)
    return str(path)


def test_auto_is_bf16_only_where_the_hardware_computes_it_natively(tiny_hub, monkeypatch):
    zoo = vitzoo.load("deit-tiny")
    assert zoo.precision == "auto"
    for native, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(hardware, "cpu_has_native_bf16", lambda native=native: native)
        assert resolve_precision("auto", "cpu") == expected
        assert zoo.compute_dtype == expected  # resolved at use, on the model's device
    for supported, expected in ((True, torch.bfloat16), (False, torch.float32)):
        monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda supported=supported: supported)
        assert hardware.auto_inference_dtype(torch.device("cuda")) == expected
    assert hardware.auto_inference_dtype(torch.device("mps")) == torch.float32
    assert resolve_precision("bf16", "cpu") == torch.bfloat16 and resolve_precision("fp16", "cuda") == torch.float16


def test_fp16_on_a_cpu_and_unknown_names_are_refused_by_name(tiny_hub):
    with pytest.raises(vitzoo.BadInputError, match=r"--precision fp16.*'bf16'"):
        vitzoo.load("deit-tiny", precision="fp16")
    zoo = vitzoo.load("deit-tiny", precision="fp32")
    with pytest.raises(vitzoo.BadInputError, match="GPUs only"):
        zoo.precision = "fp16"
    with pytest.raises(vitzoo.BadInputError, match="auto, fp32, bf16, fp16"):
        zoo.precision = "int8"
    assert zoo.precision == "fp32" and zoo.compute_dtype == torch.float32


def test_fp32_is_bit_identical_to_the_forward_without_autocast(tiny_hub, sample_image):
    for name, backend in (("deit-small-distilled", "transformers"), ("beit-base", "transformers"), ("deit-small", "timm")):
        zoo = vitzoo.load(name, backend=backend, precision="fp32")
        images = [sample_image, sample_image[::-1]]
        pixels = zoo.preprocess(images)
        with torch.no_grad():
            if backend == "timm":
                logits = zoo.model(pixels)
                features = zoo.model.forward_head(zoo.model.forward_features(pixels), pre_logits=True)
            else:
                logits = zoo.model(pixel_values=pixels, **zoo.family.forward_kwargs(pixels, zoo.model.config)).logits
                features = zoo.family.pool(zoo.family.encode(zoo.model.base_model, pixels), zoo.spec.architecture)
            assert torch.equal(zoo.logits(pixels), logits)
            assert torch.equal(zoo.features(pixels), features)
            assert torch.equal(zoo.embed(images), features)
            # fp32 means fp32 even inside a caller's bf16 autocast
            with torch.autocast("cpu", dtype=torch.bfloat16):
                assert torch.equal(zoo.logits(pixels), logits)
        top = zoo.predict(images, top_k=1)
        assert [row[0]["score"] for row in top] == logits.softmax(dim=-1).max(dim=-1).values.tolist()


def test_every_precision_returns_fp32(tiny_hub, sample_image):
    for name, backend in (("deit-small", "transformers"), ("deit-small", "timm")):
        fp32 = vitzoo.load(name, backend=backend, precision="fp32")
        bf16 = vitzoo.load(name, backend=backend, precision="bf16")
        pixels = fp32.preprocess([sample_image])
        with torch.no_grad():
            for method in ("logits", "features", "attention"):
                lowered, reference = getattr(bf16, method)(pixels), getattr(fp32, method)(pixels)
                assert lowered.dtype == torch.float32, (backend, method)
                assert not torch.equal(lowered, reference), (backend, method)  # computed in bf16 all the same
                torch.testing.assert_close(lowered, reference, atol=0.05, rtol=0.05)
        assert isinstance(bf16.predict([sample_image])[0][0]["score"], float)


def test_a_trained_classifier_keeps_its_top1_answers_in_bf16(tmp_path, capsys):
    """A tiny digits classifier trained here (seconds): bf16 gives the same top-1 class as fp32 on at least
    99% of the whole eval split, and what comes back is fp32."""
    from vitzoo import methods
    from vitzoo.training.arguments import FinetuneArguments, load_data

    methods.run("finetune", ["--model", "deit-tiny", "--scratch", "--config-overrides", ARCH, "--image-size", "16",
                   "--batch-size", "32", "--num-workers", "0", "--dataset", "digits", "--epochs", "6", "--learning-rate", "3e-3",
                   "--output-dir", str(tmp_path / "run")])
    zoo = vitzoo.load(tmp_path / "run" / "model")
    images = [image for image, _ in load_data(FinetuneArguments(dataset="digits")).eval]  # the run's eval split
    agreement = vitzoo.precision_agreement(zoo, images, "bf16")
    with capsys.disabled():
        print(f"\ndigits eval split, bf16 vs fp32: {agreement}")
    assert agreement.images == len(images) == 359 and agreement.compute_dtype == "bf16"
    assert agreement.top1_agreement >= 0.99
    assert 0 < agreement.max_abs_logit_diff < 1 and 0 < agreement.max_abs_embedding_diff < 1
    assert zoo.precision == "auto"  # left as it was
    zoo.precision = "bf16"
    assert zoo.logits(zoo.preprocess(images[:4])).dtype == zoo.embed(images[:4]).dtype == torch.float32


def test_cached_features_are_fp32_and_keyed_on_the_precision(tiny_hub, tmp_path):
    from safetensors.torch import load_file

    from vitzoo.data import load_splits
    from vitzoo.probe import split_features

    splits = load_splits("digits", max_train_samples=24, max_eval_samples=8)
    zoo = vitzoo.load("dino-vits16", image_size=16, precision="fp32")
    fp32 = split_features(zoo, splits, batch_size=8, cache_dir=tmp_path, dataset="digits")
    zoo.precision = "bf16"
    bf16 = split_features(zoo, splits, batch_size=8, cache_dir=tmp_path, dataset="digits")
    files = sorted(tmp_path.glob("*.safetensors"))
    assert len(files) == 4  # train and eval, once per precision
    assert all(load_file(file)["features"].dtype == torch.float32 for file in files)
    assert not torch.equal(fp32["eval"][0], bf16["eval"][0])
    zoo.precision = "fp32"
    assert torch.equal(split_features(zoo, splits, batch_size=8, cache_dir=tmp_path, dataset="digits")["eval"][0],
                       fp32["eval"][0])  # read back from its own file
    assert len(list(tmp_path.glob("*.safetensors"))) == 4


# --precision on each command: the default (auto, here pretended bf16) and fp32 reach the ZooModel
def test_predict_precision_flag(tiny_hub, native_bf16, compute_dtypes, image_file, capsys):
    assert main(["predict", "deit-small", image_file, "--json"]) == 0
    assert set(compute_dtypes) == {torch.bfloat16}
    compute_dtypes.clear()
    assert main(["predict", "deit-small", image_file, "--json", "--precision", "fp32"]) == 0
    assert set(compute_dtypes) == {torch.float32}
    assert main(["predict", "deit-small", image_file, "--precision", "fp16"]) == 2
    assert "--precision fp16" in capsys.readouterr().err


def test_embed_precision_flag(tiny_hub, native_bf16, compute_dtypes, image_file, tmp_path):
    output = str(tmp_path / "embeddings.pt")
    assert main(["embed", "dino-vits16", image_file, "--output", output, "--precision", "fp32"]) == 0
    assert set(compute_dtypes) == {torch.float32}
    compute_dtypes.clear()
    assert main(["embed", "dino-vits16", image_file, "--output", output]) == 0
    assert set(compute_dtypes) == {torch.bfloat16}
    assert torch.load(output)["embeddings"].dtype == torch.float32


def test_evaluate_precision_flag(tiny_hub, native_bf16, compute_dtypes, tmp_path, capsys):
    command = ["evaluate", "dino-vits16", "--image-size", "16", "--max-train-samples", "24", "--max-eval-samples", "8",
               "--ks", "5", "--cache-dir", str(tmp_path)]
    assert main([*command, "--precision", "fp32"]) == 0
    assert set(compute_dtypes) == {torch.float32} and json.loads(capsys.readouterr().out)["precision"] == "fp32"
    compute_dtypes.clear()
    assert main(command) == 0
    assert set(compute_dtypes) == {torch.bfloat16} and json.loads(capsys.readouterr().out)["precision"] == "bf16"
    assert len(list(tmp_path.glob("*.safetensors"))) == 4  # the fp32 features were not reused


def test_compare_precision_flag(tiny_hub, native_bf16, compute_dtypes, tmp_path):
    command = ["compare", "--models", "dino-vits16", "--image-size", "16", "--max-train-samples", "24",
               "--max-eval-samples", "8", "--k", "5", "--batch-size", "8", "--no-progress", "--output-dir", str(tmp_path)]
    assert main([*command, "--precision", "fp32"]) == 0
    assert set(compute_dtypes) == {torch.float32}
    report = json.loads((tmp_path / "results.json").read_text())
    assert report["settings"]["precision"] == "fp32" and report["models"][0]["precision"] == "fp32"
    compute_dtypes.clear()
    assert main(command) == 0  # another precision: measured again, not reused
    assert set(compute_dtypes) == {torch.bfloat16}
    assert json.loads((tmp_path / "results.json").read_text())["models"][0]["precision"] == "bf16"
    assert "`--precision auto`, computed in bf16" in (tmp_path / "report.md").read_text()


def test_bench_precision_flag(tiny_hub, native_bf16, compute_dtypes, tmp_path, monkeypatch, capsys):
    from vitzoo import bench

    monkeypatch.setattr(bench, "peak_matmul_flops", lambda device, dtype: 1e12)
    output = tmp_path / "bench.json"
    command = ["bench", "--models", "deit-tiny", "--batch-sizes", "2", "--image-sizes", "16", "--min-seconds", "0.01",
               "--no-pipeline", "--no-train", "--no-data", "--trainer-steps", "0", "--output", str(output)]
    assert main([*command, "--precision", "fp32"]) == 0
    assert set(compute_dtypes) == {torch.float32}
    row = json.loads(output.read_text())["results"][0]
    assert (row["precision"], row["dtype"], row["top1_agreement"], row["max_abs_logit_diff"]) == ("fp32", "fp32", 1.0, 0.0)
    compute_dtypes.clear()
    assert main(command) == 0
    assert torch.bfloat16 in compute_dtypes  # predict (and the agreement's second pass) in bf16
    row = json.loads(output.read_text())["results"][0]
    assert (row["precision"], row["dtype"], row["agreement_images"]) == ("auto", "bf16", 2)
    assert main([*command, "--dtype", "fp32"]) == 0  # the deprecated name maps to --precision
    assert json.loads(output.read_text())["results"][0]["precision"] == "fp32"
    assert "--dtype is deprecated" in capsys.readouterr().err
    assert main([*command, "--dtype", "fp32", "--precision", "bf16"]) == 2
