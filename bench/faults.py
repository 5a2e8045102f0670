"""Fault matrix: every fault kind at every injection point, each into a real running workload.

For each (fault, point) it launches a workload (2 small ``cnn`` configs x 2 epochs on 2
segments) on a cluster that ``cerebro-db up`` started in a throwaway home, waits until a
unit of that epoch is in flight, injects the fault, recovers as an operator would
(``cerebro-db up``), waits for the workload to finish, and checks it
(:mod:`cerebro_db.testing.faults`, :mod:`cerebro_db.testing.verify`). It prints one row per scenario::

    .venv/bin/python bench/faults.py            # 3 faults x 2 points
    .venv/bin/python bench/faults.py --rows 600 # smaller shards

Exit status 1 if any scenario did not come through intact.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import psycopg

from cerebro_db import sample_data
from cerebro_db.cluster import LocalCluster
from cerebro_db.testing import faults
from cerebro_db.text_table import format_table

SOURCE_TABLE = "fault_fashion"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=1200, help="Fashion-MNIST rows in the dataset")
    args = parser.parse_args(argv)

    home = Path(tempfile.mkdtemp(prefix="cerebro-faults-"))
    home.chmod(0o755)  # the server user must reach its data directory inside
    outcomes = []
    try:
        faults.cli(home, "up", "--segments", "2")
        dsn = LocalCluster(home).config.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            sample_data.load_fashion_mnist(conn, SOURCE_TABLE, limit=args.rows)
            conn.execute(
                "SELECT * FROM prepare_dataset(%s, %s, 'label', feature_columns => '{pixels}',"
                " feature_shape => '{28,28,1}', num_segments => 2, validation_fraction => 0.2)",
                [SOURCE_TABLE, SOURCE_TABLE],
            )
        for fault in faults.FAULTS:
            for point in faults.POINTS:
                outcome = faults.run_scenario(home, SOURCE_TABLE, fault, point)
                print(f"{fault} at {point}: {'ok' if outcome.ok else 'FAILED'}", flush=True)
                outcomes.append(outcome)
    finally:
        faults.cli(home, "down")
        shutil.rmtree(home, ignore_errors=True)

    print()
    print(
        format_table(
            [
                "fault",
                "injected during",
                "outcome",
                "epochs lost",
                "units in flight",
                "units re-run",
                "MOP invariants",
                "final state = undisturbed",
                "fault to finish s",
            ],
            [
                (
                    o.fault,
                    f"a unit of the {o.point}",
                    "completed" if o.completed else "NOT completed",
                    o.epochs_lost,
                    o.units_in_flight,
                    o.units_rerun,
                    "hold" if not o.invariant_violations else "; ".join(o.invariant_violations),
                    "bit-identical" if o.weights_identical else "DIFFERS",
                    f"{o.recovery_seconds:.1f}",
                )
                for o in outcomes
            ],
            right=[False, False, False, True, True, True, False, False, True],
        )
    )
    failed = [o for o in outcomes if not o.ok]
    print(f"\n{len(outcomes) - len(failed)} of {len(outcomes)} scenarios came through intact")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
