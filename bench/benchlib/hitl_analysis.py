"""bench/hitl_latency.py's analysis: from the unit log and the trials, one row per measurement with its target."""

from __future__ import annotations

import statistics
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np
import psycopg

from benchlib.hitl import Observer, UnitMonitor
from benchlib.hitl_trials import Results

TARGET_STOP_P95_MS = 50.0
TARGET_SUB_EPOCHS = 1.0
TARGET_VISIBLE_S = 1.0


@dataclass
class UnitRow:
    config_id: int
    segment: int
    started: float
    finished: float
    epoch: int
    epoch_end: bool


@dataclass
class Row:
    name: str
    values: list[float]
    fmt: str
    target: str
    check: Callable[[list[float]], bool] | None


def stats(values: Sequence[float]) -> tuple[float, float, float]:
    array = np.asarray(values, dtype=float)
    return float(np.percentile(array, 50)), float(np.percentile(array, 95)), float(array.max())


def analyse(dsn: str, results: Results, monitor: UnitMonitor, observer: Observer) -> tuple[list[Row], list[str], float]:
    with psycopg.connect(dsn, autocommit=True) as conn:
        units = [
            UnitRow(int(r[0]), int(r[1]), float(r[2]), float(r[3]), int(r[4]), bool(r[5]))
            for r in conn.execute(
                "SELECT u.config_id, u.segment, extract(epoch FROM u.started_at)::float8,"
                " extract(epoch FROM u.finished_at)::float8, u.epoch, u.validation_s IS NOT NULL"
                " FROM units u JOIN configs c USING (config_id) WHERE c.workload_id = %s ORDER BY u.started_at",
                [results.workload_id],
            )
        ]
        metrics_at = {
            (int(r[0]), int(r[1])): float(r[2])
            for r in conn.execute(
                "SELECT m.config_id, m.epoch, extract(epoch FROM m.finished_at)::float8"
                " FROM epoch_metrics m JOIN configs c USING (config_id) WHERE c.workload_id = %s",
                [results.workload_id],
            )
        }
        failed = conn.execute(
            "SELECT config_id, error FROM configs WHERE workload_id = %s AND status = 'failed'", [results.workload_id]
        ).fetchall()

    steady = [u for u in units if u.started >= results.window_start]
    sub_epoch = statistics.fmean(u.finished - u.started for u in steady) if steady else float("nan")
    notes: list[str] = []

    # (a) and (b)
    stops = [t for t in results.stops if t.error is None]
    started_after: list[float] = []
    ending_after: list[float] = []
    quiet_s: list[float] = []
    quiet_own: list[float] = []
    late_start = 0
    for trial in stops:
        # Units of the config that ended after the stop, up to its resume, in start order. The
        # first is the one in flight across the stop if it held the config's lock at t1 (then
        # it was claimed before the commit, whatever its started_at) or started before t1.
        # Every other one started after the stop committed: that would be a bug.
        mine_sorted = sorted((u for u in units if u.config_id == trial.config_id), key=lambda u: u.started)
        after_stop = [u for u in mine_sorted if trial.t0 < u.finished and u.started < trial.resumed_at]
        flying = after_stop[:1] if after_stop and (trial.locked_after or after_stop[0].started <= trial.t1) else []
        further = after_stop[len(flying) :]
        late_start += sum(1 for u in flying if u.started > trial.t1)
        started_after.append(float(len(further)))
        ending_after.append(float(len(after_stop)))
        quiet_s.append(max([u.finished - trial.t0 for u in flying], default=0.0))
        # A hop starts at its claim: for the unit seen in flight before the stop (the first unit of the
        # config that started after that transaction began), from its transaction start.
        picked = next((u for u in mine_sorted if trial.claimed_at is not None and u.started >= trial.claimed_at), None)
        own = 0.0
        for u in flying:
            begin = trial.claimed_at if u is picked and trial.claimed_at is not None else u.started
            own = max(own, (u.finished - trial.t0) / (u.finished - begin))
        quiet_own.append(own)
        for u in further:
            notes.append(
                f"BUG: config {trial.config_id} started a unit on segment {u.segment} {u.started - trial.t1:.3f} s "
                f"after its stop committed (stop t0={trial.t0:.3f}, t1={trial.t1:.3f}, unit {u.started:.3f} - "
                f"{u.finished:.3f}, resumed {trial.resumed_at:.3f})"
            )
    blocked = [t for t in results.stops if t.error is not None]
    for trial in blocked:
        notes.append(f"stop of config {trial.config_id} {trial.error}")
    if late_start:
        notes.append(
            f"{late_start} unit(s) claimed before a stop committed began run_unit after it (counted as in flight)"
        )
    in_flight_count = sum(1 for q in quiet_s if q > 0)

    # (c)
    epoch_end = {(u.config_id, u.epoch): u.finished for u in units if u.epoch_end}
    visible_s = [seen - epoch_end[key] for key, seen in observer.first_seen.items() if key in epoch_end]
    missing = [c for c in monitor.checks if not c.visible]
    lag = [epoch_end[k] - at for k, at in metrics_at.items() if k in epoch_end]

    # (d) The new config's first unit, the unit before it on the same segment (the hop it waited
    # for, if that was in flight at the add), and units of other configs that started in between.
    first_unit: dict[int, UnitRow] = {}
    for u in units:  # ordered by started_at
        first_unit.setdefault(u.config_id, u)
    add_s: list[float] = []
    add_own: list[float] = []
    add_react: list[float] = []
    add_overtaken: list[float] = []
    for t in results.adds:
        if t.config_id not in first_unit:
            notes.append(f"added config {t.config_id} has no committed unit")
            continue
        first = first_unit[t.config_id]
        waited = first.started - t.t0
        before = [u for u in units if u.segment == first.segment and u.started < first.started]
        prev = before[-1] if before else None
        add_s.append(waited)
        if prev is not None and prev.finished > t.t0:
            # The hop in flight at the add: from its start to the next start on that segment
            # (the unit plus its commit and the next claim).
            add_own.append(waited / (first.started - prev.started))
            add_react.append(first.started - prev.finished)
        else:  # the segment was free at the add
            add_own.append(waited / sub_epoch)
            add_react.append(waited)
        add_overtaken.append(
            float(sum(1 for u in units if t.t1 < u.started < first.started and u.config_id != t.config_id))
        )
        if add_react[-1] > 0.05 or add_own[-1] > TARGET_SUB_EPOCHS:
            idle_for = f"idle for {t.t0 - prev.finished:.3f} s" if prev and prev.finished <= t.t0 else "busy"
            notes.append(
                f"slow add (config {t.config_id}): first unit on segment {first.segment} {waited:.3f} s after the add "
                f"({add_react[-1]:.3f} s after that segment became free); at the add that segment was {idle_for}; "
                f"backends right after the add: {'; '.join(t.segments)}"
            )

    def at_most(limit: float, statistic: int = 2) -> Callable[[list[float]], bool]:
        return lambda values: stats(values)[statistic] <= limit

    def per_sub(values: list[float]) -> list[float]:
        return [v / sub_epoch for v in values]

    rows = [
        Row("(a) stop UPDATE returns, ms", [t.update_ms for t in results.stops], ".1f",
            f"p95 <= {TARGET_STOP_P95_MS:.0f} ms", at_most(TARGET_STOP_P95_MS, 1)),
        Row("(b) units started after stop", started_after, ".0f", "max = 0", at_most(0)),
        Row("(b) units ending after stop (in flight)", ending_after, ".0f", "max <= 1", at_most(1)),
        Row("(b) stop -> config idle, s", quiet_s, ".3f", "info", None),
        Row("(b) stop -> config idle, x its unit in flight", quiet_own, ".2f",
            f"max <= {TARGET_SUB_EPOCHS:.0f} sub-epoch", at_most(TARGET_SUB_EPOCHS)),
        Row("(b) stop -> config idle, x mean unit", per_sub(quiet_s), ".2f", "info", None),
        Row("(c) epoch commit -> visible, s (upper bound)", visible_s, ".3f",
            f"max <= {TARGET_VISIBLE_S:.0f} s", at_most(TARGET_VISIBLE_S)),
        Row("(c) row missing right after commit (on_unit)", [0.0 if c.visible else 1.0 for c in monitor.checks],
            ".0f", "max = 0", at_most(0)),
        Row("(d) add_config -> first unit starts, s", add_s, ".3f", "info", None),
        Row("(d) add -> first unit, x the hop it waited for", add_own, ".2f",
            f"max <= {TARGET_SUB_EPOCHS:.0f} sub-epoch", at_most(TARGET_SUB_EPOCHS)),
        Row("(d) add -> first unit, x mean unit", per_sub(add_s), ".2f", "info", None),
        Row("(d) segment free -> its first unit starts, s", add_react, ".3f", "info", None),
        Row("(d) other configs' units started first", add_overtaken, ".0f", "info", None),
    ]  # fmt: skip
    if stops:
        slow = sorted(enumerate(stops, 1), key=lambda it: it[1].update_ms)[-3:][::-1]
        notes.append(
            "slowest stops (#trial: ms in total / of it executing the UPDATE on the server, row lock waits included): "
            + ", ".join(f"#{i}: {t.update_ms:.1f} / {t.execute_ms:.1f}" for i, t in slow)
            + f"; server-side execution p95 {stats([t.execute_ms for t in stops])[1]:.1f} ms"
        )
        lock_waited = [(i, t) for i, t in enumerate(stops, 1) if t.lock_waits]
        notes.append(
            f"stops that waited over 10 ms for a lock (log_lock_waits): {len(lock_waited)}"
            + "".join(f"; #{i}: " + " / ".join(t.lock_waits) for i, t in lock_waited)
        )
    # Hop overhead per segment: a unit's finished_at -> the next unit's started_at on that segment
    # (the unit's commit, the on_unit hook, the next claim). Big gaps are stalls of the whole hop.
    gaps: list[tuple[float, float, int]] = []  # (start of gap, seconds, segment)
    for segment in sorted({u.segment for u in steady}):
        mine = [u for u in steady if u.segment == segment]
        gaps.extend((a.finished, b.started - a.finished, segment) for a, b in zip(mine, mine[1:], strict=False))
    if gaps:
        g50, g95, gmax = stats([g for _, g, _ in gaps])
        notes.append(
            f"hop overhead (unit finished_at -> next unit's started_at on its segment): p50 {1000 * g50:.1f} ms, "
            f"p95 {1000 * g95:.1f} ms, max {1000 * gmax:.1f} ms; {sum(1 for _, g, _ in gaps if g > 0.1)} of "
            f"{len(gaps)} over 100 ms"
        )
        for i, slow_stop in enumerate(stops, 1):
            if slow_stop.update_ms <= TARGET_STOP_P95_MS:
                continue
            begin, end = slow_stop.t0 - 0.005, slow_stop.t0 + slow_stop.update_ms / 1000
            stalls = [(seg, g) for at, g, seg in gaps if g > 0.05 and at < end and at + g > begin]
            notes.append(
                f"stop #{i} took {slow_stop.update_ms:.1f} ms ({slow_stop.execute_ms:.1f} ms executing); hop gaps "
                "over 50 ms "
                "overlapping it: " + (", ".join(f"segment {seg} {1000 * g:.0f} ms" for seg, g in stalls) or "none")
            )
    plain = [u.finished - u.started for u in steady if not u.epoch_end]
    ending = [u.finished - u.started for u in steady if u.epoch_end]
    if plain and ending:
        notes.append(
            f"unit durations after warm-up: {len(plain)} mid-epoch units {statistics.fmean(plain):.3f} s mean "
            f"(max {max(plain):.3f}), {len(ending)} epoch-ending units (with validation) "
            f"{statistics.fmean(ending):.3f} s mean (max {max(ending):.3f})"
        )
    notes.append(
        f"{len(stops)} stops, {in_flight_count} of them with the config's unit still in flight at the stop; "
        f"mean time from the UPDATE's return until active_units no longer lists the config: "
        f"{statistics.fmean(t.idle_after_s for t in stops) if stops else float('nan'):.3f} s"
    )
    if lag:
        notes.append(
            f"epoch_metrics.finished_at is {statistics.median(lag):.3f} s (median; min {min(lag):.3f}, max "
            f"{max(lag):.3f}) earlier than units.finished_at of the epoch's last unit (the rest of that unit: "
            "state save and log, written after the metrics in the same transaction)"
        )
    if missing:
        notes.append(f"rows not visible right after commit: {[(c.config_id, c.epoch) for c in missing]}")
    notes.extend(f"monitor error: {e}" for e in monitor.errors)
    notes.extend(f"failed config {c}: {e}" for c, e in failed)
    notes.append(f"observer: {observer.polls} polls, {len(observer.first_seen)} epoch rows sighted")
    return rows, notes, sub_epoch
