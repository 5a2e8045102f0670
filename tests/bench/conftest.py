"""The bench scripts import their shared code as ``benchlib`` (bench/benchlib/): make ``bench/`` importable."""

from __future__ import annotations

import sys
from pathlib import Path

BENCH = Path(__file__).resolve().parents[2] / "bench"
if str(BENCH) not in sys.path:
    sys.path.insert(0, str(BENCH))
