"""Evaluation metrics: rating errors, prequential rank/DCG (docs/evaluation.md) and top-K list metrics.

Prequential protocol: every event ``(u, i, t)`` is scored against the model as it was *before* training
on it; the target's rank among all items gives ``DCG@K = 1/log2(rank+1)`` if ``rank <= K`` else 0.

Seen-item exclusion has three modes, kept apart on purpose (see :data:`EXCLUSION_MODES`):

``"off"``
    every item is a candidate;
``"exclude_seen"``
    Alpenglow's definition: the user's previously seen items leave the candidate list, but the target
    is always ranked, even if the user has seen it;
``"strict"``
    a truly filtered list: seen items leave the list, and an event whose target was already seen gets
    rank 0 (DCG 0).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import pandas as pd

EXCLUSION_MODES: tuple[str, ...] = ("off", "exclude_seen", "strict")
_PERIOD_MS = {"day": 86_400_000, "week": 7 * 86_400_000}


def rmse(pred: np.ndarray, actual: np.ndarray) -> float:
    """Root mean squared error (NaN for empty input)."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.sqrt(np.mean(d * d))) if d.size else float("nan")


def mae(pred: np.ndarray, actual: np.ndarray) -> float:
    """Mean absolute error (NaN for empty input)."""
    d = np.asarray(pred, dtype=np.float64) - np.asarray(actual, dtype=np.float64)
    return float(np.mean(np.abs(d))) if d.size else float("nan")


def dcg_from_ranks(ranks: np.ndarray, k: int = 100) -> np.ndarray:
    """DCG of one relevant item per event: ``1/log2(rank+1)`` if ``1 <= rank <= k`` else 0.

    Ranks are 1-based; a rank of 0 or below means "not ranked" (e.g. filtered out in strict mode).
    """
    r = np.asarray(ranks, dtype=np.float64)
    out = np.zeros(r.shape, dtype=np.float64)
    ok = (r >= 1) & (r <= k)
    out[ok] = 1.0 / np.log2(r[ok] + 1.0)
    return out


def _check_mode(mode: str, exclude: Sequence[np.ndarray] | None, n: int) -> None:
    if mode not in EXCLUSION_MODES:
        raise ValueError(f"unknown exclusion mode {mode!r}; supported values: {', '.join(EXCLUSION_MODES)}")
    if mode != "off":
        if exclude is None:
            raise ValueError(f"mode {mode!r} needs exclude (one array of seen item indices per event)")
        if len(exclude) != n:
            raise ValueError(f"exclude has {len(exclude)} entries, expected one per event ({n})")


def ranks_of_targets(
    scores: np.ndarray,
    targets: np.ndarray,
    exclude: Sequence[np.ndarray] | None = None,
    mode: str = "off",
) -> np.ndarray:
    """1-based rank of each event's target item among the candidate items.

    Parameters
    ----------
    scores : float array [n_events, n_items]
        Model scores, one row per event.
    targets : int array [n_events]
        Column index of each event's target item.
    exclude : sequence of int arrays, optional
        ``exclude[e]`` holds the item indices the user had seen before event ``e`` (duplicates are
        fine; may contain the target). Required unless ``mode == "off"``, where it is ignored.
    mode : {"off", "exclude_seen", "strict"}
        Seen-item exclusion, see the module docstring.

    Returns
    -------
    int64 array [n_events]
        ``1 + number of candidate items scoring strictly higher than the target``. Ties are counted
        in the target's favour (a target tied with other items gets the best of the tied ranks), so a
        constant model ranks every target first; a NaN target score also gets rank 1. In ``"strict"``
        mode an already seen target gets rank 0.
    """
    scores = np.asarray(scores)
    targets = np.asarray(targets, dtype=np.int64)
    n = scores.shape[0]
    if targets.shape != (n,):
        raise ValueError(f"targets must have shape ({n},), got {targets.shape}")
    _check_mode(mode, exclude, n)
    rows = np.arange(n)
    target_score = scores[rows, targets]
    higher = scores > target_score[:, None]
    if mode != "off" and n:
        assert exclude is not None
        lengths = np.fromiter((len(x) for x in exclude), dtype=np.int64, count=n)
        seen = np.zeros(scores.shape, dtype=bool)  # duplicates in exclude are harmless here
        if lengths.sum():
            seen_items = np.concatenate([np.asarray(x, dtype=np.int64) for x in exclude])
            seen[np.repeat(rows, lengths), seen_items] = True
        target_seen = seen[rows, targets]
        seen[rows, targets] = False  # the target itself is always a candidate (or, in strict, rank 0)
        higher &= ~seen
    ranks = 1 + np.count_nonzero(higher, axis=1).astype(np.int64)
    if mode == "strict" and n:
        ranks[target_seen] = 0
    return ranks


def prequential_dcg(
    user_vecs: np.ndarray,
    item_matrix: np.ndarray,
    targets: np.ndarray,
    *,
    k: int = 100,
    exclude: Sequence[np.ndarray] | None = None,
    mode: str = "off",
    user_bias: np.ndarray | None = None,
    item_bias: np.ndarray | None = None,
    chunk: int = 4096,
) -> np.ndarray:
    """DCG@k per event for scores ``user_vecs @ item_matrix.T (+ user_bias + item_bias)``.

    Parameters
    ----------
    user_vecs : float array [n_events, r]
        The scoring user's vector *per event* (the model state before the event).
    item_matrix : float array [n_items, r]
        Item vectors; row index = item index used by ``targets`` and ``exclude``.
    targets : int array [n_events]
        Target item index per event.
    k, exclude, mode
        See :func:`dcg_from_ranks` and :func:`ranks_of_targets`.
    user_bias : float array [n_events], optional
        Per-event user bias (does not change ranks; accepted for symmetry).
    item_bias : float array [n_items], optional
    chunk : int
        Events scored at once; memory is ``chunk * n_items`` scores. The result does not depend on it.

    Examples
    --------
    >>> dcg = prequential_dcg(P[event_users], Q, event_items, k=100)
    >>> dcg.mean()
    """
    user_vecs = np.asarray(user_vecs)
    targets = np.asarray(targets, dtype=np.int64)
    n = user_vecs.shape[0]
    _check_mode(mode, exclude, n)
    if chunk < 1:
        raise ValueError(f"chunk must be >= 1, got {chunk}")
    item_t = np.ascontiguousarray(np.asarray(item_matrix).T)
    out = np.empty(n, dtype=np.float64)
    for lo in range(0, n, chunk):
        hi = min(lo + chunk, n)
        s = user_vecs[lo:hi] @ item_t
        if item_bias is not None:
            s = s + np.asarray(item_bias, dtype=s.dtype)[None, :]
        if user_bias is not None:
            s = s + np.asarray(user_bias[lo:hi], dtype=s.dtype)[:, None]
        ex = None if exclude is None or mode == "off" else exclude[lo:hi]
        out[lo:hi] = dcg_from_ranks(ranks_of_targets(s, targets[lo:hi], ex, mode), k)
    return out


# --------------------------------------------------------------------------- top-K list metrics
# Binary relevance. Each function returns one value per list (take ``.mean()`` for the average).


def _hits(recommended: Sequence[Sequence], relevant: Sequence[set], k: int) -> list[np.ndarray]:
    if len(recommended) != len(relevant):
        raise ValueError(f"{len(recommended)} recommendation lists but {len(relevant)} relevant sets")
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    out = []
    for rec, rel in zip(recommended, relevant, strict=True):
        seen: set = set()
        hit = np.zeros(k, dtype=bool)
        for j, x in enumerate(list(rec)[:k]):
            hit[j] = x in rel and x not in seen  # a repeated id counts once
            seen.add(x)
        out.append(hit)
    return out


def dcg_at_k(recommended: Sequence[Sequence], relevant: Sequence[set], k: int) -> np.ndarray:
    """``sum_j rel_j / log2(j+1)`` over the first k positions (j 1-based) of each list."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    return np.array([float(h @ disc) for h in _hits(recommended, relevant, k)], dtype=np.float64)


def ndcg_at_k(recommended: Sequence[Sequence], relevant: Sequence[set], k: int) -> np.ndarray:
    """DCG@k over the ideal DCG of ``min(|relevant|, k)`` hits; 0 when ``relevant`` is empty."""
    disc = 1.0 / np.log2(np.arange(2, k + 2))
    ideal = np.concatenate([[0.0], np.cumsum(disc)])
    dcg = dcg_at_k(recommended, relevant, k)
    idcg = np.array([ideal[min(len(r), k)] for r in relevant], dtype=np.float64)
    return np.divide(dcg, idcg, out=np.zeros_like(dcg), where=idcg > 0)


def precision_at_k(recommended: Sequence[Sequence], relevant: Sequence[set], k: int) -> np.ndarray:
    """Hits in the first k positions divided by k (short lists are not rescaled)."""
    return np.array([h.sum() / k for h in _hits(recommended, relevant, k)], dtype=np.float64)


def recall_at_k(recommended: Sequence[Sequence], relevant: Sequence[set], k: int) -> np.ndarray:
    """Hits in the first k positions divided by ``|relevant|``; 0 when ``relevant`` is empty."""
    hits = _hits(recommended, relevant, k)
    return np.array([h.sum() / len(r) if r else 0.0 for h, r in zip(hits, relevant, strict=True)])


def period_means(
    ts_ms: np.ndarray, values: np.ndarray, period: str = "week", origin_ms: int | None = None
) -> pd.DataFrame:
    """Mean of ``values`` per day or week.

    Periods are ``[origin + i*len, origin + (i+1)*len)``; ``origin_ms`` defaults to the UTC midnight
    on or before the first timestamp, so weeks count from the start of the stream. Periods without
    events are omitted; NaN values are ignored (``n`` counts the non-NaN values).

    Returns
    -------
    DataFrame with columns ``period_start`` (UTC-naive datetime64), ``period_index`` (int64, may be
    negative for events before ``origin_ms``), ``n``, ``mean``; sorted by ``period_index``.
    """
    if period not in _PERIOD_MS:
        raise ValueError(f"unknown period {period!r}; supported values: {', '.join(_PERIOD_MS)}")
    ts = np.asarray(ts_ms, dtype=np.int64)
    vals = np.asarray(values, dtype=np.float64)
    if ts.shape != vals.shape:
        raise ValueError(f"ts_ms and values differ in shape: {ts.shape} vs {vals.shape}")
    length = _PERIOD_MS[period]
    if origin_ms is None:
        origin_ms = int(ts.min() // 86_400_000 * 86_400_000) if ts.size else 0
    idx = (ts - origin_ms) // length
    g = pd.DataFrame({"period_index": idx, "v": vals}).groupby("period_index", sort=True)["v"]
    out = pd.DataFrame({"n": g.count(), "mean": g.mean()}).reset_index()
    out.insert(0, "period_start", pd.to_datetime(origin_ms + out["period_index"] * length, unit="ms"))
    out["period_index"] = out["period_index"].astype(np.int64)
    out["n"] = out["n"].astype(np.int64)
    return out
