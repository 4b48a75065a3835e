"""What the endpoints answer, without HTTP: recommendations for users, for a user's events (fold-in),
similar items; request checks that name the parameter they refuse.

Every answer is computed on one :class:`~dsgd.serve.state.Served` (taken once per request) by the
model's :class:`~dsgd.core.blend.BlendModel`, the same code ``dsgd recommend`` runs. Excluded from every
list: the items the ``[serve]`` rules make unavailable, a request's ``exclude`` items and, with
``exclude_seen``, the user's items in ``events`` (and the items of the request's events). ``include``
restricts the candidates to its items.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsgd.core.blend import Recs, UserFactors, events_ptr
from dsgd.core.config import Config
from dsgd.core.contract import REASON_FIELDS, REASONS, canonical_id, parse_fields
from dsgd.serve.batching import Coalescer
from dsgd.serve.holder import Holder
from dsgd.serve.state import Served

#: Longest id (the event contract's limit) and longest include/exclude list of one request.
MAX_ID_CHARS = 512
MAX_FILTER_ITEMS = 10_000


class BadRequest(Exception):
    """A request the service refuses: ``status`` (4xx), the ``parameter`` at fault and why."""

    def __init__(self, parameter: str, message: str, status: int = 400, reason: str | None = None) -> None:
        super().__init__(message)
        self.parameter, self.message, self.status, self.reason = parameter, message, status, reason


class NotReady(Exception):
    """No model is loaded yet (503)."""


@dataclass(frozen=True)
class Event:
    """One event of a fold-in request: an item id and an optional rating (explicit) or weight (implicit)."""

    item: str
    rating: float | None = None


class Service:
    """The recommendation service on the holder's current state."""

    def __init__(self, holder: Holder, cfg: Config) -> None:
        self.holder, self.cfg = holder, cfg
        self.coalescer = Coalescer(metrics=holder.metrics)

    def _recommend(self, st: Served, users: UserFactors, k: int, exclude: list[np.ndarray], cand: np.ndarray | None,
                   folded: np.ndarray | None = None) -> list[Recs]:
        """:meth:`BlendModel.recommend`; a lone known user is scored on the rows the int8 screen leaves
        (big online models), else through the coalescer, so concurrent requests share one product."""
        if len(users) == 1 and cand is None and not users.cold[0]:
            rows = st.model.screened_rows(users, k + len(exclude[0]), self.cfg.serve.screen_min_items)
            if rows is not None:
                return st.model.recommend(users, k, exclude=exclude, candidates=rows, folded=folded)
            row = self.coalescer.scores(st.model, users)
            return [st.model.pick(row, k, exclude=exclude[0], folded=folded is not None and bool(folded[0]))]
        return st.model.recommend(users, k, exclude=exclude, candidates=cand, folded=folded)

    def state(self) -> Served:
        st = self.holder.state
        if st is None:
            raise NotReady("no model loaded yet: the factors table has not been read (see /ready)")
        return st

    # ---- checks -------------------------------------------------------------------------------------
    def k(self, k: int | None) -> int:
        k = self.cfg.serve.default_k if k is None else k
        if not 1 <= k <= self.cfg.serve.max_k:
            raise BadRequest("k", f"k must be between 1 and {self.cfg.serve.max_k} (serve.max_k), got {k}")
        return int(k)

    @staticmethod
    def check_id(parameter: str, value: str) -> str:
        """``value`` if it is a valid id by the event contract (:func:`dsgd.core.contract.canonical_id`)."""
        if not 1 <= len(value) <= MAX_ID_CHARS:
            raise BadRequest(parameter, f"{parameter} must be 1..{MAX_ID_CHARS} characters, got {len(value)}")
        if canonical_id(value) != value:
            raise BadRequest(parameter, f"{parameter} is not a valid id: it holds a control character or starts or "
                             "ends with whitespace (the event contract)")
        return value

    def contract_events(self, st: Served, user: object, events: Sequence[Mapping[str, object]]
                        ) -> tuple[str | None, list[Event]]:
        """A fold-in request's user and events (decoded JSON values) checked with the event contract's
        reference (:func:`dsgd.core.contract.parse_fields`, the rules every Kafka record meets; the
        model's kind and ``model.rating_min``/``rating_max``): canonical ids, float32 ratings. A bad one
        is a 422 naming the field (``events[2].rating``) and the contract's reason."""
        uid = None if user is None else canonical_id(user)
        if user is not None and uid is None:
            raise BadRequest("user", f"user: bad_user: {REASONS['bad_user']}", 422, reason="bad_user")
        m, explicit, now = self.cfg.model, st.factors.meta.get("kind") == "explicit", int(time.time() * 1000)
        out = []
        for j, e in enumerate(events):
            got = parse_fields({**e, "user": uid or "anonymous"}, default_ts_ms=now, explicit=explicit,
                               rating_min=m.rating_min, rating_max=m.rating_max)
            if isinstance(got, str):
                name = f"events[{j}].{REASON_FIELDS.get(got, 'item')}"
                raise BadRequest(name, f"{name}: {got}: {REASONS[got]}", 422, reason=got)
            out.append(Event(got.item, got.rating))
        return uid, out

    def _item_rows(self, st: Served, parameter: str, ids: Sequence[str]) -> np.ndarray:
        if len(ids) > MAX_FILTER_ITEMS:
            raise BadRequest(parameter, f"{parameter} holds {len(ids)} items; at most {MAX_FILTER_ITEMS}")
        rows = st.model.rows_of(list(ids))
        if (rows < 0).any():
            unknown = [i for i, r in zip(ids, rows, strict=True) if r < 0][:5]
            raise BadRequest(parameter, f"{parameter}: unknown item(s) {', '.join(map(repr, unknown))} "
                             f"(not in model version {st.version})")
        return rows

    def _filters(self, st: Served, include: Sequence[str] | None, exclude: Sequence[str] | None
                 ) -> tuple[np.ndarray | None, np.ndarray]:
        cand = self._item_rows(st, "include", include) if include else None
        ex = self._item_rows(st, "exclude", exclude) if exclude else np.zeros(0, np.int64)
        return cand, np.concatenate([ex, st.unavailable])

    def _exclude_seen(self, exclude_seen: bool | None) -> bool:
        return self.cfg.serve.exclude_seen if exclude_seen is None else bool(exclude_seen)

    # ---- answers ------------------------------------------------------------------------------------
    def _answer(self, st: Served, user: str | None, rec: Recs, **extra: Any) -> dict[str, Any]:
        self.holder.metrics.recommendations.labels(rec.source).inc()
        return {"user": user, "source": rec.source, "model_version": st.version,
                "snapshot_id": st.model.snapshot_id, "items": st.model.as_items(rec), **extra}

    def for_users(self, users: Sequence[str], *, k: int | None = None, exclude_seen: bool | None = None,
                  include: Sequence[str] | None = None, exclude: Sequence[str] | None = None) -> list[dict[str, Any]]:
        """Top-``k`` of each user: by model score, or the popularity fallback for a user no model knows."""
        st = self.state()
        k = self.k(k)
        if len(users) > self.cfg.serve.max_batch_users:
            raise BadRequest("users", f"users holds {len(users)} ids; at most {self.cfg.serve.max_batch_users} "
                             "(serve.max_batch_users)")
        ids = [self.check_id("user", u) for u in users]
        cand, ex = self._filters(st, include, exclude)
        seen = self._exclude_seen(exclude_seen)
        excl = [np.concatenate([ex, st.seen_rows(u)]) if seen else ex for u in ids]
        recs = self._recommend(st, st.users(ids), k, excl, cand)
        return [self._answer(st, u, r) for u, r in zip(ids, recs, strict=True)]

    def for_events(self, user: object, raw_events: Sequence[Mapping[str, object]], *, k: int | None = None,
                   exclude_seen: bool | None = None, include: Sequence[str] | None = None,
                   exclude: Sequence[str] | None = None) -> dict[str, Any]:
        """Top-``k`` for a user (known, unknown or anonymous: None) folded in from ``raw_events`` (decoded
        JSON objects with ``item``, optional ``rating`` and ``ts``; oldest first; checked with the event
        contract) against the fixed item factors (:mod:`dsgd.core.foldin_rule`)."""
        st = self.state()
        k = self.k(k)
        if not 1 <= len(raw_events) <= self.cfg.serve.max_events:
            raise BadRequest("events", f"events must hold 1..{self.cfg.serve.max_events} events (serve.max_events), "
                             f"got {len(raw_events)}")
        user, events = self.contract_events(st, user, raw_events)
        ratings = self._ratings(st, events)
        rows = st.model.rows_of([e.item for e in events])
        used = rows >= 0
        cand, ex = self._filters(st, include, exclude)
        uf = st.users([user]) if user is not None else UserFactors.one(st.model.rank)
        folded_users, folded = st.model.fold_in(uf, events_ptr([int(used.sum())]), rows[used],
                                                None if ratings is None else ratings[used], st.rule)
        if self._exclude_seen(exclude_seen):
            ex = np.concatenate([ex, rows[used], st.seen_rows(user) if user is not None else np.zeros(0, np.int64)])
        rec = self._recommend(st, folded_users, k, [ex], cand, folded)[0]
        return self._answer(st, user, rec, events_used=int(used.sum()), events_ignored=int((~used).sum()))

    def _ratings(self, st: Served, events: Sequence[Event]) -> np.ndarray | None:
        """The events' ratings (explicit) or weights (implicit, default 1); the contract checked them already
        (an explicit model's rating is present and in bounds), an implicit weight must not be negative."""
        explicit = st.factors.meta.get("kind") == "explicit"
        if not explicit and all(e.rating is None for e in events):
            return None
        out = np.ones(len(events), np.float32)
        for j, e in enumerate(events):
            if e.rating is not None and not explicit and e.rating < 0:
                raise BadRequest(f"events[{j}].rating", f"events[{j}].rating must be >= 0 (an implicit event "
                                 f"weight), got {e.rating}")
            if e.rating is not None:
                out[j] = e.rating
        return out

    def similar(self, item: str, *, k: int | None = None) -> dict[str, Any]:
        """The ``k`` items closest to ``item`` (cosine of the online item vectors), unavailable ones left out."""
        st = self.state()
        k = self.k(k)
        row = st.model.rows_of([self.check_id("item", item)])[0]
        if row < 0:
            raise BadRequest("item", f"item {item!r} is not in model version {st.version}", status=404)
        rec = st.model.similar(int(row), k, exclude=st.unavailable)
        return {"item": item, "model_version": st.version, "items": st.model.as_items(rec)}

    def ready(self) -> dict[str, Any]:
        """Readiness: the served version, its age, sizes and the last reload (raises NotReady before one)."""
        st = self.state()
        commit = st.commit_time if st.commit_time is not None else st.loaded_at
        return {"ready": True, "model_version": st.version, "model_age_s": round(max(0.0, time.time() - commit), 3),
                "loaded_age_s": round(time.time() - st.loaded_at, 3), "items": len(st.model),
                "users": len(st.factors.users.factors), "snapshot_id": st.model.snapshot_id,
                "blend_policy": st.factors.meta.get("blend_policy"), "seen_pairs": st.seen.pairs,
                "seen_dropped_pairs": st.seen.dropped, "unavailable_items": int(len(st.unavailable))}
