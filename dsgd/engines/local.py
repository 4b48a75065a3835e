"""In-process DSGD: epochs of stratified SGD over a batch, on the arrays of :class:`SideFactors`.

The blocks of a stratum touch disjoint user and item rows, so they run in parallel threads on the
shared global arrays (the numba kernel releases the GIL). Results do not depend on the thread count.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import numpy as np

from dsgd.core.factors import SideFactors
from dsgd.core.hashing import block_of, mix_seed
from dsgd.core.kernel import run_block
from dsgd.core.params import KernelParams
from dsgd.core.strata import strata_schedule


def _group_by_block(ub: np.ndarray, ib: np.ndarray, d: int) -> dict[tuple[int, int], np.ndarray]:
    """Event positions of each non-empty block, keeping the given (already time-sorted) order."""
    if ub.size == 0:
        return {}
    blk = ub.astype(np.int64) * d + ib
    order = np.argsort(blk, kind="stable")
    sb = blk[order]
    starts = np.flatnonzero(np.r_[True, sb[1:] != sb[:-1]])
    ends = np.r_[starts[1:], sb.size]
    return {(int(sb[s] // d), int(sb[s] % d)): order[s:e] for s, e in zip(starts, ends, strict=True)}


def train_epochs(users: SideFactors, items: SideFactors, u_keys: np.ndarray, i_keys: np.ndarray,
                 u_ids: Any, i_ids: Any, r: np.ndarray, ts: np.ndarray, seq: np.ndarray,
                 params: KernelParams, *, d: int, epochs: int, schedule: Any, strata_order: str, seed: int,
                 batch_id: int, init_scale: float, rank: int, threads: int = 2) -> list[dict]:
    """Stratified DSGD over one batch of events, updating ``users`` and ``items`` in place.

    Each epoch ``e`` uses ``lr = schedule.rate(e)`` (overriding ``params.lr``) and the strata of
    ``strata_schedule(d, strata_order, seed=mix_seed(seed, batch_id), epoch=e)``; the blocks of a
    stratum run in parallel with ``threads`` workers. Block ``(b, stratum[b])`` of the ``s``-th stratum
    is seeded with ``mix_seed(seed, batch_id, e, s, b)``; its negatives are drawn from every known item
    of its item block (sorted by key) with weights ``count + 1`` taken at the start of the stratum.
    After each epoch ``schedule.observe(loss)``.

    Returns
    -------
    list of dict
        Per epoch: ``epoch``, ``lr``, ``loss`` (mean squared error of the positives, measured before
        each update), ``updates`` (positives) and ``seconds``.
    """
    if d < 1 or epochs < 0 or threads < 1:
        raise ValueError(f"need d >= 1, epochs >= 0, threads >= 1; got d={d}, epochs={epochs}, "
                         f"threads={threads}")
    u_keys = np.asarray(u_keys, dtype=np.int64)
    i_keys = np.asarray(i_keys, dtype=np.int64)
    n = u_keys.shape[0]
    if not (i_keys.shape[0] == len(r) == len(ts) == len(seq) == n):
        raise ValueError("event arrays must have the same length")
    u_idx = users.ensure(u_ids, u_keys, rank, seed, init_scale, "u")
    i_idx = items.ensure(i_ids, i_keys, rank, seed, init_scale, "i")
    ev = _events_by_block(u_keys, i_keys, u_idx, i_idx, r, ts, seq, d)
    by_key = items.sorted_rows()
    item_block = block_of(items.keys[by_key], d)
    pools = [by_key[item_block == b] for b in range(d)]
    popularity = params.negative_sampling == "popularity" and params.implicit

    stats: list[dict] = []
    pool_exec = ThreadPoolExecutor(max_workers=threads) if threads > 1 else None
    try:
        for e in range(epochs):
            t0 = time.perf_counter()
            lr = float(schedule.rate(e))
            p = dataclasses.replace(params, lr=lr)
            sse, updates = 0.0, 0
            for s, stratum in enumerate(strata_schedule(d, strata_order, seed=mix_seed(seed, batch_id),
                                                        epoch=e)):
                jobs = [(users.vec, users.bias, users.count, items.vec, items.bias, items.count,
                         *ev[(b, int(ib))], pools[ib],
                         (items.count[pools[ib]] + 1).astype(np.float64) if popularity else None, p,
                         mix_seed(seed, batch_id, e, s, b), e == 0, (users.changed, items.changed))
                        for b, ib in enumerate(stratum) if (b, int(ib)) in ev]
                for block_sse, block_n in _run_stratum(jobs, pool_exec):  # block order: deterministic sum
                    sse += block_sse
                    updates += block_n
            loss = sse / updates if updates else float("nan")
            if updates:
                schedule.observe(loss)
            stats.append({"epoch": e, "lr": lr, "loss": loss, "updates": updates,
                          "seconds": time.perf_counter() - t0})
    finally:
        if pool_exec is not None:
            pool_exec.shutdown()
    return stats


def _events_by_block(u_keys: np.ndarray, i_keys: np.ndarray, u_idx: np.ndarray, i_idx: np.ndarray, r: Any,
                     ts: Any, seq: Any, d: int) -> dict[tuple[int, int], tuple[np.ndarray, ...]]:
    """The events' (user row, item row, rating, ts, seq) per block ``(user block, item block)``, each in
    time order (sorted once here, so the kernel skips its own sort)."""
    r = np.asarray(r, dtype=np.float32)
    ts = np.asarray(ts, dtype=np.int64)
    seq = np.asarray(seq, dtype=np.int64)
    order = np.lexsort((seq, ts))
    u_idx, i_idx, r, ts, seq = u_idx[order], i_idx[order], r[order], ts[order], seq[order]
    blocks = _group_by_block(block_of(u_keys[order], d), block_of(i_keys[order], d), d)
    return {blk: (u_idx[p], i_idx[p], r[p], ts[p], seq[p]) for blk, p in blocks.items()}


def _run_stratum(jobs: list[tuple], pool_exec: ThreadPoolExecutor | None) -> list[tuple[float, int]]:
    """Run the blocks of one stratum (in parallel: they share no rows); their (squared error, updates)
    in block order."""
    if pool_exec is None or len(jobs) < 2:
        return [run_block(*a) for a in jobs]
    return list(pool_exec.map(lambda a: run_block(*a), jobs))
