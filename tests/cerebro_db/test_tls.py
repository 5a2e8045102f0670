"""TLS beyond loopback: a server listening on other addresses takes TLS + SCRAM only, never its superuser
from elsewhere, and the scheduler verifies segment servers against the CA it was given.

"Elsewhere" is this host's own subnet address (a connection to it comes from it, not from loopback);
127.0.0.2 is on loopback for the server (Linux gives it the source 127.0.0.1).
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from cerebro_db import sample_data
from cerebro_db.backends import multi_server
from cerebro_db.backends.multi_server import MembershipError, ServerSegment
from cerebro_db.cluster import LocalCluster
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import MultiServerCluster, temporary_multi_server, temporary_server
from tests.cerebro_db.test_cli import own_address
from tests.conftest import assert_nothing_stranded

TENANT = "tls_tenant"
TENANT_PASSWORD = "tenant-secret"


@pytest.fixture(scope="module")
def server() -> Iterator[LocalCluster]:
    """A server on loopback and this host's subnet address, with a non-superuser login role."""
    with temporary_server(f"127.0.0.1,{own_address()}") as cluster:
        with psycopg.connect(cluster.config.dsn(), autocommit=True) as conn:
            conn.execute(
                sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(TENANT), sql.Literal(TENANT_PASSWORD))
            )
        yield cluster


def _connect(cluster: LocalCluster, host: str, user: str = TENANT, **options: Any) -> psycopg.Connection[Any]:
    password = TENANT_PASSWORD if user == TENANT else cluster.config.password
    return psycopg.connect(
        host=host, port=cluster.config.port, user=user, password=password, dbname=cluster.config.database, **options
    )


def _verified(cluster: LocalCluster) -> dict[str, str]:
    return {"sslmode": "verify-ca", "sslrootcert": str(cluster.trust_file), "channel_binding": "require"}


def test_a_plain_connection_from_beyond_loopback_is_refused(server: LocalCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match="no pg_hba.conf entry .* no encryption|rejects .* no encr"):
        _connect(server, own_address(), sslmode="disable")


def test_tls_verified_against_the_servers_certificate_with_channel_binding(server: LocalCluster) -> None:
    with _connect(server, own_address(), **_verified(server)) as conn:
        row = conn.execute(
            "SELECT ssl, inet_client_addr() = %s::inet FROM pg_stat_ssl WHERE pid = pg_backend_pid()", [own_address()]
        ).fetchone()
        assert row == (True, True)
    with pytest.raises(psycopg.OperationalError, match="channel binding"):  # SCRAM-PLUS needs TLS: it was used
        _connect(server, "127.0.0.1", sslmode="disable", channel_binding="require")


def test_the_superuser_logs_in_on_loopback_only(server: LocalCluster) -> None:
    with pytest.raises(psycopg.OperationalError, match='rejects connection .* user "cerebro"'):
        _connect(server, own_address(), user=server.config.user, **_verified(server))
    with _connect(server, "127.0.0.1", user=server.config.user) as conn:
        assert conn.execute("SELECT current_setting('is_superuser')").fetchone() == ("on",)


def test_the_private_key_is_the_server_users_alone(server: LocalCluster) -> None:
    assert stat.S_IMODE((server.data_dir / "server.key").stat().st_mode) == 0o600
    assert b"PRIVATE KEY" not in server.trust_file.read_bytes()


def test_a_loopback_cluster_stays_without_tls() -> None:
    with temporary_server() as cluster, psycopg.connect(cluster.config.dsn()) as conn:
        assert conn.execute("SHOW ssl").fetchone() == ("off",)
        assert not cluster.trust_file.exists()


def test_a_segment_beyond_loopback_needs_a_ca() -> None:
    with pytest.raises(MembershipError, match="beyond loopback: give the CA bundle"):
        multi_server.secured("postgresql://cerebro@db1:5432/cerebro", None)
    assert "sslmode=verify-full" in multi_server.secured(
        "postgresql://cerebro@db1:5432/cerebro?sslmode=verify-full", Path("/ca.pem")
    )


@pytest.fixture(scope="module")
def tls_cluster() -> Iterator[MultiServerCluster]:
    """A coordinator and a segment server registered at 127.0.0.2 over verified TLS."""
    with temporary_multi_server(segments=1, tls_address="127.0.0.2") as started:
        yield started


def test_the_scheduler_trains_on_a_segment_server_over_tls(tls_cluster: MultiServerCluster) -> None:
    (dsn,) = multi_server.registered(tls_cluster.coordinator)
    assert dsn is not None and "@127.0.0.2:" in dsn
    assert "sslmode=verify-ca" in dsn and "channel_binding=require" in dsn
    with psycopg.connect(dsn, passfile=str(tls_cluster.passfile)) as conn:
        assert conn.execute("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()").fetchone() == (True,)
    with psycopg.connect(tls_cluster.coordinator, autocommit=True) as conn:
        x, y = sample_data.synthetic_tabular(120, 4, 3)
        sample_data.load_tabular_table(conn, "blobs_tls", x, y)
        conn.execute("SELECT * FROM prepare_dataset('blobs_tls', 'blobs_tls', 'label', '{f0,f1,f2,f3}')")
        conn.execute(
            "SELECT run_model_selection('blobs_tls', 'mlp', '{\"lr\": [0.01], \"hidden_units\": 8}', max_epochs => 1)"
        )
    Scheduler(tls_cluster.coordinator, idle_wait=0.2, passfile=tls_cluster.passfile).run(until_idle=True)
    assert_nothing_stranded(tls_cluster.coordinator)
    with psycopg.connect(tls_cluster.coordinator) as conn:
        assert conn.execute("SELECT count(*) FROM units WHERE segment = 0").fetchone() == (1,)


def test_a_segment_server_the_ca_did_not_sign_is_refused(tls_cluster: MultiServerCluster) -> None:
    """An impostor at a segment's address: its certificate is not in the scheduler's bundle."""
    (dsn,) = multi_server.registered(tls_cluster.coordinator)
    assert dsn is not None
    bundle = Path(str(conninfo_to_dict(dsn)["sslrootcert"]))
    with temporary_server("127.0.0.1,127.0.0.2") as impostor:
        impostor_spec = impostor.config.dsn().replace("@127.0.0.1:", "@127.0.0.2:")
        with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
            multi_server.register_segments(tls_cluster.coordinator, [impostor_spec], tls_cluster.passfile, bundle)
        assert multi_server.registered(tls_cluster.coordinator) == [dsn]  # nothing changed
        trusted = bundle.read_bytes()
        bundle.write_bytes(impostor.trust_file.read_bytes())  # as if the segment's server were replaced
        try:
            with pytest.raises(psycopg.OperationalError, match="certificate verify failed"):
                ServerSegment(0, dsn, passfile=str(tls_cluster.passfile))
        finally:
            bundle.write_bytes(trusted)
    ServerSegment(0, dsn, passfile=str(tls_cluster.passfile)).close()  # the genuine server passes
