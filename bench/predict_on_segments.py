"""predict: its parts one after another (SQL ``predict()``) against side by side (``cerebro-db predict``).

On a throwaway 2-segment cluster it loads Fashion-MNIST rows, trains one small ``cnn`` config
for an epoch, then predicts every row both ways, each in fresh connections (so each pays its
backends' TensorFlow start-up, as a user's first call does), and prints rows/s and the ratio::

    .venv/bin/python bench/predict_on_segments.py              # 20000 rows
    .venv/bin/python bench/predict_on_segments.py --rows 2000  # smoke test
"""

from __future__ import annotations

import argparse
import time
from collections.abc import Callable

import psycopg

from cerebro_db import sample_data
from cerebro_db.predict import predict_on_segments
from cerebro_db.scheduler import Scheduler
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table

TABLE = "bench_fashion"


def timed(run: Callable[[str], int], output: str) -> tuple[int, float]:
    started = time.perf_counter()
    rows = run(output)
    return rows, time.perf_counter() - started


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=20000)
    args = parser.parse_args()
    with temporary_cluster(segments=2) as cluster:
        dsn = cluster.dsn()
        with psycopg.connect(dsn, autocommit=True) as conn:
            sample_data.load_fashion_mnist(conn, TABLE, limit=args.rows)
            conn.execute(
                "SELECT * FROM prepare_dataset(%s, %s, 'label', '{pixels}', feature_shape => '{28,28,1}')",
                [TABLE, TABLE],
            )
            conn.execute(
                "SELECT run_model_selection(%s, 'cnn', '{\"filters\": [8], \"dense_units\": [32]}', max_epochs => 1)",
                [TABLE],
            )
            Scheduler(dsn, idle_wait=0.2).run(until_idle=True)
            row = conn.execute("SELECT max(config_id) FROM configs").fetchone()
            assert row is not None
            config = row[0]

        def serial(output: str) -> int:
            with psycopg.connect(dsn) as conn:
                result = conn.execute("SELECT predict(%s, %s, 'id', %s)", [config, TABLE, output]).fetchone()
            assert result is not None
            rows: int = result[0]
            return rows

        def parallel(output: str) -> int:
            return predict_on_segments(dsn, config, f"public.{TABLE}", "id", output)  # its search path has no public

        results: list[tuple[str, int, float, float]] = []
        for label, run in (
            ("SQL predict(), parts one after another", serial),
            ("cerebro-db predict, parts side by side", parallel),
        ):
            rows, seconds = timed(run, f"out_{len(results)}")
            results.append((label, rows, seconds, rows / seconds))
        base = results[0][2]
        print(
            format_table(
                ["how", "rows", "seconds", "rows/s", "speed-up"],
                [(h, f"{r:,}", f"{s:.2f}", f"{rs:,.0f}", f"{base / s:.2f}x") for h, r, s, rs in results],
                right=[False, True, True, True, True],
            )
        )


if __name__ == "__main__":
    main()
