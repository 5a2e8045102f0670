"""bench/simulate_scale.py's tables and CSV files: the validation against real runs and the scale sweep."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from benchlib.fit import TARGET_ERROR, TASK_TARGET, Prediction, Validation, meets_target
from benchlib.mop import MopRun
from benchlib.simulation import RULES, Result
from cerebro_db.text_table import format_table


def validation_table(validations: Sequence[Validation]) -> str:
    rows = [
        [
            v.segments,
            f"{v.configs} x {v.epochs}",
            v.units,
            f"{1000 * v.overheads.gap_s:.1f}",
            f"{1000 * v.overheads.start_s:.0f}",
            f"{v.measured_s:.2f}",
            f"{v.predicted_s:.2f} ± {v.predicted_sd:.2f}",
            f"{100 * v.error:+.1f}%",
            "PASS" if abs(v.error) <= TARGET_ERROR else "MISS",
            f"{v.resampled_s:.2f} ± {v.resampled_sd:.2f}",
            f"{100 * v.resampled_error:+.1f}%",
            f"{100 * v.measured_utilization:.1f}%",
            f"{100 * v.predicted_utilization:.1f}%",
        ]
        for v in validations
    ]
    headers = [
        "segments",
        "configs x epochs",
        "units",
        "gap ms",
        "start ms",
        "measured s",
        "predicted s",
        "error",
        f"<= {100 * TARGET_ERROR:.0f}%",
        "resampled s",
        "error",
        "measured util",
        "predicted util",
    ]
    return format_table(headers, rows)


def prediction_table(predictions: Sequence[Prediction]) -> str:
    rows = [
        [
            p.fitted_segments,
            p.segments,
            f"{p.configs} x {p.epochs}",
            f"{p.measured_s:.2f}",
            f"{p.predicted_s:.2f} ± {p.predicted_sd:.2f}",
            f"{100 * p.error:+.1f}%",
            "PASS" if p.passed else "MISS",
        ]
        for p in predictions
    ]
    headers = [
        "fitted on segments",
        "predicted segments",
        "configs x epochs",
        "measured s",
        "predicted s",
        "error",
        f"<= {100 * TARGET_ERROR:.0f}%",
    ]
    return format_table(headers, rows)


@dataclass
class Cell:
    """One (configs, segments) cell of the scale sweep."""

    bsp: Result
    task: Result
    #: MOP on one copy of the data, per claim rule.
    one_copy: dict[str, Result]
    #: MOP with the fair rule at the smallest replication that met the target, else the largest tried.
    chosen: Result

    @property
    def met(self) -> bool:
        return meets_target(self.chosen, self.bsp, self.task)


def scale_cells(results: Sequence[Result]) -> dict[tuple[int, int], Cell]:
    """The sweep's results by (configs, segments)."""
    grouped: dict[tuple[int, int], list[Result]] = {}
    for r in results:
        grouped.setdefault((r.configs, r.segments), []).append(r)
    cells = {}
    for key, own in sorted(grouped.items()):
        mops = [r for r in own if r.schedule == "mop"]
        cells[key] = Cell(
            bsp=next(r for r in own if r.schedule == "bsp"),
            task=next(r for r in own if r.schedule == "task"),
            one_copy={r.rule: r for r in mops if r.replication == 1},
            chosen=max((r for r in mops if r.rule == "fair"), key=lambda r: r.replication),
        )
    return cells


def scale_table(results: Sequence[Result], dataset_bytes: int) -> str:
    rows = []
    for (configs, segments), cell in scale_cells(results).items():
        mop, bsp, task = cell.chosen, cell.bsp, cell.task
        rows.append(
            [
                configs,
                segments,
                *(f"{cell.one_copy[rule].makespan_s / 3600:.2f}" for rule in RULES),
                f"{task.makespan_s / cell.one_copy['fair'].makespan_s:.2f}",
                mop.replication,
                f"{mop.data_copies:.2f} / {mop.storage_bytes(dataset_bytes) / 2**30:.2f}",
                *(f"{r.makespan_s / 3600:.2f}" for r in (mop, bsp, task)),
                *(f"{100 * r.utilization:.1f}%" for r in (mop, bsp, task)),
                f"{bsp.makespan_s / mop.makespan_s:.2f}",
                f"{task.makespan_s / mop.makespan_s:.2f}",
                "PASS" if cell.met else "MISS",
                f"{task.data_copies:.0f} / {task.storage_bytes(dataset_bytes) / 2**30:.1f}",
            ]
        )
    headers = [
        "configs",
        "segments",
        *(f"MOP h r=1 {rule}" for rule in RULES),
        "fair vs task",
        "r",
        "MOP copies / GiB",
        "MOP h",
        "BSP h",
        "task h",
        "MOP util",
        "BSP util",
        "task util",
        "MOP speed-up vs BSP",
        "vs task",
        f">= {TASK_TARGET}x task",
        "task copies / GiB",
    ]
    return format_table(headers, rows)


def write_csv(
    path: Path,
    results: Sequence[Result],
    validations: Sequence[Validation],
    predictions: Sequence[Prediction],
    dataset_bytes: int,
) -> None:
    """One row per validation (kind ``validation``: fitted on that run; ``prediction``: fitted on another run,
    ``fitted_segments``) and per scale cell."""
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(
            [
                "kind",
                "schedule",
                "segments",
                "configs",
                "epochs",
                "makespan_s",
                "measured_s",
                "error",
                "resampled_s",
                "utilization",
                "data_copies",
                "storage_bytes",
                "fitted_segments",
                "rule",
                "replication",
            ]
        )
        for v in validations:
            writer.writerow(
                [
                    "validation",
                    "mop",
                    v.segments,
                    v.configs,
                    v.epochs,
                    f"{v.predicted_s:.3f}",
                    f"{v.measured_s:.3f}",
                    f"{v.error:.4f}",
                    f"{v.resampled_s:.3f}",
                    f"{v.predicted_utilization:.4f}",
                    1,
                    "",
                    v.segments,
                    "fair",
                    1,
                ]
            )
        for p in predictions:
            writer.writerow(
                [
                    "prediction",
                    "mop",
                    p.segments,
                    p.configs,
                    p.epochs,
                    f"{p.predicted_s:.3f}",
                    f"{p.measured_s:.3f}",
                    f"{p.error:.4f}",
                    "",
                    "",
                    1,
                    "",
                    p.fitted_segments,
                    "fair",
                    1,
                ]
            )
        for r in results:
            writer.writerow(
                [
                    "scale",
                    r.schedule,
                    r.segments,
                    r.configs,
                    r.epochs,
                    f"{r.makespan_s:.3f}",
                    "",
                    "",
                    "",
                    f"{r.utilization:.4f}",
                    f"{r.data_copies:g}",
                    r.storage_bytes(dataset_bytes),
                    "",
                    r.rule,
                    r.replication,
                ]
            )


def write_unit_log(path: Path, runs: Sequence[MopRun]) -> None:
    """The validation runs' units, to check the simulator's inputs later."""
    path.parent.mkdir(exist_ok=True)
    columns = list(runs[0].units[0])
    with open(path, "w", newline="") as file:
        writer = csv.writer(file)
        writer.writerow(["segments", *columns])
        writer.writerows([run.segments, *(unit[c] for c in columns)] for run in runs for unit in run.units)
