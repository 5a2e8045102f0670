"""docker-compose.yml and the Dockerfile hold together (checked with docker-compose, no Docker engine)."""

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
from typing import Any

import pytest
import yaml

from tests import REPO_ROOT

SERVERS = {"coordinator", "segment1", "segment2"}
DASHBOARD_SECRET = "CEREBRO_DASHBOARD_PASSWORD"


def compose_config(*options: str, **env: str) -> subprocess.CompletedProcess[str]:
    """``docker-compose config`` on the repository's file, with only ``env`` of our variables set."""
    executable = shutil.which("docker-compose")
    assert executable, "docker-compose is missing: ./install.sh installs it"
    clean = {key: value for key, value in os.environ.items() if not key.startswith("CEREBRO_")}
    return subprocess.run(
        [executable, "--project-directory", str(REPO_ROOT), "-f", str(REPO_ROOT / "docker-compose.yml"), "config"]
        + list(options),
        env={**clean, **env},
        capture_output=True,
        text=True,
    )


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


@pytest.fixture(scope="module")
def services() -> dict[str, Any]:
    result = compose_config(CEREBRO_PASSWORD="not the default", CEREBRO_DASHBOARD_PASSWORD="the dashboard's")
    assert result.returncode == 0, result.stderr
    parsed: dict[str, Any] = yaml.safe_load(result.stdout)["services"]
    return parsed


def test_the_compose_file_validates_and_wants_a_password() -> None:
    result = compose_config("--quiet", CEREBRO_PASSWORD="x", CEREBRO_DASHBOARD_PASSWORD="y")
    assert result.returncode == 0, result.stderr
    refused = compose_config("--quiet", CEREBRO_DASHBOARD_PASSWORD="y")  # no default for servers every container
    assert refused.returncode != 0 and "set CEREBRO_PASSWORD" in refused.stderr  # can reach
    refused = compose_config("--quiet", CEREBRO_PASSWORD="x")
    assert refused.returncode != 0 and "set CEREBRO_DASHBOARD_PASSWORD" in refused.stderr


def test_servers_serve_with_a_health_check_and_their_own_volume(services: dict[str, Any]) -> None:
    assert services.keys() == SERVERS | {"scheduler", "dashboard"}
    volumes = set()
    for name in SERVERS:
        server = services[name]
        assert server["command"][:2] == ["cerebro-db", "serve"]
        assert "pg_isready" in " ".join(server["healthcheck"]["test"])
        volume, certs = server["volumes"]
        assert volume.startswith(f"{name}:/var/lib/cerebro")
        assert certs.startswith("certs:/certs") and not certs.endswith(":ro")
        volumes.add(volume)
    assert len(volumes) == len(SERVERS)


def test_every_server_publishes_its_certificate_and_clients_verify_it(services: dict[str, Any]) -> None:
    """The servers listen on 0.0.0.0: TLS only; each copies what verifies it to the shared volume."""
    for name in SERVERS:
        assert option(services[name]["command"], "--export-cert") == f"/certs/{name}.pem"
    for name in ("scheduler", "dashboard"):
        assert services[name]["volumes"] == ["certs:/certs:ro"]
        dsn = services[name]["environment"]["CEREBRO_DSN"]
        assert "sslmode=verify-ca" in dsn and "sslrootcert=/certs/coordinator.pem" in dsn
        assert "channel_binding=require" in dsn
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    assert any("install -d -o postgres -g postgres" in line and "/certs" in line for line in lines)


def test_the_scheduler_registers_every_segment_server_then_runs(services: dict[str, Any]) -> None:
    scheduler = services["scheduler"]
    script = scheduler["command"][-1]
    up, adduser, run = script.split(" && ")
    assert run == "exec cerebro-db scheduler"
    # The dashboard's role, a cerebro_user (no --admin), its password from the environment, not argv.
    assert shlex.split(adduser) == ["cerebro-db", "adduser", "cerebro_dashboard", "--password-env", DASHBOARD_SECRET]
    argv = shlex.split(up)
    assert argv[:2] == ["cerebro-db", "up"] and "--no-scheduler" in argv
    segments = {f"{name}:{option(services[name]['command'], '--port')}" for name in SERVERS - {"coordinator"}}
    assert sorted(option(argv, "--segments").split(",")) == sorted(segments)
    cas = [argv[i + 1] for i, arg in enumerate(argv) if arg == "--segment-ca"]
    assert sorted(cas) == sorted(
        option(services[name]["command"], "--export-cert") for name in SERVERS - {"coordinator"}
    )
    assert scheduler["depends_on"] == {name: {"condition": "service_healthy"} for name in SERVERS}
    assert scheduler["environment"]["CEREBRO_DSN"].startswith("postgresql://cerebro@coordinator:5432/")


def test_the_dashboard_is_published_on_8501(services: dict[str, Any]) -> None:
    dashboard = services["dashboard"]
    assert dashboard["command"][:4] == ["cerebro-db", "ui", "--address", "0.0.0.0"]
    assert any(port.endswith(":8501:8501/tcp") for port in dashboard["ports"])


def test_the_servers_and_the_scheduler_get_the_password(services: dict[str, Any]) -> None:
    for name in SERVERS | {"scheduler"}:
        assert services[name]["environment"]["CEREBRO_PASSWORD"] == "not the default"
        assert services[name]["environment"]["PGPASSWORD"] == "not the default"  # libpq's, for the clients
    assert services["scheduler"]["environment"][DASHBOARD_SECRET] == "the dashboard's"


def test_the_dashboard_logs_in_as_its_own_role_without_the_superusers_password(services: dict[str, Any]) -> None:
    environment = services["dashboard"]["environment"]
    assert environment["CEREBRO_DSN"].startswith("postgresql://cerebro_dashboard@coordinator:5432/")
    assert environment["PGPASSWORD"] == "the dashboard's"
    assert "not the default" not in environment.values()  # the superuser's password stays out of it
    assert services["dashboard"]["depends_on"]["scheduler"] == {"condition": "service_started"}


def test_the_docker_context_leaves_out_env_files() -> None:
    assert ".env" in (REPO_ROOT / ".dockerignore").read_text().splitlines()  # passwords stay out of the image


def test_the_dockerfile_refers_to_files_that_exist(services: dict[str, Any]) -> None:
    assert {service["build"]["context"] for service in services.values()} == {str(REPO_ROOT)}
    lines = (REPO_ROOT / "Dockerfile").read_text().splitlines()
    copied = [source for line in lines if line.startswith("COPY ") for source in line.split()[1:-1]]
    assert copied and all((REPO_ROOT / source).exists() for source in copied)
    assert any(line.startswith("RUN ./install.sh --no-dev") for line in lines)
    assert os.access(REPO_ROOT / "install.sh", os.X_OK)
