"""Dense factor rows indexed by stream position, and the streaming trainer's DSGD step on them
(:func:`dsgd_step`, pinned equal to :func:`dsgd.engines.local.train_epochs` by a test)."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from dsgd.core.hashing import block_of, init_vectors, mix_seed, splitmix64
from dsgd.core.kernel import _run_sorted
from dsgd.core.params import KernelParams
from dsgd.core.strata import strata_schedule
from dsgd.evaluation.stream import Stream


class DenseSide:
    """One side of a model with a row per stream index (preallocated); ``known`` marks the rows the model
    has (as :class:`dsgd.engines.local.SideFactors` would hold them)."""

    def __init__(self, init: np.ndarray) -> None:
        self.init = init
        n, k = init.shape
        self.vec = np.zeros((n, k), np.float32)
        self.bias = np.zeros(n, np.float32)
        self.count = np.zeros(n, np.int64)
        self.known = np.zeros(n, bool)

    def ensure(self, rows: np.ndarray) -> np.ndarray:
        """Give the rows not yet known their initial vector (bias and count 0); return those rows."""
        new = rows[~self.known[rows]]
        if new.size:
            new = np.unique(new)
            self.vec[new] = self.init[new]
            self.bias[new] = 0.0
            self.count[new] = 0
            self.known[new] = True
        return new

    def copy(self) -> DenseSide:
        out = DenseSide.__new__(DenseSide)
        out.init = self.init
        out.vec, out.bias, out.count, out.known = self.vec.copy(), self.bias.copy(), self.count.copy(), self.known.copy()
        return out


class DenseModel:
    """User and item sides plus the DSGD negative pools (known items of each item block, by key)."""

    def __init__(self, stream: Stream, rank: int, seed: int, init_scale: float, d: int) -> None:
        self.stream = stream
        self.rank, self.seed, self.init_scale, self.d = rank, seed, init_scale, d
        ui = stream.derived(("init", "u", rank, seed, init_scale),
                            lambda: init_vectors(stream.user_keys, rank, seed, init_scale, "u"))
        ii = stream.derived(("init", "i", rank, seed, init_scale),
                            lambda: init_vectors(stream.item_keys, rank, seed, init_scale, "i"))
        self.users, self.items = DenseSide(ui), DenseSide(ii)
        self.ublock = stream.derived(("block", "u", d), lambda: block_of(stream.user_keys, d).astype(np.int64))
        self.iblock = stream.derived(("block", "i", d), lambda: block_of(stream.item_keys, d).astype(np.int64))
        self.pools = [np.zeros(0, np.int64) for _ in range(d)]
        self._pool_keys = [np.zeros(0, np.int64) for _ in range(d)]
        self._flat: tuple[np.ndarray, np.ndarray] | None = None
        self.version = 0  # bumped when factors change (scoring caches)

    def copy(self) -> DenseModel:
        out = DenseModel.__new__(DenseModel)
        out.__dict__.update(self.__dict__)
        out.users, out.items = self.users.copy(), self.items.copy()
        out.pools = [p.copy() for p in self.pools]
        out._pool_keys = [p.copy() for p in self._pool_keys]
        return out

    def add_items(self, new: np.ndarray) -> None:
        """Keep every block's pool = its known items sorted by key (``train_epochs``'s ``pools``)."""
        if new.size == 0:
            return
        keys = self.stream.item_keys
        blocks = self.iblock[new]
        for b in np.unique(blocks):
            add = new[blocks == b]
            add = add[np.argsort(keys[add], kind="stable")]
            at = np.searchsorted(self._pool_keys[b], keys[add])
            self.pools[b] = np.insert(self.pools[b], at, add)
            self._pool_keys[b] = np.insert(self._pool_keys[b], at, keys[add])
        self._flat = None

    def flat_pools(self) -> tuple[np.ndarray, np.ndarray]:
        """All pools concatenated and their offsets (the compiled step's layout)."""
        if self._flat is None:
            ptr = np.zeros(self.d + 1, np.int64)
            np.cumsum([p.shape[0] for p in self.pools], out=ptr[1:])
            self._flat = (np.concatenate(self.pools).astype(np.int64, copy=False), ptr)
        return self._flat

    def rebuild_pools(self) -> None:
        self.pools = [np.zeros(0, np.int64) for _ in range(self.d)]
        self._pool_keys = [np.zeros(0, np.int64) for _ in range(self.d)]
        self.add_items(np.flatnonzero(self.items.known))


@njit(cache=True, nogil=True)
def _mix(h, x):
    return splitmix64(h ^ x)


@njit(cache=True, nogil=True)
def _dsgd_batch(U, bu, ucnt, V, bi, icnt, eu, ei, er, bstart, strata, pool, pool_ptr, lrs, reg, mu, implicit,
                use_bias, negatives, popularity, seed, batch_id, stats):
    """All epochs of one DSGD step: events sorted by block (``bstart[blk]..bstart[blk+1]``, block
    ``ub * d + ib``, time order inside), ``strata[e, s, b]`` = item block of user block ``b``, the
    negative pools of the item blocks (``pool[pool_ptr[b]:pool_ptr[b+1]]``). Block seeds are
    ``mix_seed(seed, batch_id, e, s, b)`` and each block runs :func:`dsgd.core.kernel._run_sorted`, as
    :func:`dsgd.engines.local.train_epochs` does through ``run_block``."""
    d = strata.shape[1]
    noflag = np.zeros(0, np.bool_)  # no changed-row flags: the harness keeps every row in memory
    h0 = _mix(_mix(np.uint64(0x5EED), seed), batch_id)
    empty = np.zeros(0, np.float64)
    for e in range(lrs.shape[0]):
        sse = 0.0
        updates = 0
        he = _mix(h0, np.uint64(e))
        for s in range(d):
            hs = _mix(he, np.uint64(s))
            # popularity weights are taken at the start of the stratum (train_epochs builds its jobs first)
            cums = []
            for b in range(d):
                ib = strata[e, s, b]
                p = pool[pool_ptr[ib]:pool_ptr[ib + 1]]
                if popularity and p.shape[0] > 0:
                    w = np.empty(p.shape[0], np.float64)
                    for q in range(p.shape[0]):
                        w[q] = np.float64(icnt[p[q]] + 1)
                    cums.append(np.cumsum(w))
                else:
                    cums.append(empty)
            for b in range(d):
                ib = strata[e, s, b]
                a = bstart[b * d + ib]
                z = bstart[b * d + ib + 1]
                if z == a:
                    continue
                if e == 0:
                    for n in range(a, z):
                        ucnt[eu[n]] += 1
                        icnt[ei[n]] += 1
                p = pool[pool_ptr[ib]:pool_ptr[ib + 1]] if implicit else pool[0:0]
                sse += _run_sorted(U, bu, ucnt, V, bi, icnt, eu[a:z], ei[a:z], er[a:z], p, cums[b], lrs[e], reg, mu,
                                   implicit, use_bias, negatives, popularity, _mix(hs, np.uint64(b)), noflag, noflag)
                updates += z - a
        stats[e, 0] = sse
        stats[e, 1] = updates


def dsgd_step(m: DenseModel, pos: np.ndarray | slice, kp: KernelParams, *, epochs: int, schedule: Any,
              strata_order: str, batch_id: int, order: np.ndarray | None = None,
              ratings: np.ndarray | None = None) -> list[dict]:
    """Stratified DSGD over the events ``pos`` of ``m.stream``, in place: the same updates, negatives and
    counts as :func:`dsgd.engines.local.train_epochs` with ``d = m.d``, ``seed = m.seed`` and the given
    arguments (a test pins them equal), in one compiled call instead of its per-block bookkeeping.

    ``order``: the events' training order as positions into ``pos`` (``train_epochs`` trains in
    ``(ts, seq)`` order; None means ``pos`` already is in that order). The schedule's rates are read
    up front (``observe`` gets each epoch's loss afterwards; a schedule whose rate reacts to the loss
    within one call, bold driver, is not supported). Returns the per-epoch ``loss``/``updates``.
    """
    s = m.stream
    u = s.user[pos]
    i = s.item[pos]
    m.users.ensure(u)
    m.add_items(m.items.ensure(i))
    m.version += 1
    r = np.ones(len(u), np.float32) if ratings is None else np.asarray(ratings, np.float32)
    if order is not None:
        u, i, r = u[order], i[order], r[order]
    d = m.d
    blk = m.ublock[u] * d + m.iblock[i]
    o = np.argsort(blk, kind="stable")
    bstart = np.zeros(d * d + 1, np.int64)
    np.cumsum(np.bincount(blk, minlength=d * d), out=bstart[1:])
    if getattr(schedule, "kind", "constant") == "bold_driver" and epochs > 1:
        raise ValueError("dsgd_step reads the schedule's rates up front; bold_driver is not supported")
    lrs = np.array([float(schedule.rate(e)) for e in range(epochs)], np.float64)
    strata = _strata_array(d, strata_order, m.seed, batch_id, epochs)
    pool, pool_ptr = m.flat_pools()
    stats = np.zeros((epochs, 2), np.float64)
    U, V = m.users, m.items
    _dsgd_batch(U.vec, U.bias, U.count, V.vec, V.bias, V.count, np.ascontiguousarray(u[o]), np.ascontiguousarray(i[o]),
                np.ascontiguousarray(r[o]), bstart, strata, pool, pool_ptr, lrs,
                float(kp.reg), float(kp.mu), bool(kp.implicit), bool(kp.use_bias), int(kp.negatives),
                bool(kp.implicit and kp.negative_sampling == "popularity"), np.uint64(m.seed & 0xFFFFFFFFFFFFFFFF),
                np.uint64(batch_id & 0xFFFFFFFFFFFFFFFF), stats)
    out = []
    for e in range(epochs):
        loss = stats[e, 0] / stats[e, 1] if stats[e, 1] else float("nan")
        if stats[e, 1]:
            schedule.observe(loss)
        out.append({"epoch": e, "lr": float(lrs[e]), "loss": loss, "updates": int(stats[e, 1])})
    return out


_STRATA: dict[tuple[int, int], np.ndarray] = {}


def _strata_array(d: int, order: str, seed: int, batch_id: int, epochs: int) -> np.ndarray:
    """``[epochs, d, d]``: stratum ``s`` of epoch ``e`` pairs user block ``b`` with item block ``[e, s, b]``."""
    if order == "rotation":  # independent of seed and epoch
        if (d, epochs) not in _STRATA:
            _STRATA[(d, epochs)] = np.array([strata_schedule(d, "rotation")] * epochs, np.int64).reshape(epochs, d, d)
        return _STRATA[(d, epochs)]
    return np.array([strata_schedule(d, order, seed=mix_seed(seed, batch_id), epoch=e) for e in range(epochs)],
                    np.int64).reshape(epochs, d, d)
