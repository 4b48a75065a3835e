"""The streaming trainer: Kafka -> foreachBatch (test, then train with DSGD) -> Delta, exactly once.

:class:`StreamTrainer` owns the query (start, run until the stream ends or a signal, the failure's
cause) and hands every micro-batch to :class:`streaming.pipeline.MicroBatch`, whose steps are

1. **parse** and validate the records (:mod:`streaming.events`);
2. **append** valid events to ``events`` (partitioned by event date) and rejects to ``quarantine``, in
   the background (:mod:`streaming.appends`);
3. **evaluate** the batch prequentially against the model as it was before the batch;
4. **train**: the stratified DSGD step from the touched factor rows, new ids initialised from a seeded
   hash of the id (:mod:`streaming.train`, on the local or the Spark engine);
5. **guard**: a batch whose changed rows are non-finite or larger than ``stream.max_abs_factor`` is
   rejected, only its metadata moves and an alert is recorded;
6. **commit** the changed rows and the model metadata in ONE Delta commit (an append of row versions
   with a compare-and-swap on the model sequence, :mod:`dsgd.store.factor_store`), skipped when the
   factors already include this batch (the replay after a crash);
7. **record** one ``metrics`` row; every ``stream.maintenance_every`` batches a maintenance pass
   bounded by what changed since the last one (:mod:`dsgd.store.maintenance`).

Nothing is carried from batch to batch as a DataFrame (state is re-read from Delta or cached as
arrays), so the plan never grows. Exactly-once: Spark replays a failed batch with the same offsets and
batch id, only as the first batch after a (re)start; every write above is idempotent on the stream id
(kept in the checkpoint) and the batch id, so a crash anywhere followed by a restart gives the factors
of an uninterrupted run.
"""

from __future__ import annotations

import logging
import re
import signal
import threading
import time

from pyspark.sql import DataFrame, SparkSession

from dsgd.core.config import Config, ConfigError
from dsgd.store.errors import StaleModel
from dsgd.store.factor_store import FactorStore
from dsgd.store.maintenance import compact_events, maintain_factors, only_maintenance_since
from dsgd.store.tables import Tables
from streaming.decisions import METRICS_SCHEMA, BatchResult
from streaming.faults import FAULT_POINTS, FaultHook, InjectedFault
from streaming.lag import LAG_RETRY_S, LagProbe
from streaming.model_state import ModelCache
from streaming.monitoring import StreamMonitor
from streaming.pipeline import STALE_RETRIES, MicroBatch, TrainerContext
from streaming.report_lines import heartbeat, run_summary
from streaming.source import SOURCE_DEFAULTS, source_options

log = logging.getLogger("dsgd.stream")


class StreamTrainer:
    """Runs the streaming query and owns the per-batch function.

    Parameters
    ----------
    spark : SparkSession
    cfg : Config
    fault_hook : callable, optional
        Tests only: called as ``hook(point, batch_id)`` at each of :data:`FAULT_POINTS` of a batch
        (see :mod:`streaming.faults`).

    Example
    -------
    >>> trainer = StreamTrainer(spark, cfg)
    >>> query = trainer.start()          # or trainer.run() to block until done / SIGTERM
    >>> query.stop(); trainer.monitor.close()   # run() closes the /metrics endpoint and MLflow run itself
    """

    STALE_RETRIES = STALE_RETRIES

    def __init__(self, spark: SparkSession, cfg: Config, *, fault_hook: FaultHook | None = None) -> None:
        self.spark = spark
        self.cfg = cfg
        self.tables = Tables.from_config(cfg)
        self.store = FactorStore(spark, self.tables.factors)
        m = cfg.model
        self.store.create(rank=m.rank, kind=m.kind, meta={"lr_schedule": m.lr_schedule})
        self.store.check_compatible(rank=m.rank, kind=m.kind)
        self.engine = resolve_engine(m.engine, self.store, m.local_max_rows)
        self.ctx = TrainerContext(cfg=cfg, tables=self.tables, store=self.store,
                                  cache=ModelCache(self.store, rank=m.rank, local=self.engine == "local",
                                                   max_rows=m.local_max_rows, auto=m.engine == "auto"),
                                  lag=LagProbe(cfg.kafka.bootstrap_servers), fault_hook=fault_hook)
        self.stream_id: str | None = None
        self._started = threading.Event()
        self._last_batch_at = self._last_heartbeat_at = time.monotonic()
        self.monitor = StreamMonitor(cfg, self.store)  # Prometheus endpoint, MLflow run (both off by default)
        log.info("the trainer runs with (keys not at their defaults; all keys: dsgd config):\n%s",
                 cfg.describe(("app", "spark", "kafka", "model", "stream")))

    @property
    def results(self) -> list[BatchResult]:
        """What every batch of this trainer did (the rows it appended to ``metrics``)."""
        return self.ctx.results

    # ---- the query ------------------------------------------------------------------------------
    def source(self) -> DataFrame:
        return self.spark.readStream.format("kafka").options(**source_options(self.cfg)).load()

    @property
    def checkpoint(self) -> str:
        return f"{self.cfg.app.checkpoint_root.rstrip('/')}/stream"

    def check_topic(self) -> None:
        """Fail at start, naming the topic and how to create it, when the broker does not host it
        (Spark's own error comes ~25 s later and names neither)."""
        k = self.cfg.kafka
        if any(o in k.options for o in ("subscribePattern", "assign")):
            return
        missing = self.ctx.lag.missing_topics([t.strip() for t in k.topic.split(",") if t.strip()])
        if missing:
            self.ctx.lag.close()
            raise ConfigError(f"kafka.topic: the broker at {k.bootstrap_servers} has no topic "
                              f"{', '.join(repr(t) for t in missing)}; create it with `dsgd kafka create-topic` "
                              f"(kafka.partitions = {k.partitions}) or replay data into it with "
                              "`dsgd produce --create-topic`")

    def start(self):
        s, name = self.cfg.stream, f"{self.cfg.app.name}-trainer"
        self.check_topic()
        writer = (self.source().writeStream.queryName(name)
                  .option("checkpointLocation", self.checkpoint).foreachBatch(self.process_batch))
        if s.trigger == "available_now":
            writer = writer.trigger(availableNow=True)
        else:
            writer = writer.trigger(processingTime=s.trigger_interval)
        self.ctx.check_replay = True
        self.monitor.start(self.spark, name)
        query = writer.start()
        self.stream_id = str(query.id)
        self._started.set()
        log.info("stream %s started: topic=%s trigger=%s checkpoint=%s", self.stream_id, self.cfg.kafka.topic,
                 s.trigger, self.checkpoint)
        return query

    def run(self, timeout_s: float | None = None) -> int:
        """Start and block until the query ends (availableNow) or SIGINT/SIGTERM; 0 ok, 1 failed."""
        from pyspark.errors import StreamingQueryException

        query = self.start()
        stop = threading.Event()
        old = {}
        if threading.current_thread() is threading.main_thread():
            for sig in (signal.SIGINT, signal.SIGTERM):
                old[sig] = signal.signal(sig, lambda *_: stop.set())
        t0 = time.monotonic()
        deadline = t0 + timeout_s if timeout_s else None
        try:
            while query.isActive and not stop.is_set():
                try:
                    query.awaitTermination(0.5)
                except StreamingQueryException:
                    break
                if deadline and time.monotonic() > deadline:
                    break
                self._heartbeat()
            if query.isActive:
                log.info("stopping the stream (signal or timeout)")
                query.stop()
        finally:
            for sig, handler in old.items():
                signal.signal(sig, handler)
            self.ctx.lag.close()
            self.monitor.close(failed=query.exception() is not None)
        exc = query.exception()
        log.info("%s", run_summary(self.results, time.monotonic() - t0, self._version(), self.cfg.stream.eval_k))
        if exc is not None:
            log.error("stream failed: %s", failure_cause(str(exc)))
            return 1
        return 0

    def _heartbeat(self) -> None:
        every = self.cfg.stream.heartbeat_seconds
        if not every or self.cfg.stream.trigger == "available_now":
            return
        now = time.monotonic()
        idle = now - max(self._last_batch_at, self._last_heartbeat_at)
        if idle >= every:
            self._last_heartbeat_at = now
            log.info("%s", heartbeat(now - self._last_batch_at, self.results[-1] if self.results else None,
                                     self.cfg.kafka.topic))

    def _version(self) -> int | None:
        try:
            return self.store.version()
        except Exception:  # noqa: BLE001 - the summary reports what it can
            return None

    # ---- one micro-batch ------------------------------------------------------------------------
    def process_batch(self, batch_df: DataFrame, batch_id: int) -> None:
        self._started.wait(60)
        res = MicroBatch(self.ctx, batch_df, batch_id, self.stream_id or "adhoc").run()
        self.monitor.observe(res)
        if res.rows_in:
            self._last_batch_at = time.monotonic()
        if batch_id > 0 and batch_id % self.cfg.stream.maintenance_every == 0:
            self.maintenance()

    def maintenance(self) -> None:
        """A maintenance pass (every ``stream.maintenance_every`` batches), bounded by what changed since
        the last one (:mod:`dsgd.store.maintenance`); the cached model survives it when no other writer
        committed in between."""
        s, state = self.cfg.stream, self.ctx.cache.state
        meta = state.meta if state is not None else self.store.meta()
        if state is not None and state.users is not None:
            rows = len(state.users) + len(state.items)
        else:  # kept in the metadata by every commit; an older table without them is rewritten each pass
            rows = int(meta.get("n_users", 0)) + int(meta.get("n_items", 0))
        try:
            res = maintain_factors(self.store, model_rows=rows, garbage_ratio=s.compaction_garbage_ratio,
                                   small_file_bytes=s.small_file_mb << 20, retention_hours=s.vacuum_retention_hours)
        except StaleModel as exc:  # another writer kept committing: the next maintenance pass compacts
            self.ctx.cache.drop()
            log.warning("maintenance: compaction skipped, the model kept changing underneath (%s)", exc)
            return
        if self.ctx.events_since is not None:
            compact_events(self.spark, self.tables.events, self.ctx.events_since, s.small_file_mb << 20)
            self.ctx.events_since = None
        self.spark.catalog.clearCache()
        kept = self.ctx.cache.after_maintenance(res, self.store.last_written if res.rewrote else None,
                                                lambda: only_maintenance_since(self.spark, self.store.path,
                                                                               res.version_before))
        log.info("maintenance: %s the factors table (%d row versions for %d model rows), bin-packed small files, "
                 "vacuumed (retention %gh) in %.1fs; cached model %s", "rewrote" if res.rewrote else "kept",
                 res.table_rows, res.model_rows, s.vacuum_retention_hours, res.seconds,
                 "kept" if kept else "re-read at the next batch")


def resolve_engine(engine: str, store: FactorStore, max_rows: int) -> str:
    """``model.engine`` with ``auto`` resolved by the model's size when the stream starts."""
    if engine != "auto":
        return engine
    meta = store.meta()
    rows = meta.get("n_items")
    rows = store.current().count() if rows is None else int(rows) + int(meta.get("n_users", 0))
    chosen = "local" if rows <= max_rows else "spark"
    log.info("model.engine = auto: %s (%d factor rows, model.local_max_rows = %d)", chosen, rows, max_rows)
    return chosen


#: Exception lines that only wrap the real cause (Spark's call of a Python foreachBatch through the py4j
#: proxy, py4j's call back into the JVM, Spark's awaitResult).
_WRAPPERS = ("ForeachBatchUserFuncException", "An exception was raised by the Python Proxy",
             "py4j.protocol.Py4JJavaError", "py4j.Py4JException", "Exception thrown in awaitResult")


def failure_cause(text: str) -> str:
    """The first exception message of a query failure's text that is not a wrapper (for a failed
    ``foreachBatch``, the Python exception), with the lines its message continues on (Spark's Kafka
    errors span several), without stack frames; at most 2000 characters."""
    lines = [ln.strip() for ln in text.splitlines()]

    def frame(ln: str) -> bool:
        return not ln or ln.startswith(("at ", "...", "File ", "^", "Traceback", "Caused by: py4j"))

    def raised(ln: str) -> bool:  # a Java/Scala exception, or a Python one as its traceback ends: "pkg.mod.Cls: msg"
        return bool(re.search(r"(Exception|Error|Fault)\w*:", ln) or re.match(r"[A-Za-z_]\w*(\.\w+)*\.[A-Z]\w*: ", ln))

    starts = [i for i, ln in enumerate(lines) if not frame(ln) and raised(ln)]
    first = next((i for i in starts if not any(w in lines[i] for w in _WRAPPERS)), starts[0] if starts else None)
    if first is None:
        return next((ln for ln in lines if not frame(ln)), text)[:2000]
    out = [lines[first]]
    for ln in lines[first + 1:first + 9]:
        if frame(ln) or ln.startswith("Caused by:"):
            break
        out.append(ln)
    return " ".join(out)[:2000]


__all__ = ["StreamTrainer", "BatchResult", "InjectedFault", "FAULT_POINTS", "METRICS_SCHEMA", "LAG_RETRY_S",
           "SOURCE_DEFAULTS", "source_options", "failure_cause"]

