"""What one request reads: the model, the seen sets and the rules of one moment, swapped as one reference.

A request takes ``holder.state`` once and uses only that object, so it never mixes two model versions
and never sees a half-loaded one (a new :class:`Served` is complete before the reference is swapped).
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np

from dsgd.core.blend import BlendModel, UserFactors
from dsgd.core.config import Config
from dsgd.core.factors import SideFactors
from dsgd.core.foldin_rule import FoldInRule
from dsgd.core.hashing import id_key
from dsgd.serve.loader import LoadedFactors, Snapshot
from dsgd.serve.seen import SeenSets


def rows_of_ids(side: SideFactors, ids: np.ndarray, keys: np.ndarray | None = None) -> np.ndarray:
    """Row of each id in ``side`` (-1 where absent), matched by key and confirmed by id."""
    if len(ids) == 0:
        return np.zeros(0, np.int64)
    rows = side.index_of(id_key(ids) if keys is None else keys)
    ok = rows >= 0
    ok[ok] = side.ids[rows[ok]] == ids[ok]
    return np.where(ok, rows, -1)


def serving_rule(cfg: Config, meta: dict) -> FoldInRule:
    """The fold-in the server applies to this model (config ``[serve]`` fold-in keys, the model's kind)."""
    s = cfg.serve
    return FoldInRule.for_model(kind=str(meta.get("kind", cfg.model.kind)), use_bias=cfg.model.use_bias,
                                mu=float(meta.get("mu", 0.0)), method=s.foldin_method, prior=s.foldin_prior,
                                lr=cfg.model.lr, negatives=cfg.model.negatives, max_events=s.max_events,
                                new_user_min_events=s.foldin_new_user_min_events, als_reg=cfg.retrain.als_reg,
                                als_alpha=cfg.retrain.als_alpha)


@dataclass(frozen=True)
class Served:
    """The served state: the factors version, its blend model, seen sets, unavailable items."""

    factors: LoadedFactors
    snapshot: Snapshot | None
    model: BlendModel
    rule: FoldInRule
    seen: SeenSets
    unavailable: np.ndarray  # int64 item rows never served
    commit_time: float | None
    loaded_at: float

    @property
    def version(self) -> int:
        return self.factors.version

    @classmethod
    def build(cls, cfg: Config, factors: LoadedFactors, snapshot: Snapshot | None, seen: SeenSets,
              unavailable_ids: set[str], commit_time: float | None, previous: Served | None = None) -> Served:
        """A complete state; the blend model is reused from ``previous`` when its inputs did not change."""
        carry = previous is not None and factors.base_version == previous.factors.version  # an append to it
        if previous is not None and previous.factors is factors and previous.snapshot is snapshot:
            model = previous.model
        else:
            model = BlendModel.from_meta(factors.meta, factors.items.factors,
                                         snapshot.items if snapshot is not None else None,
                                         mu_batch=snapshot.mu if snapshot is not None else 0.0,
                                         version=factors.version,
                                         previous=previous.model if carry else None, changed=factors.items.changed)
        rows = model.rows_of(sorted(unavailable_ids)) if unavailable_ids else np.zeros(0, np.int64)
        return cls(factors, snapshot, model, serving_rule(cfg, factors.meta), seen,
                   np.unique(rows[rows >= 0]), commit_time, time.time())

    def users(self, ids: list[str]) -> UserFactors:
        """The users' vectors in the online model and (score-blend) the snapshot; absent users have has=False."""
        arr = np.asarray(ids, dtype=object)
        keys = id_key(arr) if len(arr) else np.zeros(0, np.int64)
        online = self.factors.users.factors
        r = rows_of_ids(online, arr, keys)
        uf = UserFactors(_take(online.vec, r), _take(online.bias, r), r >= 0)
        if self.model.batch is not None and self.snapshot is not None:
            b = rows_of_ids(self.snapshot.users, arr, keys)
            uf.batch_vec, uf.batch_bias, uf.batch_has = _take(self.snapshot.users.vec, b), \
                _take(self.snapshot.users.bias, b), b >= 0
        return uf

    def seen_rows(self, user: str) -> np.ndarray:
        """Item rows of the current model the user has events on."""
        keys = self.seen.items_of(int(id_key([user])[0]))
        if len(keys) == 0:
            return keys
        rows = self.model.rows_of_keys(keys)
        return rows[rows >= 0]


def _take(a: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``a[rows]`` with zeros where ``rows`` is -1."""
    out = np.zeros((len(rows), *a.shape[1:]), dtype=a.dtype)
    ok = rows >= 0
    out[ok] = a[rows[ok]]
    return out
