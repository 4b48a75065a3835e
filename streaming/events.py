"""The event contract on the wire, and its validation into valid events and quarantined records.

Wire format: a Kafka record whose value is a JSON object

``{"user": <id>, "item": <id>, "rating": <number>?, "ts": <epoch ms number | ISO-8601 string>?}``

- ``user`` / ``item``: integer or string (taken by their JSON text: ``7`` and ``"7"`` are the same id);
  1..512 characters; objects, arrays and ``null`` are rejected.
- ``rating``: optional for implicit models (ignored if present but must be a finite number), required for
  explicit models and within ``[model.rating_min, model.rating_max]``.
- ``ts``: optional; epoch milliseconds, or an ISO-8601 string (``2024-01-02T03:04:05Z``); when absent the
  Kafka record timestamp is used. Must fall within years 1970..2200.
- Unknown fields are ignored.

Every record that breaks the contract is kept, not dropped: it goes to the ``quarantine`` table with the
raw key and value bytes, topic/partition/offset and one ``reason`` out of :data:`REASONS`.
"""

from __future__ import annotations

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from dsgd.core import columns as C

MAX_VALUE_BYTES = 1 << 20
MAX_ID_CHARS = 512
MIN_TS_MS = 0
MAX_TS_MS = 7_258_118_400_000  # 2200-01-01

#: Quarantine reasons, checked in this order (the first that applies is recorded).
REASONS = {
    "empty_value": "the record has no value",
    "value_too_large": f"the value is larger than {MAX_VALUE_BYTES} bytes",
    "malformed_json": "the value is not a JSON object",
    "missing_user": "no user id (absent, null or empty)",
    "missing_item": "no item id (absent, null or empty)",
    "bad_user": f"the user id is an object/array or longer than {MAX_ID_CHARS} characters",
    "bad_item": f"the item id is an object/array or longer than {MAX_ID_CHARS} characters",
    "missing_rating": "an explicit model needs a rating",
    "bad_rating": "the rating is not a number",
    "non_finite_rating": "the rating is NaN or infinite",
    "rating_out_of_range": "the rating is outside [model.rating_min, model.rating_max]",
    "bad_ts": "ts is neither epoch milliseconds nor an ISO-8601 time within 1970..2200",
}

_WIRE_SCHEMA = "user string, item string, rating string, ts string, _corrupt string"

#: Columns of the ``quarantine`` table.
QUARANTINE_COLUMNS = ["raw_key", "raw_value", "topic", "partition", "offset", "kafka_ts", "reason"]


def _id_problem(col: Column) -> Column:
    text = F.trim(col)
    return (text.startswith("{") | text.startswith("[") | (F.length(col) > MAX_ID_CHARS))


def parse_events(kafka_df: DataFrame, *, explicit: bool, rating_min: float, rating_max: float) -> DataFrame:
    """Kafka source rows -> one row per record with the parsed event and ``reason`` (null when valid).

    Output columns: user, item, rating (float, null when absent), ts (epoch ms), seq, event_date,
    plus the raw record (raw_key, raw_value, topic, partition, offset, kafka_ts) and ``reason``.
    ``seq`` = partition << 40 | offset: a stable tie-breaker for events with the same ts.
    """
    raw = F.col("value")
    text = raw.cast("string")
    parsed = F.from_json(text, _WIRE_SCHEMA, {"columnNameOfCorruptRecord": "_corrupt", "mode": "PERMISSIVE"})
    df = kafka_df.select(
        F.col("key").alias("raw_key"), raw.alias("raw_value"), "topic", "partition", "offset",
        F.col("timestamp").alias("kafka_ts"), parsed.alias("e"))
    rating_txt = F.regexp_replace(F.col("e.rating"), r'^"|"$', "")
    rating = F.expr("try_cast(rating_txt AS DOUBLE)")
    ts_txt = F.regexp_replace(F.col("e.ts"), r'^"|"$', "")
    numeric_ts = ts_txt.rlike(r"^-?\d+(\.\d+)?([eE][+-]?\d+)?$")
    ts_num = F.expr("try_cast(ts_txt AS DOUBLE)")
    ts_iso = F.unix_millis(F.expr("try_to_timestamp(ts_txt)"))
    in_range = ts_num.between(MIN_TS_MS, MAX_TS_MS)  # cast only what fits: a huge ts must not kill the batch
    ts_ms = (F.when(F.col("e.ts").isNull(), F.unix_millis(F.col("kafka_ts")))
             .when(numeric_ts, F.when(in_range, ts_num.cast("long")))
             .otherwise(ts_iso))
    df = df.withColumn("rating_txt", rating_txt).withColumn("ts_txt", ts_txt)
    df = df.select("*", F.col("e.user").alias(C.USER), F.col("e.item").alias(C.ITEM),
                   rating.alias("_rating"), ts_ms.alias(C.TS))
    raw = F.col("raw_value")
    size = F.length(raw)
    user, item, r = F.col(C.USER), F.col(C.ITEM), F.col("_rating")
    has_rating = F.col("e.rating").isNotNull()
    checks = [
        (raw.isNull() | (size == 0), "empty_value"),
        (size > MAX_VALUE_BYTES, "value_too_large"),
        (F.col("e").isNull() | F.col("e._corrupt").isNotNull(), "malformed_json"),
        (user.isNull() | (F.trim(user) == ""), "missing_user"),
        (item.isNull() | (F.trim(item) == ""), "missing_item"),
        (_id_problem(user), "bad_user"),
        (_id_problem(item), "bad_item"),
        (F.lit(explicit) & ~has_rating, "missing_rating"),
        (has_rating & r.isNull(), "bad_rating"),
        (has_rating & (F.isnan(r) | (F.abs(r) == float("inf"))), "non_finite_rating"),
        (F.lit(explicit) & ((r < rating_min) | (r > rating_max)), "rating_out_of_range"),
        (F.col(C.TS).isNull() | (F.col(C.TS) < MIN_TS_MS) | (F.col(C.TS) > MAX_TS_MS), "bad_ts"),
    ]
    reason = F.lit(None).cast("string")
    for cond, name in reversed(checks):
        reason = F.when(F.coalesce(cond, F.lit(False)), F.lit(name)).otherwise(reason)
    # An optimizer barrier: a filter on ``reason`` (valid_events, quarantined) would otherwise be pushed
    # below the projections, inlining the JSON parse into every check (6.3 s instead of 0.6 s per 250k
    # records, bench/RESULTS.md). A condition on the non-deterministic partition id (always true) keeps
    # the filter above them.
    reason = F.when(F.spark_partition_id() >= 0, reason)
    seq = F.shiftleft(F.col("partition").cast("long"), 40) + F.col("offset")
    return df.select(
        user, item, r.cast("float").alias(C.RATING), C.TS, seq.alias(C.SEQ),
        F.when(F.col(C.TS).between(MIN_TS_MS, MAX_TS_MS),
               F.to_date(F.timestamp_millis(F.col(C.TS)))).alias(C.EVENT_DATE),
        "raw_key", "raw_value", "topic", "partition", "offset", "kafka_ts", reason.alias("reason"))


def valid_events(parsed: DataFrame) -> DataFrame:
    """The valid rows as events: user, item, rating, ts, seq, event_date."""
    return parsed.where(F.col("reason").isNull()).select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ, C.EVENT_DATE)


def quarantined(parsed: DataFrame) -> DataFrame:
    """The rejected rows with their raw bytes, position and reason."""
    return parsed.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
