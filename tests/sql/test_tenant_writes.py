"""Tenants write datasets, buffers and workloads only through the checking SECURITY DEFINER writers."""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import numpy as np
import psycopg
import pytest
from psycopg import errors, sql
from psycopg.types.json import Jsonb

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from tests.conftest import one, unique

Session = psycopg.Connection[Any]
MALLORY, VICTIM = "wr_mallory", "wr_victor"
BLOBS_FEATURES = "{f0,f1,f2,f3,f4,f5}"


def floats(*values: float) -> bytes:
    return np.asarray(values, dtype="<f4").tobytes()


@pytest.fixture(scope="module")
def logins(cluster: ClusterConfig, dsn: str, blobs_2seg: str) -> dict[str, str]:
    """Mallory (the attacker) and Victor, each with a dataset of their own from the blobs table."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
    logins = {
        name: dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
        for name in (MALLORY, VICTIM)
    }
    for name, login in logins.items():
        with psycopg.connect(login, autocommit=True) as session:
            session.execute(
                "SELECT * FROM prepare_dataset(%s, %s, 'label', %s, validation_fraction => 0.25)",
                [f"{name}_blobs", f"public.{blobs_2seg}", BLOBS_FEATURES],
            )
    return logins


@pytest.fixture
def mallory(logins: dict[str, str]) -> Iterator[Session]:
    with psycopg.connect(logins[MALLORY], autocommit=True) as session:
        yield session


@pytest.fixture
def victors(logins: dict[str, str]) -> dict[str, int]:
    """Victor's dataset id and a workload of his (mallory may not name them)."""
    with psycopg.connect(logins[VICTIM], autocommit=True) as victor:
        dataset = one(victor, "SELECT dataset_id FROM datasets WHERE name = %s", f"{VICTIM}_blobs")
        workload = one(
            victor, "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 1)", f"{VICTIM}_blobs"
        )
        victor.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])
    return {"dataset": dataset, "workload": workload}


def owned(session: Session) -> Any:
    """Everything of the session's role that a refused write could have added."""
    return one(
        session,
        "SELECT (SELECT count(*) FROM datasets), (SELECT count(*) FROM dataset_buffers),"
        " (SELECT count(*) FROM workloads)",
    )


# An honest dataset row: 6 features, classes 0..2, not normalized, 2 training rows and 1 validation row.
HONEST = {
    "name": "forged",
    "source_table": "anything",
    "label_column": "label",
    "feature_columns": ["f0", "f1", "f2", "f3", "f4", "f5"],
    "feature_shape": [6],
    "num_classes": 3,
    "class_values": [0, 1, 2],
    "normalize": "none",
    "norm_shift": [0.0] * 6,
    "norm_scale": [1.0] * 6,
    "num_segments": 1,
    "buffer_rows": 4,
    "validation_fraction": 0.25,
    "train_rows": 2,
    "validation_rows": 1,
    "seed": 0,
    "vocabulary": None,
    "replication": 1,
}
STORE_DATASET = (
    "SELECT _store_dataset(%(name)s, %(source_table)s, %(label_column)s, %(feature_columns)s::text[],"
    " %(feature_shape)s::int[], %(num_classes)s, %(class_values)s, %(normalize)s, %(norm_shift)s::float8[],"
    " %(norm_scale)s::float8[], %(num_segments)s, %(buffer_rows)s, %(validation_fraction)s, %(train_rows)s,"
    " %(validation_rows)s, %(seed)s, %(vocabulary)s::text[], %(replication)s)"
)
STORE_BUFFER = "SELECT _store_dataset_buffer(%s, %s, %s, %s, %s, %s, %s)"
GOOD_TRAIN = ("train", 0, 0, 2, floats(*range(12)), floats(0, 2))
GOOD_VALIDATION = ("validation", 0, 1, 1, floats(*range(6)), floats(1))


def store_dataset(session: Session, **changes: Any) -> int:
    row = {**HONEST, "name": unique("forged"), **changes}
    stored = session.execute(STORE_DATASET, {**row, "class_values": Jsonb(row["class_values"])}).fetchone()
    assert stored is not None
    dataset_id: int = stored[0]
    return dataset_id


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO datasets (name, source_table, label_column, feature_columns, feature_shape, num_classes,"
        " class_values, normalize, norm_shift, norm_scale, num_segments, buffer_rows, validation_fraction,"
        " train_rows, validation_rows, seed) VALUES ('raw', 't', 'label', '{x}', '{1}', 2, '[0, 1]', 'none', '{0}',"
        " '{1}', 1, 1, 0.5, 1, 1, 0)",
        "INSERT INTO dataset_buffers (dataset_id, split, segment, buffer_id, rows, x, y)"
        " SELECT dataset_id, 'train', 0, 999, 1, '\\x00'::bytea, '\\x00'::bytea FROM datasets",
        "INSERT INTO workloads (dataset, model, search_space, procedure, max_epochs, seed)"
        f" VALUES ('{MALLORY}_blobs', 'mlp', '{{}}', 'grid', 1, 0)",
    ],
    ids=["datasets", "dataset_buffers", "workloads"],
)
def test_direct_inserts_are_refused(mallory: Session, statement: str) -> None:
    before = owned(mallory)
    with pytest.raises(errors.InsufficientPrivilege):
        mallory.execute(statement)
    assert owned(mallory) == before


def test_the_writers_store_an_honest_dataset_under_the_callers_name(mallory: Session) -> None:
    with mallory.transaction():
        dataset = store_dataset(mallory, source_table="payroll")  # a name only: nothing is read through it
        mallory.execute(STORE_BUFFER, [dataset, *GOOD_TRAIN])
        mallory.execute(STORE_BUFFER, [dataset, *GOOD_VALIDATION])
    assert one(mallory, "SELECT owner FROM datasets WHERE dataset_id = %s", dataset) == MALLORY
    workload = one(
        mallory,
        "SELECT run_model_selection(name, 'mlp', '{\"lr\": [0.1]}', max_epochs => 1) FROM datasets"
        " WHERE dataset_id = %s",
        dataset,
    )
    assert one(mallory, "SELECT owner FROM workloads WHERE workload_id = %s", workload) == MALLORY
    mallory.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"name": " "}, "name must not be empty"),
        ({"feature_shape": [0]}, "feature_shape must list positive dimensions"),
        ({"feature_shape": [2, 3]}, "norm_shift and norm_scale need 1 values"),  # the shape lies about the columns
        ({"num_classes": 5}, "num_classes 5 must be at least 2 and count the distinct class_values"),
        ({"class_values": [0, 0, 1]}, "count the distinct class_values"),
        ({"normalize": "zscore"}, "unknown normalize 'zscore'"),
        ({"norm_scale": [0.0] * 6, "normalize": "standard"}, "norm_scale finite and positive"),
        ({"norm_shift": [5.0] * 6}, "normalize 'none' stores norm_shift 0"),
        ({"num_segments": 99}, "num_segments must be between 1 and the cluster's 2 segments"),
        ({"buffer_rows": 0}, "buffer_rows must be at least 1"),
        ({"train_rows": 0}, "every shard needs a training row"),
        ({"replication": 0}, "replication must be between 1 and num_segments = 1, got 0"),
        ({"replication": 2}, "replication must be between 1 and num_segments = 1, got 2"),
        ({"feature_columns": ["label"]}, "must name columns other than the label"),
        ({"vocabulary": ["a", "b"], "normalize": "standard"}, "a text dataset"),
    ],
)
def test_a_dataset_row_that_lies_is_refused(mallory: Session, changes: dict[str, Any], message: str) -> None:
    before = owned(mallory)
    with pytest.raises(errors.InvalidParameterValue, match=message):
        store_dataset(mallory, **changes)
    assert owned(mallory) == before


@pytest.mark.parametrize(
    ("buffer", "message"),
    [
        (("train", 0, 0, 2, floats(*range(11)), floats(0, 2)), "has 48 bytes of features and 8 of labels, got 44"),
        (("train", 0, 0, 2, b"\x01\x02\x03", floats(0, 2)), "got 3 and 8"),
        (("train", 0, 0, 2, floats(*range(12)), floats(0)), "got 48 and 4"),
        (("train", 0, 0, 2, floats(*range(12)), floats(0, 3)), "labels must be class indices 0 to 2"),
        (("train", 0, 0, 2, floats(*range(12)), floats(0, 0.5)), "labels must be class indices"),
        (("train", 0, 0, 2, floats(np.nan, *range(11)), floats(0, 1)), "NaN or infinite"),
        (("train", 1, 0, 2, floats(*range(12)), floats(0, 1)), "segment must be between 0 and 0"),
        (("test", 0, 0, 2, floats(*range(12)), floats(0, 1)), "split must be one of train, validation"),
        (("train", 0, 0, 5, floats(*range(30)), floats(0, 1, 2, 0, 1)), "1 to buffer_rows = 4 rows"),
        (("validation", 0, 1, 2, floats(*range(12)), floats(0, 1)), "declares 1 validation rows; 0 are stored"),
    ],
)
def test_a_buffer_that_does_not_decode_or_lies_is_refused(
    mallory: Session, buffer: tuple[Any, ...], message: str
) -> None:
    before = owned(mallory)
    with pytest.raises(errors.InvalidParameterValue, match=message), mallory.transaction():
        dataset = store_dataset(mallory)
        mallory.execute(STORE_BUFFER, [dataset, *buffer])
    assert owned(mallory) == before


def test_a_replicated_dataset_takes_buffers_of_its_shards_only(mallory: Session) -> None:
    """num_segments 2 with replication 2: one shard, 0; segment 1 holds it, but stores no buffer of its own."""
    before = owned(mallory)
    with pytest.raises(errors.InvalidParameterValue, match="segment must be between 0 and 0"), mallory.transaction():
        dataset = store_dataset(mallory, num_segments=2, replication=2)
        mallory.execute(STORE_BUFFER, [dataset, *GOOD_TRAIN])
        mallory.execute(STORE_BUFFER, [dataset, "train", 1, 2, 2, floats(*range(12)), floats(0, 2)])
    assert owned(mallory) == before


def test_a_dataset_whose_buffers_fall_short_is_refused_at_commit(mallory: Session) -> None:
    before = owned(mallory)
    with pytest.raises(errors.IntegrityConstraintViolation, match="incomplete"), mallory.transaction():
        dataset = store_dataset(mallory)
        mallory.execute(STORE_BUFFER, [dataset, *GOOD_TRAIN])  # no validation buffer
    assert owned(mallory) == before


def test_a_complete_dataset_takes_no_more_buffers(mallory: Session) -> None:
    dataset = one(mallory, "SELECT dataset_id FROM datasets WHERE name = %s", f"{MALLORY}_blobs")
    with pytest.raises(errors.InvalidParameterValue, match="are stored and this buffer has 1"):
        mallory.execute(STORE_BUFFER, [dataset, "validation", 0, 9999, 1, floats(*range(6)), floats(1)])


def test_nothing_is_written_into_another_users_dataset_or_workload(mallory: Session, victors: dict[str, int]) -> None:
    before = owned(mallory)
    with pytest.raises(errors.UndefinedObject, match="unknown dataset"):
        mallory.execute(STORE_BUFFER, [victors["dataset"], "train", 0, 9999, 1, floats(*range(6)), floats(1)])
    calls = [
        (
            "SELECT * FROM _create_workload(%s, 'mlp', '{}', 'grid', 1, NULL, NULL, NULL, false, 0, NULL)",
            [f"{VICTIM}_blobs"],
            "unknown dataset",
        ),
        (
            "SELECT * FROM _create_workload(%s, 'mlp', '{}', 'grid', 1, NULL, NULL, %s, false, 0, NULL)",
            [f"{MALLORY}_blobs", victors["workload"]],
            "unknown parent_workload",
        ),
    ]
    for statement, params, message in calls:
        with pytest.raises(errors.UndefinedObject, match=message):
            mallory.execute(statement, params)
    assert owned(mallory) == before


def test_the_workload_writer_checks_like_run_model_selection(mallory: Session) -> None:
    before = owned(mallory)
    call = "SELECT * FROM _create_workload(%s, %s, %s, %s, 1, NULL, NULL, NULL, false, 0, NULL)"
    for model, space, procedure, message in [
        ("mlp", '{"learning_rate": [0.1]}', "grid", "unknown hyper-parameter"),
        ("no_such_model", '{"lr": [0.1]}', "grid", "no_such_model"),
        ("mlp", '{"lr": [0.1]}', "anneal", "anneal"),
    ]:
        with pytest.raises(errors.InvalidParameterValue, match=message):
            mallory.execute(call, [f"{MALLORY}_blobs", model, space, procedure])
    assert owned(mallory) == before


def test_a_group_role_cannot_own_a_workload(mallory: Session) -> None:
    mallory.execute("SET ROLE cerebro_user")
    with pytest.raises(errors.InsufficientPrivilege, match="only login roles own rows"):
        mallory.execute(
            "SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 1)", [f"{MALLORY}_blobs"]
        )


def test_prepare_dataset_still_cannot_read_what_the_tenant_cannot(dsn: str, mallory: Session) -> None:
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("CREATE TABLE IF NOT EXISTS wr_secret (f0 real, label int)")
        admin.execute("INSERT INTO wr_secret SELECT g, g % 2 FROM generate_series(1, 20) g")
    before = owned(mallory)
    with pytest.raises(errors.InsufficientPrivilege, match="wr_secret"):
        mallory.execute("SELECT * FROM prepare_dataset('wr_stolen', 'public.wr_secret', 'label')")
    assert owned(mallory) == before


@pytest.mark.usefixtures("logins")  # its grant lets a new login read the blobs table
def test_adduser_refuses_a_name_that_still_owns_rows(dsn: str, cluster: ClusterConfig, blobs_2seg: str) -> None:
    name = "wr_reborn"
    login = dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
    with psycopg.connect(login, autocommit=True) as session:
        session.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', %s, validation_fraction => 0.25)",
            [f"{name}_blobs", f"public.{blobs_2seg}", BLOBS_FEATURES],
        )
        session.execute("SELECT run_model_selection(%s, 'mlp', '{\"lr\": [0.1]}', max_epochs => 1)", [f"{name}_blobs"])
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("UPDATE workloads SET status = 'stopped' WHERE owner = %s", [name])
        admin.execute(sql.SQL("DROP SCHEMA {0}; DROP ROLE {0}").format(sql.Identifier(name)))  # adduser made both
        with pytest.raises(ValueError, match="1 workloads, 1 datasets still belong to 'wr_reborn'") as refused:
            install.add_user(dsn, name)
        assert 'DELETE FROM "cerebro"."workloads" WHERE owner = \'wr_reborn\';' in str(refused.value)
        assert not admin.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", [name]).fetchone()
        for table in ("workloads", "datasets"):
            admin.execute(sql.SQL("DELETE FROM {} WHERE owner = %s").format(sql.Identifier(table)), [name])
    assert install.add_user(dsn, name)  # the rows are gone: the name is free again


def test_installing_over_an_older_database_revokes_its_inserts(dsn: str) -> None:
    """Earlier versions granted these inserts; the privileges file must take them back, not just grant less."""
    with psycopg.connect(dsn, autocommit=True) as admin:
        admin.execute("GRANT INSERT ON cerebro.dataset_buffers TO cerebro_user")
        admin.execute("GRANT INSERT (name, dataset, model) ON cerebro.workloads TO cerebro_user")
        install.install(dsn)
        granted = admin.execute(
            "SELECT has_table_privilege('cerebro_user', 'cerebro.dataset_buffers', 'INSERT'),"
            " has_any_column_privilege('cerebro_user', 'cerebro.workloads', 'INSERT'),"
            " has_any_column_privilege('cerebro_user', 'cerebro.datasets', 'INSERT')"
        ).fetchone()
    assert granted == (False, False, False)
