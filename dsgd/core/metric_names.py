"""Names of the Prometheus metrics the project exposes, declared once for every process that exports them.

The streaming trainer (``stream.metrics_port``, :mod:`streaming.monitoring`) and the serving process
(``dsgd serve``) both expose ``/metrics``; where they report the same thing (the model version they
hold, its age) they use the same name from here, so one dashboard and one alert rule cover both.
docs/monitoring.md lists every metric with its meaning and example alert rules.

Conventions (https://prometheus.io/docs/practices/naming/): base units (seconds, not milliseconds),
the ``dsgd_`` prefix, and counters named WITHOUT the ``_total`` suffix: the Prometheus client appends it
on exposition (``dsgd_stream_batches`` is scraped as ``dsgd_stream_batches_total``), and its text parser
(``prometheus_client.parser.text_string_to_metric_families``) names the family without it again.

Pure constants: this module imports nothing.
"""

# ---- shared by every process that holds a model (stream trainer, server) -----------------------------
#: gauge: Delta version of the ``factors`` table the process's model is (stream: the version its last
#: commit created or read; server: the version it serves).
MODEL_VERSION = "dsgd_model_version"
#: gauge: Unix time (seconds) when that version was committed or first seen by the process.
MODEL_COMMIT_TIMESTAMP = "dsgd_model_commit_timestamp_seconds"
#: gauge: seconds since that version was committed or first seen (computed at scrape time).
MODEL_AGE_SECONDS = "dsgd_model_age_seconds"
#: gauge, always 1: labels ``version`` (the package version) and ``process`` (``stream`` | ``serve``).
BUILD_INFO = "dsgd_build_info"

# ---- the streaming trainer: one update per micro-batch, from its ``metrics`` row ----------------------
STREAM_BATCHES = "dsgd_stream_batches"  # counter: micro-batches recorded
STREAM_ROWS_IN = "dsgd_stream_rows_in"  # counter: Kafka records read
STREAM_ROWS_VALID = "dsgd_stream_rows_valid"  # counter: valid events appended to ``events``
STREAM_ROWS_QUARANTINED = "dsgd_stream_rows_quarantined"  # counter, label ``reason``: records quarantined
STREAM_RECORDS_LOST = "dsgd_stream_records_lost"  # counter: records deleted from Kafka before they were read
STREAM_ALERTS = "dsgd_stream_alerts"  # counter: batches that raised an alert (data loss, divergence)
STREAM_REJECTED = "dsgd_stream_batches_rejected"  # counter: batches rejected by the divergence guard
STREAM_REPLAYED = "dsgd_stream_batches_replayed"  # counter: batches replayed after a crash
STREAM_BATCH_DURATION = "dsgd_stream_batch_duration_seconds"  # histogram: wall time of a batch
STREAM_LAST_BATCH_ID = "dsgd_stream_last_batch_id"  # gauge: id of the last recorded batch
STREAM_LAST_BATCH_TIMESTAMP = "dsgd_stream_last_batch_timestamp_seconds"  # gauge: Unix time of the last batch
STREAM_BATCH_SECONDS = "dsgd_stream_batch_seconds"  # gauge, label ``phase``: last batch's seconds per phase
STREAM_DCG = "dsgd_stream_dcg"  # gauge: last batch's prequential DCG@K of the model
STREAM_DCG_POPULARITY = "dsgd_stream_dcg_popularity"  # gauge: the same for the popularity baseline
STREAM_DCG_EVENTS = "dsgd_stream_dcg_events"  # gauge: events the last DCG was computed on
STREAM_LOSS = "dsgd_stream_loss"  # gauge: last batch's training loss
STREAM_LEARNING_RATE = "dsgd_stream_learning_rate"  # gauge: last batch's learning rate
STREAM_ROWS_PER_SECOND = "dsgd_stream_rows_per_second"  # gauge: last batch's throughput
STREAM_LAG_RECORDS = "dsgd_stream_consumer_lag_records"  # gauge: records left in the topic (-1: unknown)
STREAM_LAG_SECONDS = "dsgd_stream_event_lag_seconds"  # gauge: wall clock minus newest event time (-1: none)
STREAM_FACTOR_ROWS = "dsgd_stream_factor_rows_touched"  # gauge, label ``side``: factor rows the batch updated
STREAM_NEW_IDS = "dsgd_stream_new_ids"  # gauge, label ``side``: ids seen for the first time

# ---- the streaming query itself, from Spark's StreamingQueryListener ---------------------------------
QUERY_ACTIVE = "dsgd_query_active"  # gauge: 1 while the trainer's query runs
QUERY_BATCH_ID = "dsgd_query_batch_id"  # gauge: batch id of the last progress event
QUERY_INPUT_ROWS = "dsgd_query_input_rows"  # counter: input rows over the progress events
QUERY_INPUT_ROWS_PER_SECOND = "dsgd_query_input_rows_per_second"  # gauge: Spark's input rate
QUERY_PROCESSED_ROWS_PER_SECOND = "dsgd_query_processed_rows_per_second"  # gauge: Spark's processing rate
QUERY_DURATION_SECONDS = "dsgd_query_duration_seconds"  # gauge, label ``operation``: durationMs / 1000
QUERY_OFFSETS_BEHIND = "dsgd_query_offsets_behind_latest"  # gauge: Kafka source's maxOffsetsBehindLatest
QUERY_TERMINATIONS = "dsgd_query_terminations"  # counter, label ``outcome`` (``stopped`` | ``failed``)

# ---- the model server (``dsgd serve``, :mod:`dsgd.serve.metrics`) -------------------------------------
SERVE_REQUESTS = "dsgd_serve_requests"  # counter, labels ``endpoint`` (route template), ``status``
SERVE_REQUEST_SECONDS = "dsgd_serve_request_seconds"  # histogram, label ``endpoint``: request latency
SERVE_RECOMMENDATIONS = "dsgd_serve_recommendations"  # counter, label ``source``: users answered
SERVE_RELOADS = "dsgd_serve_reloads"  # counter, labels ``table`` (factors, events, items), ``kind``
SERVE_RELOAD_FAILURES = "dsgd_serve_reload_failures"  # counter, label ``table``: failed loads (old state kept)
SERVE_RELOAD_SECONDS = "dsgd_serve_reload_seconds"  # histogram, label ``table``: seconds per load
SERVE_MODEL_ITEMS = "dsgd_serve_model_items"  # gauge: items of the served model
SERVE_MODEL_USERS = "dsgd_serve_model_users"  # gauge: users of the served model
SERVE_SEEN_PAIRS = "dsgd_serve_seen_pairs"  # gauge: (user, item) pairs in the seen sets
SERVE_SEEN_BYTES = "dsgd_serve_seen_bytes"  # gauge: bytes the seen sets hold
SERVE_SEEN_DROPPED = "dsgd_serve_seen_dropped_pairs"  # counter: seen pairs over serve.seen_max_pairs
SERVE_PRODUCTS = "dsgd_serve_score_products"  # counter: matrix products scoring concurrent one-user requests
SERVE_PRODUCT_USERS = "dsgd_serve_score_product_users"  # counter: users those products scored

#: Histogram buckets (seconds) of :data:`SERVE_REQUEST_SECONDS` and :data:`SERVE_RELOAD_SECONDS`.
SERVE_LATENCY_BUCKETS = (0.0005, 0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0)
SERVE_RELOAD_BUCKETS = (0.01, 0.05, 0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0, 60.0)

#: Histogram buckets (seconds) of :data:`STREAM_BATCH_DURATION`: around a few-second trigger.
BATCH_DURATION_BUCKETS = (0.5, 1.0, 2.0, 3.0, 5.0, 7.5, 10.0, 15.0, 30.0, 60.0, 120.0, 300.0)
