"""Distillation: DeiT's loss (checked by hand and against timm's tasks), the recipe with a frozen
teacher, and DINO's pieces (EMA teacher, centre, loss) and recipe, on tiny models and digits."""

from __future__ import annotations

import json
import math
import os

import numpy as np
import pytest
import timm
import torch
import transformers
from timm.task import LogitDistillationTask, TokenDistillationTask

import vitzoo
from vitzoo import methods
from vitzoo.objectives import deit_distill as deit_module
from vitzoo.objectives import dino
from vitzoo.objectives.deit_distill import deit_distillation_loss, teacher_class_index

OVERRIDES = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
TINY = ["--scratch", "--config-overrides", OVERRIDES, "--image-size", "16", "--batch-size", "16", "--num-workers", "0",
        "--max-train-samples", "96", "--max-eval-samples", "32", "--hflip", "0", "--log-steps", "1"]


def logits_fixture():
    torch.manual_seed(0)
    return torch.randn(4, 5), torch.randn(4, 5), torch.randn(4, 5), torch.tensor([0, 3, 1, 4])


def test_loss_matches_hand_computation_for_each_type():
    cls, dist, teacher, labels = logits_fixture()

    def ce(logits, target):  # by hand: -log softmax at the target, averaged
        return -(logits - logits.exp().sum(1, keepdim=True).log())[torch.arange(4), target].mean()

    base = ce(cls, labels)
    assert torch.allclose(deit_distillation_loss(cls, dist, teacher, labels, distill_type="none"), base)
    hard = deit_distillation_loss(cls, dist, teacher, labels, distill_type="hard", alpha=0.5)
    assert torch.allclose(hard, 0.5 * base + 0.5 * ce(dist, teacher.argmax(1)))  # the teacher's argmax
    tau = 2.0
    p_t = (teacher / tau).softmax(1)
    kl = (p_t * (p_t.log() - (dist / tau).log_softmax(1))).sum(1).mean() * tau**2
    soft = deit_distillation_loss(cls, dist, teacher, labels, distill_type="soft", alpha=0.3, tau=tau)
    assert torch.allclose(soft, 0.7 * base + 0.3 * kl, atol=1e-6)
    # hard distillation ignores how confident the teacher is
    assert torch.allclose(hard, deit_distillation_loss(cls, dist, teacher * 10, labels, distill_type="hard"))


def _tiny_timm(name, **kwargs):
    return timm.create_model(name, num_classes=5, img_size=16, patch_size=4, embed_dim=32, depth=2, num_heads=2,
                             mlp_ratio=2, **kwargs)


@pytest.mark.parametrize("distill_type", ["soft", "hard"])
def test_timm_token_task_equals_our_loss(distill_type):
    """timm's TokenDistillationTask (timm students) and our transformers-path loss agree on the same logits."""
    torch.manual_seed(0)
    student = _tiny_timm("deit_tiny_distilled_patch16_224").train()
    teacher = _tiny_timm("vit_tiny_patch16_224")
    task = TokenDistillationTask(student, teacher, criterion=torch.nn.CrossEntropyLoss(), distill_type=distill_type,
                                 task_loss_weight=0.5, temperature=2.0, verbose=False)
    seen = {}
    student.register_forward_hook(lambda m, i, o: seen.__setitem__("student", o))
    teacher.register_forward_hook(lambda m, i, o: seen.__setitem__("teacher", o))
    pixels, labels = torch.randn(3, 3, 16, 16), torch.tensor([1, 2, 4])
    out = task(pixels, labels)
    cls, dist = seen["student"]
    ours = deit_distillation_loss(cls, dist, seen["teacher"], labels, distill_type=distill_type, alpha=0.5, tau=2.0)
    assert torch.allclose(out["loss"], ours, atol=1e-6)


def test_timm_logit_task_equals_our_loss():
    torch.manual_seed(0)
    student, teacher = _tiny_timm("vit_tiny_patch16_224"), _tiny_timm("vit_tiny_patch16_224")
    task = LogitDistillationTask(student, teacher, criterion=torch.nn.CrossEntropyLoss(), task_loss_weight=0.25,
                                 temperature=3.0, verbose=False)
    seen = {}
    teacher.register_forward_hook(lambda m, i, o: seen.__setitem__("teacher", o))
    student.register_forward_hook(lambda m, i, o: seen.__setitem__("student", o))
    pixels, labels = torch.randn(3, 3, 16, 16), torch.tensor([1, 2, 4])
    out = task(pixels, labels)
    s = seen["student"]
    ours = deit_distillation_loss(s, s, seen["teacher"], labels, distill_type="soft", alpha=0.75, tau=3.0)
    assert torch.allclose(out["loss"], ours, atol=1e-6)


def test_label_sets_must_match_unless_mapped(tmp_path):
    student = {0: "cat", 1: "dog"}
    assert teacher_class_index({0: "dog", 1: "cat"}, student).tolist() == [1, 0]
    with pytest.raises(vitzoo.BadInputError, match="label-map"):
        teacher_class_index({0: "dog", 1: "cat", 2: "fox"}, student)
    with pytest.raises(vitzoo.BadInputError, match="label-map"):
        teacher_class_index({0: "dog", 1: "wolf"}, student)
    assert teacher_class_index({0: "wolf", 1: "x", 2: "tabby"}, student, "tabby=cat,wolf=dog").tolist() == [2, 0]
    mapping = tmp_path / "map.json"
    mapping.write_text(json.dumps({"tabby": "cat", "wolf": "dog"}))
    assert teacher_class_index({0: "wolf", 1: "tabby"}, student, str(mapping)).tolist() == [1, 0]


def test_teacher_with_other_classes_fails_before_training(tiny_hub, tmp_path):
    with pytest.raises(vitzoo.BadInputError, match="1000 classes"):  # an ImageNet teacher on digits
        methods.run("distill", ["--model", "deit-tiny-distilled", *TINY, "--teacher", "deit-small", "--output-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_distilled_student_trains_with_frozen_cnn_teacher(tiny_hub, tmp_path, monkeypatch):
    teachers = []
    original = deit_module.FrozenTeacher.__init__

    def keep(self, *args, **kwargs):
        original(self, *args, **kwargs)
        teachers.append(self)

    monkeypatch.setattr(deit_module.FrozenTeacher, "__init__", keep)
    output = str(tmp_path / "run")
    results = methods.run("distill", ["--model", "deit-tiny-distilled", *TINY, "--teacher", "resnet18", "--teacher-scratch",
                            "--epochs", "1", "--output-dir", output])
    teacher = teachers[0]
    assert not teacher.model.training and all(not p.requires_grad and p.grad is None for p in teacher.model.parameters())
    assert sorted(os.listdir(output)) == ["args.json", "checkpoints", "curves.png", "metrics.jsonl", "model", "results.json"]
    assert results["distillation_token"] and results["steps"] == 96 // 16
    events = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    assert all(0 <= e["teacher_time_share"] <= 1 for e in events if "loss" in e)
    # the saved student: vitzoo and transformers, both heads averaged at inference (in fp32, as transformers runs)
    zoo = vitzoo.load(os.path.join(output, "model"), precision="fp32")
    plain = transformers.DeiTForImageClassificationWithTeacher.from_pretrained(os.path.join(output, "model"))
    pixels = torch.randn(2, 3, 16, 16)
    with torch.no_grad():
        out = plain(pixel_values=pixels)
        assert torch.allclose(out.logits, (out.cls_logits + out.distillation_logits) / 2, atol=1e-6)
        assert torch.allclose(zoo.logits(pixels), out.logits, atol=1e-5)
        assert not torch.allclose(out.cls_logits, out.distillation_logits)  # the distillation head trained apart


def test_teacher_weights_unchanged(tiny_hub, tmp_path):
    """A teacher folder (a vitzoo fine-tune output) is read, never written: same weights after training."""
    from safetensors.torch import load_file

    teacher_dir = str(tmp_path / "teacher")
    vitzoo.load("deit-tiny", task="classification", pretrained=False, id2label=[str(i) for i in range(10)],
                image_size=16, config_overrides=OVERRIDES).save_pretrained(teacher_dir)
    before = load_file(os.path.join(teacher_dir, "model.safetensors"))
    seen, snapshots = [], []
    original = deit_module.FrozenTeacher.forward

    def spy(self, pixels):
        if not snapshots:
            snapshots.append((self.model, {k: v.clone() for k, v in self.model.state_dict().items()}))
        logits = original(self, pixels)
        seen.append(logits.requires_grad)
        return logits

    deit_module.FrozenTeacher.forward = spy
    try:
        methods.run("distill", ["--model", "deit-tiny", *TINY, "--teacher", teacher_dir, "--distill-type", "soft", "--tau", "2",
                      "--epochs", "1", "--output-dir", str(tmp_path / "run")])
    finally:
        deit_module.FrozenTeacher.forward = original
    assert seen and not any(seen)
    model, start = snapshots[0]
    for key, value in model.state_dict().items():  # in memory, after every step
        assert torch.equal(value, start[key]), key
        assert value.grad is None
    after = load_file(os.path.join(teacher_dir, "model.safetensors"))
    assert all(torch.equal(value, after[key]) for key, value in before.items())


# --------------------------------------------------------------------------- DINO
def test_dino_ema_teacher_and_center():
    torch.manual_seed(0)
    student, teacher = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    expected = [0.9 * t + 0.1 * s for s, t in zip(student.parameters(), teacher.parameters())]
    dino.ema_update(student, teacher, 0.9)
    for got, want in zip(teacher.parameters(), expected):
        assert torch.allclose(got, want)
    loss = dino.DINOLoss(3, num_crops=3, warmup_teacher_temp=0.04, teacher_temp=0.07, warmup_teacher_temp_epochs=2,
                         epochs=4)
    assert loss.teacher_temperature(0) == pytest.approx(0.04) and loss.teacher_temperature(3) == pytest.approx(0.07)
    teacher_out = torch.randn(4, 3)
    value = loss(torch.randn(6, 3), teacher_out, epoch=0)
    assert torch.isfinite(value)
    assert torch.allclose(loss.center, 0.1 * teacher_out.mean(0, keepdim=True))  # momentum 0.9 from zero
    m = dino.cosine_at(0.996, 1.0, np.arange(10), 10)
    assert m[0] == pytest.approx(0.996) and m[-1] < 1 and all(a <= b for a, b in zip(m, m[1:]))


def test_dino_momentum_and_weight_decay_follow_the_planned_steps():
    """Read from the plan at each step: a time budget that plans the run again moves them with the learning rate."""
    from types import SimpleNamespace

    objective = dino.DINO.__new__(dino.DINO)
    objective.momentum_start, objective.weight_decay, objective.weight_decay_end = 0.99, 0.04, 0.4
    context = SimpleNamespace(plan=SimpleNamespace(total_steps=10))
    by_hand = [1.0 + 0.5 * (0.99 - 1.0) * (1 + math.cos(math.pi * step / 10)) for step in range(10)]
    assert [objective._momentum(step, context) for step in range(10)] == pytest.approx(by_hand)
    assert list(dino.cosine_at(0.99, 1.0, np.arange(10), 10)) == pytest.approx(by_hand)  # vectorised, the same
    assert objective._momentum(25, context) == pytest.approx(by_hand[-1])  # past the plan: its last value
    context.plan.total_steps = 100  # planned again for more steps: step 5 is now near the start
    assert objective._momentum(5, context) == pytest.approx(1.0 + 0.5 * (0.99 - 1.0) * (1 + math.cos(math.pi * 5 / 100)))
    assert objective._weight_decay(50, context) == pytest.approx(0.22)  # halfway between 0.04 and 0.4


def test_dino_loss_hand_computation():
    loss = dino.DINOLoss(3, num_crops=3, warmup_teacher_temp=0.5, teacher_temp=0.5, warmup_teacher_temp_epochs=0,
                         epochs=1, student_temp=0.1)
    s, t = torch.randn(6, 3), torch.randn(4, 3)
    ps = [(c / 0.1).log_softmax(-1) for c in s.chunk(3)]
    pt = [(c / 0.5).softmax(-1) for c in t.chunk(2)]
    pairs = [(0, 1), (0, 2), (1, 0), (1, 2)]
    want = sum(-(pt[a] * ps[b]).sum(-1).mean() for a, b in pairs) / 4
    assert torch.allclose(loss(s, t, 0), want)


def test_dino_head_and_loss_falls():
    """The student learns to match the (slowly moving) EMA teacher: the loss falls."""
    torch.manual_seed(0)
    student = torch.nn.Sequential(torch.nn.Linear(12, 8), dino.DINOHead(8, 16, hidden_dim=32, bottleneck_dim=8))
    teacher = torch.nn.Sequential(torch.nn.Linear(12, 8), dino.DINOHead(8, 16, hidden_dim=32, bottleneck_dim=8))
    assert not student[1].last_layer.parametrizations.weight.original0.requires_grad  # norm fixed to 1
    criterion = dino.DINOLoss(16, 4, 0.04, 0.04, 0, 1)
    optimizer = torch.optim.AdamW(student.parameters(), lr=3e-3)
    base = torch.randn(32, 12)
    losses = []
    for _ in range(40):
        views = [base + 0.1 * torch.randn_like(base) for _ in range(4)]
        with torch.no_grad():
            t = teacher(torch.cat(views[:2]))
        loss = criterion(student(torch.cat(views)), t, 0)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        dino.ema_update(student, teacher, 0.996)
        losses.append(loss.item())
    assert sum(losses[-5:]) / 5 < 0.75 * sum(losses[:5]) / 5


def test_dino_head_batch_norm_and_learnt_last_layer_norm():
    torch.manual_seed(0)
    plain = dino.DINOHead(8, 16, hidden_dim=32, bottleneck_dim=8)
    head = dino.DINOHead(8, 16, hidden_dim=32, bottleneck_dim=8, batch_norm=True, norm_last_layer=False)
    assert not plain.has_batch_norm and head.has_batch_norm
    assert sum(isinstance(m, torch.nn.BatchNorm1d) for m in head.mlp) == 2  # after both hidden layers, not the bottleneck
    magnitude = head.last_layer.parametrizations.weight.original0
    assert magnitude.requires_grad and torch.all(magnitude == 1)
    # in train mode the batch norm standardises every hidden unit over the batch: an offset shared by all
    # inputs cannot reach the output, so it cannot make the outputs alike
    x = torch.randn(64, 8)
    head.train()
    assert torch.allclose(head(x), head(x + 5.0), atol=1e-4)
    assert not torch.allclose(plain(x), plain(x + 5.0), atol=1e-4)


def test_dino_collapse_monitor():
    """The teacher's entropy over prototypes tells uniform collapse (ln K) and one-prototype collapse
    (batch-mean entropy near 0) from a teacher that spreads images over prototypes."""
    def monitor(teacher_out: torch.Tensor) -> dino.DINOLoss:
        loss = dino.DINOLoss(16, num_crops=2, warmup_teacher_temp=0.04, teacher_temp=0.04, warmup_teacher_temp_epochs=0,
                             epochs=1)
        loss(torch.randn(teacher_out.shape), teacher_out, 0)
        return loss

    constant = monitor(torch.full((8, 16), 0.3))
    assert float(constant.teacher_entropy) == pytest.approx(math.log(16), abs=1e-5)
    assert constant.collapse() == "uniform"
    one = torch.zeros(8, 16)
    one[:, 3] = 1.0  # every image on prototype 3; the centre starts at zero, so the teacher is one-hot
    collapsed = monitor(one)
    assert float(collapsed.mean_teacher_entropy) < 0.01 and collapsed.collapse() == "one prototype"
    spread = torch.zeros(8, 16)
    spread[torch.arange(8), torch.arange(8)] = 1.0  # image i on prototype i
    healthy = monitor(spread)
    assert float(healthy.mean_teacher_entropy) == pytest.approx(math.log(8), abs=1e-3)
    assert float(healthy.teacher_entropy) < 0.01 and healthy.collapse() is None


def test_multicrop_packs_and_unpacks():
    crop = dino.MultiCrop(16, 8, 3)
    canvas = crop(torch.randint(0, 255, (3, 8, 8), dtype=torch.uint8))
    assert canvas.shape == (3, 16, 2 * 16 + 3 * 8)
    views = dino.unpack_crops(canvas[None], 16, 8, 3)
    assert [v.shape[-1] for v in views] == [16, 16, 8, 8, 8]
    assert dino.local_crop_size(224, 16) == 96 and dino.local_crop_size(16, 4) == 8


def test_dino_recipe_saves_a_backbone(tiny_hub, tmp_path):
    output = str(tmp_path / "dino")
    with pytest.warns(UserWarning, match="centre"):
        results = methods.run("distill", ["--method", "dino", "--model", "dino-vits16", *TINY, "--batch-size", "8",
                                "--max-train-samples", "32", "--out-dim", "32", "--head-hidden-dim", "32",
                                "--head-bottleneck-dim", "16", "--local-crops", "2", "--head-batch-norm",
                                "--epochs", "1", "--output-dir", output])
    assert results["steps"] == 4 and 0 <= results["eval"]["knn_accuracy"] <= 1
    events = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    centres = [e["center_norm"] for e in events if "center_norm" in e]
    assert centres[0] > 0 and centres[-1] != centres[0]
    entropies = [e["teacher_entropy"] for e in events if "teacher_entropy" in e]
    assert entropies and all(0 <= h <= math.log(32) + 1e-4 for h in entropies)
    # the k-NN of the backbone before any step is logged as epoch 0 and reported next to the final one; it is
    # the k-NN of the same random init scored on its own
    knn = {e["epoch"]: e["knn_accuracy"] for e in events if "knn_accuracy" in e}
    assert sorted(knn) == [0, 1] and results["eval"]["knn_accuracy_at_start"] == knn[0]
    from vitzoo.cli import main as cli

    scored = str(tmp_path / "random_init.json")
    assert cli(["evaluate", "dino-vits16", "--scratch", "--config-overrides", OVERRIDES, "--image-size", "16",
                "--dataset", "digits", "--max-train-samples", "32", "--max-eval-samples", "32", "--ks", "20",
                "--no-cache", "--output", scored]) == 0
    assert json.load(open(scored))["knn"]["20"]["accuracy"] == pytest.approx(knn[0], abs=1e-6)
    assert os.path.getsize(os.path.join(output, "dino_curves.png")) > 0
    zoo = vitzoo.load(os.path.join(output, "model"), task="features")
    assert zoo.features(torch.randn(2, 3, 16, 16)).shape == (2, 32)


def launch_two_processes(output: str, *argv: str):
    """`accelerate launch --multi_gpu --num_processes 2` of recipes/distill.py on CPUs (gloo); (results, stdout)."""
    import subprocess
    import sys

    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    command = [sys.executable, "-m", "accelerate.commands.launch", "--multi_gpu", "--num_processes", "2",
               "--num_machines", "1", "--mixed_precision", "no", "--dynamo_backend", "no",
               os.path.join(root, "recipes", "distill.py"), *argv, "--output-dir", output]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    done = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    with open(os.path.join(output, "results.json")) as handle:
        return json.load(handle), done.stdout


def test_two_process_launch(tmp_path):
    """`accelerate launch --num_processes 2` on CPUs: one distilled student, a teacher per process."""
    results, stdout = launch_two_processes(str(tmp_path / "ddp"), "--model", "deit-tiny-distilled", *TINY,
                                           "--teacher", "resnet18", "--teacher-scratch", "--epochs", "1")
    assert results["num_processes"] == 2 and results["steps"] == 96 // 16 // 2
    assert results["eval"]["samples"] == 32
    assert "distributed: DDP over 2 CPU processes" in stdout


def test_two_process_cached_teacher_logits_match_the_live_teacher(tmp_path):
    """Under 2 processes each caches its shard and the shards are gathered: the losses of every step
    (both epochs, samples from either shard) equal those of the same run with the live teacher."""
    argv = ["--model", "deit-tiny-distilled", *TINY, *NO_AUGMENTATION, "--teacher", "resnet18", "--teacher-scratch",
            "--distill-type", "soft", "--tau", "2", "--epochs", "2"]
    live, _ = launch_two_processes(str(tmp_path / "live"), *argv)
    cached, stdout = launch_two_processes(str(tmp_path / "cached"), *argv, "--cache-teacher-logits")
    assert "cached the teacher's logits of 96 training images" in stdout
    assert cached["cached_teacher_logits"] and not live["cached_teacher_logits"]
    assert cached["num_processes"] == 2 and cached["steps"] == live["steps"] == 2 * 96 // 16 // 2

    def losses(run):
        with open(os.path.join(str(tmp_path / run), "metrics.jsonl")) as handle:
            return [event["loss"] for event in map(json.loads, handle) if "loss" in event]

    assert len(losses("cached")) == cached["steps"]
    assert losses("cached") == pytest.approx(losses("live"), rel=1e-4)


def test_two_process_dino(tmp_path):
    """DINO under `accelerate launch --num_processes 2`: one student, its EMA teacher and the centre in step."""
    output = str(tmp_path / "dino")
    results, stdout = launch_two_processes(
        output, "--method", "dino", "--model", "dino-vits16", *TINY, "--out-dim", "32", "--head-hidden-dim", "32",
        "--head-bottleneck-dim", "16", "--local-crops", "2", "--epochs", "2")
    assert "distributed: DDP over 2 CPU processes" in stdout
    assert results["num_processes"] == 2 and results["steps"] == 2 * 96 // 16 // 2
    assert 0 <= results["eval"]["knn_accuracy"] <= 1 and results["final_loss"] == results["final_loss"]  # not NaN
    events = [json.loads(line) for line in open(os.path.join(output, "metrics.jsonl"))]
    centres = [e["center_norm"] for e in events if "center_norm" in e]
    assert len(centres) == results["steps"] and centres[-1] != centres[0]
    zoo = vitzoo.load(os.path.join(output, "model"), task="features")
    assert zoo.features(torch.randn(2, 3, 16, 16)).shape == (2, 32)


# --------------------------------------------------------------------------- cached teacher logits
NO_AUGMENTATION = ["--no-random-resized-crop", "--hflip", "0", "--mixup", "0", "--cutmix", "0"]


def test_cached_teacher_logits_give_the_live_loss(tiny_hub, tmp_path, monkeypatch):
    """--cache-teacher-logits: the teacher runs over the training set once, before the first step, and
    each step's loss equals the one the live teacher gives on the same batch, under the same autocast."""
    events, steps = [], []
    forward, heads, loss_fn = deit_module.FrozenTeacher.forward, deit_module.student_heads, deit_module.deit_distillation_loss

    def teacher_spy(self, pixels):
        events.append(("teacher", pixels.shape[0]))
        return forward(self, pixels)

    def heads_spy(model, pixels):
        events.append(("student", pixels.shape[0]))
        autocast = (torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"))
        cls, dist = heads(model, pixels)
        steps.append({"pixels": pixels.detach().clone(), "cls": cls.detach().clone(), "dist": dist.detach().clone(),
                      "autocast": autocast})
        return cls, dist

    def loss_spy(cls, dist, teacher_logits, targets, **kwargs):
        loss = loss_fn(cls, dist, teacher_logits, targets, **kwargs)
        steps[-1].update(targets=targets.clone(), loss=loss.detach().clone(), kwargs=kwargs,
                         teacher_autocast=torch.is_autocast_enabled("cpu"))
        return loss

    teachers = []
    init = deit_module.FrozenTeacher.__init__
    monkeypatch.setattr(deit_module.FrozenTeacher, "__init__", lambda self, *a, **k: (init(self, *a, **k), teachers.append(self))[0])
    monkeypatch.setattr(deit_module.FrozenTeacher, "forward", teacher_spy)
    monkeypatch.setattr(deit_module, "student_heads", heads_spy)
    monkeypatch.setattr(deit_module, "deit_distillation_loss", loss_spy)
    results = methods.run("distill", ["--model", "deit-tiny-distilled", *TINY, *NO_AUGMENTATION, "--teacher", "resnet18",
                            "--teacher-scratch", "--distill-type", "soft", "--tau", "2", "--eval-batch-size", "40",
                            "--cache-teacher-logits", "--epochs", "2", "--output-dir", str(tmp_path / "run")])
    assert results["cached_teacher_logits"] and results["steps"] == 2 * 96 // 16
    # one batched pass over all 96 training images, then never again (evaluation runs the student alone)
    first_student = next(i for i, (who, _) in enumerate(events) if who == "student")
    assert events[:first_student] == [("teacher", 40), ("teacher", 40), ("teacher", 16)]
    assert all(who == "student" for who, _ in events[first_student:])
    assert results["teacher_time_share"] == 0.0 and results["teacher_cache_seconds"] > 0
    # every step, both epochs: the live teacher on that step's pixels gives the same loss
    monkeypatch.setattr(deit_module.FrozenTeacher, "forward", forward)
    teacher = teachers[0]
    training = [s for s in steps if "loss" in s]
    assert len(training) == results["steps"]
    for step in training:
        enabled, dtype = step["autocast"]
        assert step["teacher_autocast"] == enabled
        with torch.autocast("cpu", dtype=dtype, enabled=enabled):
            live = teacher(step["pixels"])
        expected = loss_fn(step["cls"], step["dist"], live, step["targets"], **step["kwargs"])
        assert torch.allclose(step["loss"], expected, rtol=1e-3, atol=1e-4), (step["loss"], expected)
    # and the loss does depend on the teacher's logits: other logits, another loss
    step = training[0]
    other = loss_fn(step["cls"], step["dist"], torch.randn_like(live), step["targets"], **step["kwargs"])
    assert not torch.allclose(step["loss"], other, rtol=1e-3, atol=1e-4)


@pytest.mark.parametrize(("flags", "named"), [
    (["--hflip", "0"], "random resized crop"),  # on by default
    (["--no-random-resized-crop", "--hflip", "0.5"], "--hflip 0.5"),
    (["--no-random-resized-crop", "--hflip", "0", "--auto-augment", "rand"], "--auto-augment rand"),
    (["--no-random-resized-crop", "--hflip", "0", "--mixup", "0.2"], "--mixup 0.2"),
    (["--no-random-resized-crop", "--hflip", "0", "--cutmix", "1.0"], "--cutmix 1.0"),
])
def test_cached_teacher_logits_refused_with_augmentation(tiny_hub, tmp_path, flags, named):
    argv = ["--model", "deit-tiny-distilled", *TINY, *flags, "--teacher", "resnet18", "--teacher-scratch",
            "--cache-teacher-logits", "--output-dir", str(tmp_path / "x")]
    with pytest.raises(vitzoo.BadInputError, match="--cache-teacher-logits") as error:
        methods.run("distill", argv)
    assert named in str(error.value)
    assert not (tmp_path / "x" / "checkpoints").exists()


def test_cached_teacher_logits_refused_for_dino(tmp_path):
    with pytest.raises(vitzoo.BadInputError, match="--cache-teacher-logits"):
        methods.run("distill", ["--method", "dino", "--cache-teacher-logits", "--output-dir", str(tmp_path / "x")])


# --------------------------------------------------------------------------- resume
@pytest.mark.parametrize("method", ["deit", "dino"])
def test_resume_matches_uninterrupted_run(tiny_hub, tmp_path, crash_after_checkpoint, method):
    """Killed mid-epoch and resumed with --resume auto, a run ends with the same weights (DINO: the
    saved teacher backbone, so its EMA and the centre are restored too)."""
    from safetensors.torch import load_file

    from vitzoo.training import checkpoint as checkpoint_module

    if method == "deit":
        argv = ["--model", "deit-tiny-distilled", *TINY, "--teacher", "resnet18", "--teacher-scratch",
                "--max-train-samples", "64"]
    else:
        argv = ["--method", "dino", "--model", "dino-vits16", *TINY, "--max-train-samples", "64",
                "--out-dim", "32", "--head-hidden-dim", "32", "--head-bottleneck-dim", "16", "--local-crops", "2"]
    argv += ["--epochs", "2", "--checkpoint-steps", "3", "--seed", "3"]
    straight = str(tmp_path / "straight")
    methods.run("distill", [*argv, "--output-dir", straight])

    resumed = str(tmp_path / "resumed")
    with pytest.raises(KeyboardInterrupt):
        methods.run("distill", [*argv, "--output-dir", resumed], callbacks=[crash_after_checkpoint(3)])
    assert checkpoint_module.latest_checkpoint(resumed).endswith("step-00000003")  # mid-epoch (4 steps each)
    results = methods.run("distill", [*argv, "--resume", "auto", "--output-dir", resumed])
    assert results["steps"] == 8
    expected = load_file(os.path.join(straight, "model", "model.safetensors"))
    got = load_file(os.path.join(resumed, "model", "model.safetensors"))
    assert expected.keys() == got.keys()
    for key in expected:
        assert torch.equal(expected[key], got[key]), key


# --------------------------------------------------------------------------- --push-to-hub
@pytest.mark.parametrize("method", ["deit", "dino"])
def test_push_to_hub_checked_first_and_run_pushed_at_the_end(tiny_hub, tmp_path, monkeypatch, method):
    from vitzoo import publish

    if method == "deit":
        argv = ["--model", "deit-tiny-distilled", *TINY, "--teacher", "resnet18", "--teacher-scratch"]
    else:
        argv = ["--method", "dino", "--model", "dino-vits16", *TINY, "--out-dim", "32", "--head-hidden-dim", "32",
                "--head-bottleneck-dim", "16", "--local-crops", "2"]
    argv += ["--max-train-samples", "32", "--epochs", "1"]
    folder = tmp_path / "no-repo"
    with pytest.raises(vitzoo.BadInputError, match="--hub-model-id"):
        methods.run("distill", [*argv, "--push-to-hub", "--output-dir", str(folder)])
    assert not folder.exists()  # nothing trained, nothing written
    pushed = []
    monkeypatch.setenv("HF_TOKEN", "hf_fakeTOKEN0123456789abcdefghijklmnop")
    monkeypatch.setattr(publish, "push_run", lambda output_dir, repo_id, **kwargs: pushed.append((output_dir, repo_id, kwargs)))
    folder = str(tmp_path / "pushed")
    methods.run("distill", [*argv, "--push-to-hub", "--hub-model-id", "someone/distilled", "--hub-revision", "v1",
                  "--output-dir", folder])
    assert pushed == [(folder, "someone/distilled", {"private": False, "revision": "v1"})]
    assert os.path.isfile(os.path.join(folder, "model", "model.safetensors"))  # pushed once the model was saved
