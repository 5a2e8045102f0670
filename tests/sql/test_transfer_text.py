"""Fine-tuning a text encoder: a tiny bert trained by cerebro-db on token ids, exported, imported back and
fine-tuned with ``transfer`` (token-id inputs, stored as float32, go through the base's own embeddings)."""

from __future__ import annotations

import json
import math
from typing import Any

import psycopg
import pytest

from tests.conftest import one, run_until_idle, unique

Session = psycopg.Connection[Any]


@pytest.mark.slow  # 4 transformer configs trace their graphs in two backends (and tiny_bert's one, if first)
def test_a_bert_exported_here_is_fine_tuned_frozen_or_in_part(
    conn: Session, dsn: str, reviews_2seg: str, tiny_bert: int
) -> None:
    config = tiny_bert
    base = unique("review_bert")
    conn.execute("SELECT import_model(%s, export_model(%s), 'tiny bert on reviews')", [base, config])
    layers = conn.execute("SELECT name, class, output_shape FROM model_layers(%s) ORDER BY index", [base]).fetchall()
    embedding = next(name for name, kind, _ in layers if kind == "Embedding")  # the token embeddings
    encoded = [name for name, kind, _ in layers if kind == "LayerNormalization"][-1]  # the last block's output
    assert dict((name, shape) for name, _, shape in layers)[encoded] == "(None, 24, 16)"
    space = {"base": base, "layer": [embedding, encoded], "trainable_from": ["", embedding], "head_units": 8}
    workload = one(
        conn,
        "SELECT run_model_selection(%s, 'transfer', %s, max_epochs => 1, seed => 3)",
        reviews_2seg,
        json.dumps(space),
    )
    run_until_idle(dsn)
    done = conn.execute(
        "SELECT c.params ->> 'layer', c.params ->> 'trainable_from', c.status, l.best_val_metric"
        " FROM configs c JOIN leaderboard l USING (config_id) WHERE c.workload_id = %s ORDER BY 1, 2",
        [workload],
    ).fetchall()
    assert [(layer, trainable, status) for layer, trainable, status, _ in done] == [
        (embedding, "", "completed"),
        (embedding, embedding, "completed"),
        (encoded, "", "completed"),
        (encoded, embedding, "completed"),
    ]
    assert all(math.isfinite(metric) for *_, metric in done)
    # The frozen cut at the token embeddings trained on features materialized once (the other cut holds
    # Dropout layers, which act differently in training: it trains through the base).
    stored = conn.execute(
        "SELECT layer, feature_shape FROM feature_catalog WHERE dataset = %s AND base = %s", [reviews_2seg, base]
    ).fetchall()
    assert stored == [(embedding, [24, 16])]
