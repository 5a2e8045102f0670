"""A discrete-event model of three model-selection schedules on S segments (pure, no database).

Every config trains ``epochs`` passes over a dataset cut into ``segments`` equal shards.
Its cost is a :class:`Profile` measured on this machine:

* a *unit* (one pass over one shard) takes ``epoch_train_s / segments + unit_fixed_s``:
  training scales with the shard's rows, the hop (state load + save) does not;
* the last unit of an epoch also validates (``validation_s``, on all validation rows);
* a config's first unit also builds its initial state (``first_unit_s``);
* a *cold* unit pays ``cold_s`` to compile its architecture's train function on its segment's backend, a cold
  validation ``cold_validation_s`` for the test function; which units are cold depends on the product that ran
  (:data:`COLD_RULES`, :class:`Compiled`);
* between two units a segment spends ``Overheads.gap_s`` outside any unit (commit, wake-up,
  the next claim) and the config is not released before its unit's commit, that is ``gap_s``
  after the unit ends; the first units start ``Overheads.start_s`` after the workload does;
* by default every segment has a core of its own. With ``cores`` (MOP only: segments that share
  a machine's cores, as this machine's 2 cores run 4 segment servers), the segments share the
  cores: while ``b`` units run, every unit, gap and claim advances at ``min(1, cores / b)`` of its
  speed (processor sharing, :func:`on_cores`).

The schedules:

``mop``
    cerebro-db's asynchronous, randomized model hopper (``claim_unit`` in ``sql/10_unit/10_claim.sql``):
    a free segment at once takes a legal unit (config not running elsewhere, this segment not
    yet visited in the config's epoch, epochs left), preferring the least progress
    (``epochs_done * segments + visited``), ties at random. A segment with no legal unit waits
    for the next commit. With several workloads run together (``workloads``), the claim first
    takes the workload as ``claim_unit`` does (:func:`workload_order`), then the config in it.
``bsp``
    MADlib ``fit_multiple``'s bulk-synchronous rotation: configs are dealt round-robin into
    ``segments`` queues (config i into queue i mod S); in round r segment s trains every config
    of queue (s + r) mod S one after another, and the next round starts when the slowest
    segment is done (barrier). S rounds make an epoch, so each config visits each segment once
    per epoch, as in MOP. With fewer configs than segments, some segments idle every round.
``task``
    Task parallelism with full replication: every segment holds the whole training set; a free
    segment takes the next config (in the given order) and trains all of its epochs there. An
    epoch is ``epoch_train_s + validation_s``: the model stays in memory, so no hop is paid,
    only one ``gap_s`` per config (its claim and commit).

Busy time counts units only (training, hops, validation), not gaps or waits, so utilization
= busy / (segments * makespan) <= 1.
"""

from __future__ import annotations

import dataclasses
import heapq
import random
from collections import Counter, OrderedDict, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field

SCHEDULES = ("mop", "bsp", "task")
SCHEDULE_NAMES = {
    "mop": "MOP async (cerebro-db)",
    "bsp": "MOP bulk-synchronous (MADlib)",
    "task": "task parallelism (replicated)",
}


@dataclass(frozen=True)
class Profile:
    """What one config costs, independent of the number of segments."""

    name: str
    #: Training one full epoch (all training rows) on one segment, seconds.
    epoch_train_s: float
    #: Per unit, whatever the shard size: state load + save (the hop), data access.
    unit_fixed_s: float
    #: Validation at each epoch end, on all validation rows.
    validation_s: float
    #: Added to the config's first unit (MOP only): building its initial state (measured runs; the roster's profiles
    #: have none).
    first_unit_s: float = 0.0
    #: Added to a unit (MOP only) whose segment has no compiled train function of its architecture (:class:`Compiled`).
    cold_s: float = 0.0
    #: The same for an epoch's last unit whose segment has no compiled test function of the architecture.
    cold_validation_s: float = 0.0
    #: What the segment's compiled functions are kept by (configs that differ only in lr share them); "": ``name``.
    architecture: str = ""

    def unit_s(self, segments: int) -> float:
        """One unit (one pass over one of ``segments`` equal shards), without validation."""
        return self.epoch_train_s / segments + self.unit_fixed_s


#: cerebro_plpy.training.MODEL_CACHE_SIZE: the compiled models a backend keeps, the least recently used dropped first.
MODEL_CACHE_SIZE = 8
#: Which units compile their architecture's functions again, by the product that ran them:
#: ``cached`` (since ``training.seed_keras``): a backend compiles an architecture's train (test) function at its first
#: unit (validation) there, and again only after its model left the backend's cache;
#: ``seeded`` (before, the runs in bench/results/scaling_units.csv): besides, every config's first unit built its
#: initial state after seeding TensorFlow, which cleared the backend's kernel caches: every cached model compiled its
#: functions again at its next unit (validation). (A model's build for the cache seeded too; the recorded phases
#: built none: their warm-up had built every architecture on every backend.)
COLD_RULES = ("cached", "seeded")


class Compiled:
    """What one backend has compiled, under a rule of :data:`COLD_RULES`; nothing at first.

    A measured phase after a warm-up of its architectures (bench/benchlib/mixed.py) has compiled them all: its units
    that this calls cold are then the first of an architecture on a backend in the phase, and what the fit measures
    them to cost beyond the others is what they cost (expected: about nothing under ``cached``).
    """

    def __init__(self, rule: str, cache_size: int = MODEL_CACHE_SIZE) -> None:
        if rule not in COLD_RULES:
            raise ValueError(f"unknown cold rule {rule!r}; expected one of {', '.join(COLD_RULES)}")
        self.rule, self.cache_size = rule, cache_size
        self.models: OrderedDict[str, None] = OrderedDict()
        self.train: set[str] = set()
        self.test: set[str] = set()

    def unit(self, architecture: str, first: bool, validates: bool) -> tuple[bool, bool]:
        """Whether a unit of ``architecture`` (``first``: a config's first unit) compiles its train function, and
        (``validates``: an epoch's last unit) its test function."""
        if first and self.rule == "seeded":
            self.train.clear()
            self.test.clear()
        self.models[architecture] = None
        self.models.move_to_end(architecture)
        if len(self.models) > self.cache_size:
            dropped, _ = self.models.popitem(last=False)
            self.train.discard(dropped)
            self.test.discard(dropped)
        cold, cold_validation = architecture not in self.train, validates and architecture not in self.test
        self.train.add(architecture)
        if validates:
            self.test.add(architecture)
        return cold, cold_validation


@dataclass(frozen=True)
class Overheads:
    """Time outside the units, from the scheduler's unit log."""

    #: On a segment, from a unit's end to the start of its next unit (commit, claim).
    gap_s: float = 0.0
    #: From starting the workload to the first units.
    start_s: float = 0.0


@dataclass(frozen=True)
class Unit:
    """One entry of a simulation's event log (for task parallelism: a whole epoch)."""

    config: int
    segment: int
    epoch: int
    start: float
    end: float
    #: The shard it trained on (MOP with replication; otherwise the segment's own).
    shard: int = -1
    #: It compiled its train function again (``Profile.cold_s``), and its test function (``cold_validation_s``).
    cold: bool = False
    cold_validation: bool = False


@dataclass
class Result:
    schedule: str
    segments: int
    configs: int
    epochs: int
    makespan_s: float
    busy_s: float
    #: Copies of the training set held by the segments together.
    data_copies: float
    #: MOP's claim rule (:data:`RULES`) and how many segments store each shard; "" and 1 for the others.
    rule: str = ""
    replication: int = 1
    log: list[Unit] = field(default_factory=list, repr=False)

    @property
    def utilization(self) -> float:
        """Mean segment utilization: unit time / (segments * makespan)."""
        return self.busy_s / (self.segments * self.makespan_s) if self.makespan_s > 0 else 0.0

    def storage_bytes(self, dataset_bytes: int) -> int:
        return round(self.data_copies * dataset_bytes)


def _result(
    schedule: str, profiles: Sequence[Profile], segments: int, epochs: int, log: list[Unit], copies: float
) -> Result:
    return Result(
        schedule=schedule,
        segments=segments,
        configs=len(profiles),
        epochs=epochs,
        makespan_s=max((u.end for u in log), default=0.0),
        busy_s=sum(u.end - u.start for u in log),
        data_copies=copies,
        log=log,
    )


def _check(segments: int, epochs: int) -> None:
    if segments < 1 or epochs < 1:
        raise ValueError(f"need segments >= 1 and epochs >= 1, got {segments} and {epochs}")


#: The claim rules of simulate_mop: ``fair`` is today's claim_unit (least progress first); ``longest`` prefers
#: the config with the most remaining work (unit-seconds left), as claim_unit does within an owner's work.
RULES = ("fair", "longest")


def shards_for(segments: int, replication: int) -> int:
    """How many shards the training set is cut into when each is stored on (at least) ``replication`` of
    ``segments`` segments: every segment holds one shard, shard k on the segments s with s mod shards = k."""
    if not 1 <= replication <= segments:
        raise ValueError(f"need 1 <= replication <= segments ({segments}), got {replication}")
    return segments // replication


def simulate_mop(
    profiles: Sequence[Profile],
    segments: int,
    epochs: int,
    overheads: Overheads = Overheads(),
    seed: int = 0,
    unit_samples: Sequence[Sequence[float]] | None = None,
    rule: str = "fair",
    replication: int = 1,
    workloads: Sequence[int] | None = None,
    cores: int | None = None,
    cold_rule: str = "cached",
) -> Result:
    """cerebro-db's asynchronous randomized MOP schedule (see the module docstring).

    ``unit_samples``: per config, measured unit times (without validation) to draw each unit's
    time from, instead of the profile's fixed ``unit_s``: real units vary, which lengthens the tail.
    ``rule``: which legal unit a free segment takes (:data:`RULES`). ``replication``: each shard is
    stored on that many segments (:func:`shards_for`); a config visits every shard once per epoch,
    on any segment that holds it. A unit is one pass over one shard.
    ``workloads``: per config, the workload it belongs to (default: all in one), claimed in
    :func:`workload_order`. ``cores``: the cores the segments share (default: one per segment), see
    :func:`on_cores`. ``cold_rule``: which units are cold (:data:`COLD_RULES`), the product's since
    ``training.seed_keras`` by default.
    """
    _check(segments, epochs)
    if rule not in RULES:
        raise ValueError(f"unknown rule {rule!r}; expected one of {', '.join(RULES)}")
    shards = shards_for(segments, replication)
    rng = random.Random(seed)
    n = len(profiles)
    done = [0] * n
    visited: list[set[int]] = [set() for _ in range(n)]
    running = [False] * n
    unit_s = [p.unit_s(shards) for p in profiles]
    log: list[Unit] = []
    # (time, tie-breaker, segment, config, shard): the segment is free again and the config
    # released, both ``gap_s`` after the unit's end (its commit, notify and the next claim).
    events: list[tuple[float, int, int, int, int]] = []
    idle = list(range(segments))
    rng.shuffle(idle)
    compiled = [Compiled(cold_rule) for _ in range(segments)]  # nothing before the first units
    now = overheads.start_s
    order = 0
    while True:
        waiting = []
        for segment in idle:
            best: list[int] = []
            best_key = (0, 0.0)
            # claim_unit takes the first workload in its order with a legal config here, then the config
            rank = workload_order(workloads, running, done, epochs, rng) if workloads is not None else {}
            for c in range(n):
                if running[c] or done[c] >= epochs or segment % shards in visited[c]:
                    continue
                if rule == "fair":  # least progress first: the claim's ORDER BY before this change
                    value = -float(done[c] * shards + len(visited[c]))
                else:  # the most unit-seconds left, validations included
                    left = epochs - done[c]
                    value = (left * shards - len(visited[c])) * unit_s[c] + left * profiles[c].validation_s
                key = (-rank[workloads[c]] if workloads is not None else 0, value)
                if not best or key > best_key:
                    best, best_key = [c], key
                elif key == best_key:
                    best.append(c)
            if not best:
                waiting.append(segment)
                continue
            config = rng.choice(best)  # ties at random
            shard = segment % shards
            last = len(visited[config]) == shards - 1
            profile = profiles[config]
            duration = rng.choice(unit_samples[config]) if unit_samples else unit_s[config]
            first = done[config] == 0 and not visited[config]
            if first:
                duration += profile.first_unit_s
            cold, cold_validation = compiled[segment].unit(profile.architecture or profile.name, first, last)
            if cold:
                duration += profile.cold_s
            validation = profile.validation_s + (profile.cold_validation_s if cold_validation else 0.0)
            end = now + duration + (validation if last else 0.0)
            log.append(Unit(config, segment, done[config] + 1, now, end, shard, cold, cold_validation))
            running[config] = True
            order += 1
            heapq.heappush(events, (end + overheads.gap_s, order, segment, config, shard))
        if not events:
            break
        # Advance to the next commit(s); committed units free their segment and config.
        now = events[0][0]
        idle = waiting
        while events and events[0][0] == now:
            _, _, segment, config, shard = heapq.heappop(events)
            running[config] = False
            visited[config].add(shard)
            if len(visited[config]) == shards:
                visited[config].clear()
                done[config] += 1
            idle.append(segment)
        rng.shuffle(idle)  # which waiting segment claims first is a race
    if any(d < epochs for d in done):
        raise AssertionError("MOP simulation stopped with work left")  # cannot happen: a free config always fits
    if cores is not None:
        log = on_cores(log, cores)
    result = _result("mop", profiles, segments, epochs, log, copies=segments / shards)
    result.rule, result.replication = rule, replication
    return result


def workload_order(
    workloads: Sequence[int], running: Sequence[bool], done: Sequence[int], epochs: int, rng: random.Random
) -> dict[int, int]:
    """``claim_unit``'s order of the workloads with epochs left (rank 0 first): the fewest units in flight,
    then the least epochs done among its unfinished configs, then at random."""
    in_flight = Counter(w for w, r in zip(workloads, running, strict=True) if r)
    least: dict[int, int] = {}
    for w, d in zip(workloads, done, strict=True):
        if d < epochs:
            least[w] = min(least.get(w, d), d)
    ranked = sorted(least, key=lambda w: (in_flight[w], least[w], rng.random()))
    return {w: i for i, w in enumerate(ranked)}


def on_cores(log: Sequence[Unit], cores: int) -> list[Unit]:
    """``log`` replayed on ``cores`` cores shared by its segments (processor sharing).

    ``log`` is timed as if every segment had a core of its own. While ``b`` of its units run, everything
    (units, the gaps between them) advances at ``min(1, cores / b)`` of that speed. All running units share
    one speed, so the schedule's order of events is unchanged and only its clock stretches: each span of the
    log with ``b`` units running lasts ``max(1, b / cores)`` times as long.
    """
    if cores < 1:
        raise ValueError(f"need cores >= 1, got {cores}")
    change: defaultdict[float, int] = defaultdict(int)
    for unit in log:
        change[unit.start] += 1
        change[unit.end] -= 1
    wall: dict[float, float] = {}
    clock = previous = 0.0
    running = 0
    for t in sorted({0.0, *change}):
        clock += (t - previous) * max(1.0, running / cores)
        wall[t] = clock
        running += change[t]
        previous = t
    return [dataclasses.replace(u, start=wall[u.start], end=wall[u.end]) for u in log]


def bsp_queues(configs: int, segments: int) -> list[list[int]]:
    """MADlib-style groups: config i goes to queue i mod segments."""
    return [list(range(q, configs, segments)) for q in range(segments)]


def simulate_bsp(profiles: Sequence[Profile], segments: int, epochs: int, overheads: Overheads = Overheads()) -> Result:
    """Bulk-synchronous round-robin MOP (MADlib fit_multiple), with a barrier after every round."""
    _check(segments, epochs)
    queues = bsp_queues(len(profiles), segments)
    log: list[Unit] = []
    now = overheads.start_s
    for epoch in range(1, epochs + 1):
        for round_ in range(segments):
            last_round = round_ == segments - 1
            round_end = now
            for segment in range(segments):
                t = now
                for config in queues[(segment + round_) % segments]:
                    p = profiles[config]
                    end = t + p.unit_s(segments) + (p.validation_s if last_round else 0.0)
                    log.append(Unit(config, segment, epoch, t, end))
                    t = end + overheads.gap_s
                round_end = max(round_end, t)
            now = round_end  # the barrier: everyone waits for the slowest segment
    return _result("bsp", profiles, segments, epochs, log, copies=1)


def simulate_task(
    profiles: Sequence[Profile], segments: int, epochs: int, overheads: Overheads = Overheads()
) -> Result:
    """Task parallelism on fully replicated data: a free segment trains the next whole config."""
    _check(segments, epochs)
    free = [(overheads.start_s, s) for s in range(segments)]
    heapq.heapify(free)
    log: list[Unit] = []
    for config, p in enumerate(profiles):
        t, segment = heapq.heappop(free)
        for epoch in range(1, epochs + 1):
            end = t + p.epoch_train_s + p.validation_s
            log.append(Unit(config, segment, epoch, t, end))
            t = end
        heapq.heappush(free, (t + overheads.gap_s, segment))
    return _result("task", profiles, segments, epochs, log, copies=segments)


def simulate(
    schedule: str,
    profiles: Sequence[Profile],
    segments: int,
    epochs: int,
    overheads: Overheads = Overheads(),
    seed: int = 0,
) -> Result:
    if schedule == "mop":
        return simulate_mop(profiles, segments, epochs, overheads, seed)
    if schedule == "bsp":
        return simulate_bsp(profiles, segments, epochs, overheads)
    if schedule == "task":
        return simulate_task(profiles, segments, epochs, overheads)
    raise ValueError(f"unknown schedule {schedule!r}; expected one of {', '.join(SCHEDULES)}")


def draw_mix(profiles: Sequence[Profile], configs: int, seed: int) -> list[Profile]:
    """``configs`` configs whose costs are drawn uniformly from ``profiles``, reproducibly."""
    rng = random.Random(seed)
    return [rng.choice(list(profiles)) for _ in range(configs)]
