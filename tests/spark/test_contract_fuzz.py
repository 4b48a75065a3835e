"""The Spark parser (streaming.events.parse_events) against the reference (dsgd.core.contract.parse_event):
the same valid event or the same reason on every record of a seeded fuzz corpus plus the hand-picked
records, for an implicit and an explicit model, in one Spark job."""

from __future__ import annotations

import datetime

import pandas as pd
import pytest

from dsgd.core.contract import REASONS, Event, parse_event
from streaming.events import parse_events
from tests.contract_records import EDGE_CASES, FUZZ_EXAMPLES, KAFKA_TS_MS, RATING_MAX, RATING_MIN, corpus

pytestmark = pytest.mark.spark

SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def _kafka_rows(spark, values: list[bytes | None]):
    """A frame shaped like the Kafka source's, one row per value, offset = position in ``values``."""
    kafka_ts = datetime.datetime.fromtimestamp(KAFKA_TS_MS / 1000, tz=datetime.UTC)
    pdf = pd.DataFrame({"key": [b"k"] * len(values), "value": values, "topic": "t", "partition": 0,
                        "offset": range(len(values)), "timestamp": kafka_ts})
    return spark.createDataFrame(pdf, SCHEMA)


def _spark_result(row) -> Event | str:
    if row.reason is not None:
        return row.reason
    return Event(row.user, row.item, row.rating, row.ts)


def test_spark_parser_agrees_with_the_reference_on_every_fuzzed_record(spark):
    from pyspark.sql import functions as F

    values = [v for v, _, _ in EDGE_CASES] + corpus(FUZZ_EXAMPLES)
    kafka = _kafka_rows(spark, values)
    both = None
    for explicit in (False, True):
        parsed = parse_events(kafka, explicit=explicit, rating_min=RATING_MIN, rating_max=RATING_MAX)
        parsed = parsed.select("offset", "user", "item", "rating", "ts", "event_date", "reason",
                               F.lit(explicit).alias("explicit"))
        both = parsed if both is None else both.unionByName(parsed)
    sc = spark.sparkContext
    sc.setJobGroup("contract-fuzz", "the fuzz corpus, both models")
    try:
        rows = both.collect()  # one Spark job for every record and both models
    finally:
        sc.setLocalProperty("spark.jobGroup.id", None)
    assert len(rows) == 2 * len(values)

    mismatches, seen = [], {False: {}, True: {}}
    for row in rows:
        value = values[row.offset]
        want = parse_event(value, kafka_ts_ms=KAFKA_TS_MS, explicit=row.explicit, rating_min=RATING_MIN,
                           rating_max=RATING_MAX)
        got = _spark_result(row)
        key = want if isinstance(want, str) else "valid"
        seen[row.explicit][key] = seen[row.explicit].get(key, 0) + 1
        if got != want:
            mismatches.append((value, row.explicit, got, want))
        elif isinstance(want, Event):
            assert row.event_date == datetime.datetime.fromtimestamp(want.ts / 1000, tz=datetime.UTC).date()
    report = "\n".join(f"  {v!r:.300}\n    explicit={e}: spark {g!r:.120}, reference {w!r:.120}"
                       for v, e, g, w in mismatches[:10])
    assert not mismatches, f"{len(mismatches)} of {len(rows)} records differ:\n{report}"
    # the corpus is worth its time: every reason and plenty of valid events, in each model
    assert set(seen[False]) | set(seen[True]) == set(REASONS) | {"valid"}, seen
    assert seen[False]["valid"] > len(values) // 5 and seen[True]["valid"] > len(values) // 20, seen
    assert len(sc.statusTracker().getJobIdsForGroup("contract-fuzz")) == 1
