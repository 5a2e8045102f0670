"""What the bench scripts share: running a timed workload, the Keras and worker-process baselines, the claim and
tenant probes, the schedule simulator and its fitting. The scripts in bench/ import from here, never each other."""

from __future__ import annotations

import sys
import time
from pathlib import Path

RESULTS_DIR = Path(__file__).resolve().parents[1] / "results"


def step(message: str) -> None:
    """A progress line on stderr (stdout is the script's report)."""
    print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)
