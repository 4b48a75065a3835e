"""Prequential evaluation of a micro-batch against the model as it was before the batch.

Every event (u, i) of the batch (or a seeded sample of at most ``max_events``) is ranked among all
known items with the pre-batch factors: DCG@K = 1/log2(rank+1) if rank <= K else 0 (GUIDE.md §4).
Unknown users are ranked by item popularity (the serving fallback); an unknown item scores 0. The
popularity baseline's DCG on the same events is reported beside it. Micro-batch mode is coarser than
per-event evaluation: the whole batch sees the model as it was before the batch.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from dsgd.metrics import dcg_from_ranks, prequential_dcg


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


def evaluate_batch(events: pd.DataFrame, *, user_index: dict[str, np.ndarray], item_ids: np.ndarray,
                   item_vecs: np.ndarray, item_bias: np.ndarray, item_count: np.ndarray, k: int,
                   explicit: bool, mu: float = 0.0) -> dict[str, float]:
    """Mean DCG@K of the model and of popularity on ``events`` (columns user, item).

    ``user_index`` maps a known user id to (vector, bias). Returns ``dcg``, ``dcg_popularity``,
    ``dcg_events`` (events scored) and ``dcg_known_users`` (share of events whose user had a vector).
    """
    n = len(events)
    if n == 0 or len(item_ids) == 0:
        return {"dcg": float("nan"), "dcg_popularity": float("nan"), "dcg_events": n, "dcg_known_users": 0.0}
    pos = {iid: j for j, iid in enumerate(item_ids)}
    targets = np.array([pos.get(i, -1) for i in events["item"]], dtype=np.int64)
    known_item = targets >= 0
    users = events["user"].to_numpy()
    known_user = np.array([u in user_index for u in users], dtype=bool)
    dcg = np.zeros(n)
    pop_scores = item_count.astype(np.float32)[None, :]
    # popularity for everyone (baseline), and for unknown users (fallback)
    pop_ranks = np.zeros(n, dtype=np.int64)
    if known_item.any():
        t = targets[known_item]
        higher = (pop_scores[0][None, :] > pop_scores[0][t][:, None]).sum(axis=1)
        pop_ranks[known_item] = 1 + higher
    pop_dcg = dcg_from_ranks(pop_ranks, k)
    sel = known_item & known_user
    if sel.any():
        uv = np.stack([user_index[u][0] for u in users[sel]]).astype(np.float32)
        ub = np.array([user_index[u][1] for u in users[sel]], dtype=np.float32) if explicit else None
        dcg[sel] = prequential_dcg(uv, item_vecs.astype(np.float32), targets[sel], k=k,
                                   user_bias=ub, item_bias=item_bias.astype(np.float32) if explicit else None)
    cold = known_item & ~known_user
    dcg[cold] = pop_dcg[cold]
    return {"dcg": float(dcg.mean()), "dcg_popularity": float(pop_dcg.mean()), "dcg_events": int(n),
            "dcg_known_users": float(known_user.mean())}
