"""The Delta tables of a deployment, under ``app.warehouse``, and idempotent appends to them."""

from __future__ import annotations

from dataclasses import dataclass

from pyspark.sql import Column, DataFrame, SparkSession

from dsgd.core import columns as C
from dsgd.core.config import Config


@dataclass(frozen=True)
class Tables:
    """Paths (or URIs) of the engine's tables."""

    root: str

    @classmethod
    def from_config(cls, cfg: Config) -> Tables:
        return cls(cfg.app.warehouse.rstrip("/"))

    @property
    def events(self) -> str:
        return f"{self.root}/events"

    @property
    def factors(self) -> str:
        return f"{self.root}/factors"

    @property
    def metrics(self) -> str:
        return f"{self.root}/metrics"

    @property
    def quarantine(self) -> str:
        return f"{self.root}/quarantine"

    @property
    def snapshots(self) -> str:
        return f"{self.root}/snapshots"

    @property
    def recommendations(self) -> str:
        return f"{self.root}/recommendations"


def append_once(df: DataFrame, path: str, *, app_id: str, version: int, partition_by: list[str] | None = None,
                txn: bool = True) -> None:
    """Append ``df`` to the Delta table at ``path`` at most once per (app_id, version).

    Delta records ``txnAppId``/``txnVersion`` in the commit and skips a later write with a version that
    is not newer: the replay of a micro-batch after a crash appends nothing twice. All three per-write
    settings are writer options, so a concurrent MERGE's session-wide ones (see ``dsgd.store.delta_settings``)
    never apply here. ``txn=False`` is for a caller that knows the rows are not there yet: a plain
    append (the commit still carries ``app_id:version`` as user metadata) skips Delta's lookup of the
    table's transaction ids, which costs a one-row append about as much as the append itself.
    """
    writer = df.write.format("delta").mode("append")
    if txn:
        writer = writer.option("txnAppId", app_id).option("txnVersion", version)
    writer = writer.option("userMetadata", f"{app_id}:{version}").option("mergeSchema", "false")
    if partition_by:
        writer = writer.partitionBy(*partition_by)
    writer.save(path)


EVENTS_PARTITION = [C.EVENT_DATE]


def row_exists(spark: SparkSession, path: str, cond: Column) -> bool:
    """Whether the Delta table at ``path`` exists and has a row matching ``cond``."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path) and bool(
        spark.read.format("delta").load(path).where(cond).limit(1).collect())
