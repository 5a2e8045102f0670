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
import csv
import os
import platform
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from benchlib import RESULTS_DIR, step
from benchlib.hop import BERT_LENGTH, BERT_VOCABULARY, MODELS, Result, measure, state_table

from cerebro_db.text_table import format_table as table

TARGET_SHARE = 0.05


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
            step(name)
            results.append(measure(gd, name, args, conn))
            gd.pop(training.GD_MODELS, None)  # free the model before the next one
    ok = report(args, results)
    print(f"wrote {write_csv(args, results)}", file=sys.stderr)
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
