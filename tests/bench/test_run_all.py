"""bench/run_all.sh runs every benchmark, fails if any fails, and names the failed ones (scripts stubbed)."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
#: Every benchmark script (report.py writes bench/README.md from their results: it measures nothing).
SCRIPTS = sorted(path.stem for path in BENCH.glob("*.py") if path.stem != "report")


def run_all(tmp_path: Path, failing: set[str]) -> subprocess.CompletedProcess[str]:
    """run_all.sh in a copy of bench/ whose scripts only print their arguments; those in ``failing`` exit 3."""
    bench = tmp_path / "bench"
    (bench / "benchlib").mkdir(parents=True)
    shutil.copy(BENCH / "run_all.sh", bench)
    (bench / "benchlib" / "machine.py").write_text("print('cores: 2')\n")
    for name in SCRIPTS:
        status = 3 if name in failing else 0
        (bench / f"{name}.py").write_text(f"import sys\nprint({name!r}, sys.argv[1:])\nsys.exit({status})\n")
    env = {**os.environ, "PY": sys.executable}
    return subprocess.run(["bash", str(bench / "run_all.sh")], env=env, capture_output=True, text=True)


def test_every_script_runs_and_the_run_passes(tmp_path: Path) -> None:
    result = run_all(tmp_path, set())
    assert result.returncode == 0, result.stderr
    results = tmp_path / "bench" / "results"
    with open(results / "run_all_small.csv") as file:
        rows = list(csv.DictReader(file))
    assert sorted(r["script"] for r in rows) == SCRIPTS  # every benchmark, none twice
    assert {r["status"] for r in rows} == {"0"}
    assert (results / "approaches_small.txt").read_text() == "approaches ['--small']\n"
    assert (results / "machine_small.txt").read_text() == "cores: 2\n"


def test_a_miss_fails_the_run_after_the_others_ran(tmp_path: Path) -> None:
    result = run_all(tmp_path, {"hop_overhead", "scaling"})
    assert result.returncode == 1
    assert "FAILED (missed a target or crashed): hop_overhead scaling" in result.stderr
    with open(tmp_path / "bench" / "results" / "run_all_small.csv") as file:
        status = {r["script"]: r["status"] for r in csv.DictReader(file)}
    assert sorted(status) == SCRIPTS  # the scripts after the first failure still ran
    assert status["hop_overhead"] == "3" and status["scaling"] == "3" and status["workload"] == "0"
