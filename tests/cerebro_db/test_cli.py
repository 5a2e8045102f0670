"""The CLI as users run it: up (cluster + background scheduler), wait, status, demo, down."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cerebro_db import sample_data


def cli(home: Path, *args: str, timeout: float = 600) -> str:
    result = subprocess.run(
        [sys.executable, "-m", "cerebro_db.cli", *args],
        env={**os.environ, "CEREBRO_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


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


def test_up_runs_a_background_scheduler_that_trains_a_workload(home: Path) -> None:
    dsn = cli(home, "dsn").strip()
    assert cli(home, "up").count("scheduler started") == 0  # idempotent: the scheduler is already alive
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
    out = cli(home, "wait", str(workload[0]))
    assert out.count("-> val acc") == 4  # 2 configs x 2 epochs, each validated once
    assert re.search(r"^ *1 \| +\d+ \| \{.*\} +\| completed +\| +2 \|", out, re.M), out
    assert "scheduler: running" in cli(home, "status")
    assert cli(home, "psql", "-Atc", "SELECT count(*) FROM epoch_metrics").strip() == "4"  # psql's own options pass


def test_export_writes_a_keras_file_of_a_trained_config(home: Path, tmp_path: Path) -> None:
    with psycopg.connect(cli(home, "dsn").strip()) as conn:
        row = conn.execute("SELECT min(config_id) FROM configs WHERE status = 'completed'").fetchone()
    assert row is not None and row[0] is not None, "test_up_runs_a_background_scheduler... trains the configs"
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
