"""Throwaway clusters for tests, benchmarks and screenshots: a server, a cluster with cerebro-db installed, a
coordinator with segment servers, a dashboard. Each is removed when its ``with`` block ends."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from cerebro_db import install
from cerebro_db.backends.multi_server import register_segments
from cerebro_db.cluster import LOOPBACK, ClusterConfig, LocalCluster, free_port, hand_to_server_user


@contextlib.contextmanager
def temporary_server(listen_addresses: str | None = None) -> Iterator[LocalCluster]:
    """A throwaway running cluster with its database created (nothing installed); removed afterwards.

    ``listen_addresses`` as for :meth:`LocalCluster.init` (beyond loopback: TLS).
    """
    root = Path(tempfile.mkdtemp(prefix="cerebro-"))
    hand_to_server_user(root)  # mode 0700: as root, the server user must reach its data directory inside
    cluster = LocalCluster(root)
    try:
        config = cluster.init(listen_addresses)
        cluster.start()
        install.create_database(config.dsn("postgres"), config.database)
        yield cluster
    finally:
        cluster.stop("immediate")
        shutil.rmtree(root, ignore_errors=True)


@contextlib.contextmanager
def temporary_cluster(segments: int = 2) -> Iterator[ClusterConfig]:
    """A throwaway cluster with cerebro-db installed and ``segments`` local segments; removed afterwards."""
    with temporary_server() as cluster:
        install.install(cluster.config.dsn(), segments=segments)
        yield cluster.config


@dataclass
class MultiServerCluster:
    coordinator: str
    servers: list[LocalCluster]
    passfile: Path


@contextlib.contextmanager
def temporary_multi_server(segments: int = 2, tls_address: str | None = None) -> Iterator[MultiServerCluster]:
    """A throwaway coordinator and ``segments`` segment servers on loopback ports, registered.

    With ``tls_address``, the servers also listen there, with TLS (self-signed), and are
    registered at it, verified against their certificates.
    """
    listen = f"{LOOPBACK},{tls_address}" if tls_address else None
    with temporary_cluster(segments=segments) as coordinator, contextlib.ExitStack() as stack:
        servers = [stack.enter_context(temporary_server(listen)) for _ in range(segments)]
        passfile = servers[0].root / "segments.pgpass"
        ca = None
        specs = [server.config.dsn() for server in servers]
        if tls_address:
            ca = servers[0].root / "segments-ca.pem"
            ca.write_bytes(b"".join(server.trust_file.read_bytes() for server in servers))
            specs = [spec.replace(f"@{LOOPBACK}:", f"@{tls_address}:") for spec in specs]
        register_segments(coordinator.dsn(), specs, passfile, ca)
        yield MultiServerCluster(coordinator.dsn(), servers, passfile)


@contextlib.contextmanager
def dashboard_server(dsn: str, timeout: float = 90) -> Iterator[str]:
    """``cerebro-db ui`` on a free port against ``dsn``; yields its URL once it serves."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "cerebro_db.cli", "ui", "--port", str(port)],
        env={**os.environ, "CEREBRO_DSN": dsn},
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    watchdog = threading.Timer(timeout, process.kill)  # a server that never comes up ends the read below
    watchdog.start()
    try:
        assert process.stdout is not None
        output = []
        for line in process.stdout:  # Streamlit announces the URL once it listens
            output.append(line)
            if f":{port}" in line and "URL" in line:
                break
        else:
            raise AssertionError("cerebro-db ui never served:\n" + "".join(output))
        watchdog.cancel()
        yield f"http://127.0.0.1:{port}"
    finally:
        watchdog.cancel()
        process.terminate()
        process.wait(timeout=30)
