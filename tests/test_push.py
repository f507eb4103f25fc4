"""`vitzoo push`: the Hub-ready export and its model card for each kind of model, and the upload.

Only the Hub client's network methods are replaced (`HfApi.create_repo`, `create_branch`,
`upload_folder`); export, card rendering, loading and token lookup run for real.
"""

from __future__ import annotations

import json
import os

import pytest
import torch
import transformers
from huggingface_hub import HfApi, ModelCard
from huggingface_hub.errors import HfHubHTTPError
from huggingface_hub.repocard_data import model_index_to_eval_results

import vitzoo
from vitzoo import methods, publish, registry
from vitzoo.cli import main as cli

FAKE_TOKEN = "hf_fakeTOKEN0123456789abcdefghijklmnop"
ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
TINY = [
    "--model",
    "deit-tiny",
    "--scratch",
    "--config-overrides",
    ARCH,
    "--image-size",
    "16",
    "--batch-size",
    "16",
    "--num-workers",
    "0",
    "--max-train-samples",
    "64",
    "--max-eval-samples",
    "32",
    "--hflip",
    "0",
    "--epochs",
    "1",
]
EXPORTED = ["README.md", "config.json", "model.safetensors", "preprocessor_config.json", "vitzoo.json"]


@pytest.fixture(scope="module")
def classifier_run(tmp_path_factory):
    """A real fine-tuning run folder (tiny model, digits, one epoch)."""
    output = str(tmp_path_factory.mktemp("runs") / "digits")
    methods.run("finetune", [*TINY, "--output-dir", output])
    return output


def save_model(folder, name, training, task="classification", labels=None, args=None, results=None, arch=ARCH):
    """A run-like folder with model/ saved by vitzoo, as another recipe would leave it (the ZooModel computes
    in fp32, as plain transformers does, for the comparisons)."""
    zoo = vitzoo.load(name, task=task, id2label=labels, pretrained=False, image_size=16, config_overrides=arch,
                      precision="fp32")
    zoo.save_pretrained(os.path.join(folder, "model"), extra_metadata={"training": training})
    for file, data in (("args.json", args), ("results.json", results)):
        if data is not None:
            with open(os.path.join(folder, file), "w") as handle:
                json.dump(data, handle)
    return zoo


def read(path):
    with open(path) as handle:
        return json.load(handle)


def sections(card: ModelCard) -> dict[str, str]:
    """Each `## ` section's text (no section may be empty)."""
    out, current = {}, None
    for line in card.text.splitlines():
        if line.startswith("## "):
            current = line[3:]
            out[current] = ""
        elif current is not None:
            out[current] += line + "\n"
    return out


def check_card(path, results=None):
    card = ModelCard.load(os.path.join(path, "README.md"))
    data = card.data
    for name, body in sections(card).items():
        assert body.strip(), f"empty section {name!r}"
    evaluation = (results or {}).get("eval") or {}
    expected = {
        ("accuracy", "Top-1 accuracy"): "accuracy",
        ("top-5", "Top-5 accuracy"): "top5",
        ("f1", "Macro F1"): "macro_f1",
        ("accuracy", "k-NN top-1 accuracy"): "knn_accuracy",
    }
    expected = {k: evaluation[v] for k, v in expected.items() if v in evaluation}
    if expected:  # model-index holds exactly the measured metrics, with results.json's values
        _, eval_results = model_index_to_eval_results(data.to_dict()["model-index"])
        assert {(r.metric_type, r.metric_name): r.metric_value for r in eval_results} == expected
        assert all(r.task_type == "image-classification" for r in eval_results)
    else:
        assert "model-index" not in data.to_dict() and data.eval_results is None
    measured = any(isinstance(v, float) for k, v in evaluation.items() if k != "k")
    assert ("## Evaluation results" in card.text) == measured
    assert "vitzoo" in data.tags and data.license and data.pipeline_tag
    return card


def test_classifier_export_card_and_loading(classifier_run, capsys):
    assert cli(["push", classifier_run, "--repo-id", "someone/deit-tiny-digits", "--dry-run"]) == 0
    out = capsys.readouterr().out
    export = os.path.join(classifier_run, "hub_export")
    assert sorted(os.listdir(export)) == EXPORTED
    assert "dry run" in out and "model.safetensors" in out and "nothing uploaded" in out

    results, args = read(os.path.join(classifier_run, "results.json")), read(os.path.join(classifier_run, "args.json"))
    meta = read(os.path.join(export, "vitzoo.json"))
    assert meta["training"]["arguments"] == args and meta["training"]["recipe"] == "finetune"
    assert meta["training"]["results"]["eval"] == results["eval"]
    assert read(os.path.join(export, "config.json"))["id2label"]["3"] == "3"

    card = check_card(export, results)
    data = card.data
    assert data.base_model is None  # --scratch: no base weights
    assert data.datasets is None and "scikit-learn *digits*" in card.text  # digits is not a Hub dataset
    assert data.license == registry.get_spec("deit-tiny").license
    assert {"image-classification", "deit"} <= set(data.tags) and data.pipeline_tag == "image-classification"
    for text in (
        "## Training procedure",
        f"| `learning_rate` | {args['learning_rate']:g} |",  # what the run used (--scratch on digits: the small-data 0.001)
        "## Hardware and training time",
        "## Intended uses and limitations",
        "snapshot_download",
        "ViTForImageClassification.from_pretrained",
        "@inproceedings{touvron2021deit",
    ):
        assert text in card.text, text
    assert "top_k" in card.text and "None" not in card.text

    # the export loads with vitzoo and with plain transformers, with the run's model's outputs (all in fp32)
    original = vitzoo.load(os.path.join(classifier_run, "model"), precision="fp32")
    exported = vitzoo.load(export, precision="fp32")
    plain = transformers.AutoModelForImageClassification.from_pretrained(export).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        expected = original.logits(pixels)
        assert torch.equal(exported.logits(pixels), expected)
        assert torch.equal(plain(pixel_values=pixels).logits, expected)
    assert exported.id2label == original.id2label


def test_distilled_student(tmp_path):
    run = str(tmp_path / "student")
    args = {
        "model": "deit-tiny-distilled",
        "teacher": "deit-base",
        "dataset": "some-org/leaves",
        "alpha": 0.5,
        "distillation_type": "hard",
        "epochs": 2,
        "output_dir": run,
        "hub_token": "secret-value",
    }
    results = {
        "eval": {"accuracy": 0.75, "samples": 12},
        "steps": 4,
        "wall_time_seconds": 3.5,
        "environment": {"device": "NVIDIA H100 80GB HBM3", "torch": "2.5"},
    }
    zoo = save_model(
        run,
        "deit-tiny-distilled",
        labels=["healthy", "rust", "spot"],
        args=args,
        results=results,
        training={
            "recipe": "distill",
            "dataset": "some-org/leaves",
            "base_model": "deit-tiny-distilled",
            "teacher": "deit-base",
            "pretrained": True,
        },
    )
    export = publish.export_model(run, "someone/student").path
    assert publish.detect_kind(read(os.path.join(export, "vitzoo.json"))) == publish.KIND_DISTILLED
    card = check_card(export, results)  # only top-1 was measured: no top-5, no F1
    assert card.data.base_model == registry.get_spec("deit-tiny-distilled").hub_id
    assert card.data.datasets == ["some-org/leaves"] and "distillation" in card.data.tags
    assert "**Teacher:** `deit-base`" in card.text and "Top-5" not in card.text and "F1" not in card.text
    assert "NVIDIA H100" in card.text and "secret-value" not in card.text
    assert read(os.path.join(export, "vitzoo.json"))["training"]["arguments"]["hub_token"] == publish.REDACTED

    plain = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(export).eval()
    assert "DeiTForImageClassificationWithTeacher.from_pretrained" in card.text
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(plain(pixel_values=pixels).logits, zoo.logits(pixels))
        assert torch.equal(vitzoo.load(export, precision="fp32").logits(pixels), zoo.logits(pixels))


def test_self_supervised_encoder_without_results(tmp_path):
    run = str(tmp_path / "dino")
    spec = registry.get_spec("dino-vits16")
    zoo = save_model(
        run,
        "dino-vits16",
        task="features",
        args={"model": "dino-vits16", "dataset": "./my images"},
        training={
            "recipe": "pretrain",
            "method": "DINO",
            "dataset": "./my images",
            "base_model": "dino-vits16",
            "pretrained": True,
        },
    )
    export = publish.export_model(os.path.join(run, "model"), "someone/dino-encoder").path
    card = check_card(export)  # no results.json: no model-index, no results section
    assert card.data.pipeline_tag == "image-feature-extraction" and "self-supervised" in card.data.tags
    assert card.data.base_model == spec.hub_id and card.data.license == spec.license
    assert card.data.datasets is None and "local data (<code>my images</code>)" in card.text
    assert "no classification head" in card.text and "## Hardware" not in card.text

    plain = transformers.AutoModel.from_pretrained(export).eval()
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        assert torch.allclose(plain(pixel_values=pixels).last_hidden_state[:, 0], zoo.features(pixels), atol=1e-6)
        assert torch.equal(vitzoo.load(export, precision="fp32").features(pixels), zoo.features(pixels))


def test_dino_self_distillation_and_mae_pretraining_are_encoders(tmp_path):
    """distill --method dino and pretrain write encoders: k-NN results in model-index, a pretraining
    loss only in the text."""
    dino = str(tmp_path / "dino")
    results = {"eval": {"knn_accuracy": 0.5, "k": 20}, "wall_time_seconds": 100.0, "environment": {"device": "x86_64"}}
    save_model(
        dino,
        "dino-vits16",
        task="features",
        results=results,
        args={"method": "dino", "model": "dino-vits16"},
        training={
            "recipe": "distill",
            "method": "dino",
            "dataset": "digits",
            "base_model": "dino-vits16",
            "pretrained": False,
        },
    )
    export = publish.export_model(dino, "someone/dino").path
    card = check_card(export, results)
    assert publish.detect_kind(read(os.path.join(export, "vitzoo.json"))) == publish.KIND_SELF_SUPERVISED
    assert "DINO self-distillation" in card.text and "k = 20" in card.text and "CPU (x86_64)" in card.text
    assert card.data.base_model is None  # random init

    mae = str(tmp_path / "mae")
    decoder = (
        ARCH
        + ",decoder_hidden_size=32,decoder_num_hidden_layers=1,decoder_intermediate_size=64,decoder_num_attention_heads=2"
    )
    results = {"eval": {"loss": 0.8125}, "steps": 3}
    save_model(
        mae,
        "mae-base",
        task="pretraining",
        results=results,
        args={"method": "mae", "mask_ratio": 0.75},
        arch=decoder,
        training={
            "recipe": "pretrain",
            "method": "mae",
            "dataset": "digits",
            "base_model": "mae-base",
            "pretrained": True,
        },
    )
    export = publish.export_model(mae, "someone/mae").path
    card = check_card(export, results)  # a loss is no image-classification result: text only
    assert "| held-out loss | 0.8125 |" in card.text and card.data.license == registry.get_spec("mae-base").license
    assert "ViTMAEForPreTraining.from_pretrained" in card.text
    assert transformers.ViTMAEForPreTraining.from_pretrained(export).config.decoder_hidden_size == 32


@pytest.fixture
def hub_calls(monkeypatch):
    """The Hub client replaced at its network boundary; records every call."""
    calls = []

    def record(name, result=None):
        def method(self, *args, **kwargs):
            calls.append((name, self.token, args, kwargs))
            return result

        return method

    monkeypatch.setattr(HfApi, "create_repo", record("create_repo"))
    monkeypatch.setattr(HfApi, "create_branch", record("create_branch"))

    class Commit:
        commit_url = "https://huggingface.co/someone/x/commit/abc"

    monkeypatch.setattr(HfApi, "upload_folder", record("upload_folder", Commit()))
    return calls


def test_upload_arguments_and_token_never_leaks(classifier_run, tmp_path, hub_calls, monkeypatch, capsys):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    run = str(tmp_path / "run")
    os.makedirs(run)
    os.symlink(os.path.join(classifier_run, "model"), os.path.join(run, "model"))
    args = {**read(os.path.join(classifier_run, "args.json")), "note": FAKE_TOKEN, "hub_token": FAKE_TOKEN}
    with open(os.path.join(run, "args.json"), "w") as handle:
        json.dump(args, handle)
    export = str(tmp_path / "out")
    code = cli(["push", run, "--repo-id", "someone/x", "--private", "--revision", "exp", "--export-dir", export])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    assert [c[0] for c in hub_calls] == ["create_repo", "create_branch", "upload_folder"]
    name, token, args_, kwargs = hub_calls[0]
    assert args_ == ("someone/x",) and kwargs["private"] is True and kwargs["exist_ok"] is True and token == FAKE_TOKEN
    assert hub_calls[1][3]["branch"] == "exp"
    upload = hub_calls[2][3]
    assert upload["repo_id"] == "someone/x" and upload["folder_path"] == export and upload["revision"] == "exp"
    assert sorted(os.listdir(export)) == EXPORTED
    assert FAKE_TOKEN not in captured.out + captured.err and "commit/abc" in captured.out
    for name in os.listdir(export):
        with open(os.path.join(export, name), "rb") as handle:
            assert FAKE_TOKEN.encode() not in handle.read(), name
    assert read(os.path.join(export, "vitzoo.json"))["training"]["arguments"]["note"] == publish.REDACTED

    # the recipes' entry point: same export, one more commit
    assert publish.push_run(run, "someone/x") == "https://huggingface.co/someone/x/commit/abc"
    assert [c[0] for c in hub_calls].count("upload_folder") == 2


def test_dry_run_calls_nothing_and_needs_no_token(classifier_run, tmp_path, monkeypatch):
    def fail(*args, **kwargs):
        raise AssertionError("no network call in a dry run")

    monkeypatch.setattr(HfApi, "create_repo", fail)
    monkeypatch.setattr(HfApi, "upload_folder", fail)
    result = publish.push(classifier_run, "someone/x", dry_run=True, export_dir=tmp_path / "e", echo=lambda _: None)
    assert not result.uploaded and [f for f, _ in result.export.files] == EXPORTED


def test_no_token_keeps_export_and_says_how_to_log_in(classifier_run, tmp_path, hub_calls, capsys):
    export = str(tmp_path / "e")
    assert cli(["push", classifier_run, "--repo-id", "someone/x", "--export-dir", export]) == 2
    err = capsys.readouterr().err
    assert "hf auth login" in err and "HF_TOKEN" in err and export in err
    assert sorted(os.listdir(export)) == EXPORTED and hub_calls == []


@pytest.mark.parametrize("error", [ConnectionError("connection reset by peer"), "http500"])
def test_network_failure_keeps_export_and_retry_pushes_it(classifier_run, tmp_path, hub_calls, monkeypatch, error):
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    if error == "http500":
        import httpx2

        request = httpx2.Request("POST", "https://huggingface.co/api/models/someone/x/commit/main")
        error = HfHubHTTPError("500 Server Error", response=httpx2.Response(500, request=request))

    def broken(self, **kwargs):
        raise error

    monkeypatch.setattr(HfApi, "upload_folder", broken)
    export = str(tmp_path / "e")
    with pytest.raises(publish.PushError, match="intact") as failure:
        publish.push(classifier_run, "someone/x", export_dir=export, echo=lambda _: None)
    message = str(failure.value)
    assert f"vitzoo push {export} --repo-id someone/x" in message and FAKE_TOKEN not in message
    assert sorted(os.listdir(export)) == EXPORTED
    card_before = open(os.path.join(export, "README.md")).read()

    monkeypatch.undo()
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    calls = []
    monkeypatch.setattr(HfApi, "create_repo", lambda self, *a, **k: None)
    monkeypatch.setattr(HfApi, "upload_folder", lambda self, **k: calls.append(k) or "url")
    publish.push(export, "someone/x", echo=lambda _: None)  # the retry uploads the export as it is
    assert calls[0]["folder_path"] == os.path.abspath(export)
    assert open(os.path.join(export, "README.md")).read() == card_before


@pytest.mark.parametrize("repo_id", ["noslash", "a/b/c", "-user/name", "user/na me", "user/", "/name", "user/a..b"])
def test_bad_repo_id_fails_before_anything(classifier_run, tmp_path, repo_id):
    with pytest.raises(vitzoo.BadInputError, match="repo id"):
        publish.push(classifier_run, repo_id, dry_run=True, export_dir=tmp_path / "e")
    assert not (tmp_path / "e").exists()


def test_not_a_vitzoo_output(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(vitzoo.BadInputError, match="not a vitzoo output"):
        publish.push(tmp_path / "empty", "someone/x", dry_run=True)
    with pytest.raises(vitzoo.BadInputError, match="no such folder"):
        publish.push(tmp_path / "missing", "someone/x", dry_run=True)


def test_export_is_atomic_and_never_replaces_the_source(classifier_run, tmp_path, monkeypatch):
    export = tmp_path / "e"
    publish.export_model(classifier_run, "someone/x", export)
    before = {name: (export / name).read_bytes() for name in EXPORTED}

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setattr(publish.export, "_assert_no_secret", interrupted)  # the export module's last guard
    with pytest.raises(KeyboardInterrupt):
        publish.export_model(classifier_run, "someone/other", export)
    assert {name: (export / name).read_bytes() for name in EXPORTED} == before
    assert sorted(os.listdir(tmp_path)) == ["e"]  # no scratch folder left behind
    monkeypatch.undo()
    publish.export_model(classifier_run, "someone/other", export)
    with pytest.raises(vitzoo.BadInputError, match="would replace"):
        publish.export_model(classifier_run, "someone/x", classifier_run)
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("keep me")
    with pytest.raises(vitzoo.BadInputError, match="not a vitzoo export"):
        publish.export_model(classifier_run, "someone/x", tmp_path / "mine")
    assert (tmp_path / "mine" / "notes.txt").read_text() == "keep me"
    with pytest.raises(vitzoo.BadInputError, match="exported for someone/other"):
        publish.push(export, "someone/x", dry_run=True)


def test_scrub():
    data = {"a": "hf_abc", "token": "xyz", "nested": [{"url": f"https://x?t={FAKE_TOKEN}"}], "n": 3, "ok": "fine"}
    assert publish.scrub(data, (FAKE_TOKEN,)) == {
        "a": publish.REDACTED,
        "token": publish.REDACTED,
        "nested": [{"url": f"https://x?t={publish.REDACTED}"}],
        "n": 3,
        "ok": "fine",
    }


def test_every_kind_has_a_shipped_template():
    for kind in publish.TEMPLATES:
        assert os.path.isfile(publish.template_path(kind)), kind


def test_check_push_fails_fast_for_recipes(monkeypatch):
    """What --push-to-hub runs before training: a bad repo id or a missing token stop it at once."""
    with pytest.raises(vitzoo.BadInputError, match="repo id"):
        publish.check_push("nouser")
    with pytest.raises(vitzoo.BadInputError, match="--hub-model-id"):
        publish.check_push(None)
    with pytest.raises(publish.PushError, match="hf auth login"):
        publish.check_push("someone/x")
    monkeypatch.setenv("HF_TOKEN", FAKE_TOKEN)
    publish.check_push("someone/x")


def test_timm_backend_model_folder(tmp_path):
    zoo = vitzoo.load("deit-tiny", backend="timm", pretrained=False, num_labels=3, image_size=16, config_overrides=ARCH)
    zoo.save_pretrained(
        tmp_path / "model",
        extra_metadata={
            "training": {"recipe": "finetune", "dataset": "digits", "base_model": "deit-tiny", "pretrained": True}
        },
    )
    export = publish.export_model(tmp_path / "model", "someone/timm-deit").path
    assert export == str(tmp_path / "model-hub_export")
    assert sorted(os.listdir(export)) == ["README.md", "config.json", "model.safetensors", "vitzoo.json"]
    card = check_card(export)
    assert (
        card.data.library_name == "timm" and card.data.base_model == "timm/" + registry.get_spec("deit-tiny").timm_name
    )
    assert 'timm.create_model("hf-hub:someone/timm-deit", pretrained=True)' in card.text
    pixels = torch.randn(2, 3, 16, 16)
    assert torch.equal(vitzoo.load(export).logits(pixels), zoo.logits(pixels))


def test_class_and_folder_names_cannot_inject_markup_into_the_card(tmp_path):
    """A class folder or label with a newline, backticks or HTML stays inside its inline code in the
    card: no heading, no raw script block, and the YAML header still parses."""
    run = str(tmp_path / "run")
    folder = str(tmp_path / "photos\n# Injected folder heading")
    labels = ["cat\n# Injected heading", "<script>alert(1)</script>", "back`tick", "pipe|bar"]
    save_model(run, "deit-tiny", {"recipe": "finetune", "dataset": folder, "pretrained": False}, labels=labels,
               args={"dataset": folder, "model": "deit-tiny"})
    export = str(tmp_path / "export")
    assert cli(["push", run, "--repo-id", "someone/x", "--dry-run", "--export-dir", export]) == 0
    text = open(os.path.join(export, "README.md")).read()
    assert "<script>" not in text and "&lt;script&gt;alert(1)&lt;/script&gt;" in text
    assert not [line for line in text.splitlines() if line.lstrip().startswith("# Injected")]
    assert "cat\\n# Injected heading" in text  # the newline shown as an escape, inside the code span
    card = ModelCard.load(os.path.join(export, "README.md"))
    assert "vitzoo" in card.data.tags
