"""Every config key, declared once: its section, type, default and contract (``doc``, allowed
``choices`` or a numeric range, or a ``pattern``).

:mod:`dsgd.core.config` composes these sections into :class:`~dsgd.core.config.Config`, validates values
against the declarations and loads TOML; the estimator's parameters (:mod:`dsgd.api.params`), the
configuration reference (``dsgd config --reference``) and ``conf/dsgd.toml`` all derive from here.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any


def _f(default: Any, doc: str, *, choices: tuple | None = None, lo: float | None = None,
       hi: float | None = None, pattern: str | None = None, secret: bool = False) -> Any:
    meta = {"doc": doc, "choices": choices, "lo": lo, "hi": hi, "pattern": pattern, "secret": secret}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=meta)
    return field(default=default, metadata=meta)


_DURATION = r"^\d+(\.\d+)?\s*(ms|milliseconds?|s|seconds?|m|minutes?|h|hours?)$"


@dataclass(frozen=True)
class AppConfig:
    name: str = _f("dsgd", "Name of this deployment; used for the Spark app name and Delta txnAppId.",
                   pattern=r"^[A-Za-z0-9_.-]+$")
    warehouse: str = _f(".dsgd/warehouse", "Root path or Hadoop URI (file:/, s3a://, abfss://, hdfs://) of the "
                        "Delta tables: events, factors, metrics, quarantine, snapshots, recommendations.")
    checkpoint_root: str = _f(".dsgd/checkpoints", "Root path or URI of the streaming query checkpoint "
                              "(offsets/commits) and of the lineage-cutting checkpoint directory.")
    log_level: str = _f("INFO", "Python log level of the engine.",
                        choices=("DEBUG", "INFO", "WARNING", "ERROR"))


@dataclass(frozen=True)
class SparkConfig:
    master: str = _f("", "Spark master URL. Empty: leave it to spark-submit / the environment "
                     "(never hard-coded for cluster jobs); the local profile sets local[2].")
    shuffle_partitions: int = _f(4, "spark.sql.shuffle.partitions.", lo=1, hi=100000)
    driver_memory: str = _f("4g", "spark.driver.memory (applies only when this process starts the JVM).",
                            pattern=r"^\d+[kmgt]$")
    jars_dir: str = _f("", "Folder holding the Delta + Kafka connector jars. Empty: the folder that "
                       "build.sh resolved (.jars/spark, or $DSGD_JARS/spark). Set 'none' when the cluster "
                       "already provides them.")
    ui: bool = _f(False, "Start the Spark UI (spark.ui.enabled).")
    conf: dict = _f({}, "Extra Spark settings, e.g. {\"spark.executor.memory\" = \"8g\"}; they override the "
                    "engine's own, such as its bounds on the finished work the driver keeps (50 SQL executions, 100 "
                    "jobs and stages, 10,000 tasks: spark.sql.ui.retainedExecutions, spark.ui.retained*), which keep "
                    "a long-running stream's driver heap flat.")


@dataclass(frozen=True)
class KafkaConfig:
    bootstrap_servers: str = _f("127.0.0.1:9092", "Kafka bootstrap servers (host:port[,host:port]).",
                                pattern=r"^[^\s,]+:\d+(,[^\s,]+:\d+)*$")
    topic: str = _f("events", "Topic the events arrive on.", pattern=r"^[A-Za-z0-9._-]+$")
    starting_offsets: str = _f("earliest", "Where a NEW query starts (ignored once a checkpoint exists).",
                               choices=("earliest", "latest"))
    max_offsets_per_trigger: int = _f(0, "Upper bound of records per micro-batch; 0 = unbounded.",
                                      lo=0, hi=10**12)
    fail_on_data_loss: bool = _f(True, "Stop the query when offsets were deleted before being read "
                                 "(true) or log a warning metric and go on (false).")
    partitions: int = _f(2, "Partitions of the topic when `dsgd` creates it.", lo=1, hi=10000)
    options: dict = _f({}, "Extra options of the Spark Kafka source: consumer settings prefixed `kafka.` (e.g. "
                       "{\"kafka.security.protocol\" = \"SASL_SSL\", \"kafka.sasl.mechanism\" = \"PLAIN\", "
                       "\"kafka.sasl.jaas.config\" = \"...\"}) or source options (minPartitions, groupIdPrefix, "
                       "kafkaConsumer.pollTimeoutMs, ...). They win over the trainer's own source defaults "
                       "(kafka.max.poll.records = 20000); the keys set from other config keys are refused.")


@dataclass(frozen=True)
class BrokerConfig:
    home: str = _f(".dsgd/kafka", "State folder of the local broker: log dirs, pid file, broker.log.")
    host: str = _f("127.0.0.1", "Address the local broker listens on (loopback only).",
                   choices=("127.0.0.1", "localhost"))
    port: int = _f(9092, "PLAINTEXT port of the local broker; 0 = pick a free port.", lo=0, hi=65535)
    controller_port: int = _f(0, "KRaft CONTROLLER port; 0 = pick a free port.", lo=0, hi=65535)
    heap: str = _f("512m", "JVM heap of the local broker (-Xmx).", pattern=r"^\d+[kmg]$")
    start_timeout_s: float = _f(60.0, "Seconds to wait until the broker answers.", lo=1, hi=3600)


@dataclass(frozen=True)
class ModelConfig:
    kind: str = _f("implicit", "implicit: positive-only events with negative sampling; explicit: biased "
                   "MF on ratings.", choices=("implicit", "explicit"))
    rank: int = _f(10, "Number of latent factors.", lo=1, hi=1024)
    lr: float = _f(0.05, "Initial SGD learning rate.", lo=1e-9, hi=100.0)
    lr_schedule: str = _f("constant", "Learning-rate schedule over epochs (and streaming batches).",
                          choices=("constant", "inverse_sqrt", "bold_driver"))
    reg: float = _f(0.0, "L2 regularisation lambda on vectors and biases.", lo=0.0, hi=100.0)
    use_bias: bool = _f(False, "Learn user and item biases (always on for explicit models).")
    init_scale: float = _f(0.01, "Initial vector components are uniform in [-init_scale, init_scale], "
                           "from a seeded hash of the id.", lo=0.0, hi=10.0)
    negatives: int = _f(19, "Negative samples per positive (implicit).", lo=0, hi=1000)
    negative_sampling: str = _f("uniform", "How negatives are drawn from the items known so far.",
                                choices=("uniform", "popularity"))
    blocks: int = _f(2, "d: ids are hashed into d user blocks x d item blocks; d strata per epoch.",
                     lo=1, hi=4096)
    strata_order: str = _f("rotation", "Order of the strata: fixed rotation or a seeded permutation.",
                           choices=("rotation", "permutation"))
    epochs: int = _f(1, "SGD epochs over each micro-batch (streaming) or over the data (fit).", lo=1, hi=10000)
    seed: int = _f(42, "Seed of initial vectors, strata permutation and negative sampling.", lo=0, hi=2**62)
    rating_min: float = _f(-1e9, "Smallest valid explicit rating; smaller ones are quarantined.")
    rating_max: float = _f(1e9, "Largest valid explicit rating; larger ones are quarantined.")
    engine: str = _f("spark", "Where the strata run: spark (mapInArrow, blocks in Python workers; the driver "
                     "never holds the model), local (driver threads on a driver-side copy of the model, for "
                     "models up to model.local_max_rows rows) or auto (local while the model fits that limit "
                     "when the stream starts, else spark; for the estimator: local for pandas input, spark "
                     "for Spark input). All give the same factors.", choices=("spark", "local", "auto"))
    local_max_rows: int = _f(5_000_000, "Largest model (user + item rows) the local engine keeps in the driver "
                             "(about 100 + 4 x rank bytes per row); also the most factor rows the spark engine "
                             "collects to the driver for its evaluation sample.", lo=1, hi=10**10)
    spark_exchange: str = _f("auto", "How the spark engine moves factors between strata: barrier (one barrier "
                             "stage for all epochs; tasks swap item blocks over direct TCP; item factors must "
                             "fit each task), shuffle (one stage per stratum; any size) or auto (barrier while "
                             "the item factors take <= 32 MB and dynamic allocation is off).",
                             choices=("auto", "barrier", "shuffle"))


@dataclass(frozen=True)
class StreamConfig:
    trigger: str = _f("processing_time", "processing_time: run continuously; available_now: process what "
                      "is in the topic and stop (scheduled catch-up runs, tests).",
                      choices=("processing_time", "available_now"))
    trigger_interval: str = _f("5 seconds", "Micro-batch interval for the processing_time trigger.",
                               pattern=_DURATION)
    eval_k: int = _f(100, "K of the prequential DCG@K.", lo=1, hi=100000)
    eval_max_events: int = _f(20000, "At most this many events of a batch are scored for prequential DCG "
                              "(a seeded sample); 0 = skip evaluation.", lo=0, hi=10**9)
    eval_max_scores: int = _f(100_000_000, "At most this many item scores per batch's evaluation: the sample is "
                              "cut to eval_max_scores // items, so the evaluation's cost does not grow with the "
                              "catalogue (20000 events up to 5000 items by default).", lo=1, hi=10**12)
    maintenance_every: int = _f(50, "Every N batches: a maintenance pass over the factors and events tables: "
                                "bin-pack the small files written since the last pass, rewrite the factors to one "
                                "row per key when the superseded row versions outnumber "
                                "stream.compaction_garbage_ratio x the model's rows, then VACUUM the factors.",
                                lo=1, hi=10**6)
    compaction_garbage_ratio: float = _f(1.0, "Superseded factor row versions per model row that trigger the full "
                                         "rewrite of a maintenance pass (the table holds at most 1 + this many row "
                                         "versions per model row; a rewrite follows at least that many changed rows).",
                                         lo=0.0, hi=1e6)
    small_file_mb: int = _f(64, "Maintenance bin-packs only the files smaller than this (the batches' appends); "
                            "bigger ones, from the last rewrite, are left alone.", lo=1, hi=10**5)
    heartbeat_seconds: float = _f(60.0, "A continuous stream that receives no events logs an idle line this "
                                  "often (0 = never).", lo=0.0, hi=86400.0)
    max_abs_factor: float = _f(1e3, "Divergence guard: a batch whose changed factor rows hold a non-finite value "
                                "or a vector component or bias larger than this in magnitude is rejected: none "
                                "of its factor rows is written, the metadata records the offsets and an alert.",
                                lo=1e-3, hi=1e30)
    vacuum_retention_hours: float = _f(168.0, "Maintenance VACUUMs the factors table keeping this many hours "
                                       "of history: rollback works within this window.", lo=0.0, hi=87600.0)
    metrics_port: int = _f(0, "Port of the trainer's Prometheus endpoint (/metrics: the figures of every metrics row "
                           "and the query's progress, docs/monitoring.md); 0 = off.", lo=0, hi=65535)
    metrics_address: str = _f("0.0.0.0", "Address the Prometheus endpoint listens on (127.0.0.1: this host only).",
                              pattern=r"^[A-Za-z0-9.:\[\]-]+$")
    mlflow_interval_s: float = _f(60.0, "With retrain.mlflow_tracking_uri set, the stream's MLflow run (one per query) "
                                  "gets a batch's metrics at most once per this many seconds (and the last batch "
                                  "when the query stops); 0 = every batch.", lo=0.0, hi=86400.0)


POLICIES = ("replace", "warm-start", "score-blend")


@dataclass(frozen=True)
class RetrainConfig:
    policy: str = _f("replace", "How the batch model enters the live one. replace: live factors := the ALS "
                     "snapshot, then the events after the cut-off are replayed through the DSGD step; warm-start: "
                     "retrain.warm_start_epochs DSGD epochs over the history up to the cut-off, starting from "
                     "the online factors (no ALS); score-blend: the live factors are kept and serving scores "
                     "alpha*batch + (1-alpha)*online.", choices=POLICIES)
    alpha: float = _f(0.5, "Weight of the batch model's score under the score-blend policy.", lo=0.0, hi=1.0)
    als_max_iter: int = _f(10, "ALS maxIter (alternating iterations).", lo=1, hi=10000)
    als_reg: float = _f(0.1, "ALS regParam (L2 regularisation).", lo=0.0, hi=1000.0)
    als_alpha: float = _f(1.0, "ALS alpha: confidence scale of implicit preferences (implicit models only).",
                          lo=0.0, hi=1e9)
    als_implicit_prefs: str = _f("auto", "ALS implicitPrefs. auto: true for model.kind = implicit (the ALS input "
                                 "is the number of events per user-item pair), false for explicit (the latest "
                                 "rating per pair).", choices=("auto", "true", "false"))
    als_center: bool = _f(True, "Explicit models: fit ALS to rating - mean and store the mean as the model's "
                          "global mean mu (the DSGD prediction is mu + b_u + b_i + p.q); false: fit raw ratings, "
                          "mu = 0.")
    als_blocks: int = _f(0, "ALS numUserBlocks and numItemBlocks; 0 = the MLlib default (10).", lo=0, hi=100000)
    checkpoint_interval: int = _f(10, "ALS checkpointInterval; the checkpoint directory is "
                                  "<app.checkpoint_root>/als.", lo=1, hi=10000)
    window_days: float = _f(0.0, "Fit ALS on the events of the last window_days before the cut-off only (users "
                            "and items absent from the window are left to the online model and the popularity "
                            "fallback); 0 = the whole history. For streams where users come and go.",
                            lo=0.0, hi=36500.0)
    half_life_days: float = _f(0.0, "Implicit ALS: an event's weight in its (user, item) preference is "
                               "0.5 ** (age at the cut-off / half_life_days), so old events count less; "
                               "0 = no decay (every event counts 1).", lo=0.0, hi=36500.0)
    warm_start_epochs: int = _f(3, "DSGD epochs over the history for the warm-start policy.", lo=0, hi=10000)
    warm_start_lr: float = _f(0.05, "Learning rate of the warm-start epochs (the replay of the replace policy "
                              "uses model.lr, like the stream).", lo=0.0, hi=100.0)
    swap_retries: int = _f(20, "Attempts of the atomic swap when the stream commits in between.", lo=1, hi=10000)
    top_k: int = _f(10, "Recommendations per user of the top-K export and the default of `dsgd recommend -k`.",
                    lo=1, hi=100000)
    filter_seen: bool = _f(True, "Leave the items a user already interacted with out of the recommendations.")
    mlflow_tracking_uri: str = _f("", "MLflow tracking URI (e.g. sqlite:///mlflow.db, http://host:5000): every `dsgd "
                                  "retrain` becomes an MLflow run and the stream logs one run per query (needs "
                                  "`pip install dsgd-stream[mlflow]`); empty = off.")
    mlflow_experiment: str = _f("dsgd", "MLflow experiment of those runs.", pattern=r"^[A-Za-z0-9_./-]+$")


@dataclass(frozen=True)
class ServeConfig:
    host: str = _f("127.0.0.1", "Address `dsgd serve` binds (loopback; 0.0.0.0 only behind a token or a proxy).",
                   pattern=r"^[A-Za-z0-9.:_-]+$")
    port: int = _f(8080, "HTTP port of `dsgd serve`; 0 = pick a free port (printed at start).", lo=0, hi=65535)
    token: str = _f("", "Bearer token every request but /health and /ready must send (Authorization: Bearer ...). "
                    "Empty: the environment variable DSGD_SERVE_TOKEN, else no authentication. Never logged.",
                    secret=True)
    warehouse: str = _f("", "Root URI of the Delta tables as the server's native reader (deltalake) spells it "
                        "(e.g. s3://bucket/wh for Spark's s3a://bucket/wh); empty: app.warehouse.")
    storage_options: dict = _f({}, "Object-store settings of the native Delta reader (deltalake storage_options, "
                               "e.g. {\"AWS_REGION\" = \"eu-west-1\"}).", secret=True)
    poll_interval_s: float = _f(1.0, "Seconds between polls of the factors, events and items tables' versions; a new "
                                "version is loaded beside the served one and swapped in atomically.", lo=0.05, hi=3600.0)
    default_k: int = _f(10, "Recommendations per user when a request gives no k.", lo=1, hi=100000)
    max_k: int = _f(1000, "Largest k a request may ask for (larger: 400 naming k).", lo=1, hi=100000)
    exclude_seen: bool = _f(True, "Default of the exclude_seen request parameter: leave out the user's items in "
                            "`events` (and, for fold-in, the items of the request's events).")
    seen_days: float = _f(0.0, "Seen sets hold the events of the last N days (event_date partitions); 0 = all.",
                          lo=0.0, hi=36500.0)
    seen_max_pairs: int = _f(50_000_000, "Memory bound of the seen sets: distinct (user, item) pairs held "
                             "(16 bytes each); pairs beyond it are dropped, logged and counted.", lo=0, hi=10**11)
    unavailable_items: list = _f([], "Item ids never served (e.g. [\"sku-9\", \"sku-12\"]).")
    items_table: str = _f("", "Optional Delta table (path or URI) of item availability, columns item (string) and "
                          "available (boolean): items with available = false are never served; re-read on change.")
    max_body_bytes: int = _f(1_048_576, "Largest request body (larger: 413 naming the body).", lo=1024, hi=10**9)
    max_batch_users: int = _f(1000, "Most users of one POST /recommendations.", lo=1, hi=10**6)
    max_events: int = _f(1000, "Most events of one fold-in request.", lo=1, hi=10**6)
    foldin_method: str = _f("ls", "Fold-in rule of the online model: ls (closed-form least squares, measured best) or "
                            "sgd (the model's SGD rule, user side only).", choices=("ls", "sgd"))
    foldin_prior: float = _f(0.1, "ls fold-in: pull towards the user's current vector.", lo=0.0, hi=1e6)
    foldin_new_user_min_events: int = _f(3, "A user the model does not know is folded in from this many events; "
                                         "fewer get the popularity fallback.", lo=1, hi=10**6)
    threads: int = _f(4, "Request threads scoring in parallel (numpy releases the GIL; one BLAS thread each).",
                      lo=1, hi=256)
    workers: int = _f(1, "Server processes on the one port (each loads the model: memory times this; uvicorn's "
                      "supervisor restarts a dead one; counters and histograms of /metrics are summed over them).",
                      lo=1, hi=64)
    screen_min_items: int = _f(50_000, "Online models with at least this many items screen a lone user's top-K with "
                               "an int8 copy of the item factors (a quarter of their memory more; a bound keeps every "
                               "top-K item) and score the few candidates exactly (scores equal to float32 rounding); "
                               "0 = always.",
                               lo=0, hi=10**12)
