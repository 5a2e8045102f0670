"""``cerebro-db``: run the embedded cluster, the scheduler and the demo.

Commands that use a database use ``$CEREBRO_DSN`` if it is set, else the embedded cluster's.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo
from sqlalchemy import Connection, text
from sqlalchemy.exc import DBAPIError

from cerebro_db import client, install, migrate, sample_data, tensorboard
from cerebro_db.backends import multi_server
from cerebro_db.cluster import (
    PG_BIN,
    UI_DIR,
    Certificate,
    ClusterConfig,
    ClusterError,
    LocalCluster,
    default_home,
    write_private,
)
from cerebro_db.connection import connect, default_dsn, sqlalchemy_connection
from cerebro_db.predict import predict_on_segments
from cerebro_db.scheduler import Scheduler, SchedulerBusy
from cerebro_db.text_table import format_table

DEMO_TABLE = "public.fashion_mnist_train"  # named in full: the client search path has no public
DEMO_DATASET = "fashion"
DEMO_SPACE = {"lr": [0.001, 0.003], "batch_size": [64, 128]}


def _cluster() -> LocalCluster:
    return LocalCluster(default_home())


def without_password(dsn: str) -> tuple[str, str | None]:
    """``dsn`` without its password (libpq then asks a passfile or ``$PGPASSWORD``), and the password."""
    params = conninfo_to_dict(dsn)
    password = params.pop("password", None)
    return (make_conninfo("", **params) if password is not None else dsn), None if password is None else str(password)


def shown_dsn(show_password: bool = False) -> str:
    """The URL to print: ``$CEREBRO_DSN`` without its password, or the embedded cluster's naming its passfile."""
    if show_password:
        return default_dsn()
    if os.environ.get("CEREBRO_DSN"):
        return without_password(os.environ["CEREBRO_DSN"])[0]
    return _cluster().client_dsn()


def _scheduler_pid_file() -> Path:
    return default_home() / "scheduler.pid"


def _scheduler_pid() -> int | None:
    """The background scheduler's pid if it is alive."""
    path = _scheduler_pid_file()
    if not path.exists():
        return None
    pid = int(path.read_text())
    if not _alive(pid):
        path.unlink()
        return None
    return pid


def _alive(pid: int) -> bool:
    """Running, not a zombie: a killed scheduler lingers as one until its new parent reaps it."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


def _segments_passfile() -> Path:
    """Passwords of the segment servers (libpq passfile format), beside the cluster."""
    return default_home() / "segments.pgpass"


def _segments_ca() -> Path:
    """The CA bundle the scheduler verifies segment servers with (``up --segment-ca``), beside the cluster."""
    return default_home() / "segments-ca.pem"


def _init_cluster(args: argparse.Namespace) -> tuple[LocalCluster, ClusterConfig]:
    """The embedded cluster, created with the server options if new."""
    cluster = _cluster()
    if bool(args.ssl_cert) != bool(args.ssl_key) or (args.ssl_ca and not args.ssl_cert):
        raise SystemExit(f"cerebro-db {args.command}: --ssl-cert and --ssl-key go together (--ssl-ca with them)")
    certificate = Certificate(args.ssl_cert, args.ssl_key, args.ssl_ca) if args.ssl_cert else None
    return cluster, cluster.init(args.listen, args.port, certificate, args.remote_superuser)


def _segment_spec(value: str) -> int | list[str]:
    """``--segments``: a count of local segments, or segment servers ``host:port,...`` (or URLs)."""
    if value.isdigit():
        return int(value)
    specs = [spec.strip() for spec in value.split(",") if spec.strip()]
    if not specs:
        raise argparse.ArgumentTypeError(f"{value!r}: give a number or host:port,host:port,...")
    for spec in specs:  # before anything starts
        try:
            multi_server.parse_segment(spec)
        except multi_server.MembershipError as error:
            raise argparse.ArgumentTypeError(str(error)) from None
    return specs


def _start_cluster(args: argparse.Namespace) -> str:
    """Create (if new) and start the embedded cluster and its database; its URL."""
    cluster, config = _init_cluster(args)
    cluster.start()
    install.create_database(config.dsn("postgres"), config.database)
    return config.dsn()


def _register_segments(dsn: str, specs: list[str], ca_files: list[Path]) -> None:
    ca = _segments_ca() if ca_files else None
    try:
        if ca:
            ca.write_bytes(b"".join(path.read_bytes() for path in ca_files))  # a stable path for the scheduler
        changed = multi_server.register_segments(dsn, specs, _segments_passfile(), ca)
    except (multi_server.MembershipError, psycopg.Error, OSError) as error:
        raise SystemExit(f"cerebro-db up: {error}") from None
    for segment, location in enumerate(multi_server.registered(dsn)):
        print(f"segment {segment}: {location}")
    for name, segments in multi_server.datasets_beyond(dsn):
        print(
            f"warning: dataset {name} is spread over {segments} segments, more than are registered; "
            "prepare it again (prepare_dataset) before training on it"
        )
    if changed:
        _stop_scheduler()  # a running one serves the segments it found when it started


def cmd_up(args: argparse.Namespace) -> None:
    dsn = os.environ.get("CEREBRO_DSN") or _start_cluster(args)
    install.install(dsn, segments=args.segments if isinstance(args.segments, int) else None)
    print(f"cluster running at {shown_dsn()}")
    if isinstance(args.segments, list):
        _register_segments(dsn, args.segments, args.segment_ca)
    if args.scheduler and _scheduler_pid() is None:
        log_path = default_home() / "scheduler.log"
        if not log_path.exists():
            write_private(log_path, "")
        with open(log_path, "ab") as log_file:
            process = subprocess.Popen(
                [sys.executable, "-m", "cerebro_db.cli", "scheduler"],
                stdout=log_file,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        _scheduler_pid_file().write_text(str(process.pid))
        print(f"scheduler started (pid {process.pid}, log {log_path})")


def _install_schema(config: ClusterConfig) -> None:
    install.create_database(config.dsn("postgres"), config.database)
    install.install(config.dsn())


def cmd_serve(args: argparse.Namespace) -> None:
    """The embedded cluster's server in the foreground (a container's main process), schema installed."""
    cluster, config = _init_cluster(args)
    print(f"serving database {config.database} on {config.listen_addresses} port {config.port}", flush=True)
    if cluster.trust_file.exists():
        if args.export_cert:  # public: what clients verify this server with
            args.export_cert.write_bytes(cluster.trust_file.read_bytes())
        where = f" (copied to {args.export_cert})" if args.export_cert else ""
        print(f"TLS: clients verify this server with {cluster.trust_file}{where}", flush=True)
    raise SystemExit(cluster.serve(setup=_install_schema))


def _stop_scheduler() -> None:
    pid = _scheduler_pid()
    if pid is None:
        return
    os.kill(pid, signal.SIGTERM)  # finishes the units in flight, then exits
    deadline = time.monotonic() + 120
    while _scheduler_pid() is not None and time.monotonic() < deadline:
        time.sleep(0.2)
    if _scheduler_pid() is not None:
        os.kill(pid, signal.SIGKILL)
    _scheduler_pid_file().unlink(missing_ok=True)
    print("scheduler stopped")


def cmd_down(_args: argparse.Namespace) -> None:
    _stop_scheduler()
    _cluster().stop()
    print("cluster stopped")


def cmd_status(_args: argparse.Namespace) -> None:
    cluster = _cluster()
    if not cluster.exists() or not cluster.running():
        print("cluster: not running (cerebro-db up starts it)")
        return
    print(f"cluster: running at {cluster.client_dsn()}")
    pid = _scheduler_pid()
    print(f"scheduler: running (pid {pid})" if pid else "scheduler: not running")
    with sqlalchemy_connection(cluster.config.dsn()) as conn:
        segments = client.segments(conn)
        workloads = client.workloads(conn)
    print("segments: " + ", ".join(f"{row['segment']} ({row['location']})" for row in segments))
    print(
        format_table(
            ["workload", "name", "model", "status", "configs done", "configs"],
            [
                [
                    row["workload_id"],
                    row["name"] or "",
                    row["model"],
                    row["status"],
                    row["configs_completed"],
                    row["configs"],
                ]
                for row in reversed(workloads)  # oldest first
            ],
            right=[True, False, False, False, True, True],
        )
    )


def cmd_dsn(args: argparse.Namespace) -> None:
    print(shown_dsn(args.show_password))


def psql_command(dsn: str, extra: Sequence[str]) -> tuple[list[str], dict[str, str]]:
    """psql's argv and environment: the password goes in ``$PGPASSWORD``, never in argv (``ps`` shows argv
    to every local user; a process's environment only to its owner)."""
    conninfo, password = without_password(dsn)
    env = dict(os.environ)
    if password is not None:
        env["PGPASSWORD"] = password
    return ["psql", conninfo, *extra], env


def cmd_psql(args: argparse.Namespace) -> None:
    argv, env = psql_command(default_dsn(), args.extra)
    os.execve(str(PG_BIN / "psql"), argv, env)


def cmd_scheduler(_args: argparse.Namespace) -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")
    scheduler = Scheduler(
        default_dsn(), on_unit=lambda unit: print(_hop_line(unit), flush=True), passfile=_segments_passfile()
    )
    signal.signal(signal.SIGTERM, lambda *_: scheduler.stop())
    signal.signal(signal.SIGINT, lambda *_: scheduler.stop())
    try:
        scheduler.run()
    except (SchedulerBusy, migrate.SchemaVersionError) as refusal:
        raise SystemExit(f"cerebro-db scheduler: {refusal}") from None


def cmd_adduser(args: argparse.Namespace) -> None:
    password = None
    if args.password_env:
        password = os.environ.get(args.password_env)
        if not password:
            raise SystemExit(f"cerebro-db adduser: ${args.password_env} is not set")
    try:
        password = install.add_user(default_dsn(), args.name, admin=args.admin, password=password)
    except ValueError as error:
        raise SystemExit(f"cerebro-db adduser: {error}") from None
    role = "cerebro_admin" if args.admin else "cerebro_user"
    if args.password_env:
        print(f"{role} {args.name} can connect with the password in ${args.password_env}")
        return
    if os.environ.get("CEREBRO_DSN"):
        params = {**conninfo_to_dict(default_dsn()), "user": args.name, "password": password}
        params.pop("passfile", None)
        login = make_conninfo("", **params)
    else:
        login = dataclasses.replace(_cluster().config, user=args.name, password=password).dsn()
    print(f"{role} {args.name} can connect with: {login}")


def _hop_line(unit: dict[str, Any]) -> str:
    line = (
        f"config {unit['config_id']:>3}  epoch {unit['epoch']:>2}  segment {unit['segment']}  "
        f"{unit['rows']:>7,} rows  {unit['train_s']:6.2f} s  loss {unit['train_loss']:.4f}  "
        f"acc {unit['train_metric']:.4f}"
    )
    return line + ("  (epoch done, validated)" if unit["epoch_done"] else "")


def wait_for(conn: Connection, workload_id: int, *, poll: float = 0.5) -> None:
    """Print each committed hop and epoch of a workload until it is no longer running."""
    last_unit = 0
    started = time.monotonic()
    while True:
        for unit in client.units(conn, workload_id, after_unit=last_unit):
            last_unit = unit["unit_id"]
            val = unit["val_metric"]
            epoch_end = f"  -> val acc {val:.4f}" if val is not None else ""
            print(
                f"[{time.monotonic() - started:7.1f}s] config {unit['config_id']:>3}  "
                f"epoch {unit['epoch']}/{unit['max_epochs']}  segment {unit['segment']}  "
                f"{unit['rows']:>7,} rows in {unit['train_s']:5.2f} s  loss {unit['train_loss']:.4f}  "
                f"acc {unit['train_metric']:.4f}{epoch_end}",
                flush=True,
            )
        finished = client.workload_finished(conn, workload_id)
        conn.commit()  # end the read's transaction: never hold a snapshot while waiting
        if finished:
            return
        time.sleep(poll)


def _rounded(value: float | None) -> str | None:
    return None if value is None else f"{value:.4f}"


def print_leaderboard(conn: Connection, workload_id: int) -> None:
    """The workload's leaderboard, showing only the searched hyper-parameters of each config."""
    rows = [
        [
            row["rank"],
            row["config_id"],
            json.dumps(row["searched_params"]),
            row["status"],
            row["epochs_done"],
            _rounded(row["best_val_metric"]),
            _rounded(row["best_val_loss"]),
        ]
        for row in client.configs(conn, workload_id)
    ]
    print(
        format_table(
            ["rank", "config", "searched params", "status", "epochs", "best val acc", "val loss"],
            rows,
            right=[True, True, False, False, True, True, True],
        )
    )


def cmd_wait(args: argparse.Namespace) -> None:
    with sqlalchemy_connection() as conn:
        wait_for(conn, args.workload)
        print_leaderboard(conn, args.workload)


def cmd_export(args: argparse.Namespace) -> None:
    with sqlalchemy_connection() as conn:
        model = client.export_model(conn, args.config_id)
    path = Path(args.output or f"config_{args.config_id}.keras")
    path.write_bytes(model)
    print(f"config {args.config_id} -> {path} ({len(model):,} bytes; load it with keras.saving.load_model)")


def cmd_import_model(args: argparse.Namespace) -> None:
    """import_model from a file: refused here if over the server's limit (nothing uploaded), else read once and sent
    as one binary parameter (no hex text copy), then its layers printed."""
    path: Path = args.file
    try:
        size = path.stat().st_size
    except OSError as error:
        raise SystemExit(f"cerebro-db import-model: {error}") from None
    with sqlalchemy_connection() as conn:
        limit = conn.execute(text("SELECT cerebro.max_import_bytes()")).scalar_one()
        if size > limit:
            raise SystemExit(f"cerebro-db import-model: {path} has {size:,} bytes, over the import limit of {limit:,}")
        conn.exec_driver_sql(  # %(file)b: psycopg's binary format, which SQLAlchemy's text() cannot ask for
            "SELECT cerebro.import_model(%(name)s, %(file)b, %(description)s)",
            {"name": args.name, "file": path.read_bytes(), "description": args.description},
        )
        layers = conn.execute(text("SELECT * FROM cerebro.model_layers(:name)"), {"name": args.name}).all()
        conn.commit()
    print(f"{path} -> imported model {args.name!r} ({size:,} bytes, {len(layers)} layers)")
    print(
        format_table(
            ["#", "layer", "class", "output shape", "params", "trainable"],
            [[*row[:4], f"{row[4]:,}", "yes" if row[5] else "no"] for row in layers],
            right=[True, False, False, False, True, False],
        )
    )


def cmd_predict(args: argparse.Namespace) -> None:
    started = time.monotonic()
    rows = predict_on_segments(default_dsn(), args.config_id, args.source_table, args.id_column, args.output_table)
    print(f"{rows:,} rows predicted into {args.output_table} in {time.monotonic() - started:.1f} s")


def cmd_demo(args: argparse.Namespace) -> None:
    """Fashion-MNIST, 4 cnn configs x 3 epochs on the cluster's segments."""
    print(f"loading Fashion-MNIST ({sample_data.FASHION_MNIST_DIR}) into table {DEMO_TABLE} ...", flush=True)
    with connect() as loading:
        sample_data.load_fashion_mnist(loading, DEMO_TABLE)
    with sqlalchemy_connection() as conn:
        if not any(row["name"] == DEMO_DATASET for row in client.datasets(conn)):
            print(f"preparing dataset {DEMO_DATASET!r} ...", flush=True)
            for shard in client.prepare_dataset(
                conn, DEMO_DATASET, DEMO_TABLE, "label", feature_columns=["pixels"], feature_shape=[28, 28, 1]
            ):
                print(
                    f"  segment {shard['segment']}: {shard['train_rows']:,} training rows,"
                    f" {shard['validation_rows']:,} validation rows"
                )
            conn.commit()
        request = client.LaunchRequest(DEMO_DATASET, "cnn", DEMO_SPACE, max_epochs=args.epochs, name="demo", seed=42)
        workload_id = client.launch(conn, request)
        conn.commit()
        print(f"workload {workload_id}: cnn, grid {json.dumps(DEMO_SPACE)}, {args.epochs} epochs", flush=True)
        wait_for(conn, workload_id)
        print()
        print_leaderboard(conn, workload_id)


def cmd_ui(args: argparse.Namespace) -> None:
    """The Streamlit dashboard on the cluster (or on $CEREBRO_DSN), until interrupted."""
    env = {**os.environ, "CEREBRO_DSN": default_dsn()}
    argv = [sys.executable, "-m", "streamlit", "run", str(UI_DIR / "app.py"), "--server.headless=true"]
    argv += [f"--server.port={args.port}", f"--server.address={args.address}", "--browser.gatherUsageStats=false"]
    argv += ["--client.toolbarMode=minimal"]  # no "Deploy" button: this app runs beside its database
    print(f"dashboard at http://{args.address}:{args.port}", flush=True)
    os.execve(sys.executable, argv, env)


def cmd_tensorboard(args: argparse.Namespace) -> None:
    with sqlalchemy_connection() as conn:
        written = tensorboard.export(conn, args.workload, args.logdir)
    print(f"event files of workload {args.workload} written to {written}")
    print(f"view them with: {Path(sys.executable).parent / 'tensorboard'} --logdir {args.logdir}")


def _add_server_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--listen",
        help="listen addresses of a new cluster (default: 127.0.0.1; e.g. 0.0.0.0 in a container, which then"
        " also accepts password logins from its own subnets); its password is $CEREBRO_PASSWORD if set",
    )
    parser.add_argument("--port", type=int, help="port of a new cluster (default: a free one)")
    parser.add_argument(
        "--ssl-cert",
        type=Path,
        help="a new cluster beyond 127.0.0.1 serves TLS with this certificate (PEM; default: a self-signed one)",
    )
    parser.add_argument("--ssl-key", type=Path, help="the --ssl-cert's private key (PEM, copied with mode 0600)")
    parser.add_argument(
        "--ssl-ca", type=Path, help="the CA that signed --ssl-cert: what clients verify the server with"
    )
    parser.add_argument(
        "--remote-superuser",
        action="store_true",
        help="a new cluster beyond 127.0.0.1 also lets its superuser log in from its subnets (over TLS),"
        " for a scheduler on another host; by default the superuser logs in on loopback only",
    )


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="cerebro-db", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    up = commands.add_parser(
        "up",
        help="create/start the embedded cluster, install the schema, start the scheduler;"
        " with $CEREBRO_DSN set, install into that database instead of the embedded cluster",
    )
    up.add_argument(
        "--segments",
        type=_segment_spec,
        default=None,
        help="N: local segments of a new cluster (default: cores); or host:port,host:port,... "
        "(or postgresql:// URLs): segment servers, each a PostgreSQL 15 + plpython3u that gets the schema "
        "and holds its shards",
    )
    up.add_argument(
        "--no-scheduler",
        dest="scheduler",
        action="store_false",
        help="start no background scheduler (run `cerebro-db scheduler` yourself, e.g. in its own container)",
    )
    up.add_argument(
        "--segment-ca",
        type=Path,
        action="append",
        default=[],
        help="CA bundle (PEM) that verifies the segment servers' certificates (repeatable: a `cerebro-db serve`"
        " server's own self-signed server-ca.pem, for each); needed for servers beyond loopback, which are then"
        " reached with sslmode=verify-ca (verify-full if their URL says so) and channel_binding=require",
    )
    _add_server_options(up)
    up.set_defaults(run=cmd_up)
    serve = commands.add_parser(
        "serve",
        help="create the embedded cluster if needed, install the schema, then run PostgreSQL in the foreground"
        " until SIGTERM or SIGINT (fast shutdown); no scheduler. For containers: the coordinator and segment servers",
    )
    _add_server_options(serve)
    serve.add_argument(
        "--export-cert",
        type=Path,
        help="also copy the file clients verify this TLS server with (its server-ca.pem) to this path",
    )
    serve.set_defaults(run=cmd_serve)
    commands.add_parser("down", help="stop the scheduler and the cluster").set_defaults(run=cmd_down)
    commands.add_parser("status", help="cluster, scheduler and workloads").set_defaults(run=cmd_status)
    dsn = commands.add_parser(
        "dsn", help="print the cluster's libpq URL (its password stays in a passfile it names, mode 0600)"
    )
    dsn.add_argument("--show-password", action="store_true", help="print the URL with its password in it")
    dsn.set_defaults(run=cmd_dsn)
    commands.add_parser("psql", help="open psql on the cluster (further arguments go to psql)").set_defaults(
        run=cmd_psql
    )
    commands.add_parser("scheduler", help="run the scheduler in the foreground").set_defaults(run=cmd_scheduler)
    adduser = commands.add_parser("adduser", help="create a login role that sees only its own work")
    adduser.add_argument("name")
    adduser.add_argument(
        "--admin",
        action="store_true",
        help="may also register custom model scripts: superuser-equivalent (they run as the server's Python)",
    )
    adduser.add_argument(
        "--password-env",
        metavar="VAR",
        help="the password is in environment variable VAR (not argv); an existing role of the group gets it",
    )
    adduser.set_defaults(run=cmd_adduser)
    wait = commands.add_parser("wait", help="follow a workload until it finishes, then print its leaderboard")
    wait.add_argument("workload", type=int)
    wait.set_defaults(run=cmd_wait)
    export = commands.add_parser("export", help="write a config's latest model as a .keras file")
    export.add_argument("config_id", type=int)
    export.add_argument("-o", "--output", help="file to write (default: config_<id>.keras)")
    export.set_defaults(run=cmd_export)
    imports = commands.add_parser(
        "import-model", help="import a pretrained .keras file (checked in Keras' safe mode) and list its layers"
    )
    imports.add_argument("name", help="the name configs will know it by (unique across users)")
    imports.add_argument("file", type=Path, help="a Keras 3 .keras archive, as model.save writes it")
    imports.add_argument("--description")
    imports.set_defaults(run=cmd_import_model)
    predict = commands.add_parser("predict", help="predict(...) with its parts on the segments side by side")
    predict.add_argument("config_id", type=int)
    predict.add_argument("source_table")
    predict.add_argument("id_column")
    predict.add_argument("output_table")
    predict.set_defaults(run=cmd_predict)
    ui = commands.add_parser("ui", help="the Streamlit dashboard: launch, watch and steer workloads in a browser")
    ui.add_argument("--port", type=int, default=8501)
    ui.add_argument("--address", default="127.0.0.1", help="listen address (0.0.0.0 to serve other hosts)")
    ui.set_defaults(run=cmd_ui)
    board = commands.add_parser("tensorboard", help="write a workload's epoch metrics as TensorBoard event files")
    board.add_argument("workload", type=int)
    board.add_argument("--logdir", type=Path, default=tensorboard.default_logdir(), help="TensorBoard's --logdir")
    board.set_defaults(run=cmd_tensorboard)
    demo = commands.add_parser("demo", help="Fashion-MNIST model selection on the running cluster")
    demo.add_argument("--epochs", type=int, default=3)
    demo.set_defaults(run=cmd_demo)
    # psql's own options (-c, -f, ...) pass through untouched
    args, extra = parser.parse_known_args(argv)
    if extra and args.command != "psql":
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.extra = extra
    try:
        args.run(args)
    except ClusterError as error:  # the cluster's own complaint says what to do; no traceback
        raise SystemExit(f"cerebro-db {args.command}: {error}") from None
    except DBAPIError as error:  # the database's refusal and its hint, as the dashboard shows them
        raise SystemExit(f"cerebro-db {args.command}: {client.database_message(error)}") from None


if __name__ == "__main__":
    main()
