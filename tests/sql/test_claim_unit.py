"""claim_unit in interleaved real sessions: the MOP invariants are enforced by SQL itself."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import psycopg
import pytest

from tests.conftest import TINY_CNN, launch

Session = psycopg.Connection[Any]


@pytest.fixture
def workloads(conn: Session, fashion_2seg: str) -> Iterator[Callable[[int], tuple[int, list[int]]]]:
    """Launches workloads of n configs that no scheduler runs; deletes them afterwards."""
    created: list[int] = []

    def make(configs: int) -> tuple[int, list[int]]:
        workload = launch(conn, fashion_2seg, {"lr": [0.001 * (i + 1) for i in range(configs)], **TINY_CNN}, epochs=2)
        created.append(workload)
        ids = [
            r[0] for r in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY 1", [workload])
        ]
        return workload, ids

    yield make
    conn.execute("DELETE FROM workloads WHERE workload_id = ANY(%s)", [created])


@pytest.fixture
def sessions(dsn: str) -> Iterator[tuple[Session, Session]]:
    with psycopg.connect(dsn) as a, psycopg.connect(dsn) as b:
        yield a, b


def claim(session: Session, segment: int) -> int | None:
    row = session.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone()
    return None if row is None else row[0]


def test_a_config_runs_on_one_segment_at_a_time(workloads: Any, sessions: tuple[Session, Session]) -> None:
    _, (config,) = workloads(1)
    a, b = sessions
    assert claim(a, 0) == config
    assert claim(b, 1) is None  # a's transaction holds the config
    a.rollback()  # a crash or cancel: the claim ends with the transaction
    assert claim(b, 1) == config
    b.rollback()


def test_a_segment_runs_one_unit_at_a_time(workloads: Any, sessions: tuple[Session, Session]) -> None:
    _, configs = workloads(2)
    a, b = sessions
    assert claim(a, 0) in configs
    assert claim(b, 0) is None
    assert claim(b, 1) in configs
    a.rollback()
    b.rollback()


def test_a_visited_segment_waits_for_the_next_epoch(
    conn: Session, workloads: Any, sessions: tuple[Session, Session]
) -> None:
    _, (config,) = workloads(1)
    conn.execute(
        "INSERT INTO model_states (config_id, state_file, state_bytes, visited_segments)"
        " VALUES (%s, format('c%%s-x0.state', %s), 1, '{0}')",
        [config, config],
    )
    a, _ = sessions
    assert claim(a, 0) is None
    assert claim(a, 1) == config
    a.rollback()


@pytest.mark.parametrize(
    "change",
    [
        "UPDATE configs SET status = 'stopped' WHERE config_id = %(config)s",
        "SELECT fail_config(%(config)s, 'boom')",
        # what run_unit does after the last epoch (as the system, not as a user)
        "SELECT set_config('cerebro.internal', 'on', false);"
        " UPDATE configs SET epochs_done = max_epochs, status = 'completed' WHERE config_id = %(config)s",
        "UPDATE workloads SET status = 'stopped' WHERE workload_id = %(workload)s",
    ],
)
def test_configs_that_may_not_run_are_never_claimed(
    conn: Session, workloads: Any, sessions: tuple[Session, Session], change: str
) -> None:
    workload, (config,) = workloads(1)
    for statement in change.split(";"):
        conn.execute(statement, {"config": config, "workload": workload})
    a, _ = sessions
    assert claim(a, 0) is None and claim(a, 1) is None
    a.rollback()


def test_the_workload_with_fewer_units_in_flight_goes_first(workloads: Any, sessions: tuple[Session, Session]) -> None:
    _, big = workloads(3)
    a, b = sessions
    first = claim(a, 0)
    assert first in big
    _, small = workloads(1)
    assert claim(b, 1) == small[0]  # the big workload already has a unit in flight
    a.rollback()
    b.rollback()


def test_run_unit_refuses_a_unit_it_was_not_given(workloads: Any, sessions: tuple[Session, Session]) -> None:
    _, (config,) = workloads(1)
    a, _ = sessions
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="not claimed by this transaction") as error:
        a.execute("SELECT run_unit(%s, 0)", [config])
    assert error.value.diag.message_hint is not None
    a.rollback()


def test_claim_on_an_unknown_segment_is_refused(sessions: tuple[Session, Session]) -> None:
    a, _ = sessions
    with pytest.raises(psycopg.errors.InvalidParameterValue, match="unknown segment 7"):
        claim(a, 7)
    a.rollback()


def test_active_units_shows_what_each_segment_runs(
    conn: Session, workloads: Any, sessions: tuple[Session, Session]
) -> None:
    _, (config,) = workloads(1)
    a, _ = sessions
    assert claim(a, 1) == config
    rows = conn.execute("SELECT config_id, segment FROM active_units").fetchall()
    assert rows == [(config, 1)]
    a.rollback()
    assert conn.execute("SELECT count(*) FROM active_units").fetchone() == (0,)
