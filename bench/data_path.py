"""Loading a shard inside a segment backend: packed bytea buffers vs one row per example.

A unit starts by loading its shard into numpy (``cerebro_plpy.unit.shard``). cerebro-db stores a dataset as
a few packed float32 ``bytea`` buffers (``dataset_buffers``); the alternatives keep one row per example.
Inside a PL/Python function of a throwaway cluster, on the same Fashion-MNIST rows, this times

* ``packed``: the shard's buffers from ``dataset_buffers`` (``packing.from_bytes``, concatenated; as a unit does),
* ``real[] rows``: one row per example with a ``real[]`` column, converted by PL/Python to lists, then numpy,
* ``real[] rows, array_send``: the same rows, read as ``array_send(features)`` and decoded with numpy
  (``packing.decode_array_send``, as ``prepare_dataset`` reads arrays),
* ``bytea rows``: one row per example with a float32 ``bytea`` column, ``np.frombuffer`` per row, stacked,

then prints ms per 10000 samples and the load's share of a unit: load / (load + one training pass over the same
rows, cnn and mlp, one TensorFlow thread)::

    .venv/bin/python bench/data_path.py             # 10000 rows
    .venv/bin/python bench/data_path.py --small     # 3000 rows
"""

from __future__ import annotations

import argparse
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cerebro_db import sample_data
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table

RESULTS_DIR = Path(__file__).resolve().parent / "results"
PER = 10000
METHODS = {
    "packed": "packed bytea buffers (cerebro-db)",
    "array": "real[] rows",
    "array_send": "real[] rows, array_send + numpy",
    "bytea": "bytea rows (float32 per row)",
}

# Fixed text (no user values): loads the training rows by ``method`` inside the backend and times it.
LOAD_FUNCTION = """
CREATE OR REPLACE FUNCTION bench_load(method text, dataset int) RETURNS TABLE (seconds float8, rows int)
LANGUAGE plpython3u AS $$
import time
import numpy as np
from cerebro_plpy import packing
shape = (28, 28, 1)
started = time.perf_counter()
if method == "packed":
    plan = plpy.prepare(
        "SELECT x, y FROM cerebro.dataset_buffers WHERE dataset_id = $1 AND split = 'train' ORDER BY buffer_id",
        ["int4"],
    )
    found = plpy.execute(plan, [dataset])
    x = np.concatenate([packing.from_bytes(r["x"], shape) for r in found])
    y = np.concatenate([packing.from_bytes(r["y"], ()) for r in found])
elif method == "array":
    found = plpy.execute("SELECT label, features FROM bench_array_rows ORDER BY id")
    x = np.asarray([r["features"] for r in found], dtype=np.float32).reshape((-1, *shape))
    y = np.asarray([r["label"] for r in found], dtype=np.float32)
elif method == "array_send":
    found = plpy.execute("SELECT label, array_send(features) AS raw FROM bench_array_rows ORDER BY id")
    x = np.stack([packing.decode_array_send(r["raw"], "float4") for r in found]).reshape((-1, *shape))
    y = np.asarray([r["label"] for r in found], dtype=np.float32)
elif method == "bytea":
    found = plpy.execute("SELECT label, features FROM bench_bytea_rows ORDER BY id")
    x = np.stack([np.frombuffer(r["features"], dtype="<f4") for r in found]).reshape((-1, *shape))
    y = np.asarray([r["label"] for r in found], dtype=np.float32)
else:
    plpy.error("unknown method " + method)
seconds = time.perf_counter() - started
assert x.dtype == np.float32 and len(x) == len(y)
return [(seconds, len(y))]
$$
"""

ARRAY_ROWS_SQL = """
CREATE TABLE bench_array_rows AS
SELECT id, label, bytea_to_real(features) AS features FROM bench_bytea_rows
"""

# The same float32 values as a real[] (only to build bench_array_rows).
BYTEA_TO_REAL = """
CREATE OR REPLACE FUNCTION bytea_to_real(raw bytea) RETURNS real[] LANGUAGE plpython3u IMMUTABLE AS $$
import numpy as np
return np.frombuffer(raw, dtype="<f4").tolist()
$$
"""


def unit_seconds(x: np.ndarray, y: np.ndarray, model: str) -> float:
    """One training pass over ``(x, y)`` (batch 64), after a traced warm-up batch, one TensorFlow thread."""
    from cerebro_plpy import roster, training

    gd: dict[str, Any] = {}
    training.tensorflow(gd)
    params = roster.validate(model, {}, (28, 28, 1))
    spec = training.ModelSpec(model, params, (28, 28, 1), 10, seed=1)
    compiled = training.build_compiled(gd, spec)

    def noop() -> None:
        return None

    training.train_pass(gd, compiled, x[:64], y[:64], 64, noop)
    started = time.perf_counter()
    training.train_pass(gd, compiled, x, y, 64, noop)
    return time.perf_counter() - started


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows", type=int, default=10000, help="Fashion-MNIST rows in the shard")
    parser.add_argument("--repeats", type=int, default=3, help="loads per method (the median counts)")
    parser.add_argument("--small", action="store_true", help="3000 rows")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the CSV file goes")
    args = parser.parse_args(argv)
    if args.small:
        args.rows = 3000
    return args


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"

    def step(message: str) -> None:
        print(f"[{time.strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)

    images, labels = sample_data.read_fashion_mnist("train", args.rows)
    x = (images.astype(np.float32) / 255).reshape(-1, 28, 28, 1)
    y = labels.astype(np.float32)
    timings: dict[str, list[float]] = {}
    step("starting a throwaway cluster")
    with temporary_cluster(segments=1) as cluster, psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        step(f"creating the row tables and a packed dataset of {args.rows} rows")
        sample_data.create_table(
            conn,
            "bench_bytea_rows",
            (("label", "int"), ("features", "bytea")),
            ((int(label), image.tobytes()) for image, label in zip(x, labels, strict=True)),
        )
        conn.execute(BYTEA_TO_REAL)
        conn.execute(ARRAY_ROWS_SQL)
        conn.execute(
            "SELECT * FROM prepare_dataset('bench_packed', 'bench_bytea_rows', 'label', '{features}',"
            " validation_fraction => %s, num_segments => 1, \"normalize\" => 'none', feature_shape => '{28,28,1}')",
            [1 / args.rows],
        )
        dataset = conn.execute("SELECT dataset_id FROM datasets WHERE name = 'bench_packed'").fetchone()
        assert dataset is not None
        conn.execute("VACUUM ANALYZE")
        conn.execute(LOAD_FUNCTION)
        for method in METHODS:
            step(f"loading by {method}")
            conn.execute("SELECT * FROM bench_load(%s, %s)", [method, dataset[0]])  # warm: imports, caches
            timings[method] = []
            for _ in range(args.repeats):
                row = conn.execute("SELECT * FROM bench_load(%s, %s)", [method, dataset[0]]).fetchone()
                assert row is not None
                timings[method].append(1000 * float(row[0]) * PER / int(row[1]))
    step("one training pass per model over the same rows")
    units = {model: unit_seconds(x, y, model) * PER / len(y) for model in ("cnn", "mlp")}

    loads = {method: statistics.median(times) for method, times in timings.items()}
    packed = loads["packed"]
    print()
    print(
        f"Loading a shard inside a segment backend (PL/Python), {args.rows} Fashion-MNIST rows (28x28x1 float32), "
        f"median of {args.repeats}, per {PER} samples; {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print()
    rows = [
        [
            METHODS[method],
            f"{ms:.1f}",
            f"{ms / packed:.1f}",
            *(f"{100 * ms / (ms + 1000 * units[m]):.1f}%" for m in units),
        ]
        for method, ms in loads.items()
    ]
    headers = ["layout", "ms / 10k samples", "x packed", *(f"share of a {m} unit" for m in units)]
    print(table(headers, rows))
    print()
    print(
        "Notes: a unit = load + one training pass over the same samples (batch 64, 1 TensorFlow thread): "
        + ", ".join(f"{m} {s:.2f} s" for m, s in units.items())
        + f" per {PER} samples.\n  Warm caches (shared buffers, OS); a segment backend also caches its shard across"
        " units (unit.shard), so a\n  load is paid once per backend and shard, not per unit: the share is a cold"
        " unit's."
    )
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("data_path_small.csv" if args.small else "data_path.csv")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["layout", "ms_per_10k", "vs_packed", *(f"{m}_unit_s_per_10k" for m in units)])
        for method, ms in loads.items():
            writer.writerow([method, f"{ms:.2f}", f"{ms / packed:.2f}", *(f"{s:.3f}" for s in units.values())])
    step(f"wrote {path}")


if __name__ == "__main__":
    main()
