"""The sort-based array helpers equal numpy's own definitions on random inputs (dupes, empty, negatives)."""

from __future__ import annotations

import numpy as np

from dsgd.core.arrays import first_positions, unique


def test_unique_and_first_positions_equal_numpys_definitions():
    rng = np.random.default_rng(1)
    for _ in range(200):
        a = rng.integers(-5, 5, rng.integers(0, 40)).astype(np.int64)
        assert np.array_equal(unique(a), np.unique(a))
        assert np.array_equal(first_positions(a), np.sort(np.unique(a, return_index=True)[1]))
    keys = rng.integers(-2**62, 2**62, 1000)
    assert np.array_equal(unique(np.concatenate([keys, keys[::3]])), np.unique(keys))
