"""Sessions the suggestion tests share. A module that uses them defines ``tenants``: the ``dsn`` and ``other_dsn``
of two tenants."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import one

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
