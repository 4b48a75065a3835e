"""The factors of one side (users or items) as contiguous arrays: the one in-memory representation.

:class:`SideFactors` holds ids, keys, vectors, biases and counts of one side. It is what the local
engine trains in place, what the streaming trainer caches between batches, what the evaluation harness
and the server score, and what goes to and comes from Arrow (and so Spark and Delta) at the edges.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dsgd.core import columns as C
from dsgd.core.arrays import first_positions
from dsgd.core.hashing import init_vectors


def vector_matrix(col: Any, rank: int) -> np.ndarray:
    """float32 [n, rank] from a column of per-row vectors (lists or arrays, e.g. a collected array<float>)."""
    if len(col) == 0:
        return np.zeros((0, rank), np.float32)
    return np.stack([np.asarray(v, np.float32) for v in col]).reshape(len(col), rank)


class SideFactors:
    """One side (users or items) of a model; rows are appended as new ids appear.

    ``keys`` (int64, unique), ``ids`` (str objects), ``vec`` (float32 ``[n, rank]``), ``bias`` (float32)
    and ``count`` (int64) are views of growable buffers: adding ``m`` rows costs ``O(m)`` amortized
    (capacity doubles), and the sorted key index is merged, not rebuilt, so a batch's cost does not grow
    with the model. ``changed`` flags the rows a training step updated (set by the kernel and by
    :meth:`ensure`; cleared with :meth:`clear_changed`).
    """

    def __init__(self, keys: np.ndarray, ids: np.ndarray, vec: np.ndarray, bias: np.ndarray,
                 count: np.ndarray) -> None:
        keys = np.ascontiguousarray(keys, dtype=np.int64)
        n = keys.shape[0]
        vec = np.asarray(vec, dtype=np.float32)
        self._n = n
        self._keys = keys.copy()
        self._ids = np.asarray(ids, dtype=object).copy()
        self._vec = np.ascontiguousarray(vec.reshape(n, vec.shape[-1] if vec.ndim == 2 else 0)).copy()
        self._bias = np.ascontiguousarray(bias, dtype=np.float32).copy()
        self._count = np.ascontiguousarray(count, dtype=np.int64).copy()
        self._changed = np.zeros(n, dtype=np.bool_)
        if not (self._ids.shape[0] == self._vec.shape[0] == self._bias.shape[0] == self._count.shape[0] == n):
            raise ValueError("keys, ids, vec, bias and count must have the same number of rows")
        self._order: np.ndarray | None = None  # rows in key order
        self._sorted_keys: np.ndarray | None = None

    keys = property(lambda self: self._keys[:self._n])
    ids = property(lambda self: self._ids[:self._n])
    vec = property(lambda self: self._vec[:self._n])
    bias = property(lambda self: self._bias[:self._n])
    count = property(lambda self: self._count[:self._n])
    changed = property(lambda self: self._changed[:self._n])

    @property
    def rank(self) -> int:
        return int(self._vec.shape[1])

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

    @classmethod
    def from_arrow(cls, table: pa.Table, rank: int) -> SideFactors:
        """From an Arrow table of factor rows (id, key, vec list<float>, bias, count), ordered by key.

        The vectors are read as one flat float32 buffer (no per-row objects); a null bias or count is 0.
        """
        table = table.combine_chunks()
        keys = table.column(C.KEY).to_numpy().astype(np.int64)
        order = np.argsort(keys, kind="stable")
        return cls(keys=keys[order], ids=np.asarray(table.column(C.ID).to_pylist(), dtype=object)[order],
                   vec=np.ascontiguousarray(list_matrix(table.column(C.VEC), rank)[order]),
                   bias=_numbers(table.column(C.BIAS), np.float32)[order],
                   count=_numbers(table.column(C.COUNT), np.int64)[order])

    def to_arrow(self, idx: np.ndarray | None = None) -> pa.Table:
        """Factor rows (id, key, vec, bias, count) of the rows ``idx`` (all rows if None) as Arrow: the
        one conversion of changed rows on their way to Spark and Delta."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        return pa.table({C.ID: pa.array(self.ids[idx].tolist(), pa.string()), C.KEY: pa.array(self.keys[idx]),
                         C.VEC: list_array(self.vec[idx]), C.BIAS: pa.array(self.bias[idx], pa.float32()),
                         C.COUNT: pa.array(self.count[idx], pa.int64())})

    def frame(self, idx: np.ndarray | None = None) -> pd.DataFrame:
        """Factor rows (id, key, vec, bias, count) of the rows ``idx`` (all rows if None)."""
        idx = np.arange(len(self)) if idx is None else np.asarray(idx, dtype=np.int64)
        return pd.DataFrame({C.ID: self.ids[idx], C.KEY: self.keys[idx], C.VEC: list(self.vec[idx]),
                             C.BIAS: self.bias[idx], C.COUNT: self.count[idx]})

    def copy(self) -> SideFactors:
        """A deep copy (training updates the arrays in place)."""
        out = SideFactors(self.keys, self.ids, self.vec, self.bias, self.count)
        out._changed[:] = self.changed
        return out

    def __len__(self) -> int:
        return self._n

    def clear_changed(self) -> None:
        self._changed[:self._n] = False

    def sorted_rows(self) -> np.ndarray:
        """Row positions in key order (maintained incrementally; do not modify)."""
        self._ensure_order()
        return self._order

    def _ensure_order(self) -> None:
        if self._order is None:
            self._order = np.argsort(self.keys, kind="stable").astype(np.int64)
            self._sorted_keys = self.keys[self._order]

    def index_of(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, int64, -1 where absent."""
        keys = np.asarray(keys, dtype=np.int64)
        if self._n == 0:
            return np.full(keys.shape, -1, np.int64)
        self._ensure_order()
        sk = self._sorted_keys
        pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
        return np.where(sk[pos] == keys, self._order[pos], -1).astype(np.int64)

    def ensure(self, ids: Any, keys: np.ndarray, rank: int, seed: int, scale: float, side: str) -> np.ndarray:
        """Add the keys not yet present (in order of first appearance, with :func:`init_vectors`, zero
        bias and count, flagged changed) and return the row of every given key."""
        keys = np.asarray(keys, dtype=np.int64)
        ids = np.asarray(ids, dtype=object)
        if ids.shape != keys.shape:
            raise ValueError("ids and keys must be aligned")
        if self.rank != rank:
            raise ValueError(f"rank {rank} does not match the stored vectors' rank {self.rank}")
        rows = self.index_of(keys)
        missing = rows < 0
        if missing.any():
            mk = keys[missing]
            first = first_positions(mk)
            new_keys = mk[first]
            self._append(new_keys, np.array([str(x) for x in ids[missing][first]], dtype=object),
                         init_vectors(new_keys, rank, seed, scale, side))
            rows = self.index_of(keys)
        return rows

    def _append(self, keys: np.ndarray, ids: np.ndarray, vec: np.ndarray) -> None:
        n, m = self._n, keys.shape[0]
        if n + m > self._keys.shape[0]:
            self._grow(max(2 * self._keys.shape[0], n + m, 16))
        self._keys[n:n + m], self._ids[n:n + m], self._vec[n:n + m] = keys, ids, vec
        self._bias[n:n + m] = 0.0
        self._count[n:n + m] = 0
        self._changed[n:n + m] = True
        self._n = n + m
        if self._order is not None:  # merge the new keys into the sorted index: O(n + m log m), no re-sort
            by_key = np.argsort(keys, kind="stable")
            pos = np.searchsorted(self._sorted_keys, keys[by_key])
            self._order = np.insert(self._order, pos, n + by_key.astype(np.int64))
            self._sorted_keys = np.insert(self._sorted_keys, pos, keys[by_key])

    def _grow(self, capacity: int) -> None:
        n = self._n

        def grown(buf: np.ndarray, fill: Any) -> np.ndarray:
            out = np.full((capacity, *buf.shape[1:]), fill, dtype=buf.dtype)
            out[:n] = buf[:n]
            return out

        self._keys, self._ids, self._vec = grown(self._keys, 0), grown(self._ids, None), grown(self._vec, 0.0)
        self._bias, self._count, self._changed = grown(self._bias, 0.0), grown(self._count, 0), grown(self._changed, False)


def list_array(mat: np.ndarray) -> pa.Array:
    """An Arrow ``list<float>`` column from a float32 ``[n, rank]`` matrix, sharing its buffer."""
    mat = np.ascontiguousarray(mat, dtype=np.float32)
    n, k = mat.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(mat.reshape(-1), type=pa.float32()))


def list_matrix(col: pa.Array | pa.ChunkedArray, rank: int) -> np.ndarray:
    """A float32 ``[n, rank]`` matrix from an Arrow ``list<float>`` column (every list of length ``rank``)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks()
    n = len(col)
    if n == 0:
        return np.zeros((0, rank), np.float32)
    if col.null_count:
        raise ValueError(f"{col.null_count} factor vector(s) are null")
    flat = col.flatten().to_numpy(zero_copy_only=False).astype(np.float32, copy=False)
    if flat.size != n * rank:
        raise ValueError(f"factor vectors do not all have rank {rank} ({flat.size} values for {n} rows)")
    return flat.reshape(n, rank)


def _numbers(col: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    return np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False), dtype=dtype).copy()
