"""Recommendations out of the model: one user (``dsgd recommend``), all users (``dsgd export``), rollback.

Scores (``mu`` only for explicit models; biases are 0 where the model has none):

- online (live ``factors``): ``mu + b_u + b_i + p_u . q_i``;
- batch (the blended snapshot in ``snapshots``): the same with the snapshot's factors and ``mu``;
- served: the online score, except under the ``score-blend`` policy recorded in the model metadata:
  ``alpha * batch + (1 - alpha) * online`` where both models know the user and the item, and the one
  model's score where only one does.

Seen items (any event of the user in ``events``) are left out when ``filter_seen``. A user that no model
knows (cold) gets the most popular items (item ``count``, events trained on) that they have not seen.

Example
-------
>>> recommend(spark, cfg, "u42", k=10)
{'user': 'u42', 'source': 'model', 'items': [{'item': 'i7', 'score': 0.93}, ...], 'model_version': 12}
>>> export_top_k(spark, cfg, k=10)          # -> Delta table <warehouse>/recommendations
>>> rollback(spark, cfg, version=11)
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.retrain_config import RetrainConfig, retrain_config
from dsgd.core import columns as C
from dsgd.core.config import Config
from dsgd.core.factors import vector_matrix
from dsgd.engines.als import blend_scores
from dsgd.store.delta_settings import delta_settings
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables

log = logging.getLogger("dsgd.serving")


@dataclass
class ItemSide:
    """Item matrices of one model, aligned on ``ids`` (the union of both models' items)."""

    vec: np.ndarray  # float32 [n, rank]
    bias: np.ndarray  # float32 [n]
    known: np.ndarray  # bool [n]: the model has this item


@dataclass
class ServingModel:
    """Everything needed to score users against all items (loaded once, scored in numpy)."""

    item_ids: np.ndarray  # object [n]
    item_count: np.ndarray  # int64 [n] popularity
    online: ItemSide
    batch: ItemSide | None
    mu_online: float
    mu_batch: float
    alpha: float
    version: int
    snapshot_id: str | None
    explicit: bool

    def popularity(self, seen: set[str], k: int) -> list[tuple[str, float]]:
        order = np.lexsort((self.item_ids.astype(str), -self.item_count))
        out = []
        for j in order:
            if self.item_ids[j] not in seen:
                out.append((str(self.item_ids[j]), float(self.item_count[j])))
                if len(out) == k:
                    break
        return out

    def scores(self, u_online: tuple[np.ndarray, float] | None, u_batch: tuple[np.ndarray, float] | None
               ) -> np.ndarray | None:
        """Served score of every item for a user given its (vec, bias) in each model; None if cold."""
        on = _score(self.online, u_online, self.mu_online if self.explicit else 0.0)
        ba = _score(self.batch, u_batch, self.mu_batch if self.explicit else 0.0) if self.batch else None
        batch_known = self.batch.known if self.batch else np.zeros_like(self.online.known)
        return blend_scores(on, ba, self.online.known, batch_known, self.alpha)

    def top_k(self, scores: np.ndarray, seen: set[str], k: int) -> list[tuple[str, float]]:
        s = scores.astype(np.float64).copy()
        if seen:
            s[np.isin(self.item_ids, np.array(sorted(seen), dtype=object))] = -np.inf
        n = int(np.isfinite(s).sum())
        if n == 0:
            return []
        kk = min(k, n)
        part = np.argpartition(-s, kk - 1)[:kk]
        order = part[np.lexsort((self.item_ids[part].astype(str), -s[part]))]
        return [(str(self.item_ids[j]), float(s[j])) for j in order]


def _score(side: ItemSide | None, user: tuple[np.ndarray, float] | None, mu: float) -> np.ndarray | None:
    if side is None or user is None:
        return None
    vec, bias = user
    return (side.vec.astype(np.float64) @ np.asarray(vec, np.float64)) + side.bias + float(bias) + mu


def _align(ids: np.ndarray, df: pd.DataFrame, rank: int) -> ItemSide:
    pos = {x: i for i, x in enumerate(ids)}
    vec = np.zeros((len(ids), rank), np.float32)
    bias = np.zeros(len(ids), np.float32)
    known = np.zeros(len(ids), bool)
    if len(df):
        rows = np.array([pos[x] for x in df[C.ID]], np.int64)
        vec[rows] = vector_matrix(df[C.VEC], rank)
        bias[rows] = df[C.BIAS].fillna(0.0).to_numpy(np.float32)
        known[rows] = True
    return ItemSide(vec=vec, bias=bias, known=known)


def load_serving_model(spark: SparkSession, cfg: Config, *, version: int | None = None) -> ServingModel:
    """Item side of the live model (at ``version``, default latest) and, under score-blend, of its snapshot."""
    tables = Tables.from_config(cfg)
    store = FactorStore(spark, tables.factors)
    version = store.version() if version is None else version
    meta = store.meta(version)
    rank = int(meta["rank"])
    items = store.load(C.SIDE_ITEM, version=version).toPandas()
    batch_items = None
    snap_id = meta.get("snapshot_id")
    policy = meta.get("blend_policy")
    snap_mu = 0.0
    if policy == "score-blend" and meta.get("snapshot_as_of") is not None:
        from batch.retrain import load_snapshot, snapshot_meta

        as_of = int(meta["snapshot_as_of"])
        batch_items = load_snapshot(spark, tables.snapshots, as_of, C.SIDE_ITEM).toPandas()
        snap_mu = float((snapshot_meta(spark, tables.snapshots, as_of) or {}).get("mu", 0.0))
    ids = list(items[C.ID])
    if batch_items is not None:
        known = set(ids)
        ids += [x for x in batch_items[C.ID] if x not in known]
    item_ids = np.array(ids, dtype=object)
    count = np.zeros(len(item_ids), np.int64)
    count[: len(items)] = items[C.COUNT].fillna(0).to_numpy(np.int64)
    return ServingModel(item_ids=item_ids, item_count=count, online=_align(item_ids, items, rank),
                        batch=_align(item_ids, batch_items, rank) if batch_items is not None else None,
                        mu_online=float(meta.get("mu", 0.0)), mu_batch=snap_mu,
                        alpha=float(meta.get("blend_alpha") or 0.0), version=version,
                        snapshot_id=snap_id if policy else None, explicit=meta.get("kind") == "explicit")


def _user_rows(spark: SparkSession, cfg: Config, model: ServingModel, users: DataFrame
               ) -> tuple[DataFrame, DataFrame | None]:
    tables = Tables.from_config(cfg)
    store = FactorStore(spark, tables.factors)
    online = store.load(C.SIDE_USER, ids=users, version=model.version)
    batch = None
    if model.batch is not None:
        from batch.retrain import load_snapshot

        meta = store.meta(model.version)
        batch = load_snapshot(spark, tables.snapshots, int(meta["snapshot_as_of"]), C.SIDE_USER).join(
            users.select(C.ID).distinct(), C.ID, "left_semi")
    return online, batch


def _seen(spark: SparkSession, cfg: Config, user: str) -> set[str]:
    from delta.tables import DeltaTable

    path = Tables.from_config(cfg).events
    if not DeltaTable.isDeltaTable(spark, path):
        return set()
    rows = spark.read.format("delta").load(path).where(F.col(C.USER) == user).select(C.ITEM).distinct().collect()
    return {r[0] for r in rows}


def recommend(spark: SparkSession, cfg: Config, user: str, *, k: int | None = None,
              filter_seen: bool | None = None, retrain: RetrainConfig | None = None) -> dict[str, Any]:
    """Top-``k`` items for one user as a JSON-ready dict (``source``: ``model`` or ``popularity``).

    Example
    -------
    >>> recommend(spark, cfg, "u1", k=3)["items"][0]
    {'item': 'i9', 'score': 1.27}
    """
    rc = retrain_config(cfg, retrain)
    k = rc.top_k if k is None else k
    filter_seen = rc.filter_seen if filter_seen is None else filter_seen
    model = load_serving_model(spark, cfg)
    ids = spark.createDataFrame([(user,)], f"{C.ID} string")
    online, batch = _user_rows(spark, cfg, model, ids)
    o = online.collect()
    b = batch.collect() if batch is not None else []
    seen = _seen(spark, cfg, user) if filter_seen else set()
    scores = model.scores((np.asarray(o[0][C.VEC], np.float32), float(o[0][C.BIAS] or 0.0)) if o else None,
                          (np.asarray(b[0][C.VEC], np.float32), float(b[0][C.BIAS] or 0.0)) if b else None)
    if scores is None:
        top, source = model.popularity(seen, k), "popularity"
    else:
        top, source = model.top_k(scores, seen, k), "model"
    return {"user": user, "source": source, "model_version": model.version, "snapshot_id": model.snapshot_id,
            "items": [{"item": i, "score": s} for i, s in top]}


def export_top_k(spark: SparkSession, cfg: Config, *, k: int | None = None, filter_seen: bool | None = None,
                 retrain: RetrainConfig | None = None) -> dict[str, Any]:
    """Top-``k`` for every user (users with events or factors) -> Delta ``recommendations``, one commit.

    Rows: user, rank (1..k), item, score, source (``model``/``popularity``), model_version (factors Delta
    version scored), snapshot_id. The table is overwritten as a whole; Delta keeps the earlier exports.

    Example
    -------
    >>> export_top_k(spark, cfg, k=10)
    {'users': 610, 'rows': 6100, 'cold_users': 3, 'model_version': 12, 'path': '.../recommendations'}
    """
    from delta.tables import DeltaTable

    rc = retrain_config(cfg, retrain)
    k = rc.top_k if k is None else k
    filter_seen = rc.filter_seen if filter_seen is None else filter_seen
    tables = Tables.from_config(cfg)
    model = load_serving_model(spark, cfg)
    store = FactorStore(spark, tables.factors)
    users = store.load(C.SIDE_USER, version=model.version).select(C.ID)
    if DeltaTable.isDeltaTable(spark, tables.events):
        ev = spark.read.format("delta").load(tables.events)
        users = users.unionByName(ev.select(F.col(C.USER).alias(C.ID))).distinct()
        seen = ev.groupBy(F.col(C.USER).alias(C.ID)).agg(F.collect_set(C.ITEM).alias("seen"))
    else:
        users = users.distinct()
        seen = spark.createDataFrame([], f"{C.ID} string, seen array<string>")
    online, batch = _user_rows(spark, cfg, model, users)
    df = users.join(online.select(C.ID, F.col(C.VEC).alias("o_vec"), F.col(C.BIAS).alias("o_bias")), C.ID, "left")
    if batch is not None:
        df = df.join(batch.select(C.ID, F.col(C.VEC).alias("b_vec"), F.col(C.BIAS).alias("b_bias")), C.ID, "left")
    else:
        df = df.withColumn("b_vec", F.lit(None).cast("array<float>")).withColumn("b_bias", F.lit(None).cast("float"))
    df = df.join(seen, C.ID, "left").select(C.ID, "o_vec", "o_bias", "b_vec", "b_bias", "seen")
    out_schema = pa.schema([("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()),
                            ("score", pa.float64()), ("source", pa.string())])

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rb in batches:
            rows: dict[str, list] = {n: [] for n in out_schema.names}
            for rec in rb.to_pylist():
                s_seen = set(rec["seen"] or []) if filter_seen else set()
                o = (np.asarray(rec["o_vec"], np.float32), rec["o_bias"] or 0.0) if rec["o_vec"] is not None else None
                b = (np.asarray(rec["b_vec"], np.float32), rec["b_bias"] or 0.0) if rec["b_vec"] is not None else None
                sc = model.scores(o, b)
                if sc is None:
                    top, src = model.popularity(s_seen, k), "popularity"
                else:
                    top, src = model.top_k(sc, s_seen, k), "model"
                for r, (item, score) in enumerate(top, start=1):
                    rows["user"].append(rec[C.ID])
                    rows["rank"].append(r)
                    rows["item"].append(item)
                    rows["score"].append(score)
                    rows["source"].append(src)
            yield pa.RecordBatch.from_pydict(rows, schema=out_schema)

    recs = (df.mapInArrow(score_partition, "user string, rank int, item string, score double, source string")
            .withColumn("model_version", F.lit(model.version).cast("long"))
            .withColumn("snapshot_id", F.lit(model.snapshot_id).cast("string"))
            .withColumn("generated_at", F.current_timestamp()))
    with delta_settings(spark):
        recs.write.format("delta").mode("overwrite").option("overwriteSchema", "true").save(tables.recommendations)
    stats = (spark.read.format("delta").load(tables.recommendations)
             .agg(F.countDistinct("user").alias("users"), F.count(F.lit(1)).alias("rows"),
                  F.countDistinct(F.when(F.col("source") == "popularity", F.col("user"))).alias("cold")).first())
    out = {"users": int(stats["users"]), "rows": int(stats["rows"]), "cold_users": int(stats["cold"]),
           "k": k, "model_version": model.version, "snapshot_id": model.snapshot_id, "path": tables.recommendations}
    log.info("export: %s", json.dumps(out))
    return out


def rollback(spark: SparkSession, cfg: Config, *, version: int | None = None, timestamp: str | None = None
             ) -> dict[str, Any]:
    """Restore the ``factors`` table (factors + model metadata) to an earlier Delta version or timestamp.

    The restore is a new commit (history is kept, a rollback can itself be rolled back), a compare-and-swap
    like every factor write: a stream batch computed from the replaced model is recomputed from the
    restored one, and the stream continues from there.

    Example
    -------
    >>> rollback(spark, cfg, version=11)
    {'restored_from': 14, 'restored_to_version': 11, 'factors_version': 15, 'snapshot_id': 'asof-1717...'}
    """
    if (version is None) == (timestamp is None):
        raise ValueError("rollback needs exactly one of version= or timestamp=")
    store = FactorStore(spark, Tables.from_config(cfg).factors)
    before = store.version()
    if timestamp is not None:  # restored by the version it resolves to, so the answer can name it
        version = store.version_at(timestamp)
    if version is not None and not 0 <= version <= before:
        raise ValueError(f"version {version} does not exist: the factors table has versions 0..{before}")
    store.restore(version=version)
    meta = store.meta()
    out = {"restored_from": before, "restored_to_version": version, "restored_to_timestamp": timestamp,
           "factors_version": store.version(), "snapshot_id": meta.get("snapshot_id"),
           "blend_policy": meta.get("blend_policy"), "last_batch": meta.get("last_batch")}
    log.info("rollback: %s", json.dumps(out))
    return out
