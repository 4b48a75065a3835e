"""The one served-score definition (dsgd.core.blend) against direct computations of its formula."""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from dsgd.core.blend import BlendModel, UserFactors, events_ptr
from dsgd.core.factors import SideFactors
from dsgd.core.foldin import fold_in_many, item_gram
from dsgd.core.foldin_rule import FoldInRule, fold_users, item_gram_blas
from dsgd.core.hashing import id_key

RANK = 4


def _side(ids, seed, count=None):
    rng = np.random.default_rng(seed)
    ids = np.array(ids, dtype=object)
    n = len(ids)
    return SideFactors(id_key(ids), ids, rng.standard_normal((n, RANK)).astype(np.float32),
                       rng.standard_normal(n).astype(np.float32) * 0.1,
                       np.asarray(count if count is not None else rng.integers(0, 50, n), np.int64))


def _ref_top(scores: dict[str, float], k: int, exclude=()) -> list[str]:
    cand = [(-s, i) for i, s in scores.items() if i not in exclude and np.isfinite(s)]
    return [i for _, i in sorted(cand)[:k]]


def test_online_scores_top_k_exclusions_and_candidates_match_the_formula():
    items = _side([f"i{j}" for j in range(30)], 1)
    m = BlendModel.from_sides(items, explicit=True, mu_online=0.5, version=3)
    u = (np.arange(RANK, dtype=np.float32) / 3, 0.25)
    want = {str(i): float(np.float32(items.vec[j] @ u[0]) + items.bias[j] + np.float32(0.25) + np.float32(0.5))
            for j, i in enumerate(items.ids)}
    rec = m.recommend(UserFactors.one(RANK, online=u), 7, exclude=[m.rows_of(["i3", "i4"])])[0]
    got = [str(x) for x in m.item_ids[rec.rows]]
    assert got == _ref_top(want, 7, exclude={"i3", "i4"}) and rec.source == "model"
    np.testing.assert_allclose(rec.scores, [want[i] for i in got], rtol=1e-6)
    cand = m.rows_of(["i1", "i2", "i9", "i20"])
    sub = m.recommend(UserFactors.one(RANK, online=u), 3, candidates=cand, exclude=[m.rows_of(["i9"])])[0]
    assert [str(x) for x in m.item_ids[sub.rows]] == _ref_top({i: want[i] for i in ("i1", "i2", "i20")}, 3)


def test_score_blend_mixes_where_both_models_know_the_item_and_uses_the_one_model_elsewhere():
    online = _side(["a", "b", "c", "d"], 2)
    batch = _side(["b", "c", "d", "e"], 3)
    alpha = 0.3
    m = BlendModel.from_sides(online, batch, alpha=alpha, version=5, snapshot_id="asof-1")
    assert set(m.item_ids) == set("abcde")
    uo, ub = (np.ones(RANK, np.float32), 0.0), (np.full(RANK, 0.5, np.float32), 0.1)

    def score(side, ident, u):
        j = list(side.ids).index(ident)
        return float(np.float32(side.vec[j] @ u[0]) + side.bias[j] + np.float32(u[1]))
    s = m.scores(UserFactors.one(RANK, online=uo, batch=ub))[0]
    by = dict(zip(m.item_ids, s, strict=True))
    assert by["a"] == pytest.approx(score(online, "a", uo), rel=1e-6)  # only online has it
    assert by["e"] == pytest.approx(score(batch, "e", ub), rel=1e-6)  # only the snapshot has it
    for i in "bcd":
        assert by[i] == pytest.approx(alpha * score(batch, i, ub) + (1 - alpha) * score(online, i, uo), rel=1e-6)
    only_online = dict(zip(m.item_ids, m.scores(UserFactors.one(RANK, online=uo))[0], strict=True))
    assert only_online["e"] == -np.inf and only_online["b"] == pytest.approx(score(online, "b", uo), rel=1e-6)
    only_batch = dict(zip(m.item_ids, m.scores(UserFactors.one(RANK, batch=ub))[0], strict=True))
    assert only_batch["a"] == -np.inf and only_batch["e"] == pytest.approx(score(batch, "e", ub), rel=1e-6)


def test_cold_users_get_popularity_ties_by_id_without_excluded_items():
    items = _side(["x", "b", "a", "c"], 4, count=[5, 9, 9, 1])
    m = BlendModel.from_sides(items)
    rec = m.recommend(UserFactors.one(RANK), 3, exclude=[m.rows_of(["b"])])[0]
    assert rec.source == "popularity" and [str(x) for x in m.item_ids[rec.rows]] == ["a", "x", "c"]
    assert list(rec.scores) == [9.0, 5.0, 1.0]
    assert [str(x) for x in m.item_ids[m.popularity(2).rows]] == ["a", "b"]


def test_score_ties_are_broken_by_item_id():
    ids = ["z", "m", "a", "q"]
    items = SideFactors(id_key(np.array(ids, dtype=object)), np.array(ids, dtype=object),
                        np.ones((4, RANK), np.float32), np.zeros(4, np.float32), np.zeros(4, np.int64))
    m = BlendModel.from_sides(items)
    rec = m.recommend(UserFactors.one(RANK, online=(np.ones(RANK, np.float32), 0.0)), 3)[0]
    assert [str(x) for x in m.item_ids[rec.rows]] == ["a", "m", "q"]


def test_rows_of_unknown_ids_is_minus_one():
    m = BlendModel.from_sides(_side(["i1", "i2"], 5))
    assert list(m.rows_of(["i2", "nope", "i1"])) == [list(m.item_ids).index("i2"), -1, list(m.item_ids).index("i1")]
    assert list(m.rows_of([])) == []


def test_similar_items_by_cosine_of_the_online_vectors():
    items = _side([f"i{j}" for j in range(12)], 6)
    m = BlendModel.from_sides(items)
    v = items.vec.astype(np.float64)
    cos = v @ v[0] / (np.linalg.norm(v, axis=1) * np.linalg.norm(v[0]))
    cos[0] = -np.inf
    rec = m.similar(0, 4)
    assert list(rec.rows) == list(np.argsort(-cos, kind="stable")[:4])
    np.testing.assert_allclose(rec.scores, cos[rec.rows], rtol=1e-5)


def test_fold_in_of_new_and_known_users_follows_the_rule():
    items = _side([f"i{j}" for j in range(40)], 7)
    m = BlendModel.from_sides(items)
    rule = FoldInRule.for_model(kind="implicit")
    ev = m.rows_of(["i1", "i2", "i3"])
    users = UserFactors(np.zeros((3, RANK), np.float32), np.zeros(3, np.float32), np.array([False, False, True]))
    users.online_vec[2] = 0.3
    ptr = events_ptr([3, 2, 1])
    items_ev = np.concatenate([ev, ev[:2], ev[:1]])
    folded_users, folded = m.fold_in(users, ptr, items_ev, None, rule)
    assert list(folded) == [True, False, True]  # the new user with 2 events is not folded (min 3)
    want, _ = fold_in_many(items.vec, items.bias, users.online_vec, ptr, items_ev, params=rule.online,
                           has_user=users.online_has, user_bias=users.online_bias, gram=item_gram(items.vec))
    np.testing.assert_allclose(folded_users.online_vec[[0, 2]], want[[0, 2]], rtol=1e-5, atol=1e-6)
    recs = m.recommend(folded_users, 5, folded=folded)
    assert [r.source for r in recs] == ["fold-in", "popularity", "fold-in"]


def test_blas_gram_equals_the_compiled_one_and_fold_users_keeps_unfolded_rows():
    V = np.random.default_rng(8).standard_normal((300, RANK)).astype(np.float32)
    rows = np.arange(0, 300, 3)
    np.testing.assert_allclose(item_gram_blas(V, rows, chunk=7), item_gram(V, rows), rtol=1e-5, atol=1e-5)
    start = np.ones((2, RANK), np.float32)
    vecs, _, folded = fold_users(V, None, start, None, np.array([True, False]), events_ptr([0, 1]), np.array([4]),
                                 params=FoldInRule.for_model(kind="implicit").online, new_user_min_events=3)
    assert list(folded) == [False, False]
    np.testing.assert_array_equal(vecs, [[1.0] * RANK, [0.0] * RANK])


def test_the_model_pickles_for_spark_executors():
    m = BlendModel.from_sides(_side(["i1", "i2", "i3"], 9))
    m.similar(0, 2)  # fills a cache
    m2 = pickle.loads(pickle.dumps(m))
    u = UserFactors.one(RANK, online=(np.ones(RANK, np.float32), 0.0))
    assert list(m2.recommend(u, 3)[0].rows) == list(m.recommend(u, 3)[0].rows)


def test_an_updated_model_carries_its_derived_arrays_equal_to_a_fresh_build():
    items = _side([f"i{j}" for j in range(50)], 10)
    old = BlendModel.from_sides(items).prepare()
    rng = np.random.default_rng(11)
    new = items.copy()
    changed = np.array([3, 17, 40])
    new.vec[changed] = rng.standard_normal((3, RANK)).astype(np.float32)
    extra = _side(["z1", "z2"], 12)
    grown = SideFactors(np.concatenate([new.keys, extra.keys]), np.concatenate([new.ids, extra.ids]),
                        np.concatenate([new.vec, extra.vec]), np.concatenate([new.bias, extra.bias]),
                        np.concatenate([new.count, extra.count]))
    for side, rows in ((new, changed), (grown, np.concatenate([changed, [50, 51]]))):
        carried = BlendModel.from_sides(side, previous=old, changed=rows)
        fresh = BlendModel.from_sides(side).prepare()
        np.testing.assert_allclose(carried._cache["gram:online"], fresh._cache["gram:online"], rtol=1e-6, atol=1e-6)
        np.testing.assert_allclose(carried._norms(), fresh._norms(), rtol=1e-12)
        np.testing.assert_array_equal(carried.tie_order, fresh.tie_order)
        u = UserFactors.one(RANK, online=(np.ones(RANK, np.float32), 0.0))
        assert list(carried.recommend(u, 10)[0].rows) == list(fresh.recommend(u, 10)[0].rows)
        assert list(carried.rows_of(["z2", "i7", "nope"])) == list(fresh.rows_of(["z2", "i7", "nope"]))
