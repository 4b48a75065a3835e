"""Recommendations out of the model: one user (``dsgd recommend``), all users (``dsgd export``), rollback.

The served score (online, batch snapshot, score blend), the popularity fallback and the tie rule are
:class:`dsgd.core.blend.BlendModel`'s, the same object ``dsgd serve`` scores with; this module reads the
rows through Spark.

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
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.blend import FACTOR_COLS
from batch.retrain_config import RetrainConfig, retrain_config
from dsgd.core import columns as C
from dsgd.core.blend import BlendModel, Recs, UserFactors, snapshot_as_of
from dsgd.core.config import Config
from dsgd.core.factors import SideFactors
from dsgd.store.delta_settings import delta_settings
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables

log = logging.getLogger("dsgd.serving")


def _sides(df: DataFrame, rank: int) -> SideFactors:
    return SideFactors.from_arrow(df.select(*FACTOR_COLS).toArrow(), rank)


def load_serving_model(spark: SparkSession, cfg: Config, *, version: int | None = None) -> BlendModel:
    """Item side of the live model (at ``version``, default latest) and, under score-blend, of its snapshot."""
    tables = Tables.from_config(cfg)
    store = FactorStore(spark, tables.factors)
    version = store.version() if version is None else version
    meta = store.meta(version)
    rank = int(meta["rank"])
    items = _sides(store.load(C.SIDE_ITEM, version=version), rank)
    batch_items, snap_mu = None, 0.0
    as_of = snapshot_as_of(meta)
    if as_of is not None:
        from batch.retrain import load_snapshot, snapshot_meta

        batch_items = _sides(load_snapshot(spark, tables.snapshots, as_of, C.SIDE_ITEM), rank)
        snap_mu = float((snapshot_meta(spark, tables.snapshots, as_of) or {}).get("mu", 0.0))
    return BlendModel.from_meta(meta, items, batch_items, mu_batch=snap_mu, version=version)


def _user_rows(spark: SparkSession, cfg: Config, model: BlendModel, users: DataFrame
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
              filter_seen: bool | None = None, retrain: RetrainConfig | None = None,
              version: int | None = None) -> dict[str, Any]:
    """Top-``k`` items for one user as a JSON-ready dict (``source``: ``model`` or ``popularity``), from
    the ``factors`` table at ``version`` (default: the latest).

    Example
    -------
    >>> recommend(spark, cfg, "u1", k=3)["items"][0]
    {'item': 'i9', 'score': 1.27}
    """
    rc = retrain_config(cfg, retrain)
    k = rc.top_k if k is None else k
    filter_seen = rc.filter_seen if filter_seen is None else filter_seen
    model = load_serving_model(spark, cfg, version=version)
    ids = spark.createDataFrame([(user,)], f"{C.ID} string")
    online, batch = _user_rows(spark, cfg, model, ids)
    o = online.collect()
    b = batch.collect() if batch is not None else []
    seen = _seen(spark, cfg, user) if filter_seen else set()
    rec = _recommend_one(model, _user_vec(o[0] if o else None), _user_vec(b[0] if b else None), seen, k)
    return {"user": user, "source": rec.source, "model_version": model.version, "snapshot_id": model.snapshot_id,
            "items": model.as_items(rec)}


def _user_vec(row: Any) -> tuple[np.ndarray, float] | None:
    """(vec, bias) of a factor row (a Spark Row or a dict with vec and bias), None if absent."""
    if row is None or row[C.VEC] is None:
        return None
    return np.asarray(row[C.VEC], np.float32), float(row[C.BIAS] or 0.0)


def _recommend_one(model: BlendModel, online: tuple[np.ndarray, float] | None,
                   batch: tuple[np.ndarray, float] | None, seen: set[str], k: int) -> Recs:
    exclude = model.rows_of(sorted(seen))
    users = UserFactors.one(model.rank, online, batch)
    return model.recommend(users, k, exclude=[exclude[exclude >= 0]])[0]


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
    rc = retrain_config(cfg, retrain)
    k = rc.top_k if k is None else k
    filter_seen = rc.filter_seen if filter_seen is None else filter_seen
    tables = Tables.from_config(cfg)
    model = load_serving_model(spark, cfg)
    df = _export_input(spark, cfg, model, tables)
    recs = (df.mapInArrow(_top_k_of_partition(model, k, filter_seen),
                          "user string, rank int, item string, score double, source string")
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


def _export_input(spark: SparkSession, cfg: Config, model: BlendModel, tables: Tables) -> DataFrame:
    """One row per user to export (users with factors or events): id, each model's vector and bias
    (null where the model does not know the user) and the items the user has seen."""
    from delta.tables import DeltaTable

    users = FactorStore(spark, tables.factors).load(C.SIDE_USER, version=model.version).select(C.ID)
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
    return df.join(seen, C.ID, "left").select(C.ID, "o_vec", "o_bias", "b_vec", "b_bias", "seen")


_EXPORT_SCHEMA = pa.schema([("user", pa.string()), ("rank", pa.int32()), ("item", pa.string()),
                            ("score", pa.float64()), ("source", pa.string())])


def _top_k_of_partition(model: BlendModel, k: int, filter_seen: bool
                        ) -> Callable[[Iterator[pa.RecordBatch]], Iterator[pa.RecordBatch]]:
    """The executor-side function: each input user's top-``k`` rows (user, rank, item, score, source)."""

    def score_partition(batches: Iterator[pa.RecordBatch]) -> Iterator[pa.RecordBatch]:
        for rb in batches:
            rows: dict[str, list] = {n: [] for n in _EXPORT_SCHEMA.names}
            for rec in rb.to_pylist():
                s_seen = set(rec["seen"] or []) if filter_seen else set()
                o = _user_vec({C.VEC: rec["o_vec"], C.BIAS: rec["o_bias"]})
                b = _user_vec({C.VEC: rec["b_vec"], C.BIAS: rec["b_bias"]})
                out = _recommend_one(model, o, b, s_seen, k)
                for r, d in enumerate(model.as_items(out), start=1):
                    rows["user"].append(rec[C.ID])
                    rows["rank"].append(r)
                    rows["item"].append(d["item"])
                    rows["score"].append(d["score"])
                    rows["source"].append(out.source)
            yield pa.RecordBatch.from_pydict(rows, schema=_EXPORT_SCHEMA)

    return score_partition


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
