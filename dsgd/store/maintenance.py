"""Table maintenance whose cost follows what changed since the last pass, not the size of the model.

The factors table is an append log of row versions (:mod:`dsgd.store.factor_store`): every batch adds a
small file of changed rows, and older versions of those rows become garbage. A maintenance pass

1. bin-packs only the *small* files (``OPTIMIZE`` of files under ``small_file_bytes``: the batches'
   appends since the last pass; the big files of the last rewrite are left alone);
2. rewrites the table to one row per key only when the superseded versions outnumber
   ``garbage_ratio`` x the model's rows, so a full rewrite follows at least that many changed rows and
   its cost per changed row is bounded (amortised);
3. VACUUMs files older than the retention window.

The events table gets the same bin-packing, restricted to the event dates appended since the last
pass (a partition predicate: the dates of months ago are not touched again).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass

from pyspark.sql import SparkSession

from dsgd.core import columns as C
from dsgd.store.delta_settings import delta_settings
from dsgd.store.factor_store import FactorStore

log = logging.getLogger(__name__)

#: Operations a maintenance pass commits (a trainer's cached model survives them).
MAINTENANCE_OPERATIONS = ("OPTIMIZE", "VACUUM START", "VACUUM END")
COMPACTION_LABEL = "dsgd-compact"


@dataclass
class MaintenanceResult:
    """What a pass did to the factors table."""

    version_before: int
    version_after: int
    table_rows: int  # row versions before the pass
    model_rows: int
    rewrote: bool
    seconds: float


def table_rows(spark: SparkSession, path: str) -> int:
    """Row versions in a Delta table (answered from the file statistics in the log, no data scan)."""
    return int(spark.read.format("delta").load(path).count())


def optimize_small_files(spark: SparkSession, path: str, small_file_bytes: int, where: str | None = None) -> None:
    """Bin-pack the files smaller than ``small_file_bytes`` (optionally in the partitions ``where``)."""
    from delta.tables import DeltaTable

    with delta_settings(spark, {"spark.databricks.delta.optimize.minFileSize": str(int(small_file_bytes))}):
        opt = DeltaTable.forPath(spark, path).optimize()
        (opt.where(where) if where else opt).executeCompaction()


def maintain_factors(store: FactorStore, *, model_rows: int, garbage_ratio: float, small_file_bytes: int,
                     retention_hours: float) -> MaintenanceResult:
    """One maintenance pass over the factors table (see the module docstring)."""
    t = time.perf_counter()
    before = store.version()
    rows = table_rows(store.spark, store.path)
    garbage = rows - model_rows - 1  # the metadata row's older versions count as garbage too
    rewrote = garbage > garbage_ratio * max(model_rows, 1)
    if rewrote:
        store.rewrite(label=COMPACTION_LABEL)
    optimize_small_files(store.spark, store.path, small_file_bytes)
    store.vacuum(retention_hours)
    return MaintenanceResult(before, store.version(), rows, model_rows, rewrote, time.perf_counter() - t)


def only_maintenance_since(spark: SparkSession, path: str, version: int) -> bool:
    """Whether every commit after ``version`` is a maintenance operation of this module (the model's
    content did not change: a cached copy of it stays valid)."""
    from delta.tables import DeltaTable

    from dsgd.store.delta_log import latest_version

    n = latest_version(spark, path) - version
    if n <= 0:
        return True
    for r in DeltaTable.forPath(spark, path).history(n).select("operation", "userMetadata").collect():
        ours = r.operation in MAINTENANCE_OPERATIONS or (r.userMetadata or "").startswith(COMPACTION_LABEL + ":")
        if not ours:
            return False
    return True


def compact_events(spark: SparkSession, path: str, since_date: str, small_file_bytes: int) -> None:
    """Bin-pack the small files of the events partitions from ``since_date`` (``YYYY-MM-DD``) on."""
    from delta.tables import DeltaTable

    if DeltaTable.isDeltaTable(spark, path):
        optimize_small_files(spark, path, small_file_bytes, where=f"{C.EVENT_DATE} >= '{since_date}'")
