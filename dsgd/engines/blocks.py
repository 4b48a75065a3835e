"""Blocks of factor rows as the Spark exchanges move them: Arrow tables in, block-local arrays out.

Both Spark exchanges (:mod:`dsgd.engines.spark` shuffle, :mod:`dsgd.engines.barrier`) tag every row
of a stratum's input with its kind (an event, a user row, an item row, or a stats row on the way back)
and its block, and train a block with :func:`train_block` on block-local arrays sorted by key, exactly
as the local engine does on its global arrays.
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.hashing import init_vectors
from dsgd.core.kernel import run_block
from dsgd.core.params import KernelParams

#: Row kinds of a stratum's input and output.
KIND_EVENT, KIND_USER, KIND_ITEM, KIND_STATS = 0, 1, 2, 3


def partition_keys(spark: SparkSession, d: int) -> list[int]:
    """For each block b, an int whose Spark hash partitioning into d partitions is partition b."""
    return list(_partition_keys_cached(spark.sparkContext.applicationId, d, spark))


@lru_cache(maxsize=64)
def _partition_keys_cached(_app: str, d: int, spark: SparkSession) -> tuple[int, ...]:
    rows = (spark.range(0, 64 * d + 64).select(F.col("id").cast("int").alias("v"))
            .select("v", F.expr(f"pmod(hash(v), {d})").alias("p"))
            .groupBy("p").agg(F.min("v").alias("v")).collect())
    found = {r.p: r.v for r in rows}
    if len(found) < d:
        raise RuntimeError(f"could not find partition keys for d={d}")
    return tuple(found[b] for b in range(d))


def with_keys(events: DataFrame, d: int) -> DataFrame:
    """Add user_key/item_key (xxhash64 of the id, as :func:`dsgd.core.hashing.id_key`) and their blocks."""
    return (events.withColumn(C.USER_KEY, F.xxhash64(F.col(C.USER)))
            .withColumn(C.ITEM_KEY, F.xxhash64(F.col(C.ITEM)))
            .withColumn("ub", F.expr(f"pmod({C.USER_KEY}, {d})").cast("int"))
            .withColumn("ib", F.expr(f"pmod({C.ITEM_KEY}, {d})").cast("int")))


def block_vectors(col: pa.Array, keys: np.ndarray, rank: int, seed: int, scale: float, side: str
             ) -> tuple[np.ndarray, np.ndarray]:
    """Dense float32 [n, rank] from a list<float> column; null entries get their deterministic init."""
    n = len(col)
    out = np.empty((n, rank), np.float32)
    valid = ~np.asarray(col.is_null().to_numpy(zero_copy_only=False), bool) if n else np.zeros(0, bool)
    if valid.any():
        flat = col.filter(pa.array(valid)).flatten().to_numpy(zero_copy_only=False).astype(np.float32)
        if flat.size != valid.sum() * rank:
            raise ValueError(f"factor vectors do not have rank {rank}")
        out[valid] = flat.reshape(-1, rank)
    new = ~valid
    if new.any():
        out[new] = init_vectors(keys[new], rank, seed, scale, side)
    return out, new


def list_array(mat: np.ndarray) -> pa.Array:
    n, k = mat.shape
    offsets = pa.array(np.arange(0, (n + 1) * k, k, dtype=np.int32))
    return pa.ListArray.from_arrays(offsets, pa.array(mat.reshape(-1), type=pa.float32()))


def block_rows(ft: pa.Table, rank: int, seed: int, scale: float, side: str) -> list:
    """Factor rows of one block in canonical order (by key): ``[table, keys, vec, bias, count, changed]``;
    rows without a vector get their deterministic init and ``changed = True``."""
    ft = ft.combine_chunks()
    keys = ft.column("key").to_numpy().astype(np.int64)
    order = np.argsort(keys, kind="stable")
    ft = ft.take(pa.array(order))
    keys = keys[order]
    if not ft.num_rows:
        return [ft, keys, np.zeros((0, rank), np.float32), np.zeros(0, np.float32), np.zeros(0, np.int64),
                np.zeros(0, bool)]
    vec, new = block_vectors(ft.column("vec").combine_chunks(), keys, rank, seed, scale, side)
    return [ft, keys, vec, ft.column("bias").to_numpy(zero_copy_only=False).astype(np.float32),
            ft.column("count").to_numpy(zero_copy_only=False).astype(np.int64),
            np.asarray(ft.column("changed").to_numpy(zero_copy_only=False), bool) | new]


def train_block(ukeys: np.ndarray, U: np.ndarray, bu: np.ndarray, ucnt: np.ndarray, uch: np.ndarray,
                ikeys: np.ndarray, V: np.ndarray, bi: np.ndarray, icnt: np.ndarray, ich: np.ndarray,
                ek: np.ndarray, ek2: np.ndarray, r: np.ndarray, ts: np.ndarray, seq: np.ndarray,
                params: KernelParams, seed: int, count: bool, b: int) -> tuple[float, int]:
    """One block on block-local arrays (rows sorted by key), as every Spark exchange runs it.

    Events find their rows by key (``ek`` user keys, ``ek2`` item keys); negatives come from every item
    of the block with weights ``count + 1``; the factor arrays and the ``changed`` flags (``uch``/``ich``:
    moved, or had an event) are updated in place. Returns (sum of squared errors, positives).
    """
    u_idx, i_idx = np.searchsorted(ukeys, ek), np.searchsorted(ikeys, ek2)
    if (u_idx >= len(ukeys)).any() or (ukeys[np.minimum(u_idx, len(ukeys) - 1)] != ek).any() \
            or (i_idx >= len(ikeys)).any() or (ikeys[np.minimum(i_idx, len(ikeys) - 1)] != ek2).any():
        raise RuntimeError(f"block {b}: an event's user or item has no factor row")
    popularity = params.implicit and params.negative_sampling == "popularity"
    pool = np.arange(len(ikeys), dtype=np.int64)
    weight = (icnt + 1).astype(np.float64) if popularity else None
    U0, V0 = U.copy(), V.copy()
    sse, n = run_block(U, bu, ucnt, V, bi, icnt, u_idx, i_idx, r, ts, seq, pool if params.implicit else None,
                       weight, params, seed, count)
    uch |= (U != U0).any(axis=1)
    ich |= (V != V0).any(axis=1)
    uch[u_idx] = True
    ich[i_idx] = True
    return float(sse), int(n)
