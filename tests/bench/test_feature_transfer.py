"""bench/feature_transfer.py at its --quick size (3 configs, 1 epoch, a small base): the three runs complete, staged
materialization makes one pass per segment and split, the unstaged baseline one per layer, the naive one none, a
config that visited the segments in the same order in all three ends with the same accuracy, and the results file is
written."""

from __future__ import annotations

import csv

import feature_transfer
import pytest
from benchlib import RESULTS_DIR


@pytest.mark.slow
def test_the_quick_size_runs_and_counts_its_passes(capsys: pytest.CaptureFixture[str]) -> None:
    assert feature_transfer.main(["--quick"]) == 0
    printed = capsys.readouterr().out
    assert "PASS  (b) staged: one pass per segment and split: 4 passes" in printed
    assert "PASS  (c) per layer: a pass per layer: 12 passes" in printed
    assert "PASS  val accuracy identical across (a)-(c) where the order was the same" in printed
    with (RESULTS_DIR / "feature_transfer_quick.csv").open() as results:
        rows = list(csv.DictReader(results))
    assert {row["mode"] for row in rows} == {"off", "on", "unstaged"}
    assert len(rows) == 3 * len(feature_transfer.LAYERS)
    assert {row["layer"] for row in rows} == set(feature_transfer.LAYERS)
    assert all(float(row["materialize_s"]) > 0 for row in rows if row["mode"] != "off")
