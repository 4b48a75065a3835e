"""The value types of :mod:`dsgd.core.blend`: item sides, users, recommendations, and small helpers."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

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


def row_norms(vec: np.ndarray) -> np.ndarray:
    v = np.asarray(vec, np.float32)
    return np.sqrt(np.einsum("ij,ij->i", v, v, dtype=np.float64))


def positions(sorted_rows: np.ndarray, rows: np.ndarray) -> np.ndarray:
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
