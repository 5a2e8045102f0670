"""Sessions the suggestion tests share (a module that uses them defines ``tenants``: the ``dsn`` and ``other_dsn``
of two tenants), and one-config training with a tiny bert that the text tests share."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import one, run_until_idle

Session = psycopg.Connection[Any]


@pytest.fixture
def user(tenants: dict[str, Any]) -> Iterator[Session]:
    with psycopg.connect(tenants["dsn"], autocommit=True) as session:
        session.execute("SET lock_timeout = '2s'")
        yield session


@pytest.fixture
def other(tenants: dict[str, Any]) -> Iterator[Session]:
    with psycopg.connect(tenants["other_dsn"], autocommit=True) as session:
        yield session


@pytest.fixture
def system(conn: Session) -> Iterator[Session]:
    """The schema owner playing record_hop; the workloads the test made are deleted afterwards (a scheduler that a
    real-training test starts must not train them)."""
    before = one(conn, "SELECT coalesce(max(workload_id), 0) FROM workloads")
    conn.execute("SELECT set_config('cerebro.internal', 'on', false)")
    yield conn
    conn.execute("SELECT set_config('cerebro.internal', 'off', false)")
    conn.execute("DELETE FROM workloads WHERE workload_id > %s", [before])


def train(conn: Session, dsn: str, dataset: str, model: str, params: dict[str, Any], epochs: int) -> int:
    """The completed config of a one-config workload of ``params`` (seed 3)."""
    workload = conn.execute(
        "SELECT run_model_selection(%s, %s, %s, max_epochs => %s, seed => 3)",
        [dataset, model, json.dumps({k: [v] for k, v in params.items()}), epochs],
    ).fetchone()
    assert workload is not None
    run_until_idle(dsn)
    row = conn.execute("SELECT config_id, status FROM configs WHERE workload_id = %s", [workload[0]]).fetchone()
    assert row is not None and row[1] == "completed"
    config_id: int = row[0]
    return config_id


TINY_BERT = {"num_layers": 1, "hidden_size": 16, "intermediate_size": 32, "vocabulary_size": 400, "batch_size": 32}


@pytest.fixture(scope="session")
def tiny_bert(dsn: str, reviews_2seg: str) -> int:
    """A bert config trained one epoch on the reviews: its tests only read it (predict, export), so they share
    one training (a transformer's first hop traces its graphs in two backends: the suite's costliest unit)."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        return train(conn, dsn, reviews_2seg, "bert", TINY_BERT, 1)
