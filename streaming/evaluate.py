"""Prequential evaluation of a micro-batch against the model as it was before the batch.

Every event (u, i) of the batch (or a seeded sample of at most ``max_events``) is ranked among all
known items with the pre-batch factors: DCG@K = 1/log2(rank+1) if rank <= K else 0 (docs/evaluation.md).
Unknown users are ranked by item popularity (the serving fallback); an unknown item scores 0. The
popularity baseline's DCG on the same events is reported beside it. Micro-batch mode is coarser than
per-event evaluation: the whole batch sees the model as it was before the batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.core.metrics import dcg_from_ranks, ranks_of_targets
from dsgd.core.scoring import score_matrix


def sample_events(events: pd.DataFrame, max_events: int, seed: int) -> pd.DataFrame:
    """A deterministic sample of at most ``max_events`` rows (by seq), so replays score the same rows."""
    if max_events <= 0:
        return events.iloc[0:0]
    events = events.sort_values("seq", kind="stable")
    if len(events) <= max_events:
        return events
    rng = np.random.default_rng(seed)
    pick = np.sort(rng.choice(len(events), size=max_events, replace=False))
    return events.iloc[pick]


def popularity_ranks(count: np.ndarray, targets: np.ndarray) -> np.ndarray:
    """1 + the number of items counted more often than each target (ranks under the popularity model),
    from a histogram of the counts: O(n_items + max count), no sort of the items."""
    count = np.asarray(count, np.int64)
    if count.size == 0:
        return np.zeros(len(targets), np.int64)
    hist = np.bincount(np.maximum(count, 0))
    higher = count.size - np.cumsum(hist)  # higher[c] = items with a count > c
    return 1 + higher[np.maximum(count[targets], 0)]


def sample_size(max_events: int, max_scores: int, n_items: int) -> int:
    """Events a batch evaluates: at most ``max_events``, and at most ``max_scores // n_items`` (at least
    one), so the evaluation's cost is bounded whatever the number of items."""
    if max_events <= 0:
        return 0
    return max(1, min(max_events, max_scores // max(n_items, 1)))


def evaluate_batch(events: pd.DataFrame, *, users: SideFactors, items: SideFactors, k: int,
                   chunk: int = 4096) -> dict[str, float]:
    """Mean DCG@K of the model and of popularity on ``events`` (columns user, item), scored by
    :func:`dsgd.core.scoring.score_matrix` against the pre-batch factors ``users``/``items``.

    Returns ``dcg``, ``dcg_popularity``, ``dcg_events`` (events scored) and ``dcg_known_users`` (share of
    events whose user had a vector). The global mean of explicit models is left out: it shifts every
    score alike and cannot change a rank.
    """
    n = len(events)
    if n == 0 or len(items) == 0:
        return {"dcg": float("nan"), "dcg_popularity": float("nan"), "dcg_events": 0, "dcg_known_users": 0.0}
    targets = items.index_of(id_key(events["item"].to_numpy(object)))
    urows = users.index_of(id_key(events["user"].to_numpy(object)))
    known_item, known_user = targets >= 0, urows >= 0
    pop_ranks = np.zeros(n, dtype=np.int64)
    pop_ranks[known_item] = popularity_ranks(items.count, targets[known_item])
    pop_dcg = dcg_from_ranks(pop_ranks, k)
    dcg = pop_dcg.copy()  # unknown users get the popularity fallback; an unknown item scores 0 either way
    sel = np.flatnonzero(known_item & known_user)
    for lo in range(0, len(sel), chunk):
        rows = sel[lo:lo + chunk]
        scores = score_matrix(users.vec[urows[rows]], items.vec, user_bias=users.bias[urows[rows]],
                              item_bias=items.bias, dtype=np.float32)
        dcg[rows] = dcg_from_ranks(ranks_of_targets(scores, targets[rows]), k)
    return {"dcg": float(dcg.mean()), "dcg_popularity": float(pop_dcg.mean()), "dcg_events": int(n),
            "dcg_known_users": float(known_user.mean())}
