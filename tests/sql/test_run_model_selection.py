"""run_model_selection: workloads and configs recorded at once; bad input refused with nothing written."""

from __future__ import annotations

import json
from typing import Any

import psycopg
import pytest

Session = psycopg.Connection[Any]


def count(conn: Session, table: str) -> int:
    row = conn.execute(f"SELECT count(*) FROM {table}").fetchone()
    assert row is not None
    return int(row[0])


def test_grid_records_complete_params_and_distinct_seeds(conn: Session, fashion_2seg: str) -> None:
    notices: list[str] = []
    conn.add_notice_handler(lambda notice: notices.append(notice.message_primary or ""))
    space = {"lr": [0.001, 0.01], "batch_size": {"choices": [32, 64]}, "optimizer": "sgd"}
    row = conn.execute(
        "SELECT run_model_selection(%s, 'cnn', %s, max_epochs => 4, name => 'grid test', seed => 5)",
        [fashion_2seg, json.dumps(space)],
    ).fetchone()
    assert row is not None
    workload = row[0]
    configs = conn.execute(
        "SELECT params, status, max_epochs, seed FROM configs WHERE workload_id = %s ORDER BY config_id", [workload]
    ).fetchall()
    assert sorted((p["lr"], p["batch_size"]) for p, *_ in configs) == [(0.001, 32), (0.001, 64), (0.01, 32), (0.01, 64)]
    assert all(p["optimizer"] == "sgd" and p["filters"] == 32 for p, *_ in configs)  # defaults filled in
    assert {(status, epochs) for _, status, epochs, _ in configs} == {("pending", 4)}
    assert sorted(seed for *_, seed in configs) == [6, 7, 8, 9]
    assert any("no scheduler is running" in n for n in notices)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_random_samples_num_configs_within_the_ranges(conn: Session, fashion_2seg: str) -> None:
    space = {"lr": {"min": 1e-4, "max": 1e-1, "log": True}, "dense_units": {"min": 8, "max": 64}}
    row = conn.execute(
        "SELECT run_model_selection(%s, 'cnn', %s, procedure => 'random', num_configs => 5)",
        [fashion_2seg, json.dumps(space)],
    ).fetchone()
    assert row is not None
    params = [r[0] for r in conn.execute("SELECT params FROM configs WHERE workload_id = %s", [row[0]])]
    assert len(params) == 5
    assert all(1e-4 <= p["lr"] <= 1e-1 and 8 <= p["dense_units"] <= 64 for p in params)
    assert all(isinstance(p["dense_units"], int) for p in params)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [row[0]])


def test_plain_insert_of_a_config_inherits_max_epochs(conn: Session, fashion_2seg: str) -> None:
    row = conn.execute(
        "SELECT run_model_selection(%s, 'cnn', '{\"lr\": [0.001]}', max_epochs => 3)", [fashion_2seg]
    ).fetchone()
    assert row is not None
    inserted = conn.execute(
        "INSERT INTO configs (workload_id, params) VALUES (%s, '{\"lr\": 0.01}') RETURNING max_epochs, status",
        [row[0]],
    ).fetchone()
    assert inserted == (3, "pending")
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [row[0]])


@pytest.mark.parametrize(
    ("arguments", "error", "errcode"),
    [
        ("'no_such', 'cnn', '{{\"lr\": [0.1]}}'", "unknown dataset 'no_such'", "42704"),
        ("{ds}, 'vgg', '{{\"lr\": [0.1]}}'", "unknown model 'vgg'", "22023"),
        ("{ds}, 'cnn', '{{\"lr\": [0.1]}}', procedure => 'bayes'", "unknown procedure 'bayes'", "22023"),
        ("{ds}, 'cnn', '{{\"lr\": [0.1]}}', max_epochs => 0", "max_epochs must be at least 1, got 0", "22023"),
        ("{ds}, 'cnn', '{{\"learning_rate\": [0.1]}}'", "unknown hyper-parameter 'learning_rate'", "22023"),
        ("{ds}, 'cnn', '{{\"lr\": []}}'", "search_space['lr'] needs a non-empty list", "22023"),
        (
            "{ds}, 'cnn', '{{\"lr\": {{\"min\": 0.1, \"max\": 0.01}}}}', procedure => 'random', num_configs => 2",
            "min 0.1 > max 0.01",
            "22023",
        ),
        ('{ds}, \'cnn\', \'{{"lr": {{"min": 0.001, "max": 0.1}}}}\'', "grid needs choices", "22023"),
        ("{ds}, 'cnn', '{{\"batch_size\": [\"big\"]}}'", "batch_size must be a number, got 'big'", "22023"),
        ("{ds}, 'cnn', '{{\"lr\": [0.1]}}', procedure => 'random'", "needs num_configs >= 1", "22023"),
        ("{ds}, 'mlp', '{{\"lr\": [0.1]}}', parent_workload => 999999", "unknown parent_workload 999999", "42704"),
    ],
)
def test_bad_input_is_refused_clearly_and_writes_nothing(
    conn: Session, fashion_2seg: str, arguments: str, error: str, errcode: str
) -> None:
    before = count(conn, "workloads"), count(conn, "configs")
    call = "SELECT run_model_selection(" + arguments.format(ds=f"'{fashion_2seg}'") + ")"
    with pytest.raises(psycopg.Error) as raised:
        conn.execute(call)
    assert raised.value.sqlstate == errcode
    assert error in (raised.value.diag.message_primary or ""), raised.value.diag.message_primary
    assert (count(conn, "workloads"), count(conn, "configs")) == before


def test_a_dataset_spread_over_more_segments_than_registered_is_refused(dsn: str, fashion_2seg: str) -> None:
    """After the segments changed, no epoch of it could finish: say so instead of waiting forever."""
    with psycopg.connect(dsn) as conn:  # one transaction, rolled back: the session's segments stay
        conn.execute("DELETE FROM cerebro.segments WHERE segment = 1")
        with pytest.raises(psycopg.errors.InvalidParameterValue) as raised:
            conn.execute("SELECT run_model_selection(%s, 'cnn', '{\"lr\": [0.1]}')", [fashion_2seg])
        assert (
            raised.value.diag.message_primary
            == f"dataset {fashion_2seg} is spread over 2 segments, but 1 are registered"
        )
        conn.rollback()
