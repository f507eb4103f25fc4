"""--time-budget: the speed measured over the first steps sets the number of steps, the schedule is
planned for exactly those steps, a resumed run keeps the plan."""

from __future__ import annotations

import json

import pytest
from recipe_runs import METHODS

from vitzoo.errors import BadInputError
from vitzoo.training import budget as budget_module
from vitzoo.training.budget import parse_duration


def test_durations_parse_and_nonsense_is_refused():
    assert parse_duration("20m") == 1200 and parse_duration("90s") == 90 and parse_duration("1h30m") == 5400
    assert parse_duration("1.5h") == 5400 and parse_duration("300") == 300
    for bad in ("20 minutes", "m", "0s", "-5m", "1x"):
        with pytest.raises(BadInputError, match="--time-budget"):
            parse_duration(bad)


def test_the_budget_sets_the_steps_and_the_schedule_ends_on_them(tmp_path):
    recipe, argv = METHODS["finetune"]
    # 320 images at batch 16: 20 steps per epoch; 100 epochs would be 2,000 steps, the budget allows far fewer
    results = recipe.main([*argv, "--max-train-samples", "320", "--epochs", "100", "--time-budget", "6s",
                           "--min-learning-rate", "1e-5", "--output-dir", str(tmp_path / "run")])
    plan = results["time_budget"]
    assert plan["ended_by"] == "budget" and plan["seconds"] == 6
    assert plan["refined"] == (plan["planned_steps"] >= 20)  # planned again at the first epoch end, if it got there
    assert budget_module.MEASURE < plan["planned_steps"] < 2000 and results["steps"] == plan["planned_steps"]
    # the steps fit in the budget less its reserve at the measured speed (not a timing test: the speed is the measured
    # one), unless the pace of a later epoch planned the rest again, or the run fell late and stopped
    if not plan["replans"] and plan["stopped_late"] is None:
        assert plan["planned_steps"] * plan["seconds_per_step"] <= 6 * (1 - budget_module.RESERVE)
    events = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    last = [e for e in events if "lr" in e][-1]
    # decayed to (about) the end: on the 2,000-step epoch plan this step would still be warming up, at ~1e-4
    assert last["step"] == plan["planned_steps"] and last["lr"] < 2e-5
    assert [e for e in events if e.get("eval")][-1]["step"] == plan["planned_steps"]  # evaluated where it stopped


def test_a_resumed_run_keeps_its_plan(tmp_path, crash_after_checkpoint):
    recipe, argv = METHODS["finetune"]
    run = [*argv, "--max-train-samples", "1000", "--epochs", "100", "--time-budget", "4s", "--checkpoint-steps", "18",
           "--output-dir", str(tmp_path / "run")]
    with pytest.raises(KeyboardInterrupt):  # the plan is made at step 17, the checkpoint of step 18 holds it
        recipe.main(run, callbacks=[crash_after_checkpoint(18)])
    with open(next((tmp_path / "run" / "checkpoints").iterdir()) / "trainer_state.json") as handle:
        saved = json.load(handle)["budget"]
    assert saved["planned_steps"] > 18
    # resumed, it trains the planned steps on the planned schedule, whatever its speed now
    results = recipe.main([*run, "--resume", "auto"])
    assert results["steps"] == saved["planned_steps"] == results["time_budget"]["planned_steps"]


class _OneProcess:
    num_processes = 1


def _planned(seconds: float = 100.0, step_seconds: float = 0.125) -> budget_module.TimeBudget:
    """A budget whose plan was made at step 16 of a 10-steps-per-epoch run, after 2 s, at `step_seconds` a step."""
    plan = budget_module.TimeBudget(seconds, epoch_steps=10_000, steps_per_epoch=10)
    plan.seconds_per_step = step_seconds
    plan._plan(16, 2.0, step_seconds)
    return plan


def test_a_run_that_falls_behind_plans_the_rest_again_from_its_pace():
    plan = _planned()  # (100 x 0.9 - 2) / 0.125 = 704 more steps
    assert plan.planned_steps == 720
    # the first epoch end, its evaluation free: (90 - 2.5) / 0.125 = 700 more steps, the same end
    assert not plan.epoch_end(20, 2.5, cost=0.0, accelerator=_OneProcess())
    assert plan.refined and plan.planned_steps == 720
    # the next epoch: 10 steps in 2.5 s, 0.25 s a step where the plan expected 0.125: (90 - 5) / 0.25 = 340 more
    assert plan.epoch_end(30, 5.0, cost=0.0, accelerator=_OneProcess())
    assert plan.planned_steps == 370 and plan.replans == 1
    # a pace within REPLAN of the plan's (0.255 s against 0.25) leaves the plan alone
    assert not plan.epoch_end(40, 7.55, cost=0.0, accelerator=_OneProcess())
    assert plan.planned_steps == 370 and plan.replans == 1


def test_a_late_run_stops_at_the_next_check_with_half_its_reserve_left():
    plan = _planned()
    late = 100 * (1 - budget_module.RESERVE / 2)
    step = budget_module.CHECK_EVERY * 5
    assert not plan.step_done(step + 1, late + 1, _OneProcess())  # checked every CHECK_EVERY steps only
    assert not plan.step_done(step, late - 0.1, _OneProcess())  # not yet late
    assert plan.step_done(step, late, _OneProcess())
    assert plan.planned_steps == plan.stopped_late == step and "stopping here" in plan.describe()
    assert not plan.epoch_end(step, late, cost=0.0, accelerator=_OneProcess())  # stopped: no plan after that


def test_a_resumed_plan_is_neither_planned_again_nor_stopped_late():
    plan = budget_module.TimeBudget(100.0, epoch_steps=10_000, steps_per_epoch=10)
    plan.restore(_planned().state())
    assert not plan.step_done(budget_module.CHECK_EVERY * 10, 99.0, _OneProcess())
    plan.epoch_end(100, 50.0, cost=0.0, accelerator=_OneProcess())
    assert not plan.epoch_end(110, 90.0, cost=0.0, accelerator=_OneProcess())
    assert plan.planned_steps == 720


def test_without_epochs_the_budget_alone_ends_the_run():
    from vitzoo.methods import parse
    from vitzoo.training.arguments import given

    args = parse("finetune", ["--time-budget", "2m"])
    budget_module.apply_to_epochs(args, given(args))
    assert args.epochs == budget_module.UNLIMITED_EPOCHS
    args = parse("finetune", ["--time-budget", "2m", "--epochs", "7"])  # both: whichever ends first
    budget_module.apply_to_epochs(args, given(args))
    assert args.epochs == 7
    args = parse("finetune", [])
    budget_module.apply_to_epochs(args, given(args))
    assert args.epochs == 10
    with pytest.raises(BadInputError, match="--time-budget"):
        budget_module.apply_to_epochs(args := parse("finetune", ["--time-budget", "soon"]), given(args))
