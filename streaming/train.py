"""The train step of a micro-batch on either engine, and the guard over the rows it changed.

Local engine: the driver's copy of the model is trained in place; the changed rows are row indices,
converted to Arrow (and so to Spark) once, on their way to the commit. Spark engine: the touched rows
are read from Delta and trained on the executors; the changed rows stay Spark DataFrames all the way
to the commit, and the guard runs as one Spark aggregation over them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.config import ModelConfig
from dsgd.core.factors import SideFactors
from dsgd.core.params import KernelParams
from dsgd.engines.local import train_epochs
from dsgd.engines.spark import ensure_ids, train_epochs_spark
from dsgd.store.factor_store import FactorStore
from streaming import decisions as D

FACTOR_COLS = [C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT]


@dataclass
class TrainOutput:
    """The changed factor rows of a batch: row indices into the driver's arrays (local engine) or Spark
    DataFrames (Spark engine), plus the per-epoch stats."""

    stats: list[dict]
    users: SideFactors | None = None
    items: SideFactors | None = None
    user_rows: np.ndarray | None = None
    item_rows: np.ndarray | None = None
    user_df: DataFrame | None = None
    item_df: DataFrame | None = None
    counts: tuple[int, int] | None = None

    @property
    def local(self) -> bool:
        return self.users is not None

    @property
    def n_users(self) -> int:
        return len(self.user_rows) if self.local else self._counts()[0]

    @property
    def n_items(self) -> int:
        return len(self.item_rows) if self.local else self._counts()[1]

    def _counts(self) -> tuple[int, int]:
        if self.counts is None:
            self.counts = (self.user_df.count(), self.item_df.count())
        return self.counts

    def spark_rows(self, spark: SparkSession) -> tuple[DataFrame | None, DataFrame | None]:
        """The changed rows as Spark DataFrames (id, key, vec, bias, count); None for a side without any."""
        if not self.local:
            return self.user_df, self.item_df
        out = []
        for side, rows in ((self.users, self.user_rows), (self.items, self.item_rows)):
            out.append(spark.createDataFrame(side.to_arrow(rows)).select(*FACTOR_COLS) if len(rows) else None)
        return out[0], out[1]


def train_local(ev: pd.DataFrame, uk: np.ndarray, ik: np.ndarray, su: SideFactors, si: SideFactors,
                params: KernelParams, schedule: Any, batch_id: int, m: ModelConfig) -> TrainOutput:
    """Train the driver's copy in place; the changed rows are those the kernel updated or that are new
    (flagged as they change, so nothing proportional to the model is copied or compared)."""
    su.clear_changed()
    si.clear_changed()
    stats = train_epochs(su, si, uk, ik, ev[C.USER].to_numpy(object), ev[C.ITEM].to_numpy(object),
                         ev[C.RATING].fillna(1.0).to_numpy(np.float32), ev[C.TS].to_numpy(np.int64),
                         ev[C.SEQ].to_numpy(np.int64), params, d=m.blocks, epochs=m.epochs, schedule=schedule,
                         strata_order=m.strata_order, seed=m.seed, batch_id=batch_id, init_scale=m.init_scale,
                         rank=m.rank, threads=2)
    return TrainOutput(stats=stats, users=su, items=si, user_rows=np.flatnonzero(su.changed),
                       item_rows=np.flatnonzero(si.changed))


def train_spark(spark: SparkSession, events: DataFrame, state: Any, params: KernelParams, schedule: Any,
                batch_id: int, m: ModelConfig, store: FactorStore, *, n_items: int) -> TrainOutput:
    """Train the touched users and every item (negatives are drawn from them) on the executors."""
    users = store.load(C.SIDE_USER, ids=events.select(F.col(C.USER).alias(C.ID)), version=state.version)
    items = store.load(C.SIDE_ITEM, version=state.version)
    fu = ensure_ids(users, events.select(F.col(C.USER).alias(C.ID)))
    fi = ensure_ids(items, events.select(F.col(C.ITEM).alias(C.ID)))
    ou, oi, stats = train_epochs_spark(spark, events, fu, fi, params, d=m.blocks, epochs=m.epochs,
                                       schedule=schedule, strata_order=m.strata_order, seed=m.seed,
                                       batch_id=batch_id, init_scale=m.init_scale, rank=m.rank,
                                       exchange=m.spark_exchange, n_items=n_items)
    return TrainOutput(stats=stats, user_df=ou.where("changed").select(*FACTOR_COLS),
                       item_df=oi.where("changed").select(*FACTOR_COLS))


def new_id_counts(events: DataFrame, store: FactorStore, version: int) -> tuple[int, int]:
    """Distinct users and items of the batch that the model (at ``version``) has no row for, counted on
    the executors."""
    out = []
    for side, col in ((C.SIDE_USER, C.USER), (C.SIDE_ITEM, C.ITEM)):
        known = store.table(version).where(F.col(C.SIDE) == side).select(C.ID)
        out.append(events.select(F.col(col).alias(C.ID)).distinct().join(known, C.ID, "left_anti").count())
    return out[0], out[1]


def divergence_of_rows(out: TrainOutput, limit: float) -> str:
    """Why the changed rows must not be committed ("" when they are fine): non-finite or huge factors."""
    if out.local:
        for side, rows in ((out.users, out.user_rows), (out.items, out.item_rows)):
            why = D.divergence(side.vec[rows], side.bias[rows], limit)
            if why:
                return why
        return ""
    counts, nonfinite, peak = [], False, 0.0
    for df in (out.user_df, out.item_df):
        r = df.select(F.count(F.lit(1)).alias("n"), F.max(_nonfinite()).alias("bad"),
                      F.max(_peak()).alias("peak")).first()
        counts.append(int(r.n))
        nonfinite |= bool(r.bad)
        peak = max(peak, float(r.peak or 0.0))
    out.counts = (counts[0], counts[1])
    return D.divergence_reason(nonfinite, peak, limit)


def _nonfinite() -> Any:
    bad = F.exists(C.VEC, lambda x: F.isnan(x) | (F.abs(x) == float("inf")))
    return (bad | F.isnan(C.BIAS) | (F.abs(C.BIAS) == float("inf"))).cast("int")


def _peak() -> Any:
    return F.greatest(F.array_max(F.transform(C.VEC, F.abs)), F.abs(C.BIAS)).cast("double")
