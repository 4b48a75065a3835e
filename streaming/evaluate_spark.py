"""The Spark engine's prequential evaluation: the same DCG as :func:`streaming.evaluate.evaluate_batch`,
with the item factors left on the executors.

Only the sample's users and target items come to the driver (``S x rank`` values); every item's score is
compared with each event's target score inside the tasks that read the items, which return one partial
count per event and partition. Popularity ranks come from a histogram of the item counts, aggregated on
the executors. The driver never holds the item side.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.factors import SideFactors, list_matrix
from dsgd.core.hashing import id_key
from dsgd.core.metrics import dcg_from_ranks
from dsgd.core.scoring import score_matrix, score_pairs
from dsgd.store.factor_store import FactorStore

_COUNTS_SCHEMA = "event long, higher long"


def evaluate_batch_spark(spark: SparkSession, sample: pd.DataFrame, *, store: FactorStore, version: int,
                         rank: int, k: int, max_driver_rows: int) -> dict[str, float]:
    """Mean DCG@K of the model (``store`` at ``version``) and of popularity on ``sample`` (user, item).

    At most ``max_driver_rows`` factor rows of either side are collected (the sample's own users and
    targets); a larger sample raises instead of filling the driver.
    """
    n = len(sample)
    if n == 0:
        return {"dcg": float("nan"), "dcg_popularity": float("nan"), "dcg_events": 0, "dcg_known_users": 0.0}
    su = _collect(store, C.SIDE_USER, sample[C.USER], version, rank, max_driver_rows)
    st = _collect(store, C.SIDE_ITEM, sample[C.ITEM], version, rank, max_driver_rows)
    items = store.load(C.SIDE_ITEM, version=version)
    urows = su.index_of(id_key(sample[C.USER].to_numpy(object)))
    trows = st.index_of(id_key(sample[C.ITEM].to_numpy(object)))
    known_item, known_user = trows >= 0, urows >= 0
    pop_ranks = np.zeros(n, np.int64)
    pop_ranks[known_item] = 1 + _popularity_higher(items, st.count[trows[known_item]])
    pop_dcg = dcg_from_ranks(pop_ranks, k)
    dcg = pop_dcg.copy()  # unknown users get the popularity fallback; an unknown item scores 0
    sel = np.flatnonzero(known_item & known_user)
    if sel.size:
        uvec, ubias = su.vec[urows[sel]], su.bias[urows[sel]]
        target = score_pairs(uvec, st.vec[trows[sel]], user_bias=ubias, item_bias=st.bias[trows[sel]])
        higher = _items_scoring_higher(spark, items, uvec, ubias, target.astype(np.float32), st.keys[trows[sel]])
        dcg[sel] = dcg_from_ranks(1 + higher, k)
    return {"dcg": float(dcg.mean()), "dcg_popularity": float(pop_dcg.mean()), "dcg_events": int(n),
            "dcg_known_users": float(known_user.mean())}


def _collect(store: FactorStore, side: str, ids: pd.Series, version: int, rank: int, max_rows: int) -> SideFactors:
    """The factor rows of ``ids`` (a small set) in the driver."""
    wanted = store.spark.createDataFrame(pd.DataFrame({C.ID: pd.unique(ids.astype(str))}))
    table = store.load(side, ids=wanted, version=version).limit(max_rows + 1).toArrow()
    if table.num_rows > max_rows:
        raise RuntimeError(f"the evaluation would collect more than {max_rows} factor rows to the driver")
    return SideFactors.from_arrow(table, rank)


def _popularity_higher(items: DataFrame, target_counts: np.ndarray) -> np.ndarray:
    """Items counted more often than each target count, from a histogram aggregated on the executors."""
    hist = items.groupBy(C.COUNT).agg(F.count(F.lit(1)).alias("n")).toPandas()
    counts, n = hist[C.COUNT].to_numpy(np.int64), hist["n"].to_numpy(np.int64)
    order = np.argsort(counts)
    counts, above = counts[order], np.cumsum(n[order][::-1])[::-1]  # above[j] = items with count >= counts[j]
    pos = np.searchsorted(counts, target_counts, side="right")
    return np.where(pos < len(counts), above[np.minimum(pos, len(counts) - 1)], 0).astype(np.int64)


def _items_scoring_higher(spark: SparkSession, items: DataFrame, uvec: np.ndarray, ubias: np.ndarray,
                          target: np.ndarray, target_keys: np.ndarray) -> np.ndarray:
    """For each sampled event, the number of other items whose score beats its target's (summed over
    the tasks that hold the items; the target itself never counts, whatever the rounding)."""
    payload = spark.sparkContext.broadcast((np.ascontiguousarray(uvec), ubias.astype(np.float32),
                                            target.astype(np.float32), np.asarray(target_keys, np.int64)))
    try:
        counts = (items.select(C.KEY, C.VEC, C.BIAS).mapInArrow(_HigherCounter(payload), _COUNTS_SCHEMA)
                  .groupBy("event").agg(F.sum("higher").alias("higher")).toPandas())
    finally:
        payload.unpersist()
    out = np.zeros(len(target), np.int64)
    out[counts["event"].to_numpy(np.int64)] = counts["higher"].to_numpy(np.int64)
    return out


class _HigherCounter:
    """``mapInArrow`` function: per item batch, the count of items scoring above each event's target."""

    def __init__(self, payload: Any) -> None:
        self.payload = payload

    def __call__(self, batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        uvec, ubias, target, tkeys = self.payload.value
        total = np.zeros(len(target), np.int64)
        for rb in batches:
            if rb.num_rows == 0:
                continue
            keys = np.asarray(rb.column(C.KEY).to_numpy(zero_copy_only=False), np.int64)
            vec = list_matrix(rb.column(C.VEC), uvec.shape[1])
            bias = np.asarray(rb.column(C.BIAS).fill_null(0).to_numpy(zero_copy_only=False), np.float32)
            for lo in range(0, len(target), 1024):
                hi = lo + 1024
                s = score_matrix(uvec[lo:hi], vec, user_bias=ubias[lo:hi], item_bias=bias, dtype=np.float32)
                beats = (s > target[lo:hi, None]) & (keys[None, :] != tkeys[lo:hi, None])
                total[lo:hi] += beats.sum(axis=1)
        yield pa.RecordBatch.from_arrays([pa.array(np.arange(len(target), dtype=np.int64)), pa.array(total)],
                                         names=["event", "higher"])
