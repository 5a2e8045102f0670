"""bench/autonomy.py: its targets fail on figures that miss them, and its --quick size runs every method (grid,
hyperband, random, autopilot) and writes its results."""

from __future__ import annotations

import csv

import autonomy
import pytest
from benchlib import RESULTS_DIR


def run(name: str, vals: list[float]) -> autonomy.Run:
    """A run whose epochs reached ``vals`` in that order, one second apart."""
    return autonomy.Run(name, 1, [("{}", val, float(k + 1)) for k, val in enumerate(vals)], float(len(vals)), 1.0)


GRID = run("grid", [0.5] * 90 + [0.9] * 10)  # 100 epochs, best 0.9
HYPERBAND = run("hyperband", [0.5] * 20 + [0.8] * 20)  # 40 epochs, 0.8 from its 21st


def verdicts(autopilot: autonomy.Run) -> list[bool]:
    return [ok for _, ok, _ in autonomy.checks(GRID, HYPERBAND, autopilot)]


def test_figures_that_meet_the_targets_pass() -> None:
    assert verdicts(run("autopilot", [0.6] * 10 + [0.8999] * 30)) == [True, True, True]


def test_each_missed_target_fails_alone() -> None:
    # 99.4 % of the grid's best
    assert verdicts(run("autopilot", [0.6] * 10 + [0.8946] * 30)) == [False, True, True]
    # 41 % of the grid's epochs
    assert verdicts(run("autopilot", [0.6] * 10 + [0.8999] * 31)) == [True, False, True]
    # the grid's best in the end, but behind hyperband within the first 30 epochs (hyperband's all)
    short = run("hyperband", [0.5] * 20 + [0.8] * 10)
    late = run("autopilot", [0.79] * 30 + [0.9] * 10)
    assert [ok for _, ok, _ in autonomy.checks(GRID, short, late)] == [True, True, False]


def test_the_figures_name_what_was_compared() -> None:
    (accuracy, _, _), (epochs, _, figures), (_, _, within) = autonomy.checks(
        GRID, HYPERBAND, run("autopilot", [0.7] * 50)
    )
    assert accuracy == "autopilot's best >= 99.5% of the grid's"
    assert epochs == "autopilot's epochs <= 40% of the grid's" and figures == "50 of 100 (50.0%)"
    assert within == "first 40 epochs: 0.7000 vs 0.8000"


def test_the_budget_leaves_room_for_the_other_segments_last_epoch() -> None:
    assert autonomy.budget_for(192) == 75  # 40 % is 76.8
    assert autonomy.budget_for(1) == 1


def test_the_epochs_and_seconds_to_a_threshold() -> None:
    assert GRID.reached(0.89) == (91, 91.0)
    assert GRID.reached(0.95) is None
    assert HYPERBAND.best_within(20) == 0.5 and HYPERBAND.best_within(21) == 0.8


@pytest.mark.slow  # a cluster, TensorFlow in 2 backends and 4 small runs: about a minute
def test_the_quick_size_runs_every_method(capsys: pytest.CaptureFixture[str]) -> None:
    assert autonomy.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    for name in ("grid", "hyperband", "random", "autopilot"):
        assert f"\n{name} " in printed, printed
    assert "autopilot's epochs <= 40% of the grid's" in printed
    with (RESULTS_DIR / "autonomy_quick.csv").open() as results:
        rows = {row["run"]: row for row in csv.DictReader(results)}
    assert list(rows) == ["grid", "hyperband", "random", "autopilot"]
    assert int(rows["grid"]["epochs"]) == 16  # 4 configs x 4 epochs, none pruned
    assert int(rows["autopilot"]["epochs"]) <= autonomy.budget_for(16) + autonomy.SEGMENTS - 1
    assert (RESULTS_DIR / "autonomy_quick_suggestions.csv").exists()
