"""The memory guard refuses a config too big to train when it is created, by name, before any unit runs."""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Iterator
from typing import Any

import psycopg
import pytest
from psycopg import errors, sql

from cerebro_db import install
from cerebro_db.cluster import ClusterConfig
from cerebro_plpy import memory, roster
from tests.conftest import TINY_CNN, launch, run_until_idle, unique
from tests.plpy.test_memory import WIDE

Session = psycopg.Connection[Any]


def counts(conn: Session) -> tuple[int, int, int]:
    row = conn.execute(
        "SELECT (SELECT count(*) FROM workloads), (SELECT count(*) FROM configs), (SELECT count(*) FROM units)"
    ).fetchone()
    assert row is not None
    return row[0], row[1], row[2]


def refused(conn: Session, statement: str, *params: Any) -> str:
    """The message of ``statement``'s refusal; checks that it created nothing."""
    before = counts(conn)
    with pytest.raises(errors.InvalidParameterValue) as raised:
        conn.execute(statement, list(params))
    assert "cerebro.max_training_mb" in (raised.value.diag.message_hint or "")
    assert counts(conn) == before
    return raised.value.diag.message_primary or ""


def test_a_huge_cnn_is_refused_at_launch_with_its_estimate(conn: Session, fashion_2seg: str) -> None:
    message = refused(
        conn,
        "SELECT run_model_selection(%s, 'cnn', %s)",
        fashion_2seg,
        json.dumps({"filters": [4, 1024], "batch_size": 16384, "dense_units": 16}),
    )
    # The largest training shard holds 480 rows: that is the real batch.
    assert '"filters": 1024' in message
    assert "training needs about 6.05 GB (activations 5.75 GB at batch_size 480, weights, gradients" in message
    assert message.endswith("over cerebro.max_training_mb = 4096; lower batch_size, filters, dense_units")


def test_a_huge_application_is_refused_at_launch(conn: Session, fashion_2seg: str) -> None:
    message = refused(conn, "SELECT run_model_selection(%s, 'resnet50', '{\"image_size\": [1024]}')", fashion_2seg)
    # 240 validation rows, forward only, outweigh 2 x 64 training rows.
    assert " GB (activations " in message and " GB at the evaluation batch 240, weights" in message
    assert message.endswith("; lower batch_size, image_size")


def test_a_registered_script_of_absurd_width_is_refused_at_launch(conn: Session, blobs_2seg: str) -> None:
    name = unique("wide")
    conn.execute("SELECT register_model(%s, %s)", [name, WIDE])  # checked with its default width, 8
    message = refused(conn, "SELECT run_model_selection(%s, %s, '{\"units\": [100000]}')", blobs_2seg, name)
    assert '"units": 100000' in message and "training needs about 149 GB" in message
    assert message.endswith("lower the script's size parameters, batch_size")


@pytest.fixture
def limit(conn: Session, fashion_2seg: str) -> Iterator[float]:
    """A limit just above TINY_CNN's estimate on fashion_2seg, for this session and the scheduler's."""
    shape, classes, validation, shard = conn.execute(
        "SELECT d.feature_shape, d.num_classes, d.validation_rows, max(s.rows) FROM datasets d,"
        " LATERAL (SELECT sum(rows) AS rows FROM dataset_buffers b WHERE b.dataset_id = d.dataset_id"
        "          AND split = 'train' GROUP BY segment) s WHERE d.name = %s GROUP BY d.dataset_id",
        [fashion_2seg],
    ).fetchone()  # type: ignore[misc]
    params = roster.validate("cnn", TINY_CNN, tuple(shape))
    profile = memory.roster_profile("cnn", params, tuple(shape), classes)
    assert profile is not None
    megabytes = memory.estimate(profile, params["batch_size"], shard, validation).total_bytes / 2**20 + 0.01
    database = sql.Identifier(conn.info.dbname)
    conn.execute(
        sql.SQL("ALTER DATABASE {} SET cerebro.max_training_mb = {}").format(database, sql.Literal(str(megabytes)))
    )
    conn.execute("SELECT set_config('cerebro.max_training_mb', %s, false)", [str(megabytes)])
    try:
        yield megabytes
    finally:
        conn.execute(sql.SQL("ALTER DATABASE {} RESET cerebro.max_training_mb").format(database))


def test_a_config_just_under_the_limit_trains_and_bigger_ones_are_refused(
    dsn: str, conn: Session, fashion_2seg: str, limit: float
) -> None:
    workload = launch(conn, fashion_2seg, TINY_CNN, epochs=1)
    (config,) = (row[0] for row in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload]))
    over = f"over cerebro.max_training_mb = {limit:g}"
    message = refused(conn, "SELECT add_config(%s, %s)", workload, json.dumps({**TINY_CNN, "dense_units": 32}))
    assert '"dense_units": 32' in message and over in message
    message = refused(conn, "INSERT INTO configs (workload_id, params) VALUES (%s, '{\"filters\": 8}')", workload)
    assert '"filters": 8' in message and over in message
    # A clone keeps the architecture, but a bigger batch needs more memory for the activations.
    message = refused(conn, "SELECT clone_config(%s, '{\"batch_size\": 128}')", config)
    assert "at batch_size 128" in message and message.endswith(f"{over}; lower batch_size, filters, dense_units")
    clone = conn.execute("SELECT clone_config(%s, '{\"batch_size\": 32}')", [config]).fetchone()
    assert clone is not None
    run_until_idle(dsn)
    assert conn.execute(
        "SELECT array_agg(DISTINCT status), count(*) FROM configs WHERE workload_id = %s", [workload]
    ).fetchone() == (["completed"], 2)


def test_the_old_setting_still_counts(conn: Session, fashion_2seg: str) -> None:
    conn.execute("SET cerebro.max_model_mb = 1")
    message = refused(conn, "SELECT run_model_selection(%s, 'cnn', %s)", fashion_2seg, json.dumps(TINY_CNN))
    assert message.endswith("over cerebro.max_training_mb = 1; lower batch_size, filters, dense_units")
    conn.execute("SET cerebro.max_training_mb = 1000")  # the new name wins
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [launch(conn, fashion_2seg, TINY_CNN, epochs=1)])


@pytest.fixture
def tenant(cluster: ClusterConfig, dsn: str, conn: Session, blobs_2seg: str) -> Iterator[Session]:
    """A cerebro_user with its own copy of the blobs dataset."""
    conn.execute(sql.SQL("GRANT SELECT ON {} TO cerebro_user").format(sql.Identifier(blobs_2seg)))
    name = unique("dora")
    login = dataclasses.replace(cluster, user=name, password=install.add_user(dsn, name)).dsn()
    with psycopg.connect(login, autocommit=True) as session:
        session.execute(
            "SELECT * FROM prepare_dataset(%s, %s, 'label', '{f0,f1,f2,f3,f4,f5}')",
            [f"{name}_blobs", f"public.{blobs_2seg}"],
        )
        yield session


def test_a_tenant_raising_the_limit_in_its_session_is_refused_by_the_unit(dsn: str, tenant: Session) -> None:
    (dataset,) = tenant.execute("SELECT name FROM datasets").fetchone()  # type: ignore[misc]
    huge = json.dumps({"hidden_units": [65536], "hidden_layers": [64]})  # ~275e9 weights
    message = refused(tenant, "SELECT run_model_selection(%s, 'mlp', %s)", dataset, huge)
    assert "training needs about 4,03" in message and "lower hidden_units, hidden_layers, batch_size" in message
    tenant.execute("SET cerebro.max_training_mb = 1e12")
    workload = tenant.execute("SELECT run_model_selection(%s, 'mlp', %s, max_epochs => 1)", [dataset, huge]).fetchone()
    assert workload is not None
    run_until_idle(dsn)
    status, error, units = tenant.execute(
        "SELECT c.status, c.error, (SELECT count(*) FROM units u WHERE u.config_id = c.config_id) FROM configs c"
        " WHERE c.workload_id = %s",
        [workload[0]],
    ).fetchone()  # type: ignore[misc]
    assert (status, units) == ("failed", 0)
    assert "over cerebro.max_training_mb = 4096" in error
