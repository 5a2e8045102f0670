"""Text features: a word tokenizer fitted on the training split, and token id sequences.

Token ids: 0 pads, 1 stands for words outside the vocabulary, 2 starts every sequence
(the ``bert`` model classifies from that first position), and the vocabulary's words
follow from 3 on, most frequent first. A sequence is the start token and the first
``sequence_length - 1`` words' ids, padded with 0.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Sequence

import numpy as np

from cerebro_plpy.packing import PackingError

PAD, UNKNOWN, START = 0, 1, 2
FIRST_WORD = 3
_WORD = re.compile(r"[^\W_]+(?:'[^\W_]+)*")


def tokenize(text: str | None) -> list[str]:
    """Lower-cased words (letters and digits, inner apostrophes kept); NULL is an empty text."""
    return _WORD.findall(text.lower()) if text else []


def fit_vocabulary(documents: Sequence[list[str]], vocabulary_size: int) -> list[str]:
    """The ``vocabulary_size - FIRST_WORD`` most frequent words, ties broken alphabetically."""
    if vocabulary_size <= FIRST_WORD:
        raise PackingError(f"vocabulary_size must be more than {FIRST_WORD} (the reserved ids), got {vocabulary_size}")
    counts = Counter(word for document in documents for word in document)
    ranked = sorted(counts.items(), key=lambda item: (-item[1], item[0]))
    return [word for word, _ in ranked[: vocabulary_size - FIRST_WORD]]


def encode(documents: Sequence[list[str]], vocabulary: Sequence[str], sequence_length: int) -> np.ndarray:
    """Token id sequences as a float32 matrix ``len(documents) x sequence_length``."""
    if sequence_length < 2:
        raise PackingError(f"sequence_length must be at least 2 (the start token and a word), got {sequence_length}")
    ids = {word: FIRST_WORD + i for i, word in enumerate(vocabulary)}
    out = np.full((len(documents), sequence_length), PAD, dtype=np.float32)
    out[:, 0] = START
    for row, document in enumerate(documents):
        words = document[: sequence_length - 1]
        out[row, 1 : 1 + len(words)] = [ids.get(word, UNKNOWN) for word in words]
    return out
