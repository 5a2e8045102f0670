"""bench/benchlib/fit.py: the simulator predicts a run it was not fitted on, from another run's unit log."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
from benchlib.fit import TARGET_ERROR, cross_validate, read_runs
from benchlib.mop import MopRun
from benchlib.simulation import Overheads, Profile, simulate_mop

RESULTS = Path(__file__).resolve().parents[2] / "bench" / "results"
PROFILES = [Profile(f"c{i}", epoch_train_s=2.0 + i, unit_fixed_s=0.1, validation_s=0.3) for i in range(6)]
OVERHEADS = Overheads(gap_s=0.01, start_s=0.02)
EPOCHS = 3


def simulated_run(segments: int, seed: int) -> MopRun:
    """A run as run_mop reports it, its unit log written by the simulator itself."""
    result = simulate_mop(PROFILES, segments, EPOCHS, OVERHEADS, seed)
    last = {}
    for unit in result.log:
        last[(unit.config, unit.epoch)] = max(last.get((unit.config, unit.epoch), unit.start), unit.start)
    units = []
    for unit in result.log:
        validation = PROFILES[unit.config].validation_s if last[(unit.config, unit.epoch)] == unit.start else 0.0
        units.append(
            {
                "config_id": float(100 + unit.config),
                "epoch": float(unit.epoch),
                "segment": float(unit.segment),
                "rows": 1000.0 / segments,
                "started": unit.start,
                "finished": unit.end,
                "state_load_s": 0.05,
                "state_save_s": 0.05,
                "train_s": unit.end - unit.start - 0.1 - validation,
                "validation_s": validation,
            }
        )
    return MopRun(segments, 1, len(PROFILES), EPOCHS, 6000, result.makespan_s, 0.0, 0.0, 0, [], units, 0.0)


def test_a_simulated_pair_of_runs_is_predicted_exactly() -> None:
    prediction = cross_validate(simulated_run(1, seed=0), simulated_run(2, seed=0), seeds=5)
    assert prediction.fitted_segments == 1 and prediction.segments == 2
    assert prediction.error == pytest.approx(0.0, abs=0.02)  # only the random tie-breaks differ
    assert prediction.passed


def test_the_prediction_reads_nothing_of_the_predicted_run_but_its_segments() -> None:
    fitted, target = simulated_run(1, seed=0), simulated_run(2, seed=0)
    slower = [{**u, "finished": u["finished"] * 3, "train_s": u["train_s"] * 3} for u in target.units]
    doctored = dataclasses.replace(target, units=slower, window_s=target.window_s * 3)
    a, b = cross_validate(fitted, target, seeds=3), cross_validate(fitted, doctored, seeds=3)
    assert a.predicted_s == b.predicted_s
    assert a.passed and not b.passed
    assert b.error == pytest.approx(a.predicted_s / (3 * target.window_s) - 1)


def test_runs_of_different_workloads_are_refused() -> None:
    other = dataclasses.replace(simulated_run(2, seed=0), epochs=EPOCHS + 1)
    with pytest.raises(ValueError, match="the runs differ"):
        cross_validate(simulated_run(1, seed=0), other, seeds=1)


def test_the_committed_runs_two_segments_predicted_from_one() -> None:
    runs = read_runs(RESULTS / "simulate_scale_units.csv", RESULTS / "simulate_scale.csv")
    assert sorted(runs) == [1, 2]
    assert len(runs[1].units) == runs[1].configs * runs[1].epochs
    assert len(runs[2].units) == 2 * runs[2].configs * runs[2].epochs
    prediction = cross_validate(runs[1], runs[2], seeds=20)
    assert abs(prediction.error) <= TARGET_ERROR, prediction
    # A measurement 30% off the committed one would miss.
    assert not cross_validate(runs[1], dataclasses.replace(runs[2], window_s=runs[2].window_s * 1.3), seeds=20).passed
