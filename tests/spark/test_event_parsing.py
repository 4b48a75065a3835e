"""parse_events / valid_events / quarantined in Spark without Kafka: reasons, and the plan they give."""

from __future__ import annotations

import pytest

from streaming.events import parse_events, quarantined, valid_events

pytestmark = pytest.mark.spark

SCHEMA = "key binary, value binary, topic string, partition int, offset long, timestamp timestamp"


def _records(spark, values: list[bytes]):
    import datetime

    ts = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)
    return spark.createDataFrame([(b"k", v, "t", 0, i, ts) for i, v in enumerate(values)], SCHEMA)


def test_unpersisted_filters_keep_the_json_parse_out_of_the_filter(spark):
    """A filter on ``reason`` pushed below the projections would inline the JSON parse into every
    check (measured 10x slower on 250k records); the plan keeps it in one projection."""
    values = [b'{"user": "u1", "item": 7, "ts": 1600000000000}', b"not json", b'{"item": "i1"}',
              b'{"user": "u2", "item": "i2", "rating": 1e400}']
    parsed = parse_events(_records(spark, values), explicit=False, rating_min=-1e9, rating_max=1e9)
    for df in (valid_events(parsed), quarantined(parsed)):
        plan = df._jdf.queryExecution().optimizedPlan().toString()
        filters = [line for line in plan.splitlines() if line.lstrip("+-: ").startswith("Filter")]
        assert filters and not [f for f in filters if "parseJson" in f or "from_json" in f], plan[:3000]
        assert plan.count("parseJson(") == 1, plan[:3000]  # try_parse_json, once
    valid = valid_events(parsed).collect()
    assert [(r.user, r.item) for r in valid] == [("u1", "7")]
    bad = sorted((r.offset, r.reason) for r in quarantined(parsed).collect())
    assert bad == [(1, "malformed_json"), (2, "missing_user"), (3, "non_finite_rating")]


def test_issue_21_overflowing_boolean_and_nul_ids_are_quarantined_not_stored(spark):
    """1e400 was stored as the quoted string "Infinity", true as the id "true", and a NUL stayed in the id."""
    values = [b'{"user": 1e400, "item": "a"}', b'{"user": true, "item": "a"}', b'{"user": "u\\u0000x", "item": "a"}']
    parsed = parse_events(_records(spark, values), explicit=False, rating_min=-1e9, rating_max=1e9)
    assert valid_events(parsed).count() == 0
    assert sorted((r.offset, r.reason) for r in quarantined(parsed).collect()) == [
        (0, "bad_user"), (1, "bad_user"), (2, "bad_user")]
