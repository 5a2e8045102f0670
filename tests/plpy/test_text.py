"""cerebro_plpy.text: tokenizing, fitting a vocabulary and encoding sequences."""

from __future__ import annotations

import numpy as np
import pytest

from cerebro_plpy import text
from cerebro_plpy.packing import PackingError


def test_tokenize_lowercases_and_keeps_inner_apostrophes() -> None:
    assert text.tokenize("Love it! Didn't fit, size_2 ... 10/10") == [
        "love",
        "it",
        "didn't",
        "fit",
        "size",
        "2",
        "10",
        "10",
    ]
    assert text.tokenize(None) == [] and text.tokenize("") == []


def test_vocabulary_is_the_most_frequent_words_then_alphabetical() -> None:
    documents = [["b", "a", "c"], ["c", "b"], ["c", "d"]]
    assert text.fit_vocabulary(documents, 5) == ["c", "b"]
    assert text.fit_vocabulary(documents, 100) == ["c", "b", "a", "d"]
    with pytest.raises(PackingError, match="vocabulary_size must be more than 3"):
        text.fit_vocabulary(documents, 3)


def test_encode_starts_truncates_pads_and_marks_unknown_words() -> None:
    encoded = text.encode([["c", "x", "b"], [], ["b", "b", "b", "b", "b"]], ["c", "b"], 4)
    assert encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded, [[2, 3, 1, 4], [2, 0, 0, 0], [2, 4, 4, 4]])
    with pytest.raises(PackingError, match="sequence_length must be at least 2"):
        text.encode([["a"]], ["a"], 1)
