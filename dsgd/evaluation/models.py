"""Models compared by the prequential harness (:mod:`dsgd.evaluation.harness`).

Every model scores users against the items known so far (``score``; with fold-in ``score_foldin``),
learns from one micro-batch (``update``) and may retrain at a period boundary (``retrain``).

Two families of factor models:

- SGD stand-ins (``online``, ``batch``, ``batch+online:*``): every micro-batch and every weekly
  retrain is the streaming trainer's DSGD step (:func:`dsgd_step`, pinned equal to
  :func:`dsgd.engines.local.train_epochs` by a test) on dense arrays indexed by stream position;
- the product's retrain (``als``, ``als+online:replace``, ``als+online:score-blend``,
  ``retrain+online:warm-start``): Spark MLlib ALS through :func:`dsgd.engines.als.train_als` (the code
  ``dsgd retrain`` runs, same parameters, id mapping and ALS settings) and the blend policies of
  :mod:`batch.blend` / :mod:`batch.serving` (``replace``: the snapshot replaces the live rows;
  ``warm-start``: ``retrain.warm_start_epochs`` DSGD epochs over the history from the online factors,
  no ALS; ``score-blend``: :func:`dsgd.engines.als.blend_scores` of the frozen snapshot and the online model).
  The retrain runs at the period boundary on the events before it (cut-off ``as_of`` = boundary - 1 ms),
  so no event arrives between the cut-off and the swap (the product replays those).

Items are indexed densely in order of first appearance in the stream, so "the items known before
batch b" are the indices ``0 .. n_known-1``. Users unknown to a factor model (cold users) are scored by
the live popularity counts (the serving fallback); items known to the stream but not (yet) to a model
score ``-inf``.

Fold-in (:mod:`dsgd.core.foldin`, the function ``dsgd serve`` uses): the user's events the model has not
trained on, before the scored event, are folded in with the item factors fixed: for models updated per
micro-batch, the user's earlier events of the current batch; for frozen models (``batch``, ``als``), the
user's events since the retrain's cut-off. The ALS snapshot side always folds in with ALS's own user
solve over the user's whole history (recency-weighted like the fit), which reproduces the snapshot's
user vector for a known user and gives a new user a vector of their own.
"""

from __future__ import annotations

import dataclasses
import hashlib
import logging
import time
from collections import OrderedDict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
from numba import njit

from dsgd.core.foldin import FoldInParams, fold_in_many, item_gram
from dsgd.core.hashing import block_of, init_vectors, mix_seed, splitmix64
from dsgd.core.kernel import _run_sorted
from dsgd.core.params import KernelParams
from dsgd.core.schedules import Constant, make_schedule
from dsgd.core.strata import strata_schedule

log = logging.getLogger("dsgd.evaluate")

SGD_KINDS: tuple[str, ...] = ("online", "batch", "batch+online:warm-start", "batch+online:replace")
PRODUCT_KINDS: tuple[str, ...] = ("als", "als+online:replace", "als+online:score-blend", "retrain+online:warm-start")
MODEL_KINDS: tuple[str, ...] = ("popularity", *SGD_KINDS, *PRODUCT_KINDS)
_ALIASES = {"batch+online": ("batch+online:warm-start", "batch+online:replace"),
            "batch+online:warm": ("batch+online:warm-start",),
            "als+online": ("als+online:replace", "als+online:score-blend"),
            "retrain": PRODUCT_KINDS, "sgd": ("popularity", *SGD_KINDS), "all": MODEL_KINDS}
SERVING_MODES: tuple[str, ...] = ("plain", "fold-in")
NEW_USER_STARTS: tuple[str, ...] = ("zeros", "mean", "popularity")
FOLDIN_SUFFIX = "/fold-in"
POLICY_OF = {"als+online:replace": "replace", "als+online:score-blend": "score-blend",
             "retrain+online:warm-start": "warm-start"}


def expand_models(spec: str | list[str]) -> list[str]:
    """Model names from ``"popularity,online,batch,batch+online,retrain"``; aliases: ``batch+online``
    (both SGD variants), ``als+online`` (replace, score-blend), ``retrain`` (the four product models),
    ``sgd``, ``all``."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for n in filter(None, names):
        for m in _ALIASES.get(n, (n,)):
            if m not in MODEL_KINDS:
                raise ValueError(f"unknown model {n!r}; supported values: {', '.join(MODEL_KINDS)} and the "
                                 f"aliases {', '.join(_ALIASES)}")
            if m not in out:
                out.append(m)
    if not out:
        raise ValueError("no model given")
    return out


def expand_serving(spec: str | list[str] | tuple[str, ...]) -> list[str]:
    """``"plain,fold-in"`` -> ``["plain", "fold-in"]`` (validated)."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out = [n for n in dict.fromkeys(filter(None, names))]
    bad = [n for n in out if n not in SERVING_MODES]
    if bad or not out:
        raise ValueError(f"serving modes {bad or out!r}: supported values: {', '.join(SERVING_MODES)}")
    return out


@dataclass(frozen=True)
class EvalParams:
    """Hyper-parameters of the factor models (defaults: GUIDE.md section 4).

    Parameters
    ----------
    rank, init_scale : int, float
        Factor rank; initial components uniform in ``[-init_scale, init_scale]``.
    use_bias : bool
        Learn user and item biases (``model.use_bias``); the item bias is part of every item's score.
    lr, negatives, reg, epochs : float, int, float, int
        Online step: learning rate, uniform negatives per positive (drawn from the known items of the
        DSGD item block), L2 regularisation, epochs per micro-batch.
    batch_lr, batch_epochs : float, int
        Weekly SGD batch retrain (``batch``, ``batch+online:*``): epochs over the whole history.
    batch_order : str
        Order of the history in a batch epoch. Supported values: ``"time"`` (stream order) and
        ``"shuffle"`` (a seeded permutation per retrain).
    d : int
        DSGD blocks per side (d strata per epoch).
    seed, k : int
        Seed of initial vectors and negatives; the DCG cut-off.
    foldin_method, foldin_lr, foldin_epochs, foldin_negatives, foldin_reg, foldin_prior, foldin_alpha, foldin_max_events
        The fold-in rule of the SGD models' user vectors (:class:`dsgd.core.foldin.FoldInParams`):
        ``"sgd"`` (the online step, user side; ``foldin_lr``/``foldin_negatives`` None take
        ``lr``/``negatives``) or ``"ls"`` (closed form, prior ``foldin_prior`` towards the model's
        vector, confidence ``1 + foldin_alpha``). Default ``ls`` with prior 0.1 (measured on the four
        shared streams: ``bench/RESULTS.md``, "Fold-in").
    foldin_new_user, foldin_new_user_min : str, int
        A user the model has not trained on is folded in from ``"zeros"`` (default) or ``"mean"`` (the
        mean known user vector) once they have ``foldin_new_user_min`` events to fold in (default 3;
        fewer: the popularity fallback); ``"popularity"``: never (popularity until trained on).
    """

    rank: int = 10
    init_scale: float = 0.01
    use_bias: bool = False
    lr: float = 0.2
    negatives: int = 19
    reg: float = 0.0
    epochs: int = 1
    batch_lr: float = 0.05
    batch_epochs: int = 10
    batch_order: str = "time"
    d: int = 2
    seed: int = 0
    k: int = 100
    foldin_method: str = "ls"
    foldin_lr: float | None = None
    foldin_epochs: int = 1
    foldin_negatives: int | None = None
    foldin_reg: float = 0.0
    foldin_prior: float = 0.1
    foldin_alpha: float = 1.0
    foldin_max_events: int = 0
    foldin_new_user: str = "zeros"
    foldin_new_user_min: int = 3

    def __post_init__(self) -> None:
        if self.rank < 1 or self.d < 1 or self.epochs < 0 or self.batch_epochs < 0 or self.k < 1:
            raise ValueError(f"need rank >= 1, d >= 1, epochs >= 0, batch_epochs >= 0, k >= 1: {self}")
        if self.batch_order not in ("time", "shuffle"):
            raise ValueError(f"batch_order must be 'time' or 'shuffle', got {self.batch_order!r}")
        self.foldin()  # validates the fold-in settings
        if self.foldin_new_user not in NEW_USER_STARTS:
            raise ValueError(f"foldin_new_user must be one of {NEW_USER_STARTS}, got {self.foldin_new_user!r}")

    def kernel(self, lr: float) -> KernelParams:
        return KernelParams(lr=lr, reg=self.reg, implicit=True, use_bias=self.use_bias, negatives=self.negatives)

    def foldin(self) -> FoldInParams:
        """The fold-in rule of the SGD models (the online model's own update unless overridden)."""
        return FoldInParams(method=self.foldin_method, implicit=True,
                            lr=self.lr if self.foldin_lr is None else self.foldin_lr, epochs=self.foldin_epochs,
                            negatives=self.negatives if self.foldin_negatives is None else self.foldin_negatives,
                            reg=self.foldin_reg if self.foldin_method == "ls" else self.reg,
                            prior=self.foldin_prior if self.foldin_method == "ls" else 0.0, alpha=self.foldin_alpha,
                            max_events=self.foldin_max_events, seed=self.seed, use_bias=self.use_bias)

    def replace(self, **kw: Any) -> EvalParams:
        return dataclasses.replace(self, **kw)


@dataclass
class Stream:
    """A time-ordered event stream with dense indices (order of first appearance)."""

    user: np.ndarray  # int64 [n] user index
    item: np.ndarray  # int64 [n] item index
    ts: np.ndarray  # int64 [n] epoch ms
    seq: np.ndarray  # int64 [n]
    user_ids: np.ndarray  # object [n_users]
    item_ids: np.ndarray  # object [n_items]
    user_keys: np.ndarray  # int64 [n_users]
    item_keys: np.ndarray  # int64 [n_items]
    cache: dict = field(default_factory=dict, repr=False, compare=False)

    def __len__(self) -> int:
        return int(self.user.shape[0])

    def derived(self, key: tuple, build: Any) -> Any:
        """A value computed once per stream (initial vectors, blocks, per-user positions)."""
        if key not in self.cache:
            self.cache[key] = build()
        return self.cache[key]

    def user_positions(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """``(ptr, pos, nth)``: user ``u``'s event positions are ``pos[ptr[u]:ptr[u+1]]`` (ascending);
        event ``e`` is the ``nth[e]``-th event of its user."""
        def build() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            pos = np.argsort(self.user, kind="stable").astype(np.int64)
            ptr = np.zeros(len(self.user_ids) + 1, np.int64)
            np.cumsum(np.bincount(self.user, minlength=len(self.user_ids)), out=ptr[1:])
            nth = np.empty(len(self), np.int64)
            nth[pos] = np.arange(len(self)) - np.repeat(ptr[:-1], np.diff(ptr))
            return ptr, pos, nth
        return self.derived(("user_positions",), build)

    def fingerprint(self, end: int) -> str:
        """A digest of the first ``end`` events and their ids (the cache key of a retrain on them)."""
        h = hashlib.sha256()
        for a in (self.user[:end], self.item[:end], self.ts[:end], self.seq[:end]):
            h.update(np.ascontiguousarray(a).tobytes())
        nu = int(self.user[:end].max()) + 1 if end else 0
        ni = int(self.item[:end].max()) + 1 if end else 0
        h.update("\0".join(map(str, self.user_ids[:nu])).encode())
        h.update(b"\1")
        h.update("\0".join(map(str, self.item_ids[:ni])).encode())
        return h.hexdigest()[:24]


class Popularity:
    """Counts of each item so far; the score of every user is the item's count."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, np.float64)

    def score(self, users: np.ndarray, n_items: int, stream: Stream | None = None) -> np.ndarray:
        c = self.counts[:n_items].astype(np.float32)
        return np.broadcast_to(c, (len(users), n_items))

    def score_foldin(self, stream: Stream, lo: int, c: int, ce: int, n_items: int) -> np.ndarray:
        return self.score(stream.user[c:ce], n_items)

    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        items = stream.item[lo:hi]
        need = int(items.max()) + 1 if items.size else 0
        if need > self.counts.size:
            self.counts = np.concatenate([self.counts, np.zeros(need - self.counts.size)])
        np.add.at(self.counts, items, 1.0)

    def retrain(self, stream: Stream, end: int, period: int, as_of_ms: int) -> None:
        return None


# ---- dense factor rows and the DSGD step ------------------------------------------------------------------
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
                                   implicit, use_bias, negatives, popularity, _mix(hs, np.uint64(b)))
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


# ---- scoring ------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, fastmath=True)
def _dot_rows(vecs, Vt, known, out):
    """``out = vecs @ Vt`` (``Vt``: [rank, n] item factors transposed, SIMD over items), ``-inf`` where
    the item is not known."""
    k = vecs.shape[1]
    n = out.shape[1]
    for r in range(vecs.shape[0]):
        for j in range(n):
            out[r, j] = 0.0
        for f in range(k):
            x = vecs[r, f]
            for j in range(n):
                out[r, j] += x * Vt[f, j]
        for j in range(n):
            if not known[j]:
                out[r, j] = -np.inf


class FactorSet:
    """A dense model plus how it is scored and folded in.

    ``frozen``: not updated per micro-batch (its fold-in window starts at the retrain's cut-off);
    ``als``: an ALS snapshot (fold-in = ALS's user solve over the user's whole history);
    ``new_user``: the fold-in start of a user the model does not know: ``"zeros"``, ``"mean"`` (the
    mean known user vector) or ``"popularity"`` (no fold-in: the popularity fallback until the model
    has trained on the user).
    """

    def __init__(self, model: DenseModel, foldin: FoldInParams, *, frozen: bool = False,
                 als: AlsFoldIn | None = None, new_user: str = "zeros", new_user_min: int = 1) -> None:
        self.m = model
        self.foldin = foldin
        self.frozen = frozen
        self.als = als
        self.cut = 0  # events before this index are in the model (frozen models)
        self.new_user = new_user
        self.new_user_min = new_user_min
        self.use_bias = False
        self._cache: tuple[tuple[int, int], Any] | None = None

    def mean_user(self) -> np.ndarray:
        """The mean vector of the users the model knows (the fold-in start of a new user, ``new_user="mean"``)."""
        if getattr(self, "_mean_key", None) != self.m.version:
            self._mean_key = self.m.version
            k = self.m.users.known
            self._mean = self.m.users.vec[k].mean(axis=0) if k.any() else np.zeros(self.m.rank, np.float32)
        return self._mean

    def item_view(self, n_known: int) -> tuple[np.ndarray, np.ndarray]:
        """``(known mask, known rows)`` of the first n_known items (unknown rows hold zero vectors)."""
        key = (self.m.version, n_known)
        if self._cache is None or self._cache[0] != key:
            known = self.m.items.known[:n_known]
            self._cache = (key, (known, np.flatnonzero(known)))
        return self._cache[1]

    def gram(self, n_known: int) -> np.ndarray:
        key = ("gram", self.m.version, n_known)
        if getattr(self, "_gkey", None) != key:
            self._gkey = key
            self._g = item_gram(self.m.items.vec, self.item_view(n_known)[1])
        return self._g

    def scores(self, vecs: np.ndarray, n_known: int) -> np.ndarray:
        """``vecs @ V[:n_known].T`` with ``-inf`` for items the model does not have (numba: no BLAS
        threads, which on a loaded 2-core machine made a [100 x 10] @ [10 x 789] product take 9 ms)."""
        known = self.item_view(n_known)[0]
        key = (self.m.version, n_known)
        if getattr(self, "_vt_key", None) != key:
            self._vt_key = key
            self._vt = np.ascontiguousarray(self.m.items.vec[:n_known].T)
        out = np.empty((vecs.shape[0], n_known), np.float32)
        _dot_rows(np.ascontiguousarray(vecs, np.float32), self._vt, known, out)
        if self.use_bias:  # the item bias ranks; the user's bias is the same for every item
            out += self.m.items.bias[:n_known]
        return out

    def user_rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, warm)``: the users' vectors (zeros where cold: unknown rows are never written)
        and whether the model knows them."""
        return self.m.users.vec[users], self.m.users.known[users]

    def foldin_rows(self, stream: Stream, lo: int, c: int, ce: int, n_known: int) -> tuple[np.ndarray, np.ndarray]:
        """Per event of ``[c, ce)`` (in batch ``[lo, ...)``): the user's vector folded in from their events
        before it that the model has not trained on, and whether the user has a vector at all."""
        users = stream.user[c:ce]
        vecs, warm = self.user_rows(users)
        if self.als is not None:
            return self.als.rows(self, stream, c, ce, n_known, vecs, warm)
        known, known_rows = self.item_view(n_known)
        ptr, pos, nth = stream.user_positions()
        fptr, fitems, _ = _gather_pending(stream.user, stream.item, stream.ts, ptr, pos, nth, c, ce,
                                          self.cut if self.frozen else lo, known, 0, 0.0)
        has = np.diff(fptr) > 0
        if has.any():
            G = self.gram(n_known) if self.foldin.method == "ls" else None
            start, has_user = vecs, warm
            if self.new_user == "mean" and (has & ~warm).any():
                start = vecs.copy()
                start[~warm] = self.mean_user()
                has_user = np.ones_like(warm)
            elif self.new_user == "popularity":
                has = has & warm
            if self.new_user_min > 1:  # a new user needs this many events to leave the popularity fallback
                has = has & (warm | (np.diff(fptr) >= self.new_user_min))
            v, _ = fold_in_many(self.m.items.vec, self.m.items.bias if self.use_bias else None, start, fptr, fitems,
                                params=self.foldin, has_user=has_user, user_bias=self.m.users.bias[users],
                                candidates=known_rows, gram=G)
            vecs[has] = v[has]
            warm = warm | has
        return vecs, warm


@njit(cache=True, nogil=True)
def _gather_pending(user, item, ts, ptr, pos, nth, c, ce, start, known, window_ms, half_life_days):
    """For each event ``e`` of ``[c, ce)``: its user's events in ``[start, e)`` (and, with ``window_ms``,
    newer than ``ts[e] - window_ms``) whose item is known, oldest first, as ``(ptr, items, weights)``;
    weights ``0.5 ** (age / half_life)`` with ``half_life_days`` (else 1)."""
    n_known = known.shape[0]
    total = 0
    for e in range(c, ce):
        total += nth[e]  # an upper bound
    items = np.empty(total, np.int64)
    w = np.empty(total, np.float32)
    out_ptr = np.zeros(ce - c + 1, np.int64)
    m = 0
    for e in range(c, ce):
        u = user[e]
        base = ptr[u]
        first = base + np.searchsorted(pos[base:base + nth[e]], start)
        if window_ms > 0:  # ts is ascending with the position
            first = max(first, base + np.searchsorted(ts[pos[base:base + nth[e]]], ts[e] - window_ms, "right"))
        for q in range(first, base + nth[e]):
            p = pos[q]
            j = item[p]
            if j < n_known and known[j]:
                items[m] = j
                if half_life_days > 0:
                    w[m] = np.float32(0.5 ** ((ts[e] - ts[p]) / (half_life_days * 86_400_000.0)))
                else:
                    w[m] = np.float32(1.0)
                m += 1
        out_ptr[e - c + 1] = m
    return out_ptr, items[:m], w[:m]


class AlsFoldIn:
    """ALS's own user solve against the snapshot's items, over the user's history before the event
    (within ``window_days``, weighted by ``half_life_days`` from the event's time, like the fit)."""

    def __init__(self, rc: Any, new_user_min: int = 1) -> None:
        self.params = FoldInParams(method="ls", implicit=True, reg=rc.als_reg, alpha=rc.als_alpha,
                                   reg_per_item=True, prior=0.0)
        self.window_ms = int(rc.window_days * 86_400_000)
        self.half_life = float(rc.half_life_days)
        self.new_user_min = new_user_min

    def rows(self, fs: FactorSet, stream: Stream, c: int, ce: int, n_known: int, vecs: np.ndarray,
             warm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known, known_rows = fs.item_view(n_known)
        ptr, pos, nth = stream.user_positions()
        fptr, fitems, w = _gather_pending(stream.user, stream.item, stream.ts, ptr, pos, nth, c, ce, 0, known,
                                          self.window_ms, self.half_life)
        n_ev = np.diff(fptr)
        has = (n_ev > 0) & (warm | (n_ev >= self.new_user_min))
        if has.any():
            v, _ = fold_in_many(fs.m.items.vec, None, None, fptr, fitems, w, params=self.params,
                                candidates=known_rows, gram=fs.gram(n_known))
            vecs[has] = v[has]
            warm = warm | has
        return vecs, warm


def _with_fallback(scores: np.ndarray, warm: np.ndarray, pop: Popularity, n_known: int) -> np.ndarray:
    if (~warm).any():
        scores[~warm] = pop.counts[:n_known].astype(np.float32)
    return scores


class FactorModel:
    """Implicit MF trained with the streaming trainer's DSGD step: online, weekly batch or both.

    Parameters
    ----------
    kind : str
        ``"online"`` (one DSGD step per micro-batch), ``"batch"`` (retrained from scratch on the whole
        history at each period boundary, frozen in between), ``"batch+online:warm-start"`` (the batch
        epochs continue from the online factors, then online updates) or ``"batch+online:replace"``
        (the from-scratch batch factors replace the online ones, then online updates).
    params : EvalParams
    popularity : Popularity
        The live counts used for cold users.
    cache : FitCache, optional
        Shares the from-scratch retrain between ``batch`` and ``batch+online:replace`` (and runs).
    """

    def __init__(self, kind: str, params: EvalParams, popularity: Popularity, stream: Stream,
                 cache: FitCache | None = None) -> None:
        if kind not in SGD_KINDS:
            raise ValueError(f"not an SGD factor model: {kind!r}")
        self.name = kind
        self.p = params
        self.pop = popularity
        self.stream = stream
        self.cache = cache or FitCache()
        self.online = kind != "batch"
        self.batch = kind != "online"
        self.set = FactorSet(self._new(), params.foldin(), frozen=not self.online, new_user=params.foldin_new_user,
                             new_user_min=params.foldin_new_user_min)
        self.kp = params.kernel(params.lr)
        self.schedule = Constant(params.lr)
        self.set.use_bias = params.use_bias

    def _new(self) -> DenseModel:
        return DenseModel(self.stream, self.p.rank, self.p.seed, self.p.init_scale, self.p.d)

    def score(self, users: np.ndarray, n_known: int, stream: Stream | None = None) -> np.ndarray:
        vecs, warm = self.set.user_rows(users)
        return _with_fallback(self.set.scores(vecs, n_known), warm, self.pop, n_known)

    def score_foldin(self, stream: Stream, lo: int, c: int, ce: int, n_known: int) -> np.ndarray:
        vecs, warm = self.set.foldin_rows(stream, lo, c, ce, n_known)
        return _with_fallback(self.set.scores(vecs, n_known), warm, self.pop, n_known)

    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        if self.online and hi > lo and self.p.epochs > 0:
            dsgd_step(self.set.m, slice(lo, hi), self.kp, epochs=self.p.epochs, schedule=self.schedule,
                      strata_order="rotation", batch_id=batch_id)

    def _history_order(self, end: int, period: int) -> np.ndarray | None:
        if self.p.batch_order == "time":
            return None
        # train_epochs sorts by (ts, seq): equal ts + a permuted seq = the permutation's order
        perm = np.random.default_rng(self.p.seed * 1_000_003 + period).permutation(end)
        return np.argsort(perm, kind="stable")

    def _from_scratch(self, end: int, period: int) -> DenseModel:
        m = self._new()
        dsgd_step(m, slice(0, end), self.p.kernel(self.p.batch_lr), epochs=self.p.batch_epochs,
                  schedule=Constant(self.p.batch_lr), strata_order="rotation", batch_id=1_000_000_000 + period,
                  order=self._history_order(end, period))
        return m

    def retrain(self, stream: Stream, end: int, period: int, as_of_ms: int) -> None:
        """Period boundary: ``end`` events of history are available."""
        if not self.batch or end == 0:
            return
        if self.name == "batch+online:warm-start":
            dsgd_step(self.set.m, slice(0, end), self.p.kernel(self.p.batch_lr), epochs=self.p.batch_epochs,
                      schedule=Constant(self.p.batch_lr), strata_order="rotation",
                      batch_id=1_000_000_000 + period, order=self._history_order(end, period))
        else:
            key = ("sgd-batch", stream.fingerprint(end), self.p.rank, self.p.seed, self.p.init_scale, self.p.d,
                   self.p.reg, self.p.negatives, self.p.batch_lr, self.p.batch_epochs, self.p.batch_order, period)
            self.set.m = self.cache.get_model(key, stream, lambda: self._from_scratch(end, period))
        self.set.m.version += 1
        self.set.cut = end


# ---- the product's retrain: ALS through dsgd.engines.als, blend policies of batch/ --------------------------------
@dataclass
class RetrainSetup:
    """What the product models need: the product config (``[model]`` from the harness's parameters,
    ``[retrain]`` as configured), a lazily started Spark session and the fit cache.

    Build it with :func:`retrain_setup`.
    """

    cfg: Any  # dsgd.core.config.Config
    cache: FitCache
    spark_factory: Any = None
    _spark: Any = None
    fit_seconds: float = 0.0
    fits: int = 0
    cache_hits: int = 0

    @property
    def rc(self) -> Any:
        return self.cfg.retrain

    def spark(self) -> Any:
        if self._spark is None:
            if self.spark_factory is not None:
                self._spark = self.spark_factory()
            else:
                from dsgd.store.session import build_session

                cfg = self.cfg if self.cfg.spark.master else self.cfg.replace(spark={"master": "local[2]"})
                self._spark = build_session(cfg)
        return self._spark

    def with_retrain(self, **values: Any) -> RetrainSetup:
        """The same setup (session, cache) with some ``[retrain]`` keys changed (validated)."""
        out = dataclasses.replace(self, cfg=self.cfg.replace(retrain=values))
        out._spark = self._spark
        out.spark_factory = self.spark_factory if self._spark is None else (lambda s=self._spark: s)
        return out


def product_config(cfg: Any, params: EvalParams) -> Any:
    """The product config the harness's product models run: ``[model]`` carries the harness's online
    parameters (so the online part is the streaming trainer with them), the rest is ``cfg``."""
    return cfg.replace(model={"kind": "implicit", "rank": params.rank, "lr": params.lr, "reg": params.reg,
                              "negatives": params.negatives, "epochs": max(1, params.epochs), "blocks": params.d,
                              "seed": params.seed, "init_scale": params.init_scale, "engine": "local",
                              "strata_order": "rotation", "lr_schedule": "constant", "use_bias": params.use_bias,
                              "negative_sampling": "uniform"})


def retrain_setup(cfg: Any | None, params: EvalParams, *, cache_dir: str | Path | None = None,
                  spark: Any = None) -> RetrainSetup:
    """A :class:`RetrainSetup` for ``cfg`` (default: ``conf/dsgd.toml``) and the harness's parameters."""
    if cfg is None:
        from dsgd.core.config import load_config

        cfg = load_config()
    factory = (lambda: spark) if spark is not None else None
    return RetrainSetup(cfg=product_config(cfg, params), cache=FitCache(cache_dir), spark_factory=factory)


def fit_als(setup: RetrainSetup, stream: Stream, end: int, as_of_ms: int) -> dict[str, np.ndarray]:
    """The ALS snapshot ``dsgd retrain --as-of as_of_ms`` would write for the first ``end`` events, as
    stream rows: ``{"user_rows", "user_vec", "user_count", "item_rows", "item_vec", "item_count",
    "seconds"}`` (cached by the events' digest and the settings)."""
    from dsgd.core import columns as C
    from dsgd.engines.als import implicit_prefs, train_als

    rc = setup.rc
    m = setup.cfg.model
    key = ("als", stream.fingerprint(end), as_of_ms, m.rank, m.seed, m.kind, rc.als_max_iter, rc.als_reg,
           rc.als_alpha, implicit_prefs(rc, m.kind), rc.als_center, rc.als_blocks, rc.checkpoint_interval,
           rc.window_days, rc.half_life_days)

    def build() -> dict[str, np.ndarray]:
        import pandas as pd

        spark = setup.spark()
        t0 = time.perf_counter()
        hist = pd.DataFrame({C.USER: stream.user_ids[stream.user[:end]].astype(str),
                             C.ITEM: stream.item_ids[stream.item[:end]].astype(str),
                             C.RATING: np.full(end, np.nan, np.float32), C.TS: stream.ts[:end],
                             C.SEQ: stream.seq[:end]})
        sdf = spark.createDataFrame(hist, "user string, item string, rating float, ts long, seq long")
        res = train_als(spark, setup.cfg, rc, sdf, as_of_ms=as_of_ms)
        out: dict[str, np.ndarray] = {}
        for side, df, ids in (("user", res.users, stream.user_ids), ("item", res.items, stream.item_ids)):
            pdf = df.select(C.ID, C.VEC, C.COUNT).toPandas()
            index = stream.derived(("id_index", side), lambda ids=ids: {str(x): j for j, x in enumerate(ids)})
            out[f"{side}_rows"] = np.array([index[x] for x in pdf[C.ID]], np.int64)
            out[f"{side}_vec"] = (np.stack(pdf[C.VEC].map(lambda v: np.asarray(v, np.float32)).to_list())
                                  if len(pdf) else np.zeros((0, m.rank), np.float32))
            out[f"{side}_count"] = pdf[C.COUNT].to_numpy(np.int64)
        out["seconds"] = np.array(time.perf_counter() - t0)
        setup.fits += 1
        setup.fit_seconds += float(out["seconds"])
        log.debug("ALS fit on %d events (as-of %d): %.1f s", end, as_of_ms, float(out["seconds"]))
        return out

    before = setup.fits
    snap = setup.cache.get_arrays(key, build)
    if setup.fits == before:
        setup.cache_hits += 1
    return snap


def _install(side: DenseSide, rows: np.ndarray, vec: np.ndarray, count: np.ndarray | None) -> None:
    """Write snapshot rows into a side (bias 0, as the ALS snapshot has none)."""
    side.vec[rows] = vec
    side.bias[rows] = 0.0
    if count is not None:
        side.count[rows] = count
    side.known[rows] = True


class ProductModel:
    """The product's retrain in the harness: ``als`` (the frozen ALS snapshot, popularity for users it
    does not know), ``als+online:replace``, ``als+online:score-blend`` and ``retrain+online:warm-start``
    (policies of ``retrain.policy``), next to the online DSGD step of the streaming trainer."""

    def __init__(self, kind: str, params: EvalParams, popularity: Popularity, stream: Stream,
                 setup: RetrainSetup) -> None:
        if kind not in PRODUCT_KINDS:
            raise ValueError(f"not a product model: {kind!r}")
        self.name = kind
        self.p = params
        self.pop = popularity
        self.stream = stream
        self.setup = setup
        self.policy = POLICY_OF.get(kind)
        m = setup.cfg.model
        self.kp = KernelParams(lr=m.lr, reg=m.reg, implicit=True, use_bias=m.use_bias, negatives=m.negatives)
        self.online = (FactorSet(DenseModel(stream, m.rank, m.seed, m.init_scale, m.blocks), params.foldin(),
                                 new_user=params.foldin_new_user, new_user_min=params.foldin_new_user_min)
                       if kind != "als" else None)
        if self.online is not None:
            self.online.use_bias = m.use_bias
        self.snap: FactorSet | None = None
        self.snapshots = 0

    def _snapshot_set(self, snap: dict[str, np.ndarray], end: int) -> FactorSet:
        m = self.setup.cfg.model
        dm = DenseModel(self.stream, m.rank, m.seed, m.init_scale, m.blocks)
        _install(dm.users, snap["user_rows"], snap["user_vec"], snap["user_count"])
        _install(dm.items, snap["item_rows"], snap["item_vec"], snap["item_count"])
        fs = FactorSet(dm, FoldInParams(method="ls"), frozen=True,
                       als=AlsFoldIn(self.setup.rc, self.p.foldin_new_user_min))
        fs.cut = end
        return fs

    def retrain(self, stream: Stream, end: int, period: int, as_of_ms: int) -> None:
        if end == 0:
            return
        self.snapshots += 1
        if self.policy == "warm-start":
            self._warm_start(end, as_of_ms)
            return
        snap = fit_als(self.setup, stream, end, as_of_ms)
        if self.policy == "replace":  # live := snapshot rows (rows the snapshot lacks keep the stream's)
            assert self.online is not None
            dm = self.online.m
            _install(dm.users, snap["user_rows"], snap["user_vec"], snap["user_count"])
            _install(dm.items, snap["item_rows"], snap["item_vec"], snap["item_count"])
            dm.rebuild_pools()
            dm.version += 1
        else:  # als (frozen) and score-blend: the snapshot is served next to the live model
            self.snap = self._snapshot_set(snap, end)

    def _warm_start(self, end: int, as_of_ms: int) -> None:
        """:func:`batch.blend.warm_start_model`: DSGD epochs over the history from the online factors
        with the stream's kernel, seeded by the cut-off; counts stay as the stream left them."""
        from dsgd.engines.als import replay_seed

        assert self.online is not None
        rc, m = self.setup.rc, self.setup.cfg.model
        dm = self.online.m
        counts = (dm.users.count.copy(), dm.items.count.copy())
        lr = rc.warm_start_lr
        if rc.warm_start_epochs == 0 or lr == 0:
            return
        kp = dataclasses.replace(self.kp, lr=lr)
        order = np.lexsort((self.stream.seq[:end], self.stream.ts[:end]))
        dsgd_step(dm, slice(0, end), kp, epochs=rc.warm_start_epochs, schedule=make_schedule(m.lr_schedule, lr),
                  strata_order=m.strata_order, batch_id=replay_seed(as_of_ms),
                  order=None if np.all(order[1:] > order[:-1]) else order)
        dm.users.count[:], dm.items.count[:] = counts
        dm.version += 1

    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        if self.online is not None and hi > lo:
            m = self.setup.cfg.model
            dsgd_step(self.online.m, slice(lo, hi), self.kp, epochs=m.epochs, schedule=Constant(m.lr),
                      strata_order=m.strata_order, batch_id=batch_id)

    def _serve(self, on: tuple[np.ndarray, np.ndarray] | None, ba: tuple[np.ndarray, np.ndarray] | None,
               n_known: int, n: int) -> np.ndarray:
        from dsgd.engines.als import blend_scores

        if self.name == "als" or self.policy == "score-blend":
            if ba is None:  # before the first retrain
                if on is None:
                    return _with_fallback(np.empty((n, n_known), np.float32), np.zeros(n, bool), self.pop, n_known)
                return _with_fallback(self.online.scores(on[0], n_known), on[1], self.pop, n_known)
            assert self.snap is not None
            if on is None:
                return _with_fallback(self.snap.scores(ba[0], n_known), ba[1], self.pop, n_known)
            assert self.online is not None
            s_on = self.online.scores(on[0], n_known)
            s_ba = self.snap.scores(ba[0], n_known)
            on_known = self.online.item_view(n_known)[0]
            ba_known = self.snap.item_view(n_known)[0]
            out = np.empty((n, n_known), np.float32)
            both, only_on, only_ba = on[1] & ba[1], on[1] & ~ba[1], ~on[1] & ba[1]
            alpha = self.setup.rc.alpha
            for rows, a, b in ((both, s_on, s_ba), (only_on, s_on, None), (only_ba, None, s_ba)):
                if rows.any():
                    out[rows] = blend_scores(None if a is None else a[rows], None if b is None else b[rows],
                                             on_known, ba_known, alpha)
            return _with_fallback(out, on[1] | ba[1], self.pop, n_known)
        assert self.online is not None
        return _with_fallback(self.online.scores(on[0], n_known), on[1], self.pop, n_known)

    def score(self, users: np.ndarray, n_known: int, stream: Stream | None = None) -> np.ndarray:
        on = self.online.user_rows(users) if self.online is not None else None
        ba = self.snap.user_rows(users) if self.snap is not None else None
        return self._serve(on, ba, n_known, len(users))

    def score_foldin(self, stream: Stream, lo: int, c: int, ce: int, n_known: int) -> np.ndarray:
        on = self.online.foldin_rows(stream, lo, c, ce, n_known) if self.online is not None else None
        ba = self.snap.foldin_rows(stream, lo, c, ce, n_known) if self.snap is not None else None
        return self._serve(on, ba, n_known, ce - c)


# ---- fit cache ------------------------------------------------------------------------------------------
class FitCache:
    """Retrain results by key: a few in memory, all on disk under ``folder`` (if given) so that runs over
    the same stream (other micro-batch sizes, validation grids, later sessions) reuse the weekly fits."""

    def __init__(self, folder: str | Path | None = None, memory: int = 4) -> None:
        self.folder = Path(folder) if folder else None
        self.memory = memory
        self._mem: OrderedDict[str, Any] = OrderedDict()

    @staticmethod
    def digest(key: tuple) -> str:
        return hashlib.sha256(repr(key).encode()).hexdigest()[:32]

    def _remember(self, h: str, value: Any) -> Any:
        self._mem[h] = value
        self._mem.move_to_end(h)
        while len(self._mem) > self.memory:
            self._mem.popitem(last=False)
        return value

    def get_arrays(self, key: tuple, build: Any) -> dict[str, np.ndarray]:
        h = self.digest(key)
        if h in self._mem:
            self._mem.move_to_end(h)
            return self._mem[h]
        path = self.folder / f"{h}.npz" if self.folder else None
        if path is not None and path.exists():
            with np.load(path) as z:
                return self._remember(h, {k: z[k] for k in z.files})
        value = build()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **value)
            tmp.replace(path)
        return self._remember(h, value)

    def get_model(self, key: tuple, stream: Stream, build: Any) -> DenseModel:
        """A copy of the cached DenseModel for ``key`` (built on a miss)."""
        def arrays() -> dict[str, np.ndarray]:
            m = build()
            return {"uvec": m.users.vec, "ubias": m.users.bias, "ucount": m.users.count, "uknown": m.users.known,
                    "ivec": m.items.vec, "ibias": m.items.bias, "icount": m.items.count, "iknown": m.items.known,
                    "meta": np.array([m.rank, m.seed, m.d], np.int64), "scale": np.array(m.init_scale)}

        a = self.get_arrays(key, arrays)
        rank, seed, d = (int(x) for x in a["meta"])
        m = DenseModel(stream, rank, seed, float(a["scale"]), d)
        for side, p in ((m.users, "u"), (m.items, "i")):
            side.vec, side.bias = a[f"{p}vec"].copy(), a[f"{p}bias"].copy()
            side.count, side.known = a[f"{p}count"].copy(), a[f"{p}known"].copy()
        m.rebuild_pools()
        return m


def build_model(name: str, params: EvalParams, stream: Stream, popularity: Popularity, *,
                cache: FitCache | None = None, setup: RetrainSetup | None = None) -> Any:
    """The model ``name`` with its popularity fallback ``popularity`` (which is the model for "popularity")."""
    if name == "popularity":
        return popularity
    if name in SGD_KINDS:
        return FactorModel(name, params, popularity, stream, cache)
    if setup is None:
        setup = retrain_setup(None, params)
    return ProductModel(name, params, popularity, stream, setup)
