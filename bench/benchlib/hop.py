"""One roster model's hop, measured (bench/hop_overhead.py): state size, save and load, the database's part, and
the training time per sample it is set against. One process, one TensorFlow thread, random data."""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import statistics
import subprocess
import sys
import time
import types
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import psycopg
from psycopg.types.json import Jsonb

from cerebro_db import migrate, sample_data
from cerebro_db.testing.clusters import temporary_cluster
from cerebro_plpy import roster
from cerebro_plpy.state import ModelState

MODELS = ("mlp", "cnn", "mobilenetv2", "resnet50", "bert")
#: bert: a sequence length and vocabulary of a small text dataset.
BERT_LENGTH = 64
BERT_VOCABULARY = 20000
FASHION_SHAPE = (28, 28, 1)


#: The hop before issue 20 (its SQL and state codec), measured beside today's: "before".
BEFORE_REF = "e6fa191"
ROOT = Path(__file__).resolve().parents[2]


@dataclass
class HopPath:
    """One version's hop: save (capture + encode), load (decode + restore), and its database part."""

    save_ms: float
    load_ms: float
    #: The local unit's database part, in its backend: claim_unit's transaction running run_unit (its training
    #: stubbed) and committing; ``copies``: state-sized buffers the backend filled meanwhile (page faults / size).
    db_ms: float | None = None
    copies: float | None = None
    #: The multi-server coordinator's part, from a client: the state read (unit_context), written (record_hop)
    #: and committed.
    client_db_ms: float | None = None

    @property
    def hop_ms(self) -> float:
        return self.save_ms + self.load_ms + (self.db_ms or 0.0)


@dataclass
class Split:
    """Where the database part goes, inside a backend (medians): write the state file (and fsync it), the WAL of
    the transaction that names it, its commit with synchronous_commit on and off, reading it (a map whose pages
    are all touched, as restore reads them)."""

    write_ms: float
    wal_mib: float
    commit_ms: float
    commit_async_ms: float
    read_ms: float


@dataclass
class Result:
    model: str
    params: int
    state_bytes: int
    per_sample_ms: float
    shard_rows: int
    after: HopPath
    before: HopPath | None
    split: Split | None

    @property
    def hop_ms(self) -> float:
        return self.after.hop_ms

    @property
    def sub_epoch_s(self) -> float:
        return self.per_sample_ms * self.shard_rows / 1000

    @property
    def share(self) -> float:
        return self.hop_ms / (self.hop_ms + 1000 * self.sub_epoch_s)


def in_turns(actions: list[Callable[[], Any]], repeats: int) -> list[float]:
    """Median ms of each action, run ``repeats`` times in turns."""
    times: list[list[float]] = [[] for _ in actions]
    for _ in range(repeats):
        for action, taken in zip(actions, times, strict=True):
            started = time.perf_counter()
            action()
            taken.append(1000 * (time.perf_counter() - started))
    return [statistics.median(taken) for taken in times]


def inputs(model: str, rows: int, rng: np.random.Generator) -> tuple[tuple[int, ...], int, np.ndarray, np.ndarray]:
    """(feature shape, classes, x, y) of random data with the shape the model trains on."""
    if model == "bert":
        x = rng.integers(1, BERT_VOCABULARY, size=(rows, BERT_LENGTH)).astype(np.float32)
        return (BERT_LENGTH,), 2, x, rng.integers(0, 2, size=rows).astype(np.float32)
    x = rng.normal(size=(rows, *FASHION_SHAPE)).astype(np.float32)
    return FASHION_SHAPE, 10, x, rng.integers(0, 10, size=rows).astype(np.float32)


def at_ref(ref: str, path: str) -> str:
    """A file of the checkout as of ``ref``."""
    return subprocess.run(
        ["git", "-C", str(ROOT), "show", f"{ref}:{path}"], capture_output=True, text=True, check=True
    ).stdout


def state_codec(ref: str | None) -> Any:
    """The ModelState class as of ``ref`` (None: today's)."""
    if ref is None:
        return ModelState
    module = types.ModuleType(f"cerebro_state_{ref}")
    sys.modules[module.__name__] = module  # dataclasses looks its module up
    exec(compile(at_ref(ref, "plpy/cerebro_plpy/state.py"), module.__name__, "exec"), module.__dict__)
    return module.ModelState


@dataclass
class HopDatabase:
    """A throwaway cluster with cerebro-db installed (its hop SQL as of ``ref``, None: today's), one config whose
    units run with ``_train_hop`` stubbed: it returns a state of ``bench.state_bytes`` random bytes."""

    conn: psycopg.Connection[Any]
    ref: str | None

    def use_size(self, size: int) -> None:
        self.conn.execute("SELECT set_config('bench.state_bytes', %s, false)", [str(size)])
        for _ in range(2):  # the config's state row has this size from now on
            self.local_unit()

    def local_unit(self) -> int:
        """One local unit (claim, run_unit, commit); its page faults in state-sized buffers."""
        faults = _minor_faults(self.conn.info.backend_pid)
        with self.conn.transaction():
            row = self.conn.execute("SELECT config_id FROM claim_unit(0)").fetchone()
            assert row is not None
            self.conn.execute("SELECT run_unit(%s, 0)", [row[0]])
        return _minor_faults(self.conn.info.backend_pid) - faults

    def client_unit(self) -> None:
        """The multi-server coordinator's statements of a unit (the segment server's training left out)."""
        with self.conn.transaction():
            row = self.conn.execute("SELECT config_id FROM claim_unit(0)").fetchone()
            assert row is not None
            if self.ref is None:  # as cerebro_db.backends.multi_server does
                found = self.conn.execute("SELECT unit_context(%s, 0)", [row[0]], binary=True).fetchone()
                assert found is not None
                state = found[0][1]
            else:
                found = self.conn.execute("SELECT context, state FROM unit_context(%s, 0)", [row[0]]).fetchone()
                assert found is not None
                state = found[1]
            self.conn.execute("SELECT record_hop(%s, 0, %s, %s)", [row[0], Jsonb(STUB_SUMMARY), state])

    def split(self, size: int, repeats: int) -> Split:
        row = self.conn.execute("CALL bench_split(%s, %s, NULL)", [size, repeats]).fetchone()
        assert row is not None
        return Split(**row[0])


PAGE = os.sysconf("SC_PAGE_SIZE")


def _minor_faults(pid: int) -> int:
    return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[7])


STUB_SUMMARY = {
    "rows": 1, "train_loss": 1.0, "train_metric": 0.5, "val_loss": 1.0, "val_metric": 0.5,
    "data_load_s": 0, "state_load_s": 0, "train_s": 0, "state_save_s": 0, "validation_s": 0,
}  # fmt: skip

# Fixed text: today's local trainer, stubbed: it reads the config's state file and writes a new one of
# bench.state_bytes random bytes (made once per size), so that a unit is its database part only.
STUB_STORED_TRAINER = """
CREATE OR REPLACE FUNCTION cerebro._train_stored_hop(context jsonb, directory text, state_file text,
                                                     new_state_file text) RETURNS jsonb
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp AS $$
import json, os
import numpy as np
from cerebro_plpy import state_files
size = int(plpy.execute("SELECT current_setting('bench.state_bytes') AS s")[0]["s"])
if GD.get("bench_state_size") != size:
    GD["bench_state"], GD["bench_state_size"] = os.urandom(size), size
if state_file is not None:  # the load's page faults, as restore's reads take them
    int(np.frombuffer(state_files.read(directory, state_file), np.uint8)[::4096].sum())
written = state_files.write(directory, new_state_file, [GD["bench_state"]])
return json.dumps({"result": dict(json.loads(SUMMARY), state_bytes=written)})
$$
"""

# Fixed text: BEFORE_REF's trainer, stubbed alike: it returns the new state as bytea.
STUB_TRAINER = """
CREATE OR REPLACE FUNCTION cerebro._train_hop(context jsonb, state bytea, OUT outcome jsonb, OUT new_state bytea)
LANGUAGE plpython3u VOLATILE SET search_path = cerebro, pg_temp AS $$
import json, os
size = int(plpy.execute("SELECT current_setting('bench.state_bytes') AS s")[0]["s"])
if GD.get("bench_state_size") != size:
    GD["bench_state"], GD["bench_state_size"] = os.urandom(size), size
return {"outcome": '{"result": %s}' % SUMMARY, "new_state": GD["bench_state"]}
$$
"""

# Fixed text: the database part's split inside a backend (medians of ``repeats``), each step its own transaction.
SPLIT_PROCEDURE = """
CREATE TABLE hop_names (config_id int PRIMARY KEY, state_file text NOT NULL);
INSERT INTO hop_names VALUES (1, '');
CREATE PROCEDURE bench_split(size int, repeats int, INOUT split jsonb) LANGUAGE plpython3u AS $$
import os, statistics, time
import numpy as np
from cerebro_plpy import state_files
directory = plpy.execute("SELECT cerebro.state_directory() AS d")[0]["d"]
raw = os.urandom(size)
name_it = plpy.prepare("UPDATE hop_names SET state_file = $1 WHERE config_id = 1", ["text"])
lsn = plpy.prepare("SELECT pg_current_wal_insert_lsn()::text AS at")
wal = plpy.prepare("SELECT pg_wal_lsn_diff($1::pg_lsn, $2::pg_lsn) AS d", ["text", "text"])
times = {"write_ms": [], "wal_mib": [], "commit_ms": [], "commit_async_ms": [], "read_ms": []}
def ms(started):
    return 1000 * (time.perf_counter() - started)
for i in range(2 * repeats):
    kind = "commit_async_ms" if i % 2 else "commit_ms"
    plpy.execute("SELECT set_config('synchronous_commit', '%s', true)" % ("off" if i % 2 else "on"))
    name = "c0-x%d.state" % (i + 1)
    before, started = plpy.execute(lsn)[0]["at"], time.perf_counter()
    state_files.write(directory, name, [raw])
    times["write_ms"].append(ms(started))
    plpy.execute(name_it, [name])
    times["wal_mib"].append(float(plpy.execute(wal, [plpy.execute(lsn)[0]["at"], before])[0]["d"]) / 2**20)
    started = time.perf_counter()
    plpy.commit()
    times[kind].append(ms(started))
    started = time.perf_counter()
    int(np.frombuffer(state_files.read(directory, name), np.uint8)[::4096].sum())
    times["read_ms"].append(ms(started))
    state_files.delete(directory, [name])
    plpy.commit()
import json
return {"split": json.dumps({key: statistics.median(values) for key, values in times.items()})}
$$
"""


@contextlib.contextmanager
def hop_database(enabled: bool, ref: str | None) -> Iterator[HopDatabase | None]:
    if not enabled:
        yield None
        return
    with temporary_cluster(segments=1) as cluster, psycopg.connect(cluster.dsn(), autocommit=True) as conn:
        conn.execute("SET search_path = cerebro, public")
        if ref is not None:  # its schema (states in a bytea column), then its hop
            migrate.downgrade(cluster.dsn(), "v0_4_13")
            conn.execute(at_ref(ref, "cerebro_db/sql/10_unit/40_hop.sql").encode())
        x, y = sample_data.synthetic_tabular(40, 4, 2, seed=1)
        sample_data.load_tabular_table(conn, "public.hop_rows", x, y)
        conn.execute(
            "SELECT * FROM prepare_dataset('hop_rows', 'public.hop_rows', 'label', '{f0,f1,f2,f3}', num_segments => 1,"
            " validation_fraction => 0.25)"
        )
        conn.execute(
            "SELECT run_model_selection('hop_rows', 'mlp', %s, 'grid', max_epochs => 1000)",
            [json.dumps({"lr": [1e-3]})],
        )
        stub = STUB_TRAINER if ref is not None else STUB_STORED_TRAINER
        conn.execute(stub.replace("SUMMARY", repr(json.dumps(STUB_SUMMARY))).encode())
        if ref is None:
            conn.execute(SPLIT_PROCEDURE.encode())
        yield HopDatabase(conn, ref)


def measure(
    gd: dict[str, Any],
    model_name: str,
    args: argparse.Namespace,
    after_db: HopDatabase | None,
    before_db: HopDatabase | None,
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

    # Today's hop and, with --before, the old one, taking turns so that other work on the machine weighs on both.
    sides = [(ModelState, {"copy": False}, after_db)]  # decode as the unit calls it
    if args.before:
        sides.append((state_codec(BEFORE_REF), {}, before_db))

    def save(codec: Any) -> None:
        captured = training.capture(model)
        state = codec(captured.model_variables, captured.optimizer_variables)
        # Today's local hop writes the state's pieces to its file (in the db part); BEFORE_REF's joined them first.
        if codec is ModelState:
            state.buffers()
        else:
            state.encode()

    def load(codec: Any, kwargs: dict[str, Any]) -> None:
        training.restore(model, codec.decode(raw, **kwargs))

    def unit(db: HopDatabase, faults: list[int]) -> None:
        faults.append(db.local_unit())

    raw = training.capture(model).encode()
    saves = in_turns([functools.partial(save, codec) for codec, _, _ in sides], args.repeats)
    loads = in_turns([functools.partial(load, codec, kwargs) for codec, kwargs, _ in sides], args.repeats)
    paths = [HopPath(save_ms, load_ms) for save_ms, load_ms in zip(saves, loads, strict=True)]
    dbs = [db for _, _, db in sides if db is not None]
    if len(dbs) == len(sides):
        faults: list[list[int]] = [[] for _ in dbs]
        for db in dbs:
            db.use_size(len(raw))
        units = in_turns([functools.partial(unit, db, f) for db, f in zip(dbs, faults, strict=True)], args.repeats)
        clients = in_turns([db.client_unit for db in dbs], args.repeats)
        for path, unit_ms, client_ms, counted in zip(paths, units, clients, faults, strict=True):
            path.db_ms, path.client_db_ms = unit_ms, client_ms
            path.copies = statistics.median(counted) * PAGE / len(raw)
    after, before = paths[0], (paths[1] if args.before else None)
    size = len(training.capture(model).encode())
    split = after_db.split(size, args.repeats) if after_db is not None else None
    return Result(model_name, model.count_params(), size, per_sample_ms, args.shard_rows, after, before, split)
