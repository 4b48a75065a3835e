"""SideFactors: growth in place, the incrementally merged key index, changed flags and the Arrow edge."""

from __future__ import annotations

import numpy as np
import pyarrow as pa

from dsgd.core.factors import SideFactors, list_array, list_matrix
from dsgd.core.hashing import id_key, init_vectors


def test_many_small_ensures_equal_one_big_one_and_keep_the_key_index_exact():
    rng = np.random.default_rng(0)
    ids = np.array([f"i{n}" for n in rng.integers(0, 3000, 5000)], dtype=object)
    keys = id_key(ids)
    grown, once = SideFactors.empty(4), SideFactors.empty(4)
    for lo in range(0, len(ids), 97):  # many batches: buffers double, the index is merged each time
        rows = grown.ensure(ids[lo:lo + 97], keys[lo:lo + 97], 4, 7, 0.1, "i")
        assert np.array_equal(grown.keys[rows], keys[lo:lo + 97])
    once.ensure(ids, keys, 4, 7, 0.1, "i")
    assert np.array_equal(grown.keys, once.keys) and np.array_equal(grown.ids, once.ids)
    assert np.array_equal(grown.vec, once.vec) and np.array_equal(grown.vec, init_vectors(grown.keys, 4, 7, 0.1, "i"))
    assert np.array_equal(grown.sorted_rows(), np.argsort(grown.keys, kind="stable"))
    absent = id_key(np.array(["nope", "never"], dtype=object))
    assert (grown.index_of(absent) == -1).all()
    assert grown._keys.shape[0] >= len(grown) and grown.vec.flags.c_contiguous


def test_new_rows_are_flagged_changed_until_cleared_and_copies_are_independent():
    s = SideFactors.empty(2)
    ids = np.array(["a", "b"], dtype=object)
    s.ensure(ids, id_key(ids), 2, 1, 0.1, "u")
    assert s.changed.all()
    s.clear_changed()
    assert not s.changed.any()
    c = s.copy()
    c.vec[0] = 9.0
    assert s.vec[0, 0] != 9.0


def test_arrow_round_trip_keeps_every_value():
    s = SideFactors.empty(3)
    ids = np.array(["x", "y", "z"], dtype=object)
    s.ensure(ids, id_key(ids), 3, 5, 0.5, "i")
    s.bias[:] = [0.5, -1.0, 2.0]
    s.count[:] = [1, 2, 3]
    back = SideFactors.from_arrow(s.to_arrow(), 3)
    order = np.argsort(s.keys)
    assert np.array_equal(back.keys, s.keys[order]) and np.array_equal(back.vec, s.vec[order])
    assert np.array_equal(back.bias, s.bias[order]) and np.array_equal(back.count, s.count[order])
    mat = np.arange(12, dtype=np.float32).reshape(4, 3)
    assert np.array_equal(list_matrix(pa.chunked_array([list_array(mat[:2]), list_array(mat[2:])]), 3), mat)
