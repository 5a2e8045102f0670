"""The embedded PostgreSQL cluster: initdb, start, stop, serve, in a project-local directory.

By default the server listens on a free loopback port only, with password (SCRAM)
auth; the password lives in ``cluster.json`` (mode 0600) beside the data directory.
A cluster created with other listen addresses (a container's server) also accepts
SCRAM logins from its own subnets, over TLS only and not as the superuser (see
:func:`configure_tls`), and ``$CEREBRO_PASSWORD`` gives a new cluster a known password.
As root, the server runs as the ``postgres`` OS user (PostgreSQL refuses root).
PL/Python finds ``cerebro_plpy`` and TensorFlow through the PYTHONPATH the postmaster
is started with: the checkout's ``plpy/`` or, installed from the wheel, the venv's site-packages.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import signal
import socket
import subprocess
import sysconfig
from collections.abc import Callable
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from urllib.parse import quote

PG_BIN = Path(os.environ.get("CEREBRO_PG_BIN", "/usr/lib/postgresql/15/bin"))
PACKAGE_DIR = Path(__file__).resolve().parent
#: The source checkout this cerebro_db runs from (an editable install, the tests); None when installed from a wheel.
CHECKOUT = PACKAGE_DIR.parent if (PACKAGE_DIR.parent / "pyproject.toml").is_file() else None
#: Where the server's PL/Python imports cerebro_plpy from: the checkout's plpy/, else beside cerebro_db.
PLPY_PATH = CHECKOUT / "plpy" if CHECKOUT else PACKAGE_DIR.parent
#: The dashboard's scripts: the checkout's ui/, else the wheel's cerebro_ui beside cerebro_db.
UI_DIR = CHECKOUT / "ui" if CHECKOUT else PACKAGE_DIR.parent / "cerebro_ui"
SERVER_USER = "postgres"
LOOPBACK = "127.0.0.1"

SERVER_SETTINGS = {
    "unix_socket_directories": "''",
    "max_connections": "64",
    "shared_buffers": "'256MB'",
    # A big model's hop writes its whole state (resnet50: 270 MB) as WAL: with the default 1GB a checkpoint
    # would fall every few hops, and each makes the next writes log full pages again.
    "max_wal_size": "'4GB'",
    # The scheduler runs every unit in its own short transaction; anything that
    # sits idle in a transaction is a bug that would pin VACUUM, so end it.
    "idle_in_transaction_session_timeout": "'10min'",
    "log_line_prefix": "'%m [%p] %q%a '",
}


def default_home() -> Path:
    """Where the embedded cluster lives: ``$CEREBRO_HOME``, else ``.cerebro/`` in the checkout, or for an
    installed package in the current directory (the project's, like a virtualenv's ``.venv/``)."""
    if "CEREBRO_HOME" in os.environ:
        return Path(os.environ["CEREBRO_HOME"])
    return (CHECKOUT or Path.cwd()) / ".cerebro"


class ClusterError(RuntimeError):
    pass


@dataclass(frozen=True)
class Certificate:
    """The operator's server certificate and key (PEM), and the CA that signed it if not self-signed."""

    cert: Path
    key: Path
    ca: Path | None = None


@dataclass
class ClusterConfig:
    port: int
    password: str
    user: str = "cerebro"
    database: str = "cerebro"
    listen_addresses: str = LOOPBACK

    def dsn(self, database: str | None = None, *, passfile: Path | None = None) -> str:
        """The libpq URL; with ``passfile``, the password stays in that file (a URL one may print or pass on)."""
        credentials = quote(self.user, safe="") + ("" if passfile else f":{quote(self.password, safe='')}")
        url = f"postgresql://{credentials}@{LOOPBACK}:{self.port}/{quote(database or self.database, safe='')}"
        return f"{url}?passfile={quote(str(passfile), safe='/')}" if passfile else url

    def passfile_entry(self) -> str:
        """This cluster's line of a libpq passfile (any database)."""
        fields = (LOOPBACK, str(self.port), "*", self.user, self.password)
        return ":".join(field if field == "*" else field.replace("\\", "\\\\").replace(":", "\\:") for field in fields)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port


def _as_server_user(argv: list[str]) -> list[str]:
    return ["runuser", "-u", SERVER_USER, "--", *argv] if os.geteuid() == 0 else argv


def write_private(path: Path, content: str | bytes) -> None:
    """Write ``path`` readable by its owner only, from the moment it exists (no window at the umask's mode)."""
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(descriptor, 0o600)  # a file that existed keeps its mode through os.open
    with os.fdopen(descriptor, "wb" if isinstance(content, bytes) else "w") as file:
        file.write(content)


def hand_to_server_user(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SERVER_USER, SERVER_USER)


def server_environment() -> dict[str, str]:
    """The postmaster's environment: where PL/Python finds our code and TensorFlow (the venv's packages;
    then ``$PYTHONPATH``'s, as for this process: PL/Python runs the same interpreter)."""
    env = dict(os.environ)
    paths = [
        str(PLPY_PATH),
        sysconfig.get_paths()["purelib"],
        *filter(None, env.get("PYTHONPATH", "").split(os.pathsep)),
    ]
    env["PYTHONPATH"] = os.pathsep.join(paths)
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    env["OMP_NUM_THREADS"] = "1"
    return env


class LocalCluster:
    def __init__(self, root: Path) -> None:
        self.root = root
        self.data_dir = root / "pgdata"
        self.log_file = root / "postgres.log"
        self.config_file = root / "cluster.json"
        #: What clients beyond loopback trust (``sslrootcert``): the CA, or the self-signed certificate.
        self.trust_file = root / "server-ca.pem"
        #: The superuser's password for clients (libpq passfile): `cerebro-db dsn` names it instead of printing it.
        self.passfile = root / "pgpass"

    @property
    def config(self) -> ClusterConfig:
        if not self.config_file.exists():
            raise ClusterError(f"no cluster at {self.root}; run `cerebro-db up` first")
        return ClusterConfig(**json.loads(self.config_file.read_text()))

    def exists(self) -> bool:
        return (self.data_dir / "PG_VERSION").exists()

    def init(
        self,
        listen_addresses: str | None = None,
        port: int | None = None,
        certificate: Certificate | None = None,
        remote_superuser: bool = False,
    ) -> ClusterConfig:
        """initdb a new cluster (idempotent: an existing one is kept).

        A new cluster listens on ``listen_addresses`` (default: loopback only) at ``port``
        (default: a free one); its password is ``$CEREBRO_PASSWORD``, else a random one.
        Beyond loopback it serves TLS with ``certificate``, else with a self-signed one, and the
        superuser logs in on loopback only unless ``remote_superuser``.
        """
        if self.exists():
            config = self.config
            wanted = (port or config.port, listen_addresses or config.listen_addresses)
            if wanted != (config.port, config.listen_addresses) or certificate or remote_superuser:
                raise ClusterError(
                    f"the cluster at {self.root} listens on {config.listen_addresses} port {config.port}:"
                    " --listen, --port, --ssl-cert and --remote-superuser apply to a new cluster only"
                )
            return config
        # It goes into postgresql.auto.conf quoted: host names, addresses, '*', commas only.
        if listen_addresses is not None and not re.fullmatch(r"[\w.:*,\-]+", listen_addresses):
            raise ClusterError(f"--listen {listen_addresses!r}: give host names or addresses, comma-separated, or *")
        if (certificate or remote_superuser) and (listen_addresses or LOOPBACK) == LOOPBACK:
            raise ClusterError("--ssl-cert and --remote-superuser are for a cluster beyond 127.0.0.1: add --listen")
        if not self.root.exists():
            self.root.mkdir(mode=0o700, parents=True)
            hand_to_server_user(self.root)  # as root, the server user must reach its data directory inside
        config = ClusterConfig(
            port=port or free_port(),
            password=os.environ.get("CEREBRO_PASSWORD") or secrets.token_urlsafe(18),
            listen_addresses=listen_addresses or LOOPBACK,
        )
        self.data_dir.mkdir(mode=0o700, exist_ok=True)
        hand_to_server_user(self.data_dir)
        password_file = self.root / "initdb.pw"
        write_private(password_file, config.password)
        hand_to_server_user(password_file)
        try:
            self._run(
                [
                    str(PG_BIN / "initdb"),
                    "-D",
                    str(self.data_dir),
                    "-U",
                    config.user,
                    f"--pwfile={password_file}",
                    "--auth-host=scram-sha-256",
                    "--auth-local=peer",
                    "-E",
                    "UTF8",
                    "--locale=C.UTF-8",
                ]
            )
        finally:
            password_file.unlink()
        settings = {**SERVER_SETTINGS, "listen_addresses": f"'{config.listen_addresses}'", "port": str(config.port)}
        with open(self.data_dir / "postgresql.auto.conf", "a") as conf:
            conf.writelines(f"{key} = {value}\n" for key, value in settings.items())
        if config.listen_addresses != LOOPBACK:
            configure_tls(self.data_dir, self.trust_file, certificate)
            allow_beyond_loopback(self.data_dir / "pg_hba.conf", config.user, remote_superuser)
        write_private(self.config_file, json.dumps(asdict(config)))
        write_private(self.passfile, config.passfile_entry() + "\n")
        return config

    def client_dsn(self) -> str:
        """The superuser's URL without its password, which libpq reads from :attr:`passfile`."""
        config = self.config
        if not self.passfile.exists():  # a cluster made before passfiles
            write_private(self.passfile, config.passfile_entry() + "\n")
        return config.dsn(passfile=self.passfile)

    def running(self) -> bool:
        result = subprocess.run(
            _as_server_user([str(PG_BIN / "pg_ctl"), "status", "-D", str(self.data_dir)]),
            capture_output=True,
        )
        return result.returncode == 0

    def start(self, options: str = "") -> None:
        """Start the server in the background (if it is not running); ``options`` go to postgres."""
        if self.running():
            return
        if not self.log_file.exists():
            write_private(self.log_file, "")
        hand_to_server_user(self.log_file)
        self._run(
            [str(PG_BIN / "pg_ctl"), "start", "-w", "-t", "60", "-D", str(self.data_dir), "-l", str(self.log_file)]
            + ["-o", options],
            env=server_environment(),
        )

    def serve(self, setup: Callable[[ClusterConfig], None]) -> int:
        """Run the server in the foreground until it exits; returns its exit status.

        ``setup`` runs first, against the server started on a free loopback port: nothing
        else (a health check, another container) can connect before it is done. Then the
        server runs on its own addresses as this process's child, and SIGTERM or SIGINT
        stop it with a fast shutdown (PostgreSQL's own SIGTERM waits for every client,
        a scheduler included, to leave). Its log goes to stderr.
        """
        if self.running():
            raise ClusterError(f"the cluster at {self.root} is already running (`cerebro-db down` stops it)")
        private = replace(self.config, port=free_port(), listen_addresses=LOOPBACK)
        self.start(f"-c listen_addresses={private.listen_addresses} -c port={private.port}")
        try:
            setup(private)
        finally:
            self.stop()
        as_root = os.geteuid() == 0
        # Popen switches the user itself: runuser would SIGKILL the server 2 s after passing a signal on.
        server = subprocess.Popen(
            [str(PG_BIN / "postgres"), "-D", str(self.data_dir)],
            env=server_environment(),
            user=SERVER_USER if as_root else None,
            group=SERVER_USER if as_root else None,
            extra_groups=[] if as_root else None,
        )
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, lambda *_: server.send_signal(signal.SIGINT))
        return server.wait()

    def stop(self, mode: str = "fast") -> None:
        if self.exists() and self.running():
            self._run([str(PG_BIN / "pg_ctl"), "stop", "-w", "-m", mode, "-D", str(self.data_dir)])

    def _run(self, argv: list[str], env: dict[str, str] | None = None) -> None:
        result = subprocess.run(_as_server_user(argv), capture_output=True, text=True, env=env)
        if result.returncode != 0:
            log_tail = self.log_file.read_text()[-2000:] if self.log_file.exists() else ""
            raise ClusterError(f"{Path(argv[0]).name} failed: {result.stderr.strip()}\n{log_tail}")


def configure_tls(data_dir: Path, trust_file: Path, certificate: Certificate | None) -> None:
    """``ssl = on`` with the operator's ``certificate`` or a new self-signed one (``openssl``), the
    key 0600 from its creation; ``trust_file`` gets what clients verify the server with."""
    cert, key = data_dir / "server.crt", data_dir / "server.key"
    if certificate:
        for source in (certificate.cert, certificate.key, *([certificate.ca] if certificate.ca else [])):
            if not source.is_file():
                raise ClusterError(f"{source}: no such certificate or key file")
        write_private(key, certificate.key.read_bytes())
        cert.write_bytes(certificate.cert.read_bytes())
        trust_file.write_bytes((certificate.ca or certificate.cert).read_bytes())
    else:
        write_private(key, _openssl(["genpkey", "-algorithm", "EC", "-pkeyopt", "ec_paramgen_curve:P-256"]))
        host = socket.gethostname()
        cert.write_bytes(
            _openssl(
                ["req", "-new", "-x509", "-key", str(key), "-days", "3650", "-subj", f"/CN={host}"]
                + ["-addext", f"subjectAltName=DNS:{host},DNS:localhost,IP:127.0.0.1"]
            )
        )
        trust_file.write_bytes(cert.read_bytes())
    for path in (cert, key):
        hand_to_server_user(path)
    with open(data_dir / "postgresql.auto.conf", "a") as conf:
        conf.write("ssl = on\n")


def allow_beyond_loopback(hba_file: Path, superuser: str, remote_superuser: bool) -> None:
    """Let in the hosts of the server's own subnets (a container network's peers, the host through a
    published port): by password, over TLS only, and not as the superuser, who logs in on loopback
    (initdb's rules above these) or not at all, unless ``remote_superuser`` (a scheduler elsewhere
    that needs the schema owner's rights)."""
    with open(hba_file, "a") as hba:
        if not remote_superuser:
            hba.write(f'host all "{superuser}" all reject\n')
        hba.write("hostssl all all samenet scram-sha-256\n")


def _openssl(argv: list[str]) -> bytes:
    """``openssl`` (Debian's CLI) with its PEM output on stdout."""
    executable = shutil.which("openssl")
    if executable is None:
        raise ClusterError("openssl is missing: install it (apt-get install openssl) or give --ssl-cert/--ssl-key")
    result = subprocess.run([executable, *argv], capture_output=True)
    if result.returncode != 0:
        raise ClusterError(f"openssl {argv[0]} failed: {result.stderr.decode(errors='replace').strip()}")
    return result.stdout
