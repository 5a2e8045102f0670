"""The code stays ruff- and mypy-clean."""

from __future__ import annotations

import subprocess
import sys

from cerebro_db.cluster import REPO_ROOT


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", *argv], cwd=REPO_ROOT, capture_output=True, text=True)


def test_ruff() -> None:
    for command in (("ruff", "check", "."), ("ruff", "format", "--check", ".")):
        result = run(*command)
        assert result.returncode == 0, result.stdout + result.stderr


def test_mypy() -> None:
    result = run("mypy")
    assert result.returncode == 0, result.stdout + result.stderr
