"""bench/benchlib/fit.py: the simulator predicts a run it was not fitted on, from another run's unit log."""

from __future__ import annotations

import csv
import dataclasses
import math
from pathlib import Path

import pytest
from benchlib.baselines import Runnable
from benchlib.fit import (
    ALL,
    TARGET_ERROR,
    RepeatedPrediction,
    RunPrediction,
    cold_units,
    cost_key,
    cross_validate,
    fit_run,
    measured_figures,
    predict_run,
    read_runs,
    training_vs_fit,
)
from benchlib.mixed import ConfigInfo, PhaseRun, write_runs
from benchlib.mixed import read_runs as read_runs_of_phases
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


# --- predict_run: another workload on another segment count, from a calibration run's unit log -------------

#: Per model: training seconds per row, fixed seconds per unit, validation seconds per validation row, a config's
#: first unit's extra seconds (building its initial state), a cold unit's and a cold validation's extra seconds.
COSTS = {
    "mlp": (0.0001, 0.01, 0.00005, 0.2, 0.1, 0.03),
    "cnn": (0.0005, 0.03, 0.0002, 0.5, 0.2, 0.05),
    "mobilenetv2": (0.002, 0.1, 0.001, 1.0, 5.0, 0.4),
}
TRAIN_ROWS, VALIDATION_ROWS = 4000, 400
GAPS = Overheads(gap_s=0.015, start_s=0.03)


def phase_run(
    setup: str,
    phase: str,
    segments: int,
    configs: list[tuple[str, float]],
    epochs: int,
    cores: int,
    cold: bool = True,
    cold_rule: str = "cached",
) -> PhaseRun:
    """A run as run_phases reports it, one workload per model, its unit log written by the simulator on ``cores``
    under ``cold_rule``; ``cold=False``: its backends compile for free (no cold costs)."""
    first_id = 100 if phase == "calibration" else 500
    models = list(dict.fromkeys(m for m, _ in configs))
    info = {
        first_id + i: ConfigInfo(10 + models.index(model), model, {"batch_size": 64, "lr": lr, "size": model})
        for i, (model, lr) in enumerate(configs)
    }
    profiles = [
        Profile(m, COSTS[m][0] * TRAIN_ROWS, COSTS[m][1], COSTS[m][2] * VALIDATION_ROWS, *COSTS[m][3:])
        for m, _ in configs
    ]
    if not cold:
        profiles = [dataclasses.replace(p, cold_s=0.0, cold_validation_s=0.0) for p in profiles]
    workloads = [i.workload_id for i in info.values()]
    result = simulate_mop(
        profiles, segments, epochs, GAPS, seed=1, workloads=workloads, cores=cores, cold_rule=cold_rule
    )
    last = {}
    for unit in result.log:
        last[(unit.config, unit.epoch)] = max(last.get((unit.config, unit.epoch), unit.start), unit.start)
    units = []
    seen = set()
    for unit in sorted(result.log, key=lambda u: u.start):
        p = profiles[unit.config]
        validates = last[(unit.config, unit.epoch)] == unit.start
        first = 0.0 if unit.config in seen else p.first_unit_s
        seen.add(unit.config)
        parts = (
            p.epoch_train_s / segments + (p.cold_s if unit.cold else 0.0),
            p.unit_fixed_s + first,
            (p.validation_s if validates else 0.0) + (p.cold_validation_s if unit.cold_validation else 0.0),
        )
        stretch = (unit.end - unit.start) / sum(parts)  # the unit's share of the cores
        units.append(
            {
                "config_id": float(first_id + unit.config),
                "epoch": float(unit.epoch),
                "segment": float(unit.segment),
                "rows": TRAIN_ROWS / segments,
                "started": unit.start,
                "finished": unit.end,
                "data_load_s": 0.0,
                "state_load_s": stretch * parts[1] / 2,
                "train_s": stretch * parts[0],
                "state_save_s": stretch * parts[1] / 2,
                "validation_s": stretch * parts[2],
            }
        )
    return PhaseRun(
        setup,
        phase,
        segments,
        0,
        epochs,
        TRAIN_ROWS,
        VALIDATION_ROWS,
        0.0,
        result.makespan_s,
        units,
        info,
        2.0,
        cold_rule=cold_rule,
    )


CALIBRATION = [("mlp", 0.003), ("cnn", 0.003), ("mobilenetv2", 0.003)]
MIXED = [
    ("mlp", 0.001),
    ("mlp", 0.01),
    ("cnn", 0.001),
    ("cnn", 0.01),
    *(("mobilenetv2", lr) for lr in (1e-4, 1e-3, 1e-2)),
]


def test_a_simulated_mixed_run_on_shared_cores_is_predicted_from_a_calibration_run() -> None:
    # 3 epochs: every cost key has warm validations to tell the cold ones from
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION, 3, cores=2)
    target = phase_run("4 segments", "mixed", 4, MIXED, 3, cores=2)
    prediction = predict_run(fitted, target, seeds=10, cores=2)
    assert prediction.passed
    assert prediction.error() == pytest.approx(0.0, abs=0.03)  # only the random tie-breaks differ
    for model in ("mlp", "cnn", "mobilenetv2", ALL):
        # the measured share weighs each unit by its wall time (the cold units early on shared cores weigh more),
        # the predicted one by its cost
        assert prediction.predicted[model].hop_share == pytest.approx(prediction.measured[model].hop_share, rel=0.06)
        assert prediction.predicted[model].utilization == pytest.approx(
            prediction.measured[model].utilization, abs=0.05
        )
    assert prediction.measured["mlp"].makespan_s < prediction.measured["mobilenetv2"].makespan_s
    # the target's units trained as the fit says, once processor sharing's stretch on their schedule is taken out
    assert prediction.training_vs_fit == pytest.approx(1.0, abs=1e-6)
    slower_training = [{**u, "train_s": 1.3 * u["train_s"]} for u in target.units]
    doctored = dataclasses.replace(target, units=slower_training)
    assert training_vs_fit(fit_run(fitted, cores=2), doctored, cores=2) == pytest.approx(1.3, abs=1e-6)
    # counted as if each of the 4 segments had a core, the stretch stays in: the units seem slower than fitted
    assert training_vs_fit(fit_run(fitted, cores=2), target, cores=4) > 1.2
    # a fit on a run without cold units sees none (cold_s 0): it would miss the cold units of this one
    warm = phase_run("2 segments", "calibration", 2, CALIBRATION, 3, cores=2, cold=False)
    assert all(cost.cold_s == pytest.approx(0.0, abs=1e-9) for cost in fit_run(warm, cores=2).costs.values())
    assert predict_run(warm, target, seeds=10, cores=2).error() < -TARGET_ERROR
    # a simulator that gave every segment a core of its own would miss: 4 segments run on 2 cores
    assert not predict_run(fitted, target, seeds=10, cores=4).passed
    # and so would a run 30% slower than the simulated one
    stretched = [{**u, "started": 1.3 * u["started"], "finished": 1.3 * u["finished"]} for u in target.units]
    slower = dataclasses.replace(target, units=stretched, window_s=1.3 * target.window_s)
    assert not dataclasses.replace(prediction, measured=measured_figures(slower)).passed


def test_a_prediction_is_refused_on_the_run_it_was_fitted_on() -> None:
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION, 2, cores=2)
    with pytest.raises(ValueError, match="is the fitted run itself"):
        predict_run(fitted, fitted, seeds=1, cores=2)
    renamed = dataclasses.replace(fitted, setup="4 segments", segments=4)
    with pytest.raises(ValueError, match="is the fitted run itself"):
        predict_run(fitted, renamed, seeds=1, cores=2)


def test_a_prediction_needs_another_segment_count_and_other_configs() -> None:
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION, 2, cores=2)
    with pytest.raises(ValueError, match="both runs have 2 segment"):
        predict_run(fitted, phase_run("2 segments", "mixed", 2, MIXED, 3, cores=2), seeds=1, cores=2)
    with pytest.raises(ValueError, match="config 500 of '4 segments' was trained in the fitted run"):
        predict_run(fitted, phase_run("4 segments", "mixed", 4, CALIBRATION[:1] + MIXED, 3, cores=2), seeds=1, cores=2)


def test_a_prediction_needs_every_cost_in_the_fit() -> None:
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION[:2], 2, cores=2)
    with pytest.raises(ValueError, match="trained no config costing as .*mobilenetv2"):
        predict_run(fitted, phase_run("4 segments", "mixed", 4, MIXED, 3, cores=2), seeds=1, cores=2)


def test_a_fit_on_segments_that_shared_cores_is_refused() -> None:
    fitted = phase_run("4 segments", "calibration", 4, CALIBRATION, 2, cores=2)
    with pytest.raises(ValueError, match="at most 2 segment"):
        predict_run(fitted, phase_run("2 segments", "mixed", 2, MIXED, 3, cores=2), seeds=1, cores=2)


def test_cost_keys_ignore_only_the_learning_rate() -> None:
    assert cost_key("cnn", {"lr": 0.1, "filters": 8}) == cost_key("cnn", {"filters": 8, "lr": 0.3})
    assert cost_key("cnn", {"lr": 0.1, "filters": 8}) != cost_key("cnn", {"lr": 0.1, "filters": 16})
    assert cost_key("cnn", {"batch_size": 64}) != cost_key("cnn", {"batch_size": 128})
    assert cost_key("cnn", {"filters": 8}) != cost_key("mlp", {"filters": 8})


def test_the_fit_separates_a_configs_first_unit_and_the_cold_units() -> None:
    run = phase_run("1 segment", "calibration", 1, CALIBRATION, 3, cores=2)
    fit = fit_run(run, cores=2)
    for model, (train_row_s, fixed_s, validation_row_s, first_unit_s, cold_s, cold_validation_s) in COSTS.items():
        (cost,) = (c for key, c in fit.costs.items() if model in key)
        assert cost.train_row_s == pytest.approx(train_row_s)
        assert cost.fixed_s == pytest.approx(fixed_s)
        assert cost.validation_row_s == pytest.approx(validation_row_s)
        assert cost.first_unit_s == pytest.approx(first_unit_s)
        assert cost.cold_s == pytest.approx(cold_s)
        assert cost.cold_validation_s == pytest.approx(cold_validation_s)
    assert fit.overheads.gap_s == pytest.approx(GAPS.gap_s)
    with pytest.raises(ValueError, match="no warm unit"):
        fit_run(phase_run("1 segment", "calibration", 1, CALIBRATION, 1, cores=2), cores=2)


def unit(config: int, backend: int, started: float, validates: bool = False) -> dict[str, float]:
    return {
        "config_id": float(config),
        "backend_pid": float(backend),
        "segment": 0.0,
        "started": started,
        "validation_s": 0.5 if validates else 0.0,
    }


def test_runs_of_the_product_before_seed_keras_are_fitted_and_predicted_by_its_rule() -> None:
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION, 3, cores=2, cold_rule="seeded")
    target = phase_run("4 segments", "mixed", 4, MIXED, 3, cores=2, cold_rule="seeded")
    assert predict_run(fitted, target, seeds=10, cores=2).error() == pytest.approx(0.0, abs=0.03)
    # every first unit of a config made its backend's units cold: the rule since then takes some for warm ones
    for rule, exact in (("seeded", True), ("cached", False)):
        fit = fit_run(dataclasses.replace(fitted, cold_rule=rule), cores=2)
        found = [
            (cost.train_row_s, cost.cold_s) == pytest.approx((COSTS[model][0], COSTS[model][4]))
            for model in COSTS
            for key, cost in fit.costs.items()
            if model in key
        ]
        assert len(found) == len(COSTS) and all(found) == exact


#: Three configs, two of them of one architecture.
KEY_OF = {1.0: "big", 2.0: "big", 3.0: "small"}


def test_cold_units_are_the_first_of_an_architecture_on_a_backend() -> None:
    log = [
        unit(1, 10, 0.0),  # 0: backend 10's first "big": cold
        unit(1, 11, 1.0, validates=True),  # 1: backend 11's first "big": cold, and so is its validation
        unit(2, 10, 2.0),  # 2: config 2's first unit: "big" is compiled on 10
        unit(3, 11, 2.5),  # 3: 11's first "small": cold
        unit(2, 11, 3.0, validates=True),  # 4: "big" on 11: warm, its validation too
        unit(1, 10, 4.0, validates=True),  # 5: warm; 10's first validation of "big": cold
        unit(2, 10, 5.0, validates=True),  # 6: warm, and its validation
        unit(3, 10, 6.0),  # 7: 10's first "small": cold
    ]
    cold, cold_validations = cold_units(log, KEY_OF, "cached")
    assert cold == {0, 1, 3, 7}
    assert cold_validations == {1, 5}


def test_cold_units_follow_a_first_unit_on_the_same_backend_under_the_seeded_rule() -> None:
    log = [
        unit(1, 10, 0.0),  # 0: a first unit: cold
        unit(1, 11, 1.0, validates=True),  # 1: another backend's first "big": cold, and so is its validation
        unit(2, 10, 2.0),  # 2: config 2's first unit, on backend 10: cold
        unit(3, 11, 2.5),  # 3: config 3's first unit clears backend 11
        unit(2, 11, 3.0, validates=True),  # 4: "big" again on 11 after the clear: cold, its validation too
        unit(1, 10, 4.0, validates=True),  # 5: no first unit on 10 since unit 2: warm; its first validation: cold
        unit(2, 10, 5.0, validates=True),  # 6: warm, and its validation
        unit(3, 10, 6.0),  # 7: 10's first "small": cold
    ]
    cold, cold_validations = cold_units(log, KEY_OF, "seeded")
    assert cold == {0, 1, 2, 3, 4, 7}
    assert cold_validations == {1, 4, 5}


def test_phase_runs_round_trip_through_their_csv_files(tmp_path: Path) -> None:
    runs = [
        phase_run("2 segments", "calibration", 2, CALIBRATION, 2, cores=2),
        dataclasses.replace(
            phase_run("4 segments", "mixed", 4, MIXED, 3, cores=2, cold_rule="seeded"), steal=0.03, repeat=2
        ),
    ]
    write_runs(tmp_path / "runs.csv", tmp_path / "units.csv", runs)
    again = read_runs_of_phases(tmp_path / "runs.csv", tmp_path / "units.csv")
    assert again == runs
    assert predict_run(again[0], again[1], seeds=3, cores=2).predicted == predict_run(*runs, seeds=3, cores=2).predicted


def test_steal_is_the_share_of_the_cpu_time_between_the_first_and_last_sample_inside() -> None:
    load = Runnable()
    load.samples, load.times = [1, 2, 2, 1], [10.0, 11.0, 12.0, 13.0]
    load.cpu = [(1000, 5), (1200, 15), (1400, 45), (1600, 50)]  # (all ticks, stolen ticks) so far
    assert load.steal_between(10.5, 12.5) == pytest.approx(30 / 200)
    assert load.steal_between(0.0, 20.0) == pytest.approx(45 / 600)
    assert math.isnan(load.steal_between(11.5, 12.5))  # one sample: no interval


def test_repeats_are_compared_by_their_medians() -> None:
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION, 3, cores=2)
    target = phase_run("1 segment", "mixed", 1, MIXED, 3, cores=2)
    exact = predict_run(fitted, target, seeds=3, cores=2)
    assert exact.passed

    def measured_as(factor: float, repeat: int) -> RunPrediction:
        """``exact`` with the target's units ``factor`` times as long, as the ``repeat``-th measurement."""
        units = [{**u, "started": factor * u["started"], "finished": factor * u["finished"]} for u in target.units]
        slower = dataclasses.replace(target, units=units, window_s=factor * target.window_s, repeat=repeat)
        return dataclasses.replace(exact, target=slower, measured=measured_figures(slower))

    # one repeat 40% slow (the host busy elsewhere) is outvoted; two are not
    one_outlier = RepeatedPrediction([measured_as(1.0, 1), measured_as(1.4, 2), measured_as(1.02, 3)])
    assert one_outlier.measured().makespan_s == pytest.approx(1.02 * target.window_s)
    assert one_outlier.passed and one_outlier.in_target and one_outlier.verdict == "PASS"
    two_outliers = RepeatedPrediction([measured_as(1.0, 1), measured_as(1.4, 2), measured_as(1.3, 3)])
    assert not two_outliers.passed and two_outliers.verdict == "MISS"
    with pytest.raises(ValueError, match="the same setups"):
        RepeatedPrediction([exact, dataclasses.replace(exact, target=dataclasses.replace(target, setup="other"))])


def test_a_run_whose_segments_share_cores_is_outside_the_target() -> None:
    fitted = phase_run("2 segments", "calibration", 2, CALIBRATION, 3, cores=2)
    shared = RepeatedPrediction([predict_run(fitted, phase_run("4 segments", "mixed", 4, MIXED, 3, cores=2), 3, 2)])
    assert not shared.in_target
    assert shared.verdict == "not a target: 4 segments on 2 cores"


def test_the_committed_scaling_predictions_come_from_the_committed_unit_logs() -> None:
    runs = {
        (r.setup, r.phase, r.repeat): r
        for r in read_runs_of_phases(RESULTS / "scaling_runs.csv", RESULTS / "scaling_units.csv")
    }
    # recorded since training.seed_keras: a backend compiles a cost key once
    assert {r.cold_rule for r in runs.values()} == {"cached"}
    with open(RESULTS / "scaling.csv", newline="") as file:
        table = [row for row in csv.DictReader(file) if row["model"] == ALL]
    assert {row["setup"] for row in table} == {setup for setup, phase, _ in runs if phase == "mixed"}
    assert {int(row["segment_servers"]) for row in table} >= {2, 4}  # 3 and 5 PostgreSQL servers
    medians = [row for row in table if row["repeat"] == "median"]
    assert len({row["setup"] for row in medians}) == len(medians)
    for median in medians:
        own = [row for row in table if row["setup"] == median["setup"] and row["repeat"] != "median"]
        assert len(own) >= 3
        repeats = []
        for row in own:
            repeat = int(row["repeat"])
            fitted, target = runs[(row["fitted_on"], "calibration", repeat)], runs[(row["setup"], "mixed", repeat)]
            assert fitted.segments != target.segments and (fitted.servers > 0) == (target.servers > 0)
            prediction = predict_run(fitted, target, seeds=20, cores=int(row["cores"]))
            assert prediction.predicted[ALL].makespan_s == pytest.approx(float(row["predicted_s"]), abs=1e-3)
            assert prediction.measured[ALL].makespan_s == pytest.approx(float(row["makespan_s"]), abs=1e-3)
            repeats.append(prediction)
        together = RepeatedPrediction(repeats)
        assert together.predicted().makespan_s == pytest.approx(float(median["predicted_s"]), abs=1e-3)
        assert together.measured().makespan_s == pytest.approx(float(median["makespan_s"]), abs=1e-3)
        assert together.passed == (abs(float(median["error"])) <= TARGET_ERROR)
