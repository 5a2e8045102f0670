"""What the benchmarks ran on: CPU, cores, memory, OS and the versions that matter (bench/run_all.sh keeps it).

.venv/bin/python bench/benchlib/machine.py
"""

from __future__ import annotations

import os
import platform
import subprocess
from importlib import metadata
from pathlib import Path

PG_BIN = Path(os.environ.get("CEREBRO_PG_BIN", "/usr/lib/postgresql/15/bin"))  # as cerebro_db.cluster


def _first(path: str, key: str, separator: str = ":") -> str:
    """The value of the first ``key<separator>value`` line of ``path``, or "?"."""
    try:
        lines = Path(path).read_text().splitlines()
    except OSError:
        return "?"
    found = (line.split(separator, 1)[1].strip() for line in lines if line.startswith(key) and separator in line)
    return next(found, "?")


def _version(*packages: str) -> str:
    """The installed version of the first of ``packages`` found (TensorFlow ships as tensorflow or tensorflow-cpu)."""
    for package in packages:
        try:
            return metadata.version(package)
        except metadata.PackageNotFoundError:
            continue
    return "-"


def describe() -> list[tuple[str, str]]:
    try:
        postgres = subprocess.run([str(PG_BIN / "postgres"), "--version"], capture_output=True, text=True).stdout
    except OSError:
        postgres = "?"
    memory_kib = _first("/proc/meminfo", "MemTotal").split()[0]
    return [
        ("cpu", _first("/proc/cpuinfo", "model name")),
        ("cores", str(os.cpu_count())),
        ("memory GiB", f"{int(memory_kib) / 2**20:.0f}" if memory_kib.isdigit() else "?"),
        ("os", _first("/etc/os-release", "PRETTY_NAME", "=").strip('"')),
        ("postgresql", postgres.strip().removeprefix("postgres (PostgreSQL) ")),
        ("python", platform.python_version()),
        ("tensorflow", _version("tensorflow", "tensorflow-cpu")),
        ("keras", _version("keras")),
        ("numpy", _version("numpy")),
    ]


if __name__ == "__main__":
    for key, value in describe():
        print(f"{key}: {value}")
