"""Pieces of the server that need no JVM: seen sets (two sorted levels, the memory cap) and the
incremental merge of appended row versions (the same rule as a full load)."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dsgd.core.factors import list_array
from dsgd.core.hashing import id_key
from dsgd.serve.loader import latest_per_key, merge
from dsgd.serve.seen import SeenSets, pair_keys, seen_predicate


def test_seen_sets_hold_every_pair_across_merges_and_answer_per_user():
    rng = np.random.default_rng(0)
    seen = SeenSets(max_pairs=10**6, merge_min=500)
    truth: dict[int, set[int]] = {}
    for _ in range(30):  # many small additions: the recent level is merged into main now and then
        u, i = rng.integers(0, 50, 4000), rng.integers(0, 300, 4000)
        seen = seen.add(u, i)
        for a, b in zip(u, i, strict=True):
            truth.setdefault(int(a), set()).add(int(b))
    assert len(seen.main_u) > 0 and len(seen.recent_u) > 0  # merged now and then, a recent level on top
    for user, want in truth.items():
        assert set(seen.items_of(user).tolist()) == want
    assert len(seen.items_of(10**9)) == 0
    assert seen.nbytes == 16 * seen.pairs


def test_the_memory_cap_drops_and_counts_pairs_over_it():
    seen = SeenSets(max_pairs=100).add(np.arange(80), np.arange(80)).add(np.arange(50) + 1000, np.arange(50))
    assert seen.pairs == 100 and seen.dropped == 30


def test_pair_keys_hash_the_ids_like_the_factors_and_the_window_predicate():
    u, i = pair_keys(pa.array(["a", "b", "a"]), pa.chunked_array([pa.array(["x"]), pa.array(["y", "x"])]))
    assert list(u) == list(id_key(["a", "b", "a"])) and list(i) == list(id_key(["x", "y", "x"]))
    assert seen_predicate(0, 0) is None
    assert seen_predicate(2, 5 * 86_400_000) == "event_date >= '1970-01-04'"


def _rows(ids, seq, val, rank=2):
    ids = np.array(ids, dtype=object)
    return pa.table({"id": pa.array(ids.tolist()), "key": pa.array(id_key(ids)),
                     "vec": list_array(np.full((len(ids), rank), val, np.float32)),
                     "bias": pa.array(np.zeros(len(ids), np.float32)), "count": pa.array(np.ones(len(ids), np.int64)),
                     "model_seq": pa.array(np.asarray(seq, np.int64))})


def test_merging_appended_versions_equals_reading_all_versions_at_once():
    first = _rows(["a", "b", "c", "b"], [1, 1, 1, 2], 1.0)
    later = pa.concat_tables([_rows(["c", "d"], [3, 3], 2.0), _rows(["a"], [4], 3.0)])
    full = latest_per_key(pa.concat_tables([first, later]), 2)
    base = latest_per_key(first, 2)
    inc = merge(base, latest_per_key(later, 2))
    o_full, o_inc = np.argsort(full.factors.keys), np.argsort(inc.factors.keys)
    assert list(inc.factors.ids[o_inc]) == list(full.factors.ids[o_full])
    np.testing.assert_array_equal(inc.factors.vec[o_inc], full.factors.vec[o_full])
    np.testing.assert_array_equal(inc.seq[o_inc], full.seq[o_full])
    by_id = dict(zip(full.factors.ids, full.factors.vec[:, 0], strict=True))
    assert by_id == {"a": 3.0, "b": 1.0, "c": 2.0, "d": 2.0}
    # the base rows keep their positions (a, c updated in place, d appended): what the served model can update
    assert list(inc.factors.ids[: len(base.factors)]) == list(base.factors.ids)
    assert sorted(inc.changed.tolist()) == sorted([list(inc.factors.ids).index(x) for x in ("a", "c", "d")])
    assert list(full.factors.index_of(id_key(["d", "a", "x"]))) == [list(full.factors.ids).index("d"),
                                                                    list(full.factors.ids).index("a"), -1]
