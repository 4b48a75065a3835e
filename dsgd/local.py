"""In-process DSGD: a growable factor store per side and epochs of stratified SGD over a batch.

The blocks of a stratum touch disjoint user and item rows, so they run in parallel threads on the
shared global arrays (the numba kernel releases the GIL). Results do not depend on the thread count.
"""

from __future__ import annotations

import dataclasses
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd

from dsgd import columns as C
from dsgd.hashing import block_of, init_vectors, mix_seed
from dsgd.kernel import run_block
from dsgd.params import KernelParams
from dsgd.strata import strata_schedule


def vector_matrix(col: Any, rank: int) -> np.ndarray:
    """float32 [n, rank] from a column of per-row vectors (lists or arrays, e.g. a collected array<float>)."""
    if len(col) == 0:
        return np.zeros((0, rank), np.float32)
    return np.stack([np.asarray(v, np.float32) for v in col]).reshape(len(col), rank)


@dataclass
class SideFactors:
    """One side (users or items) of a model; rows are appended as new ids appear."""

    keys: np.ndarray  # int64 [n], unique
    ids: np.ndarray  # object [n] of str, aligned with keys
    vec: np.ndarray  # float32 [n, rank]
    bias: np.ndarray  # float32 [n]
    count: np.ndarray  # int64 [n]

    def __post_init__(self) -> None:
        self.keys = np.ascontiguousarray(self.keys, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=object)
        self._sorted: np.ndarray | None = None

    @classmethod
    def empty(cls, rank: int) -> SideFactors:
        return cls(np.zeros(0, np.int64), np.zeros(0, object), np.zeros((0, rank), np.float32),
                   np.zeros(0, np.float32), np.zeros(0, np.int64))

    @classmethod
    def from_frame(cls, df: pd.DataFrame, rank: int) -> SideFactors:
        """From factor rows (id, key, vec, bias, count), ordered by key."""
        order = np.argsort(df[C.KEY].to_numpy(np.int64), kind="stable")
        return cls(keys=df[C.KEY].to_numpy(np.int64)[order], ids=df[C.ID].to_numpy(object)[order],
                   vec=np.ascontiguousarray(vector_matrix(df[C.VEC], rank)[order]),
                   bias=df[C.BIAS].to_numpy(np.float32)[order].copy(),
                   count=df[C.COUNT].to_numpy(np.int64)[order].copy())

    def frame(self, idx: np.ndarray | None = None) -> pd.DataFrame:
        """Factor rows (id, key, vec, bias, count) of the rows ``idx`` (all rows if None)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        return pd.DataFrame({C.ID: self.ids[idx], C.KEY: self.keys[idx], C.VEC: list(self.vec[idx]),
                             C.BIAS: self.bias[idx], C.COUNT: self.count[idx]})

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def index_of(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, int64, -1 where absent."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(self) == 0:
            return np.full(keys.shape, -1, np.int64)
        if self._sorted is None:
            self._sorted = np.argsort(self.keys, kind="stable")
        sk = self.keys[self._sorted]
        pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
        return np.where(sk[pos] == keys, self._sorted[pos], -1).astype(np.int64)

    def ensure(self, ids: Any, keys: np.ndarray, rank: int, seed: int, scale: float, side: str) -> np.ndarray:
        """Add the keys not yet present (in order of first appearance, with :func:`init_vectors` and zero
        bias/count) and return the row of every given key."""
        keys = np.asarray(keys, dtype=np.int64)
        ids = np.asarray(ids, dtype=object)
        if ids.shape != keys.shape:
            raise ValueError("ids and keys must be aligned")
        if self.vec.shape[1] != rank:
            raise ValueError(f"rank {rank} does not match the stored vectors' rank {self.vec.shape[1]}")
        missing = self.index_of(keys) < 0
        if missing.any():
            mk = keys[missing]
            _, first = np.unique(mk, return_index=True)
            first.sort()
            new_keys = mk[first]
            new_ids = np.array([str(x) for x in ids[missing][first]], dtype=object)
            n = new_keys.shape[0]
            self.keys = np.concatenate([self.keys, new_keys])
            self.ids = np.concatenate([self.ids, new_ids])
            self.vec = np.ascontiguousarray(np.concatenate([self.vec, init_vectors(new_keys, rank, seed,
                                                                                    scale, side)]))
            self.bias = np.concatenate([self.bias, np.zeros(n, np.float32)])
            self.count = np.concatenate([self.count, np.zeros(n, np.int64)])
            self._sorted = None
        return self.index_of(keys)


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
    r = np.asarray(r, dtype=np.float32)
    ts = np.asarray(ts, dtype=np.int64)
    seq = np.asarray(seq, dtype=np.int64)

    # time order once; the per-block slices then stay sorted and run_block skips its sort
    order = np.lexsort((seq, ts))
    u_idx, i_idx, r, ts, seq = u_idx[order], i_idx[order], r[order], ts[order], seq[order]
    u_keys, i_keys = u_keys[order], i_keys[order]
    blocks = _group_by_block(block_of(u_keys, d), block_of(i_keys, d), d)
    ev = {blk: (u_idx[p], i_idx[p], r[p], ts[p], seq[p]) for blk, p in blocks.items()}

    item_block = block_of(items.keys, d)
    by_key = np.argsort(items.keys, kind="stable")
    pools = [by_key[item_block[by_key] == b].astype(np.int64) for b in range(d)]
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
                jobs = []
                for b, ib in enumerate(stratum):
                    if (b, int(ib)) not in ev:
                        continue
                    weight = (items.count[pools[ib]] + 1).astype(np.float64) if popularity else None
                    args = (users.vec, users.bias, users.count, items.vec, items.bias, items.count,
                            *ev[(b, int(ib))], pools[ib], weight, p, mix_seed(seed, batch_id, e, s, b), e == 0)
                    jobs.append(args)
                if pool_exec is None or len(jobs) < 2:
                    results = [run_block(*a) for a in jobs]
                else:
                    results = list(pool_exec.map(lambda a: run_block(*a), jobs))
                for block_sse, block_n in results:  # block order: deterministic sum
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
