"""The served score of a user for every item: online model, batch snapshot, and their score blend.

One definition for every reader of a deployed model: ``dsgd recommend`` and ``dsgd export``
(``batch/serving.py``, through Spark) and ``dsgd serve`` (``dsgd/serve``, no JVM) build a
:class:`BlendModel` from the same rows and call the same methods, so they serve the same items and
scores for the same model version.

Scores (``mu`` only for explicit models; biases are 0 where the model has none), computed by
:func:`dsgd.core.scoring.score_matrix` in float32 (the factors' precision) and blended in float64:

- online (live ``factors``): ``mu + b_u + b_i + p_u . q_i``;
- batch (the snapshot a ``score-blend`` retrain left in ``snapshots``): the same with its factors and ``mu``;
- served: the online score, except under ``score-blend``: ``alpha * batch + (1 - alpha) * online`` where
  both models know the user and the item, and the one model's score where only one does; items no model
  that knows the user has are never served.

A user no model knows (cold) gets the most popular items (online item ``count``, ties by item id).
Top-K ties are broken by item id (:func:`dsgd.core.scoring.top_k` with the id order). Excluded items
(seen, unavailable, a request's exclude list) never appear; a candidate list restricts the items scored.

Example
-------
>>> m = BlendModel.from_sides(online_items, version=12)
>>> recs = m.recommend(UserFactors.one(m.rank, online=(vec, 0.0)), k=10, exclude=[seen_rows])
>>> m.item_ids[recs[0].rows], recs[0].scores, recs[0].source
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsgd.core.factors import SideFactors
from dsgd.core.foldin_rule import FoldInRule, fold_users, item_gram_blas
from dsgd.core.hashing import id_key
from dsgd.core.scoring import score_matrix, top_k

UserVec = tuple[np.ndarray, float]


@dataclass
class ItemSide:
    """The item factors of one model, rows aligned on :attr:`BlendModel.item_ids`."""

    vec: np.ndarray  # float32 [n, rank], C-contiguous
    bias: np.ndarray  # float32 [n]
    known: np.ndarray | None = None  # bool [n]: the model has this item (None: every item)
    mu: float = 0.0  # added to every score (explicit models)

    def __post_init__(self) -> None:
        self.vec = np.ascontiguousarray(self.vec, dtype=np.float32)
        self.bias = np.ascontiguousarray(self.bias, dtype=np.float32)

    def known_rows(self) -> np.ndarray | None:
        return None if self.known is None else np.flatnonzero(self.known)


@dataclass
class UserFactors:
    """``m`` users' vectors in the online model and in the batch snapshot; ``*_has`` says which users
    each model knows (the other rows are ignored)."""

    online_vec: np.ndarray  # float32 [m, rank]
    online_bias: np.ndarray  # float32 [m]
    online_has: np.ndarray  # bool [m]
    batch_vec: np.ndarray | None = None
    batch_bias: np.ndarray | None = None
    batch_has: np.ndarray | None = None

    @classmethod
    def one(cls, rank: int, online: UserVec | None = None, batch: UserVec | None = None) -> UserFactors:
        """One user given their ``(vec, bias)`` in each model (None: that model does not know them)."""
        def part(u: UserVec | None) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
            if u is None:
                return np.zeros((1, rank), np.float32), np.zeros(1, np.float32), np.zeros(1, bool)
            return (np.asarray(u[0], np.float32).reshape(1, rank), np.array([u[1] or 0.0], np.float32),
                    np.ones(1, bool))
        return cls(*part(online), *part(batch))

    def __len__(self) -> int:
        return int(self.online_has.shape[0])

    @classmethod
    def concat(cls, parts: list[UserFactors]) -> UserFactors:
        """The users of ``parts`` in order (a part without snapshot vectors gets rows the snapshot lacks)."""
        def stack(name: str, width: int | None, dtype: type) -> np.ndarray:
            return np.concatenate([getattr(p, name) if getattr(p, name) is not None
                                   else np.zeros((len(p), width) if width else len(p), dtype) for p in parts])
        rank = parts[0].online_vec.shape[1]
        out = cls(stack("online_vec", rank, np.float32), stack("online_bias", None, np.float32),
                  stack("online_has", None, bool))
        if any(p.batch_has is not None for p in parts):
            out.batch_vec, out.batch_bias = stack("batch_vec", rank, np.float32), stack("batch_bias", None, np.float32)
            out.batch_has = stack("batch_has", None, bool)
        return out

    @property
    def cold(self) -> np.ndarray:
        """bool [m]: no model knows the user."""
        return ~(self.online_has | (self.batch_has if self.batch_has is not None else False))


@dataclass
class Recs:
    """One user's recommendations: item rows (of :attr:`BlendModel.item_ids`), scores, and the source."""

    rows: np.ndarray  # int64 [<= k]
    scores: np.ndarray  # float64
    source: str  # "model", "fold-in" or "popularity"


@dataclass
class BlendModel:
    """Everything needed to score users against the items of one model version (numpy only)."""

    item_ids: np.ndarray  # object [n]
    item_keys: np.ndarray  # int64 [n]
    item_count: np.ndarray  # int64 [n]: popularity (online events trained on)
    online: ItemSide
    batch: ItemSide | None = None
    alpha: float = 0.0
    version: int = -1
    snapshot_id: str | None = None
    tie_order: np.ndarray | None = None  # int64 [n]: rank of each item id in sorted order
    _cache: dict = field(default_factory=dict, repr=False)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def __post_init__(self) -> None:
        self.item_keys = np.ascontiguousarray(self.item_keys, dtype=np.int64)
        if self.tie_order is None:
            self.tie_order = id_order(self.item_ids)
        self._by_key = np.argsort(self.item_keys, kind="stable")
        self._pop = np.lexsort((self.tie_order, -self.item_count)).astype(np.int64)

    def __getstate__(self) -> dict:  # picklable for Spark executors (the lock and caches stay behind)
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={}, _lock=threading.Lock())

    @classmethod
    def from_sides(cls, online: SideFactors, batch: SideFactors | None = None, *, explicit: bool = False,
                   mu_online: float = 0.0, mu_batch: float = 0.0, alpha: float = 0.0, version: int = -1,
                   snapshot_id: str | None = None) -> BlendModel:
        """From the online item factors and, under score-blend, the snapshot's: the items are the online
        ones (in their order) then the snapshot-only ones; each side is aligned on them by id key."""
        n_on = len(online)
        if batch is None:
            side = ItemSide(online.vec, online.bias, None, mu_online if explicit else 0.0)
            return cls(online.ids, online.keys, online.count.astype(np.int64), side, version=version)
        pos = online.index_of(batch.keys)
        extra = np.flatnonzero(pos < 0)
        ids = np.concatenate([online.ids, batch.ids[extra]])
        keys = np.concatenate([online.keys, batch.keys[extra]])
        n, rank = len(ids), online.vec.shape[1]
        brow = np.where(pos >= 0, pos, n_on + np.cumsum(pos < 0) - 1)
        on = ItemSide(np.concatenate([online.vec, np.zeros((len(extra), rank), np.float32)]),
                      np.concatenate([online.bias, np.zeros(len(extra), np.float32)]),
                      np.arange(n) < n_on, mu_online if explicit else 0.0)
        bv, bb, bk = np.zeros((n, rank), np.float32), np.zeros(n, np.float32), np.zeros(n, bool)
        bv[brow], bb[brow], bk[brow] = batch.vec, batch.bias, True
        count = np.concatenate([online.count, np.zeros(len(extra), np.int64)])
        return cls(ids, keys, count, on, ItemSide(bv, bb, bk, mu_batch if explicit else 0.0), alpha=alpha,
                   version=version, snapshot_id=snapshot_id)

    @classmethod
    def from_meta(cls, meta: dict, online: SideFactors, batch: SideFactors | None = None, *, mu_batch: float = 0.0,
                  version: int = -1) -> BlendModel:
        """From the model metadata row (kind, mu, blend policy and alpha, snapshot id) and the item sides;
        ``batch`` is the snapshot named by :func:`snapshot_as_of` (None when there is none)."""
        policy = meta.get("blend_policy")
        return cls.from_sides(online, batch if snapshot_as_of(meta) is not None else None,
                              explicit=meta.get("kind") == "explicit", mu_online=float(meta.get("mu", 0.0)),
                              mu_batch=mu_batch, alpha=float(meta.get("blend_alpha") or 0.0), version=version,
                              snapshot_id=meta.get("snapshot_id") if policy else None)

    # ---- lookups ------------------------------------------------------------------------------------
    def as_items(self, recs: Recs) -> list[dict]:
        """``[{"item": id, "score": float}, ...]``: the JSON form of every reader."""
        return [{"item": str(self.item_ids[r]), "score": float(s)} for r, s in zip(recs.rows, recs.scores, strict=True)]

    @property
    def rank(self) -> int:
        return int(self.online.vec.shape[1])

    def __len__(self) -> int:
        return int(self.item_keys.shape[0])

    def rows_of(self, ids: list[str] | np.ndarray) -> np.ndarray:
        """Row of each item id (int64, -1 where the model has no such item)."""
        ids = np.asarray(ids, dtype=object)
        if len(ids) == 0 or len(self) == 0:
            return np.full(len(ids), -1, np.int64)
        rows = self.rows_of_keys(id_key(ids))
        ok = rows >= 0
        ok[ok] = self.item_ids[rows[ok]] == ids[ok]  # a key collision is not a match
        return np.where(ok, rows, -1)

    def rows_of_keys(self, keys: np.ndarray) -> np.ndarray:
        """Row of each item key (int64, -1 where absent)."""
        keys = np.asarray(keys, np.int64)
        if len(self) == 0:
            return np.full(keys.shape, -1, np.int64)
        sk = self._cached("sorted_keys", lambda: self.item_keys[self._by_key])
        pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
        return np.where(sk[pos] == keys, self._by_key[pos], -1).astype(np.int64)

    # ---- scores -------------------------------------------------------------------------------------
    def scores(self, users: UserFactors, rows: np.ndarray | None = None) -> np.ndarray:
        """Served scores float64 ``[m, n]`` (or ``[m, len(rows)]`` for the candidate ``rows``); ``-inf``
        where no model that knows the user has the item, so a cold user's row is all ``-inf``."""
        m = len(users)
        width = len(self) if rows is None else len(rows)
        on = self._side(self.online, users.online_vec, users.online_bias, users.online_has, rows)
        if self.batch is None or users.batch_has is None or not users.batch_has.any():
            return np.where(on[1], on[0], -np.inf) if on is not None else np.full((m, width), -np.inf)
        ba = self._side(self.batch, users.batch_vec, users.batch_bias, users.batch_has, rows)
        assert ba is not None
        if on is None:
            return np.where(ba[1], ba[0], -np.inf)
        (so, ko), (sb, kb) = on, ba
        mixed = np.where(ko & kb, self.alpha * sb + (1.0 - self.alpha) * so, np.where(ko, so, sb))
        return np.where(ko | kb, mixed, -np.inf)

    @staticmethod
    def _side(side: ItemSide, vec: np.ndarray | None, bias: np.ndarray | None, has: np.ndarray,
              rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray] | None:
        """(scores float64 [m, width], usable bool [m, width]) of one model, None if it knows no user."""
        if vec is None or not has.any():
            return None
        iv, ib = (side.vec, side.bias) if rows is None else (side.vec[rows], side.bias[rows])
        s = score_matrix(vec, iv, user_bias=bias, item_bias=ib, mu=side.mu, dtype=np.float32).astype(np.float64)
        known = np.ones(iv.shape[0], bool) if side.known is None else (side.known if rows is None else side.known[rows])
        return s, has[:, None] & known[None, :]

    def recommend(self, users: UserFactors, k: int, *, exclude: list[np.ndarray | None] | None = None,
                  candidates: np.ndarray | None = None, folded: np.ndarray | None = None) -> list[Recs]:
        """Top-``k`` per user: by served score, or by popularity for a cold user; ``exclude[j]`` holds
        item rows user ``j`` must not get, ``candidates`` the only rows any user may get; ``folded``
        marks users whose vectors were folded in (source ``fold-in``)."""
        cand = None if candidates is None else np.unique(np.asarray(candidates, np.int64))
        s = self.scores(users, cand)
        return [self.pick(s[j], k, cold=bool(users.cold[j]), exclude=None if exclude is None else exclude[j],
                          candidates=cand, folded=folded is not None and bool(folded[j])) for j in range(len(users))]

    def pick(self, row: np.ndarray, k: int, *, cold: bool = False, exclude: np.ndarray | None = None,
             candidates: np.ndarray | None = None, folded: bool = False) -> Recs:
        """One user's top-``k`` from their row of :meth:`scores` (over ``candidates``, sorted unique row
        numbers, if given); the popularity fallback if the user is ``cold``."""
        if cold:
            return self.popularity(k, exclude=exclude, candidates=candidates)
        if exclude is not None and len(exclude):
            row = row.copy()
            row[exclude if candidates is None else _positions(candidates, exclude)] = -np.inf
        best = top_k(row, k, tie_order=self.tie_order if candidates is None else self.tie_order[candidates])
        return Recs(best if candidates is None else candidates[best], row[best], "fold-in" if folded else "model")

    def popularity(self, k: int, *, exclude: np.ndarray | None = None, candidates: np.ndarray | None = None) -> Recs:
        """The ``k`` most popular items (``item_count``, ties by id) not excluded, among ``candidates``."""
        if candidates is not None:
            cand = np.asarray(candidates, np.int64)
            order = cand[np.lexsort((self.tie_order[cand], -self.item_count[cand]))]
        else:
            order = self._pop[: k + (0 if exclude is None else len(exclude))]
        if exclude is not None and len(exclude):
            order = order[~np.isin(order, exclude)]
        rows = order[:k]
        return Recs(rows, self.item_count[rows].astype(np.float64), "popularity")

    def similar(self, row: int, k: int, *, exclude: np.ndarray | None = None) -> Recs:
        """The ``k`` items whose online vectors have the largest cosine with item ``row``'s (itself and
        items the online model lacks excluded)."""
        norms = self._norms()
        q = self.online.vec[row]
        s = score_matrix(q[None, :], self.online.vec, dtype=np.float32)[0].astype(np.float64)
        with np.errstate(divide="ignore", invalid="ignore"):
            s = s / (norms * norms[row])
        s[row] = -np.inf
        if self.online.known is not None:
            s[~self.online.known] = -np.inf
        if exclude is not None and len(exclude):
            s[exclude] = -np.inf
        best = top_k(s, k, tie_order=self.tie_order)
        return Recs(best, s[best], "model")

    # ---- fold-in ------------------------------------------------------------------------------------
    def fold_in(self, users: UserFactors, ptr: np.ndarray, items: np.ndarray, ratings: np.ndarray | None,
                rule: FoldInRule) -> tuple[UserFactors, np.ndarray]:
        """The users folded in from their events (user ``j``: item rows ``items[ptr[j]:ptr[j+1]]``,
        oldest first) against each model's fixed item factors; returns the new users and ``folded``
        (bool [m]: some model folded the user in)."""
        ov, ob, of = self._fold_side("online", self.online, users.online_vec, users.online_bias, users.online_has,
                                     ptr, items, ratings, rule.online, rule.new_user_min_events)
        out = UserFactors(ov, ob, users.online_has | of)
        folded = of
        if self.batch is not None and rule.batch is not None:
            bv, bb, bf = self._fold_side("batch", self.batch, users.batch_vec, users.batch_bias, users.batch_has,
                                         ptr, items, ratings, rule.batch, rule.new_user_min_events)
            has = users.batch_has if users.batch_has is not None else np.zeros(len(users), bool)
            out.batch_vec, out.batch_bias, out.batch_has = bv, bb, has | bf
            folded = folded | bf
        return out, folded

    def _fold_side(self, name: str, side: ItemSide, vec: np.ndarray | None, bias: np.ndarray | None,
                   has: np.ndarray | None, ptr: np.ndarray, items: np.ndarray, ratings: np.ndarray | None,
                   params, min_events: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        ptr, items = np.asarray(ptr, np.int64), np.asarray(items, np.int64)
        keep = np.ones(len(items), bool) if side.known is None else side.known[items]
        if not keep.all():  # events on items this model lacks do not count for it
            owner = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
            ptr = events_ptr(np.bincount(owner[keep], minlength=len(ptr) - 1))
            items, ratings = items[keep], None if ratings is None else np.asarray(ratings)[keep]
        cand = self._cached(f"known:{name}", side.known_rows)
        gram = self._cached(f"gram:{name}", lambda: item_gram_blas(side.vec, cand)) if params.method == "ls" else None
        return fold_users(side.vec, side.bias, vec, bias, has, ptr, items, ratings, params=params,
                          new_user_min_events=min_events, candidates=cand, gram=gram)

    def prepare(self) -> BlendModel:
        """Compute the derived arrays requests would otherwise compute on first use (the Gram matrices of
        the ``ls`` fold-in, the item norms of :meth:`similar`); returns self."""
        for name, side in (("online", self.online), ("batch", self.batch)):
            if side is not None:
                cand = self._cached(f"known:{name}", side.known_rows)
                self._cached(f"gram:{name}", lambda s=side, c=cand: item_gram_blas(s.vec, c))
        self._norms()
        return self

    def _norms(self) -> np.ndarray:
        return self._cached("norms", lambda: np.linalg.norm(self.online.vec, axis=1).astype(np.float64))

    def _cached(self, key: str, build):
        """A value derived once per model (norms, Gram matrices); safe to call from request threads."""
        if key not in self._cache:
            with self._lock:
                if key not in self._cache:
                    self._cache[key] = build()
        return self._cache[key]


def snapshot_as_of(meta: dict) -> int | None:
    """The cut-off of the snapshot the served score blends in (score-blend policy), else None."""
    if meta.get("blend_policy") == "score-blend" and meta.get("snapshot_as_of") is not None:
        return int(meta["snapshot_as_of"])
    return None


def _positions(sorted_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """Positions in ``sorted_rows`` of those ``rows`` it holds."""
    pos = np.minimum(np.searchsorted(sorted_rows, rows), len(sorted_rows) - 1)
    return pos[sorted_rows[pos] == rows] if len(sorted_rows) else np.zeros(0, np.int64)


def id_order(ids: np.ndarray) -> np.ndarray:
    """int64 rank of each id in sorted (string) order: the tie-breaker of every top-K."""
    n = len(ids)
    if n == 0:
        return np.zeros(0, np.int64)
    order = pc.sort_indices(pa.array(np.asarray(ids, dtype=object), pa.string())).to_numpy()
    out = np.empty(n, np.int64)
    out[order] = np.arange(n, dtype=np.int64)
    return out


def events_ptr(counts: list[int] | np.ndarray) -> np.ndarray:
    """CSR offsets from per-user event counts."""
    return np.concatenate([[0], np.cumsum(np.asarray(counts, np.int64))]).astype(np.int64)
