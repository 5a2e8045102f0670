"""bench/simulate_scale.py's tables and CSV files: the validation against real runs and the scale sweep."""

from __future__ import annotations

import csv
from collections.abc import Sequence
from pathlib import Path

from benchlib.fit import TARGET_ERROR, Prediction, Validation
from benchlib.mop import MopRun
from benchlib.simulation import SCHEDULES, Result
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


def scale_table(results: Sequence[Result], dataset_bytes: int) -> str:
    cells = {(r.schedule, r.segments, r.configs): r for r in results}
    keys = sorted({(r.configs, r.segments) for r in results})
    rows = []
    for configs, segments in keys:
        mop, bsp, task = (cells[(s, segments, configs)] for s in SCHEDULES)
        rows.append(
            [
                configs,
                segments,
                *(f"{r.makespan_s / 3600:.2f}" for r in (mop, bsp, task)),
                *(f"{100 * r.utilization:.1f}%" for r in (mop, bsp, task)),
                f"{bsp.makespan_s / mop.makespan_s:.2f}",
                f"{task.makespan_s / mop.makespan_s:.2f}",
                f"{mop.storage_bytes(dataset_bytes) / 2**30:.2f}",
                f"{task.data_copies} / {task.storage_bytes(dataset_bytes) / 2**30:.1f}",
            ]
        )
    headers = [
        "configs",
        "segments",
        "MOP h",
        "BSP h",
        "task h",
        "MOP util",
        "BSP util",
        "task util",
        "MOP speed-up vs BSP",
        "vs task",
        "MOP/BSP GiB",
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
                    r.data_copies,
                    r.storage_bytes(dataset_bytes),
                    "",
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
