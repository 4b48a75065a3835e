"""The request-time fold-in core (dsgd.core.foldin): both update rules against direct computations of
their definitions, the single-user form equal to the batched one, and the contract of its arguments."""

from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.foldin import FoldInParams, fold_in, fold_in_many, item_gram

RANK = 6


def _items(n: int = 40, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).normal(scale=0.3, size=(n, RANK)).astype(np.float32)


def test_sgd_without_negatives_is_the_kernels_user_update_with_the_item_rows_fixed():
    V = _items()
    x0 = np.random.default_rng(1).normal(scale=0.1, size=RANK).astype(np.float32)
    items = np.array([3, 7, 3, 11])
    p = FoldInParams(method="sgd", lr=0.1, reg=0.01, negatives=0, epochs=2)
    got, _ = fold_in(V, None, x0, items, params=p)
    x = x0.astype(np.float64)
    for _ in range(2):
        for i in items:
            e = 1.0 - x @ V[i]
            x = x + 0.1 * (e * V[i] - 0.01 * x)
    np.testing.assert_allclose(got, x, rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(V, _items())  # items untouched


def test_sgd_negatives_come_from_the_candidates_and_push_their_scores_down():
    V = _items()
    cand = np.arange(20, 40)
    p = FoldInParams(method="sgd", lr=0.2, negatives=19, epochs=3)
    x, _ = fold_in(V, None, None, np.array([1, 2, 1, 2]), params=p, candidates=cand)
    no_neg, _ = fold_in(V, None, None, np.array([1, 2, 1, 2]), params=p.__class__(method="sgd", lr=0.2, negatives=0,
                                                                                  epochs=3))
    assert (V[cand] @ x).mean() < (V[cand] @ no_neg).mean()  # negatives were drawn from the candidates
    assert (V[[1, 2]] @ x).min() > (V[cand] @ x).mean()  # and the positives still rank above them
    again, _ = fold_in(V, None, None, np.array([1, 2, 1, 2]), params=p, candidates=cand)
    np.testing.assert_array_equal(x, again)  # seeded


def test_ls_implicit_is_the_mllib_als_user_solve():
    V = _items()
    items = np.array([4, 9, 9, 9, 17])
    w = np.array([1.0, 0.5, 1.0, 1.0, 2.0], np.float32)
    p = FoldInParams(method="ls", reg=0.1, alpha=2.0, reg_per_item=True)
    got, _ = fold_in(V, None, None, items, w, params=p)
    Q = V.astype(np.float64)
    A = Q.T @ Q + 0.1 * 3 * np.eye(RANK)  # 3 distinct items
    b = np.zeros(RANK)
    for j, r in ((4, 1.0), (9, 2.5), (17, 2.0)):  # ALS input: summed weight per (user, item)
        A += 2.0 * r * np.outer(Q[j], Q[j])
        b += (1 + 2.0 * r) * Q[j]
    np.testing.assert_allclose(got, np.linalg.solve(A, b), rtol=1e-5, atol=1e-6)
    G = item_gram(V, np.arange(0, 30))
    np.testing.assert_allclose(G, Q[:30].T @ Q[:30], rtol=1e-10)
    sub, _ = fold_in(V, None, None, items, w, params=p, candidates=np.arange(0, 30))
    same, _ = fold_in(V, None, None, items, w, params=p, gram=G)
    np.testing.assert_allclose(sub, same, rtol=1e-6)


def test_ls_implicit_with_item_biases_fits_targets_minus_the_bias():
    V = _items()
    bias = np.random.default_rng(5).normal(scale=0.2, size=40).astype(np.float32)
    items = np.array([4, 9, 9])
    p = FoldInParams(method="ls", reg=0.1, alpha=1.0, use_bias=True)
    got, _ = fold_in(V, bias, None, items, params=p)
    Q = V.astype(np.float64)
    c = np.ones(40)
    c[[4, 9]] += [1.0, 2.0]  # confidence 1 + alpha * events
    target = -bias.astype(np.float64)
    target[[4, 9]] += 1.0
    want = np.linalg.solve((Q * c[:, None]).T @ Q + 0.1 * np.eye(RANK), (Q * (c * target)[:, None]).sum(axis=0))
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)


def test_ls_prior_pulls_towards_the_starting_vector():
    V = _items()
    x0 = np.full(RANK, 0.5, np.float32)
    loose, _ = fold_in(V, None, x0, np.array([2]), params=FoldInParams(method="ls", prior=0.01))
    tight, _ = fold_in(V, None, x0, np.array([2]), params=FoldInParams(method="ls", prior=1e4))
    assert np.abs(tight - x0).max() < 1e-3 < np.abs(loose - x0).max()


def test_ls_explicit_recovers_a_users_vector_and_bias_from_noise_free_ratings():
    V = _items(60)
    bias = np.random.default_rng(2).normal(size=60).astype(np.float32)
    truth, tb = np.random.default_rng(3).normal(size=RANK), 0.7
    items = np.arange(0, 60, 2)
    r = (3.5 + tb + bias[items] + V[items] @ truth).astype(np.float32)
    p = FoldInParams(method="ls", implicit=False, use_bias=True, mu=3.5, reg=1e-6)
    x, b = fold_in(V, bias, None, items, r, params=p)
    np.testing.assert_allclose(x, truth, atol=1e-3)
    assert b == pytest.approx(tb, abs=1e-3)


def test_fold_in_is_fold_in_many_for_one_user_and_max_events_keeps_the_latest():
    V = _items()
    rng = np.random.default_rng(4)
    starts = rng.normal(scale=0.1, size=(3, RANK)).astype(np.float32)
    ptr = np.array([0, 5, 5, 9])
    items = rng.integers(0, 40, size=9)
    for p in (FoldInParams(method="sgd", negatives=4, max_events=3), FoldInParams(method="ls", reg=0.2, prior=0.5)):
        many, _ = fold_in_many(V, None, starts, ptr, items, params=p, has_user=np.array([True, True, False]))
        np.testing.assert_array_equal(many[1], starts[1])  # no events: unchanged
        one, _ = fold_in(V, None, starts[0], items[0:5], params=p)
        np.testing.assert_array_equal(many[0], one)
        new, _ = fold_in(V, None, None, items[5:9], params=p)  # has_user False = a new user
        np.testing.assert_array_equal(many[2], new)
    last3, _ = fold_in(V, None, starts[0], items[2:5], params=FoldInParams(method="sgd", negatives=4))
    capped, _ = fold_in(V, None, starts[0], items[0:5], params=FoldInParams(method="sgd", negatives=4, max_events=3))
    np.testing.assert_array_equal(last3, capped)


def test_bad_arguments_fail_with_a_message():
    V = _items()
    with pytest.raises(IndexError, match="outside"):
        fold_in(V, None, None, np.array([40]), params=FoldInParams())
    with pytest.raises(ValueError, match="user_vec"):
        fold_in(V, None, np.zeros(3, np.float32), np.array([1]), params=FoldInParams())
    with pytest.raises(ValueError, match="method"):
        FoldInParams(method="magic")
    x, b = fold_in(V, None, None, np.array([], np.int64), params=FoldInParams())
    assert not x.any() and b == 0.0
