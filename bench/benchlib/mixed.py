"""Several workloads (one per model) run together by one scheduler, in phases, on warm backends (bench/scaling.py).

One ``Scheduler.run`` first trains a 1-epoch warm-up of every phase's workloads on a small dataset (every backend
imports TensorFlow and builds each architecture), then each phase in turn: a phase's workloads are resumed
together as soon as the previous phase has completed, so every phase runs on the same warm backends.
"""

from __future__ import annotations

import argparse
import csv
import json
import threading
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg

from benchlib.baselines import Runnable
from benchlib.mop import check_completed, launch, unit_log
from cerebro_db.scheduler import Scheduler


@dataclass(frozen=True)
class Spec:
    """One workload of a phase: a roster model and its search space (JSON)."""

    model: str
    space: str


@dataclass
class ConfigInfo:
    workload_id: int
    model: str
    params: dict[str, Any]


@dataclass
class PhaseRun:
    """One phase as measured: its workloads' unit log and the time from resuming them to the last commit."""

    setup: str
    phase: str
    segments: int
    #: Segment servers (0: local segments of one server).
    servers: int
    epochs: int
    train_rows: int
    validation_rows: int
    #: Server clock when the phase's workloads were resumed.
    started: float
    #: From ``started`` to the commit of the phase's last unit.
    window_s: float
    units: list[dict[str, float]]
    configs: dict[int, ConfigInfo]
    #: Mean runnable tasks on the machine while the phase ran (its segments' backends and anything else).
    runnable: float
    #: The share of the machine's CPU time stolen by the hypervisor while the phase ran (None: not recorded).
    steal: float | None = None
    #: Which units compiled their functions (``benchlib.simulation.COLD_RULES``): the product's that ran the phase
    #: (runs recorded without it: ``seeded``, made before ``training.seed_keras``).
    cold_rule: str = "cached"
    #: Which of the setup's repeated measurements (1, 2, ...): the same phase run again, minutes apart.
    repeat: int = 1

    def units_of(self, model: str) -> list[dict[str, float]]:
        return [u for u in self.units if self.configs[int(u["config_id"])].model == model]

    @property
    def models(self) -> list[str]:
        return list(dict.fromkeys(info.model for info in self.configs.values()))


class _Phases:
    """Resumes each phase's workloads from ``on_unit`` once every workload of the phase before has completed."""

    def __init__(self, dsn: str, stages: list[list[int]]) -> None:
        self.conn = psycopg.connect(dsn, autocommit=True, application_name="bench phases")
        self.stages = stages
        self.current = 0
        self.lock = threading.Lock()
        #: Per stage after the first (the warm-up): when it was resumed (server clock).
        self.resumed_at: list[float] = []

    def on_unit(self, result: dict[str, Any]) -> None:
        with self.lock:
            if self.current + 1 >= len(self.stages):
                return
            row = self.conn.execute(
                "SELECT bool_and(status = 'completed') FROM workloads WHERE workload_id = ANY(%s)",
                [self.stages[self.current]],
            ).fetchone()
            if row is None or not row[0]:
                return
            self.current += 1
            resumed = self.conn.execute(
                "UPDATE workloads SET status = 'running' WHERE workload_id = ANY(%s)"
                " RETURNING extract(epoch FROM clock_timestamp())::float8",
                [self.stages[self.current]],
            ).fetchone()
            assert resumed is not None
            self.resumed_at.append(float(resumed[0]))

    def close(self) -> None:
        self.conn.close()


_CONFIGS_SQL = """
SELECT c.config_id, c.workload_id, w.model, c.params
FROM configs c JOIN workloads w USING (workload_id)
WHERE c.workload_id = ANY(%s)
"""


def _launch_all(
    conn: psycopg.Connection[Any], dataset: str, specs: Sequence[Spec], epochs: int, seed: int, name: str
) -> list[int]:
    return [
        launch(
            conn, dataset, argparse.Namespace(model=s.model, configs=s.space, seed=seed), epochs, f"{name} {s.model}"
        )[0]
        for s in specs
    ]


def run_phases(
    dsn: str,
    setup: str,
    segments: int,
    servers: int,
    dataset: str,
    warmup_dataset: str,
    phases: Mapping[str, tuple[Sequence[Spec], int]],
    seed: int,
    passfile: Path | None = None,
) -> list[PhaseRun]:
    """Run ``phases`` (name: (workloads, epochs)) one after the other in one scheduler run, after a 1-epoch
    warm-up of all their workloads on ``warmup_dataset``; each phase's :class:`PhaseRun`."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        warm_specs = list(dict.fromkeys(s for specs, _ in phases.values() for s in specs))
        warmup = _launch_all(conn, warmup_dataset, warm_specs, 1, seed, "bench warm-up")
        stages = [
            _launch_all(conn, dataset, specs, epochs, seed, f"bench {name}") for name, (specs, epochs) in phases.items()
        ]
        conn.execute("UPDATE workloads SET status = 'running' WHERE workload_id = ANY(%s)", [warmup])
        chain = _Phases(dsn, [warmup, *stages])
        try:
            with Runnable(interval=0.1) as load:
                Scheduler(dsn, on_unit=chain.on_unit, idle_wait=0.05, passfile=passfile).run(until_idle=True)
        finally:
            chain.close()
        for workload in warmup:
            check_completed(conn, workload, "a warm-up workload")
        if len(chain.resumed_at) != len(stages):
            raise RuntimeError(f"only {len(chain.resumed_at)} of {len(stages)} phases were resumed")
        rows = conn.execute("SELECT train_rows, validation_rows FROM datasets WHERE name = %s", [dataset]).fetchone()
        assert rows is not None
        runs = []
        for (name, (_, epochs)), workloads, started in zip(phases.items(), stages, chain.resumed_at, strict=True):
            for workload in workloads:
                check_completed(conn, workload, f"a workload of phase {name}")
            units = sorted((u for w in workloads for u in unit_log(conn, w)), key=lambda u: u["started"])
            configs = {
                int(c): ConfigInfo(int(w), str(m), p if isinstance(p, dict) else json.loads(p))
                for c, w, m, p in conn.execute(_CONFIGS_SQL, [workloads]).fetchall()
            }
            end = max(u["finished"] for u in units)
            runs.append(
                PhaseRun(
                    setup=setup,
                    phase=name,
                    segments=segments,
                    servers=servers,
                    epochs=epochs,
                    train_rows=int(rows[0]),
                    validation_rows=int(rows[1]),
                    started=started,
                    window_s=end - started,
                    units=units,
                    configs=configs,
                    runnable=load.mean_between(started, end),
                    steal=load.steal_between(started, end),
                )
            )
    return runs


_RUN_COLUMNS = (
    "setup",
    "phase",
    "segments",
    "servers",
    "epochs",
    "train_rows",
    "validation_rows",
    "started",
    "cold_rule",
    "repeat",
)
_RUN_FIGURES = ("window_s", "runnable", "steal")
_CONFIG_COLUMNS = ("workload_id", "model", "params")


def write_runs(runs_csv: Path, units_csv: Path, runs: Sequence[PhaseRun]) -> None:
    """Every phase (``runs_csv``) and its units with their configs' workload, model and parameters
    (``units_csv``): what :func:`read_runs` needs to compute the predictions again."""
    with open(runs_csv, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow([*_RUN_COLUMNS, *_RUN_FIGURES])
        writer.writerows([*(getattr(r, c) for c in _RUN_COLUMNS), *(getattr(r, c) for c in _RUN_FIGURES)] for r in runs)
    columns = list(runs[0].units[0])
    with open(units_csv, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["setup", "phase", "repeat", *columns, *_CONFIG_COLUMNS])
        for run in runs:
            for unit in run.units:
                info = run.configs[int(unit["config_id"])]
                writer.writerow(
                    [
                        run.setup,
                        run.phase,
                        run.repeat,
                        *(unit[c] for c in columns),
                        info.workload_id,
                        info.model,
                        json.dumps(info.params),
                    ]
                )


def read_runs(runs_csv: Path, units_csv: Path) -> list[PhaseRun]:
    """The phases :func:`write_runs` wrote (runs recorded before repeats were: each its setup's repeat 1)."""

    def run_of(row: dict[str, str]) -> tuple[str, str, str]:
        return row["setup"], row["phase"], row.get("repeat") or "1"

    with open(units_csv, newline="") as file:
        unit_rows = list(csv.DictReader(file))
    runs = []
    with open(runs_csv, newline="") as file:
        for row in csv.DictReader(file):
            own = [u for u in unit_rows if run_of(u) == run_of(row)]
            skip = {"setup", "phase", "repeat", *_CONFIG_COLUMNS}
            runs.append(
                PhaseRun(
                    setup=row["setup"],
                    phase=row["phase"],
                    segments=int(row["segments"]),
                    servers=int(row["servers"]),
                    epochs=int(row["epochs"]),
                    train_rows=int(row["train_rows"]),
                    validation_rows=int(row["validation_rows"]),
                    started=float(row["started"]),
                    window_s=float(row["window_s"]),
                    units=[{k: float(v) for k, v in u.items() if k not in skip} for u in own],
                    configs={
                        int(float(u["config_id"])): ConfigInfo(
                            int(u["workload_id"]), u["model"], json.loads(u["params"])
                        )
                        for u in own
                    },
                    runnable=float(row["runnable"]),
                    steal=float(row["steal"]) if row.get("steal") else None,
                    cold_rule=row.get("cold_rule") or "seeded",
                    repeat=int(run_of(row)[2]),
                )
            )
    return runs
