"""What a hop costs per roster model: state size, save and load time, against the sub-epoch it follows.

A unit of MOP trains one config for one pass over one shard, then its state hops on: it is saved
(``training.capture(model).encode()``, then written to ``model_states``) and the next unit loads it
(read, ``ModelState.decode``, ``training.restore``). For each roster model (mlp, cnn, mobilenetv2, resnet50 on
Fashion-MNIST's 28x28x1, resized to the applications' minimum 32x32; bert on token ids) this prints

* the state's size (weights + optimizer slots + iteration counter),
* save ms (capture + encode) and load ms (decode + restore), medians of ``--repeats``,
* the database's part of a hop: upserting the state into a table like ``model_states`` (bytea, STORAGE
  EXTERNAL) and reading it back (``--no-db`` skips it),
* the sub-epoch time on a shard of ``--shard-rows`` rows (default: half of Fashion-MNIST's 60000 training
  rows, one of 2 segments), measured on passes of ``--batches`` batches (for at least ``--min-seconds``) after a
  warm-up batch, and scaled,
* the hop's share of a unit: (save + load + db) / (that + sub-epoch); the target is <= 5%.

One process, one TensorFlow thread (as a segment backend)::

    .venv/bin/python bench/hop_overhead.py                 # all five models
    .venv/bin/python bench/hop_overhead.py --small         # fewer batches and repeats
"""

from __future__ import annotations

import argparse
import contextlib
import csv
import os
import platform
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg

from cerebro_db.testing.clusters import temporary_cluster
from cerebro_db.text_table import format_table as table
from cerebro_plpy import roster
from cerebro_plpy.state import ModelState

RESULTS_DIR = Path(__file__).resolve().parent / "results"
TARGET_SHARE = 0.05
MODELS = ("mlp", "cnn", "mobilenetv2", "resnet50", "bert")
#: bert: a sequence length and vocabulary of a small text dataset.
BERT_LENGTH = 64
BERT_VOCABULARY = 20000
FASHION_SHAPE = (28, 28, 1)


@dataclass
class Result:
    model: str
    params: int
    state_bytes: int
    save_ms: float
    load_ms: float
    #: Inside a backend (SPI): the one-server path.
    db_ms: float | None
    #: From a client over TCP: the multi-server path, where the coordinator passes the state.
    client_db_ms: float | None
    per_sample_ms: float
    shard_rows: int

    @property
    def hop_ms(self) -> float:
        return self.save_ms + self.load_ms + (self.db_ms or 0.0)

    @property
    def sub_epoch_s(self) -> float:
        return self.per_sample_ms * self.shard_rows / 1000

    @property
    def share(self) -> float:
        return self.hop_ms / (self.hop_ms + 1000 * self.sub_epoch_s)


def median_ms(action: Callable[[], Any], repeats: int) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        times.append(1000 * (time.perf_counter() - started))
    return statistics.median(times)


def inputs(model: str, rows: int, rng: np.random.Generator) -> tuple[tuple[int, ...], int, np.ndarray, np.ndarray]:
    """(feature shape, classes, x, y) of random data with the shape the model trains on."""
    if model == "bert":
        x = rng.integers(1, BERT_VOCABULARY, size=(rows, BERT_LENGTH)).astype(np.float32)
        return (BERT_LENGTH,), 2, x, rng.integers(0, 2, size=rows).astype(np.float32)
    x = rng.normal(size=(rows, *FASHION_SHAPE)).astype(np.float32)
    return FASHION_SHAPE, 10, x, rng.integers(0, 10, size=rows).astype(np.float32)


@contextlib.contextmanager
def state_table(enabled: bool) -> Iterator[psycopg.Connection[Any] | None]:
    """A connection to a throwaway cluster with a table shaped like ``model_states``, or None."""
    if not enabled:
        yield None
        return
    with temporary_cluster(segments=1) as cluster, psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("CREATE TABLE hop_states (config_id int PRIMARY KEY, state bytea NOT NULL)")
        conn.execute("ALTER TABLE hop_states ALTER state SET STORAGE EXTERNAL")
        conn.execute(SPI_FUNCTION)
        yield conn


# Fixed text: one hop's database part inside a backend (SPI), as a unit does it: upsert a state of ``size``
# random (incompressible) bytes, read it back; median ms of ``repeats``, each in its own subtransaction.
SPI_FUNCTION = """
CREATE OR REPLACE FUNCTION bench_state_io(size int, repeats int) RETURNS float8 LANGUAGE plpython3u AS $$
import os
import statistics
import time
raw = os.urandom(size)
save = plpy.prepare(
    "INSERT INTO hop_states VALUES (2, $1) ON CONFLICT (config_id) DO UPDATE SET state = excluded.state", ["bytea"]
)
load = plpy.prepare("SELECT state FROM hop_states WHERE config_id = 2")
times = []
for _ in range(repeats):
    started = time.perf_counter()
    with plpy.subtransaction():
        plpy.execute(save, [raw])
    assert len(plpy.execute(load)[0]["state"]) == size
    times.append(1000 * (time.perf_counter() - started))
return statistics.median(times)
$$
"""


def db_round_trip(conn: psycopg.Connection[Any], raw: bytes) -> None:
    """One hop's database part: the saving unit's upsert and the next unit's read, each its own transaction."""
    conn.execute(
        "INSERT INTO hop_states VALUES (1, %b) ON CONFLICT (config_id) DO UPDATE SET state = excluded.state", [raw]
    )
    row = conn.execute("SELECT state FROM hop_states WHERE config_id = 1", binary=True).fetchone()
    assert row is not None and len(row[0]) == len(raw)


def measure(
    gd: dict[str, Any], model_name: str, args: argparse.Namespace, conn: psycopg.Connection[Any] | None
) -> Result:
    from cerebro_plpy import training

    rng = np.random.default_rng(0)
    batch = args.batch_size
    shape, classes, x, y = inputs(model_name, batch * args.batches, rng)
    extra = {"vocabulary_size": BERT_VOCABULARY} if model_name == "bert" else {}
    params = roster.validate(model_name, {"batch_size": batch, **extra}, shape)
    spec = training.ModelSpec(model_name, params, shape, classes, seed=1)
    model = training.cached_model(gd, spec)
    training.restore(model, training.initial_state(gd, spec))

    def noop() -> None:
        return None

    # Warm-up: trace the train function on a full batch, then time whole batches.
    training.train_pass(gd, model, x[:batch], y[:batch], batch, noop)
    started, trained = time.perf_counter(), 0
    while trained == 0 or time.perf_counter() - started < args.min_seconds:
        training.train_pass(gd, model, x, y, batch, noop)
        trained += len(y)
    per_sample_ms = 1000 * (time.perf_counter() - started) / trained

    raw = training.capture(model).encode()
    save_ms = median_ms(lambda: training.capture(model).encode(), args.repeats)

    def load() -> None:
        training.restore(model, ModelState.decode(raw))

    load_ms = median_ms(load, args.repeats)
    db_ms = client_db_ms = None
    if conn is not None:
        client_db_ms = median_ms(lambda: db_round_trip(conn, raw), args.repeats)
        row = conn.execute("SELECT bench_state_io(%s, %s)", [len(raw), args.repeats]).fetchone()
        assert row is not None
        db_ms = float(row[0])
    return Result(
        model_name,
        model.count_params(),
        len(raw),
        save_ms,
        load_ms,
        db_ms,
        client_db_ms,
        per_sample_ms,
        args.shard_rows,
    )


def report(args: argparse.Namespace, results: list[Result]) -> bool:
    """Print the table; whether every model's hop share meets the target."""
    print()
    print(
        f"Hop overhead per roster model: shard of {args.shard_rows} rows, batch size {args.batch_size}, "
        f"sub-epoch scaled from passes of {args.batches} batches for >= {args.min_seconds:g} s, "
        f"medians of {args.repeats} saves/loads, "
        f"1 TensorFlow thread, {os.cpu_count()} cores, Python {platform.python_version()}"
    )
    print()
    rows = [
        [
            r.model,
            f"{r.params:,}",
            f"{r.state_bytes / 2**20:.2f}",
            f"{r.save_ms:.1f}",
            f"{r.load_ms:.1f}",
            "" if r.db_ms is None else f"{r.db_ms:.1f}",
            "" if r.client_db_ms is None else f"{r.client_db_ms:.1f}",
            f"{r.hop_ms:.1f}",
            f"{r.per_sample_ms:.3f}",
            f"{r.sub_epoch_s:.1f}",
            f"{100 * r.share:.2f}%",
            "PASS" if r.share <= TARGET_SHARE else "MISS",
        ]
        for r in results
    ]
    headers = [
        "model",
        "params",
        "state MiB",
        "save ms",
        "load ms",
        "db ms",
        "client db ms",
        "hop ms",
        "ms/sample",
        "sub-epoch s",
        "hop share",
        f"<= {100 * TARGET_SHARE:g}%",
    ]
    print(table(headers, rows))
    print()
    print(
        "Notes: save = capture (variables to numpy) + encode; load = decode + restore (assign every variable);\n"
        "  db = upsert of the state's bytes into a bytea column (STORAGE EXTERNAL, as model_states) + reading them\n"
        "  back, inside a backend through SPI as a unit does (its commit's WAL flush not included); client db = the\n"
        "  same from a client over loopback TCP, autocommit (the multi-server path, information only);\n"
        "  hop = save + load + db; share = hop / (hop + sub-epoch).\n"
        "  mobilenetv2 and resnet50 resize 28x28x1 to 32x32 (their minimum);\n"
        f"  bert: {BERT_LENGTH} token ids per row, vocabulary {BERT_VOCABULARY}, 2 classes. Random data (speed only)."
    )
    return all(r.share <= TARGET_SHARE for r in results)


def write_csv(args: argparse.Namespace, results: list[Result]) -> Path:
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("hop_overhead_small.csv" if args.small else "hop_overhead.csv")
    with path.open("w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(
            ["model", "params", "state_bytes", "save_ms", "load_ms", "db_ms", "client_db_ms", "hop_ms"]
            + ["ms_per_sample", "shard_rows", "sub_epoch_s", "hop_share"]
        )
        for r in results:
            writer.writerow(
                [r.model, r.params, r.state_bytes, f"{r.save_ms:.2f}", f"{r.load_ms:.2f}"]
                + [
                    "" if r.db_ms is None else f"{r.db_ms:.2f}",
                    "" if r.client_db_ms is None else f"{r.client_db_ms:.2f}",
                ]
                + [f"{r.hop_ms:.2f}", f"{r.per_sample_ms:.4f}"]
                + [r.shard_rows, f"{r.sub_epoch_s:.2f}", f"{r.share:.5f}"]
            )
    return path


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", choices=MODELS, default=list(MODELS))
    parser.add_argument("--shard-rows", type=int, default=30000, help="rows of one shard (60000 / 2 segments)")
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--batches", type=int, default=8, help="timed batches the sub-epoch time is scaled from")
    parser.add_argument("--min-seconds", type=float, default=3.0, help="repeat the timed batches at least this long")
    parser.add_argument("--repeats", type=int, default=5, help="saves and loads per model (the median counts)")
    parser.add_argument("--small", action="store_true", help="3 timed batches, 3 repeats")
    parser.add_argument("--db", action=argparse.BooleanOptionalAction, default=True, help="time the database part")
    parser.add_argument("--out", type=Path, default=RESULTS_DIR, help="where the CSV file goes")
    args = parser.parse_args(argv)
    if args.small:
        args.batches, args.repeats, args.min_seconds = 3, 3, 1.0
    return args


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    os.environ["OMP_NUM_THREADS"] = "1"
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    from cerebro_plpy import training

    gd: dict[str, Any] = {}
    training.tensorflow(gd)  # one thread, as a segment backend
    results = []
    with state_table(args.db) as conn:
        for name in args.models:
            print(f"[{time.strftime('%H:%M:%S')}] {name}", file=sys.stderr, flush=True)
            results.append(measure(gd, name, args, conn))
            gd.pop(training.GD_MODELS, None)  # free the model before the next one
    ok = report(args, results)
    print(f"wrote {write_csv(args, results)}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
