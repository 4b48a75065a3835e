"""The factor matrices in one Delta table: the model's source of truth.

One table keyed by ``(side, id)``: user rows (``side = "u"``), item rows (``"i"``) and one model
metadata row (``side = "m"``, ``id = "model"``, JSON in ``meta``: rank, kind, global mean, last batch id,
learning-rate schedule state, snapshot lineage, ...). A batch's changed rows and its metadata are
written by ONE ``MERGE``, so a crash can never half-apply a batch, and the metadata row says which
batch the factors include: :meth:`FactorStore.write` skips a batch whose id is not newer than the
stored ``last_batch`` (the replay after a crash). Rollback is Delta time travel + ``RESTORE``.

Example
-------
>>> store = FactorStore(spark, "/data/warehouse/factors")
>>> store.create(rank=10, kind="implicit")
>>> users = store.load("u", ids=batch.select(F.col("user").alias("id")))
>>> store.write(new_users, new_items, meta={"mu": 3.5}, batch_id=7)
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd import columns as C
from dsgd.config import ConfigError
from dsgd.delta_conf import delta_settings

log = logging.getLogger(__name__)

TABLE_SCHEMA = (f"{C.SIDE} string, {C.ID} string, {C.KEY} long, {C.VEC} array<float>, {C.BIAS} float, "
                f"{C.COUNT} long, {C.LAST_BATCH} long, {C.UPDATED_AT} timestamp, meta string")
META_ID = "model"


def latest_version(spark: SparkSession, path: str) -> int:
    """Latest committed version of the Delta table at ``path`` (-1 if there is none)."""
    jvm = spark._jvm
    try:
        log_ = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
        return int(log_.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty()).version())
    except Exception:  # noqa: BLE001 - internal API moved: use the public one
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark, path):
            return -1
        return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


STALE_MARK = "dsgd-stale-model"
_TABLE_COLS = [c.split()[0] for c in TABLE_SCHEMA.split(", ")]


class StaleModel(RuntimeError):
    """The factors table moved (another writer committed) since the rows to write were computed."""


_CONFLICTS = ("ConcurrentAppendException", "ConcurrentDeleteReadException", "ConcurrentDeleteDeleteException",
              "ConcurrentTransactionException", "ConcurrentWriteException", "MetadataChangedException",
              "ProtocolChangedException", "DELTA_CONCURRENT")


def conflict_name(exc: BaseException) -> str:
    text = str(exc)
    return next((c for c in _CONFLICTS if c in text), exc.__class__.__name__)


def is_write_conflict(exc: BaseException) -> bool:
    """True for Delta optimistic-concurrency conflicts (retry the transaction), False otherwise."""
    text = f"{exc.__class__.__name__} {exc}"
    return any(c in text for c in _CONFLICTS)


class FactorStore:
    """Read and write the ``factors`` Delta table at ``path``."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        self.spark = spark
        self.path = path
        self.last_written_meta: str | None = None  # metadata text of this store's last successful write

    # ---- lifecycle ------------------------------------------------------------------------------
    def exists(self) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path)

    def create(self, *, rank: int, kind: str, meta: dict[str, Any] | None = None) -> None:
        """Create the table with its metadata row (last_batch = -1); no-op if it exists."""
        if self.exists():
            return
        m = {"rank": rank, "kind": kind, "mu": 0.0, "n_ratings": 0, "last_batch": -1, **(meta or {})}
        row = self._meta_df(m, -1)
        try:
            with delta_settings(self.spark):
                (row.write.format("delta").partitionBy(C.SIDE).mode("errorifexists")
                 .option("delta.enableDeletionVectors", "true").save(self.path))
        except Exception as exc:  # another writer created it first
            if not self.exists():
                raise
            log.info("factors table created concurrently: %s", exc.__class__.__name__)

    def check_compatible(self, *, rank: int, kind: str) -> dict[str, Any]:
        """Refuse to start on a table written with another rank or model kind (names the keys)."""
        meta = self.meta()
        if int(meta["rank"]) != rank:
            raise ConfigError(f"config key model.rank is {rank} but the factors table at {self.path} was written "
                              f"with rank {meta['rank']}; set model.rank = {meta['rank']} or use a new app.warehouse")
        if meta["kind"] != kind:
            raise ConfigError(f"config key model.kind is {kind!r} but the factors table at {self.path} holds a "
                              f"{meta['kind']!r} model; set model.kind = {meta['kind']!r} or use a new app.warehouse")
        return meta

    # ---- reads ----------------------------------------------------------------------------------
    def table(self, version: int | None = None, timestamp: str | None = None) -> DataFrame:
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", timestamp)
        return reader.load(self.path)

    def meta(self, version: int | None = None) -> dict[str, Any]:
        return json.loads(self.meta_raw(version))

    def load(self, side: str, ids: DataFrame | None = None, version: int | None = None) -> DataFrame:
        """Factor rows of one side (id, key, vec, bias, count); only those in ``ids`` (column id) if given."""
        df = self.table(version).where(F.col(C.SIDE) == side).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)
        if ids is not None:
            df = df.join(F.broadcast(ids.select(C.ID).distinct()), C.ID, "left_semi")
        return df

    def version(self) -> int:
        """The table's latest committed version (reads only the Delta log, a few ms)."""
        return latest_version(self.spark, self.path)

    # ---- writes ---------------------------------------------------------------------------------
    def _meta_df(self, meta: dict[str, Any], batch_id: int) -> DataFrame:
        return self.spark.createDataFrame(
            [(C.SIDE_META, META_ID, 0, None, None, None, batch_id, None, json.dumps(meta, sort_keys=True))],
            TABLE_SCHEMA).withColumn(C.UPDATED_AT, F.current_timestamp())

    def meta_raw(self, version: int | None = None) -> str:
        """The metadata row's JSON text exactly as stored (the compare-and-swap token)."""
        rows = (self.table(version).where((F.col(C.SIDE) == C.SIDE_META) & (F.col(C.ID) == META_ID))
                .select("meta").collect())
        if not rows:
            raise RuntimeError(f"factors table at {self.path} has no metadata row")
        return rows[0].meta

    def merge(self, rows: DataFrame | None, *, meta: dict[str, Any], expected_meta: str, last_batch: int,
              txn: tuple[str, int] | None = None) -> None:
        """One MERGE of factor rows (``side`` + id, key, vec, bias, count) and the metadata row, applied
        only if the stored metadata still equals ``expected_meta`` (compare-and-swap).

        Raises :class:`StaleModel` when the metadata moved (nothing is committed); Delta's own
        concurrent-modification errors pass through (:func:`is_write_conflict`). ``txn`` = (app id,
        version) is recorded as the commit's transaction and user metadata.
        """
        from delta.tables import DeltaTable

        spark = self.spark
        source = self._meta_df(meta, last_batch).withColumn("_expected", F.lit(expected_meta))
        if rows is not None:
            source = source.unionByName(rows.select(
                C.SIDE, C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, F.lit(last_batch).cast("long").alias(C.LAST_BATCH),
                F.current_timestamp().alias(C.UPDATED_AT), F.lit(None).cast("string").alias("meta"),
                F.lit(None).cast("string").alias("_expected")))
        values = {c: f"s.{c}" for c in _TABLE_COLS}
        guarded = {**values, "meta": f"CASE WHEN t.meta = s._expected THEN s.meta "
                                     f"ELSE raise_error('{STALE_MARK}: the model metadata moved') END"}
        settings = {}
        if txn is not None:
            settings = {"spark.databricks.delta.write.txnAppId": txn[0],
                        "spark.databricks.delta.write.txnVersion": str(txn[1]),
                        "spark.databricks.delta.commitInfo.userMetadata": f"{txn[0]}:{txn[1]}"}
        try:
            with delta_settings(spark, settings):
                (DeltaTable.forPath(spark, self.path).alias("t")
                 .merge(source.alias("s"), "t.side = s.side AND t.id = s.id")
                 .whenMatchedUpdate(condition=f"s.side = '{C.SIDE_META}'", set=guarded)
                 .whenMatchedUpdate(set=values)
                 .whenNotMatchedInsert(values=values)
                 .execute())
        except Exception as exc:
            if STALE_MARK in str(exc):
                raise StaleModel(str(exc).splitlines()[0][:300]) from exc
            raise

    def write(self, users: DataFrame | None, items: DataFrame | None, *, meta: dict[str, Any], batch_id: int,
              app_id: str = "dsgd", force: bool = False, expected_meta: str | None = None,
              retries: int = 5) -> bool:
        """Upsert changed factor rows and the metadata in one commit; False if the batch is already in.

        ``users``/``items`` hold (id, key, vec, bias, count) rows computed from the model whose metadata
        text is ``expected_meta``: if the table moved since (another writer committed), nothing is
        written and :class:`StaleModel` is raised, so the caller recomputes from the new model instead
        of overwriting it. Without ``expected_meta`` (metadata-only writes) the current metadata is read
        and conflicts are retried. A batch whose id is not newer than the stored ``last_batch`` is
        skipped (idempotent replay) unless ``force``.
        """
        rows = None
        for side, df in ((C.SIDE_USER, users), (C.SIDE_ITEM, items)):
            if df is not None:
                part = df.select(F.lit(side).alias(C.SIDE), C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)
                rows = part if rows is None else rows.unionByName(part)
        for attempt in range(retries + 1):
            raw = expected_meta if expected_meta is not None else self.meta_raw()
            current = json.loads(raw)
            if not force and int(current.get("last_batch", -1)) >= batch_id:
                log.info("batch %d already in the factors table (last_batch=%s): skipped", batch_id,
                         current.get("last_batch"))
                return False
            merged = {**current, **meta, "last_batch": batch_id}
            try:
                self.merge(rows, meta=merged, expected_meta=raw, last_batch=batch_id,
                           txn=(f"{app_id}-factors", batch_id))
                self.last_written_meta = json.dumps(merged, sort_keys=True)
                return True
            except Exception as exc:
                stale = isinstance(exc, StaleModel) or is_write_conflict(exc)
                if not stale or expected_meta is not None or attempt == retries:
                    if stale and not isinstance(exc, StaleModel):
                        raise StaleModel(f"write conflict: {conflict_name(exc)}") from exc
                    raise
                log.warning("factors write conflict (%s), retry %d/%d", conflict_name(exc), attempt + 1, retries)
                time.sleep(0.2 * (attempt + 1))
        return False

    # ---- maintenance ----------------------------------------------------------------------------
    def compact(self) -> None:
        """Bin-pack small files (OPTIMIZE)."""
        from delta.tables import DeltaTable

        with delta_settings(self.spark):
            DeltaTable.forPath(self.spark, self.path).optimize().executeCompaction()

    def vacuum(self, retention_hours: float) -> None:
        """Delete files no longer referenced by versions newer than ``retention_hours`` (VACUUM)."""
        from delta.tables import DeltaTable

        # VACUUM lists the table's folders with spark.sql.sources.parallelPartitionDiscovery.parallelism
        # tasks (default 10,000: 30-40 s of empty tasks per pass on local[2]); one task per core is plenty
        # for a factors table, which has three partition folders.
        settings = {"spark.sql.sources.parallelPartitionDiscovery.parallelism":
                    str(max(1, self.spark.sparkContext.defaultParallelism))}
        # the configured window is the contract; Delta's 7-day guard would refuse a shorter one
        if retention_hours < 168:
            settings["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
        with delta_settings(self.spark, settings):
            DeltaTable.forPath(self.spark, self.path).vacuum(retention_hours)

    def restore(self, *, version: int | None = None, timestamp: str | None = None) -> None:
        """Roll the model back to an earlier Delta version or timestamp (a new commit)."""
        from delta.tables import DeltaTable

        if version is None and timestamp is None:
            raise ValueError("restore needs version= or timestamp=")
        with delta_settings(self.spark):
            table = DeltaTable.forPath(self.spark, self.path)
            if version is not None:
                table.restoreToVersion(version)
            else:
                table.restoreToTimestamp(timestamp)
