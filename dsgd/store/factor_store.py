"""The factor matrices in one Delta table: the model's source of truth.

One table of factor rows keyed by ``(side, id)``: user rows (``side = "u"``), item rows (``"i"``) and one
model metadata row (``side = "m"``, ``id = "model"``, JSON in ``meta``: rank, kind, global mean, last batch
id, learning-rate schedule state, snapshot lineage, ...).

Layout: every write **appends** new versions of the rows it changed, all stamped with the model commit's
sequence number ``model_seq``; the current model is the row with the highest ``model_seq`` per
``(side, id)`` (:meth:`FactorStore.current`; :meth:`FactorStore.load` and :meth:`FactorStore.meta` read
it). One write is one Delta commit (rows and metadata together), so a crash can never half-apply a batch,
and the metadata row says which batch the factors include: :meth:`FactorStore.write` skips a batch whose
id is not newer than the stored ``last_batch`` (the replay after a crash). An append costs a fraction of
a MERGE (``bench/bench_commit.py``, figures in bench/RESULTS.md); :meth:`FactorStore.compact`
rewrites the table to one row per key (the stream does it every ``stream.maintenance_every`` batches).

Compare-and-swap: ``model_seq`` is also the version of a Delta transaction (``txnAppId`` =
:data:`CAS_APP`) recorded in the commit. A writer that read the model at sequence ``s`` writes ``s + 1``;
Delta skips that write if another writer already committed ``s + 1``, or fails it if one commits
concurrently, and :meth:`FactorStore.commit` turns both into :class:`StaleModel`: the loser recomputes
from the new model instead of overwriting it. Rollback (:meth:`FactorStore.restore`) is such a write too:
it installs the rows of an earlier version (Delta time travel) as the next sequence.

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
import math
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.store.delta_log import (
    commit_file_has,
    conflict_name,
    delta_snapshot,
    is_write_conflict,
    latest_version,
    transaction_version,
)
from dsgd.store.delta_settings import delta_settings
from dsgd.store.errors import IncompatibleTable, StaleModel

log = logging.getLogger(__name__)
T = TypeVar("T")

TABLE_SCHEMA = (f"{C.SIDE} string, {C.ID} string, {C.KEY} long, {C.VEC} array<float>, {C.BIAS} float, "
                f"{C.COUNT} long, {C.LAST_BATCH} long, {C.UPDATED_AT} timestamp, meta string, {C.MODEL_SEQ} long")
META_ID = "model"
#: Delta transaction app id whose version is the model's commit sequence (the compare-and-swap token).
CAS_APP = "dsgd-model"


def timestamp_ms(text: str) -> int:
    """Epoch milliseconds of an ISO 8601 date or time: ``2024-06-02``, ``2024-06-02 00:00:00`` (UTC when
    no offset is given, like the engine's Spark sessions) or ``2024-06-02T02:00:00+02:00``; ``ValueError``
    with the accepted forms otherwise."""
    import datetime as dt

    try:
        when = dt.datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError(f"timestamp {text!r} is not a date or time: give ISO 8601, e.g. '2024-06-02 00:00:00' "
                         "(UTC) or '2024-06-02T02:00:00+02:00'") from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=dt.UTC)
    return int(when.timestamp() * 1000)


@dataclass(frozen=True)
class ModelHead:
    """The model as of Delta ``version``: its commit sequence and its metadata text.

    ``seq`` is the compare-and-swap token: the next write based on this head is ``seq + 1``.
    """

    version: int
    seq: int
    raw: str

    @property
    def meta(self) -> dict[str, Any]:
        return json.loads(self.raw)


_TABLE_COLS = [c.split()[0] for c in TABLE_SCHEMA.split(", ")]
_ROW_COLS = [c for c in _TABLE_COLS if c not in (C.SIDE, C.ID)]


def latest_rows(df: DataFrame) -> DataFrame:
    """One row per ``(side, id)``: the version with the highest ``model_seq`` (the current one).

    Rows written before the ``model_seq`` column existed (null) are older than any stamped row.
    """
    if C.MODEL_SEQ not in df.columns:  # a table from before the column: one row per key already
        df = df.withColumn(C.MODEL_SEQ, F.lit(None).cast("long"))
    seq = F.coalesce(F.col(C.MODEL_SEQ), F.lit(-1).cast("long"))
    rest = [c for c in _ROW_COLS if c in df.columns]
    return (df.groupBy(C.SIDE, C.ID).agg(F.max_by(F.struct(*rest), seq).alias("_r"))
            .select(C.SIDE, C.ID, *[F.col(f"_r.{c}").alias(c) for c in rest]))


class FactorStore:
    """Read and write the ``factors`` Delta table at ``path``."""

    def __init__(self, spark: SparkSession, path: str) -> None:
        self.spark = spark
        self.path = path
        self.last_written: ModelHead | None = None  # the head this store's last successful write created

    # ---- lifecycle ------------------------------------------------------------------------------
    def exists(self) -> bool:
        from delta.tables import DeltaTable

        return DeltaTable.isDeltaTable(self.spark, self.path)

    def create(self, *, rank: int, kind: str, meta: dict[str, Any] | None = None) -> None:
        """Create the table with its metadata row (last_batch = -1); no-op if it exists."""
        if self.exists():
            return
        m = {"rank": rank, "kind": kind, "mu": 0.0, "n_ratings": 0, "last_batch": -1, **(meta or {})}
        row = self._meta_df(m, -1, 0)
        try:
            with delta_settings(self.spark):
                (row.write.format("delta").partitionBy(C.SIDE).mode("errorifexists")
                 .option("delta.enableDeletionVectors", "true")
                 .option("txnAppId", CAS_APP).option("txnVersion", 0).save(self.path))
        except Exception as exc:  # another writer created it first
            if not self.exists():
                raise
            log.info("factors table created concurrently: %s", exc.__class__.__name__)

    def check_compatible(self, *, rank: int, kind: str) -> dict[str, Any]:
        """Refuse to start on a table written with another rank or model kind (names the keys)."""
        meta = self.meta()
        if int(meta["rank"]) != rank:
            raise IncompatibleTable(f"config key model.rank is {rank} but the factors table at {self.path} was written "
                              f"with rank {meta['rank']}; set model.rank = {meta['rank']} or use a new app.warehouse")
        if meta["kind"] != kind:
            raise IncompatibleTable(f"config key model.kind is {kind!r} but the factors table at {self.path} holds a "
                              f"{meta['kind']!r} model; set model.kind = {meta['kind']!r} or use a new app.warehouse")
        return meta

    # ---- reads ----------------------------------------------------------------------------------
    def table(self, version: int | None = None, timestamp: str | None = None) -> DataFrame:
        """The stored rows as they are: every version of every row since the last compaction."""
        reader = self.spark.read.format("delta")
        if version is not None:
            reader = reader.option("versionAsOf", version)
        if timestamp is not None:
            reader = reader.option("timestampAsOf", timestamp)
        return reader.load(self.path)

    def current(self, version: int | None = None, timestamp: str | None = None) -> DataFrame:
        """The model: one row per ``(side, id)``, the latest version (as of ``version``/``timestamp``).

        Example
        -------
        >>> store.current().where("side = 'u' AND id = '42'").select("vec", "bias").first()
        """
        return latest_rows(self.table(version, timestamp))

    def meta(self, version: int | None = None) -> dict[str, Any]:
        return json.loads(self.meta_raw(version))

    def load(self, side: str, ids: DataFrame | None = None, version: int | None = None) -> DataFrame:
        """Factor rows of one side (id, key, vec, bias, count); only those in ``ids`` (column id) if given."""
        df = self.table(version).where(F.col(C.SIDE) == side)
        if ids is not None:
            df = df.join(F.broadcast(ids.select(C.ID).distinct()), C.ID, "left_semi")
        return latest_rows(df).select(C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)

    def version(self) -> int:
        """The table's latest committed version (reads only the Delta log, a few ms)."""
        return latest_version(self.spark, self.path)

    def version_at(self, timestamp: str) -> int:
        """The latest version committed at or before ``timestamp`` (what ``TIMESTAMP AS OF`` reads);
        ``ValueError`` names the table's first commit time when there is none."""
        from delta.tables import DeltaTable

        ts = F.timestamp_millis(F.lit(timestamp_ms(timestamp)))
        hist = DeltaTable.forPath(self.spark, self.path).history().select("version", "timestamp")
        row = hist.where(F.col("timestamp") <= ts).agg(F.max("version").alias("v")).first()
        if row is None or row["v"] is None:
            first = hist.agg(F.min("timestamp")).first()[0]
            raise ValueError(f"timestamp {timestamp!r}: no version of the factors table was committed at or "
                             f"before it (its first commit was at {first})")
        return int(row["v"])

    def head(self) -> ModelHead:
        """The latest model: Delta version, commit sequence and metadata text, all as of one version.

        The sequence is the larger of the metadata row's ``model_seq`` and the Delta transaction version
        of :data:`CAS_APP` (a SQL ``RESTORE`` rolls the rows back but not the transaction version).
        """
        snap = delta_snapshot(self.spark, self.path)
        version = int(snap.version())
        txn = transaction_version(snap, CAS_APP)
        raw, seq = self._meta_row(version)
        return ModelHead(version=version, seq=max(seq, txn), raw=raw)

    # ---- writes ---------------------------------------------------------------------------------
    def _meta_df(self, meta: dict[str, Any], batch_id: int, seq: int) -> DataFrame:
        return self.spark.createDataFrame(
            [(C.SIDE_META, META_ID, 0, None, None, None, batch_id, None, json.dumps(meta, sort_keys=True), seq)],
            TABLE_SCHEMA).withColumn(C.UPDATED_AT, F.current_timestamp())

    def _meta_row(self, version: int | None = None, timestamp: str | None = None) -> tuple[str, int]:
        df = self.table(version, timestamp).where((F.col(C.SIDE) == C.SIDE_META) & (F.col(C.ID) == META_ID))
        seq = F.coalesce(F.col(C.MODEL_SEQ), F.lit(-1).cast("long")) if C.MODEL_SEQ in df.columns else F.lit(-1)
        rows = df.select("meta", seq.alias("s")).orderBy(F.col("s").desc()).limit(1).collect()
        if not rows:
            raise RuntimeError(f"factors table at {self.path} has no metadata row")
        return rows[0].meta, int(rows[0].s)

    def meta_raw(self, version: int | None = None, timestamp: str | None = None) -> str:
        """The metadata row's JSON text exactly as stored."""
        return self._meta_row(version, timestamp)[0]

    def commit(self, rows: DataFrame | None, *, meta: dict[str, Any], head: ModelHead, last_batch: int,
               label: str = "dsgd", overwrite: bool = False) -> ModelHead:
        """Write factor rows (``side`` + id, key, vec, bias, count) and the metadata row as model commit
        ``head.seq + 1``, in one Delta commit; returns the new head.

        Append (default): the rows become the current version of their keys. ``overwrite``: the rows
        replace the whole table (they must hold every key and the metadata row is added here).
        Raises :class:`StaleModel` when another writer committed since ``head`` (nothing is written);
        ``label`` is recorded in the commit's user metadata.
        """
        seq = head.seq + 1
        source = self._meta_df(meta, last_batch, seq)
        if rows is not None:
            source = source.unionByName(rows.select(
                C.SIDE, C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT,
                (F.col(C.LAST_BATCH) if C.LAST_BATCH in rows.columns else F.lit(last_batch)).cast("long")
                .alias(C.LAST_BATCH),
                (F.col(C.UPDATED_AT) if C.UPDATED_AT in rows.columns else F.current_timestamp()).alias(C.UPDATED_AT),
                F.lit(None).cast("string").alias("meta"), F.lit(seq).cast("long").alias(C.MODEL_SEQ)))
        token = f"{label}:{seq}:{uuid.uuid4().hex[:12]}"
        writer = (source.write.format("delta").mode("overwrite" if overwrite else "append")
                  .option("txnAppId", CAS_APP).option("txnVersion", seq).option("userMetadata", token)
                  .option("mergeSchema", "true"))
        try:
            writer.partitionBy(C.SIDE).save(self.path)
        except Exception as exc:
            if is_write_conflict(exc):
                raise StaleModel(f"write conflict: {conflict_name(exc)}") from exc
            raise
        version = self._find_commit(token, head.version)
        if version is None:  # Delta skipped it: another writer committed seq first
            raise StaleModel(f"model commit {seq} was made by another writer since version {head.version}")
        self.last_written = ModelHead(version=version, seq=seq, raw=json.dumps(meta, sort_keys=True))
        return self.last_written

    def _find_commit(self, token: str, after: int) -> int | None:
        """Version of the commit after ``after`` whose user metadata is ``token`` (None: not committed)."""
        from delta.tables import DeltaTable

        latest = self.version()
        if latest <= after:
            return None
        if commit_file_has(self.spark, self.path, after + 1, token):  # the usual case: one small file read, no history scan
            return after + 1
        hist = DeltaTable.forPath(self.spark, self.path).history(latest - after)
        found = [r.version for r in hist.select("version", "userMetadata").collect() if r.userMetadata == token]
        return int(found[0]) if found else None

    def write(self, users: DataFrame | None, items: DataFrame | None, *, meta: dict[str, Any], batch_id: int,
              app_id: str = "dsgd", force: bool = False, expected: ModelHead | None = None,
              retries: int = 5) -> bool:
        """Write changed factor rows and the metadata in one commit; False if the batch is already in.

        ``users``/``items`` hold (id, key, vec, bias, count) rows computed from the model ``expected``:
        if the table moved since (another writer committed), nothing is written and :class:`StaleModel`
        is raised, so the caller recomputes from the new model instead of overwriting it. Without
        ``expected`` (metadata-only writes) the current head is read and conflicts are retried. A batch
        whose id is not newer than the stored ``last_batch`` is skipped (idempotent replay) unless ``force``.
        """
        rows = None
        for side, df in ((C.SIDE_USER, users), (C.SIDE_ITEM, items)):
            if df is not None:
                part = df.select(F.lit(side).alias(C.SIDE), C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)
                rows = part if rows is None else rows.unionByName(part)

        def attempt(head: ModelHead, _: int) -> bool:
            current = head.meta
            if not force and int(current.get("last_batch", -1)) >= batch_id:
                log.info("batch %d already in the factors table (last_batch=%s): skipped", batch_id,
                         current.get("last_batch"))
                return False
            self.commit(rows, meta={**current, **meta, "last_batch": batch_id}, head=head, last_batch=batch_id,
                        label=f"{app_id}-factors:{batch_id}")
            return True

        return self.retry_stale(attempt, retries=retries, what="factors write", head=expected)

    def rewrite(self, *, version: int | None = None, timestamp: str | None = None, meta: dict[str, Any] | None = None,
                label: str = "dsgd-rewrite", retries: int = 5) -> ModelHead:
        """Replace the table with the current rows as of ``version``/``timestamp`` (default: now), one row
        per key, as the next model commit (compare-and-swap, retried when another writer wins)."""

        def attempt(head: ModelHead, _: int) -> ModelHead:
            at = version if version is not None or timestamp is not None else head.version
            raw = head.raw if at == head.version and timestamp is None else self.meta_raw(at, timestamp)
            new_meta = {**json.loads(raw), **(meta or {})}
            rows = self.current(at, timestamp).where(F.col(C.SIDE) != C.SIDE_META)
            return self.commit(rows, meta=new_meta, head=head, last_batch=int(new_meta.get("last_batch", -1)),
                               label=label, overwrite=True)

        return self.retry_stale(attempt, retries=retries, what=label)

    def retry_stale(self, attempt: Callable[[ModelHead, int], T], *, retries: int, what: str,
                    head: ModelHead | None = None) -> T:
        """``attempt(head, n)`` (n = 1, 2, ...) from the latest head, run again from a fresh head each time
        another writer won the race (:class:`StaleModel`), at most ``retries`` more times. With ``head``
        given it runs once: the caller computed its rows from that head and must recompute them."""
        for n in range(1, retries + 2):
            try:
                return attempt(head if head is not None else self.head(), n)
            except StaleModel as exc:
                if head is not None or n > retries:
                    raise
                log.warning("%s: %s; retry %d/%d", what, exc, n, retries)
                time.sleep(min(0.2 * n, 2.0))
        raise AssertionError("unreachable")

    # ---- maintenance ----------------------------------------------------------------------------
    def compact(self) -> None:
        """Rewrite the table to one row per key (drops superseded row versions), then bin-pack (OPTIMIZE)."""
        from delta.tables import DeltaTable

        self.rewrite(label="dsgd-compact")
        with delta_settings(self.spark):
            DeltaTable.forPath(self.spark, self.path).optimize().executeCompaction()

    def vacuum(self, retention_hours: float) -> None:
        """Delete files no longer referenced by versions newer than ``retention_hours`` (VACUUM).

        Delta's VACUUM honours whole hours only (a 20 s retention deleted files replaced 15 s before, as
        0 h would), so a fractional retention is rounded up: the window is never shorter than asked.
        """
        from delta.tables import DeltaTable

        # VACUUM lists the table's folders with spark.sql.sources.parallelPartitionDiscovery.parallelism
        # tasks (default 10,000 empty tasks per pass, bench/RESULTS.md "maintenance"); one task per core is plenty
        # for a factors table, which has three partition folders.
        settings = {"spark.sql.sources.parallelPartitionDiscovery.parallelism":
                    str(max(1, self.spark.sparkContext.defaultParallelism))}
        # the configured window is the contract; Delta's 7-day guard would refuse a shorter one
        if retention_hours < 168:
            settings["spark.databricks.delta.retentionDurationCheck.enabled"] = "false"
        with delta_settings(self.spark, settings):
            DeltaTable.forPath(self.spark, self.path).vacuum(float(math.ceil(retention_hours)))

    def restore(self, *, version: int | None = None, timestamp: str | None = None) -> ModelHead:
        """Roll the model back to an earlier Delta version or timestamp: its rows and metadata become the
        next model commit (safe while the stream runs: a batch computed from the replaced model is
        recomputed, see :meth:`commit`). Needs the old version's files (inside the VACUUM window)."""
        if version is None and timestamp is None:
            raise ValueError("restore needs version= or timestamp=")
        return self.rewrite(version=version, timestamp=timestamp,
                            label=f"dsgd-restore:{version if version is not None else timestamp}")
