"""``dsgd report``: one self-contained HTML page about a deployment, read from its warehouse.

What it reads (all under ``app.warehouse``, through Spark and Delta):

- ``metrics`` (one row per micro-batch): DCG and popularity DCG, events/s, seconds per phase, consumer
  and event-time lag, quarantine reasons, alerts;
- ``factors``' Delta history: every model version with its time and what wrote it (a stream batch, a
  retrain's swap, compaction, a rollback), from the commit's user metadata;
- ``snapshots`` (the retrain's metadata rows): every retrain with its cut-off, policy, trainer and
  training metrics.

:func:`build_report` turns that into HTML with the plots embedded as PNG ``data:`` URIs
(:mod:`dsgd.ops.report_page`): one file, no network, openable anywhere.

Example
-------
>>> info = write_report(spark, cfg, "report.html", days=7)
>>> info["plots"]
6
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pandas as pd
from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.config import Config
from dsgd.store.tables import Tables

#: ``metrics`` columns the page uses.
METRIC_COLUMNS = ("batch_id", "stream_id", "written_at", "rows_in", "rows_valid", "rows_quarantined",
                  "quarantine_reasons", "dcg", "dcg_popularity", "dcg_events", "loss", "rows_per_s", "lag_records",
                  "lag_ms", "seconds_parse", "seconds_eval", "seconds_train", "seconds_write", "seconds_total",
                  "records_lost", "rejected", "replayed", "alert")
#: user-metadata label prefix of a factors commit -> what wrote it (see dsgd.store.factor_store).
WRITERS = (("dsgd-swap", "retrain"), ("dsgd-compact", "compaction"), ("dsgd-restore", "rollback"))


@dataclass
class ReportData:
    """What the page shows, as pandas frames (empty frames when a table is missing)."""

    metrics: pd.DataFrame  # METRIC_COLUMNS, sorted by written_at
    versions: pd.DataFrame  # version, timestamp, writer
    retrains: pd.DataFrame  # created_at, snapshot_id, as_of, trainer, policy, train_rmse, n_events
    warehouse: str
    k: int = 100

    @property
    def quarantine_reasons(self) -> pd.Series:
        """Records quarantined per reason over the rows, largest first."""
        totals: dict[str, int] = {}
        for text in self.metrics.get("quarantine_reasons", pd.Series(dtype=object)):
            for reason, n in json.loads(text or "{}").items():
                totals[reason] = totals.get(reason, 0) + int(n)
        return pd.Series(totals, dtype="int64").sort_values(ascending=False)


def _is_delta(spark: SparkSession, path: str) -> bool:
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path)


def read_metrics(spark: SparkSession, path: str, since_ms: int | None = None) -> pd.DataFrame:
    """The ``metrics`` rows (written after ``since_ms``), sorted by time."""
    if not _is_delta(spark, path):
        return pd.DataFrame(columns=list(METRIC_COLUMNS))
    df = spark.read.format("delta").load(path)
    if since_ms is not None:
        df = df.where(F.col("written_at") >= F.timestamp_millis(F.lit(since_ms)))
    cols = [F.unix_millis(c).alias(c) if c == "written_at" else F.col(c) for c in METRIC_COLUMNS if c in df.columns]
    pdf = df.select(*cols).toPandas()
    pdf["written_at"] = pd.to_datetime(pdf["written_at"], unit="ms")  # UTC, whatever the session's time zone
    return pdf.sort_values(["written_at", "batch_id"]).reset_index(drop=True)


def writer_of(label: str | None) -> str:
    """What wrote a factors commit, from its user metadata: stream, retrain, compaction, rollback, other."""
    text = label or ""
    for prefix, writer in WRITERS:
        if text.startswith(prefix):
            return writer
    return "stream" if "-factors:" in text else "other"


def read_versions(spark: SparkSession, path: str, since_ms: int | None = None) -> pd.DataFrame:
    """The factors table's Delta history: version, timestamp, writer (VACUUM bookkeeping left out)."""
    from delta.tables import DeltaTable

    if not _is_delta(spark, path):
        return pd.DataFrame(columns=["version", "timestamp", "writer"])
    hist = DeltaTable.forPath(spark, path).history().where(~F.col("operation").startswith("VACUUM"))
    if since_ms is not None:
        hist = hist.where(F.col("timestamp") >= F.timestamp_millis(F.lit(since_ms)))
    pdf = hist.select("version", F.unix_millis("timestamp").alias("timestamp"), "userMetadata").toPandas()
    pdf["timestamp"] = pd.to_datetime(pdf["timestamp"], unit="ms")
    pdf["writer"] = [writer_of(x) for x in pdf["userMetadata"]]
    return pdf.drop(columns="userMetadata").sort_values("version").reset_index(drop=True)


def read_retrains(spark: SparkSession, path: str, since_ms: int | None = None) -> pd.DataFrame:
    """One row per retrain snapshot (its metadata row), sorted by creation time."""
    cols = ["created_at", "snapshot_id", "as_of", "trainer", "policy", "train_rmse", "n_events"]
    if not _is_delta(spark, path):
        return pd.DataFrame(columns=cols)
    rows = spark.read.format("delta").load(path).where(F.col(C.SIDE) == C.SIDE_META).select("meta").collect()
    out = []
    for r in rows:
        m = json.loads(r.meta)
        created = int(m.get("created_at_ms") or m.get("as_of") or 0)
        if since_ms is not None and created < since_ms:
            continue
        metrics = m.get("metrics", {})
        out.append((pd.Timestamp(created, unit="ms"), m.get("snapshot_id"), m.get("as_of"), m.get("trainer"),
                    m.get("policy"), metrics.get("train_rmse"), metrics.get("n_events")))
    return pd.DataFrame(out, columns=cols).sort_values("created_at").reset_index(drop=True)


def read_warehouse(spark: SparkSession, cfg: Config, *, days: float | None = None) -> ReportData:
    """Everything the page needs; ``days`` keeps only the last ``days`` days (None: everything)."""
    tables = Tables.from_config(cfg)
    since = int((time.time() - days * 86400) * 1000) if days else None
    return ReportData(metrics=read_metrics(spark, tables.metrics, since),
                      versions=read_versions(spark, tables.factors, since),
                      retrains=read_retrains(spark, tables.snapshots, since), warehouse=tables.root,
                      k=cfg.stream.eval_k)


def build_report(spark: SparkSession, cfg: Config, *, days: float | None = None, title: str = "") -> tuple[str, int]:
    """The page's HTML and the number of plots in it."""
    from dsgd.ops.report_page import render

    data = read_warehouse(spark, cfg, days=days)
    return render(data, title=title or f"dsgd report: {cfg.app.name}")


def write_report(spark: SparkSession, cfg: Config, path: str | Path, *, days: float | None = None) -> dict[str, Any]:
    """Write the page to ``path``; returns ``{"path", "plots", "bytes"}``."""
    page, plots = build_report(spark, cfg, days=days)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(page, encoding="utf-8")
    return {"path": str(out), "plots": plots, "bytes": out.stat().st_size}
