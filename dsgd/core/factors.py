"""The factors of one side (users or items) as contiguous arrays: the one in-memory representation.

:class:`SideFactors` holds ids, keys, vectors, biases and counts of one side. It is what the local
engine trains in place, what the streaming trainer caches between batches, what the evaluation harness
and the server score, and what goes to and comes from Arrow (and so Spark and Delta) at the edges.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from dsgd.core import columns as C
from dsgd.core.hashing import init_vectors


def vector_matrix(col: Any, rank: int) -> np.ndarray:
    """float32 [n, rank] from a column of per-row vectors (lists or arrays, e.g. a collected array<float>)."""
    if len(col) == 0:
        return np.zeros((0, rank), np.float32)
    return np.stack([np.asarray(v, np.float32) for v in col]).reshape(len(col), rank)


@dataclass
class SideFactors:
    """One side (users or items) of a model; rows are appended as new ids appear."""

    keys: np.ndarray  # int64 [n], unique
    ids: np.ndarray  # object [n] of str, aligned with keys
    vec: np.ndarray  # float32 [n, rank]
    bias: np.ndarray  # float32 [n]
    count: np.ndarray  # int64 [n]

    def __post_init__(self) -> None:
        self.keys = np.ascontiguousarray(self.keys, dtype=np.int64)
        self.ids = np.asarray(self.ids, dtype=object)
        self._sorted: np.ndarray | None = None

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
        return SideFactors(self.keys.copy(), self.ids.copy(), self.vec.copy(), self.bias.copy(), self.count.copy())

    def __len__(self) -> int:
        return int(self.keys.shape[0])

    def index_of(self, keys: np.ndarray) -> np.ndarray:
        """Row of each key, int64, -1 where absent."""
        keys = np.asarray(keys, dtype=np.int64)
        if len(self) == 0:
            return np.full(keys.shape, -1, np.int64)
        if self._sorted is None:
            self._sorted = np.argsort(self.keys, kind="stable")
            self._sorted_keys = self.keys[self._sorted]  # kept: a lookup of a few keys must not copy them all
        sk = self._sorted_keys
        pos = np.minimum(np.searchsorted(sk, keys), len(sk) - 1)
        return np.where(sk[pos] == keys, self._sorted[pos], -1).astype(np.int64)

    def ensure(self, ids: Any, keys: np.ndarray, rank: int, seed: int, scale: float, side: str) -> np.ndarray:
        """Add the keys not yet present (in order of first appearance, with :func:`init_vectors` and zero
        bias/count) and return the row of every given key."""
        keys = np.asarray(keys, dtype=np.int64)
        ids = np.asarray(ids, dtype=object)
        if ids.shape != keys.shape:
            raise ValueError("ids and keys must be aligned")
        if self.vec.shape[1] != rank:
            raise ValueError(f"rank {rank} does not match the stored vectors' rank {self.vec.shape[1]}")
        missing = self.index_of(keys) < 0
        if missing.any():
            mk = keys[missing]
            _, first = np.unique(mk, return_index=True)
            first.sort()
            new_keys = mk[first]
            new_ids = np.array([str(x) for x in ids[missing][first]], dtype=object)
            n = new_keys.shape[0]
            self.keys = np.concatenate([self.keys, new_keys])
            self.ids = np.concatenate([self.ids, new_ids])
            self.vec = np.ascontiguousarray(np.concatenate([self.vec, init_vectors(new_keys, rank, seed,
                                                                                    scale, side)]))
            self.bias = np.concatenate([self.bias, np.zeros(n, np.float32)])
            self.count = np.concatenate([self.count, np.zeros(n, np.int64)])
            self._sorted = None
        return self.index_of(keys)


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
