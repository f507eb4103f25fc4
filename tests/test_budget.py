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
    assert plan["ended_by"] == "budget" and plan["seconds"] == 6 and plan["refined"]
    assert budget_module.MEASURE < plan["planned_steps"] < 2000 and results["steps"] == plan["planned_steps"]
    # the steps fit in the budget less its reserve at the measured speed (not a timing test: the speed is the measured one)
    assert plan["planned_steps"] * plan["seconds_per_step"] <= 6 * (1 - budget_module.RESERVE)
    events = [json.loads(line) for line in open(tmp_path / "run" / "metrics.jsonl")]
    last = [e for e in events if "lr" in e][-1]
    # decayed to (about) the end: on the 2,000-step epoch plan this step would still be warming up, at ~1e-4
    assert last["step"] == plan["planned_steps"] and last["lr"] < 2e-5
    assert [e for e in events if e.get("eval")][-1]["step"] == plan["planned_steps"]  # evaluated where it stopped


def test_a_resumed_run_keeps_its_plan(tmp_path, crash_after_checkpoint):
    recipe, argv = METHODS["finetune"]
    run = [*argv, "--max-train-samples", "320", "--epochs", "100", "--time-budget", "10s", "--checkpoint-steps", "18",
           "--output-dir", str(tmp_path / "run")]
    with pytest.raises(KeyboardInterrupt):  # the plan is made at step 17, the checkpoint of step 18 holds it
        recipe.main(run, callbacks=[crash_after_checkpoint(18)])
    with open(next((tmp_path / "run" / "checkpoints").iterdir()) / "trainer_state.json") as handle:
        saved = json.load(handle)["budget"]
    assert saved["planned_steps"] > 18
    # resumed, it trains the planned steps on the planned schedule, whatever its speed now
    results = recipe.main([*run, "--resume", "auto"])
    assert results["steps"] == saved["planned_steps"] == results["time_budget"]["planned_steps"]
