"""Throughput of :func:`dsgd.core.kernel.run_block` against a plain minimal numba SGD loop.

Both run the same explicit biased SGD over the same events (block-sorted: grouped by DSGD block with
d x d blocks, random order inside a block, ``ts`` increasing in that order) on the same arrays, after
a warm-up, best of ``--repeat`` interleaved runs. ``ratio``: run_block as in the first epoch over a
batch (it also counts each event for the user/item update counts); ``ratio_later_epochs``: as in every
further epoch over the same batch (``count=False``: checks + SGD). Also timed: run_block's SGD loop
alone (``loop_only``) and its one validation pass (order + bounds check + counts; and without the
counts, so the counting's share is their difference). Prints JSON.

    .venv/bin/python bench/bench_kernel.py [--events 2000000 --users 50000 --items 20000 --d 16]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numba
import numpy as np
from numba import njit

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsgd.core.kernel import _check_and_count, _run_sorted, run_block
from dsgd.core.params import KernelParams


@njit(cache=True, nogil=True, fastmath=True)
def minimal_sgd(U, bu, V, bi, u_idx, i_idx, r, lr, reg, mu):
    """The baseline: the textbook biased SGD loop, nothing else."""
    lr = np.float32(lr)
    reg = np.float32(reg)
    mu = np.float32(mu)
    k = U.shape[1]
    for n in range(u_idx.shape[0]):
        u = u_idx[n]
        i = i_idx[n]
        pred = mu + bu[u] + bi[i]
        for f in range(k):
            pred += U[u, f] * V[i, f]
        e = r[n] - pred
        bu[u] += lr * (e - reg * bu[u])
        bi[i] += lr * (e - reg * bi[i])
        for f in range(k):
            pf = U[u, f]
            qf = V[i, f]
            U[u, f] = pf + lr * (e * qf - reg * pf)
            V[i, f] = qf + lr * (e * pf - reg * qf)


def make_events(n: int, n_u: int, n_i: int, d: int, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    u = rng.integers(0, n_u, n).astype(np.int32)
    i = rng.integers(0, n_i, n).astype(np.int32)
    r = rng.uniform(1, 5, n).astype(np.float32)
    order = np.lexsort((rng.random(n), i % d, u % d))  # block-sorted, random inside a block
    return {"u": u[order], "i": i[order], "r": r[order], "ts": np.arange(n, dtype=np.int64),
            "seq": np.arange(n, dtype=np.int64)}


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def bench_rank(ev: dict[str, np.ndarray], n_u: int, n_i: int, rank: int, repeat: int) -> dict:
    rng = np.random.default_rng(rank)
    U0 = (rng.random((n_u, rank), dtype=np.float32) - 0.5) * 0.02
    V0 = (rng.random((n_i, rank), dtype=np.float32) - 0.5) * 0.02
    params = KernelParams(lr=0.005, reg=0.02, mu=3.0, implicit=False, use_bias=True)
    n = ev["u"].shape[0]

    def state() -> tuple:
        return (U0.copy(), np.zeros(n_u, np.float32), np.zeros(n_u, np.int64), V0.copy(),
                np.zeros(n_i, np.float32), np.zeros(n_i, np.int64))

    def kernel() -> None:  # the first epoch over a batch: checks, counts the events, SGD
        U, bu, uc, V, bi, ic = state_k
        run_block(U, bu, uc, V, bi, ic, ev["u"], ev["i"], ev["r"], ev["ts"], ev["seq"], None, None, params, 1)

    def kernel_later() -> None:  # epochs 2, 3, ... over the same batch: checks, SGD (counted once already)
        U, bu, uc, V, bi, ic = state_k
        run_block(U, bu, uc, V, bi, ic, ev["u"], ev["i"], ev["r"], ev["ts"], ev["seq"], None, None, params, 1,
                  count=False)

    def loop_only() -> None:  # run_block's SGD loop without its validation/count pass
        U, bu, uc, V, bi, ic = state_l
        _run_sorted(U, bu, uc, V, bi, ic, ev["u"], ev["i"], ev["r"], empty_i, empty_f, params.lr, params.reg,
                    params.mu, False, True, 0, False, np.uint64(1), no_flags, no_flags)

    def check_only() -> None:  # the one pass over (u, i, ts, seq) that checks order/bounds and counts
        _check_and_count(ev["u"], ev["i"], ev["ts"], ev["seq"], state_l[2], state_l[5], True)

    def check_no_count() -> None:  # the same pass without counting (later epochs: count=False)
        _check_and_count(ev["u"], ev["i"], ev["ts"], ev["seq"], state_l[2], state_l[5], False)

    def baseline() -> None:
        U, bu, _, V, bi, _ = state_b
        minimal_sgd(U, bu, V, bi, ev["u"], ev["i"], ev["r"], params.lr, params.reg, params.mu)

    empty_i, empty_f, no_flags = np.zeros(0, np.int64), np.zeros(0, np.float64), np.zeros(0, np.bool_)
    state_k = state_b = state_l = state()  # literally the same arrays for every variant
    for f in (kernel, kernel_later, baseline, loop_only, check_only, check_no_count):  # warm-up (compile / cache)
        f()
    # interleave so all see the same machine load; factors keep training across repeats
    t_k = t_k2 = t_b = t_l = t_c = t_c0 = float("inf")
    for _ in range(repeat):
        t_b = min(t_b, _best(baseline, 1))
        t_k = min(t_k, _best(kernel, 1))
        t_k2 = min(t_k2, _best(kernel_later, 1))
        t_l = min(t_l, _best(loop_only, 1))
        t_c = min(t_c, _best(check_only, 1))
        t_c0 = min(t_c0, _best(check_no_count, 1))
    # same arithmetic: one fresh pass each must agree
    state_k, state_b = state(), state()
    kernel()
    baseline()
    max_diff = float(np.abs(state_k[0] - state_b[0]).max())
    return {"rank": rank, "events": n, "run_block_updates_per_s": n / t_k, "minimal_updates_per_s": n / t_b,
            "ratio": t_b / t_k, "run_block_later_epochs_updates_per_s": n / t_k2,
            "ratio_later_epochs": t_b / t_k2, "loop_only_updates_per_s": n / t_l, "loop_only_ratio": t_b / t_l,
            "check_and_count_ms": 1000 * t_c, "check_only_ms": 1000 * t_c0,
            "count_ms_by_difference": 1000 * (t_c - t_c0), "max_abs_diff_U": max_diff}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--events", type=int, default=2_000_000)
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=20_000)
    ap.add_argument("--d", type=int, default=16)
    ap.add_argument("--ranks", type=int, nargs="+", default=[10, 32, 64])
    ap.add_argument("--repeat", type=int, default=15)
    a = ap.parse_args()
    ev = make_events(a.events, a.users, a.items, a.d)
    results = [bench_rank(ev, a.users, a.items, k, a.repeat) for k in a.ranks]
    print(json.dumps({"bench": "kernel", "events": a.events, "users": a.users, "items": a.items, "d": a.d,
                      "order": "block-sorted", "numba": numba.__version__, "numpy": np.__version__,
                      "python": platform.python_version(), "machine": platform.machine(),
                      "cpus": os.cpu_count(), "loadavg_1m_at_end": os.getloadavg()[0], "results": results},
                     indent=2))


if __name__ == "__main__":
    main()
