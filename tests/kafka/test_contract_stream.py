"""The fuzz corpus through a real stream (real broker, StreamTrainer with availableNow, real Delta):
every record lands in ``events`` or ``quarantine`` exactly once, matched by partition and offset, with
the reference's event or reason."""

from __future__ import annotations

import json
import math
import os

import pytest

from dsgd.core.contract import Event, parse_event
from streaming.trainer import StreamTrainer
from tests.contract_records import EDGE_CASES, KAFKA_TS_MS, corpus

pytestmark = [pytest.mark.kafka, pytest.mark.spark]

#: Records of the fuzz corpus sent through the stream (plus the hand-picked ones).
STREAM_RECORDS = int(os.environ.get("DSGD_FUZZ_STREAM_RECORDS", "400"))


def test_every_fuzzed_record_lands_in_events_or_quarantine_exactly_once(spark, kafka_broker, topic, cfg):
    from kafka import KafkaProducer

    values = [v for v, _, _ in EDGE_CASES] + corpus(STREAM_RECORDS)
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap, max_request_size=4 << 20, acks="all")
    sent = [producer.send(topic, key=b"k", value=v, partition=i % 2, timestamp_ms=KAFKA_TS_MS + i)
            for i, v in enumerate(values)]
    producer.flush()
    meta = [f.get(timeout=60) for f in sent]
    producer.close()
    where = {(m.partition, m.offset): i for i, m in enumerate(meta)}
    assert len(where) == len(values)

    cfg = cfg.replace(kafka={"topic": topic, "max_offsets_per_trigger": 10_000},
                      stream={"trigger": "available_now", "eval_max_events": 500},
                      model={"engine": "local", "blocks": 2, "negatives": 2, "lr": 0.05})
    assert StreamTrainer(spark, cfg).run(timeout_s=300) == 0
    wh = cfg.app.warehouse
    events = spark.read.format("delta").load(f"{wh}/events").toPandas()
    quarantine = spark.read.format("delta").load(f"{wh}/quarantine").toPandas()

    landed = [(int(s) >> 40, int(s) & ((1 << 40) - 1)) for s in events["seq"]]
    landed += [(int(p), int(o)) for p, o in zip(quarantine["partition"], quarantine["offset"], strict=True)]
    assert sorted(landed) == sorted(where), "a record was lost, duplicated or invented"

    def want(i: int) -> Event | str:
        return parse_event(values[i], kafka_ts_ms=meta[i].timestamp, explicit=False,
                           rating_min=cfg.model.rating_min, rating_max=cfg.model.rating_max)

    for row in events.itertuples():
        i = where[(int(row.seq) >> 40, int(row.seq) & ((1 << 40) - 1))]
        rating = None if row.rating is None or math.isnan(row.rating) else float(row.rating)
        assert Event(row.user, row.item, rating, int(row.ts)) == want(i), values[i]
    for row in quarantine.itertuples():
        i = where[(int(row.partition), int(row.offset))]
        assert row.reason == want(i), values[i]
        assert (None if row.raw_value is None else bytes(row.raw_value)) == values[i]  # kept as sent
    m = spark.read.format("delta").load(f"{wh}/metrics").toPandas()
    assert m["rows_in"].sum() == len(values) and m["rows_quarantined"].sum() == len(quarantine)
    assert len(events) > len(values) // 5 and len(quarantine) > len(values) // 3


def test_produce_sends_only_the_rows_that_meet_the_contract_and_reports_the_others(kafka_broker, topic):
    import pandas as pd
    from kafka import KafkaConsumer

    from streaming.produce import produce_events

    df = pd.DataFrame({
        "user": ["u1", " u2", "u3", "u\x004", "u5", "u6"],
        "item": ["i1", "i1", "i2", "i3", "i4", "i5"],
        "rating": [4.0, 3.0, 9.0, 2.0, float("nan"), 1.0],
        "ts": [1_600_000_000_000 + k for k in range(5)] + [-5],
    })
    done = produce_events(df, bootstrap=kafka_broker.bootstrap, topic=topic, explicit=True, rating_min=1.0,
                          rating_max=5.0)
    assert done.sent == 1
    assert dict(done.invalid) == {"bad_user": 2, "rating_out_of_range": 1, "missing_rating": 1, "bad_ts": 1}
    assert [(row, reason) for row, reason, _ in done.examples] == [  # in time order, by row label
        (5, "bad_ts"), (1, "bad_user"), (2, "rating_out_of_range"), (3, "bad_user"), (4, "missing_rating")]
    assert "5 rows break the event contract and were not sent" in done.report()

    consumer = KafkaConsumer(topic, bootstrap_servers=kafka_broker.bootstrap, auto_offset_reset="earliest",
                             consumer_timeout_ms=3000)
    got = [json.loads(m.value) for m in consumer]
    consumer.close()
    assert got == [{"user": "u1", "item": "i1", "rating": 4.0, "ts": 1_600_000_000_000}]


def test_dsgd_produce_reports_the_rows_it_did_not_send(kafka_broker, topic, tmp_path, capsys):
    from dsgd import cli

    data = tmp_path / "u.data"  # MovieLens 100K layout: user, item, rating, unix seconds
    data.write_text("1\t10\t4\t881250949\n2\t20\t7\t881250950\n3\t30\t5\t881250951\n")
    rc = cli.main(["produce", "--dataset", "ml-100k", "--path", str(data),
                   "--set", f'kafka.bootstrap_servers="{kafka_broker.bootstrap}"', "--set", f'kafka.topic="{topic}"',
                   "--set", 'model.kind="explicit"', "--set", "model.rating_min=1", "--set", "model.rating_max=5"])
    out, err = capsys.readouterr()
    assert rc == 0, err
    assert f"produced 2 events to {topic}" in out
    assert "1 rows break the event contract and were not sent: rating_out_of_range=1" in err
    assert '"user":"2"' in err  # the row itself is shown
