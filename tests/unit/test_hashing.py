from __future__ import annotations

import numpy as np
import pytest
import xxhash

from dsgd.core.hashing import (
    block_of,
    id_key,
    init_vector_py,
    init_vectors,
    mix_seed,
    splitmix64,
    splitmix64_py,
)


def test_id_key_is_xxh64_seed42_as_signed_int64():
    keys = id_key(["abc", "42"])
    assert keys.dtype == np.int64
    raw = xxhash.xxh64_intdigest(b"abc", seed=42)
    assert int(keys[0]) == (raw - (1 << 64) if raw >= 1 << 63 else raw)


def test_id_key_is_stable_and_int_equals_its_string():
    assert id_key([42])[0] == id_key(["42"])[0]
    np.testing.assert_array_equal(id_key(["a", "b", "é"]), id_key(np.array(["a", "b", "é"], dtype=object)))
    assert len(set(id_key([str(i) for i in range(1000)]).tolist())) == 1000


def test_id_key_known_value():
    # pinned so that any change of the hash is caught (equals Spark's xxhash64('42'))
    assert int(id_key(["42"])[0]) == -4744849287861989057


@pytest.mark.parametrize("d", [1, 2, 3, 7, 16])
def test_block_of_is_python_floor_mod(d):
    hashed = id_key([str(i) for i in range(50)]).tolist()
    keys = np.array([-(2**63), -7, -1, 0, 1, 7, 2**63 - 1, *hashed], dtype=np.int64)
    blocks = block_of(keys, d)
    assert blocks.dtype == np.int32
    assert ((blocks >= 0) & (blocks < d)).all()
    assert blocks.tolist() == [int(k) % d for k in keys.tolist()]


def test_block_of_rejects_bad_d():
    with pytest.raises(ValueError, match="d must be"):
        block_of(np.array([1]), 0)


def test_splitmix64_numba_equals_python_and_known_value():
    assert splitmix64_py(0) == 0xE220A8397B1DCDAF  # first output of the reference SplitMix64 at seed 0
    for x in [0, 1, 2**63, 2**64 - 1, 0x123456789ABCDEF, 987654321]:
        assert int(splitmix64(np.uint64(x))) == splitmix64_py(x)


def test_mix_seed_is_deterministic_and_order_sensitive():
    assert mix_seed(1, 2, 3) == mix_seed(1, 2, 3)
    assert mix_seed(1, 2, 3) != mix_seed(3, 2, 1)
    assert mix_seed(-1) == mix_seed(2**64 - 1)
    assert 0 <= mix_seed(-5, 2**70) < 2**64


def test_init_vectors_deterministic_shape_range():
    keys = id_key([f"u{i}" for i in range(500)])
    a = init_vectors(keys, 16, seed=7, scale=0.05, side="u")
    assert a.shape == (500, 16) and a.dtype == np.float32
    np.testing.assert_array_equal(a, init_vectors(keys, 16, seed=7, scale=0.05, side="u"))
    assert np.abs(a).max() <= 0.05
    assert np.abs(a).max() > 0.04  # uses the range
    assert abs(float(a.mean())) < 0.005
    # a row depends only on its own key
    np.testing.assert_array_equal(a[3:4], init_vectors(keys[3:4], 16, seed=7, scale=0.05, side="u"))


def test_init_vectors_differ_by_key_seed_side():
    keys = id_key(["a", "b"])
    a = init_vectors(keys, 8, 1, 0.1, "u")
    assert not np.allclose(a[0], a[1])
    assert not np.allclose(a, init_vectors(keys, 8, 2, 0.1, "u"))
    assert not np.allclose(a, init_vectors(keys, 8, 1, 0.1, "i"))


def test_init_vectors_equal_pure_python():
    keys = id_key(["x", "y", "z"])
    a = init_vectors(keys, 5, 3, 0.01, "i")
    for row, k in zip(a, keys, strict=True):
        np.testing.assert_array_equal(row, np.float32(init_vector_py(int(k), 5, 3, 0.01, "i")))
