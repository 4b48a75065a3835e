"""Per-user seen items from the ``events`` table, held as sorted key pairs: the seen-item filter without Spark.

Layout: every distinct (user, item) pair is two int64 keys (XXH64 of the ids, the same keys as the
factors), kept in two sorted levels: ``main`` and a small ``recent`` level that new events go into;
``recent`` is merged into ``main`` when it outgrows a quarter of it, so adding a batch of events costs
about its own size (amortised), never a rebuild of everything. A user's items are two binary searches.

Memory bound: 16 bytes per distinct (user, item) pair (plus the transient copy of one merge), capped
at ``serve.seen_max_pairs`` pairs (default 5e7: 800 MB); pairs beyond the cap are dropped, logged and
counted (``dsgd_serve_seen_dropped_pairs_total``) and those users' older items may be served again.
``serve.seen_days`` keeps only the last N days of events (a partition filter on ``event_date``).
Removed events (a DELETE on ``events``) are honoured at the next full read (any non-append change
triggers one).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsgd.core import columns as C
from dsgd.core.hashing import id_key

log = logging.getLogger("dsgd.serve")

_EMPTY = np.zeros(0, np.int64)


def pair_keys(users: pa.Array | pa.ChunkedArray, items: pa.Array | pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(user keys, item keys) int64 of aligned id columns: only the distinct ids are hashed."""
    out = []
    for col in (users, items):
        enc = pc.dictionary_encode(col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col)
        keys = id_key(enc.dictionary.to_pylist()) if len(enc.dictionary) else _EMPTY
        out.append(keys[np.asarray(enc.indices.to_numpy(zero_copy_only=False), np.int64)])
    return out[0], out[1]


def _sorted_unique(u: np.ndarray, i: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    if len(u) == 0:
        return _EMPTY, _EMPTY
    order = np.lexsort((i, u))
    u, i = u[order], i[order]
    first = np.ones(len(u), bool)
    first[1:] = (u[1:] != u[:-1]) | (i[1:] != i[:-1])
    return u[first], i[first]


@dataclass(frozen=True)
class SeenSets:
    """Immutable: :meth:`add` returns a new value sharing the unchanged level (requests keep reading the old)."""

    main_u: np.ndarray = field(default_factory=lambda: _EMPTY)
    main_i: np.ndarray = field(default_factory=lambda: _EMPTY)
    recent_u: np.ndarray = field(default_factory=lambda: _EMPTY)
    recent_i: np.ndarray = field(default_factory=lambda: _EMPTY)
    max_pairs: int = 50_000_000
    dropped: int = 0  # pairs left out because of max_pairs
    merge_min: int = 65_536  # the recent level is merged once it holds more than main / 4 + this

    @property
    def pairs(self) -> int:
        """Pairs held (a pair in both levels counts twice: an upper bound of the distinct ones)."""
        return len(self.main_u) + len(self.recent_u)

    @property
    def nbytes(self) -> int:
        return int(sum(a.nbytes for a in (self.main_u, self.main_i, self.recent_u, self.recent_i)))

    def add(self, users: np.ndarray, items: np.ndarray) -> SeenSets:
        """These (user key, item key) pairs added; over ``max_pairs`` the excess is dropped."""
        room = max(0, self.max_pairs - self.pairs)
        u, i = _sorted_unique(np.asarray(users, np.int64), np.asarray(items, np.int64))
        dropped = self.dropped
        if len(u) > room:
            dropped += len(u) - room
            log.error("seen sets: %d pairs over serve.seen_max_pairs=%d were dropped", len(u) - room, self.max_pairs)
            u, i = u[:room], i[:room]
        ru, ri = _sorted_unique(np.concatenate([self.recent_u, u]), np.concatenate([self.recent_i, i]))
        if len(ru) > len(self.main_u) // 4 + self.merge_min:
            mu, mi = _sorted_unique(np.concatenate([self.main_u, ru]), np.concatenate([self.main_i, ri]))
            return SeenSets(mu, mi, _EMPTY, _EMPTY, self.max_pairs, dropped, self.merge_min)
        return SeenSets(self.main_u, self.main_i, ru, ri, self.max_pairs, dropped, self.merge_min)

    def items_of(self, user_key: int) -> np.ndarray:
        """The item keys of one user (may repeat a key present in both levels)."""
        parts = []
        for u, i in ((self.main_u, self.main_i), (self.recent_u, self.recent_i)):
            lo, hi = np.searchsorted(u, user_key, "left"), np.searchsorted(u, user_key, "right")
            if hi > lo:
                parts.append(i[lo:hi])
        return np.concatenate(parts) if parts else _EMPTY


def seen_predicate(seen_days: float, today_ms: int) -> str | None:
    """The ``event_date`` partition filter of the ``serve.seen_days`` window (None: all events)."""
    if seen_days <= 0:
        return None
    start = np.datetime64(int(today_ms - seen_days * 86_400_000), "ms").astype("datetime64[D]")
    return f"{C.EVENT_DATE} >= '{start}'"
