"""The CLI as users run it: up (cluster + background scheduler), wait, status, demo, down, ui, tensorboard, serve."""

from __future__ import annotations

import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

import psycopg
import pytest
import tensorflow as tf
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cerebro_db import sample_data
from cerebro_db.cluster import ClusterConfig, free_port
from cerebro_db.testing.clusters import dashboard_server
from cerebro_db.testing.faults import cli, connect
from tests.conftest import TINY_CNN, launch, one, run_until_idle


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    root = Path(tempfile.mkdtemp(prefix="cerebro-cli-"))
    root.chmod(0o755)
    try:
        cli(root, "up", "--segments", "2")
        yield root
    finally:
        cli(root, "down")
        shutil.rmtree(root, ignore_errors=True)


class Trained(NamedTuple):
    """A workload ``cerebro-db up``'s background scheduler trained, and what ``cerebro-db wait`` printed."""

    dsn: str
    workload: int
    waited: str


@pytest.fixture(scope="module")
def trained(home: Path) -> Trained:
    dsn = cli(home, "dsn").strip()
    with psycopg.connect(dsn) as conn:
        x, y = sample_data.synthetic_tabular(300, 4, 3)
        sample_data.load_tabular_table(conn, "blobs", x, y)
        conn.execute("SELECT * FROM prepare_dataset('blobs', 'blobs', 'label', '{f0,f1,f2,f3}')")
        workload = conn.execute(
            "SELECT run_model_selection('blobs', 'mlp', '{\"lr\": [0.01, 0.03], \"hidden_units\": 8}', max_epochs => 2)"
        ).fetchone()
        assert workload is not None
        assert conn.execute("SELECT scheduler_alive()").fetchone() == (True,)
        conn.commit()
    return Trained(dsn, workload[0], cli(home, "wait", str(workload[0])))


def test_up_runs_a_background_scheduler_that_trains_a_workload(home: Path, trained: Trained) -> None:
    assert cli(home, "up").count("scheduler started") == 0  # idempotent: the scheduler is already alive
    assert trained.waited.count("-> val acc") == 4  # 2 configs x 2 epochs, each validated once
    assert re.search(r"^ *1 \| +\d+ \| \{.*\} +\| completed +\| +2 \|", trained.waited, re.M), trained.waited
    assert "scheduler: running" in cli(home, "status")
    with psycopg.connect(trained.dsn) as conn:
        epochs = one(conn, "SELECT count(*) FROM epoch_metrics")
    assert cli(home, "psql", "-Atc", "SELECT count(*) FROM epoch_metrics").strip() == str(epochs)  # -Atc passes


def test_export_writes_a_keras_file_of_a_trained_config(trained: Trained, home: Path, tmp_path: Path) -> None:
    with psycopg.connect(trained.dsn) as conn:
        row = conn.execute(
            "SELECT min(config_id) FROM configs WHERE workload_id = %s AND status = 'completed'", [trained.workload]
        ).fetchone()
    assert row is not None and row[0] is not None
    path = tmp_path / "best.keras"
    assert f"-> {path}" in cli(home, "export", str(row[0]), "-o", str(path))
    # Loaded in another process: TensorFlow started here would keep its default thread pools, and
    # the bit-exactness test of test_scheduler needs this process's TensorFlow single-threaded.
    loaded = subprocess.run(
        [sys.executable, "-c", "import sys, keras; print(keras.saving.load_model(sys.argv[1]).output_shape)", path],
        capture_output=True,
        text=True,
    )
    assert loaded.stdout.strip() == "(None, 3)", loaded.stderr


@pytest.mark.slow
def test_demo_reaches_a_sane_accuracy(home: Path) -> None:
    out = cli(home, "demo", timeout=1800)
    best = re.search(r"^ *1 \| +\d+ \| \{.*\} +\| completed +\| +3 \| +(0\.\d+) \|", out, re.M)
    assert best is not None, out
    assert float(best.group(1)) >= 0.85, out


def test_ui_serves_the_dashboard_on_the_given_port(dsn: str) -> None:
    with dashboard_server(dsn) as url:
        with urllib.request.urlopen(f"{url}/_stcore/health", timeout=30) as health:
            assert health.read() == b"ok"
        with urllib.request.urlopen(url, timeout=30) as page:
            assert page.status == 200


def test_tensorboard_writes_the_epoch_metrics_as_event_files(dsn: str, fashion_2seg: str, tmp_path: Path) -> None:
    with psycopg.connect(dsn, autocommit=True) as conn:
        workload = launch(conn, fashion_2seg, {"lr": [0.001, 0.003], **TINY_CNN}, epochs=2)
        run_until_idle(dsn)
        expected = {
            (f"config-{config}/{split}", tag, epoch): value
            for config, epoch, train_loss, train_metric, val_loss, val_metric in conn.execute(
                "SELECT config_id, epoch, train_loss, train_metric, val_loss, val_metric FROM epoch_metrics"
                " JOIN configs USING (config_id) WHERE workload_id = %s",
                [workload],
            )
            for split, tag, value in [
                ("train", "loss", train_loss),
                ("train", "accuracy", train_metric),
                ("validation", "loss", val_loss),
                ("validation", "accuracy", val_metric),
            ]
        }
    result = subprocess.run(
        [sys.executable, "-m", "cerebro_db.cli", "tensorboard", str(workload), "--logdir", str(tmp_path)],
        env={**os.environ, "CEREBRO_DSN": dsn},
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"tensorboard --logdir {tmp_path}" in result.stdout
    written = {}
    for run in (tmp_path / f"w{workload}").glob("config-*/*"):
        accumulator = EventAccumulator(str(run))
        accumulator.Reload()
        for tag in accumulator.Tags()["tensors"]:
            for event in accumulator.Tensors(tag):
                written[(f"{run.parent.name}/{run.name}", tag, event.step)] = float(tf.make_ndarray(event.tensor_proto))
    assert written.keys() == expected.keys()
    assert all(abs(written[key] - expected[key]) < 1e-6 for key in expected)


class Served(NamedTuple):
    process: subprocess.Popen[bytes]
    config: ClusterConfig
    log: Path
    cert: Path  # what --export-cert wrote: clients beyond loopback verify the server with it


@pytest.fixture(scope="module")
def served() -> Iterator[Served]:
    """``cerebro-db serve`` as docker-compose.yml's servers run it: all addresses, a fixed port, the password
    from the environment, the superuser allowed from the subnet (over TLS), the certificate exported."""
    root = Path(tempfile.mkdtemp(prefix="cerebro-serve-"))
    root.chmod(0o755)
    config = ClusterConfig(port=free_port(), password="p@ss:word/ with spaces")
    log = root / "serve.log"  # a file, not a pipe nobody reads while the server writes its log
    cert = root / "exported.pem"
    with open(log, "wb") as output:
        process = subprocess.Popen(
            [sys.executable, "-m", "cerebro_db.cli", "serve", "--listen", "0.0.0.0", "--port", str(config.port)]
            + ["--remote-superuser", "--export-cert", str(cert)],
            env={**os.environ, "CEREBRO_HOME": str(root), "CEREBRO_PASSWORD": config.password},
            stdout=output,
            stderr=subprocess.STDOUT,
        )
    try:
        yield Served(process, config, log, cert)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        shutil.rmtree(root, ignore_errors=True)


def own_address() -> str:
    """This host's address on its default route (a UDP connect sends nothing)."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.connect(("198.51.100.1", 9))  # TEST-NET-2: routed, never reached
        address: str = probe.getsockname()[0]
        return address


def test_serve_listens_on_all_addresses_with_the_schema_installed(served: Served) -> None:
    config = served.config
    with connect(config.dsn()) as conn:  # waits until the server listens: after its schema is in place
        assert conn.execute("SELECT to_regclass('cerebro.configs') IS NOT NULL").fetchone() == (True,)
        assert conn.execute("SHOW listen_addresses").fetchone() == ("0.0.0.0",)
    address = own_address()
    tls = {"sslmode": "verify-ca", "sslrootcert": str(served.cert), "channel_binding": "require"}
    with psycopg.connect(host=address, port=config.port, user=config.user, password=config.password, **tls) as conn:
        assert conn.execute("SELECT inet_client_addr() = %s::inet", [address]).fetchone() == (True,)
    with pytest.raises(psycopg.OperationalError, match="password authentication failed"):
        psycopg.connect(host=address, port=config.port, user=config.user, password="wrong", **tls)
    with pytest.raises(psycopg.OperationalError, match="no encryption"):  # beyond loopback: TLS only
        psycopg.connect(host=address, port=config.port, user=config.user, password=config.password, sslmode="disable")


def test_up_with_cerebro_dsn_installs_into_that_database(
    served: Served, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # As docker-compose.yml's scheduler: no password in the URL, libpq takes it from the environment.
    dsn = f"postgresql://{served.config.user}@{own_address()}:{served.config.port}/{served.config.database}"
    dsn += f"?sslmode=verify-ca&sslrootcert={served.cert}&channel_binding=require"
    monkeypatch.setenv("CEREBRO_DSN", dsn)
    monkeypatch.setenv("PGPASSWORD", served.config.password)
    assert "scheduler started" not in cli(tmp_path, "up", "--no-scheduler")
    assert not (tmp_path / "pgdata").exists()  # no embedded cluster beside it
    assert cli(tmp_path, "dsn").strip() == dsn


def test_serve_stops_with_a_fast_shutdown_on_sigterm(served: Served) -> None:
    with connect(served.config.dsn()) as client:  # PostgreSQL's own SIGTERM would wait for it to leave
        served.process.send_signal(signal.SIGTERM)
        assert served.process.wait(timeout=60) == 0
        with pytest.raises(psycopg.OperationalError):
            client.execute("SELECT 1")
    assert "database system is shut down" in served.log.read_text()
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(served.config.dsn(), connect_timeout=5)


def test_up_refuses_a_listen_address_that_is_not_one(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match='--listen "0.0.0.0\'; x": give host names or addresses') as refused:
        cli(tmp_path, "up", "--listen", "0.0.0.0'; x")
    assert "Traceback" not in str(refused.value)
    assert not (tmp_path / "pgdata").exists()
