"""top_k against its definition: the k best finite scores, ties by the tie order, best first."""

from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.scoring import top_k


def _by_definition(s: np.ndarray, k: int, tie: np.ndarray | None) -> list[int]:
    order = tie if tie is not None else np.arange(s.size)
    finite = [i for i in range(s.size) if np.isfinite(s[i])]
    return sorted(finite, key=lambda i: (-s[i], order[i]))[:max(k, 0)]


@pytest.mark.parametrize("seed", range(200))
def test_top_k_equals_the_definition_with_ties_nan_and_infinities(seed):
    rng = np.random.default_rng(seed)
    n = int(rng.integers(0, 60))
    s = rng.integers(-5, 5, n).astype(np.float64)  # few distinct values: many ties
    for value in (np.nan, -np.inf, np.inf):
        s[rng.random(n) < rng.choice([0.0, 0.1, 0.6])] = value
    tie = rng.permutation(n) if rng.random() < 0.5 else None
    k = int(rng.integers(-1, n + 3))
    assert top_k(s, k, tie_order=tie).tolist() == _by_definition(s, k, tie)


def test_top_k_of_a_large_row_without_filters():
    rng = np.random.default_rng(0)
    s = rng.standard_normal(10_000)
    tie = rng.permutation(s.size)
    assert top_k(s, 100, tie_order=tie).tolist() == _by_definition(s, 100, tie)


@pytest.mark.parametrize("seed", range(50))
def test_top_k_separates_scores_that_float32_cannot(seed):
    """Scores 1e-10 apart round to one float32: the exact order still decides, and a score past
    float32's range (1e300) is still a finite score."""
    rng = np.random.default_rng(seed)
    n = 500
    s = 1.0 + rng.integers(0, 4, n) * 1e-10 + rng.integers(0, 3, n)
    s[rng.random(n) < 0.02] = 1e300
    tie = rng.permutation(n)
    k = int(rng.integers(1, 40))
    assert top_k(s, k, tie_order=tie).tolist() == _by_definition(s, k, tie)


@pytest.mark.parametrize("seed", range(60))
def test_top_k_of_long_rows_equals_the_definition(seed):
    """Rows long enough for the block-maxima shortcut (and its fall-backs): real-valued and tied scores,
    filtered (-inf) runs, NaN, +inf, and rows with fewer finite scores than k."""
    rng = np.random.default_rng(1000 + seed)
    n = int(rng.integers(4096, 12_000))  # the shortcut needs 4 scores per block
    s = rng.standard_normal(n) if rng.random() < 0.5 else rng.integers(-3, 3, n).astype(np.float64)
    if rng.random() < 0.5:
        s = s.astype(np.float32)
    for value in (np.nan, -np.inf, np.inf):
        if rng.random() < 0.3:
            s[rng.random(n) < rng.choice([0.001, 0.05, 0.5, 0.99])] = value
    if rng.random() < 0.2:  # a filtered run as long as many blocks
        lo = int(rng.integers(0, n))
        s[lo:lo + n // 3] = -np.inf
    tie = rng.permutation(n) if rng.random() < 0.5 else None
    k = int(rng.choice([1, 5, 20, 100]))
    assert top_k(s, k, tie_order=tie).tolist() == _by_definition(s, k, tie)
