from __future__ import annotations

import numpy as np
import pytest

from dsgd.core.kernel import run_block
from dsgd.core.params import KernelParams
from dsgd.core.reference import run_block_reference

N_U, N_I = 40, 25


def _factors(rank, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.normal(0, 0.1, (N_U, rank)).astype(np.float32), rng.normal(0, 0.1, N_U).astype(np.float32),
            rng.integers(0, 3, N_U).astype(np.int64), rng.normal(0, 0.1, (N_I, rank)).astype(np.float32),
            rng.normal(0, 0.1, N_I).astype(np.float32), rng.integers(0, 3, N_I).astype(np.int64)]


def _events(n=400, seed=1, idx_dtype=np.int32):
    rng = np.random.default_rng(seed)
    return dict(u_idx=rng.integers(0, N_U, n).astype(idx_dtype),
                i_idx=rng.integers(0, N_I, n).astype(idx_dtype),
                r=rng.uniform(1, 5, n).astype(np.float32), ts=rng.integers(0, 60, n).astype(np.int64),
                seq=rng.permutation(n).astype(np.int64))


def _copy(fs):
    return [a.copy() for a in fs]


def _run(fn, fs, ev, pool, weight, params, seed=99):
    return fn(*fs, ev["u_idx"], ev["i_idx"], ev["r"], ev["ts"], ev["seq"], pool, weight, params, seed)


PARAMS = {
    "explicit_bias": KernelParams(lr=0.05, reg=0.02, mu=3.0, implicit=False, use_bias=True),
    "explicit_nobias": KernelParams(lr=0.05, reg=0.02, mu=3.0, implicit=False, use_bias=False),
    "implicit_uniform": KernelParams(lr=0.1, reg=0.01, mu=3.0, implicit=True, use_bias=False, negatives=4),
    "implicit_popularity_bias": KernelParams(lr=0.1, reg=0.01, mu=0.0, implicit=True, use_bias=True,
                                             negatives=5, negative_sampling="popularity"),
}


@pytest.mark.parametrize("rank", [1, 8, 33])
@pytest.mark.parametrize("name", list(PARAMS))
def test_kernel_equals_reference(name, rank):
    params = PARAMS[name]
    fs = _factors(rank)
    ev = _events()
    pool = np.arange(3, N_I, dtype=np.int64)  # a pool that misses some items
    weight = (fs[5][pool] + 1).astype(np.float64)
    got_fs, ref_fs = _copy(fs), _copy(fs)
    got = _run(run_block, got_fs, ev, pool, weight, params)
    ref = _run(run_block_reference, ref_fs, ev, pool, weight, params)
    assert got[1] == ref[1] == 400
    assert got[0] == pytest.approx(ref[0], rel=1e-6)
    # the compiled kernel (fastmath: reassociated float32 sums) and NumPy differ by <= 6e-8 here
    for g, r in zip(got_fs, ref_fs, strict=True):
        np.testing.assert_allclose(g, r, rtol=1e-6, atol=5e-7)
    assert not np.allclose(got_fs[0], fs[0])  # something was trained


def test_input_order_does_not_matter():
    params = PARAMS["implicit_popularity_bias"]
    fs = _factors(8)
    ev = _events()
    pool = np.arange(N_I)
    weight = np.linspace(1, 3, N_I)
    a_fs, b_fs = _copy(fs), _copy(fs)
    a = _run(run_block, a_fs, ev, pool, weight, params)
    perm = np.random.default_rng(5).permutation(400)
    b = _run(run_block, b_fs, {k: v[perm] for k, v in ev.items()}, pool, weight, params)
    assert a == b
    for x, y in zip(a_fs, b_fs, strict=True):
        np.testing.assert_array_equal(x, y)


def test_events_are_applied_in_ts_then_seq_order():
    params = PARAMS["explicit_bias"]
    fs = _factors(4)
    ev = _events(50)
    order = np.lexsort((ev["seq"], ev["ts"]))
    a_fs, b_fs = _copy(fs), _copy(fs)
    _run(run_block, a_fs, ev, None, None, params)
    for n in order:  # one event at a time, in (ts, seq) order
        one = {k: v[n:n + 1] for k, v in ev.items()}
        _run(run_block, b_fs, one, None, None, params)
    for x, y in zip(a_fs, b_fs, strict=True):
        np.testing.assert_array_equal(x, y)


def test_counts_count_positives_only_and_loss_is_sse_before_update():
    params = PARAMS["implicit_uniform"]
    fs = _factors(6)
    ev = _events(100)
    before = _copy(fs)
    sse, n = _run(run_block, fs, ev, np.arange(N_I), None, params)
    assert n == 100
    np.testing.assert_array_equal(fs[2] - before[2], np.bincount(ev["u_idx"], minlength=N_U))
    np.testing.assert_array_equal(fs[5] - before[5], np.bincount(ev["i_idx"], minlength=N_I))
    # the first event's error is measured on the untouched factors
    first = np.lexsort((ev["seq"], ev["ts"]))[0]
    e0 = 1.0 - float(before[0][ev["u_idx"][first]] @ before[3][ev["i_idx"][first]])
    one = {k: v[first:first + 1] for k, v in ev.items()}
    sse1, n1 = _run(run_block, _copy(before), one, np.arange(N_I), None, params)
    assert (sse1, n1) == (pytest.approx(e0 * e0, rel=1e-5), 1)
    assert sse > 0


def test_hand_computed_explicit_event():
    U = np.array([[1.0, 0.0]], np.float32)
    V = np.array([[0.5, 2.0]], np.float32)
    bu, bi = np.array([0.1], np.float32), np.array([0.2], np.float32)
    uc, ic = np.zeros(1, np.int64), np.zeros(1, np.int64)
    params = KernelParams(lr=0.1, reg=0.5, mu=3.0, implicit=False, use_bias=True)
    sse, n = run_block(U, bu, uc, V, bi, ic, np.array([0]), np.array([0]), np.array([4.0]), np.array([0]),
                       np.array([0]), None, None, params, 0)
    # pred = 3 + 0.1 + 0.2 + 0.5 = 3.8, e = 0.2
    assert (sse, n) == (pytest.approx(0.04, abs=1e-6), 1)
    np.testing.assert_allclose(bu, [0.115], rtol=1e-6)
    np.testing.assert_allclose(bi, [0.21], rtol=1e-6)
    np.testing.assert_allclose(U, [[0.96, 0.04]], rtol=1e-6)
    np.testing.assert_allclose(V, [[0.495, 1.9]], rtol=1e-6)
    assert uc.tolist() == [1] and ic.tolist() == [1]


def test_negative_equal_to_positive_is_skipped_and_empty_pool_means_no_negatives():
    params = PARAMS["implicit_uniform"]
    fs = _factors(5)
    ev = _events(60)
    ev["i_idx"][:] = 7
    no_neg, only_pos, empty = _copy(fs), _copy(fs), _copy(fs)
    _run(run_block, no_neg, ev, None, None, params)
    _run(run_block, only_pos, ev, np.array([7]), None, params)
    _run(run_block, empty, ev, np.zeros(0, np.int64), None, params)
    for a, b, c in zip(no_neg, only_pos, empty, strict=True):
        np.testing.assert_array_equal(a, b)
        np.testing.assert_array_equal(a, c)


def test_negatives_depend_on_seed_only_through_the_stream():
    params = PARAMS["implicit_uniform"]
    fs = _factors(5)
    ev = _events(60)
    a, b, c = _copy(fs), _copy(fs), _copy(fs)
    _run(run_block, a, ev, np.arange(N_I), None, params, seed=1)
    _run(run_block, b, ev, np.arange(N_I), None, params, seed=1)
    _run(run_block, c, ev, np.arange(N_I), None, params, seed=2)
    np.testing.assert_array_equal(a[3], b[3])
    assert not np.array_equal(a[3], c[3])


def test_int64_indices_and_large_seed():
    params = PARAMS["implicit_popularity_bias"]
    fs = _factors(3)
    ev = _events(80, idx_dtype=np.int64)
    pool = np.arange(N_I)
    w = np.ones(N_I)
    a, b = _copy(fs), _copy(fs)
    ra = _run(run_block, a, ev, pool, w, params, seed=2**64 - 3)
    rb = _run(run_block_reference, b, ev, pool, w, params, seed=2**64 - 3)
    assert ra[0] == pytest.approx(rb[0], rel=1e-6)
    np.testing.assert_allclose(a[3], b[3], rtol=1e-6, atol=5e-7)


def test_bad_index_raises_and_leaves_state_untouched():
    fs = _factors(3)
    before = _copy(fs)
    ev = _events(30)
    ev["i_idx"][20] = N_I
    with pytest.raises(IndexError):
        _run(run_block, fs, ev, None, None, PARAMS["explicit_bias"])
    for x, y in zip(fs, before, strict=True):
        np.testing.assert_array_equal(x, y)


def test_factor_arrays_must_have_exact_dtype():
    fs = _factors(3)
    fs[0] = fs[0].astype(np.float64)
    with pytest.raises(TypeError, match="U must be"):
        _run(run_block, fs, _events(5), None, None, PARAMS["explicit_bias"])


def test_popularity_needs_aligned_weights():
    with pytest.raises(ValueError, match="neg_weight"):
        _run(run_block, _factors(3), _events(5), np.arange(N_I), np.ones(3),
             PARAMS["implicit_popularity_bias"])


def test_empty_block():
    fs = _factors(3)
    ev = {k: v[:0] for k, v in _events(5).items()}
    assert _run(run_block, fs, ev, None, None, PARAMS["explicit_bias"]) == (0.0, 0)
