"""The simulator's inputs from measured runs (bench/simulate_scale.py, bench/scaling.py): each config's cost and
the time between units from a run's unit log, or from hop_overhead.py's roster; the validation of its predictions
against runs.

A run is *fitted* when the simulator takes that run's own costs (``validate``: on 1 segment the prediction then
holds by construction, it checks only that no time goes unmodelled); it is *predicted* when the costs come from
another run: ``cross_validate`` (the same configs, fitted on the 1-segment run, predicting the 2-segment run) and
``predict_run`` (another workload on another segment count: costs per training row fitted per cost key, see
:func:`cost_key`, on the fitting run, its configs never in the predicted run; a config's first unit and the cold
units, whose backend compiles their functions, see :func:`cold_units`, fitted apart and simulated where the schedule
has them).
"""

from __future__ import annotations

import csv
import json
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from benchlib.mixed import PhaseRun
from benchlib.mop import MopRun
from benchlib.simulation import (
    RULES,
    Compiled,
    Overheads,
    Profile,
    Result,
    Unit,
    draw_mix,
    shards_for,
    simulate_bsp,
    simulate_mop,
    simulate_task,
)

#: A prediction within this share of the measured makespan passes.
TARGET_ERROR = 0.10
#: The scale target: MOP's speed at least this share of task parallelism's (issue 20).
TASK_TARGET = 0.9
#: Without a real run (--no-real): a forward pass costs about a third of a training step.
DEFAULT_EVAL_RATIO = 1 / 3


def overhead_gaps(log: Sequence[Unit], segments: int, epochs: int, shards: int | None = None) -> list[float]:
    """The gaps between consecutive units on a segment while some config could legally run there.

    Those gaps are overhead (commit, wake-up, claim). The others include a wait for a legal
    unit, which the MOP simulation models itself, so they must not count as overhead.
    ``shards``: with replication, an epoch is that many units and segment s holds shard s mod shards.
    """
    shards = shards or segments
    by_config: dict[int, list[Unit]] = {}
    by_segment: dict[int, list[Unit]] = {}
    for unit in log:
        by_config.setdefault(unit.config, []).append(unit)
        by_segment.setdefault(unit.segment, []).append(unit)

    def legal(config: int, segment: int, t: float) -> bool:
        own = by_config[config]
        if any(u.start <= t < u.end for u in own):
            return False  # running elsewhere
        ended = [u for u in own if u.end <= t]
        if len(ended) >= shards * epochs:
            return False  # completed
        epoch = len(ended) // shards + 1
        here = segment % shards
        return all((u.shard if u.shard >= 0 else u.segment) != here for u in ended if u.epoch == epoch)

    gaps = []
    for segment, own in by_segment.items():
        own = sorted(own, key=lambda u: u.start)
        for a, b in zip(own, own[1:], strict=False):
            if any(legal(config, segment, a.end) for config in by_config if config != a.config):
                gaps.append(b.start - a.end)
    return gaps


def relative_error(predicted: float, measured: float) -> float:
    return (predicted - measured) / measured


@dataclass
class Validation:
    segments: int
    configs: int
    epochs: int
    units: int
    measured_s: float
    predicted_s: float
    predicted_sd: float
    #: The same, each unit's time drawn from its config's measured unit times (the variation of real units).
    resampled_s: float
    resampled_sd: float
    overheads: Overheads
    measured_utilization: float
    predicted_utilization: float
    #: Validation seconds per validation row over training seconds per training row.
    eval_ratio: float

    @property
    def error(self) -> float:
        return relative_error(self.predicted_s, self.measured_s)

    @property
    def resampled_error(self) -> float:
        return relative_error(self.resampled_s, self.measured_s)


def profiles_from_units(units: Sequence[dict[str, float]], segments: int) -> list[Profile]:
    """Each config's cost from its logged units: hop = state load + save, the rest of a unit trains."""
    by_config: dict[int, list[dict[str, float]]] = defaultdict(list)
    for unit in units:
        by_config[int(unit["config_id"])].append(unit)
    profiles = []
    for config, own in sorted(by_config.items()):
        fixed = [u["state_load_s"] + u["state_save_s"] for u in own]
        train = [u["finished"] - u["started"] - u["validation_s"] - f for u, f in zip(own, fixed, strict=True)]
        validation = [u["validation_s"] for u in own if u["validation_s"] > 0]
        profiles.append(
            Profile(
                name=f"config {config}",
                epoch_train_s=segments * statistics.fmean(train),
                unit_fixed_s=statistics.fmean(fixed),
                validation_s=statistics.fmean(validation) if validation else 0.0,
            )
        )
    return profiles


def overheads_from_units(units: Sequence[dict[str, float]], segments: int, epochs: int, started: float) -> Overheads:
    """The mean time between units on a segment while a legal unit was available (commit, notify,
    claim: a wait for a legal unit is left out, the simulator models it); the start is from
    resuming the workload to its first unit."""
    log = [Unit(int(u["config_id"]), int(u["segment"]), int(u["epoch"]), u["started"], u["finished"]) for u in units]
    gaps = overhead_gaps(log, segments, epochs)
    return Overheads(
        gap_s=statistics.fmean(gaps) if gaps else 0.0,
        start_s=min(u.start for u in log) - started,
    )


def eval_ratio(units: Sequence[dict[str, float]], validation_rows: int) -> float:
    """Validation cost per row relative to training cost per row, from one run."""
    train = sum(u["train_s"] for u in units) / sum(u["rows"] for u in units)
    validation = [u["validation_s"] for u in units if u["validation_s"] > 0]
    return statistics.fmean(validation) / validation_rows / train if validation else DEFAULT_EVAL_RATIO


def validate(run: MopRun, validation_rows: int, seeds: int) -> Validation:
    """Simulate the run's own workload with its own measured costs; compare makespans."""
    started = max(u["finished"] for u in run.units) - run.window_s  # when the workload was resumed
    profiles = profiles_from_units(run.units, run.segments)
    overheads = overheads_from_units(run.units, run.segments, run.epochs, started)
    results = [simulate_mop(profiles, run.segments, run.epochs, overheads, seed) for seed in range(seeds)]
    makespans = [r.makespan_s for r in results]
    configs = sorted({int(u["config_id"]) for u in run.units})
    samples = [
        [u["finished"] - u["started"] - u["validation_s"] for u in run.units if int(u["config_id"]) == c]
        for c in configs
    ]
    resampled = [
        simulate_mop(profiles, run.segments, run.epochs, overheads, seed, samples).makespan_s for seed in range(seeds)
    ]
    busy = sum(u["finished"] - u["started"] for u in run.units)
    return Validation(
        segments=run.segments,
        configs=run.configs,
        epochs=run.epochs,
        units=len(run.units),
        measured_s=run.window_s,
        predicted_s=statistics.fmean(makespans),
        predicted_sd=statistics.pstdev(makespans),
        resampled_s=statistics.fmean(resampled),
        resampled_sd=statistics.pstdev(resampled),
        overheads=overheads,
        measured_utilization=busy / (run.segments * run.window_s),
        predicted_utilization=statistics.fmean(r.utilization for r in results),
        eval_ratio=eval_ratio(run.units, validation_rows),
    )


@dataclass
class Prediction:
    """A run's makespan predicted from the costs and overheads of another run (``fitted_segments``)."""

    fitted_segments: int
    segments: int
    configs: int
    epochs: int
    measured_s: float
    predicted_s: float
    predicted_sd: float

    @property
    def error(self) -> float:
        return relative_error(self.predicted_s, self.measured_s)

    @property
    def passed(self) -> bool:
        return abs(self.error) <= TARGET_ERROR


def cross_validate(fitted: MopRun, target: MopRun, seeds: int) -> Prediction:
    """Predict ``target``'s makespan on its segments from ``fitted``'s unit log alone.

    Both ran the same configs (the same search space and seed, so the n-th config of one is the n-th of the
    other). The profiles scale training with the shard (``epoch train / segments``) and keep the hop fixed; the
    overheads are the fitted run's. Nothing of ``target`` but its segment count enters the prediction.
    """
    if fitted.configs != target.configs or fitted.epochs != target.epochs:
        raise ValueError(
            f"the runs differ: {fitted.configs} configs x {fitted.epochs} epochs"
            f" vs {target.configs} configs x {target.epochs} epochs"
        )
    started = max(u["finished"] for u in fitted.units) - fitted.window_s
    profiles = profiles_from_units(fitted.units, fitted.segments)
    overheads = overheads_from_units(fitted.units, fitted.segments, fitted.epochs, started)
    makespans = [
        simulate_mop(profiles, target.segments, target.epochs, overheads, seed).makespan_s for seed in range(seeds)
    ]
    return Prediction(
        fitted_segments=fitted.segments,
        segments=target.segments,
        configs=target.configs,
        epochs=target.epochs,
        measured_s=target.window_s,
        predicted_s=statistics.fmean(makespans),
        predicted_sd=statistics.pstdev(makespans),
    )


#: Hyper-parameters that change nothing of what a unit costs: configs that differ only in them share their costs.
COST_NEUTRAL = ("lr",)


def cost_key(model: str, params: Mapping[str, Any]) -> str:
    """What decides a config's unit costs: its model and every hyper-parameter but the :data:`COST_NEUTRAL` ones
    (architecture, batch size, optimizer)."""
    return json.dumps([model, {k: v for k, v in params.items() if k not in COST_NEUTRAL}], sort_keys=True)


@dataclass(frozen=True)
class UnitCost:
    """What one cost key's units cost, fitted on a run."""

    #: Training seconds per training row.
    train_row_s: float
    #: Per unit beyond training and validation, whatever the shard: state load + save (the hop), the shard's
    #: load, the round trips to a segment server, the unit's SQL.
    fixed_s: float
    #: Validation seconds per validation row (an epoch's last unit validates on all of them).
    validation_row_s: float
    #: What a config's first unit costs beyond the others outside training: its initial state is built (in the hop
    #: share).
    first_unit_s: float
    #: What a cold unit's training costs beyond a warm one's (its backend compiles the train function, see
    #: :func:`cold_units`), and a cold validation beyond a warm one.
    cold_s: float
    cold_validation_s: float


def _hop_s(unit: Mapping[str, float]) -> float:
    """A unit's time outside training and validation."""
    return unit["finished"] - unit["started"] - unit["train_s"] - unit["validation_s"]


def first_units(units: Sequence[Mapping[str, float]]) -> set[int]:
    """The indexes of ``units`` that are their config's first (the one that builds its initial state)."""
    first_of: dict[float, int] = {}
    for i, unit in sorted(enumerate(units), key=lambda pair: pair[1]["started"]):
        first_of.setdefault(unit["config_id"], i)
    return set(first_of.values())


def _cost_keys(run: PhaseRun) -> dict[float, str]:
    """Each config of ``run``'s cost key, by its id as the unit log holds it."""
    return {float(c): cost_key(info.model, info.params) for c, info in run.configs.items()}


def cold_units(
    units: Sequence[Mapping[str, float]], key_of: Mapping[float, str], rule: str
) -> tuple[set[int], set[int]]:
    """The indexes of ``units`` whose backend compiled their train function, and of those whose validation compiled
    the test function (``key_of``: each config's cost key, what backends keep the compiled model by; ``rule``: the
    product's that ran them, see :data:`benchlib.simulation.COLD_RULES`).

    A compile costs 5 to 6 s for mobilenetv2 on this machine, 2 to 5 times its warm training on a shard.
    """
    firsts = first_units(units)
    backends: dict[float, Compiled] = {}
    cold, cold_test = set(), set()
    for i, unit in sorted(enumerate(units), key=lambda pair: pair[1]["started"]):
        backend = backends.setdefault(unit.get("backend_pid", unit["segment"]), Compiled(rule))
        train, test = backend.unit(key_of[unit["config_id"]], i in firsts, unit["validation_s"] > 0)
        if train:
            cold.add(i)
        if test:
            cold_test.add(i)
    return cold, cold_test


@dataclass
class Fit:
    """Per cost key, a unit's costs, and the time between units, from one run."""

    run: PhaseRun
    costs: dict[str, UnitCost]
    overheads: Overheads


def fit_run(run: PhaseRun, cores: int) -> Fit:
    """The costs of ``run``'s units by cost key and its overheads (gap, start), from its unit log alone.

    Training per row comes from the warm units (not a config's first, not cold: :func:`cold_units`), the fixed part
    from the units after each config's first, validation per row from the warm validations; a first unit's fixed
    part beyond the others builds the config's initial state; a cold unit's training (a cold validation) beyond the
    warm ones compiles the function again. A run with more segments than ``cores`` is refused: its units shared
    cores, and the simulator's costs are those of a unit with a core to itself.
    """
    if run.segments > cores:
        raise ValueError(
            f"fit on a run with at most {cores} segment(s) (one core each), not on {run.setup!r}: its"
            f" {run.segments} segments shared {cores} core(s)"
        )
    key_of = _cost_keys(run)
    cold, cold_test = cold_units(run.units, key_of, run.cold_rule)
    firsts = first_units(run.units)
    costs = {}
    for key in dict.fromkeys(key_of.values()):
        own = [i for i, u in enumerate(run.units) if key_of[u["config_id"]] == key]
        later = [run.units[i] for i in own if i not in firsts]
        warm = [run.units[i] for i in own if i not in firsts and i not in cold]
        if not warm:
            raise ValueError(
                f"{run.setup!r} ({run.phase}) ran no warm unit costing as {key} (each one a config's first or after"
                " one on its backend): fit on more units"
            )
        train_row_s = sum(u["train_s"] for u in warm) / sum(u["rows"] for u in warm)
        fixed_s = statistics.fmean(_hop_s(u) for u in later)
        validations = [i for i in own if run.units[i]["validation_s"] > 0]
        # without a warm validation the cold ones cannot be told apart: every validation then costs their mean
        warm_validations = [i for i in validations if i not in cold_test] or validations
        validation_row_s = (
            statistics.fmean(run.units[i]["validation_s"] for i in warm_validations) / run.validation_rows
            if validations
            else 0.0
        )
        cold_validations = [i for i in validations if i in cold_test and i not in warm_validations]
        costs[key] = UnitCost(
            train_row_s=train_row_s,
            fixed_s=fixed_s,
            validation_row_s=validation_row_s,
            first_unit_s=statistics.fmean(_hop_s(run.units[i]) - fixed_s for i in own if i in firsts),
            cold_s=statistics.fmean(
                run.units[i]["train_s"] - train_row_s * run.units[i]["rows"] for i in own if i in cold
            ),
            cold_validation_s=statistics.fmean(
                run.units[i]["validation_s"] - validation_row_s * run.validation_rows for i in cold_validations
            )
            if cold_validations
            else 0.0,
        )
    return Fit(run, costs, overheads_from_units(run.units, run.segments, run.epochs, run.started))


@dataclass
class Figures:
    """A model's (or the whole run's) figures in a run, measured or predicted."""

    #: From starting the run to the commit of the model's last unit.
    makespan_s: float
    #: The model's unit time / (segments x the run's makespan): its share of the segments' time.
    utilization: float
    #: The share of the model's unit time that neither trains nor validates (state load + save, round trips).
    hop_share: float


#: The key of a run's figures for all its models together.
ALL = "all"


def measured_figures(run: PhaseRun) -> dict[str, Figures]:
    """Per model of ``run`` (and :data:`ALL`): its makespan, utilization and hop share."""
    figures = {}
    for model in [*run.models, ALL]:
        units = run.units if model == ALL else run.units_of(model)
        busy = sum(u["finished"] - u["started"] for u in units)
        hop = sum(_hop_s(u) for u in units)
        figures[model] = Figures(
            makespan_s=max(u["finished"] for u in units) - run.started,
            utilization=busy / (run.segments * run.window_s),
            hop_share=hop / busy,
        )
    return figures


@dataclass
class RunPrediction:
    """``target``'s figures predicted from another run's fit (``fitted``), beside the measured ones."""

    fitted: PhaseRun
    target: PhaseRun
    cores: int
    measured: dict[str, Figures]
    #: Means over the simulation's seeds.
    predicted: dict[str, Figures]
    #: The standard deviation of the whole run's predicted makespan over the seeds.
    predicted_sd: float
    #: Measured: how the target's warm units trained against the fit's costs (:func:`training_vs_fit`).
    training_vs_fit: float

    def error(self, model: str = ALL) -> float:
        return relative_error(self.predicted[model].makespan_s, self.measured[model].makespan_s)

    @property
    def passed(self) -> bool:
        return abs(self.error()) <= TARGET_ERROR


def _refuse_same(fitted: PhaseRun, target: PhaseRun) -> None:
    """A prediction checks the model only on a run it was not fitted on: other units, segments and configs."""
    if {(u["config_id"], u["started"]) for u in fitted.units} & {(u["config_id"], u["started"]) for u in target.units}:
        raise ValueError(f"{target.setup!r} ({target.phase}) is the fitted run itself: predict another run")
    if fitted.segments == target.segments:
        raise ValueError(f"both runs have {target.segments} segment(s): predict a run on another segment count")
    trained = {json.dumps([i.model, i.params], sort_keys=True) for i in fitted.configs.values()}
    same = sorted(c for c, i in target.configs.items() if json.dumps([i.model, i.params], sort_keys=True) in trained)
    if same:
        raise ValueError(f"config {same[0]} of {target.setup!r} was trained in the fitted run: predict other configs")


def predict_run(fitted: PhaseRun, target: PhaseRun, seeds: int, cores: int) -> RunPrediction:
    """``target``'s makespan, utilization and hop share per model, simulated (MOP, ``seeds`` seeds) from
    ``fitted``'s costs and overheads.

    Of ``target`` only its description enters: its configs' models and hyper-parameters and workloads, its
    segments, epochs and dataset rows; ``cores`` is the machine's (the segments share them, see
    :func:`benchlib.simulation.on_cores`). Every config of ``target`` must share a cost key with a config of
    ``fitted`` (the fit measures costs per key, it does not extrapolate to new architectures). The cold units
    (:func:`cold_units`) are the simulated schedule's, not the target's, by the rule of the product that ran the
    target (``target.cold_rule``); the fit's by the fitted run's.
    """
    _refuse_same(fitted, target)
    fit = fit_run(fitted, cores)
    ids = sorted(target.configs)
    profiles = []
    for config in ids:
        info = target.configs[config]
        key = cost_key(info.model, info.params)
        if key not in fit.costs:
            raise ValueError(
                f"{fitted.setup!r} ({fitted.phase}) trained no config costing as {key}: fit on a run that does"
            )
        cost = fit.costs[key]
        profiles.append(
            Profile(
                name=info.model,
                epoch_train_s=cost.train_row_s * target.train_rows,
                unit_fixed_s=cost.fixed_s,
                validation_s=cost.validation_row_s * target.validation_rows,
                first_unit_s=cost.first_unit_s,
                cold_s=cost.cold_s,
                cold_validation_s=cost.cold_validation_s,
                architecture=key,
            )
        )
    workloads = [target.configs[c].workload_id for c in ids]
    results = [
        simulate_mop(
            profiles,
            target.segments,
            target.epochs,
            fit.overheads,
            seed,
            workloads=workloads,
            cores=cores,
            cold_rule=target.cold_rule,
        )
        for seed in range(seeds)
    ]
    predicted = {}
    for model in [*target.models, ALL]:
        own = {i for i, p in enumerate(profiles) if model in (ALL, p.name)}
        units = target.segments * target.epochs
        fixed = sum(units * profiles[i].unit_fixed_s + profiles[i].first_unit_s for i in own)
        # the cold units' recompiles (training and validation, not hop) as often as the simulations had them
        cold = statistics.fmean(
            sum(
                profiles[u.config].cold_s * u.cold + profiles[u.config].cold_validation_s * u.cold_validation
                for u in r.log
                if u.config in own
            )
            for r in results
        )
        total = cold + sum(
            units * profiles[i].unit_s(target.segments)
            + target.epochs * profiles[i].validation_s
            + profiles[i].first_unit_s
            for i in own
        )
        predicted[model] = Figures(
            makespan_s=statistics.fmean(max(u.end for u in r.log if u.config in own) for r in results),
            utilization=statistics.fmean(
                sum(u.end - u.start for u in r.log if u.config in own) / (target.segments * r.makespan_s)
                for r in results
            ),
            hop_share=fixed / total,
        )
    return RunPrediction(
        fitted=fitted,
        target=target,
        cores=cores,
        measured=measured_figures(target),
        predicted=predicted,
        predicted_sd=statistics.pstdev(r.makespan_s for r in results),
        training_vs_fit=training_vs_fit(fit, target, cores),
    )


def own_core_s(unit: Mapping[str, float], units: Sequence[Mapping[str, float]], cores: int) -> float:
    """What ``unit``'s span would have lasted with a core of its own, by processor sharing on its run's measured
    schedule (``units``): each stretch of it with ``b`` units running counts ``min(1, cores / b)``."""
    start, end = unit["started"], unit["finished"]
    points = sorted({start, end, *(t for u in units for t in (u["started"], u["finished"]) if start < t < end)})
    total = 0.0
    for a, b in zip(points, points[1:], strict=False):
        running = sum(1 for u in units if u["started"] <= a and b <= u["finished"])
        total += (b - a) * min(1.0, cores / running)
    return total


def training_vs_fit(fit: Fit, target: PhaseRun, cores: int) -> float:
    """The median over ``target``'s warm units (not a config's first, not cold) of its measured training time over
    what ``fit``'s cost per row gives it, stretched as processor sharing stretched its span on the measured schedule.

    1.0 where the fit's costs held on the run as it happened; so it tells what a prediction's error owes to the
    units' costs (the machine ran them faster or slower than on the fitted run) rather than to the simulated schedule.
    """
    key_of = _cost_keys(target)
    cold, _ = cold_units(target.units, key_of, target.cold_rule)
    skipped = first_units(target.units) | cold
    ratios = []
    for i, unit in enumerate(target.units):
        if i in skipped:
            continue
        stretch = (unit["finished"] - unit["started"]) / own_core_s(unit, target.units, cores)
        ratios.append(unit["train_s"] / (fit.costs[key_of[unit["config_id"]]].train_row_s * unit["rows"] * stretch))
    return statistics.median(ratios)


@dataclass
class RepeatedPrediction:
    """One setup's mixed run measured in several repeats, each predicted (:func:`predict_run`) from the calibration
    run of its own repeat; the target compares the medians.

    One measurement is not enough on this machine: the same units train up to a quarter faster or slower from one
    repeat to the next, minutes apart (a virtual machine, its host shared with other guests), more than the
    :data:`TARGET_ERROR` a prediction may miss by. The median of 2k + 1 repeats ignores k outliers.
    """

    repeats: list[RunPrediction]

    def __post_init__(self) -> None:
        runs = {(p.fitted.setup, p.target.setup) for p in self.repeats}
        if len(runs) != 1:
            raise ValueError(f"repeats of one prediction must fit and predict the same setups, not {sorted(runs)}")

    @property
    def fitted(self) -> PhaseRun:
        return self.repeats[0].fitted

    @property
    def target(self) -> PhaseRun:
        return self.repeats[0].target

    def measured(self, model: str = ALL) -> Figures:
        return _median_figures([p.measured[model] for p in self.repeats])

    def predicted(self, model: str = ALL) -> Figures:
        return _median_figures([p.predicted[model] for p in self.repeats])

    def error(self, model: str = ALL) -> float:
        return relative_error(self.predicted(model).makespan_s, self.measured(model).makespan_s)

    @property
    def passed(self) -> bool:
        return abs(self.error()) <= TARGET_ERROR

    @property
    def training_vs_fit(self) -> float:
        return statistics.median(p.training_vs_fit for p in self.repeats)

    @property
    def in_target(self) -> bool:
        """Whether the target holds this prediction to :data:`TARGET_ERROR`: only where every segment of the
        predicted run had a core (processor sharing, the simulator's model of segments that share cores, leaves out
        what switching between them costs)."""
        return self.target.segments <= self.repeats[0].cores

    @property
    def verdict(self) -> str:
        if not self.in_target:
            return f"not a target: {self.target.segments} segments on {self.repeats[0].cores} cores"
        return "PASS" if self.passed else "MISS"


def _median_figures(figures: Sequence[Figures]) -> Figures:
    return Figures(
        makespan_s=statistics.median(f.makespan_s for f in figures),
        utilization=statistics.median(f.utilization for f in figures),
        hop_share=statistics.median(f.hop_share for f in figures),
    )


def read_runs(units_csv: Path, summary_csv: Path) -> dict[int, MopRun]:
    """The real runs simulate_scale.py wrote (its unit log and the measured makespans of its CSV), by segments."""
    with open(units_csv, newline="") as file:
        units = [{k: float(v) for k, v in row.items()} for row in csv.DictReader(file)]
    with open(summary_csv, newline="") as file:
        measured = [row for row in csv.DictReader(file) if row["kind"] == "validation"]
    runs = {}
    for row in measured:
        segments = int(row["segments"])
        own = [{k: v for k, v in u.items() if k != "segments"} for u in units if u["segments"] == segments]
        runs[segments] = MopRun(
            segments=segments,
            workload_id=0,
            configs=int(row["configs"]),
            epochs=int(row["epochs"]),
            samples=int(sum(u["rows"] for u in own)),
            window_s=float(row["measured_s"]),
            client_wall_s=float("nan"),
            cold_wall_s=float("nan"),
            warmup_units=0,
            first_state_load_s=[],
            units=own,
            val_metric=float("nan"),
        )
    return runs


def roster_profiles(path: Path, dataset_rows: int, ratio: float) -> list[Profile]:
    """One profile per model of hop_overhead.csv, on a dataset of ``dataset_rows`` rows (10% validation)."""
    validation_rows = dataset_rows // 10
    train_rows = dataset_rows - validation_rows
    with open(path, newline="") as file:
        return [
            Profile(
                name=row["model"],
                epoch_train_s=float(row["ms_per_sample"]) * train_rows / 1000,
                unit_fixed_s=float(row["hop_ms"]) / 1000,
                validation_s=ratio * float(row["ms_per_sample"]) * validation_rows / 1000,
            )
            for row in csv.DictReader(file)
        ]


def meets_target(mop: Result, bsp: Result, task: Result) -> bool:
    """MOP at least :data:`TASK_TARGET` x task parallelism's speed (its makespan at most 1/0.9 of task's), and no
    slower than bulk-synchronous MOP."""
    return task.makespan_s >= TASK_TARGET * mop.makespan_s and mop.makespan_s <= bsp.makespan_s


def _mean_mop(
    mix: Sequence[Profile], segments: int, epochs: int, overheads: Overheads, seeds: Sequence[int], rule: str, r: int
) -> Result:
    runs = [simulate_mop(mix, segments, epochs, overheads, seed, rule=rule, replication=r) for seed in seeds]
    result = runs[0]
    result.makespan_s = statistics.fmean(x.makespan_s for x in runs)
    result.busy_s = statistics.fmean(x.busy_s for x in runs)
    result.log = []  # not kept: 100k units per cell
    return result


def sweep(
    profiles: Sequence[Profile],
    segment_counts: Sequence[int],
    config_counts: Sequence[int],
    epochs: int,
    overheads: Overheads,
    seed: int,
    mop_seeds: int,
) -> list[Result]:
    """Every schedule on every (segments, configs): BSP and task parallelism once; MOP (makespan and busy time are
    means over ``mop_seeds`` runs, its random tie-breaks make single runs vary by up to a few tens of percent) with
    each claim rule on one copy of the data, then with the fair rule and each shard on r = 2, 3, ... segments
    until it meets the target (:func:`meets_target`; only replications that change the shard count are tried)."""
    results = []
    seeds = [seed + k for k in range(mop_seeds)]
    for configs in config_counts:
        mix = draw_mix(profiles, configs, seed + configs)  # the same mix for every schedule and segment count
        for segments in segment_counts:
            bsp = simulate_bsp(mix, segments, epochs, overheads)
            task = simulate_task(mix, segments, epochs, overheads)
            bsp.log, task.log = [], []
            results += [bsp, task]
            mops = [_mean_mop(mix, segments, epochs, overheads, seeds, rule, 1) for rule in RULES]
            results += mops
            met = meets_target(mops[0], bsp, task)
            tried = {shards_for(segments, 1)}
            for r in range(2, segments + 1):
                if met:
                    break
                if shards_for(segments, r) in tried:
                    continue
                tried.add(shards_for(segments, r))
                mop = _mean_mop(mix, segments, epochs, overheads, seeds, "fair", r)
                results.append(mop)
                met = meets_target(mop, bsp, task)
    return results
