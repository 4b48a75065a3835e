from __future__ import annotations

import numpy as np
import pandas as pd
import pytest

from dsgd.core.metrics import (
    dcg_at_k,
    dcg_from_ranks,
    mae,
    ndcg_at_k,
    period_means,
    precision_at_k,
    prequential_dcg,
    ranks_of_targets,
    recall_at_k,
    rmse,
)


def test_rmse_and_mae_on_hand_computed_errors():
    pred, actual = np.array([1.0, 2.0, 3.0]), np.array([2.0, 2.0, 5.0])
    assert rmse(pred, actual) == pytest.approx(np.sqrt(5 / 3))
    assert mae(pred, actual) == pytest.approx(1.0)


def test_dcg_from_ranks_hand_values_and_cutoff():
    d = dcg_from_ranks(np.array([1, 3, 7, 100, 101, 0, -1]), k=100)
    assert d[0] == 1.0
    assert d[1] == 0.5
    assert d[2] == pytest.approx(1 / 3)
    assert d[3] == pytest.approx(1 / np.log2(101))
    assert list(d[4:]) == [0.0, 0.0, 0.0]
    assert dcg_from_ranks(np.array([3]), k=2)[0] == 0.0


def test_target_tied_with_others_gets_the_best_rank():
    scores = np.array([[0.5, 0.5, 0.5, 0.9], [1.0, 1.0, 1.0, 1.0]], dtype=np.float32)
    assert ranks_of_targets(scores, np.array([1, 2])).tolist() == [2, 1]


# Hand-built case: items 0..4, scores, target, the user's seen items (before the event).
SCORES = np.array(
    [
        [0.9, 0.8, 0.7, 0.6, 0.5],  # target 3; seen {0, 2}: both score higher
        [0.9, 0.8, 0.7, 0.6, 0.5],  # target 1; seen {1, 4}: the target itself was seen, 4 scores lower
        [0.1, 0.2, 0.3, 0.4, 0.5],  # target 0; seen {} -> same in every mode
        [0.9, 0.8, 0.7, 0.6, 0.5],  # target 2; seen {0, 0, 1, 2}: duplicates, target seen
    ],
    dtype=np.float32,
)
TARGETS = np.array([3, 1, 0, 2])
SEEN = [np.array([0, 2]), np.array([1, 4]), np.array([], dtype=np.int64), np.array([0, 0, 1, 2])]


@pytest.mark.parametrize(
    ("mode", "expected"),
    [
        ("off", [4, 2, 5, 3]),
        ("exclude_seen", [2, 2, 5, 1]),  # other seen items leave the list, target always ranked
        ("strict", [2, 0, 5, 0]),  # a seen target is not rankable
    ],
)
def test_exclusion_modes_on_hand_built_case(mode, expected):
    assert ranks_of_targets(SCORES, TARGETS, SEEN, mode).tolist() == expected


def test_unknown_mode_lists_allowed_values():
    with pytest.raises(ValueError, match="off, exclude_seen, strict"):
        ranks_of_targets(SCORES, TARGETS, SEEN, "filtered")


def test_exclusion_modes_need_exclude():
    with pytest.raises(ValueError, match="needs exclude"):
        ranks_of_targets(SCORES, TARGETS, None, "strict")


def _brute_dcg(scores, targets, seen, mode, k):
    out = []
    for e, t in enumerate(targets):
        s = scores[e]
        seen_e = set(seen[e].tolist()) if mode != "off" else set()
        if mode == "strict" and t in seen_e:
            out.append(0.0)
            continue
        cand = [j for j in range(len(s)) if j == t or j not in seen_e]
        rank = 1 + sum(s[j] > s[t] for j in cand)
        out.append(1 / np.log2(rank + 1) if rank <= k else 0.0)
    return np.array(out)


@pytest.mark.parametrize("mode", ["off", "exclude_seen", "strict"])
def test_prequential_dcg_matches_brute_force_and_ignores_chunking(mode):
    rng = np.random.default_rng(5)
    n, n_items, r = 60, 40, 4
    users = rng.standard_normal((n, r)).astype(np.float32)
    items = rng.standard_normal((n_items, r)).astype(np.float32)
    ib = rng.standard_normal(n_items).astype(np.float32)
    ub = rng.standard_normal(n).astype(np.float32)
    targets = rng.integers(0, n_items, n)
    seen = [rng.integers(0, n_items, rng.integers(0, 15)) for _ in range(n)]
    scores = users @ items.T + ib[None, :] + ub[:, None]
    expected = _brute_dcg(scores, targets, seen, mode, k=10)
    for chunk in (1, 7, 4096):
        got = prequential_dcg(
            users, items, targets, k=10, exclude=seen, mode=mode, user_bias=ub, item_bias=ib, chunk=chunk
        )
        np.testing.assert_allclose(got, expected)


def test_topk_metrics_small_case():
    rec = [["a", "b", "c", "d"], ["x", "y"], ["p"]]
    rel = [{"b", "d", "z"}, {"x"}, set()]
    dcg = dcg_at_k(rec, rel, 3)
    assert dcg.tolist() == pytest.approx([1 / np.log2(3), 1.0, 0.0])
    idcg0 = 1 + 1 / np.log2(3) + 1 / np.log2(4)  # min(|rel|=3, k=3) ideal hits
    assert ndcg_at_k(rec, rel, 3).tolist() == pytest.approx([dcg[0] / idcg0, 1.0, 0.0])
    assert precision_at_k(rec, rel, 3).tolist() == pytest.approx([1 / 3, 1 / 3, 0.0])
    assert recall_at_k(rec, rel, 3).tolist() == pytest.approx([1 / 3, 1.0, 0.0])
    assert recall_at_k(rec, rel, 4)[0] == pytest.approx(2 / 3)


def test_period_means_groups_by_day_and_week_from_stream_start():
    day = 86_400_000
    origin = 1_600_041_600_000  # a UTC midnight
    ts = np.array([origin + 5, origin + day + 1, origin + day + 2, origin + 9 * day], dtype=np.int64)
    vals = np.array([1.0, 2.0, 4.0, 8.0])
    d = period_means(ts, vals, "day")
    assert d["period_index"].tolist() == [0, 1, 9]
    assert d["n"].tolist() == [1, 2, 1]
    assert d["mean"].tolist() == [1.0, 3.0, 8.0]
    assert d["period_start"].iloc[1] == pd.Timestamp(origin + day, unit="ms")
    w = period_means(ts, vals, "week")
    assert w["period_index"].tolist() == [0, 1]
    assert w["mean"].tolist() == [7 / 3, 8.0]
    shifted = period_means(ts, vals, "week", origin_ms=origin + 2 * day)
    assert shifted["period_index"].tolist() == [-1, 1]
    with pytest.raises(ValueError, match="day, week"):
        period_means(ts, vals, "month")
