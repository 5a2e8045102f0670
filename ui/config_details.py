"""The config page's tables, shaped from client rows: its params, its units and where their time went."""

from __future__ import annotations

from typing import Any

import common
import pandas as pd

#: A unit's phases (``units`` columns) in the order a unit runs them, with the names the page shows.
PHASES = {
    "data_load_s": "data load",
    "state_load_s": "state load",
    "train_s": "train",
    "state_save_s": "state save",
    "validation_s": "validation",
}


def params_table(params: dict[str, Any]) -> pd.DataFrame:
    """Every param (searched or default) with its value as the dashboard writes numbers."""
    return pd.DataFrame({"param": list(params), "value": [common.number(value) for value in params.values()]})


def events_table(events: list[dict[str, Any]]) -> pd.DataFrame:
    """The config's history; an event without a reason shows none (not "None")."""
    return pd.DataFrame(events, columns=["at", "kind", "epochs_done", "actor", "detail"]).fillna({"detail": ""})


def units_table(units: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per committed unit: where and when it ran and the seconds of each phase."""
    columns = ["epoch", "segment", "rows", *PHASES, "train_loss", "started_at", "finished_at", "backend_pid"]
    return pd.DataFrame(units, columns=columns)


def phase_totals(units: list[dict[str, Any]]) -> pd.DataFrame:
    """Seconds per phase over all the units and each phase's share of them (validation runs only at epoch ends)."""
    seconds = [sum(unit[column] or 0.0 for unit in units) for column in PHASES]
    total = sum(seconds)
    return pd.DataFrame(
        {
            "phase": list(PHASES.values()),
            "seconds": seconds,
            "share": [part / total if total else 0.0 for part in seconds],
        }
    )
