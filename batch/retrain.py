"""The periodic batch retrain: Spark MLlib ALS over the event history up to a cut-off, a versioned
snapshot, and its blend into the live ``factors`` table (:mod:`batch.blend`).

Steps of :func:`run_retrain` (``dsgd retrain --as-of T`` / ``batch/retrain_main.py``):

1. read the ``events`` Delta table (pinned to its current version) up to the cut-off ``ts <= as_of``;
   no events: nothing to do (exit code 3);
2. idempotence: if the ``snapshots`` table holds the snapshot of this ``as_of`` and the model metadata
   says it was blended with this policy, nothing changes (exit code 0, status ``already_done``); a
   snapshot written by a run that crashed before its swap is reused, not retrained;
3. train: ``replace`` / ``score-blend`` fit ALS (:func:`dsgd.engines.als.train_als`, shared with the evaluation
   harness: explicit or implicit per ``model.kind``, rank ``model.rank``, seed ``model.seed``; string
   ids mapped to a dense int index and back, never truncated; ``retrain.window_days`` /
   ``retrain.half_life_days`` weigh recent events; the ALS checkpoint directory is
   ``<app.checkpoint_root>/als``); ``warm-start`` runs DSGD epochs over the history from the online
   factors;
4. write the snapshot: one Delta commit to ``snapshots`` with one row per (as_of, side, id) and a
   metadata row (``side = "m"``: as-of, trainer, parameters, training metrics such as the explicit
   train RMSE, the global mean, the events and factors versions it was built from);
5. blend it in with the configured policy: one compare-and-swap commit of ``factors`` (an append of
   row versions), safe next to the running stream (:func:`batch.blend.swap`); the metadata row then records ``snapshot_id``,
   ``snapshot_as_of``, ``snapshot_version``, ``blend_policy`` and ``blend_alpha``.

Exit codes (:data:`EXIT_CODES`): 0 ok (retrained and blended, or already done for this as-of),
1 failure, 2 bad config or usage, 3 nothing to do (no events up to the as-of).

Example
-------
>>> result = run_retrain(spark, cfg, as_of_ms=parse_as_of("2024-06-02T00:00:00Z"))
>>> result.status, result.metrics["train_rmse"]
('blended', 0.81)
"""

from __future__ import annotations

import json
import logging
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from batch.blend import FACTOR_COLS, replace_model, swap, warm_start_model
from batch.retrain_config import RetrainConfig, retrain_config
from dsgd.core import columns as C
from dsgd.core.config import Config, ConfigError
from dsgd.engines.als import MAX_DENSE_IDS, AlsResult, als_ratings, dense_index, train_als
from dsgd.store.delta_settings import delta_settings
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables

log = logging.getLogger("dsgd.batch")

EXIT_OK, EXIT_FAILURE, EXIT_BAD_CONFIG, EXIT_NOTHING_TO_DO = 0, 1, 2, 3
EXIT_CODES = {EXIT_OK: "ok: retrained and blended, or already done for this as-of",
              EXIT_FAILURE: "failure (see the log)",
              EXIT_BAD_CONFIG: "bad config or usage",
              EXIT_NOTHING_TO_DO: "nothing to do: no events up to the as-of"}

SNAPSHOT_SCHEMA = (f"snapshot_id string, as_of long, {C.SIDE} string, {C.ID} string, {C.KEY} long, "
                   f"{C.VEC} array<float>, {C.BIAS} float, {C.COUNT} long, meta string, created_at timestamp")
SNAPSHOT_META_ID = "snapshot"
__all__ = ["MAX_DENSE_IDS", "AlsResult", "als_ratings", "dense_index", "parse_as_of", "run_retrain", "train_als"]


def parse_as_of(value: str | int | None) -> int:
    """Cut-off as epoch ms: ``None``/``"now"``, epoch milliseconds, or an ISO-8601 time (UTC if naive).

    Example
    -------
    >>> parse_as_of("2024-01-01T00:00:00Z")
    1704067200000
    >>> parse_as_of("1704067200000")
    1704067200000
    """
    import pandas as pd

    if value is None or (isinstance(value, str) and value.strip().lower() == "now"):
        return int(time.time() * 1000)
    if isinstance(value, int):
        return value
    text = value.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        ts = pd.Timestamp(text)
    except ValueError as exc:
        raise ConfigError(f"--as-of {value!r} is neither epoch milliseconds nor an ISO-8601 time") from exc
    if ts.tzinfo is None:
        ts = ts.tz_localize("UTC")
    return int(ts.value // 1_000_000)


def snapshot_id_of(as_of_ms: int) -> str:
    """The id of the snapshot with cut-off ``as_of_ms``: ``asof-<epoch ms>``."""
    return f"asof-{as_of_ms}"


@dataclass
class RetrainResult:
    """What a retrain did; printed as JSON by the CLI."""

    status: str  # blended | already_done | no_events
    as_of: int
    policy: str
    snapshot_id: str = ""
    snapshot_version: int | None = None
    factors_version: int | None = None
    metrics: dict[str, Any] = field(default_factory=dict)
    seconds: dict[str, float] = field(default_factory=dict)
    changes: dict[str, Any] = field(default_factory=dict)  # batch.changes.model_changes of the swap

    @property
    def exit_code(self) -> int:
        return EXIT_NOTHING_TO_DO if self.status == "no_events" else EXIT_OK

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True, default=str)


# ---- ALS (dsgd.engines.als: shared with the evaluation harness) -------------------------------------------------
# ---- snapshots ----------------------------------------------------------------------------------------
def snapshot_meta(spark: SparkSession, path: str, as_of_ms: int | None = None) -> dict[str, Any] | None:
    """The metadata of the snapshot with this cut-off (the latest one if None); None if absent."""
    from delta.tables import DeltaTable

    if not DeltaTable.isDeltaTable(spark, path):
        return None
    df = spark.read.format("delta").load(path).where(F.col(C.SIDE) == C.SIDE_META)
    if as_of_ms is not None:
        df = df.where(F.col("as_of") == as_of_ms)
    row = df.orderBy(F.col("as_of").desc()).select("meta").first()
    return json.loads(row.meta) if row else None


def load_snapshot(spark: SparkSession, path: str, as_of_ms: int, side: str) -> DataFrame:
    """Factor rows (FACTOR_SCHEMA) of one side of the snapshot with cut-off ``as_of_ms``."""
    return (spark.read.format("delta").load(path)
            .where((F.col("as_of") == as_of_ms) & (F.col(C.SIDE) == side)).select(*FACTOR_COLS))


def write_snapshot(spark: SparkSession, path: str, as_of_ms: int, users: DataFrame, items: DataFrame,
                   meta: dict[str, Any]) -> int:
    """Write the snapshot of ``as_of_ms`` (rows + metadata row) in one commit; returns its Delta version.

    Replaces an earlier snapshot of the same as-of (``replaceWhere``), so a retry never duplicates rows.
    """
    from delta.tables import DeltaTable

    sid = snapshot_id_of(as_of_ms)
    now = F.current_timestamp()
    meta_row = spark.createDataFrame(
        [(sid, as_of_ms, C.SIDE_META, SNAPSHOT_META_ID, 0, None, None, None, json.dumps(meta, sort_keys=True), None)],
        SNAPSHOT_SCHEMA).withColumn("created_at", now)
    df = meta_row
    for side, part in ((C.SIDE_USER, users), (C.SIDE_ITEM, items)):
        df = df.unionByName(part.select(F.lit(sid).alias("snapshot_id"), F.lit(as_of_ms).cast("long").alias("as_of"),
                                        F.lit(side).alias(C.SIDE), *FACTOR_COLS,
                                        F.lit(None).cast("string").alias("meta"), now.alias("created_at")))
    parts = max(1, int(spark.conf.get("spark.sql.shuffle.partitions", "4")))
    writer = df.coalesce(parts).write.format("delta")
    with delta_settings(spark):
        if DeltaTable.isDeltaTable(spark, path):
            writer.mode("overwrite").option("replaceWhere", f"as_of = {int(as_of_ms)}").save(path)
        else:
            writer.mode("append").save(path)
    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


def _table_version(spark: SparkSession, path: str) -> int:
    from delta.tables import DeltaTable

    return int(DeltaTable.forPath(spark, path).history(1).select("version").first()[0])


# ---- the job ------------------------------------------------------------------------------------------
def run_retrain(spark: SparkSession, cfg: Config, *, as_of_ms: int, retrain: RetrainConfig | None = None
                ) -> RetrainResult:
    """Retrain up to ``as_of_ms``, write the snapshot and blend it into ``factors`` (see module doc).

    Example
    -------
    >>> run_retrain(spark, cfg, as_of_ms=1_717_286_400_000, retrain=RetrainConfig(policy="replace")).status
    'blended'
    """
    from delta.tables import DeltaTable

    rc = retrain_config(cfg, retrain)
    m = cfg.model
    tables = Tables.from_config(cfg)
    res = RetrainResult(status="no_events", as_of=as_of_ms, policy=rc.policy, snapshot_id=snapshot_id_of(as_of_ms))
    t0 = time.perf_counter()
    if not DeltaTable.isDeltaTable(spark, tables.events):
        log.warning("retrain: no events table at %s", tables.events)
        return res
    store = FactorStore(spark, tables.factors)
    store.create(rank=m.rank, kind=m.kind, meta={"lr_schedule": m.lr_schedule})
    live_meta = store.check_compatible(rank=m.rank, kind=m.kind)
    existing = snapshot_meta(spark, tables.snapshots, as_of_ms)
    trainer = "dsgd-warm-start" if rc.policy == "warm-start" else "als"
    if (existing is not None and live_meta.get("snapshot_as_of") == as_of_ms
            and live_meta.get("blend_policy") == rc.policy):
        log.info("retrain: snapshot %s already blended with policy %s: nothing to do", res.snapshot_id, rc.policy)
        res.status, res.snapshot_version = "already_done", live_meta.get("snapshot_version")
        res.factors_version, res.metrics = store.version(), existing.get("metrics", {})
        return res

    events_version = _table_version(spark, tables.events)
    events = spark.read.format("delta").option("versionAsOf", events_version).load(tables.events)
    history = events.where(F.col(C.TS) <= as_of_ms).select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ).localCheckpoint()
    if history.isEmpty():
        log.warning("retrain: no events up to as-of %d in %s", as_of_ms, tables.events)
        return res

    base_version = store.version()
    if existing is not None and existing.get("trainer") == trainer:  # a run that crashed before its swap
        log.info("retrain: reusing snapshot %s written by an earlier run", res.snapshot_id)
        base_version = int(existing.get("base_factors_version", base_version)) if trainer != "als" else base_version
        snap_meta = existing
        snap_version = int(existing.get("snapshot_version", _table_version(spark, tables.snapshots)))
    else:
        snap_meta, snap_version = _train_snapshot(spark, cfg, rc, store, history, trainer=trainer, res=res,
                                                  live_meta=live_meta, base_version=base_version,
                                                  events_version=events_version)
    res.metrics, res.snapshot_version = dict(snap_meta.get("metrics", {})), snap_version
    res.seconds["train"] = round(time.perf_counter() - t0, 3)

    t = time.perf_counter()
    out = _blend(spark, cfg, rc, store, res, snap_meta, snap_version=snap_version, base_version=base_version)
    res.status, res.factors_version = "blended", out.version
    res.metrics.update({"swap_attempts": out.attempts, "rows_written": out.rows_written,
                        "rows_rebased": out.rows_rebased})
    res.seconds["blend"] = round(time.perf_counter() - t, 3)
    res.seconds["total"] = round(time.perf_counter() - t0, 3)
    log.info("retrain %s: %s", res.snapshot_id, res.to_json())
    return res


def _train_snapshot(spark: SparkSession, cfg: Config, rc: RetrainConfig, store: FactorStore, history: DataFrame, *,
                    trainer: str, res: RetrainResult, live_meta: dict[str, Any], base_version: int,
                    events_version: int) -> tuple[dict[str, Any], int]:
    """Fit the batch model (ALS, or warm-start DSGD epochs from the live model) on ``history`` and write
    it as the as-of's snapshot; returns the snapshot's metadata and the ``snapshots`` version."""
    m, tables, as_of_ms = cfg.model, Tables.from_config(cfg), res.as_of
    t = time.perf_counter()
    if trainer == "als":
        als = train_als(spark, cfg, rc, history, as_of_ms=as_of_ms)
        users, items, mu, n_ratings = als.users, als.items, als.mu, als.n_ratings
        params, metrics = als.params, als.metrics
    else:
        mu, n_ratings = float(live_meta.get("mu", 0.0)), int(live_meta.get("n_ratings", 0))
        users, items, stats = warm_start_model(
            spark, cfg, store.load(C.SIDE_USER, version=base_version), store.load(C.SIDE_ITEM, version=base_version),
            history, epochs=rc.warm_start_epochs, lr=rc.warm_start_lr, mu=mu, as_of_ms=as_of_ms)
        params = {"rank": m.rank, "epochs": rc.warm_start_epochs, "lr": rc.warm_start_lr, "reg": m.reg,
                  "negatives": m.negatives, "seed": m.seed, "engine": m.engine}
        metrics = {"n_events": history.count(), "epoch_loss": [s["loss"] for s in stats]}
        if m.kind == "explicit" and stats:
            metrics["train_rmse"] = float(stats[-1]["loss"]) ** 0.5
    metrics["seconds_train"] = round(time.perf_counter() - t, 3)
    snap_meta = {"snapshot_id": res.snapshot_id, "as_of": as_of_ms, "trainer": trainer, "policy": rc.policy,
                 "params": params, "metrics": metrics, "mu": mu, "n_ratings": n_ratings, "kind": m.kind,
                 "events_version": events_version, "base_factors_version": base_version,
                 "created_at_ms": int(time.time() * 1000)}
    snap_version = write_snapshot(spark, tables.snapshots, as_of_ms, users, items, snap_meta)
    log.info("retrain: snapshot %s written (snapshots version %d): %s", res.snapshot_id, snap_version,
             json.dumps(metrics))
    return snap_meta, snap_version


def _blend(spark: SparkSession, cfg: Config, rc: RetrainConfig, store: FactorStore, res: RetrainResult,
           snap_meta: dict[str, Any], *, snap_version: int, base_version: int) -> Any:
    """Install the snapshot in ``factors`` by the blend policy (one compare-and-swap commit); returns the
    swap's outcome."""
    tables, as_of_ms = Tables.from_config(cfg), res.as_of
    blend_meta = {"snapshot_id": res.snapshot_id, "snapshot_as_of": as_of_ms, "snapshot_version": snap_version,
                  "blend_policy": rc.policy, "blend_alpha": rc.alpha if rc.policy == "score-blend" else None,
                  "blended_at_ms": int(time.time() * 1000)}
    su = load_snapshot(spark, tables.snapshots, as_of_ms, C.SIDE_USER)
    si = load_snapshot(spark, tables.snapshots, as_of_ms, C.SIDE_ITEM)
    if rc.policy == "replace":
        after = (spark.read.format("delta").load(tables.events).where(F.col(C.TS) > as_of_ms))
        users, items, rmeta = replace_model(spark, cfg, su, si, after, mu=float(snap_meta.get("mu", 0.0)),
                                            n_ratings=int(snap_meta.get("n_ratings", 0)), as_of_ms=as_of_ms)
        blend_meta["replayed_events"] = rmeta["replayed_events"]
        res.metrics["replayed_events"] = rmeta["replayed_events"]
        return swap(spark, store, users, items, base_version=base_version, meta=blend_meta, model_mu=rmeta["mu"],
                    model_n=rmeta["n_ratings"], retries=rc.swap_retries)
    if rc.policy == "warm-start":
        return swap(spark, store, su, si, base_version=base_version, meta=blend_meta, retries=rc.swap_retries)
    return swap(spark, store, None, None, base_version=base_version, meta=blend_meta, retries=rc.swap_retries)


def _changes(spark: SparkSession, cfg: Config, version: int, k: int) -> dict[str, Any]:
    """What the swap commit changed (a report: its failure is logged, the retrain stands)."""
    from batch.changes import model_changes

    try:
        return model_changes(spark, cfg, before=version - 1, after=version, k=k)
    except Exception as exc:  # noqa: BLE001 - the retrain is done; only its report is missing
        log.warning("retrain: could not report what changed: %s", exc)
        return {}


def main(spark: SparkSession | None, cfg: Config, *, as_of: str | int | None = None,
         retrain: RetrainConfig | None = None) -> int:
    """Job entry (CLI and spark-submit): run the retrain, print its JSON result, return the exit code."""
    from batch.tracking import retrain_run
    from dsgd.store.session import build_session

    try:
        as_of_ms = parse_as_of(as_of)
        with retrain_run(cfg) as run:  # an MLflow run when retrain.mlflow_tracking_uri is set
            spark = spark or build_session(cfg)
            res = run_retrain(spark, cfg, as_of_ms=as_of_ms, retrain=retrain)
            run.record(spark, retrain_config(cfg, retrain), res)
        if res.status == "blended" and res.factors_version:
            res.changes = _changes(spark, cfg, res.factors_version, retrain_config(cfg, retrain).top_k)
    except ConfigError as exc:
        log.error("retrain: bad config: %s", exc)
        return EXIT_BAD_CONFIG
    except Exception:
        log.exception("retrain failed")
        return EXIT_FAILURE
    print(res.to_json())
    return res.exit_code
