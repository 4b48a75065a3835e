"""The trainer seen from outside: a Prometheus endpoint and an MLflow run, fed from every micro-batch.

:class:`StreamMonitor` is what :class:`streaming.trainer.StreamTrainer` calls: ``start`` before the query
starts, ``observe(result)`` after each batch's ``record`` step (so every value is the one its ``metrics``
row holds), ``close`` when the query ends. Both sinks are off by default:

- ``stream.metrics_port`` (0 = off): ``/metrics`` in the Prometheus text format on
  ``stream.metrics_address`` (the official ``prometheus_client``; names in :mod:`dsgd.core.metric_names`,
  shared with ``dsgd serve``): counters over the batches (rows in/valid, quarantined by reason, records
  lost, alerts, rejected and replayed batches, a batch-duration histogram), gauges of the last batch (DCG
  and popularity DCG, loss, learning rate, seconds per phase, consumer and event-time lag, throughput,
  factor rows touched, new ids), the model version and age, and the query's own progress from a
  ``StreamingQueryListener`` (input and processing rate, Spark's per-operation durations, offsets
  behind the latest, active, terminations).
- ``retrain.mlflow_tracking_uri`` (empty = off): one MLflow run per streaming query (resumed after a
  restart on the same checkpoint), the batch figures logged with ``step = batch id`` at most once per
  ``stream.mlflow_interval_s`` seconds, plus the last batch when the query stops.
"""

from __future__ import annotations

import json
import logging
import time
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
    start_http_server,
)
from pyspark.sql.streaming import StreamingQueryListener

from dsgd import __version__
from dsgd.core import metric_names as N
from dsgd.core.config import Config
from dsgd.ops.tracking import TAG_JOB, TAG_STREAM_ID, RateLimit, Run, flat_params, numeric
from dsgd.store.factor_store import FactorStore
from streaming.decisions import BatchResult

log = logging.getLogger("dsgd.stream")

PHASES = ("parse", "eval", "train", "write", "total")
#: metrics-row field -> last-batch gauge (the rest of the row feeds counters or labelled gauges).
ROW_GAUGES = {"dcg": (N.STREAM_DCG, "Prequential DCG@K of the last batch against the model before it."),
              "dcg_popularity": (N.STREAM_DCG_POPULARITY, "The same for the popularity baseline."),
              "dcg_events": (N.STREAM_DCG_EVENTS, "Events the last batch's DCG was computed on."),
              "loss": (N.STREAM_LOSS, "Training loss of the last batch's DSGD step."),
              "lr": (N.STREAM_LEARNING_RATE, "Learning rate of the last batch."),
              "rows_per_s": (N.STREAM_ROWS_PER_SECOND, "Records per second of the last batch."),
              "lag_records": (N.STREAM_LAG_RECORDS, "Records left in the topic after the last batch (-1: unknown)."),
              "batch_id": (N.STREAM_LAST_BATCH_ID, "Id of the last recorded micro-batch.")}
#: metrics-row counters: field -> (name, help).
ROW_COUNTERS = {"rows_in": (N.STREAM_ROWS_IN, "Kafka records read."),
                "rows_valid": (N.STREAM_ROWS_VALID, "Valid events appended to the events table."),
                "records_lost": (N.STREAM_RECORDS_LOST, "Records deleted from Kafka before they were read."),
                "rejected": (N.STREAM_REJECTED, "Batches rejected by the divergence guard."),
                "replayed": (N.STREAM_REPLAYED, "Batches replayed after a crash.")}


class StreamMetrics:
    """The Prometheus metrics of one trainer, in their own registry (several trainers per process are fine)."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        # no ``*_created`` series: in the text format Prometheus reads them as separate gauges (noise)
        disable_created_metrics()
        r = self.registry = registry or CollectorRegistry()
        self.batches = Counter(N.STREAM_BATCHES, "Micro-batches recorded.", registry=r)
        self.counters = {f: Counter(n, h, registry=r) for f, (n, h) in ROW_COUNTERS.items()}
        self.quarantined = Counter(N.STREAM_ROWS_QUARANTINED, "Records quarantined, by reason.", ["reason"],
                                   registry=r)
        self.alerts = Counter(N.STREAM_ALERTS, "Batches that raised an alert (data loss, divergence).", registry=r)
        self.duration = Histogram(N.STREAM_BATCH_DURATION, "Wall time of a micro-batch.", registry=r,
                                  buckets=N.BATCH_DURATION_BUCKETS)
        self.gauges = {f: Gauge(n, h, registry=r) for f, (n, h) in ROW_GAUGES.items()}
        self.seconds = Gauge(N.STREAM_BATCH_SECONDS, "Seconds of the last batch per phase.", ["phase"], registry=r)
        self.lag_seconds = Gauge(N.STREAM_LAG_SECONDS, "Wall clock minus the newest event time of the last batch "
                                 "(-1: no event).", registry=r)
        self.last_batch = Gauge(N.STREAM_LAST_BATCH_TIMESTAMP, "Unix time the last batch was recorded.", registry=r)
        self.factor_rows = Gauge(N.STREAM_FACTOR_ROWS, "Factor rows the last batch updated.", ["side"], registry=r)
        self.new_ids = Gauge(N.STREAM_NEW_IDS, "Ids the last batch saw for the first time.", ["side"], registry=r)
        self.model_version = Gauge(N.MODEL_VERSION, "Delta version of the factors table this process's model is.",
                                   registry=r)
        self.model_time = Gauge(N.MODEL_COMMIT_TIMESTAMP, "Unix time that model version was committed or first "
                                "seen.", registry=r)
        self.model_age = Gauge(N.MODEL_AGE_SECONDS, "Seconds since that model version was committed or first seen.",
                               registry=r)
        self._model: tuple[int, float] | None = None
        self.model_age.set_function(lambda: time.time() - self._model[1] if self._model else float("nan"))
        Gauge(N.BUILD_INFO, "Always 1; the labels name the build.", ["version", "process"],
              registry=r).labels(__version__, "stream").set(1)
        self.query = QueryMetrics(r)

    def observe(self, res: BatchResult, now: float | None = None) -> None:
        """Add one batch's ``metrics`` row."""
        now = time.time() if now is None else now
        row = res.row()
        self.batches.inc()
        for f, c in self.counters.items():
            c.inc(float(row[f]))
        for reason, n in json.loads(res.quarantine_reasons or "{}").items():
            self.quarantined.labels(reason).inc(n)
        if res.alert:
            self.alerts.inc()
        self.duration.observe(res.seconds_total)
        for f, g in self.gauges.items():
            g.set(float(row[f]))
        for phase in PHASES:
            self.seconds.labels(phase).set(row[f"seconds_{phase}"])
        self.lag_seconds.set(res.lag_ms / 1000.0 if res.lag_ms >= 0 else -1.0)
        self.last_batch.set(now)
        for side, touched, new in (("user", res.users_touched, res.new_users), ("item", res.items_touched,
                                                                                  res.new_items)):
            self.factor_rows.labels(side).set(touched)
            self.new_ids.labels(side).set(new)

    def set_model(self, version: int | None, now: float | None = None) -> None:
        """The factors version the trainer's model is; its time is kept while the version stays."""
        if version is None or (self._model and self._model[0] == version):
            return
        self._model = (int(version), time.time() if now is None else now)
        self.model_version.set(version)
        self.model_time.set(self._model[1])


class QueryMetrics:
    """The streaming query's own progress, as Spark's listener reports it."""

    def __init__(self, r: CollectorRegistry) -> None:
        self.active = Gauge(N.QUERY_ACTIVE, "1 while the trainer's streaming query runs.", registry=r)
        self.batch_id = Gauge(N.QUERY_BATCH_ID, "Batch id of the last query progress event.", registry=r)
        self.input_rows = Counter(N.QUERY_INPUT_ROWS, "Input rows over the query's progress events.", registry=r)
        self.input_rate = Gauge(N.QUERY_INPUT_ROWS_PER_SECOND, "Spark's input rate of the last trigger.", registry=r)
        self.processed_rate = Gauge(N.QUERY_PROCESSED_ROWS_PER_SECOND, "Spark's processing rate of the last trigger.",
                                    registry=r)
        self.durations = Gauge(N.QUERY_DURATION_SECONDS, "Spark's durationMs of the last trigger per operation, in "
                               "seconds.", ["operation"], registry=r)
        self.behind = Gauge(N.QUERY_OFFSETS_BEHIND, "Kafka source: offsets behind the latest (max over "
                            "partitions) after the last trigger.", registry=r)
        self.terminations = Counter(N.QUERY_TERMINATIONS, "Ends of the query, by outcome.", ["outcome"], registry=r)

    def progress(self, p: Any) -> None:
        self.batch_id.set(p.batchId)
        self.input_rows.inc(max(0, int(p.numInputRows)))
        self.input_rate.set(_finite(p.inputRowsPerSecond))
        self.processed_rate.set(_finite(p.processedRowsPerSecond))
        for op, ms in (p.durationMs or {}).items():
            self.durations.labels(op).set(ms / 1000.0)
        behind = [float(s.metrics["maxOffsetsBehindLatest"]) for s in p.sources
                  if (s.metrics or {}).get("maxOffsetsBehindLatest") not in (None, "")]
        if behind:
            self.behind.set(max(behind))


def _finite(x: Any) -> float:
    try:
        v = float(x)
    except (TypeError, ValueError):
        return 0.0
    return v if v == v else 0.0


class ProgressListener(StreamingQueryListener):
    """Feeds :class:`QueryMetrics` from the events of the query named ``name`` (other queries are ignored)."""

    def __init__(self, metrics: QueryMetrics, name: str) -> None:
        super().__init__()
        self.metrics, self.name, self.ids = metrics, name, set()
        self.last_batch_id = -1  # of the last progress event seen (tests wait on it)

    def onQueryStarted(self, event: Any) -> None:  # noqa: N802 - Spark's name
        if event.name == self.name:
            self.ids.add(str(event.id))
            self.metrics.active.set(1)

    def onQueryProgress(self, event: Any) -> None:  # noqa: N802
        p = event.progress
        if p.name == self.name:
            self.metrics.progress(p)
            self.last_batch_id = max(self.last_batch_id, int(p.batchId))

    def onQueryIdle(self, event: Any) -> None:  # noqa: N802
        pass

    def onQueryTerminated(self, event: Any) -> None:  # noqa: N802
        if str(event.id) in self.ids:
            self.metrics.active.set(0)
            self.metrics.terminations.labels("failed" if event.exception else "stopped").inc()


class MlflowStreamRun:
    """One MLflow run per streaming query; batch metrics at most once per ``stream.mlflow_interval_s``."""

    #: metrics-row fields that are not figures.
    SKIP = ("batch_id", "stream_id", "quarantine_reasons", "offsets", "alert")

    def __init__(self, cfg: Config) -> None:
        self.cfg, self.run = cfg, None
        self.limit = RateLimit(cfg.stream.mlflow_interval_s)
        self.pending: BatchResult | None = None
        self.alerts = 0

    def _open(self, stream_id: str) -> Run:
        c, r = self.cfg, self.cfg.retrain
        params = {**flat_params("model", c.model), **flat_params("stream", c.stream), "kafka.topic": c.kafka.topic,
                  "app.name": c.app.name, "app.warehouse": c.app.warehouse}
        return Run.resume_or_start(r.mlflow_tracking_uri, r.mlflow_experiment, tag=TAG_STREAM_ID, value=stream_id,
                                   name=f"stream {stream_id[:8]}", params=params, tags={TAG_JOB: "stream"})

    def observe(self, res: BatchResult) -> None:
        self.alerts += bool(res.alert)
        if self.run is None:
            self.run = self._open(res.stream_id)
        if self.limit.ready():
            self._log(res)
        else:
            self.pending = res

    def _log(self, res: BatchResult) -> None:
        row = {k: v for k, v in res.row().items() if k not in self.SKIP}
        self.run.log_metrics({**numeric(row), "alerts": self.alerts}, step=res.batch_id)
        self.pending = None

    def close(self, failed: bool) -> None:
        if self.run is None:
            return
        if self.pending is not None:
            self._log(self.pending)
        self.run.end("FAILED" if failed else "FINISHED")
        self.run = None


class StreamMonitor:
    """The trainer's hooks: :meth:`start` before the query starts, :meth:`observe` after every batch,
    :meth:`close` when it ends. A sink that fails never fails a batch: it logs a warning."""

    def __init__(self, cfg: Config, store: FactorStore) -> None:
        self.cfg, self.store = cfg, store
        s = cfg.stream
        self.metrics = StreamMetrics() if s.metrics_port else None
        self.mlflow = MlflowStreamRun(cfg) if cfg.retrain.mlflow_tracking_uri else None
        if self.mlflow is not None:
            from dsgd.ops.tracking import client

            client(cfg.retrain.mlflow_tracking_uri)  # fail at start-up when the extra is missing
        self.server: Any = None
        self.listener: ProgressListener | None = None
        self._spark: Any = None

    @property
    def port(self) -> int | None:
        """The port ``/metrics`` listens on (None when off or not started)."""
        return self.server.server_address[1] if self.server is not None else None

    def start(self, spark: Any, query_name: str) -> None:
        if self.metrics is None:
            return
        if self.server is None:
            self.server, _thread = start_http_server(self.cfg.stream.metrics_port, addr=self.cfg.stream.metrics_address,
                                                     registry=self.metrics.registry)
            log.info("Prometheus metrics on http://%s:%d/metrics", self.cfg.stream.metrics_address, self.port)
        self.metrics.set_model(self.store.version())
        if self.listener is None:
            self.listener = ProgressListener(self.metrics.query, query_name)
            spark.streams.addListener(self.listener)
            self._spark = spark

    def observe(self, res: BatchResult) -> None:
        if self.metrics is not None:
            self.metrics.observe(res)
            head = self.store.last_written
            self.metrics.set_model(head.version if head is not None else None)
        if self.mlflow is not None:
            try:
                self.mlflow.observe(res)
            except Exception as exc:  # noqa: BLE001 - the tracker being down must not stop training
                log.warning("batch %d: MLflow logging failed: %s", res.batch_id, exc)

    def close(self, failed: bool = False) -> None:
        """Stop the endpoint, remove the listener, end the MLflow run (idempotent)."""
        if self.listener is not None and self._spark is not None:
            self._spark.streams.removeListener(self.listener)
            self.listener = None
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None
        if self.mlflow is not None:
            try:
                self.mlflow.close(failed)
            except Exception as exc:  # noqa: BLE001
                log.warning("ending the MLflow run failed: %s", exc)
