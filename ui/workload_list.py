"""The Workloads page's table and filters, apart from Streamlit (tested on their own)."""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any

import pandas as pd

#: The columns the Workloads page filters by, with their labels.
FILTERS = {"status": "Status", "owner": "Owner", "dataset": "Dataset"}


def filter_options(rows: Sequence[dict[str, Any]], column: str, chosen: Collection[str] = ()) -> list[str]:
    """The values ``column`` takes in ``rows``, sorted; what is ``chosen`` stays offered after its rows are gone."""
    return sorted({row[column] for row in rows} | set(chosen))


def filtered(rows: Sequence[dict[str, Any]], chosen: Mapping[str, Collection[str]]) -> list[dict[str, Any]]:
    """The rows whose value of each filtered column is one of those chosen for it (none chosen: any value)."""
    return [row for row in rows if all(not values or row[column] in values for column, values in chosen.items())]


def table(rows: Sequence[dict[str, Any]]) -> pd.DataFrame:
    """One line per workload (:func:`cerebro_db.client.workloads` rows), in their order, typed for sorting; what
    tells workloads apart first (a narrow page scrolls to the rest); progress and accuracy in percent."""
    return pd.DataFrame(
        {
            "workload": pd.Series([row["workload_id"] for row in rows], dtype="int64"),
            "name": [row["name"] or "unnamed" for row in rows],
            "status": [row["status"] for row in rows],
            "progress": pd.Series(
                [min(100 * row["epochs_done"] / max(row["epochs_planned"], 1), 100.0) for row in rows], dtype="float64"
            ),
            "epochs": [f"{row['epochs_done']} / {row['epochs_planned']}" for row in rows],
            "best_val_accuracy": 100 * pd.Series([row["best_val_metric"] for row in rows], dtype="float64"),
            # an estimate only means something while the workload trains
            "time_left": pd.Series(
                [row["eta"] if row["status"] == "running" else None for row in rows], dtype="timedelta64[ns]"
            ),
            "configs": [f"{row['configs_active']} / {row['configs']}" for row in rows],
            "owner": [row["owner"] for row in rows],
            "dataset": [row["dataset"] for row in rows],
            "model": [row["model"] for row in rows],
            "procedure": [row["procedure"] for row in rows],
            "created": pd.to_datetime(pd.Series([row["created_at"] for row in rows], dtype=object), utc=True),
            "parent": pd.Series([row["parent_workload_id"] for row in rows], dtype="Int64"),
        }
    )
