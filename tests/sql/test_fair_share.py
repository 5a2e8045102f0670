"""Fair share per user: a free segment goes first to the owner with the fewest units in flight."""

from __future__ import annotations

import dataclasses
import json
import threading
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from cerebro_db.scheduler import Scheduler
from tests.conftest import unique

Session = psycopg.Connection[Any]
USERS = ("fair_ann", "fair_ben")


@pytest.fixture(scope="module")
def owners(cluster: ClusterConfig, dsn: str, blobs_2seg: str) -> Iterator[dict[str, str]]:
    """Two cerebro_user logins, each with their own copy of the blobs dataset; their work is stopped afterwards."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
        logins = {
            name: dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn() for name in USERS
        }
        for login in logins.values():
            with psycopg.connect(login, autocommit=True) as user:
                user.execute(
                    "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}',"
                    " validation_fraction => 0.25)",
                    [unique("blobs"), f"public.{blobs_2seg}"],
                )
        yield logins
        admin.execute(
            "UPDATE workloads SET status = 'stopped' WHERE owner = ANY(%s) AND status = 'running'", [list(USERS)]
        )


def launch(login: str, configs: int) -> int:
    """A workload of ``configs`` small mlp configs (1 epoch) on the user's own dataset."""
    with psycopg.connect(login, autocommit=True) as user:
        row = user.execute(
            "SELECT run_model_selection((SELECT name FROM datasets LIMIT 1), 'mlp', %s, max_epochs => 1, seed => 5)",
            [json.dumps({"lr": [0.01 + 0.001 * i for i in range(configs)], "hidden_units": [8]})],
        ).fetchone()
    assert row is not None
    workload: int = row[0]
    return workload


def claim(session: Session, segment: int) -> int | None:
    row = session.execute("SELECT workload_id FROM claim_unit(%s)", [segment]).fetchone()
    return None if row is None else row[0]


def test_a_free_segment_goes_to_the_owner_with_fewer_units_in_flight(
    dsn: str, conn: Session, owners: dict[str, str]
) -> None:
    ann = [launch(owners["fair_ann"], 2) for _ in range(3)]
    (ben,) = [launch(owners["fair_ben"], 2)]
    try:
        # Ben's configs are further along, and ann's two idle workloads have no unit in flight
        # either: ordered by workload alone, ann's would go first.
        with conn.transaction():  # as if they had trained an epoch
            conn.execute("SET LOCAL cerebro.internal = on")
            conn.execute("UPDATE configs SET epochs_done = 1, max_epochs = 3 WHERE workload_id = %s", [ben])
        conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [ben])
        with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
            assert claim(a, 0) in ann  # ben has nothing to run yet
            conn.execute("UPDATE workloads SET status = 'running' WHERE workload_id = %s", [ben])
            assert claim(b, 1) == ben  # ann has a unit in flight, ben none
            b.rollback()
            a.rollback()
            # The claims ended with their transactions: with both owners idle, ann's less advanced
            # work goes first, and then the other segment is ben's again.
            assert claim(a, 0) in ann
            assert claim(b, 1) == ben
            a.rollback()
            b.rollback()
    finally:
        conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = ANY(%s)", [[*ann, ben]])


def test_a_user_starting_later_is_not_queued_behind_earlier_work(
    dsn: str, conn: Session, owners: dict[str, str]
) -> None:
    """Ann runs 3 workloads of 8 configs (48 units); ben starts 1 of 2 configs after ann's first unit, and trains
    long before ann's work is done. The exact claim rule is the test above; here the scheduler's threads race, so a
    segment may free while the other is between units (both owners idle: a tie), and only no-starvation is exact."""
    ann = [launch(owners["fair_ann"], 8) for _ in range(3)]
    started: list[int] = []
    once = threading.Lock()

    def ben_starts(unit: dict[str, Any]) -> None:
        with once:  # the segments' threads report units side by side
            if not started:
                started.append(launch(owners["fair_ben"], 2))

    try:
        Scheduler(dsn, on_unit=ben_starts, idle_wait=0.2).run(until_idle=True, max_units=10)
        (ben,) = started
        ben_units = conn.execute(
            "SELECT count(*) FROM units JOIN configs USING (config_id) WHERE workload_id = %s", [ben]
        ).fetchone()
        assert ben_units is not None and ben_units[0] >= 1, "ben waited behind 9 of ann's 47 remaining units"
    finally:
        conn.execute(
            "UPDATE workloads SET status = 'stopped' WHERE workload_id = ANY(%s) AND status = 'running'",
            [[*ann, *started]],
        )
