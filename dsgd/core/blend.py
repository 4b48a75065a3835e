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

from dsgd.core.blend_types import (
    ItemSide,
    Recs,
    UserFactors,
    events_ptr,
    id_order,
    positions,
    row_norms,
)
from dsgd.core.factors import SideFactors
from dsgd.core.foldin_rule import FoldInRule, fold_users, item_gram_blas
from dsgd.core.hashing import id_key
from dsgd.core.scoring import score_matrix, top_k
from dsgd.core.screen import Int8Items


def blend_scores(online: np.ndarray | None, batch: np.ndarray | None, online_known: np.ndarray,
                 batch_known: np.ndarray, alpha: float) -> np.ndarray | None:
    """The ``score-blend`` policy's served scores of one user (or rows of users) over the items.

    ``online``/``batch``: each model's scores (``[..., n_items]``), or None where the model does not
    know the user; ``*_known``: bool ``[n_items]``, the items each model has. Where both models know
    the user and the item: ``alpha * batch + (1 - alpha) * online``; where one model knows the item (or
    only one knows the user): that model's score; items neither knows: ``-inf``. Both None: None (a
    cold user: the caller serves popularity).
    """
    if online is None and batch is None:
        return None
    if batch is None:
        return np.where(online_known, online, -np.inf)
    if online is None:
        return np.where(batch_known, batch, -np.inf)
    both = online_known & batch_known
    mixed = np.where(both, alpha * batch + (1.0 - alpha) * online, np.where(online_known, online, batch))
    return np.where(online_known | batch_known, mixed, -np.inf)



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
    _lock: threading.RLock = field(default_factory=threading.RLock, repr=False)

    def __post_init__(self) -> None:
        self.item_keys = np.ascontiguousarray(self.item_keys, dtype=np.int64)
        if self.tie_order is None:
            self.tie_order = id_order(self.item_ids)

    @property
    def _by_key(self) -> np.ndarray:
        return self._cached("by_key", lambda: np.argsort(self.item_keys, kind="stable"))

    @property
    def _pop(self) -> np.ndarray:
        """Items by popularity (count descending, ties by id)."""
        return self._cached("pop", lambda: np.lexsort((self.tie_order, -self.item_count)).astype(np.int64))

    def __getstate__(self) -> dict:  # picklable for Spark executors (the lock and caches stay behind)
        return {k: v for k, v in self.__dict__.items() if k not in ("_cache", "_lock")}

    def __setstate__(self, state: dict) -> None:
        self.__dict__.update(state, _cache={}, _lock=threading.RLock())

    @classmethod
    def from_sides(cls, online: SideFactors, batch: SideFactors | None = None, *, explicit: bool = False,
                   mu_online: float = 0.0, mu_batch: float = 0.0, alpha: float = 0.0, version: int = -1,
                   snapshot_id: str | None = None, previous: BlendModel | None = None,
                   changed: np.ndarray | None = None) -> BlendModel:
        """From the online item factors and, under score-blend, the snapshot's: the items are the online
        ones (in their order) then the snapshot-only ones; each side is aligned on them by id key. ``previous`` and
        ``changed`` (online models): the model these items update and its rows that changed (:meth:`carry`)."""
        n_on = len(online)
        if batch is None:
            side = ItemSide(online.vec, online.bias, None, mu_online if explicit else 0.0)
            same = previous is not None and previous.batch is None and np.array_equal(previous.item_keys, online.keys)
            m = cls(online.ids, online.keys, online.count.astype(np.int64), side, version=version,
                    tie_order=previous.tie_order if same else None)
            return m.carry(previous, changed) if previous is not None and changed is not None else m
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
                  version: int = -1, previous: BlendModel | None = None, changed: np.ndarray | None = None
                  ) -> BlendModel:
        """From the model metadata row (kind, mu, blend policy and alpha, snapshot id) and the item sides;
        ``batch`` is the snapshot named by :func:`snapshot_as_of` (None when there is none)."""
        policy = meta.get("blend_policy")
        return cls.from_sides(online, batch if snapshot_as_of(meta) is not None else None,
                              explicit=meta.get("kind") == "explicit", mu_online=float(meta.get("mu", 0.0)),
                              mu_batch=mu_batch, alpha=float(meta.get("blend_alpha") or 0.0), version=version,
                              snapshot_id=meta.get("snapshot_id") if policy else None, previous=previous,
                              changed=changed)

    # ---- lookups ------------------------------------------------------------------------------------
    def as_items(self, recs: Recs) -> list[dict]:
        """``[{"item": id, "score": float}, ...]``: the JSON form of every reader."""
        ids, scores = self.item_ids[recs.rows].tolist(), recs.scores.tolist()
        return [{"item": str(i), "score": s} for i, s in zip(ids, scores, strict=True)]

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
        """Served scores ``[m, n]`` (or ``[m, len(rows)]`` for the candidate ``rows``): float32 when one
        model scores (the factors' precision; half the bytes of a float64 row), float64 where the score
        blend mixes two models; ``-inf`` where no model that knows the user has the item, so a cold
        user's row is all ``-inf``."""
        m = len(users)
        width = len(self) if rows is None else len(rows)
        on = self._side(self.online, users.online_vec, users.online_bias, users.online_has, rows)
        if self.batch is None or users.batch_has is None or not users.batch_has.any():
            if on is None:
                return np.full((m, width), -np.inf)
            return on[0] if on[1] is None else np.where(on[1], on[0], -np.inf)
        ba = self._side(self.batch, users.batch_vec, users.batch_bias, users.batch_has, rows)
        assert ba is not None
        if on is None:
            return ba[0] if ba[1] is None else np.where(ba[1], ba[0], -np.inf)
        (so, ko), (sb, kb) = on, ba
        ko = np.ones(so.shape, bool) if ko is None else ko
        kb = np.ones(sb.shape, bool) if kb is None else kb
        return blend_scores(so.astype(np.float64), sb.astype(np.float64), ko, kb, self.alpha)

    @staticmethod
    def _side(side: ItemSide, vec: np.ndarray | None, bias: np.ndarray | None, has: np.ndarray,
              rows: np.ndarray | None) -> tuple[np.ndarray, np.ndarray | None] | None:
        """(scores float32 [m, width], usable bool [m, width] or None for all) of one model, None if it
        knows no user."""
        if vec is None or not has.any():
            return None
        iv, ib = (side.vec, side.bias) if rows is None else (side.vec[rows], side.bias[rows])
        s = score_matrix(vec, iv, user_bias=bias, item_bias=ib, mu=side.mu, dtype=np.float32)
        if side.known is None and has.all():
            return s, None
        known = np.ones(iv.shape[0], bool) if side.known is None else (side.known if rows is None else side.known[rows])
        return s, has[:, None] & known[None, :]

    def screens(self, min_items: int) -> bool:
        """Whether :meth:`screened_rows` applies: an online model (no score blend) that has every item,
        with at least ``min_items`` items (``serve.screen_min_items``)."""
        return self.batch is None and self.online.known is None and len(self) >= max(min_items, 1)

    def screened_rows(self, users: UserFactors, kk: int, min_items: int) -> np.ndarray | None:
        """Sorted item rows holding the ``kk`` best items of one user the online model knows, found
        through the int8 copy of the items (:mod:`dsgd.core.screen`); None where it does not apply
        (:meth:`screens`) or cannot tell. The caller scores these rows exactly (:meth:`recommend` with
        ``candidates``)."""
        if not self.screens(min_items) or len(users) != 1 or not users.online_has[0]:
            return None
        return self._int8().candidates(users.online_vec[0], (float(users.online_bias[0]), self.online.mu), kk)

    def _int8(self) -> Int8Items:
        return self._cached("int8", lambda: Int8Items.of(self.online.vec, self.online.bias))

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
            row[exclude if candidates is None else positions(candidates, exclude)] = -np.inf
        best = top_k(row, k, tie_order=self.tie_order if candidates is None else self.tie_order[candidates])
        return Recs(best if candidates is None else candidates[best], row[best].astype(np.float64),
                    "fold-in" if folded else "model")

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

    def prepare(self, screen_min_items: int | None = None) -> BlendModel:
        """Compute the derived arrays requests would otherwise compute on first use (the Gram matrices of
        the ``ls`` fold-in, the item norms of :meth:`similar`, the int8 items where :meth:`screens`
        with ``screen_min_items``); returns self."""
        for name, side in (("online", self.online), ("batch", self.batch)):
            if side is not None:
                cand = self._cached(f"known:{name}", side.known_rows)
                self._cached(f"gram:{name}", lambda s=side, c=cand: item_gram_blas(s.vec, c))
        self._norms()
        if screen_min_items is not None and self.screens(screen_min_items):
            self._int8().candidates(self.online.vec[0], (0.0,), 1)  # compiles the screen here, not in a request
        return self

    def _norms(self) -> np.ndarray:
        return self._cached("norms", lambda: row_norms(self.online.vec))

    def carry(self, previous: BlendModel, changed: np.ndarray) -> BlendModel:
        """Take over ``previous``'s derived arrays (id order, key index, Gram matrix, norms), updated for
        the item rows ``changed`` (rows of ``previous`` that got new vectors, or rows appended after
        them), instead of computing them again: an incremental reload of a big model. Only for online
        models whose item rows extend ``previous``'s in the same order; otherwise nothing is taken."""
        n_old = len(previous)
        if self.batch is not None or previous.batch is not None or previous.rank != self.rank or \
                n_old > len(self) or not np.array_equal(previous.item_keys, self.item_keys[:n_old]):
            return self
        changed = np.asarray(changed, np.int64)
        pc_ = previous._cache
        if n_old == len(self):
            for key in ("by_key", "sorted_keys"):
                if key in pc_:
                    self._cache[key] = pc_[key]
        if "int8" in pc_:
            self._cache["int8"] = pc_["int8"].with_rows(self.online.vec, self.online.bias, changed)
        if "norms" in pc_:
            norms = np.concatenate([pc_["norms"], np.zeros(len(self) - n_old)])
            norms[changed] = row_norms(self.online.vec[changed])
            self._cache["norms"] = norms
        if "gram:online" in pc_ and self.online.known is None and previous.online.known is None:
            old_rows = changed[changed < n_old]
            self._cache["known:online"] = None
            self._cache["gram:online"] = (pc_["gram:online"] - item_gram_blas(previous.online.vec, old_rows)
                                          + item_gram_blas(self.online.vec, changed))
        return self

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
