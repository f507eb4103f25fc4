"""Collapse and stalls caught as they happen (vitzoo/training/watch.py and each objective's `health`): every
sign on hand-made series (numbers worked out by hand), healthy series that must stay quiet, the watch's
once-per-sign reporting and its resume, and whole runs: a DINO run forced to collapse (a high learning rate,
no head batch norm) warns and, with --stop-on-collapse, ends early keeping its best teacher; the documented
good settings warn of nothing; a fine-tune at learning rate 0 stalls at ln(10) and stops, and its resume
neither trains nor warns again."""

from __future__ import annotations

import json
import math
import os
from types import SimpleNamespace

import pytest
import torch
from timm.loss import LabelSmoothingCrossEntropy, SoftTargetCrossEntropy

from vitzoo import methods
from vitzoo.objectives.classification import Classification, chance_loss_sign
from vitzoo.objectives.deit_distill import DeiTDistillation
from vitzoo.objectives.dino import collapse_signs
from vitzoo.objectives.mim import MAEObjective
from vitzoo.training.objective import History, Objective, Plan, Sign
from vitzoo.training.watch import MIN_STEPS, Watch

LN10, LN256 = 2.302585, 5.545177  # ln(10), ln(256)


def history(*losses: float, key: str = "loss", first_step: int = 1, **more: list[float]) -> History:
    """Training events at consecutive steps with `key` (and other keys) logged."""
    events = [{"step": first_step + i, key: value} for i, value in enumerate(losses)]
    for name, values in more.items():
        for event, value in zip(events, values):
            event[name] = value
    return History(training=events)


def context(step: int, plan: Plan | None = None, objective: Objective | None = None, run=None) -> SimpleNamespace:
    return SimpleNamespace(state=SimpleNamespace(step=step), plan=plan, objective=objective, run=run, epoch_position=1.0,
                           accelerator=SimpleNamespace(is_main_process=True, num_processes=1))


# --------------------------------------------------------------------------- fine-tuning: the loss at ln(classes)
def test_uniform_predictions_cost_ln_classes_whatever_the_targets():
    """The premise of the stall sign: uniform logits give ln(10) with hard labels, label smoothing and mixed targets."""
    logits, labels = torch.zeros(4, 10), torch.tensor([0, 3, 7, 9])
    mixed = torch.softmax(torch.randn(4, 10), dim=-1)
    assert float(LabelSmoothingCrossEntropy(0.0)(logits, labels)) == pytest.approx(LN10, abs=1e-6)
    assert float(LabelSmoothingCrossEntropy(0.1)(logits, labels)) == pytest.approx(LN10, abs=1e-6)
    assert float(SoftTargetCrossEntropy()(logits, mixed)) == pytest.approx(LN10, abs=1e-6)


def test_the_loss_at_chance_is_a_stall_and_a_falling_loss_is_not():
    # mean 2.302 = 100.0% of ln(10) = 2.303
    sign = chance_loss_sign([2.31, 2.30, 2.29, 2.30, 2.31], 10)
    assert sign.name == "loss_at_chance" and sign.kind == "stall"
    assert "loss 2.302 over the last 5 logs is 100.0% of ln(10) = 2.303" in sign.finding
    assert "--learning-rate" in sign.advice
    assert chance_loss_sign([2.6, 2.5, 2.4], 10) is not None  # above chance (diverged) is no better
    # the line is 0.98 x 2.302585 = 2.2565: a mean of 2.26 is on it, 2.25 below
    assert chance_loss_sign([2.26] * 5, 10) is not None and chance_loss_sign([2.25] * 5, 10) is None
    assert chance_loss_sign([2.0, 1.9, 1.8, 1.7, 1.6], 10) is None  # a healthy run: mean 1.8
    assert chance_loss_sign([], 10) is None


def test_classification_reads_its_sign_after_the_first_epoch_and_the_warm_up():
    objective, stalled = Classification(10, mixup=0.8), history(*[2.30] * 200)
    plan = Plan(epochs=4, steps_per_epoch=60, total_steps=240, batches_per_epoch=60, warmup_ratio=0.0)
    assert objective.health(context(59, plan), stalled) == []
    assert [sign.name for sign in objective.health(context(60, plan), stalled)] == ["loss_at_chance"]
    plan.warmup_ratio = 0.5  # 120 warm-up steps, longer than the epoch
    assert objective.health(context(119, plan), stalled) == [] and objective.health(context(120, plan), stalled)
    # soft distillation has no chance line (a uniform student's KL is ln C less the teacher's entropy); hard has
    soft = DeiTDistillation(10, teacher=object(), distill_type="soft")
    hard = DeiTDistillation(10, teacher=object(), distill_type="hard")
    assert soft.health(context(120, plan), stalled) == [] and hard.health(context(120, plan), stalled)


# --------------------------------------------------------------------------- DINO: the teacher's entropy and k-NN
def test_dino_uniform_collapse():
    # the teacher's entropy 5.53 of ln(256) = 5.545: 99.7%
    signs = collapse_signs(history(*[5.53] * 5, key="teacher_entropy", mean_teacher_entropy=[5.54] * 5), 256)
    assert [sign.name for sign in signs] == ["dino_uniform"] and signs[0].kind == "collapse"
    assert "teacher entropy 5.53 is 99.7% of ln(256) = 5.55 (uniform outputs)" in signs[0].finding
    assert "--head-batch-norm" in signs[0].advice and "docs/distillation.md" in signs[0].advice
    # the line is 0.98 x 5.545177 = 5.4343, on the mean of the newest 5 logs
    assert collapse_signs(history(*[5.44] * 5, key="teacher_entropy", mean_teacher_entropy=[5.5] * 5), 256)
    assert not collapse_signs(history(*[5.42] * 5, key="teacher_entropy", mean_teacher_entropy=[5.5] * 5), 256)


def test_dino_one_prototype_collapse():
    # every image on one prototype: the batch-mean output's entropy 0.01 is 0.2% of ln(256)
    signs = collapse_signs(history(*[0.01] * 5, key="teacher_entropy", mean_teacher_entropy=[0.01] * 5), 256)
    assert [sign.name for sign in signs] == ["dino_one_prototype"]
    assert "entropy 0.01, 0.2% of ln(256) = 5.55 (every image on one prototype)" in signs[0].finding
    # the line is 0.1 x 5.545 = 0.5545: a sharp teacher (entropy 0.05 per image) spread over prototypes is healthy
    assert not collapse_signs(history(*[0.05] * 5, key="teacher_entropy", mean_teacher_entropy=[0.6] * 5), 256)


def test_the_documented_good_dino_run_shows_no_sign():
    """docs/distillation.md's seed-0 run, read off its figure: teacher entropy ~4.7 with one spike to 5.35
    (96.5% of ln 256, under the 98% line even alone), batch-mean entropy ~5.45, and a k-NN that dips below
    its start (53.5%) once, at epoch 1 (52.7%), then climbs."""
    entropies = [4.66, 4.70, 5.35, 4.68, 4.70]  # the mean, 4.818, is 86.9% of ln(256)
    logged = history(*entropies, key="teacher_entropy", mean_teacher_entropy=[5.45] * 5)
    assert not collapse_signs(logged, 256)
    logged.evaluations = [{"step": 0, "knn_accuracy": 0.535}, {"step": 44, "knn_accuracy": 0.527},
                          {"step": 88, "knn_accuracy": 0.552}]
    assert not collapse_signs(logged, 256)
    logged.evaluations.append({"step": 132, "knn_accuracy": 0.627})
    assert not collapse_signs(logged, 256)


def test_dino_knn_below_its_start_twice_in_a_row():
    logged = history(*[3.0] * 5, key="teacher_entropy", mean_teacher_entropy=[5.0] * 5)
    logged.evaluations = [{"step": 0, "knn_accuracy": 0.535}, {"step": 44, "knn_accuracy": 0.527}]
    assert not collapse_signs(logged, 256)  # once is noise
    logged.evaluations.append({"step": 88, "knn_accuracy": 0.5})
    signs = collapse_signs(logged, 256)
    assert [sign.name for sign in signs] == ["dino_knn_below_start"]
    assert "k-NN accuracy 52.7% then 50.0% at the last two evaluations, below 53.5% before training" in signs[0].finding
    logged.evaluations[-1]["knn_accuracy"] = 0.535  # equal to the start is not below it
    assert not collapse_signs(logged, 256)


def test_dino_knn_dips_early_in_the_run_are_no_sign():
    """Seed 1 of the small-data DINO run on digits (2026-12-02, 44 steps an epoch, about 1,000 planned): k-NN
    54.3% at the start, 49.3% and 47.6% after epochs 1 and 2, above the start from epoch 5 on."""
    logged = history(*[4.7] * 5, key="teacher_entropy", mean_teacher_entropy=[5.4] * 5)
    logged.evaluations = [{"step": 0, "knn_accuracy": 0.543}, {"step": 44, "knn_accuracy": 0.493},
                          {"step": 88, "knn_accuracy": 0.476}]
    assert [sign.name for sign in collapse_signs(logged, 256)] == ["dino_knn_below_start"]  # read from the start
    assert not collapse_signs(logged, 256, knn_from=250)  # read from a quarter of the run: no sign yet
    logged.evaluations += [{"step": 264, "knn_accuracy": 0.50}, {"step": 308, "knn_accuracy": 0.49}]
    assert [sign.name for sign in collapse_signs(logged, 256, knn_from=250)] == ["dino_knn_below_start"]


# --------------------------------------------------------------------------- masked-image pretraining
def test_mim_loss_not_falling_after_a_quarter_of_the_run():
    objective = MAEObjective(patch_size=4)
    # 400 steps, 100 per epoch: the first eighth (50 steps) stands for the first epoch; read from step 100 on
    plan = Plan(epochs=4, steps_per_epoch=100, total_steps=400, batches_per_epoch=100)
    stalled = history(*([1.1, 0.9] * 25 + [0.99] * 50))  # first 50 steps: mean 1.0; newest 5: 0.99 = 99% of it
    assert objective.health(context(99, plan), stalled) == []
    signs = objective.health(context(100, plan), stalled)
    assert [sign.name for sign in signs] == ["loss_not_falling"] and signs[0].kind == "stall"
    assert "MAE stalled: training loss 0.9900 over the last 5 logs is 99.0% of its mean over steps 1-50, 1.0000" in signs[0].finding
    # the line is 0.98 x 1.0: 0.97 has fallen enough, and so has a healthy 0.6
    assert not objective.health(context(100, plan), history(*([1.1, 0.9] * 25 + [0.97] * 50)))
    assert not objective.health(context(100, plan), history(*([1.1, 0.9] * 25 + [0.6] * 50)))
    # a budget that planned fewer steps moves the quarter: 120 planned, read from step 30 (first eighth: 15 steps)
    plan.total_steps = 120
    short = history(*([1.0] * 15 + [1.2] * 15))
    assert objective.health(context(29, plan), short) == [] and objective.health(context(30, plan), short)


# --------------------------------------------------------------------------- the watch
class Always(Objective):
    """An objective whose one sign shows at every read."""

    def health(self, context, history):
        return [Sign("always", "stall", "always stalled", "try nothing")]


class Run:
    """The part of a RunFolder the watch uses."""

    def __init__(self, events=()):
        self.logged = list(events)

    def events(self):
        return list(self.logged)

    def log(self, event):
        self.logged.append(event)


def test_the_watch_warns_once_per_sign_and_a_resumed_run_not_again(capsys):
    run, objective = Run(), Always()
    watch = Watch()
    watch.on_train_begin(context(0, run=run, objective=objective))
    for step in range(1, MIN_STEPS + 3):
        watch.on_log(context(step, run=run, objective=objective), {"step": step, "loss": 1.0})
    message = f"always stalled at step {MIN_STEPS}; try nothing"
    assert watch.warnings == [{"sign": "always", "kind": "stall", "step": MIN_STEPS, "message": message}]
    assert run.logged == [{"type": "warning", **watch.warnings[0]}]  # metrics.jsonl: once
    assert capsys.readouterr().out == f"warning: {message}\n"
    assert watch.results() == {"warnings": watch.warnings, "stopped": None}
    assert not watch.stops(context(MIN_STEPS + 2))  # without --stop-on-collapse the run goes on

    # resumed from step 40: the warning is read back and never repeated; events past step 40 are dropped
    events = [*({"step": step, "loss": 1.0} for step in range(1, 60)), {"type": "warning", **watch.warnings[0]}]
    resumed, run = Watch(stop=True), Run(events)
    resumed.on_train_begin(context(40, run=run, objective=objective))
    assert [event["step"] for event in resumed.history.training] == list(range(1, 41))
    assert not resumed.stops(context(40)) and not resumed.stops(context(MIN_STEPS - 1))
    assert resumed.stops(context(MIN_STEPS))  # --stop-on-collapse: the uninterrupted run stopped there
    resumed.on_log(context(MIN_STEPS, run=run, objective=objective), {"step": MIN_STEPS, "loss": 1.0})
    assert len(run.logged) == len(events)  # not warned again
    assert resumed.results()["stopped"] == {"reason": "stall", "sign": "always", "step": MIN_STEPS}


# --------------------------------------------------------------------------- whole runs
ARCH = "hidden_size=32,num_hidden_layers=2,num_attention_heads=2,intermediate_size=64,patch_size=4"
TINY = ["--scratch", "--config-overrides", ARCH, "--image-size", "16", "--batch-size", "16", "--num-workers", "0",
        "--max-eval-samples", "32", "--log-steps", "1"]
# 320 images: 20 steps an epoch, 80 in 4 epochs
DINO = ["--method", "dino", "--model", "dino-vits16", *TINY, "--max-train-samples", "320", "--hflip", "0",
        "--out-dim", "32", "--head-hidden-dim", "32", "--head-bottleneck-dim", "16", "--local-crops", "2", "--epochs", "4"]


@pytest.fixture(autouse=True)
def one_thread():
    """The whole runs here are tiny: one thread is as fast, and does not stall waiting for a second one when other
    jobs share the cores (a 2-thread DINO run took 68 s on 2 busy cores, a 1-thread one 5 s)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def read(folder: str) -> tuple[dict, list[dict]]:
    with open(os.path.join(folder, "results.json")) as handle:
        results = json.load(handle)
    with open(os.path.join(folder, "metrics.jsonl")) as handle:
        return results, [json.loads(line) for line in handle]


def test_stop_on_collapse_ends_a_collapsing_dino_run_and_keeps_the_best_teacher(tmp_path, capsys):
    """Learning rate 1e-2 and a plain head, the recipe's general defaults otherwise (given, since --scratch on
    small data defaults to the good settings): the teacher collapses (onto one prototype, then to uniform outputs;
    its k-NN falls below the random init's). The warning is in the console, metrics.jsonl and results.json;
    --stop-on-collapse ends the run there, evaluated and checkpointed, with model/ the teacher of the best k-NN."""
    folder = str(tmp_path / "collapse")
    plain = ["--head-batch-norm", "false", "--momentum-teacher", "0.996", "--weight-decay", "0.05", "--warmup-ratio",
             "0.05", "--max-grad-norm", "1"]
    returned = methods.run("distill", [*DINO, *plain, "--learning-rate", "1e-2", "--stop-on-collapse", "--output-dir", folder])
    out = capsys.readouterr().out
    results, events = read(folder)
    warnings = [event for event in events if event.get("type") == "warning"]
    assert warnings and warnings[0]["kind"] == "collapse" and warnings[0]["sign"].startswith("dino_")
    assert f"warning: {warnings[0]['message']}" in out and "DINO collapse: " in out and "--head-batch-norm" in out
    assert results["warnings"] == returned["warnings"] == [{k: v for k, v in w.items() if k != "type"} for w in warnings]
    step = warnings[0]["step"]
    assert results["stopped"] == {"reason": "collapse", "sign": warnings[0]["sign"], "step": step}
    assert MIN_STEPS <= step == results["steps"] < 80  # ended early, where the sign showed
    assert f"stopping at step {step} (--stop-on-collapse)" in out
    assert f"step-{step:08d}" in os.listdir(os.path.join(folder, "checkpoints"))
    knn = [event for event in events if event.get("eval") and event["step"] > 0]
    assert knn[-1]["step"] == step  # evaluated where it stopped
    best = max(knn, key=lambda event: event["knn_accuracy"])  # the first of the best
    assert results["eval"]["knn_accuracy"] == best["knn_accuracy"] and results["eval"]["step"] == best["step"]
    with open(os.path.join(folder, "model", "vitzoo.json")) as handle:
        assert json.load(handle)["training"]["best_step"] == best["step"]


def test_the_documented_good_dino_settings_warn_of_nothing(tmp_path, capsys):
    """docs/distillation.md's command (head batch norm, learning rate 2.5e-4, teacher momentum 0.99, ...) at
    the tiny shape: 80 steps, signs read from step 50, none shows."""
    folder = str(tmp_path / "good")
    results = methods.run("distill", [*DINO, "--head-batch-norm", "--learning-rate", "2.5e-4", "--momentum-teacher", "0.99",
                            "--weight-decay", "0.04", "--warmup-ratio", "0.1", "--max-grad-norm", "3",
                            "--stop-on-collapse", "--output-dir", folder])
    saved, events = read(folder)
    assert results["steps"] == saved["steps"] == 80
    assert saved["warnings"] == [] and saved["stopped"] is None
    assert not [event for event in events if event.get("type") == "warning"]
    assert "warning:" not in capsys.readouterr().out
    entropies = [event["teacher_entropy"] for event in events if "teacher_entropy" in event]
    assert len(entropies) == 80 and max(entropies) < 0.98 * math.log(32)


def test_a_fine_tune_that_cannot_learn_stalls_at_ln_classes_and_stops(tmp_path, capsys):
    """Learning rate 0: the loss stays at ln(10). 400 images are 25 steps an epoch; the sign is read at step 50,
    the last of epoch 2, and --stop-on-collapse ends the run there instead of after epoch 3. Resumed, the stopped
    run trains nothing, warns of nothing new and reports the same."""
    folder = str(tmp_path / "stalled")
    argv = ["--model", "deit-tiny", *TINY, "--max-train-samples", "400", "--epochs", "3", "--learning-rate", "0",
            "--stop-on-collapse", "--output-dir", folder]
    results = methods.run("finetune", argv)
    assert "warning: training stalled: loss 2.3" in capsys.readouterr().out
    assert results["steps"] == 50 and [w["sign"] for w in results["warnings"]] == ["loss_at_chance"]
    assert results["stopped"] == {"reason": "stall", "sign": "loss_at_chance", "step": 50}
    saved, events = read(folder)
    assert saved["warnings"] == results["warnings"] and saved["stopped"] == results["stopped"]
    assert [event["step"] for event in events if event.get("eval")] == [25, 50]
    again = methods.run("finetune", [*argv, "--resume", "auto"])
    assert again["steps"] == 50 and again["warnings"] == results["warnings"] and again["stopped"] == results["stopped"]
    assert again["eval"] == results["eval"]
    assert len([event for event in read(folder)[1] if event.get("type") == "warning"]) == 1
