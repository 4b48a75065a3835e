"""Items 4 and 5: poison records of every kind are quarantined with their reason while the stream goes on;
schema drift (an extra field, a missing required field, a factor table of another rank)."""

from __future__ import annotations

import json

import pytest

from dsgd.evaluation.synthetic import generate_stream
from dsgd.store.errors import IncompatibleTable
from streaming.trainer import StreamTrainer
from tests.faults.helpers import explicit_values, metrics, produce_raw, stream_cfg, table, write_conf

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]

#: Explicit model with ratings in [0, 5]: (raw value, reason or None when the record is valid).
EXPLICIT_POISON: list[tuple[bytes | None, str | None]] = [
    (b'{"user": "u1", "item": "i1", "ts": 1600000000000}', "missing_rating"),
    (b'{"user": "u1", "item": "i1", "rating": null}', "missing_rating"),
    (b'{"user": "u1", "item": "i1", "rating": -1}', "rating_out_of_range"),
    (b'{"user": "u1", "item": "i1", "rating": -0.5}', "rating_out_of_range"),
    (b'{"user": "u1", "item": "i1", "rating": 5.5}', "rating_out_of_range"),
    (b'{"user": "u1", "item": "i1", "rating": 1e30}', "rating_out_of_range"),
    (b'{"user": "u1", "item": "i1", "rating": 1e300}', "non_finite_rating"),  # beyond a 32-bit float
    (b'{"user": "u1", "item": "i1", "rating": NaN}', "malformed_json"),  # NaN and Infinity are not JSON
    (b'{"user": "u1", "item": "i1", "rating": -Infinity}', "malformed_json"),
    (b'{"user": "u1", "item": "i1", "rating": "NaN"}', "bad_rating"),
    (b'{"user": "u1", "item": "i1", "rating": "4.5"}', "bad_rating"),  # a string, not a number
    (b'{"user": "u1", "item": "i1", "rating": true}', "bad_rating"),
    (b'{"user": "u1", "item": "i1", "rating": [3]}', "bad_rating"),
    (b'{"user": "u1", "item": "i1", "rating": {"v": 3}}', "bad_rating"),
    (b'{"user": "u1", "item": "i1", "rating": "3 stars"}', "bad_rating"),
    (b'{"user": null, "item": "i1", "rating": 3}', "missing_user"),
    (b'{"user": "  ", "item": "i1", "rating": 3}', "missing_user"),
    (b'{"user": "u1", "item": null, "rating": 3}', "missing_item"),
    (b'{"user": "u1", "item": "", "rating": 3}', "missing_item"),
    (b'{"user": ["u1"], "item": "i1", "rating": 3}', "bad_user"),
    (b'{"user": 123456789012345678901234567890, "item": "i1", "rating": 3}', "bad_user"),  # beyond 64 bits
    (b'{"user": true, "item": "i1", "rating": 3}', "bad_user"),
    (b'{"user": "u1", "item": {"id": 1}, "rating": 3}', "bad_item"),
    (b'{"user": "u1", "item": "' + b"i" * 513 + b'", "rating": 3}', "bad_item"),
    (b'{"user": "u1", "item": "i1", "rating": 3, "ts": "2024-13-45T99:00:00Z"}', "bad_ts"),
    (b'{"user": "u1", "item": "i1", "rating": 3, "ts": 99999999999999}', "bad_ts"),
    (b'{"user": "u1", "item": "i1", "rating": 3, "ts": false}', "bad_ts"),
    (b'{"user": "u1", "item": "i1", "rating": 3', "malformed_json"),
    (b'"just a string"', "malformed_json"),
    (b"42", "malformed_json"),
    (b"\xff\xfe\x00garbage", "malformed_json"),
    (b'{"user": "u1", "item": "i1", "rating": 3, "pad": "' + b"p" * (1 << 20) + b'"}', "value_too_large"),
    (b"", "empty_value"),
    (None, "empty_value"),
]

#: Valid despite looking odd: numeric ids (up to 64 bits) kept verbatim, ratings at the bounds, an RFC 3339
#: time, no ts (the Kafka timestamp is used), and extra fields (ignored: schema drift).
EXPLICIT_ODD_BUT_VALID: list[bytes] = [
    b'{"user": 7, "item": "i1", "rating": 0, "ts": 1600000000000}',
    b'{"user": 9223372036854775807, "item": "i2", "rating": 5, "ts": 1600000000001}',
    b'{"user": "u1", "item": "i3", "rating": 4.5, "ts": "2024-01-02T03:04:05Z"}',
    b'{"user": "u1", "item": "i4", "rating": 2}',
    b'{"user": "u2", "item": "i1", "rating": 3, "ts": 1600000000002, "device": "tv", "extra": {"a": [1]}}',
    b'{"item": "i2", "rating": 1, "user": "u3", "ts": 1600000000003, "schema_version": 2}',
]


@pytest.fixture(scope="module")
def explicit_run(spark, kafka_broker, base_config, tmp_path_factory):
    """One explicit stream: good events with the poison and the odd-but-valid records spread through it."""
    topic = "faults-poison-explicit"
    kafka_broker.create_topic(topic, partitions=2)
    root = tmp_path_factory.mktemp("poison")
    cfg = stream_cfg(base_config.replace(kafka={"bootstrap_servers": kafka_broker.bootstrap}), topic, root,
                     kind="explicit", rating_min=0.0, rating_max=5.0, lr=0.02, kafka={"max_offsets_per_trigger": 300})
    good = generate_stream(900, n_users=60, n_items=40, seed=21, implicit=False, rating_range=(1.0, 5.0))
    good_values = explicit_values(good)
    odd = [v for v, _ in EXPLICIT_POISON]
    values: list[bytes | None] = []
    step = len(good_values) // (len(odd) + len(EXPLICIT_ODD_BUT_VALID) + 1)
    extras = odd + list(EXPLICIT_ODD_BUT_VALID)
    for i, v in enumerate(good_values):
        values.append(v)
        if i % step == step - 1 and extras:
            values.append(extras.pop(0))
    values += extras
    produce_raw(kafka_broker.bootstrap, topic, values)
    assert StreamTrainer(spark, cfg).run(timeout_s=400) == 0
    return cfg, len(good_values)


def test_poison_records_of_every_kind_are_quarantined_with_their_reason_and_the_stream_goes_on(spark, explicit_run):
    cfg, n_good = explicit_run
    q = table(spark, cfg, "quarantine")
    got = {(bytes(v) if v is not None else None): r for v, r in zip(q["raw_value"], q["reason"], strict=True)}
    for raw, reason in EXPLICIT_POISON:
        if raw:  # the raw bytes are kept: nothing is lost (the two empty values are counted below)
            assert got.get(raw) == reason, f"{raw[:80]!r}: want {reason}, got {got.get(raw)}"
    assert (q["reason"] == "empty_value").sum() == 2
    assert len(q) == len(EXPLICIT_POISON), "a record was quarantined twice or a valid one was quarantined"

    m = metrics(spark, cfg)
    assert m["batch_id"].tolist() == list(range(len(m))) and len(m) >= 3
    n_valid = n_good + len(EXPLICIT_ODD_BUT_VALID)
    assert m["rows_in"].sum() == n_valid + len(EXPLICIT_POISON)
    assert m["rows_quarantined"].sum() == len(EXPLICIT_POISON)
    assert m["rows_valid"].sum() == n_valid
    per_reason: dict[str, int] = {}
    for text in m["quarantine_reasons"]:
        for k, v in json.loads(text).items():
            per_reason[k] = per_reason.get(k, 0) + v
    want: dict[str, int] = {}
    for _, reason in EXPLICIT_POISON:
        want[reason] = want.get(reason, 0) + 1
    assert per_reason == want
    assert not m["rejected"].any() and (m["alert"] == "").all()

    ev = table(spark, cfg, "events")
    assert len(ev) == n_valid
    assert ev["rating"].between(0, 5).all()
    # ids are never truncated; numbers and strings are the same id
    assert "9223372036854775807" in set(ev["user"]) and "7" in set(ev["user"])
    f = table(spark, cfg, "factors")
    assert f.loc[f.side == "u", "count"].sum() == n_valid  # every valid event trained exactly once


def test_schema_drift_extra_fields_are_ignored_and_a_missing_required_field_is_quarantined(spark, explicit_run):
    cfg, _ = explicit_run
    ev = table(spark, cfg, "events")
    drifted = ev[(ev["user"] == "u2") & (ev["item"] == "i1") & (ev["ts"] == 1600000000002)]
    assert len(drifted) == 1 and float(drifted["rating"].iloc[0]) == 3.0
    assert len(ev[(ev["user"] == "u3") & (ev["ts"] == 1600000000003)]) == 1
    assert "device" not in ev.columns and "schema_version" not in ev.columns
    q = table(spark, cfg, "quarantine")
    # the explicit model's required rating is missing: quarantined, not defaulted
    missing = q[q["reason"] == "missing_rating"]
    assert len(missing) == 2


def test_factor_table_of_another_rank_is_refused_at_start_up(spark, kafka_broker, topic, cfg, tmp_path, capsys):
    from dsgd import cli

    c = stream_cfg(cfg, topic, tmp_path, rank=8)
    StreamTrainer(spark, c)  # creates the factors table with rank 8
    with pytest.raises(IncompatibleTable, match=r"model\.rank is 12 .*rank 8"):
        StreamTrainer(spark, c.replace(model={"rank": 12}))
    with pytest.raises(IncompatibleTable, match=r"model\.kind"):
        StreamTrainer(spark, c.replace(model={"kind": "explicit"}))

    conf = write_conf(tmp_path / "stream.toml", c)
    rc = cli.main(["stream", "--available-now", "--profile", "local", "--conf", str(conf), "--set", "model.rank=12"])
    err = capsys.readouterr().err
    assert rc == 2, err
    assert "model.rank" in err and "rank 8" in err
    # nothing was written with the wrong rank
    assert len(table(spark, c, "factors")) == 1


#: ts values past year 2200 whose conversion overflows a long inside Spark (ANSI mode): each must be
#: quarantined as bad_ts, not crash the batch.
OVERFLOWING_TS = [b'{"user": "u1", "item": "i1", "ts": 9999999999999999}',
                  b'{"user": "u1", "item": "i1", "ts": 1e30}']


def test_regression_ts_overflowing_a_long_is_quarantined_not_fatal(spark, kafka_broker, topic, cfg, tmp_path):
    from tests.faults.helpers import implicit_values
    from tests.kafka.stream_helpers import known_stream

    c = stream_cfg(cfg, topic, tmp_path)
    good = known_stream(200, seed=41)
    produce_raw(kafka_broker.bootstrap, topic, implicit_values(good) + OVERFLOWING_TS)
    assert StreamTrainer(spark, c).run(timeout_s=300) == 0
    q = table(spark, c, "quarantine")
    assert sorted(q["reason"]) == ["bad_ts"] * len(OVERFLOWING_TS)
    assert len(table(spark, c, "events")) == len(good)
