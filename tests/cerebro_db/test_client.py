"""The client API (cerebro_db.client) against the session cluster: reads and guarded actions."""

from __future__ import annotations

from typing import Any

import psycopg
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from cerebro_db import client, connection
from tests.conftest import TINY_CNN, launch, run_until_idle


def test_status_changes_name_the_status_seen(dsn: str, fashion_2seg: str) -> None:
    engine = connection.make_engine(dsn)
    with psycopg.connect(dsn, autocommit=True) as conn:
        # Two configs: stopping the last active one would finish the workload.
        workload = launch(conn, fashion_2seg, {"lr": [0.003, 0.01], **TINY_CNN}, epochs=1)
        row: Any = conn.execute("SELECT min(config_id) FROM configs WHERE workload_id = %s", [workload]).fetchone()
    config = row[0]
    try:
        with client.transaction(engine) as sa:
            assert client.set_config_status(sa, config, "stopped", "pending") == f"config {config}: stopped"
        with client.transaction(engine) as sa:  # the same click again
            assert client.set_config_status(sa, config, "stopped", "pending") == f"config {config} is already stopped"
        stale = rf"config {config} changed meanwhile \(now stopped\)"
        with pytest.raises(client.ActionError, match=stale), client.transaction(engine) as sa:
            client.set_config_status(sa, config, "running", "completed")
        refused = rf"config {config}: max_epochs must be at least 1"  # the database's message, no traceback
        with pytest.raises(client.ActionError, match=refused), client.transaction(engine) as sa:
            client.set_max_epochs(sa, config, 0, "stopped", 1)
        with client.transaction(engine) as sa:
            client.set_max_epochs(sa, config, 3, "stopped", 1)
        with client.transaction(engine) as sa:
            events = client.config_events(sa, config)
            assert client.config_events(sa, 999999) == []
        assert [(e["kind"], e["epochs_done"], e["detail"]) for e in events] == [
            ("created", 0, None),
            ("stopped", 0, None),
            ("max_epochs", 0, "max_epochs 1 -> 3"),
        ]
        assert [e["at"] for e in events] == sorted(e["at"] for e in events)
        with client.transaction(engine) as sa:
            assert client.set_workload_status(sa, workload, "stopped", "running") == f"workload {workload}: stopped"
    finally:  # never left pending for a later test's scheduler
        with client.transaction(engine) as sa:
            sa.execute(text("DELETE FROM workloads WHERE workload_id = :w"), {"w": workload})
        engine.dispose()


def test_the_cli_reports_read_the_hops_the_leaderboard_and_the_segments(dsn: str, fashion_2seg: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        workload = launch(conn, fashion_2seg, {"lr": [0.003], "batch_size": [32, 64], **TINY_CNN}, epochs=1)
    run_until_idle(dsn)
    with connection.sqlalchemy_connection(dsn) as sa:
        hops = client.units(sa, workload)
        assert len(hops) == 4  # 2 configs x 2 segments
        assert [hop["val_metric"] is not None for hop in hops].count(True) == 2  # each config's epoch end
        assert client.units(sa, workload, after_unit=hops[1]["unit_id"]) == hops[2:]
        assert client.workload_finished(sa, workload) and client.workload_finished(sa, 999999)
        assert client.units(sa, 999999) == []
        leaderboard = client.configs(sa, workload)
        # The search space's keys only: TINY_CNN's filters and dense_units are in it, dropout (a default) is not.
        assert {row["searched_params"]["batch_size"] for row in leaderboard} == {32, 64}
        assert all(set(row["searched_params"]) == {"lr", "batch_size", *TINY_CNN} for row in leaderboard)
        assert client.segments(sa) == [{"segment": 0, "location": "local"}, {"segment": 1, "location": "local"}]
        config = leaderboard[0]["config_id"]
        assert client.export_model(sa, config)[:2] == b"PK"  # a .keras file is a zip
        with pytest.raises(DBAPIError, match="999999"):
            client.export_model(sa, 999999)


def test_roster_rows_carry_decoded_defaults(dsn: str) -> None:
    with connection.sqlalchemy_connection(dsn) as sa:
        rows = [row for row in client.roster(sa) if row["model"] == "mlp" and row["param"] == "lr"]
    assert len(rows) == 1 and isinstance(rows[0]["default_value"], float)
