"""Delta internals the factor store relies on, in one place: the log snapshot, commit files, conflicts.

These reach into the JVM (``DeltaLog``) or the ``_delta_log`` folder because the public API has no
cheap equivalent: the latest version and the transaction ids of a table from the log alone (a few ms
instead of a Spark job), and whether one commit file carries a token. Each falls back to the public
API (or answers "unknown") when the internal one moved.
"""

from __future__ import annotations

import json
from typing import Any

from pyspark.sql import SparkSession


def delta_snapshot(spark: SparkSession, path: str) -> Any:
    """The table's latest snapshot (JVM ``Snapshot``), read from the log without a Spark job."""
    jvm = spark._jvm
    log_ = jvm.org.apache.spark.sql.delta.DeltaLog.forTable(spark._jsparkSession, path)
    return log_.update(False, jvm.scala.Option.empty(), jvm.scala.Option.empty())


def latest_version(spark: SparkSession, path: str) -> int:
    """Latest committed version of the Delta table at ``path`` (-1 if there is none)."""
    try:
        return int(delta_snapshot(spark, path).version())
    except Exception:  # noqa: BLE001 - internal API moved: use the public one
        from delta.tables import DeltaTable

        if not DeltaTable.isDeltaTable(spark, path):
            return -1
        return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def transaction_version(snapshot: Any, app_id: str) -> int:
    """The latest ``txnVersion`` recorded for ``app_id`` in ``snapshot`` (-1 if none)."""
    txns = snapshot.transactions()
    return int(txns.apply(app_id)) if txns.contains(app_id) else -1


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


def commit_file_has(spark: SparkSession, path: str, version: int, token: str) -> bool:
    """Whether the Delta commit file of ``version`` carries ``token`` (False if it cannot be read)."""
    try:
        jvm = spark._jvm
        file = jvm.org.apache.hadoop.fs.Path(f"{path.rstrip('/')}/_delta_log/{version:020d}.json")
        fs = file.getFileSystem(spark._jsc.hadoopConfiguration())
        stream = fs.open(file)
        try:
            text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
        finally:
            stream.close()
    except Exception:  # noqa: BLE001 - e.g. a managed commit store: fall back to DESCRIBE HISTORY
        return False
    return json.dumps(token) in text

