"""The multi-server backend: a coordinator and two segment servers, each a real PostgreSQL.

Units train on the segment server that holds the shard, the coordinator records them;
results are bit-identical to the local backend, and a segment server that goes down
mid-run loses nothing.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql

from cerebro_db import sample_data
from cerebro_db.backends import multi_server
from cerebro_db.backends.multi_server import MembershipError
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing import faults, verify
from cerebro_db.testing.clusters import MultiServerCluster, temporary_cluster, temporary_multi_server
from tests.conftest import TINY_CNN, assert_nothing_stranded, launch

ROWS = 600
SPACE = {"lr": [0.003], **TINY_CNN}
EPOCHS = 2


def _prepare(dsn: str) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        sample_data.load_fashion_mnist(conn, "fashion_ms", limit=ROWS)
        conn.execute(
            "SELECT * FROM prepare_dataset('fashion_ms', 'fashion_ms', 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', num_segments => 2, validation_fraction => 0.2, seed => 3)"
        )


@pytest.fixture(scope="module")
def cluster() -> Iterator[MultiServerCluster]:
    with temporary_multi_server(segments=2) as started:
        _prepare(started.coordinator)
        yield started


def _run(cluster: MultiServerCluster) -> None:
    Scheduler(cluster.coordinator, idle_wait=0.2, passfile=cluster.passfile).run(until_idle=True)
    assert_nothing_stranded(cluster.coordinator)


def _hops(conn: psycopg.Connection[Any], config_id: int) -> list[int]:
    return [
        r[0] for r in conn.execute("SELECT segment FROM units WHERE config_id = %s ORDER BY started_at", [config_id])
    ]


def _config(conn: psycopg.Connection[Any], workload_id: int) -> int:
    row = conn.execute("SELECT min(config_id) FROM configs WHERE workload_id = %s", [workload_id]).fetchone()
    assert row is not None
    config_id: int = row[0]
    return config_id


def test_segments_are_registered_servers_without_passwords(cluster: MultiServerCluster) -> None:
    dsns = multi_server.registered(cluster.coordinator)
    assert dsns == [f"postgresql://cerebro@127.0.0.1:{server.config.port}/cerebro" for server in cluster.servers]
    assert cluster.passfile.stat().st_mode & 0o077 == 0


def test_passwords_go_to_a_private_passfile_even_if_it_existed_readable(tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("other:5432:cerebro:cerebro:kept\n")
    passfile.chmod(0o644)
    url = "postgresql://u:p%3Aw@h:7/db"
    with pytest.raises(MembershipError, match="listed twice"):  # an invalid list writes nothing
        multi_server.register_segments("postgresql://127.0.0.1:1/none", [url, url], passfile)
    assert passfile.read_text() == "other:5432:cerebro:cerebro:kept\n"
    with pytest.raises(psycopg.OperationalError):  # the coordinator does not answer; the passwords are kept
        multi_server.register_segments("postgresql://127.0.0.1:1/none", [url], passfile, tmp_path / "ca.pem")
    assert passfile.stat().st_mode & 0o777 == 0o600
    assert passfile.read_text().splitlines() == [
        "other:5432:cerebro:cerebro:kept",
        "h:7:db:u:p\\:w",
        "h:7:postgres:u:p\\:w",
    ]


def test_units_train_on_the_server_that_holds_the_shard_bit_identical_to_local(cluster: MultiServerCluster) -> None:
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        workload = launch(conn, "fashion_ms", SPACE, epochs=EPOCHS, seed=11)
        _run(cluster)
        assert conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [workload]).fetchone() == (
            "completed",
        )
        assert verify.epochs_lost(conn, workload) == 0
        assert verify.mop_violations(conn, workload) == []
        config = _config(conn, workload)
        hops = _hops(conn, config)
        state = verify.final_state(conn, config)
        metrics = conn.execute(
            "SELECT epoch, train_loss, val_loss, val_metric FROM epoch_metrics WHERE config_id = %s ORDER BY 1",
            [config],
        ).fetchall()
        coordinator_buffers = conn.execute(
            "SELECT buffer_id, split, segment, x, y FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
            " WHERE d.name = 'fashion_ms' ORDER BY buffer_id"
        ).fetchall()
    assert sorted(hops) == [0, 0, 1, 1]

    # Each server holds its own training shard and the validation set, nothing else.
    for segment, server in enumerate(cluster.servers):
        with psycopg.connect(server.config.dsn()) as conn:
            held = conn.execute(
                "SELECT buffer_id, split, segment, x, y FROM cerebro.dataset_buffers ORDER BY buffer_id"
            ).fetchall()
        assert held == [b for b in coordinator_buffers if b[1] == "validation" or b[2] == segment]

    # The local backend, same dataset and seeds, driven through the same hops in the same order.
    with temporary_cluster(segments=2) as local, psycopg.connect(local.dsn(), autocommit=True) as conn:
        _prepare(local.dsn())
        local_workload = launch(conn, "fashion_ms", SPACE, epochs=EPOCHS, seed=11)
        local_config = _config(conn, local_workload)
        for segment in hops:
            with conn.transaction():
                claimed = conn.execute("SELECT config_id FROM claim_unit(%s)", [segment]).fetchone()
                assert claimed == (local_config,)
                conn.execute("SELECT run_unit(%s, %s)", [local_config, segment])
        assert _hops(conn, local_config) == hops
        assert verify.states_equal(verify.final_state(conn, local_config), state)
        assert (
            conn.execute(
                "SELECT epoch, train_loss, val_loss, val_metric FROM epoch_metrics WHERE config_id = %s ORDER BY 1",
                [local_config],
            ).fetchall()
            == metrics
        )


def test_with_replication_every_server_holding_a_shard_gets_it_and_trains_on_it(cluster: MultiServerCluster) -> None:
    """replication 2 on 2 segments: one training shard, which both servers hold."""
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        conn.execute(
            "SELECT * FROM prepare_dataset('fashion_ms_r2', 'fashion_ms', 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', validation_fraction => 0.2, seed => 3, replication => 2)"
        )
        buffers = conn.execute(
            "SELECT buffer_id, split, segment, x, y FROM dataset_buffers b JOIN datasets d USING (dataset_id)"
            " WHERE d.name = 'fashion_ms_r2' ORDER BY buffer_id"
        ).fetchall()
        assert {b[2] for b in buffers if b[1] == "train"} == {0}
        multi_server.distribute(cluster.coordinator, "fashion_ms_r2", cluster.passfile)
        for server in cluster.servers:
            with psycopg.connect(server.config.dsn()) as held:
                assert (
                    held.execute(
                        "SELECT buffer_id, split, segment, x, y FROM cerebro.dataset_buffers b"
                        " JOIN cerebro.datasets d USING (dataset_id) WHERE d.name = 'fashion_ms_r2' ORDER BY buffer_id"
                    ).fetchall()
                    == buffers
                )
        workload = launch(conn, "fashion_ms_r2", {"lr": [0.003, 0.004], **TINY_CNN}, epochs=EPOCHS, seed=11)
        _run(cluster)
        assert conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [workload]).fetchone() == (
            "completed",
        )
        assert verify.epochs_lost(conn, workload) == 0
        assert verify.mop_violations(conn, workload) == []
        units = conn.execute(
            "SELECT count(*) FROM units JOIN configs USING (config_id) WHERE workload_id = %s", [workload]
        ).fetchone()
        assert units == (2 * EPOCHS,)  # an epoch is one hop: the one shard


def test_a_segment_server_that_goes_down_mid_run_loses_nothing(cluster: MultiServerCluster) -> None:
    server = cluster.servers[1]
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        workload = launch(conn, "fashion_ms", {**SPACE, "lr": [0.003, 0.01]}, epochs=EPOCHS, seed=12)
        scheduler = threading.Thread(target=_run, args=(cluster,))
        scheduler.start()
        try:
            # The first unit on a fresh segment backend imports TensorFlow: seconds in flight.
            config, epoch = faults.poll(
                "a unit in flight on segment 1",
                lambda: conn.execute(
                    "SELECT a.config_id, c.epochs_done + 1 FROM active_units a JOIN configs c USING (config_id)"
                    " WHERE a.workload_id = %s AND a.segment = 1",
                    [workload],
                ).fetchone(),
            )
            server.stop("immediate")
            down = conn.execute("SELECT clock_timestamp()").fetchone()
            faults.poll(
                "the unit on segment 1 to roll back",
                lambda: (
                    not conn.execute(
                        "SELECT 1 FROM active_units WHERE workload_id = %s AND segment = 1", [workload]
                    ).fetchone()
                ),
            )
            # Meanwhile segment 0 goes on with what it may run; then the server comes back.
            server.start()
        finally:
            scheduler.join(timeout=faults.DEADLINE)
        assert not scheduler.is_alive()
        assert conn.execute("SELECT status FROM workloads WHERE workload_id = %s", [workload]).fetchone() == (
            "completed",
        )
        assert verify.epochs_lost(conn, workload) == 0
        assert verify.mop_violations(conn, workload) == []
        # The interrupted unit ran again, once, after the server went down.
        reruns = conn.execute(
            "SELECT started_at > %s FROM units WHERE config_id = %s AND epoch = %s AND segment = 1",
            [down[0] if down else None, config, epoch],
        ).fetchall()
        assert reruns == [(True,)]
        for (each,) in conn.execute("SELECT config_id FROM configs WHERE workload_id = %s", [workload]).fetchall():
            assert verify.states_equal(verify.final_state(conn, each), verify.replay(conn, each))


def test_a_segment_server_without_the_function_keeps_its_units_until_it_is_repaired(
    cluster: MultiServerCluster,
) -> None:
    """Not the config's fault: the units wait (and no config fails) until the server is fixed."""
    server = cluster.servers[0]
    with psycopg.connect(server.config.dsn(), autocommit=True) as broken:
        broken.execute("ALTER FUNCTION cerebro.train_hop(jsonb, bytea) RENAME TO train_hop_away")
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        workload = launch(conn, "fashion_ms", SPACE, epochs=1, seed=14)
        scheduler = threading.Thread(target=_run, args=(cluster,))
        scheduler.start()
        try:
            # Segment 1 trains its unit; the config then waits for segment 0, whose unit keeps rolling back.
            faults.poll(
                "the unit on segment 1",
                lambda: conn.execute(
                    "SELECT 1 FROM units u JOIN configs c USING (config_id) WHERE c.workload_id = %s", [workload]
                ).fetchone(),
            )
            assert conn.execute("SELECT status FROM configs WHERE workload_id = %s", [workload]).fetchall() == [
                ("running",)
            ]
        finally:
            with psycopg.connect(server.config.dsn(), autocommit=True) as repaired:
                repaired.execute("ALTER FUNCTION cerebro.train_hop_away(jsonb, bytea) RENAME TO train_hop")
            scheduler.join(timeout=faults.DEADLINE)
        assert not scheduler.is_alive()
        assert conn.execute("SELECT status FROM configs WHERE workload_id = %s", [workload]).fetchall() == [
            ("completed",)
        ]
        assert verify.mop_violations(conn, workload) == []


def test_unit_timeout_cancels_the_training_on_the_segment_server(cluster: MultiServerCluster) -> None:
    """Independent of the machine's speed: on each segment server this test holds the TOAST index of
    dataset_buffers (REINDEX in an open transaction). Reading a shard's packed buffers needs it; checking
    that the server holds the shard does not. So the unit waits on the segment server, for certain, until
    the time limit cancels it there."""
    multi_server.distribute(cluster.coordinator, "fashion_ms", cluster.passfile)  # the unit then writes nothing
    with contextlib.ExitStack() as held:
        for server in cluster.servers:
            holder = held.enter_context(psycopg.connect(server.config.dsn()))
            held.callback(holder.rollback)  # before the connection closes (and would commit)
            (index,) = holder.execute(
                "SELECT ic.relname FROM pg_class t JOIN pg_index i ON i.indrelid = t.reltoastrelid"
                " JOIN pg_class ic ON ic.oid = i.indexrelid WHERE t.oid = 'cerebro.dataset_buffers'::regclass"
            ).fetchone()  # type: ignore[misc]
            holder.execute(sql.SQL("REINDEX INDEX {}").format(sql.Identifier("pg_toast", index)))
        with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
            row = conn.execute(
                "SELECT run_model_selection('fashion_ms', 'cnn', %s, max_epochs => 1, seed => 15,"
                " unit_timeout => '1 s')",
                [json.dumps(SPACE)],
            ).fetchone()
            assert row is not None
            _run(cluster)
            failed = conn.execute("SELECT status, error FROM configs WHERE workload_id = %s", [row[0]]).fetchone()
            assert failed is not None and failed[0] == "failed"
            assert "ran longer than unit_timeout (00:00:01)" in failed[1]
            assert conn.execute(
                "SELECT count(*) FROM units u JOIN configs c USING (config_id) WHERE c.workload_id = %s", [row[0]]
            ).fetchone() == (0,)


def test_a_config_that_diverges_on_a_segment_server_fails_with_its_reason(cluster: MultiServerCluster) -> None:
    # As in test_config_failures: raw features around 1e12 overflow SGD with lr 10 to NaN; Adam copes.
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        conn.execute(
            "CREATE TABLE unscaled AS SELECT g % 3 AS y, g * 5e9 AS a, (g % 7) * 1e11 AS b"
            " FROM generate_series(1, 200) g"
        )
        conn.execute("SELECT * FROM prepare_dataset('unscaled', 'unscaled', 'y', \"normalize\" => 'none')")
        adam = {"optimizer": "adam", "lr": 0.001, "hidden_units": 16}
        row = conn.execute(
            "SELECT run_model_selection('unscaled', 'mlp', %s, max_epochs => 1, seed => 1)", [json.dumps(adam)]
        ).fetchone()
        assert row is not None
        conn.execute("SELECT add_config(%s, %s)", [row[0], json.dumps({**adam, "optimizer": "sgd", "lr": 10})])
        _run(cluster)
        outcomes = conn.execute(
            "SELECT status, error FROM configs WHERE workload_id = %s ORDER BY config_id", [row[0]]
        ).fetchall()
    assert outcomes[0] == ("completed", None)
    assert outcomes[1][0] == "failed" and "training diverged" in outcomes[1][1]


@pytest.mark.parametrize(
    ("specs", "message"),
    [
        (["nohost"], "'nohost' is neither host:port nor a postgresql:// URL"),
        (["db1:port"], "'db1:port' is neither host:port"),
        (["127.0.0.1:5999", "127.0.0.1:5999"], "listed twice"),
        (["postgresql://u:secret@/db"], r"^segment postgresql://u@\?:5432/db names no host$"),  # no password shown
        (["postgresql://u:secret@h:5432/db?bad_option=1"], "nor a valid postgresql:// URL$"),
        ([], "at least one segment server"),
    ],
)
def test_bad_segment_lists_are_refused_by_name(specs: list[str], message: str, tmp_path: Path) -> None:
    with pytest.raises(MembershipError, match=message) as refused:
        multi_server.register_segments("postgresql://unused", specs, tmp_path / "pgpass")
    assert "secret" not in str(refused.value)


def test_segments_do_not_change_under_a_running_workload(cluster: MultiServerCluster) -> None:
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        workload = launch(conn, "fashion_ms", SPACE, epochs=1, seed=13)
        before = multi_server.registered(cluster.coordinator)
        with pytest.raises(MembershipError, match=f"workloads {workload} are running"):
            multi_server.register_segments(
                cluster.coordinator,
                [cluster.servers[1].config.dsn(), cluster.servers[0].config.dsn()],
                cluster.passfile,
            )
        assert multi_server.registered(cluster.coordinator) == before
        conn.execute("UPDATE workloads SET status = 'stopped' WHERE workload_id = %s", [workload])


def test_up_with_segment_servers_trains_there_and_status_lists_them(cluster: MultiServerCluster) -> None:
    """As an operator runs it: a new coordinator, the servers given with their passwords on the command line."""
    home = Path(tempfile.mkdtemp(prefix="cerebro-ms-cli-"))
    home.chmod(0o755)
    urls = [server.config.dsn() for server in cluster.servers]
    try:
        out = faults.cli(home, "up", "--segments", ",".join(urls))
        for segment, server in enumerate(cluster.servers):
            assert f"segment {segment}: postgresql://cerebro@127.0.0.1:{server.config.port}/cerebro" in out
        assert "password" not in out and all(s.config.password not in out for s in cluster.servers)
        assert "(local)" not in faults.cli(home, "status")
        with psycopg.connect(faults.cli(home, "dsn").strip()) as conn:
            x, y = sample_data.synthetic_tabular(200, 4, 3)
            sample_data.load_tabular_table(conn, "blobs_cli", x, y)
            conn.execute("SELECT * FROM prepare_dataset('blobs_cli', 'blobs_cli', 'label', '{f0,f1,f2,f3}')")
            space = '{"lr": [0.01], "hidden_units": 8}'
            row = conn.execute(
                "SELECT run_model_selection('blobs_cli', 'mlp', %s, max_epochs => 1)", [space]
            ).fetchone()
            assert row is not None
            conn.commit()
        assert "-> val acc" in faults.cli(home, "wait", str(row[0]))
        for server in cluster.servers:
            with psycopg.connect(server.config.dsn()) as conn:
                assert conn.execute("SELECT 1 FROM cerebro.datasets WHERE name = 'blobs_cli'").fetchone()
    finally:
        faults.cli(home, "down")
        shutil.rmtree(home, ignore_errors=True)


def test_up_refuses_a_bad_segment_list_by_name(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match="segment 'db1:x' is neither host:port nor a postgresql:// URL"):
        faults.cli(tmp_path, "up", "--segments", "db1:x,db2:5432")
    assert list(tmp_path.iterdir()) == []  # refused before anything started


def test_a_buffer_that_does_not_decode_on_a_segment_server_fails_the_config_not_the_segment(
    cluster: MultiServerCluster,
) -> None:
    with psycopg.connect(cluster.coordinator, autocommit=True) as conn:
        conn.execute(
            "SELECT * FROM prepare_dataset('fashion_torn', 'fashion_ms', 'label', feature_columns => '{pixels}',"
            " feature_shape => '{28,28,1}', num_segments => 2, validation_fraction => 0.2, seed => 3)"
        )
        multi_server.distribute(cluster.coordinator, "fashion_torn", cluster.passfile)
        with psycopg.connect(cluster.servers[0].config.dsn(), autocommit=True) as server:
            server.execute(
                "UPDATE cerebro.dataset_buffers SET x = '\\x000102'::bytea"
                " WHERE split = 'train' AND dataset_id = (SELECT dataset_id FROM cerebro.datasets"
                " WHERE name = 'fashion_torn')"
            )
        torn = launch(conn, "fashion_torn", SPACE, epochs=1, seed=16)
        _run(cluster)
        status, error = conn.execute("SELECT status, error FROM configs WHERE workload_id = %s", [torn]).fetchone() or (
            None,
            None,
        )
        assert status == "failed" and "does not decode into rows of shape (28, 28, 1)" in error, error
        # Failed at its first attempt on segment 0, at once: no retries, no blame on the segment.
        assert conn.execute(
            "SELECT a.segment, a.outcome FROM unit_attempts a JOIN configs c USING (config_id)"
            " WHERE c.workload_id = %s AND a.outcome <> 'committed'",
            [torn],
        ).fetchall() == [(0, "failed")]
