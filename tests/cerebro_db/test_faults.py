"""Faults injected into a real running workload: it still finishes exactly as an undisturbed run would."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest

from cerebro_db import sample_data
from cerebro_db.cluster import LocalCluster
from cerebro_db.testing import faults
from tests.conftest import FASHION_ROWS, prepare_fashion


@pytest.fixture(scope="module")
def home() -> Iterator[Path]:
    """A cluster and background scheduler started by ``cerebro-db up``, as users run them."""
    root = Path(tempfile.mkdtemp(prefix="cerebro-faults-"))
    root.chmod(0o755)
    try:
        faults.cli(root, "up", "--segments", "2")
        yield root
    finally:
        faults.cli(root, "down")
        shutil.rmtree(root, ignore_errors=True)


@pytest.fixture(scope="module")
def dataset(home: Path) -> str:
    dsn = LocalCluster(home).config.dsn()
    with psycopg.connect(dsn) as conn:
        sample_data.load_fashion_mnist(conn, "fashion_small", limit=FASHION_ROWS)
    return prepare_fashion(dsn, "fashion_small", 2)


@pytest.mark.slow
@pytest.mark.parametrize("fault", list(faults.FAULTS))
def test_workload_survives_the_fault_exactly(home: Path, dataset: str, fault: str) -> None:
    outcome = faults.run_scenario(home, dataset, fault, "first epoch")
    assert outcome.completed
    assert outcome.epochs_lost == 0
    assert outcome.invariant_violations == []
    assert outcome.units_rerun >= 1, "the unit in flight at the fault was neither rolled back nor run again"
    assert outcome.weights_identical


def test_a_second_scheduler_refuses_to_start_and_says_why(home: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "cerebro_db.cli", "scheduler"],
        env={**os.environ, "CEREBRO_HOME": str(home)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 1
    assert "another cerebro-db scheduler is running against this database" in result.stderr
    assert "Traceback" not in result.stderr
