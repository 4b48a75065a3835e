"""The event contract in Spark: Kafka records -> valid events and quarantined records, in one pass.

The contract itself (what a valid record is, which reason a bad one gets) is defined by the reference
:func:`dsgd.core.contract.parse_event`; :func:`parse_events` is the same function as a chain of Spark
expressions, and property tests (``tests/spark/test_contract_fuzz.py``) check that the two agree on
thousands of random and adversarial records in one Spark job.

How it maps onto Spark: the value is parsed once with ``try_parse_json`` (strict JSON, a null on any
syntax error, duplicate key, nesting over 1000 or number over 1000 digits) after wrapping it in ``[``
``]``, so trailing content (``{..} x``, ``{..}{..}``) fails the parse or shows as a second element.
The JSON types come from ``schema_of_variant`` of each field, so a string id ``"true"`` and a boolean
``true`` stay apart. What the variant cannot see is checked on the text: invalid UTF-8
(``is_valid_utf8``), escaped lone surrogates (a regex, only when the text holds ``\\ud``), and the
nesting limit of 64 (a ``from_json`` with ``maxNestingDepth``, only when the text holds more than 64
brackets).

Every record that breaks the contract is kept, not dropped: it goes to the ``quarantine`` table with the
raw key and value bytes, topic/partition/offset and one ``reason`` out of :data:`REASONS`.
"""

from __future__ import annotations

import functools

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.core.contract import (
    CONTROL_CHARS,
    MAX_DEPTH,
    MAX_ID_CHARS,
    MAX_TS_MS,
    MAX_VALUE_BYTES,
    MIN_TS_MS,
    REASONS,
    RFC3339,
    WHITESPACE_CHARS,
)

__all__ = ["REASONS", "QUARANTINE_COLUMNS", "parse_events", "raw_of_quarantined_only", "valid_events", "quarantined"]

#: Columns of the ``quarantine`` table.
QUARANTINE_COLUMNS = ["raw_key", "raw_value", "topic", "partition", "offset", "kafka_ts", "reason"]

_NUMBER_TYPES = ("BIGINT", "DOUBLE")  # plus DECIMAL(p,s)
_CONTROL = "[" + "".join(f"\\u{ord(c):04x}" for c in CONTROL_CHARS) + "]"  # a Java regex class
# Escaped backslashes, then escaped surrogate pairs, are cut out; a surrogate escape left is a lone one.
_ESCAPED_BACKSLASH = r"\\\\"
_SURROGATE_PAIR = r"\\u[dD][89abAB][0-9a-fA-F]{2}\\u[dD][c-fC-F][0-9a-fA-F]{2}"
_SURROGATE = r"\\u[dD][89a-fA-F][0-9a-fA-F]{2}"


def _type(v: Column) -> Column:
    """The JSON type of a variant: STRING, BIGINT, DECIMAL(p,s), DOUBLE, BOOLEAN, OBJECT<..>, ARRAY<..>,
    VOID (JSON null); SQL null when the field is absent."""
    return F.call_function("schema_of_variant", v)


def _text(v: Column) -> Column:
    return F.call_function("try_variant_get", v, F.lit("$"), F.lit("string"))


def _json_ok(text: Column, doc: Column) -> Column:
    """One JSON object and nothing else, with the checks the variant parse does not make."""
    lone_surrogate = F.when(
        text.contains("\\ud") | text.contains("\\uD"),
        F.regexp_replace(F.regexp_replace(text, _ESCAPED_BACKSLASH, ""), _SURROGATE_PAIR, "").rlike(_SURROGATE),
    ).otherwise(False)
    size = F.octet_length(text)
    brackets = size - F.octet_length(F.replace(F.replace(text, F.lit("["), F.lit("")), F.lit("{"), F.lit("")))
    too_deep = F.when(
        (size > 2 * MAX_DEPTH) & (brackets > MAX_DEPTH),
        F.from_json(text, "_c string", {"maxNestingDepth": str(MAX_DEPTH), "columnNameOfCorruptRecord": "_c",
                                        "mode": "PERMISSIVE"}).getField("_c").isNotNull(),
    ).otherwise(False)
    # [T] stops at the first "]" that closes it: T = {..}] x would pass, so a T with a "]" is also
    # checked inside an object, {"": T}, which such a "]" breaks.
    closed = F.when(text.contains("]"), F.call_function(
        "json_object_keys", F.concat(F.lit('{"":'), text, F.lit("}"))).isNotNull()).otherwise(True)
    one_object = (doc.isNotNull() & F.call_function("variant_get", doc, F.lit("$[1]")).isNull()
                  & (text.startswith("{") | text.rlike(r"^[ \t\n\r]*\{")) & closed)
    return F.call_function("is_valid_utf8", text) & one_object & ~lone_surrogate & ~too_deep


def _id_checks(v: Column, may_hold_control: Column) -> tuple[Column, Column, Column]:
    """(canonical text, missing, bad) of an id variant. ``may_hold_control`` is false when the record's
    text cannot hold a control character in a string (no escape, no DEL, ASCII only): the regex is skipped."""
    kind, text = _type(v), _text(v)
    trimmed = F.btrim(text, F.lit(WHITESPACE_CHARS))  # looks at the ends only
    missing = v.isNull() | (kind == "VOID") | ((kind == "STRING") & (F.octet_length(trimmed) == 0))
    control = F.when(may_hold_control, text.rlike(_CONTROL)).otherwise(False)
    bad = (~kind.isin("STRING", "BIGINT") | (F.length(text) > MAX_ID_CHARS)
           | (F.octet_length(trimmed) != F.octet_length(text)) | control)
    return text, missing, bad


def _rfc3339_ms(s: Column) -> Column:
    """Epoch ms of an RFC 3339 string, null when it is not one (the same arithmetic as the reference)."""
    def part(pos: int, n: int) -> Column:
        return F.substring(s, pos, n).try_cast("bigint")

    days = F.call_function("unix_date", F.substring(s, 1, 10).try_cast("date")).cast("bigint")
    frac = F.rpad(F.regexp_extract(s, r"\.([0-9]{1,3})", 1), 3, "0").try_cast("bigint")
    utc = F.substring(s, -1, 1).isin("Z", "z")
    offset_min = F.when(utc, F.lit(0)).otherwise(
        F.when(F.substring(s, -6, 1) == "+", 1).otherwise(-1)
        * (F.substring(s, -5, 2).try_cast("bigint") * 60 + F.substring(s, -2, 2).try_cast("bigint")))
    ms = ((days * 24 + part(12, 2)) * 60 + part(15, 2)) * 60_000 + part(18, 2) * 1000 + frac - offset_min * 60_000
    return F.when(s.rlike(f"^(?:{RFC3339})\\z"), ms)


def parse_events(kafka_df: DataFrame, *, explicit: bool, rating_min: float, rating_max: float) -> DataFrame:
    """Kafka source rows -> one row per record with the parsed event and ``reason`` (null when valid).

    Output columns: user, item, rating (float, null when absent), ts (epoch ms), seq, event_date,
    plus the raw record (raw_key, raw_value, topic, partition, offset, kafka_ts) and ``reason``.
    ``seq`` = partition << 40 | offset: a stable tie-breaker for events with the same ts.
    The result equals :func:`dsgd.core.contract.parse_event` on every record.
    """
    df = kafka_df
    app = kafka_df.sparkSession.sparkContext.applicationId
    for columns in _parse_projections(app, bool(explicit), float(rating_min), float(rating_max)):
        df = df.select(*columns)
    return df


@functools.lru_cache(maxsize=8)
def _parse_projections(_app: str, explicit: bool, rating_min: float, rating_max: float) -> tuple[tuple[Column, ...], ...]:
    """The parser's projections, built once per Spark application and parameters.

    The expressions name their inputs by column, not by DataFrame, so every micro-batch reuses them:
    building the ~200 expressions through py4j costs about as much per batch as running them
    (bench/RESULTS.md). ``_app`` keys the cache to the running SparkContext, whose JVM holds them.
    """
    text = F.col("value").cast("string")
    read = (F.col("key").alias("raw_key"), F.col("value").alias("raw_value"), F.col("topic"), F.col("partition"),
            F.col("offset"), F.col("timestamp").alias("kafka_ts"), text.alias("_text"),
            F.call_function("try_parse_json", F.concat(F.lit("["), text, F.lit("]"))).alias("_doc"))
    doc, text = F.col("_doc"), F.col("_text")

    def field(name: str) -> Column:
        return F.call_function("variant_get", doc, F.lit(f"$[0].{name}")).alias(f"_{name}")

    fields = (F.col("*"), _json_ok(text, doc).alias("_json_ok"), field("user"), field("item"), field("rating"),
              field("ts"))
    # a control character in a valid JSON string is escaped (\n, \u0000), or DEL, or a non-ASCII C1
    may_hold_control = text.contains("\\") | text.contains("\x7f") | (F.octet_length(text) != F.length(text))
    user_text, user_missing, user_bad = _id_checks(F.col("_user"), may_hold_control)
    item_text, item_missing, item_bad = _id_checks(F.col("_item"), may_hold_control)
    r, t = F.col("_rating"), F.col("_ts")
    r_kind, t_kind = _type(r), _type(t)
    has_rating = r.isNotNull() & (r_kind != "VOID")
    is_number = r_kind.isin(*_NUMBER_TYPES) | r_kind.startswith("DECIMAL")
    rating = F.when(is_number, _text(r).try_cast("double"))
    ts_ms = (F.when(t.isNull() | (t_kind == "VOID"), F.unix_millis(F.col("kafka_ts")))
             .when(t_kind == "BIGINT", F.call_function("try_variant_get", t, F.lit("$"), F.lit("bigint")))
             .when(t_kind == "STRING", _rfc3339_ms(_text(t))))
    typed = (F.col("*"), user_text.alias(C.USER), item_text.alias(C.ITEM), rating.alias("_r"), ts_ms.alias(C.TS),
             user_missing.alias("_um"), user_bad.alias("_ub"), item_missing.alias("_im"), item_bad.alias("_ib"),
             has_rating.alias("_hr"))
    raw, r, ts = F.col("raw_value"), F.col("_r"), F.col(C.TS)
    size = F.length(raw)
    has_rating = F.col("_hr")
    checks = {
        "empty_value": raw.isNull() | (size == 0),
        "value_too_large": size > MAX_VALUE_BYTES,
        "malformed_json": ~F.col("_json_ok"),
        "missing_user": F.col("_um"),
        "missing_item": F.col("_im"),
        "bad_user": F.col("_ub"),
        "bad_item": F.col("_ib"),
        "missing_rating": F.lit(explicit) & ~has_rating,
        "bad_rating": has_rating & r.isNull(),
        "non_finite_rating": has_rating & F.abs(r.cast("float")).eqNullSafe(float("inf")),
        "rating_out_of_range": F.lit(explicit) & ((r < rating_min) | (r > rating_max)),
        "bad_ts": ts.isNull() | (ts < MIN_TS_MS) | (ts > MAX_TS_MS),
    }
    assert list(checks) == list(REASONS), "the Spark checks must follow the reference's order"
    reason = F.lit(None).cast("string")
    for name in reversed(REASONS):
        reason = F.when(F.coalesce(checks[name], F.lit(False)), F.lit(name)).otherwise(reason)
    # An optimizer barrier: a filter on ``reason`` (valid_events, quarantined) would otherwise be pushed
    # below the projections, inlining the JSON parse into every check (6.3 s instead of 0.6 s per 250k
    # records, bench/RESULTS.md). A condition on the non-deterministic partition id (always true) keeps
    # the filter above them.
    reason = F.when(F.spark_partition_id() >= 0, reason)
    seq = F.shiftleft(F.col("partition").cast("long"), 40) + F.col("offset")
    out = (F.col(C.USER), F.col(C.ITEM), r.cast("float").alias(C.RATING), ts, seq.alias(C.SEQ),
           F.when(ts.between(MIN_TS_MS, MAX_TS_MS), F.to_date(F.timestamp_millis(ts))).alias(C.EVENT_DATE),
           *(F.col(c) for c in ("raw_key", "raw_value", "topic", "partition", "offset", "kafka_ts")),
           reason.alias("reason"))
    return read, fields, typed, out


def raw_of_quarantined_only(parsed: DataFrame) -> DataFrame:
    """``parsed`` with the raw key and value bytes kept only on quarantined rows (null on valid ones).

    What the trainer caches for a batch: the quarantine needs the raw bytes, the valid events have
    their parsed fields, so caching every record's bytes would only cost memory and time.
    """
    bad = F.col("reason").isNotNull()
    return parsed.select(*(F.when(bad, F.col(c)).alias(c) if c in ("raw_key", "raw_value") else F.col(c)
                           for c in parsed.columns))


def valid_events(parsed: DataFrame) -> DataFrame:
    """The valid rows as events: user, item, rating, ts, seq, event_date."""
    return parsed.where(F.col("reason").isNull()).select(C.USER, C.ITEM, C.RATING, C.TS, C.SEQ, C.EVENT_DATE)


def quarantined(parsed: DataFrame) -> DataFrame:
    """The rejected rows with their raw bytes, position and reason."""
    return parsed.where(F.col("reason").isNotNull()).select(*QUARANTINE_COLUMNS)
