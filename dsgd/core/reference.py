"""Plain-Python reference of :func:`dsgd.core.kernel.run_block` (slow; the semantics the kernel is tested
against). Arithmetic per event is float64; factors are stored back as float32 like the kernel does."""

from __future__ import annotations

import numpy as np

from dsgd.core.hashing import SplitMix64
from dsgd.core.kernel import prepare_negatives
from dsgd.core.params import KernelParams


def _step(U: np.ndarray, bu: np.ndarray, V: np.ndarray, bi: np.ndarray, u: int, i: int, target: float,
          p: KernelParams, mu: float) -> float:
    pu = U[u].astype(np.float64)
    qi = V[i].astype(np.float64)
    pred = mu + float(pu @ qi)
    if p.use_bias:
        pred += float(bu[u]) + float(bi[i])
    e = target - pred
    if p.use_bias:
        bu[u] = np.float32(float(bu[u]) + p.lr * (e - p.reg * float(bu[u])))
        bi[i] = np.float32(float(bi[i]) + p.lr * (e - p.reg * float(bi[i])))
    U[u] = (pu + p.lr * (e * qi - p.reg * pu)).astype(np.float32)
    V[i] = (qi + p.lr * (e * pu - p.reg * qi)).astype(np.float32)
    return e


def run_block_reference(U: np.ndarray, bu: np.ndarray, ucnt: np.ndarray, V: np.ndarray, bi: np.ndarray,
                        icnt: np.ndarray, u_idx: np.ndarray, i_idx: np.ndarray, r: np.ndarray,
                        ts: np.ndarray, seq: np.ndarray, neg_pool: np.ndarray | None,
                        neg_weight: np.ndarray | None, params: KernelParams, seed: int,
                        count: bool = True) -> tuple[float, int]:
    """Same contract as :func:`dsgd.core.kernel.run_block` (see there)."""
    popularity = params.negative_sampling == "popularity"
    pool, cum = prepare_negatives(neg_pool, neg_weight, popularity, V.shape[0])
    mu = 0.0 if params.implicit else float(params.mu)
    n_neg = params.negatives if (params.implicit and pool.size) else 0
    rng = SplitMix64(seed)
    order = np.lexsort((np.asarray(seq, np.int64), np.asarray(ts, np.int64)))
    sse = 0.0
    for n in order:
        u, i = int(u_idx[n]), int(i_idx[n])
        target = 1.0 if params.implicit else float(np.float32(r[n]))
        e = _step(U, bu, V, bi, u, i, target, params, mu)
        sse += e * e
        if count:
            ucnt[u] += 1
            icnt[i] += 1
        for _ in range(n_neg):
            if popularity:
                x = (rng.next() >> 11) * (1.0 / 9007199254740992.0) * float(cum[-1])
                pos = min(int(np.searchsorted(cum, x, side="right")), pool.size - 1)
            else:
                pos = rng.next() % pool.size
            j = int(pool[pos])
            if j != i:
                _step(U, bu, V, bi, u, j, 0.0, params, mu)
    return sse, len(order)
