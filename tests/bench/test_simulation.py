"""The schedule simulator of bench/simulate_scale.py (bench/benchlib/simulation.py), without a database."""

from __future__ import annotations

import dataclasses
import itertools
import random
from collections import defaultdict

import pytest
from benchlib.fit import meets_target, overhead_gaps, sweep
from benchlib.sim_report import scale_cells
from benchlib.simulation import (
    MODEL_CACHE_SIZE,
    RULES,
    SCHEDULES,
    Compiled,
    Overheads,
    Profile,
    Result,
    Unit,
    bsp_queues,
    draw_mix,
    on_cores,
    shards_for,
    simulate,
    simulate_bsp,
    simulate_mop,
    simulate_task,
    workload_order,
)

SMALL = Profile("small", epoch_train_s=4.0, unit_fixed_s=0.05, validation_s=0.3)
BIG = Profile("big", epoch_train_s=40.0, unit_fixed_s=0.2, validation_s=2.0)
MIX = draw_mix([SMALL, BIG], 12, seed=3)
OVERHEADS = Overheads(gap_s=0.01, start_s=0.1)


def overlaps(result: Result, key: str) -> bool:
    """Whether two log entries with the same config (or segment) overlap in time."""
    by_key = defaultdict(list)
    for unit in result.log:
        by_key[getattr(unit, key)].append((unit.start, unit.end))
    for spans in by_key.values():
        spans.sort()
        if any(end > next_start for (_, end), (next_start, _) in itertools.pairwise(spans)):
            return True
    return False


@pytest.mark.parametrize("segments", [1, 3, 8])
def test_mop_one_config_is_the_sum_of_its_units(segments: int) -> None:
    epochs = 3
    result = simulate_mop([BIG], segments, epochs, OVERHEADS, seed=1)
    units = segments * epochs * BIG.unit_s(segments) + epochs * BIG.validation_s
    gaps = (segments * epochs - 1) * OVERHEADS.gap_s  # the last commit is outside the makespan
    assert result.makespan_s == pytest.approx(OVERHEADS.start_s + units + gaps)
    assert len(result.log) == segments * epochs


@pytest.mark.parametrize("schedule", SCHEDULES)
@pytest.mark.parametrize("segments", [1, 2, 5, 16])
def test_utilization_is_at_most_one(schedule: str, segments: int) -> None:
    result = simulate(schedule, MIX, segments, 2, OVERHEADS, seed=2)
    assert 0 < result.utilization <= 1 + 1e-12
    assert not overlaps(result, "segment")


@pytest.mark.parametrize("segments", [2, 4, 7])
def test_mop_invariants(segments: int) -> None:
    epochs = 3
    result = simulate_mop(MIX, segments, epochs, OVERHEADS, seed=5)
    assert not overlaps(result, "config"), "a config ran on two segments at once"
    visits = defaultdict(list)
    for unit in result.log:
        visits[(unit.config, unit.epoch)].append(unit.segment)
    assert set(visits) == {(c, e) for c in range(len(MIX)) for e in range(1, epochs + 1)}
    for segments_visited in visits.values():
        assert sorted(segments_visited) == list(range(segments)), "not every segment once per epoch"
    # an epoch starts only after the config's previous epoch ended
    for c in range(len(MIX)):
        units = sorted((u for u in result.log if u.config == c), key=lambda u: u.start)
        assert [u.epoch for u in units] == sorted(u.epoch for u in units)


def test_bsp_visits_each_segment_once_per_epoch_and_queues_cover_the_configs() -> None:
    assert bsp_queues(5, 2) == [[0, 2, 4], [1, 3]]
    result = simulate_bsp(MIX, 4, 2, OVERHEADS)
    visits = defaultdict(list)
    for unit in result.log:
        visits[(unit.config, unit.epoch)].append(unit.segment)
    assert all(sorted(v) == [0, 1, 2, 3] for v in visits.values())
    assert not overlaps(result, "config")


def test_bsp_waits_for_stragglers() -> None:
    # Queue 0 holds both big configs: every round waits for two big units; MOP runs them side by side.
    configs = [BIG, SMALL, SMALL, SMALL] * 2
    mop = simulate_mop(configs, 4, 3, OVERHEADS, seed=0)
    bsp = simulate_bsp(configs, 4, 3, OVERHEADS)
    assert bsp.makespan_s > 1.5 * mop.makespan_s
    assert bsp.utilization < mop.utilization


@pytest.mark.parametrize("segments", [4, 8])
def test_bsp_slower_on_a_random_mix(segments: int) -> None:
    mop = simulate_mop(MIX, segments, 3, OVERHEADS, seed=0)
    bsp = simulate_bsp(MIX, segments, 3, OVERHEADS)
    assert bsp.makespan_s > mop.makespan_s


def test_bsp_equals_mop_for_equal_units_and_one_config_per_segment() -> None:
    equal = [SMALL] * 4
    bsp = simulate_bsp(equal, 4, 2)
    mop = simulate_mop(equal, 4, 2, seed=9)
    assert bsp.makespan_s == pytest.approx(mop.makespan_s)


def test_task_parallelism_storage_and_makespan() -> None:
    result = simulate_task([BIG, SMALL, SMALL], 2, 2, Overheads())
    assert result.data_copies == 2
    assert result.storage_bytes(1000) == 2000
    # BIG on one segment, both SMALL one after the other on the other
    big = 2 * (BIG.epoch_train_s + BIG.validation_s)
    small = 4 * (SMALL.epoch_train_s + SMALL.validation_s)
    assert result.makespan_s == pytest.approx(max(big, small))
    for schedule in ("mop", "bsp"):
        assert simulate(schedule, MIX, 8, 1).data_copies == 1


def test_deterministic_for_a_seed() -> None:
    a = simulate_mop(MIX, 4, 2, OVERHEADS, seed=11)
    b = simulate_mop(MIX, 4, 2, OVERHEADS, seed=11)
    c = simulate_mop(MIX, 4, 2, OVERHEADS, seed=12)
    assert a.log == b.log
    assert a.log != c.log
    assert draw_mix([SMALL, BIG], 20, seed=1) == draw_mix([SMALL, BIG], 20, seed=1)
    assert draw_mix([SMALL, BIG], 20, seed=1) != draw_mix([SMALL, BIG], 20, seed=2)


def test_unit_time_scales_with_the_shard() -> None:
    assert BIG.unit_s(4) == pytest.approx(40.0 / 4 + 0.2)
    with pytest.raises(ValueError, match="unknown schedule"):
        simulate("gossip", MIX, 2, 1)
    with pytest.raises(ValueError, match="segments >= 1"):
        simulate_mop(MIX, 0, 1)


def test_overhead_gaps_leave_out_waits_for_a_legal_unit() -> None:
    one = simulate_mop(MIX, 1, 2, OVERHEADS, seed=4)
    assert overhead_gaps(one.log, 1, 2) == pytest.approx([OVERHEADS.gap_s] * (len(one.log) - 1))
    # one big and one small config on 2 segments: the small one's segment must wait for the big one
    two = simulate_mop([BIG, SMALL], 2, 2, OVERHEADS, seed=4)
    all_gaps = [
        b.start - a.end
        for s in (0, 1)
        for a, b in itertools.pairwise(sorted((u for u in two.log if u.segment == s), key=lambda u: u.start))
    ]
    assert max(all_gaps) > 1.0
    assert overhead_gaps(two.log, 2, 2) == pytest.approx([OVERHEADS.gap_s] * 3)


def test_mop_never_idles_a_segment_while_a_legal_unit_exists() -> None:
    # Without overheads, any gap on a segment while some config could legally run there is a bug.
    mix = draw_mix([SMALL, BIG, Profile("tiny", 0.5, 0.01, 0.05)], 20, seed=8)
    result = simulate_mop(mix, 6, 3, Overheads(), seed=3)
    assert any(u.start > 0 for u in result.log)
    assert overhead_gaps(result.log, 6, 3) == pytest.approx([0.0] * len(overhead_gaps(result.log, 6, 3)))
    assert len(overhead_gaps(result.log, 6, 3)) > 100


def test_mop_draws_unit_times_from_samples() -> None:
    samples = [[1.0, 3.0], [2.0], [0.5, 0.7, 0.9]]
    profiles = [Profile(f"c{i}", 0.0, 0.0, 0.0) for i in range(3)]
    result = simulate_mop(profiles, 2, 4, seed=1, unit_samples=samples)
    for unit in result.log:
        assert any(unit.end - unit.start == pytest.approx(t) for t in samples[unit.config])
    assert {round(u.end - u.start, 6) for u in result.log if u.config == 0} == {1.0, 3.0}
    assert result.log == simulate_mop(profiles, 2, 4, seed=1, unit_samples=samples).log


@pytest.mark.parametrize(("segments", "replication"), [(4, 2), (6, 3), (7, 2), (8, 8)])
@pytest.mark.parametrize("rule", RULES)
def test_mop_with_replication_visits_every_shard_once_per_epoch(segments: int, replication: int, rule: str) -> None:
    epochs = 3
    shards = shards_for(segments, replication)
    result = simulate_mop(MIX, segments, epochs, OVERHEADS, seed=5, rule=rule, replication=replication)
    assert result.data_copies == pytest.approx(segments / shards)
    assert not overlaps(result, "config"), "a config ran on two segments at once"
    assert not overlaps(result, "segment")
    visits = defaultdict(list)
    for unit in result.log:
        assert unit.shard == unit.segment % shards, "a unit on a segment that does not hold its shard"
        visits[(unit.config, unit.epoch)].append(unit.shard)
    assert set(visits) == {(c, e) for c in range(len(MIX)) for e in range(1, epochs + 1)}
    for shards_visited in visits.values():
        assert sorted(shards_visited) == list(range(shards)), "a shard visited twice or skipped in an epoch"
    # with several holders per shard a config's epoch does run on more than one holder of a shard
    if replication < segments:
        holders = {(u.shard, u.segment) for u in result.log}
        assert len(holders) > shards


@pytest.mark.parametrize("replication", [1, 2, 3])
@pytest.mark.parametrize("rule", RULES)
def test_no_rule_idles_a_segment_while_a_legal_unit_exists(rule: str, replication: int) -> None:
    mix = draw_mix([SMALL, BIG, Profile("tiny", 0.5, 0.01, 0.05)], 20, seed=8)
    result = simulate_mop(mix, 6, 3, Overheads(), seed=3, rule=rule, replication=replication)
    gaps = overhead_gaps(result.log, 6, 3, shards_for(6, replication))
    assert len(gaps) > 30
    assert gaps == pytest.approx([0.0] * len(gaps))


def test_the_idle_check_sees_a_segment_left_idle() -> None:
    # A log where segment 1 waits 5 s although config 1 could run there: the check must report the gap.
    log = [
        Unit(0, 0, 1, 0.0, 1.0, 0),
        Unit(1, 0, 1, 1.0, 2.0, 0),
        Unit(0, 1, 1, 1.0, 2.0, 1),
        Unit(1, 1, 1, 7.0, 8.0, 1),
        Unit(0, 1, 2, 8.0, 9.0, 1),
    ]
    assert 5.0 in overhead_gaps(log, 2, 2)


def test_longest_rule_prefers_the_most_remaining_work() -> None:
    # One segment: the longest rule runs BIG's units before SMALL's until their remaining work crosses over;
    # the fair rule alternates (least progress first).
    longest = simulate_mop([SMALL, BIG], 1, 2, seed=1, rule="longest")
    fair = simulate_mop([SMALL, BIG], 1, 2, seed=1, rule="fair")
    assert [u.config for u in longest.log] == [1, 1, 0, 0]
    assert [u.config for u in fair.log][:2] in ([0, 1], [1, 0])
    assert [u.config for u in fair.log][2:] in ([0, 1], [1, 0])


def test_full_replication_is_one_unit_per_epoch() -> None:
    result = simulate_mop([BIG], 4, 2, OVERHEADS, seed=0, replication=4)
    assert len(result.log) == 2
    assert result.makespan_s == pytest.approx(
        OVERHEADS.start_s + 2 * (BIG.unit_s(1) + BIG.validation_s) + OVERHEADS.gap_s
    )
    assert result.data_copies == 4


def test_bad_rule_or_replication_is_refused() -> None:
    with pytest.raises(ValueError, match="unknown rule 'random'"):
        simulate_mop(MIX, 2, 1, rule="random")
    with pytest.raises(ValueError, match=r"1 <= replication <= segments \(2\), got 3"):
        simulate_mop(MIX, 2, 1, replication=3)
    with pytest.raises(ValueError, match="got 0"):
        shards_for(4, 0)
    assert shards_for(64, 3) == 21


def test_sweep_takes_the_smallest_replication_that_meets_the_target() -> None:
    # A big hop on many segments: one copy misses 0.9x task parallelism, replication reaches it.
    heavy = Profile("heavy", epoch_train_s=16.0, unit_fixed_s=1.0, validation_s=0.5)
    results = sweep([heavy, SMALL], [8], [6], 2, OVERHEADS, seed=1, mop_seeds=2)
    cells = scale_cells(results)
    cell = cells[(6, 8)]
    assert set(cell.one_copy) == set(RULES)
    assert not meets_target(cell.one_copy["fair"], cell.bsp, cell.task)
    assert cell.met and cell.chosen.replication > 1
    tried = sorted(r.replication for r in results if r.schedule == "mop" and r.rule == "fair")
    assert tried[-1] == cell.chosen.replication
    for r in results:
        if r.schedule == "mop" and r.rule == "fair" and r.replication < cell.chosen.replication:
            assert not meets_target(r, cell.bsp, cell.task)
    # a cell that meets it on one copy tries no replication
    light = sweep([SMALL], [2], [8], 2, OVERHEADS, seed=1, mop_seeds=1)
    assert [r.replication for r in light if r.schedule == "mop"] == [1, 1]
    assert scale_cells(light)[(8, 2)].met


def test_on_cores_stretches_the_spans_with_more_units_than_cores() -> None:
    log = [Unit(0, 0, 1, 0.0, 1.0), Unit(1, 1, 1, 0.0, 3.0), Unit(2, 2, 1, 0.0, 3.0), Unit(0, 0, 1, 4.0, 5.0)]
    shared = on_cores(log, 2)
    # 3 units on 2 cores until t=1 (1.5x as long), then 2 (full speed), then none, then 1
    assert [t for u in shared for t in (u.start, u.end)] == pytest.approx([0, 1.5, 0, 3.5, 0, 3.5, 4.5, 5.5])
    assert [(u.config, u.segment, u.epoch) for u in shared] == [(u.config, u.segment, u.epoch) for u in log]
    assert on_cores(log, 3) == log  # a core per unit: nothing changes
    assert [u.end for u in on_cores(log, 1)] == pytest.approx([3.0, 7.0, 7.0, 9.0])
    with pytest.raises(ValueError, match="cores >= 1, got 0"):
        on_cores(log, 0)


def test_mop_on_shared_cores() -> None:
    alone = simulate_mop(MIX, 4, 2, OVERHEADS, seed=3)
    assert simulate_mop(MIX, 4, 2, OVERHEADS, seed=3, cores=4).log == alone.log
    assert simulate_mop(MIX, 4, 2, OVERHEADS, seed=3, cores=8).log == alone.log
    shared = simulate_mop(MIX, 4, 2, OVERHEADS, seed=3, cores=2)
    # the same schedule on a slower clock: 4 busy segments on 2 cores take twice as long, fewer less
    assert shared.log == on_cores(alone.log, 2)
    assert [(u.config, u.segment, u.epoch) for u in shared.log] == [(u.config, u.segment, u.epoch) for u in alone.log]
    assert 1.5 * alone.makespan_s < shared.makespan_s < 2 * alone.makespan_s
    assert shared.busy_s > 1.5 * alone.busy_s


def test_workload_order_is_claim_units() -> None:
    rng = random.Random(0)
    workloads = [7, 7, 8, 9, 9]
    # workload 7 has a unit in flight; 8 and 9 none, 9's least epochs done is 1, 8's is 2
    assert workload_order(workloads, [True, False, False, False, False], [0, 0, 2, 1, 3], 4, rng) == {8: 1, 9: 0, 7: 2}
    # finished workloads are not ranked; ties go either way
    firsts = {
        min(r, key=r.__getitem__)
        for r in (workload_order(workloads, [False] * 5, [4, 4, 0, 0, 0], 4, rng) for _ in range(40))
    }
    assert firsts == {8, 9}


def test_mop_with_workloads_spreads_the_segments_over_them() -> None:
    configs = [SMALL, SMALL, SMALL, BIG]
    workloads = [0, 0, 0, 1]
    spread, together = [], []
    for seed in range(20):
        first = sorted(simulate_mop(configs, 2, 2, OVERHEADS, seed, workloads=workloads).log, key=lambda u: u.start)
        spread.append({workloads[u.config] for u in first[:2]})
        first = sorted(simulate_mop(configs, 2, 2, OVERHEADS, seed).log, key=lambda u: u.start)
        together.append({workloads[u.config] for u in first[:2]})
    # claim_unit gives the second segment to the workload with no unit in flight; one workload takes both
    # segments at times when all configs are one workload
    assert all(s == {0, 1} for s in spread)
    assert any(s == {0} for s in together)
    result = simulate_mop(configs, 3, 2, OVERHEADS, 5, workloads=workloads)
    assert not overlaps(result, "config") and not overlaps(result, "segment")
    assert len(result.log) == 4 * 3 * 2


def test_mop_adds_the_first_unit_cost_once_per_config() -> None:
    first = Profile("first", epoch_train_s=4.0, unit_fixed_s=0.05, validation_s=0.3, first_unit_s=2.0)
    plain = simulate_mop([SMALL], 3, 2, OVERHEADS, seed=1)
    result = simulate_mop([first], 3, 2, OVERHEADS, seed=1)
    assert result.makespan_s == pytest.approx(plain.makespan_s + 2.0)
    log = sorted(result.log, key=lambda u: u.start)
    assert log[0].end - log[0].start == pytest.approx(SMALL.unit_s(3) + 2.0)
    extra = [u.end - u.start - SMALL.unit_s(3) for u in log[1:]]
    assert extra == pytest.approx([0.0, SMALL.validation_s, 0.0, 0.0, SMALL.validation_s])


COLD_BIG = Profile("big", epoch_train_s=4.0, unit_fixed_s=0.1, validation_s=0.5, cold_s=3.0, cold_validation_s=0.2)
#: Two configs of one architecture and one of another.
COLD_PROFILES = [
    COLD_BIG,
    dataclasses.replace(COLD_BIG, name="big too", architecture="big"),
    dataclasses.replace(COLD_BIG, name="small", epoch_train_s=1.0),
]


def cold_architecture(config: int) -> str:
    return COLD_PROFILES[config].architecture or COLD_PROFILES[config].name


def validating(log: list[Unit]) -> set[int]:
    """The ids of the units that validate (an epoch's last); ``log`` sorted by start."""
    return {id(u) for u in {(u.config, u.epoch): u for u in log}.values()}


def assert_cold_costs(log: list[Unit], segments: int) -> None:
    validates = validating(log)
    for u in log:
        p = COLD_PROFILES[u.config]
        expected = p.unit_s(segments) + p.cold_s * u.cold
        if id(u) in validates:
            expected += p.validation_s
        assert u.end - u.start == pytest.approx(expected + p.cold_validation_s * u.cold_validation)


def test_mop_charges_a_cold_unit_at_the_first_of_each_architecture_on_its_segment() -> None:
    # the product since training.seed_keras: nothing clears a backend's compiled functions
    for segments in (1, 2, 3):
        log = sorted(simulate_mop(COLD_PROFILES, segments, 3, seed=3).log, key=lambda u: u.start)
        validates = validating(log)
        trained: set[tuple[int, str]] = set()
        tested: set[tuple[int, str]] = set()
        for u in log:
            here = (u.segment, cold_architecture(u.config))
            assert u.cold == (here not in trained)
            assert u.cold_validation == (id(u) in validates and here not in tested)
            trained.add(here)
            if id(u) in validates:
                tested.add(here)
        assert trained == {(s, a) for s in range(segments) for a in ("big", "small")}
        assert_cold_costs(log, segments)


def test_a_segment_compiles_an_architecture_again_once_its_model_left_the_cache() -> None:
    # one more architecture than the cache holds, one config each, one segment: the second epoch finds some models
    # dropped (least recently used) and compiles them again
    many = [dataclasses.replace(COLD_BIG, name=f"a{i}") for i in range(MODEL_CACHE_SIZE + 1)]
    assert sum(u.cold for u in simulate_mop(many, 1, 2, seed=0).log) > MODEL_CACHE_SIZE + 1
    assert sum(u.cold for u in simulate_mop(many[:-1], 1, 2, seed=0).log) == MODEL_CACHE_SIZE


def test_compiled_keeps_the_recently_used_models() -> None:
    from cerebro_plpy import training

    assert MODEL_CACHE_SIZE == training.MODEL_CACHE_SIZE
    backend = Compiled("cached", cache_size=2)
    runs = [("a", False), ("b", True), ("a", False), ("c", False), ("b", False), ("a", False), ("b", True)]
    assert [backend.unit(key, first=False, validates=v) for key, v in runs] == [
        (True, False),  # a
        (True, True),  # b, and its first validation
        (False, False),  # a, compiled
        (True, False),  # c drops b (least recently used)
        (True, False),  # b drops a
        (True, False),  # a drops c
        (False, True),  # b, still cached: but its test function went with its model
    ]
    with pytest.raises(ValueError, match="unknown cold rule 'warm'"):
        Compiled("warm")


def test_mop_charges_a_cold_unit_after_each_first_unit_on_its_segment_under_the_seeded_rule() -> None:
    # one segment (the fair rule: every first unit, then every config's second epoch in the same order), the product
    # before training.seed_keras: a config's first unit cleared the segment's compiled functions, so its own unit is
    # cold, and so is the next unit of each architecture after it
    profiles, architecture = COLD_PROFILES, cold_architecture
    result = simulate_mop(profiles, 1, 2, seed=3, cold_rule="seeded")
    log = sorted(result.log, key=lambda u: u.start)
    firsts, seconds = log[:3], log[3:]
    assert all(u.cold and u.cold_validation for u in firsts)
    # after the last first unit only its own architecture is compiled: the next unit of each other one is cold
    compiled = {architecture(firsts[-1].config)}
    for u in seconds:
        assert u.cold == (architecture(u.config) not in compiled)
        compiled.add(architecture(u.config))
    assert all(u.cold == u.cold_validation for u in log)
    assert_cold_costs(log, 1)
    # the product since then: only the first unit of each architecture is cold
    assert sum(u.cold for u in log) > sum(u.cold for u in simulate_mop(profiles, 1, 2, seed=3).log) == 2
