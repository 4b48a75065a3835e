"""End-to-end tests of the streaming trainer against a real broker and real Delta tables."""

from __future__ import annotations

import json
import logging

import pandas as pd
import pytest
from pyspark.sql import functions as F

from streaming.trainer import InjectedFault, StreamTrainer
from tests.kafka.stream_helpers import (
    BAD_RECORDS,
    EDGE_EVENT,
    EDGE_VALUE,
    assert_same_run,
    factors,
    known_stream,
    produce,
)

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def _cfg(cfg, topic, **model):
    return cfg.replace(kafka={"topic": topic, "max_offsets_per_trigger": 400},
                       stream={"trigger": "available_now", "eval_max_events": 500},
                       model={"engine": "local", "blocks": 2, "negatives": 4, "lr": 0.1, **model})


def _batch_of(metrics: pd.DataFrame, topic: str, partition: int, offset: int) -> int:
    """The batch whose offset range (metrics ``offsets``) holds ``partition``/``offset``."""
    hits = [int(r.batch_id) for r in metrics.itertuples()
            if (span := json.loads(r.offsets).get(f"{topic}:{partition}")) and span[0] <= offset <= span[1]]
    assert len(hits) == 1, (partition, offset, hits)
    return hits[0]


def test_stream_end_to_end_with_every_kind_of_bad_input(spark, kafka_broker, topic, cfg, caplog):
    cfg = _cfg(cfg, topic)
    df = known_stream(1500)
    sent = produce(kafka_broker.bootstrap, topic, df, BAD_RECORDS, extra=[EDGE_VALUE])
    trainer = StreamTrainer(spark, cfg)
    caplog.set_level(logging.INFO, logger="dsgd.stream")
    assert trainer.run(timeout_s=300) == 0
    wh = cfg.app.warehouse
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    n_in = len(df) + 1 + len(BAD_RECORDS)  # the events, the 1 MiB edge event, the bad records
    assert f"{n_in} records in, {len(df) + 1} valid events" in summary, summary
    assert f"quarantined {len(BAD_RECORDS)}: " in summary and "prequential dcg@100 " in summary, summary
    assert f"factors table version {trainer.store.version()}" in summary, summary

    # every valid event is in, once, with its stream position; the 1 MiB event (the size limit) too
    events = spark.read.format("delta").load(f"{wh}/events")
    assert "event_date=" in events.inputFiles()[0]
    ev = events.toPandas()
    want = pd.concat([df[["user", "item", "ts"]], pd.DataFrame([EDGE_EVENT])], ignore_index=True)
    assert len(ev) == len(want) and ev["seq"].is_unique
    got = ev[["user", "item", "ts"]].sort_values(["ts", "user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want.sort_values(["ts", "user", "item"]).reset_index(drop=True),
                                  check_dtype=False)

    # every bad record is quarantined once, at its Kafka position, with its raw key and value bytes,
    # Kafka timestamp, the batch that read it and its reason
    m = spark.read.format("delta").load(f"{wh}/metrics").toPandas().sort_values("batch_id")
    q = (spark.read.format("delta").load(f"{wh}/quarantine").withColumn("kafka_ms", F.unix_millis("kafka_ts"))
         .toPandas())
    assert len(q) == len(BAD_RECORDS) and not q.duplicated(["partition", "offset"]).any()
    for (raw, reason), at in zip(BAD_RECORDS, sent, strict=True):
        row = q[(q["partition"] == at.partition) & (q["offset"] == at.offset)]
        assert len(row) == 1, (reason, at)
        r = row.iloc[0]
        assert r["reason"] == reason
        assert r["topic"] == topic and bytes(r["raw_key"]) == b"bad"
        assert (None if r["raw_value"] is None else bytes(r["raw_value"])) == raw, reason
        assert int(r["kafka_ms"]) == at.timestamp_ms
        assert int(r["batch_id"]) == _batch_of(m, topic, at.partition, at.offset)

    # per batch, the metrics count exactly the batch's quarantined records and their reasons
    assert list(m["batch_id"]) == list(range(len(m))) and len(m) >= 4
    for b in m.itertuples():
        mine = q[q["batch_id"] == b.batch_id]
        assert b.rows_quarantined == len(mine)
        assert json.loads(b.quarantine_reasons) == mine["reason"].value_counts().to_dict()
    assert m["rows_in"].sum() == len(want) + len(BAD_RECORDS)
    assert m["rows_valid"].sum() == len(want)
    assert (m["seconds_total"] > 0).all() and m["offsets"].str.contains(topic).all()

    f = factors(spark, wh)
    assert set(f.loc[f.side == "u", "id"]) == set(want["user"])
    assert set(f.loc[f.side == "i", "id"]) == set(want["item"])
    assert f.loc[f.side == "u", "count"].sum() == len(want)  # every valid event trained exactly once
    assert f.loc[f.side == "i", "count"].sum() == len(want)
    # learning happened: later batches rank better than popularity on this planted stream
    late = m.iloc[len(m) // 2:]
    assert late["dcg"].mean() > late["dcg_popularity"].mean()


def test_a_missing_topic_fails_at_start_naming_it_and_how_to_create_it(spark, kafka_broker, cfg, capsys):
    from dsgd.cli.main import main

    code = main(["stream", "--available-now", "--set", 'kafka.topic="no-such-topic"', "--set",
                 f'kafka.bootstrap_servers="{kafka_broker.bootstrap}"', "--set", f'app.warehouse="{cfg.app.warehouse}"',
                 "--set", f'app.checkpoint_root="{cfg.app.checkpoint_root}"', "--set", 'spark.master="local[2]"'])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "'no-such-topic'" in err and "dsgd kafka create-topic" in err and "dsgd produce --create-topic" in err, err


class _Faults:
    """Raise once at each (point, batch id): a crash of the batch, after which the query is restarted."""

    def __init__(self, plan):
        self.plan = set(plan)
        self.fired = []

    def __call__(self, point, batch_id):
        if (point, batch_id) in self.plan:
            self.plan.discard((point, batch_id))
            self.fired.append((point, batch_id))
            raise InjectedFault(f"{point}:{batch_id}")


@pytest.fixture(scope="module")
def crash_stream(spark, kafka_broker, base_config, tmp_path_factory):
    """One topic with valid events and every kind of bad record, and its uninterrupted run (local
    engine: every engine gives the same factors bit for bit, so it is the reference of both engines)."""
    topic = "crash-every-point"
    kafka_broker.create_topic(topic, partitions=2)
    df = known_stream(1500, seed=5)
    produce(kafka_broker.bootstrap, topic, df, BAD_RECORDS)
    root = tmp_path_factory.mktemp("crash-clean")
    clean = _cfg(base_config.replace(kafka={"bootstrap_servers": kafka_broker.bootstrap}), topic).replace(
        app={"warehouse": str(root / "wh"), "checkpoint_root": str(root / "ck")})
    assert StreamTrainer(spark, clean).run(timeout_s=300) == 0
    return topic, df, clean


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_crash_at_every_point_then_restart_gives_the_factors_of_an_uninterrupted_run(spark, cfg, tmp_path, engine,
                                                                                       crash_stream):
    topic, df, clean = crash_stream
    crashy = _cfg(cfg, topic, engine=engine).replace(app={"warehouse": str(tmp_path / "crash/wh"),
                                                          "checkpoint_root": str(tmp_path / "crash/ck")})
    plan = [("after_events", 0), ("after_eval", 1), ("after_factors", 1), ("after_metrics", 2), ("after_factors", 3)]
    faults = _Faults(plan)
    runs = 0
    while True:
        runs += 1
        assert runs < 10
        if StreamTrainer(spark, crashy, fault_hook=faults).run(timeout_s=300) == 0:
            break
    assert sorted(faults.fired) == sorted(plan) and runs == len(plan) + 1

    # bit for bit: factors, metadata, every events and quarantine column, every deterministic metrics column
    got = assert_same_run(spark, clean.app.warehouse, crashy.app.warehouse)
    assert len(got["events"]) == len(df) and len(got["quarantine"]) == len(BAD_RECORDS)
    assert got["metrics"]["rows_quarantined"].sum() == len(BAD_RECORDS)
    # the replayed metrics rows are those of the batches whose factors were in before the crash and whose
    # metrics row was not (after_factors of 1 and 3; batch 2's row was written before its crash)
    m = spark.read.format("delta").load(f"{crashy.app.warehouse}/metrics").toPandas().sort_values("batch_id")
    assert sorted(m.loc[m["replayed"], "batch_id"]) == [1, 3]
