"""The leakage check (issue 19): exact copies of training rows in the validation split, counted once per dataset
(dataset_leakage), and the leakage warning a workload on such a dataset gets at its first epoch end."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db import sample_data
from cerebro_db.cluster import ClusterConfig
from cerebro_plpy import packing
from tests.conftest import FASHION_ROWS, add_tenant, one, run_until_idle, unique

Session = psycopg.Connection[Any]
ROWS, FRACTION, SEED = 200, 0.25, 0
#: Validation rows planted as copies of training rows, and training rows planted as copies of other training rows.
ACROSS, WITHIN = 7, 4


def table(conn: Session, planted: bool) -> str:
    """A tabular table (4 features, 3 classes) of distinct random rows; ``planted``: with ACROSS rows that
    prepare_dataset (FRACTION, SEED) puts in the validation split copying training rows, and WITHIN training rows
    copying other training rows. Rows are read in the order they were copied in (prepare_dataset's, here)."""
    x, y = sample_data.synthetic_tabular(ROWS, 4, 3, seed=11)
    if planted:
        train, validation = packing.shuffle_split(ROWS, FRACTION, SEED)
        x[validation[:ACROSS]], y[validation[:ACROSS]] = x[train[:ACROSS]], y[train[:ACROSS]]
        sources = train[ACROSS : ACROSS + WITHIN]
        x[train[-WITHIN:]], y[train[-WITHIN:]] = x[sources], y[sources]
    name = unique("leaky" if planted else "clean")
    sample_data.load_tabular_table(conn, name, x, y)
    conn.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(name)))
    return name


def prepare(user: Session, source: str) -> tuple[str, list[str]]:
    """A dataset of ``source`` on 2 segments, and the notices prepare_dataset raised."""
    notices: list[str] = []
    user.add_notice_handler(lambda diagnostic: notices.append(diagnostic.message_primary or ""))
    name = unique(source)
    user.execute(
        "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3}', validation_fraction => %s, seed => %s)",
        [name, f"public.{source}", FRACTION, SEED],
    )
    return name, notices


@pytest.fixture(scope="module")
def tenants(cluster: ClusterConfig, dsn: str) -> Iterator[dict[str, Any]]:
    """Two cerebro_user logins; the first prepares a leaky and a clean dataset, the other a clean one."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        leaky, clean = table(admin, planted=True), table(admin, planted=False)
    found: dict[str, Any] = {
        "dsn": add_tenant(cluster, dsn, "leak_user"),
        "other_dsn": add_tenant(cluster, dsn, "leak_other"),
    }
    with psycopg.connect(found["dsn"], autocommit=True) as user:
        found["leaky"], found["notices"] = prepare(user, leaky)
        found["clean"], found["clean_notices"] = prepare(user, clean)
    with psycopg.connect(found["other_dsn"], autocommit=True) as other:
        found["other_clean"], _ = prepare(other, clean)
    yield found


def leakage(session: Session, dataset: str) -> dict[str, Any]:
    cursor = session.execute("SELECT * FROM dataset_leakage(%s)", [dataset])
    row = cursor.fetchone()
    assert row is not None
    return dict(zip([c.name for c in cursor.description or []], row, strict=True))


def test_planted_copies_are_counted_once_when_the_dataset_is_prepared(
    user: Session, tenants: dict[str, Any], system: Session
) -> None:
    leak = leakage(user, tenants["leaky"])
    validation_rows = round(ROWS * FRACTION)
    assert {k: v for k, v in leak.items() if k != "counted_at"} == {
        "dataset": tenants["leaky"],
        "train_rows": ROWS - validation_rows,
        "validation_rows": validation_rows,
        "validation_duplicates": ACROSS,
        "validation_duplicate_fraction": ACROSS / validation_rows,
        "train_duplicates": WITHIN,
    }
    assert tenants["notices"] == [
        f"{tenants['leaky']}: 7 of 50 validation rows (14.0 %) are exact copies of training rows"
    ]
    assert leakage(user, tenants["leaky"])["counted_at"] == leak["counted_at"]  # stored, not counted again
    clean = leakage(user, tenants["clean"])
    assert (clean["validation_duplicates"], clean["train_duplicates"]) == (0, 0) and tenants["clean_notices"] == []
    # The reason's numbers as people read them.
    assert one(user, "SELECT duplicate_rows_reason(412, 6000)") == (
        "412 of 6,000 validation rows (6.9 %) are exact copies of training rows"
    )
    assert one(user, "SELECT duplicate_rows_reason(1, 60000)").startswith("1 of 60,000 validation rows (< 0.1 %)")


def test_fashion_mnist_has_the_copies_an_independent_count_finds(conn: Session, fashion_2seg: str) -> None:
    images, labels = sample_data.read_fashion_mnist("train", FASHION_ROWS)
    rows = [image.tobytes() + bytes([label]) for image, label in zip(images, labels, strict=True)]
    train, validation = packing.shuffle_split(len(rows), 0.2, 0)  # the fixture's split
    seen = {rows[i] for i in train}
    expected = (sum(rows[i] in seen for i in validation), len(train) - len(seen))
    found = leakage(conn, fashion_2seg)
    assert (found["validation_duplicates"], found["train_duplicates"]) == expected == (0, 0)


def test_another_tenant_cannot_read_or_write_the_counts(
    user: Session, other: Session, tenants: dict[str, Any], conn: Session
) -> None:
    dataset_id = one(user, "SELECT dataset_id FROM datasets WHERE name = %s", tenants["leaky"])
    with pytest.raises(psycopg.errors.UndefinedObject, match=f"unknown dataset {tenants['leaky']}") as refused:
        other.execute("SELECT * FROM dataset_leakage(%s)", [tenants["leaky"]])
    assert "SELECT name FROM datasets" in (refused.value.diag.message_hint or "")
    assert one(other, "SELECT count(*) FROM dataset_duplicates WHERE dataset_id = %s", dataset_id) == 0
    assert one(other, "SELECT count(*) FROM dataset_duplicates") == 1  # its own dataset's
    assert one(user, "SELECT count(*) FROM dataset_duplicates WHERE dataset_id = %s", dataset_id) == 1
    # Nobody but dataset_leakage writes them: not the owner (who could hide the copies), not the other tenant.
    for session in (user, other):
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            session.execute(
                "UPDATE dataset_duplicates SET validation_duplicates = 0 WHERE dataset_id = %s", [dataset_id]
            )
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            session.execute("SELECT _count_duplicate_rows(%s)", [dataset_id])
    assert one(conn, "SELECT validation_duplicates FROM dataset_duplicates WHERE dataset_id = %s", dataset_id) == ACROSS


def workload(user: Session, dataset: str, configs: int, epochs: int = 4) -> list[int]:
    space = {"lr": [0.001 * (k + 1) for k in range(configs)], "batch_size": [16], "hidden_units": [8]}
    workload_id = one(
        user, "SELECT run_model_selection(%s, 'mlp', %s, max_epochs => %s)", dataset, json.dumps(space), epochs
    )
    return [
        r[0]
        for r in user.execute("SELECT config_id FROM configs WHERE workload_id = %s ORDER BY config_id", [workload_id])
    ]


def first_epoch(system: Session, config: int, train_metric: float, val_metric: float) -> None:
    """Epoch 1 of ``config`` as record_hop writes it, then the epoch-end hook's suggestions."""
    system.execute(
        "INSERT INTO epoch_metrics (config_id, epoch, train_loss, train_metric, val_loss, val_metric, seconds)"
        " VALUES (%s, 1, 1.0, %s, 1.0, %s, 1)",
        [config, train_metric, val_metric],
    )
    system.execute("SELECT config_hop_committed(%s, 1)", [config])
    system.execute("SELECT suggest_observe(%s, 1)", [config])


def leakage_suggestions(user: Session, config: int) -> list[tuple[int | None, str, dict[str, Any]]]:
    rows = user.execute(
        "SELECT config_id, reason, evidence FROM suggestions WHERE kind = 'leakage' AND workload_id ="
        " (SELECT workload_id FROM configs WHERE config_id = %s) ORDER BY suggestion_id",
        [config],
    )
    return [(config_id, reason, evidence) for config_id, reason, evidence in rows]


COPIES = {
    "validation_duplicates": ACROSS,
    "validation_rows": 50,
    "validation_duplicate_fraction": 0.14,
    "train_duplicates": WITHIN,
}


def test_a_workload_on_the_leaky_dataset_is_warned_at_its_first_epoch_end_and_a_clean_one_is_not(
    user: Session, tenants: dict[str, Any], system: Session
) -> None:
    healthy, perfect = workload(user, tenants["leaky"], 2)
    first_epoch(system, healthy, 0.5, 0.48)
    warning = f"{ACROSS} of 50 validation rows (14.0 %) are exact copies of training rows"
    assert leakage_suggestions(user, healthy) == [(None, warning, COPIES)]  # before any curve could show it
    # The curve's own signal, on the same dataset, carries the copies in its evidence.
    first_epoch(system, perfect, 0.8, 0.9995)
    (_, (config, _, evidence)) = leakage_suggestions(user, perfect)
    assert config == perfect and evidence["best_val_metric"] == 0.9995 and COPIES.items() <= evidence.items()
    # Once for the workload: its other configs' first epochs add none, and a dismissal sticks.
    (suggestion_id,) = one(
        user,
        "SELECT array_agg(suggestion_id) FROM suggestions WHERE kind = 'leakage'"
        " AND config_id IS NULL AND workload_id = (SELECT workload_id FROM configs"
        " WHERE config_id = %s)",
        healthy,
    )
    user.execute("SELECT dismiss_suggestion(%s)", [suggestion_id])
    system.execute("SELECT suggest_observe(%s, 1)", [healthy])
    assert [s[0] for s in leakage_suggestions(user, healthy)] == [perfect]

    (clean,) = workload(user, tenants["clean"], 1)
    first_epoch(system, clean, 0.5, 0.48)
    assert leakage_suggestions(user, clean) == []


def test_a_dataset_counted_before_this_version_is_counted_at_the_first_epoch_end_of_real_training(
    user: Session, tenants: dict[str, Any], dsn: str, conn: Session
) -> None:
    dataset_id = one(user, "SELECT dataset_id FROM datasets WHERE name = %s", tenants["leaky"])
    conn.execute("DELETE FROM dataset_duplicates WHERE dataset_id = %s", [dataset_id])  # as before v0.4.11
    (config,) = workload(user, tenants["leaky"], 1, epochs=1)
    run_until_idle(dsn)
    assert one(user, "SELECT status FROM configs WHERE config_id = %s", config) == "completed"
    assert (
        one(
            user,
            "SELECT evidence FROM suggestion_log WHERE kind = 'leakage' AND config_id IS NULL AND workload_id ="
            " (SELECT workload_id FROM configs WHERE config_id = %s)",
            config,
        )
        == COPIES
    )
    assert one(user, "SELECT validation_duplicates FROM dataset_duplicates WHERE dataset_id = %s", dataset_id) == ACROSS
