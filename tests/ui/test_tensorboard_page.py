"""TensorBoard inside the dashboard: the export, the one TensorBoard process, and the page that shows it."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

from cerebro_db import client, tensorboard, tensorboard_server
from cerebro_db.cluster import free_port
from cerebro_db.connection import sqlalchemy_connection
from tests.conftest import run_until_idle, unique
from tests.ui.conftest import named_workload, open_page

Session = psycopg.Connection[Any]


def steps(run: Path) -> dict[str, list[int]]:
    """Each tag's steps in the run's event files, in file order (a duplicate shows twice)."""
    accumulator = EventAccumulator(str(run))
    accumulator.Reload()
    return {tag: [event.step for event in accumulator.Tensors(tag)] for tag in accumulator.Tags()["tensors"]}


def tensorboards_on(port: int) -> list[int]:
    """Pids of live TensorBoards this module's start() runs on ``port`` (zombies are not alive)."""
    found = []
    for proc in Path("/proc").iterdir():
        try:
            argv = (proc / "cmdline").read_bytes().split(b"\0")
            state = (proc / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except (OSError, IndexError):
            continue
        if b"cerebro_db.tensorboard_server" in argv and str(port).encode() in argv and state != "Z":
            found.append(int(proc.name))
    return found


def until(check: Any, timeout: float, what: str) -> Any:
    """``check()``'s first truthy value, polled until ``timeout`` seconds; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        result = check()
        if result:
            return result
        time.sleep(0.5)  # poll interval
    raise AssertionError(f"not within {timeout} s: {what}")


def runs(port: int) -> list[str]:
    try:
        with urllib.request.urlopen(f"http://localhost:{port}/data/runs", timeout=5) as answer:
            found: list[str] = json.load(answer)
            return found
    except OSError:
        return []


@pytest.fixture
def taken_port() -> Iterator[int]:
    """A port another program listens on."""
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        yield other.getsockname()[1]


def test_names_are_path_safe_and_filtered_per_workload() -> None:
    assert tensorboard.workload_dir(12, "my run: lr/bs ≥ 2") == "w12-my-run-lr-bs-2"
    assert tensorboard.workload_dir(12, "../..") == "w12"
    assert tensorboard.workload_dir(12, None) == "w12"
    pattern = re.compile(tensorboard.run_filter([12, 3]))
    assert pattern.match("w12-my-run/config-5/train") and pattern.match("w3/config-1/validation")
    assert not pattern.match("w123-other/config-5/train") and not pattern.match("w1-x/config-5/train")


def test_settings_from_the_environment() -> None:
    local = tensorboard_server.Settings.from_env({})
    assert (local.url(None), local.url("127.0.0.1"), local.url("::1")) == (
        "http://localhost:6006/",
        "http://127.0.0.1:6006/",  # the dashboard's own host: a frame from another site cannot load its data
        "http://[::1]:6006/",
    )
    remote = tensorboard_server.Settings.from_env(
        {"CEREBRO_TENSORBOARD_PORT": "7000", "CEREBRO_TENSORBOARD_HOST": "gpu1", "CEREBRO_TENSORBOARD_ADDRESS": "::"}
    )
    assert (remote.url("127.0.0.1"), remote.address) == ("http://gpu1:7000/", "::")
    with pytest.raises(ValueError, match="CEREBRO_TENSORBOARD_PORT is 'x'"):
        tensorboard_server.Settings.from_env({"CEREBRO_TENSORBOARD_PORT": "x"})


def test_port_in_use(taken_port: int) -> None:
    assert tensorboard_server.port_in_use(taken_port)
    assert not tensorboard_server.port_in_use(free_port())


def test_export_again_after_an_epoch_rewrites_without_duplicate_steps(
    conn: Session, dsn: str, fashion_2seg: str, tmp_path: Path
) -> None:
    workload, config = named_workload(conn, fashion_2seg, "export twice", epochs=2)
    run_until_idle(dsn, max_units=2)  # epoch 1 on both segments
    exporter = tensorboard.Exporter(tmp_path)
    with sqlalchemy_connection(dsn) as db:
        rows = client.workloads(db, workload)
        assert exporter.refresh(db, rows) == [workload]
        assert exporter.refresh(db, rows) == []  # nothing new: no rewrite
    run_until_idle(dsn)
    with sqlalchemy_connection(dsn) as db:
        assert exporter.refresh(db, client.workloads(db, workload)) == [workload]
        tensorboard.export(db, workload, tmp_path)  # once more by hand (the CLI): still no duplicate
    workload_dir = tmp_path / f"w{workload}-export-twice"
    assert [path.name for path in tmp_path.iterdir()] == [workload_dir.name]
    for split in ("train", "validation"):
        assert steps(workload_dir / f"config-{config}" / split) == {"loss": [1, 2], "accuracy": [1, 2]}
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_tensorboard_serves_the_export_and_ends_with_its_handle(
    conn: Session, dsn: str, fashion_2seg: str, tmp_path: Path
) -> None:
    workload, config = named_workload(conn, fashion_2seg, "served", epochs=1)
    run_until_idle(dsn)
    with sqlalchemy_connection(dsn) as db:
        tensorboard.export(db, workload, tmp_path / "logs")
    port = free_port()
    board = tensorboard_server.start(tmp_path / "logs", port)
    try:
        run = f"w{workload}-served/config-{config}/validation"
        until(lambda: run in runs(port), 120, f"TensorBoard lists {run}")
        assert board.serving() and tensorboards_on(port) == [board.process.pid]
    finally:
        board.stop()
    assert board.process.poll() is not None and not tensorboards_on(port)
    assert not tensorboard_server.port_in_use(port)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_tensorboard_ends_when_the_process_that_started_it_is_killed(tmp_path: Path) -> None:
    port = free_port()
    starter = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time; from pathlib import Path; from cerebro_db import tensorboard_server as t;"
            "t.start(Path(sys.argv[1]), int(sys.argv[2])); print('started', flush=True); time.sleep(600)",
            str(tmp_path / "logs"),
            str(port),
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    assert starter.stdout is not None and starter.stdout.readline() == "started\n"
    [board] = until(lambda: tensorboards_on(port), 30, "the TensorBoard process exists")
    starter.send_signal(signal.SIGKILL)  # no atexit, no cleanup: only the closed pipe tells it
    starter.wait()
    until(lambda: not tensorboards_on(port), 60, f"TensorBoard {board} exits after its starter was killed")


def test_a_taken_port_says_what_to_do_and_starts_nothing(
    conn: Session, fashion_2seg: str, taken_port: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CEREBRO_HOME", str(tmp_path))
    monkeypatch.setenv("CEREBRO_TENSORBOARD_PORT", str(taken_port))
    workload, _ = named_workload(conn, fashion_2seg, "port taken", epochs=1)
    app = open_page("tensorboard_logs", workload=str(workload))
    [error] = [e.value for e in app.error]
    assert f"Port {taken_port} is taken by another program" in error and "CEREBRO_TENSORBOARD_PORT" in error
    assert not app.get("iframe") and not tensorboards_on(taken_port)
    assert "tensorboard --logdir" in app.code[0].value  # the manual way is still offered
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])


def test_page_exports_and_shows_tensorboard_in_an_iframe_restarting_it_when_it_died(
    conn: Session, dsn: str, fashion_2seg: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    port = free_port()
    monkeypatch.setenv("CEREBRO_HOME", str(tmp_path))  # where the default logdir lives
    monkeypatch.setenv("CEREBRO_TENSORBOARD_PORT", str(port))
    name = unique("tb page")
    workload, config = named_workload(conn, fashion_2seg, name, epochs=1)
    run_until_idle(dsn)
    app = open_page("tensorboard_logs", workload=str(workload))
    try:
        assert not app.exception, app.exception
        assert app.multiselect(key="tensorboard_workloads").value == [workload]
        assert f"#{workload} {name} (completed)" in app.multiselect(key="tensorboard_workloads").options
        [frame] = app.get("iframe")
        assert frame.proto.src == f"http://localhost:{port}/?runFilter=%5Ew%28{workload}%29%5B-%2F%5D"
        run = f"w{workload}-{name.replace(' ', '-')}/config-{config}/train"
        assert (tmp_path / "tensorboard" / run).is_dir() and run in runs(port)  # the page waited for it
        assert f"cerebro-db tensorboard {workload}\n" in app.code[0].value
        assert f"tensorboard --logdir {tmp_path / 'tensorboard'}" in app.code[0].value

        [first] = tensorboards_on(port)
        app.run()
        assert tensorboards_on(port) == [first]  # one per server, not per run
        os.kill(first, signal.SIGKILL)
        os.waitpid(first, 0)  # gone for good (the page's poll() sees what this reaped as ended, too)
        app.run()
        assert not app.exception, app.exception
        [second] = tensorboards_on(port)
        assert second != first and run in runs(port)
    finally:
        for pid in tensorboards_on(port):
            os.kill(pid, signal.SIGTERM)
    conn.execute("DELETE FROM workloads WHERE workload_id = %s", [workload])
