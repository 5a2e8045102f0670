"""The roster's distilbert: bert's builder at DistilBERT-base's size, counted right without building it.

DistilBERT-base (Sanh et al. 2019; Hugging Face's DistilBertModel): token and position embeddings and a layer norm,
no token-type embeddings and no pooler, then 6 blocks of self-attention (query, key, value and output projections,
768 wide, 12 heads) and a 3072-unit GELU feed-forward layer, each followed by a residual add and a layer norm.
"""

from __future__ import annotations

import keras
import pytest

from cerebro_plpy import memory, roster
from cerebro_plpy.memory import MemoryGuardError

HIDDEN, INNER, BLOCKS, HEADS = 768, 3072, 6, 12


def distilbert_weights(vocabulary: int, length: int, classes: int) -> int:
    """DistilBERT-base's weights by its architecture, plus the roster's softmax head over the first position."""
    embeddings = vocabulary * HIDDEN + length * HIDDEN + 2 * HIDDEN  # tokens, positions, layer norm
    attention = 4 * (HIDDEN * HIDDEN + HIDDEN)
    feed_forward = HIDDEN * INNER + INNER + INNER * HIDDEN + HIDDEN
    block = attention + feed_forward + 2 * 2 * HIDDEN  # + two layer norms
    return embeddings + BLOCKS * block + HIDDEN * classes + classes


def test_the_formula_is_distilbert_bases_published_count() -> None:
    # DistilBertModel (distilbert-base-uncased: 30522 WordPiece tokens, 512 positions) has 66,362,880 weights.
    assert distilbert_weights(30522, 512, 0) == 66_362_880


def test_the_defaults_build_distilbert_base_and_the_guard_counts_it() -> None:
    length, classes = 16, 2
    params = roster.validate("distilbert", {"vocabulary_size": 1000}, (length,))
    assert {k: params[k] for k in ("num_layers", "num_heads", "hidden_size", "intermediate_size", "dropout")} == {
        "num_layers": BLOCKS,
        "num_heads": HEADS,
        "hidden_size": HIDDEN,
        "intermediate_size": INNER,
        "dropout": 0.1,
    }
    assert roster.validate("distilbert", {}, (length,))["vocabulary_size"] == 30522
    built = roster.build("distilbert", params, (length,), classes)
    expected = distilbert_weights(1000, length, classes)
    assert built.name == "distilbert"
    assert built.count_params() == expected == roster.parameter_count("distilbert", params, (length,), classes)
    profile = memory.roster_profile("distilbert", params, (length,), classes)
    assert profile is not None and profile.weights == profile.trainable == expected
    # token and position embeddings only (no token-type embeddings), 12 heads of 64 in each of 6 blocks
    assert [layer.input_dim for layer in built.layers if isinstance(layer, keras.layers.Embedding)] == [1000, length]
    attention = [layer for layer in built.layers if isinstance(layer, keras.layers.MultiHeadAttention)]
    assert [(layer.num_heads, layer.key_dim) for layer in attention] == [(HEADS, HIDDEN // HEADS)] * BLOCKS


@pytest.mark.parametrize(
    ("length", "batch_size", "validation_rows", "fits"),
    [(128, 64, 1024, False), (32, 8, 64, True)],
)
def test_the_memory_guard_sizes_distilbert(length: int, batch_size: int, validation_rows: int, fits: bool) -> None:
    """At 128 tokens the guard's estimate (every layer's output for 1024 validation rows at once) is far over the
    default 4 GB, and it names what to lower; short sequences and a small validation set fit."""
    params = roster.validate("distilbert", {"batch_size": batch_size}, (length,))
    profile = memory.roster_profile("distilbert", params, (length,), 2)
    assert profile is not None
    limit = memory.DEFAULT_MAX_TRAINING_MB
    if fits:
        assert memory.check("distilbert", params, profile, 10_000, validation_rows, limit).total_bytes < 2 * 2**30
    else:
        with pytest.raises(MemoryGuardError, match=r"'distilbert': training needs about 52 GB .*lower batch_size"):
            memory.check("distilbert", params, profile, 10_000, validation_rows, limit)
