"""suggestion_is_live: the one rule for whether an open suggestion still applies, which the view suggestions,
accepting one and the autonomy levels share. Asked as a cerebro_user: the view runs with its reader's rights."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest

from cerebro_db.cluster import ClusterConfig
from tests.conftest import add_tenant, one

Session = psycopg.Connection[Any]

#: A stop suggestion made for config 7 at 3 epochs done, running, max_epochs 8.
MADE = {
    "config_id": 7,
    "action": {},
    "config_epochs_done": 3,
    "config_status": "running",
    "config_max_epochs": 8,
}
#: Config 7 as it was then.
CONFIG = {"config_id": 7, "epochs_done": 3, "status": "running", "max_epochs": 8}


@pytest.fixture(scope="module")
def user(cluster: ClusterConfig, dsn: str) -> Iterator[Session]:
    with psycopg.connect(add_tenant(cluster, dsn, "liveness_user"), autocommit=True) as session:
        yield session


def is_live(user: Session, made: dict[str, Any], config: dict[str, Any] | None) -> bool:
    return bool(
        one(
            user,
            "SELECT suggestion_is_live(jsonb_populate_record(NULL::suggestion_log, %s),"
            " jsonb_populate_record(NULL::configs, %s))",
            json.dumps(made),
            None if config is None else json.dumps(config),
        )
    )


def test_a_suggestion_is_live_while_its_config_is_as_it_was(user: Session) -> None:
    assert is_live(user, MADE, CONFIG)


@pytest.mark.parametrize(("field", "now"), [("epochs_done", 4), ("status", "pending"), ("max_epochs", 12)])
def test_a_suggestion_is_stale_once_any_of_the_three_fields_changes(user: Session, field: str, now: Any) -> None:
    assert not is_live(user, MADE, {**CONFIG, field: now})


def test_a_config_that_is_gone_leaves_its_suggestion_stale(user: Session) -> None:
    assert not is_live(user, MADE, None)


def test_a_warning_and_a_workloads_suggestion_stay_live(user: Session) -> None:
    moved = {**CONFIG, "epochs_done": 5, "status": "stopped"}
    assert is_live(user, {**MADE, "action": None}, moved)  # nothing to carry out: live until dismissed
    assert is_live(user, {**MADE, "config_id": None, "config_epochs_done": None}, None)  # not tied to a config


def test_a_user_reads_the_view_that_asks_it(user: Session) -> None:
    assert one(user, "SELECT count(*) FROM suggestions") == 0  # a new tenant has none, and is not refused
