"""The example scripts run as is (with few rows and one epoch) under psql, with a scheduler training."""

from __future__ import annotations

import subprocess
import threading
from collections.abc import Iterator

import pytest

from cerebro_db.cli import psql_command
from cerebro_db.cluster import PG_BIN
from cerebro_db.scheduler import Scheduler
from tests import REPO_ROOT
from tests.conftest import assert_nothing_stranded

EXAMPLES = REPO_ROOT / "examples"
#: Rows each example loads in the test: enough for its splits and segments, quick to train.
ROWS = {"image.sql": 400, "text.sql": 300, "tabular.sql": 400, "transfer.sql": 600}


@pytest.fixture
def scheduler(dsn: str) -> Iterator[Scheduler]:
    running = Scheduler(dsn, idle_wait=0.2)
    thread = threading.Thread(target=running.run, name="examples-scheduler")
    thread.start()
    try:
        assert running.ready.wait(60), "the scheduler did not take the scheduler lock"
        yield running
    finally:
        running.stop()
        thread.join()


def test_every_example_is_tested() -> None:
    assert sorted(path.name for path in EXAMPLES.glob("*.sql")) == sorted(ROWS)


@pytest.mark.slow  # each trains two workloads for an epoch: 30 to 90 s
@pytest.mark.parametrize("example", sorted(ROWS))
def test_example_runs_as_is(dsn: str, scheduler: Scheduler, example: str) -> None:
    # As `cerebro-db psql` runs it: the password in psql's environment, not in its argv.
    argv, env = psql_command(dsn, ["-X", "-v", f"rows={ROWS[example]}", "-v", "epochs=1", "-f", f"examples/{example}"])
    for _ in range(2):  # a second run starts afresh
        result = subprocess.run(
            [str(PG_BIN / "psql"), *argv[1:]],
            env=env,
            cwd=REPO_ROOT,
            capture_output=True,
            text=True,
            timeout=600,
        )
        assert result.returncode == 0, result.stdout + result.stderr
        assert "ERROR" not in result.stderr, result.stderr
    assert "predicted_rows" in result.stdout
    assert "completed" in result.stdout, result.stdout
    assert_nothing_stranded(dsn)
