"""The int8 screen against the exact top-K: its candidates always hold the k best items of the float32
scores, and a model served through it answers the same items and scores as without it."""

from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.blend import BlendModel
from dsgd.core.blend_types import ItemSide, UserFactors
from dsgd.core.scoring import score_matrix, top_k
from dsgd.core.screen import Int8Items


def _items(rng: np.random.Generator, n: int, rank: int) -> tuple[np.ndarray, np.ndarray]:
    vec = rng.standard_normal((n, rank)).astype(np.float32) * np.float32(rng.choice([1e-3, 0.1, 10.0]))
    if rng.random() < 0.5:  # rows of very different norms, and exact copies (ties)
        vec *= rng.lognormal(0, 2, n).astype(np.float32)[:, None]
    if rng.random() < 0.5:
        vec[rng.integers(0, n, n // 10)] = vec[rng.integers(0, n)]
    vec[rng.integers(0, n, 3)] = 0.0
    bias = (rng.standard_normal(n) * rng.choice([0.0, 0.01, 1.0])).astype(np.float32)
    return vec, bias


@pytest.mark.parametrize("seed", range(40))
def test_candidates_hold_the_exact_top_k(seed):
    rng = np.random.default_rng(seed)
    n, rank = int(rng.integers(5000, 40_000)), int(rng.choice([1, 8, 64]))
    vec, bias = _items(rng, n, rank)
    u = (rng.standard_normal(rank) * rng.choice([1e-2, 1.0, 100.0])).astype(np.float32)
    ub, mu = np.float32(rng.standard_normal()), float(rng.choice([0.0, 3.5]))
    kk = int(rng.choice([1, 10, 100]))
    exact = score_matrix(u[None], vec, user_bias=np.array([ub]), item_bias=bias, mu=mu, dtype=np.float32)[0]
    best = top_k(exact, kk)
    rows = Int8Items.of(vec, bias).candidates(u, (float(ub), mu), kk)
    assert rows is not None
    assert np.isin(best, rows).all()
    assert rows.size < n / 4  # a screen, not the whole catalogue


def test_a_screen_that_cannot_tell_says_so():
    rng = np.random.default_rng(0)
    vec, bias = _items(rng, 2000, 8)
    q = Int8Items.of(vec, bias)
    assert q.candidates(vec[0], (0.0,), 100) is None  # 2000 items: fewer than 4 per block of the threshold
    assert q.candidates(vec[0], (0.0,), 2000) is None


def _model(rng: np.random.Generator, n: int, rank: int, mu: float = 0.0) -> BlendModel:
    vec, bias = _items(rng, n, rank)
    ids = np.array([f"i{j}" for j in range(n)], dtype=object)
    keys = rng.permutation(n).astype(np.int64)
    return BlendModel(ids, keys, rng.integers(0, 50, n), ItemSide(vec, bias, None, mu))


@pytest.mark.parametrize("seed", range(12))
def test_a_screened_recommendation_equals_the_full_one(seed):
    rng = np.random.default_rng(100 + seed)
    m = _model(rng, int(rng.integers(8000, 30_000)), 16, mu=float(rng.choice([0.0, 3.5])))
    user = UserFactors.one(m.rank, online=(rng.standard_normal(16).astype(np.float32), float(rng.standard_normal())))
    k = int(rng.choice([1, 10, 100]))
    exclude = rng.integers(0, len(m), int(rng.choice([0, 5, 300])))
    full = m.recommend(user, k, exclude=[exclude])[0]
    rows = m.screened_rows(user, k + len(exclude), min_items=0)
    assert rows is not None
    got = m.recommend(user, k, exclude=[exclude], candidates=rows)[0]
    _same_up_to_rounding(m, user, got, full)
    assert not np.isin(got.rows, exclude).any()


def _same_up_to_rounding(m: BlendModel, user: UserFactors, got, full) -> None:
    """The same scores to float32 rounding, and the same items except where two tie within it (the
    candidates' smaller product may round its last bit differently)."""
    np.testing.assert_allclose(got.scores, full.scores, rtol=1e-6, atol=1e-6)
    every = m.scores(user)[0].astype(np.float64)
    for a, b in zip(got.rows, full.rows, strict=True):
        if a != b:
            assert abs(every[a] - every[b]) <= 1e-6 * max(1.0, abs(every[b])), (a, b)


def _one_item_model(vec: np.ndarray, bias: np.ndarray, mu: float = 0.0) -> BlendModel:
    n = len(vec)
    ids = np.array([f"i{j:05d}" for j in range(n)], dtype=object)
    return BlendModel(ids, np.arange(n, dtype=np.int64), np.zeros(n, np.int64), ItemSide(vec, bias, None, mu))


def test_a_user_bias_that_cancels_mu_still_leaves_the_tied_best():
    """Scores that differ by less than an ulp of mu tie in float32: the tie is the id's, not the screen's."""
    vec, bias = np.zeros((5000, 8), np.float32), np.zeros(5000, np.float32)
    bias[10], bias[20] = np.float32(1e-3), np.float32(1e-3 + 1e-8)
    m = _one_item_model(vec, bias, mu=3.5)
    user = UserFactors.one(8, online=(np.random.default_rng(0).standard_normal(8).astype(np.float32), -3.5))
    rows = m.screened_rows(user, 1, min_items=0)
    assert rows is None or 10 in rows
    assert m.recommend(user, 1, candidates=rows)[0].rows.tolist() == m.recommend(user, 1)[0].rows.tolist() == [10]


def test_nan_or_tiny_factors_leave_the_decision_to_the_full_product():
    vec, bias = np.zeros((4096, 2), np.float32), np.full(4096, -10, np.float32)
    bias[:2] = 100, 50
    vec[2] = vec[3] = 127, -127
    bias[2] = bias[3] = 0
    bias[4] = bias[5] = np.nan
    m = _one_item_model(vec, bias)
    user = UserFactors.one(2, online=(np.array([100, 100], np.float32), 0.0))
    assert m.screened_rows(user, 3, min_items=0) is None
    vec, bias = np.zeros((4096, 2), np.float32), np.full(4096, 4e-14, np.float32)
    vec[7], bias[7] = (np.float32(8e-44), 0), 0  # its scale would round to 0
    assert Int8Items.of(vec, bias).candidates(np.array([1e30, 0], np.float32), (0.0,), 1) is None


def test_the_screen_applies_to_online_models_of_enough_items_only():
    rng = np.random.default_rng(7)
    m = _model(rng, 6000, 8)
    user = UserFactors.one(8, online=(np.ones(8, np.float32), 0.0))
    assert m.screened_rows(user, 10, min_items=6001) is None
    assert m.screened_rows(user, 10, min_items=6000) is not None
    assert m.screened_rows(UserFactors.one(8), 10, min_items=0) is None  # the online model lacks the user
    m.online.known = np.ones(len(m), bool)
    assert m.screened_rows(user, 10, min_items=0) is None  # items some model lacks: the exact path


def test_an_incremental_reload_carries_the_int8_items_updated():
    rng = np.random.default_rng(3)
    old = _model(rng, 6000, 8).prepare(screen_min_items=0)
    vec = np.concatenate([old.online.vec, rng.standard_normal((50, 8)).astype(np.float32)])
    bias = np.concatenate([old.online.bias, np.zeros(50, np.float32)])
    changed = np.concatenate([rng.choice(6000, 30, replace=False), np.arange(6000, 6050)])
    vec[changed[:30]] = rng.standard_normal((30, 8)).astype(np.float32)
    ids = np.concatenate([old.item_ids, np.array([f"n{j}" for j in range(50)], dtype=object)])
    keys = np.concatenate([old.item_keys, 10**6 + np.arange(50)])
    new = BlendModel(ids, keys, np.zeros(6050, np.int64), ItemSide(vec, bias)).carry(old, changed)
    want = Int8Items.of(vec, bias)
    got = new._cache["int8"]
    assert np.array_equal(got.codes, want.codes) and np.array_equal(got.scale, want.scale)
    assert np.array_equal(got.bias, want.bias)
