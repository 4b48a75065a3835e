"""The score of an item for a user, and the top-K of a score row: one definition for every reader.

``score = mu + b_u + b_i + p_u . q_i``, where ``mu`` (the global mean) is used by explicit models only
and the biases by models that learnt them. The estimator's ``predict``/``recommend``, the server, the
top-K export, the evaluation harness and the stream's prequential evaluation all call
:func:`score_matrix` (or :func:`score_pairs`) and :func:`top_k`, so what is measured is what is served.

Precision: the factors are float32; ``dtype=np.float64`` (the default) accumulates the dot products
in double, as ``predict`` has always done; the harness passes ``np.float32`` for speed (ranks of the
prequential evaluation).
"""

from __future__ import annotations

import numpy as np

#: Users per product for which ``(items @ users.T).T`` is faster than ``users @ items.T`` (OpenBLAS's
#: float32 GEMM with 2-16 rows on the left; bench/RESULTS.md "Serving").
ITEM_MAJOR_USERS = (2, 16)


def score_matrix(user_vec: np.ndarray, item_vec: np.ndarray, *, user_bias: np.ndarray | None = None,
                 item_bias: np.ndarray | None = None, mu: float = 0.0, dtype: type = np.float64) -> np.ndarray:
    """Scores of every item for every user: ``[n_users, n_items]`` in ``dtype``.

    Parameters
    ----------
    user_vec : float [n_users, rank]
    item_vec : float [n_items, rank]
    user_bias, item_bias : float [n_users], [n_items], optional
        Left out (zero) for models without biases.
    mu : float
        Global mean (explicit models; 0 for implicit ones).
    """
    u, v = np.asarray(user_vec, dtype), np.asarray(item_vec, dtype)
    few = ITEM_MAJOR_USERS[0] <= len(u) <= ITEM_MAJOR_USERS[1]
    s = np.ascontiguousarray((v @ u.T).T) if few else u @ v.T
    if item_bias is not None:
        s += np.asarray(item_bias, dtype)[None, :]
    if user_bias is not None:
        s += np.asarray(user_bias, dtype)[:, None]
    if mu:
        s += dtype(mu)
    return s


def _best_finite_fast(s: np.ndarray, kk: int) -> np.ndarray | None:
    """Every position scoring at least the ``kk``-th best score, when the ``kk`` best are all finite (else
    None).

    One partition of the whole row in float32 (several times faster than float64 in numpy): rounding is
    monotone, so the positions at or above the float32 ``kk``-th best hold every position at or above the
    exact one (a superset, ordered exactly by the caller). NaN sorts last and -inf (+inf of ``-s``) just
    before it, so finite candidates mean no filtered item can be among the best; a finite score beyond
    float32's range becomes inf and takes the caller's exact path.
    """
    if kk == s.size:
        return np.arange(s.size) if np.isfinite(s).all() else None
    with np.errstate(over="ignore"):
        s32 = s.astype(np.float32, copy=False)
    decided, found = _best_by_block_maxima(s32, kk)
    if decided:
        return found
    best32 = s32[np.argpartition(-s32, kk - 1)[:kk]]
    if not np.isfinite(best32).all():
        return None
    return np.flatnonzero(s32 >= best32.min())


#: Blocks per wanted item in :func:`_best_by_block_maxima` (more: a tighter threshold, a longer partition)
#: and the fewest blocks (numpy's max over the rows of a ``[width, blocks]`` view is slow when rows are short).
BLOCKS_PER_K, MIN_BLOCKS = 8, 1024


def _blocks(kk: int) -> int:
    return max(BLOCKS_PER_K * kk, MIN_BLOCKS)


def block_threshold(x: np.ndarray, kk: int) -> float | None:
    """A value at most the ``kk``-th largest of ``x``: the ``kk``-th largest maximum of ``B = _blocks(kk)``
    blocks (block ``j`` holds positions ``j, j + B, j + 2B, ...``: one max over the rows of a
    ``[width, B]`` view, which numpy reduces fast). The ``kk`` largest block maxima are ``kk`` distinct
    values at least their minimum, so at least ``kk`` values of ``x`` are ``>=`` it. None when ``x`` is
    too short (fewer than 4 values per block) or the value is not finite (NaN or -inf blocks)."""
    blocks = _blocks(kk)
    width = x.size // blocks
    if width < 4:
        return None
    maxima = x[: blocks * width].reshape(width, blocks).max(axis=0)
    t = np.partition(maxima, blocks - kk)[blocks - kk]
    return float(t) if np.isfinite(t) else None


def _best_by_block_maxima(s32: np.ndarray, kk: int) -> tuple[bool, np.ndarray | None]:
    """(decided, :func:`_best_finite_fast`'s answer) from a partition of the few positions at or above
    :func:`block_threshold` (a few more than ``kk`` on real score rows) instead of the whole row; not
    decided where the shortcut cannot tell (the caller partitions the whole row). A +inf anywhere is a
    candidate and means None, as in the full partition; NaN is never ``>= t``.
    """
    t = block_threshold(s32, kk)
    if t is None:
        return False, None
    cand = np.flatnonzero(s32 >= t)
    if cand.size < kk:  # NaN blocks: fewer than kk finite scores reach t
        return False, None
    vals = s32[cand]
    if not np.isfinite(vals).all():
        return True, None
    kth = np.partition(vals, vals.size - kk)[vals.size - kk]
    return True, cand[vals >= kth]


def score_pairs(user_vec: np.ndarray, item_vec: np.ndarray, *, user_bias: np.ndarray | None = None,
                item_bias: np.ndarray | None = None, mu: float = 0.0) -> np.ndarray:
    """float64 scores of aligned (user, item) rows: ``user_vec[n] . item_vec[n] (+ biases + mu)``."""
    s = np.einsum("ij,ij->i", np.asarray(user_vec, np.float64), np.asarray(item_vec, np.float64))
    if user_bias is not None:
        s += np.asarray(user_bias, np.float64)
    if item_bias is not None:
        s += np.asarray(item_bias, np.float64)
    return s + mu


def top_k(scores: np.ndarray, k: int, *, tie_order: np.ndarray | None = None) -> np.ndarray:
    """Positions of the ``k`` best finite scores of one row, best first.

    Ties are broken by ``tie_order`` (lower first; e.g. the rank of each item id in sorted order) or,
    without it, by position. Items scoring ``-inf`` (filtered out) or NaN are never returned, so the
    result is shorter than ``k`` when fewer candidates remain.
    """
    s = np.asarray(scores)
    if k < 1 or s.size == 0:
        return np.zeros(0, np.int64)
    kk = min(k, s.size)
    cand = _best_finite_fast(s, kk)
    if cand is None:  # filters left fewer than k items, or a +inf score: pick among the finite positions
        finite = np.flatnonzero(np.isfinite(s))
        if finite.size == 0:
            return np.zeros(0, np.int64)
        kk = min(k, finite.size)
        cand = finite[np.argpartition(-s[finite], kk - 1)[:kk]] if kk < finite.size else finite
        cand = finite[s[finite] >= s[cand].min()]
    # every item tied with the k-th best competes on the tie order
    tie = cand if tie_order is None else np.asarray(tie_order)[cand]
    return cand[np.lexsort((tie, -s[cand]))][:kk].astype(np.int64)
