"""The streaming trainer: Kafka -> foreachBatch (test, then train with DSGD) -> Delta, exactly once.

Per micro-batch (``process_batch``):

1. parse + validate the records; append valid events to ``events`` (partitioned by event date) and
   rejected records to ``quarantine``, both idempotent on (stream id, batch id);
2. evaluate the batch prequentially against the model as it was before the batch (``metrics``);
3. load the touched factor rows (all item rows for implicit models: negatives are drawn from them),
   initialise new ids deterministically, run the stratified DSGD step for ``model.epochs`` epochs;
4. write the changed rows and the model metadata in ONE Delta commit (an append of new row versions,
   compare-and-swap on the model sequence, see ``dsgd.store.factor_store``), skipped if the factors already
   include this batch (replay after a crash); a divergent batch (non-finite or huge factors) is
   rejected: only the metadata moves, the model stays as it was, and an alert is recorded;
5. append one ``metrics`` row; every ``stream.maintenance_every`` batches compact the factor table.

Nothing is carried from batch to batch as a DataFrame (state is re-read from Delta), so the plan never
grows; the Spark engine cuts lineage with ``localCheckpoint`` (per stratum with the shuffle exchange, once
per batch with the barrier exchange).

Exactly-once: Spark replays a failed batch with the same offsets and batch id; every write above is
idempotent on the stream's id (persisted in the checkpoint) and the batch id, so a crash anywhere
followed by a restart gives the factors of an uninterrupted run.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import signal
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.config import Config
from dsgd.store.factor_store import FactorStore, ModelHead
from dsgd.store.errors import StaleModel
from dsgd.core.hashing import id_key, mix_seed
from dsgd.core.factors import SideFactors, vector_matrix
from dsgd.engines.local import train_epochs
from dsgd.core.params import KernelParams, params_from_model_config
from dsgd.core.schedules import make_schedule, schedule_from_state
from dsgd.engines.spark import ensure_ids, factors_to_spark, side_to_spark, train_epochs_spark
from streaming.evaluate import evaluate_batch, sample_events
from streaming.events import QUARANTINE_COLUMNS, parse_events, quarantined, valid_events
from dsgd.store.tables import EVENTS_PARTITION, Tables, append_once

log = logging.getLogger("dsgd.stream")

#: Kafka source defaults, overridable through ``kafka.options``. With the consumer's own default of 500
#: records per poll, reading 250k records took 1.03 s on two cores instead of 0.81 s (bench/bench_parse.py).
SOURCE_DEFAULTS = {"kafka.max.poll.records": "20000"}

#: Seconds the consumer-lag probe rests after it failed.
LAG_RETRY_S = 300.0

FAULT_POINTS = ("after_events", "after_eval", "after_factors", "after_metrics")


class InjectedFault(RuntimeError):
    """Raised by the fault hook at a named point of a batch (tests of exactly-once)."""


def env_fault_hook() -> Any:
    """``DSGD_FAULT="point:batch_id[,point:batch_id]"`` raises :class:`InjectedFault` there, once per
    process; ``DSGD_FAULT_MODE=kill`` SIGKILLs the process instead (crash tests)."""
    spec = os.environ.get("DSGD_FAULT", "")
    targets = {(p.split(":")[0], int(p.split(":")[1])) for p in spec.split(",") if ":" in p}
    fired: set = set()

    def hook(point: str, batch_id: int) -> None:
        if (point, batch_id) in targets and (point, batch_id) not in fired:
            fired.add((point, batch_id))
            if os.environ.get("DSGD_FAULT_MODE") == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            raise InjectedFault(f"injected fault at {point} of batch {batch_id}")

    return hook if targets else None


class _StepSchedule:
    """A schedule whose epoch e of this batch is global step ``offset + e`` (decay across batches)."""

    def __init__(self, base: Any, offset: int) -> None:
        self.base, self.offset = base, offset

    def rate(self, step: int) -> float:
        return self.base.rate(self.offset + step)

    def observe(self, loss: float) -> None:
        self.base.observe(loss)


@dataclass
class ModelState:
    """The model as of factors-table ``version``: metadata, and (local engine) all factor rows."""

    version: int
    seq: int  # the model commit sequence: the compare-and-swap token of the next write
    meta: dict
    raw: str  # the metadata text as stored
    users: SideFactors | None = None
    items: SideFactors | None = None

    @property
    def head(self) -> ModelHead:
        return ModelHead(version=self.version, seq=self.seq, raw=self.raw)


@dataclass
class BatchResult:
    """What one micro-batch did; also the row appended to the ``metrics`` table."""

    batch_id: int
    stream_id: str
    rows_in: int = 0
    rows_valid: int = 0
    rows_quarantined: int = 0
    quarantine_reasons: str = "{}"
    dcg: float = float("nan")
    dcg_popularity: float = float("nan")
    dcg_events: int = 0
    loss: float = float("nan")
    lr: float = float("nan")
    users_touched: int = 0
    items_touched: int = 0
    new_users: int = 0
    new_items: int = 0
    rows_per_s: float = 0.0
    lag_records: int = -1
    lag_ms: int = -1
    offsets: str = "{}"
    seconds_parse: float = 0.0
    seconds_eval: float = 0.0
    seconds_train: float = 0.0
    seconds_write: float = 0.0
    seconds_total: float = 0.0
    records_lost: int = 0
    rejected: bool = False
    replayed: bool = False
    alert: str = ""
    extra: dict = field(default_factory=dict)

    def row(self) -> dict[str, Any]:
        d = {k: v for k, v in self.__dict__.items() if k != "extra"}
        return d


METRICS_SCHEMA = (
    "batch_id long, stream_id string, rows_in long, rows_valid long, rows_quarantined long, "
    "quarantine_reasons string, dcg double, dcg_popularity double, dcg_events long, loss double, lr double, "
    "users_touched long, items_touched long, new_users long, new_items long, rows_per_s double, "
    "lag_records long, lag_ms long, offsets string, seconds_parse double, seconds_eval double, "
    "seconds_train double, seconds_write double, seconds_total double, records_lost long, rejected boolean, "
    "replayed boolean, alert string")


class StreamTrainer:
    """Runs the streaming query and owns the per-batch function.

    Attributes
    ----------
    STALE_RETRIES : int
        How often a batch is recomputed when another writer changed the model while it trained.

    Example
    -------
    >>> trainer = StreamTrainer(spark, cfg)
    >>> query = trainer.start()          # or trainer.run() to block until done / SIGTERM
    """

    STALE_RETRIES = 5

    def __init__(self, spark: SparkSession, cfg: Config, *, fault_hook: Any = None) -> None:
        self.spark = spark
        self.cfg = cfg
        self.tables = Tables.from_config(cfg)
        self.store = FactorStore(spark, self.tables.factors)
        self.fault_hook = fault_hook if fault_hook is not None else env_fault_hook()
        self.stream_id: str | None = None
        self._started = threading.Event()
        self.results: list[BatchResult] = []
        self._lag_consumer: Any = None
        self._lag_retry_at = 0.0  # monotonic time before which the lag probe is not tried again
        self._check_replay = True  # the next batch may be a replay: look its events and metrics rows up first
        self._cache: ModelState | None = None
        self._appends: tuple[threading.Thread, dict] | None = None
        m = cfg.model
        self.explicit = m.kind == "explicit"
        self.store.create(rank=m.rank, kind=m.kind, meta={"lr_schedule": m.lr_schedule})
        self.store.check_compatible(rank=m.rank, kind=m.kind)

    # ---- the query ------------------------------------------------------------------------------
    def source(self) -> DataFrame:
        return self.spark.readStream.format("kafka").options(**source_options(self.cfg)).load()

    @property
    def checkpoint(self) -> str:
        return f"{self.cfg.app.checkpoint_root.rstrip('/')}/stream"

    def start(self):
        s = self.cfg.stream
        writer = (self.source().writeStream.queryName(f"{self.cfg.app.name}-trainer")
                  .option("checkpointLocation", self.checkpoint).foreachBatch(self.process_batch))
        if s.trigger == "available_now":
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=s.trigger_interval)
        self._check_replay = True
        query = writer.start()
        self.stream_id = str(query.id)
        self._started.set()
        log.info("stream %s started: topic=%s trigger=%s checkpoint=%s", self.stream_id, self.cfg.kafka.topic,
                 s.trigger, self.checkpoint)
        return query

    def run(self, timeout_s: float | None = None) -> int:
        """Start and block until the query ends (availableNow) or SIGINT/SIGTERM; 0 ok, 1 failed."""
        query = self.start()
        stop = threading.Event()
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda *_: stop.set())
        deadline = time.monotonic() + timeout_s if timeout_s else None
        from pyspark.errors import StreamingQueryException

        try:
            while query.isActive and not stop.is_set():
                try:
                    query.awaitTermination(0.5)
                except StreamingQueryException:
                    break
                if deadline and time.monotonic() > deadline:
                    break
            if query.isActive:
                log.info("stopping the stream (signal or timeout)")
                query.stop()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            if self._lag_consumer is not None:
                with contextlib.suppress(Exception):
                    self._lag_consumer.close()
        exc = query.exception()
        if exc is not None:
            log.error("stream failed: %s", failure_cause(str(exc))[:2000])
            return 1
        return 0

    # ---- one micro-batch ------------------------------------------------------------------------
    def _fault(self, point: str, batch_id: int) -> None:
        if self.fault_hook is not None:
            self.fault_hook(point, batch_id)

    def process_batch(self, batch_df: DataFrame, batch_id: int) -> None:
        self._started.wait(60)
        spark = batch_df.sparkSession
        cfg, m = self.cfg, self.cfg.model
        stream_id = self.stream_id or "adhoc"
        app = f"{cfg.app.name}-{stream_id}"
        res = BatchResult(batch_id=batch_id, stream_id=stream_id)
        t0 = time.perf_counter()

        parsed = parse_events(batch_df, explicit=self.explicit, rating_min=m.rating_min,
                              rating_max=m.rating_max).persist()
        try:
            self._batch(spark, parsed, batch_id, stream_id, app, res, t0)
        except BaseException:
            self._cache = None  # never trust an in-memory model across a failed batch
            self._check_replay = True  # the batch may be retried after its events or metrics were written
            if self._appends is not None:
                self._appends[0].join()
                self._appends = None
            raise
        finally:
            parsed.unpersist()

    def _batch(self, spark: SparkSession, parsed: DataFrame, batch_id: int, stream_id: str, app: str,
               res: BatchResult, t0: float) -> None:
        cfg = self.cfg
        rows = parsed.select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ, "topic", "partition", "offset",
                             "reason").toPandas()
        bad = rows["reason"].notna()
        reasons = rows.loc[bad, "reason"].value_counts().sort_index()
        res.rows_in, res.rows_quarantined = len(rows), int(bad.sum())
        res.rows_valid = res.rows_in - res.rows_quarantined
        res.quarantine_reasons = json.dumps({str(k): int(v) for k, v in reasons.items()}, sort_keys=True)
        offs = (rows.groupby(["topic", "partition"]).agg(lo=("offset", "min"), hi=("offset", "max"))
                .reset_index()) if len(rows) else rows.iloc[0:0]
        res.offsets = json.dumps({f"{r.topic}:{r.partition}": [int(r.lo), int(r.hi)] for r in offs.itertuples()},
                                 sort_keys=True)
        ev = rows.loc[~bad, [C.USER, C.ITEM, C.RATING, C.TS, C.SEQ]].reset_index(drop=True)
        res.lag_ms = int(time.time() * 1000 - ev[C.TS].max()) if len(ev) else -1
        res.lag_records = self._lag(offs)

        events = valid_events(parsed)
        res.seconds_parse = time.perf_counter() - t0
        self._start_appends(parsed, events, ev.iloc[:1], res, batch_id, app)

        ends = {f"{r.topic}:{r.partition}": int(r.hi) for r in offs.itertuples()}
        for attempt in range(1, self.STALE_RETRIES + 1):
            try:
                state = self._state(spark)
                meta = state.meta
                if meta.get("stream_id") == stream_id:
                    res.records_lost = _records_lost(meta.get("offsets_end", {}), offs)
                    if res.records_lost:
                        res.alert = (f"data loss: {res.records_lost} records were deleted from Kafka before they were read "
                                     "(kafka.fail_on_data_loss=false)")
                        log.warning("batch %d: %s", batch_id, res.alert)
                applied = meta.get("stream_id") == stream_id and int(meta.get("last_batch", -1)) >= batch_id
                if applied:  # replay of a batch whose factors were written before a crash
                    stored = meta.get("last_result", {}) if int(meta.get("last_batch", -1)) == batch_id else {}
                    for k, v in stored.items():
                        if k in res.__dict__ and k not in ("replayed", "seconds_total", "stream_id", "batch_id"):
                            setattr(res, k, v)
                    res.replayed = True
                    log.info("batch %d: factors already applied, replaying metrics only", batch_id)
                elif res.rows_valid:
                    self._train(spark, ev, events, batch_id, stream_id, state, res, ends)
                else:
                    self._commit(spark, state, None, None, {"stream_id": stream_id, "last_result": {},
                                                            "offsets_end": {**meta.get("offsets_end", {}), **ends}},
                                 batch_id, app)
                self._await_appends(batch_id)
                break
            except StaleModel as exc:  # another writer (the weekly retrain, a rollback) committed first
                self._cache = None
                if attempt == self.STALE_RETRIES:
                    raise
                log.warning("batch %d: the model changed underneath (%s); recomputing from the new model "
                            "(attempt %d)", batch_id, exc, attempt + 1)
        self._fault("after_factors", batch_id)

        res.seconds_total = time.perf_counter() - t0
        res.rows_per_s = res.rows_in / res.seconds_total if res.seconds_total > 0 else 0.0
        mrow = spark.createDataFrame([tuple(res.row()[c.split()[0]] for c in METRICS_SCHEMA.split(", "))],
                                     METRICS_SCHEMA).withColumn("written_at", F.current_timestamp())
        # Only the first batch after a (re)start can be a replay whose metrics row is already in; it is
        # looked up. Later batches are new: a plain append, without Delta's transaction-id lookup, which
        # costs a small append more than twice as much (0.40 s vs 0.15 s, bench/bench_commit.py).
        if self._check_replay and self._metrics_written(spark, stream_id, batch_id):
            log.info("batch %d: its metrics row is already in", batch_id)
        else:
            append_once(mrow, self.tables.metrics, app_id=f"{app}-metrics", version=batch_id, txn=False)
        self._check_replay = False
        self._fault("after_metrics", batch_id)
        if batch_id > 0 and batch_id % cfg.stream.maintenance_every == 0:
            self._maintenance(spark)
        self.results.append(res)
        log.info("batch %d: rows=%d valid=%d quarantined=%d %.0f rows/s lag=%d rec/%.1fs dcg@%d=%.4f (pop %.4f) "
                 "loss=%.4f users=%d items=%d | parse %.2fs eval %.2fs train %.2fs write %.2fs total %.2fs%s%s",
                 batch_id, res.rows_in, res.rows_valid, res.rows_quarantined, res.rows_per_s, res.lag_records,
                 res.lag_ms / 1000, cfg.stream.eval_k, res.dcg, res.dcg_popularity, res.loss, res.users_touched,
                 res.items_touched, res.seconds_parse, res.seconds_eval, res.seconds_train, res.seconds_write,
                 res.seconds_total, " REPLAY" if res.replayed else "", f" ALERT {res.alert}" if res.alert else "")

    def _metrics_written(self, spark: SparkSession, stream_id: str, batch_id: int) -> bool:
        return _row_exists(spark, self.tables.metrics, (F.col("stream_id") == stream_id) & (F.col("batch_id") == batch_id))

    def _events_written(self, spark: SparkSession, first: pd.DataFrame) -> bool:
        """Whether the batch whose first valid event is ``first`` is already in ``events`` (a replay after
        a crash): that event, found by its stream position (``seq`` = partition, offset), user, item
        and time; Delta's file statistics on ``seq`` keep the lookup to a file or two."""
        e = first.iloc[0]
        return _row_exists(spark, self.tables.events, (F.col(C.SEQ) == int(e[C.SEQ])) & (F.col(C.TS) == int(e[C.TS]))
                           & (F.col(C.USER) == str(e[C.USER])) & (F.col(C.ITEM) == str(e[C.ITEM])))

    def _start_appends(self, parsed: DataFrame, events: DataFrame, first: pd.DataFrame, res: BatchResult,
                       batch_id: int, app: str) -> None:
        """Append the batch's events and quarantined records in a background thread: they overlap with
        evaluation and training, and are joined (:meth:`_await_appends`) before the factor commit.

        Events go in as a plain append (without Delta's transaction-id lookup, ~0.3 s of state
        reconstruction per commit): only the first batch after a (re)start can be a replay, and for it
        the batch's first event is looked up first. Quarantined records (rare) keep the transactional
        append."""
        box: dict[str, Any] = {}
        check = self._check_replay
        spark = events.sparkSession

        def work() -> None:
            try:
                if res.rows_valid and not (check and self._events_written(spark, first)):
                    append_once(events, self.tables.events, app_id=f"{app}-events", version=batch_id,
                                partition_by=EVENTS_PARTITION, txn=False)
                elif res.rows_valid:
                    log.info("batch %d: its events are already in", batch_id)
                if res.rows_quarantined:
                    append_once(quarantined(parsed).withColumn("batch_id", F.lit(batch_id).cast("long"))
                                .withColumn("quarantined_at", F.current_timestamp()),
                                self.tables.quarantine, app_id=f"{app}-quarantine", version=batch_id)
            except BaseException as exc:  # re-raised in the batch's thread
                box["error"] = exc

        thread = threading.Thread(target=work, name=f"dsgd-append-{batch_id}", daemon=True)
        thread.start()
        self._appends = (thread, box)

    def _await_appends(self, batch_id: int) -> None:
        """Wait for the event/quarantine appends of this batch; then the ``after_events`` fault point."""
        if self._appends is None:
            return
        thread, box = self._appends
        thread.join()
        self._appends = None
        if "error" in box:
            raise box["error"]
        self._fault("after_events", batch_id)

    def _lag(self, offs: pd.DataFrame) -> int:
        """Records in Kafka after this batch's last offsets (−1 when the broker cannot be asked).

        The probe is a plain kafka-python consumer on ``kafka.bootstrap_servers``; when it fails (e.g. a
        secured cluster, see ``kafka.options``) it is not tried again for :data:`LAG_RETRY_S`, so the
        batches do not each wait for its timeout.
        """
        if time.monotonic() < self._lag_retry_at:
            return -1
        try:
            from kafka import KafkaConsumer, TopicPartition

            if self._lag_consumer is None:
                self._lag_consumer = KafkaConsumer(bootstrap_servers=self.cfg.kafka.bootstrap_servers,
                                                   request_timeout_ms=5000, api_version_auto_timeout_ms=5000)
            parts = list(offs.itertuples())
            tps = [TopicPartition(r.topic, int(r.partition)) for r in parts]
            if not tps:
                return 0
            ends = self._lag_consumer.end_offsets(tps)
            return int(sum(max(0, ends[TopicPartition(r.topic, int(r.partition))] - int(r.hi) - 1) for r in parts))
        except Exception as exc:  # noqa: BLE001 - lag is informational
            self._lag_retry_at = time.monotonic() + LAG_RETRY_S
            log.warning("consumer lag unavailable for the next %.0f s (recorded as -1): %s", LAG_RETRY_S,
                        str(exc).splitlines()[0][:300] if str(exc) else type(exc).__name__)
            return -1

    # ---- train ----------------------------------------------------------------------------------
    def _params(self, mu: float) -> KernelParams:
        return params_from_model_config(self.cfg.model, mu=mu)

    def _schedule(self, meta: dict) -> _StepSchedule:
        m = self.cfg.model
        state = meta.get("schedule")
        base = schedule_from_state(state) if state else make_schedule(m.lr_schedule, m.lr)
        return _StepSchedule(base, int(meta.get("steps", 0)))

    # ---- model state ----------------------------------------------------------------------------
    def _state(self, spark: SparkSession) -> ModelState:
        """The model as the factors table holds it now, cached in the driver (re-read when the table's
        version is not the one this trainer last wrote): every factor row for the local engine, the head
        (metadata, commit sequence) only for the Spark engine, which reads the touched rows itself."""
        version = self.store.version()
        if self._cache is not None and self._cache.version == version:
            return self._cache
        t = time.perf_counter()
        head = self.store.head()
        version, raw, meta = head.version, head.raw, head.meta
        if self.cfg.model.engine != "local":
            self._cache = ModelState(version=version, seq=head.seq, meta=meta, raw=raw)
            return self._cache
        rank = self.cfg.model.rank
        users = self.store.load(C.SIDE_USER, version=version).toPandas()
        items = self.store.load(C.SIDE_ITEM, version=version).toPandas()
        self._cache = ModelState(version=version, seq=head.seq, meta=meta, raw=raw,
                                 users=SideFactors.from_frame(users, rank),
                                 items=SideFactors.from_frame(items, rank))
        log.info("loaded the model at factors version %d: %d users, %d items (%.1fs)", version, len(users),
                 len(items), time.perf_counter() - t)
        return self._cache

    def _commit(self, spark: SparkSession, state: ModelState, users: pd.DataFrame | None,
                items: pd.DataFrame | None, meta: dict, batch_id: int, app: str) -> None:
        """One commit of the changed rows + metadata; keep the driver cache only if it is the next one."""
        self._await_appends(batch_id)  # events are in Delta before the factors that learnt from them
        force = state.meta.get("stream_id") != meta.get("stream_id", state.meta.get("stream_id"))
        rank = self.cfg.model.rank
        udf = factors_to_spark(spark, users, rank) if users is not None and len(users) else None
        idf = factors_to_spark(spark, items, rank) if items is not None and len(items) else None
        wrote = self.store.write(udf, idf, meta=meta, batch_id=batch_id, app_id=app, force=force,
                                 expected=state.head)
        last = self.store.last_written
        if wrote and last is not None and last.version == state.version + 1:
            state.version, state.seq, state.raw = last.version, last.seq, last.raw
            state.meta = json.loads(state.raw)
        else:
            self._cache = None

    def _train(self, spark: SparkSession, ev: pd.DataFrame, events: DataFrame, batch_id: int, stream_id: str,
               state: ModelState, res: BatchResult, ends: dict[str, int]) -> None:
        cfg, m = self.cfg, self.cfg.model
        app = f"{cfg.app.name}-{stream_id}"
        meta = state.meta
        t = time.perf_counter()
        if state.users is None:  # spark engine: read the touched rows (all items for implicit)
            users = self.store.load(C.SIDE_USER, ids=events.select(F.col(C.USER).alias(C.ID)),
                                    version=state.version).toPandas()
            items = self.store.load(C.SIDE_ITEM, version=state.version).toPandas()
            su, si = SideFactors.from_frame(users, m.rank), SideFactors.from_frame(items, m.rank)
        else:
            su, si = state.users, state.items

        # 2. prequential evaluation against the pre-batch model
        if cfg.stream.eval_max_events > 0:
            sample = sample_events(ev, cfg.stream.eval_max_events, mix_seed(m.seed, batch_id))
            rows = su.index_of(id_key(sample[C.USER].to_numpy(object)))
            uidx = {u: (su.vec[r], su.bias[r]) for u, r in zip(sample[C.USER], rows, strict=True) if r >= 0}
            ev_stats = evaluate_batch(sample, user_index=uidx, item_ids=si.ids, item_vecs=si.vec,
                                      item_bias=si.bias, item_count=si.count, k=cfg.stream.eval_k,
                                      explicit=self.explicit, mu=float(meta.get("mu", 0.0)))
            res.dcg, res.dcg_popularity = ev_stats["dcg"], ev_stats["dcg_popularity"]
            res.dcg_events = ev_stats["dcg_events"]
        res.seconds_eval = time.perf_counter() - t
        self._fault("after_eval", batch_id)

        # 3. DSGD step
        t = time.perf_counter()
        n_old, mu = int(meta.get("n_ratings", 0)), float(meta.get("mu", 0.0))
        if self.explicit:
            mu = (mu * n_old + ev[C.RATING].to_numpy(np.float64).sum()) / (n_old + len(ev))
        params = self._params(mu)
        schedule = self._schedule(meta)
        uk, ik = id_key(ev[C.USER].to_numpy(object)), id_key(ev[C.ITEM].to_numpy(object))
        res.new_users = int(np.unique(uk[su.index_of(uk) < 0]).size)
        res.new_items = int(np.unique(ik[si.index_of(ik) < 0]).size)
        try:
            if m.engine == "local":
                uf, itf, stats = self._train_local(ev, uk, ik, su, si, params, schedule, batch_id)
            else:
                uf, itf, stats = self._train_spark(spark, events, su, si, params, schedule, batch_id)
        except BaseException:
            self._cache = None
            raise
        losses = np.array([s["loss"] for s in stats], dtype=float)
        known = losses[~np.isnan(losses)]
        res.loss = float(known.mean()) if known.size else float("nan")  # all NaN: a diverged batch
        res.lr = float(stats[-1]["lr"]) if stats else float("nan")
        res.seconds_train = time.perf_counter() - t

        # 4. guard, then one commit
        t = time.perf_counter()
        bad = _divergent(uf, m.rank, cfg.stream.max_abs_factor) or _divergent(itf, m.rank, cfg.stream.max_abs_factor)
        new_meta: dict[str, Any] = {"stream_id": stream_id, "steps": int(meta.get("steps", 0)) + len(stats),
                                    "schedule": schedule.base.to_state(),
                                    "offsets_end": {**(meta.get("offsets_end", {}) if meta.get("stream_id") == stream_id
                                                       else {}), **ends}}
        if bad:
            self._cache = None  # the in-memory model saw the bad update: re-read the last good one
            res.rejected = True
            res.alert = "; ".join(a for a in (res.alert, f"divergence: {bad}; batch rejected, previous model kept") if a)
            log.warning("batch %d: %s", batch_id, res.alert)
            new_meta.update(alerts=int(meta.get("alerts", 0)) + 1, schedule=meta.get("schedule"),
                            steps=int(meta.get("steps", 0)))
            new_meta["last_result"] = _scalars(res)
            self._await_appends(batch_id)
            self.store.write(None, None, meta=new_meta, batch_id=batch_id, app_id=app,
                             force=meta.get("stream_id") != stream_id)
        else:
            res.users_touched, res.items_touched = len(uf), len(itf)
            new_meta.update(n_ratings=n_old + len(ev), mu=mu)
            new_meta["last_result"] = _scalars(res)
            self._commit(spark, state, uf, itf, new_meta, batch_id, app)
        res.seconds_write = time.perf_counter() - t

    def _train_local(self, ev: pd.DataFrame, uk: np.ndarray, ik: np.ndarray, su: SideFactors, si: SideFactors,
                     params: KernelParams, schedule: Any, batch_id: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
        m = self.cfg.model
        uids, iids = ev[C.USER].to_numpy(object), ev[C.ITEM].to_numpy(object)
        nu0, ni0 = len(su), len(si)
        touched_u = np.unique(su.index_of(uk))
        touched_u = touched_u[touched_u >= 0]
        u_before = su.vec[touched_u].copy()
        i_before = si.vec.copy()
        stats = train_epochs(su, si, uk, ik, uids, iids, ev[C.RATING].fillna(1.0).to_numpy(np.float32),
                             ev[C.TS].to_numpy(np.int64), ev[C.SEQ].to_numpy(np.int64), params, d=m.blocks,
                             epochs=m.epochs, schedule=schedule, strata_order=m.strata_order, seed=m.seed,
                             batch_id=batch_id, init_scale=m.init_scale, rank=m.rank, threads=2)
        u_rows = np.concatenate([touched_u[(su.vec[touched_u] != u_before).any(axis=1)
                                           | (su.count[touched_u] > 0)], np.arange(nu0, len(su))])
        moved_i = np.zeros(len(si), dtype=bool)
        moved_i[:ni0] = (si.vec[:ni0] != i_before).any(axis=1)
        moved_i[ni0:] = True
        moved_i[np.unique(si.index_of(ik))] = True
        return su.frame(np.unique(u_rows)), si.frame(np.flatnonzero(moved_i)), stats

    def _train_spark(self, spark: SparkSession, events: DataFrame, su: SideFactors, si: SideFactors,
                     params: KernelParams, schedule: Any, batch_id: int
                     ) -> tuple[pd.DataFrame, pd.DataFrame, list[dict]]:
        m = self.cfg.model
        fu = ensure_ids(side_to_spark(spark, su), events.select(F.col(C.USER).alias(C.ID)))
        fi = ensure_ids(side_to_spark(spark, si), events.select(F.col(C.ITEM).alias(C.ID)))
        ou, oi, stats = train_epochs_spark(spark, events, fu, fi, params, d=m.blocks, epochs=m.epochs,
                                           schedule=schedule, strata_order=m.strata_order, seed=m.seed,
                                           batch_id=batch_id, init_scale=m.init_scale, rank=m.rank,
                                           exchange=m.spark_exchange, n_items=len(si))
        cols = [C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT]
        return (ou.where("changed").select(*cols).toPandas(), oi.where("changed").select(*cols).toPandas(), stats)

    def _maintenance(self, spark: SparkSession) -> None:
        t = time.perf_counter()
        try:
            self.store.compact()
        except StaleModel as exc:  # another writer kept committing: the next maintenance pass compacts
            self._cache = None
            log.warning("maintenance: compaction skipped, the model kept changing underneath (%s)", exc)
            return
        self.store.vacuum(self.cfg.stream.vacuum_retention_hours)
        spark.catalog.clearCache()
        self._cache = None  # compaction made a new version: re-read (cheap) rather than guess
        log.info("maintenance: compacted and vacuumed the factors table (retention %gh) in %.1fs",
                 self.cfg.stream.vacuum_retention_hours, time.perf_counter() - t)


# ---- helpers ------------------------------------------------------------------------------------------
def source_options(cfg: Config) -> dict[str, str]:
    """Options of the Kafka source: from the ``kafka`` config keys and :data:`SOURCE_DEFAULTS`, then
    ``kafka.options`` (validated by the config: it cannot override the keys set here from other keys)."""
    k = cfg.kafka
    opts = {"kafka.bootstrap.servers": k.bootstrap_servers, "subscribe": k.topic,
            "startingOffsets": k.starting_offsets, "failOnDataLoss": str(k.fail_on_data_loss).lower(),
            **SOURCE_DEFAULTS}
    if k.max_offsets_per_trigger:
        opts["maxOffsetsPerTrigger"] = str(k.max_offsets_per_trigger)
    for key, value in k.options.items():
        opts[key] = str(value).lower() if isinstance(value, bool) else str(value)
    return opts


#: Exception lines that only wrap the real cause (py4j's call of a Python foreachBatch, Spark's awaitResult).
_WRAPPERS = ("py4j.protocol.Py4JJavaError", "py4j.Py4JException", "Exception thrown in awaitResult")


def failure_cause(text: str) -> str:
    """The first exception message of a query failure's text that is not a wrapper, with the lines its
    message continues on (Spark's Kafka errors span several), without stack frames."""
    lines = [ln.strip() for ln in text.splitlines()]

    def frame(ln: str) -> bool:
        return not ln or ln.startswith(("at ", "...", "File ", "^", "Traceback", "Caused by: py4j"))

    starts = [i for i, ln in enumerate(lines) if not frame(ln) and re.search(r"(Exception|Error|Fault)\w*:", ln)]
    first = next((i for i in starts if not any(w in lines[i] for w in _WRAPPERS)), starts[0] if starts else None)
    if first is None:
        return next((ln for ln in lines if not frame(ln)), text[:200])
    out = [lines[first]]
    for ln in lines[first + 1:first + 9]:
        if frame(ln) or ln.startswith("Caused by:"):
            break
        out.append(ln)
    return " ".join(out)


def _row_exists(spark: SparkSession, path: str, cond: Any) -> bool:
    """Whether the Delta table at ``path`` exists and has a row matching ``cond``."""
    from delta.tables import DeltaTable

    return DeltaTable.isDeltaTable(spark, path) and bool(
        spark.read.format("delta").load(path).where(cond).limit(1).collect())


def _divergent(df: pd.DataFrame, rank: int, limit: float) -> str:
    if len(df) == 0:
        return ""
    vec = vector_matrix(df[C.VEC], rank)
    bias = df[C.BIAS].to_numpy(np.float64)
    if not (np.isfinite(vec).all() and np.isfinite(bias).all()):
        return "non-finite factors"
    peak = max(float(np.abs(vec).max()), float(np.abs(bias).max()))
    return f"factor magnitude {peak:.3g} > stream.max_abs_factor {limit:g}" if peak > limit else ""


def _records_lost(previous_ends: dict[str, int], offs: pd.DataFrame) -> int:
    """Records skipped between the previous batch's last offset and this batch's first, per partition."""
    lost = 0
    for r in offs.itertuples():
        prev = previous_ends.get(f"{r.topic}:{r.partition}")
        if prev is not None and int(r.lo) > prev + 1:
            lost += int(r.lo) - prev - 1
    return lost


def _scalars(res: BatchResult) -> dict[str, Any]:
    return {k: v for k, v in res.row().items() if isinstance(v, int | float | str | bool)}


__all__ = ["StreamTrainer", "BatchResult", "InjectedFault", "FAULT_POINTS", "QUARANTINE_COLUMNS"]
