"""The evaluated stream with dense indices, and the popularity model (also every factor model's fallback)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from typing import Any

import numpy as np


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
