"""One roster model's hop, measured (bench/hop_overhead.py): state size, save and load, the database's part, and
the training time per sample it is set against. One process, one TensorFlow thread, random data."""

from __future__ import annotations

import argparse
import contextlib
import statistics
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import psycopg

from cerebro_db.testing.clusters import temporary_cluster
from cerebro_plpy import roster
from cerebro_plpy.state import ModelState

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
