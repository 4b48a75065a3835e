from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from dsgd.core.columns import ITEM, RATING, SEQ, TS, USER
from dsgd.core.metrics import prequential_dcg
from dsgd.evaluation.synthetic import generate_stream, planted_ratings, stream_truth, to_json_lines


def _idx(ids: pd.Series) -> np.ndarray:
    return ids.str[1:].astype(int).to_numpy()


def test_same_seed_same_stream_other_seed_differs():
    a = generate_stream(3000, seed=4, implicit=False)
    pd.testing.assert_frame_equal(a, generate_stream(3000, seed=4, implicit=False))
    assert not a[ITEM].equals(generate_stream(3000, seed=5, implicit=False)[ITEM])


@pytest.mark.parametrize("implicit", [True, False])
def test_schema_dtypes_and_time_order(implicit):
    df = generate_stream(2000, n_users=50, n_items=30, implicit=implicit, start_ms=1000, duration_days=1)
    assert list(df.columns) == [USER, ITEM, RATING, TS, SEQ]
    assert df[RATING].dtype == np.float32 and df[TS].dtype == np.int64 and df[SEQ].dtype == np.int64
    assert df[USER].str.match(r"^u\d+$").all() and df[ITEM].str.match(r"^i\d+$").all()
    assert (np.diff(df[TS].to_numpy()) >= 0).all()
    assert df[TS].min() >= 1000 and df[TS].max() < 1000 + 86_400_000
    assert df[SEQ].tolist() == list(range(2000))
    if implicit:
        assert df[RATING].isna().all()
    else:
        assert df[RATING].between(1.0, 5.0).all() and df[RATING].std() > 0.3


def _top_share(series: pd.Series, top: int) -> float:
    return float(series.value_counts().iloc[:top].sum() / len(series))


def test_popularity_and_activity_skews_concentrate_events():
    flat = generate_stream(20000, popularity_skew=0.0, activity_skew=0.0, repeat_prob=0.0, seed=1)
    skewed = generate_stream(20000, popularity_skew=1.5, activity_skew=1.5, repeat_prob=0.0, seed=1)
    assert _top_share(skewed[ITEM], 10) > _top_share(flat[ITEM], 10) + 0.1
    assert _top_share(skewed[USER], 10) > _top_share(flat[USER], 10) + 0.1


def test_repeat_prob_increases_repeated_user_item_pairs():
    kw = {"n_users": 200, "n_items": 2000, "temperature": 2.0, "seed": 2}
    never = generate_stream(10000, repeat_prob=0.0, **kw)[[USER, ITEM]].duplicated().mean()
    often = generate_stream(10000, repeat_prob=0.8, **kw)[[USER, ITEM]].duplicated().mean()
    assert often > never + 0.3


@pytest.mark.parametrize("sampler", ["exact", "sir"])
def test_true_tastes_rank_events_better_than_popularity(sampler):
    kw = {"n_users": 300, "n_items": 200, "seed": 3}
    df = generate_stream(20000, repeat_prob=0.0, sampler=sampler, **kw)
    truth = stream_truth(**kw)
    u, i = _idx(df[USER]), _idx(df[ITEM])
    oracle = prequential_dcg(
        truth.user_start[u] / truth.temperature, truth.item_vecs, i, item_bias=truth.item_logpop
    )
    pop = prequential_dcg(np.zeros((len(u), 1)), np.zeros((200, 1)), i, item_bias=truth.item_logpop)
    assert oracle.mean() > pop.mean() * 1.2


def test_drift_rotates_tastes_away_from_the_start():
    kw = {"n_users": 100, "n_items": 200, "seed": 6, "drift": 1.0}
    df = generate_stream(20000, repeat_prob=0.0, **kw)
    truth = stream_truth(**kw)
    late = df.iloc[-5000:]
    u, i = _idx(late[USER]), _idx(late[ITEM])
    start = prequential_dcg(
        truth.user_start[u] / truth.temperature, truth.item_vecs, i, item_bias=truth.item_logpop
    )
    now = prequential_dcg(
        truth.user_vecs(u, 1.0) / truth.temperature, truth.item_vecs, i, item_bias=truth.item_logpop
    )
    assert now.mean() > start.mean() * 1.2


def test_planted_ratings_follow_the_low_rank_model():
    df, p, q = planted_ratings(100, 80, 4, 0.2, 0.1, seed=0)
    assert len(df) == 1600 and p.shape == (100, 4) and q.shape == (80, 4)
    assert not df[[USER, ITEM]].duplicated().any()
    assert (np.diff(df[TS].to_numpy()) >= 0).all() and df[SEQ].tolist() == list(range(1600))
    dots = np.einsum("ij,ij->i", p[_idx(df[USER])], q[_idx(df[ITEM])])
    assert np.corrcoef(dots, df[RATING])[0, 1] > 0.95
    assert abs((df[RATING] - dots).mean() - 3.0) < 0.02


def test_to_json_lines_omits_nan_rating():
    df = pd.DataFrame(
        {
            USER: ["u1", "u2"],
            ITEM: ["i1", "i2"],
            RATING: np.array([np.nan, 3.5], dtype=np.float32),
            TS: np.array([5, 6], dtype=np.int64),
            SEQ: np.array([0, 1], dtype=np.int64),
        }
    )
    lines = list(to_json_lines(df))
    assert lines[0] == b'{"user":"u1","item":"i1","ts":5}'
    assert json.loads(lines[1]) == {"user": "u2", "item": "i2", "rating": 3.5, "ts": 6}
