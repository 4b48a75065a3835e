"""End-to-end tests of the streaming trainer against a real broker and real Delta tables."""

from __future__ import annotations

import logging

import pandas as pd
import pytest

from streaming.trainer import InjectedFault, StreamTrainer
from tests.kafka.stream_helpers import BAD_RECORDS, assert_same_factors, factors, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def _cfg(cfg, topic, **model):
    return cfg.replace(kafka={"topic": topic, "max_offsets_per_trigger": 400},
                       stream={"trigger": "available_now", "eval_max_events": 500},
                       model={"engine": "local", "blocks": 2, "negatives": 4, "lr": 0.1, **model})


def test_stream_end_to_end_with_every_kind_of_bad_input(spark, kafka_broker, topic, cfg, caplog):
    cfg = _cfg(cfg, topic)
    df = known_stream(1500)
    produce(kafka_broker.bootstrap, topic, df, BAD_RECORDS)
    trainer = StreamTrainer(spark, cfg)
    caplog.set_level(logging.INFO, logger="dsgd.stream")
    assert trainer.run(timeout_s=300) == 0
    wh = cfg.app.warehouse
    summary = next(r.getMessage() for r in caplog.records if r.getMessage().startswith("run summary:"))
    assert f"{len(df) + len(BAD_RECORDS)} records in, {len(df)} valid events" in summary, summary
    assert f"quarantined {len(BAD_RECORDS)}: " in summary and "prequential dcg@100 " in summary, summary
    assert f"factors table version {trainer.store.version()}" in summary, summary

    events = spark.read.format("delta").load(f"{wh}/events").toPandas()
    assert len(events) == len(df)
    got = events.sort_values("seq")[["user", "item", "ts"]].sort_values(["ts", "user", "item"]).reset_index(drop=True)
    want = df[["user", "item", "ts"]].sort_values(["ts", "user", "item"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(got, want, check_dtype=False)
    assert set(spark.read.format("delta").load(f"{wh}/events").inputFiles()) and \
        "event_date=" in spark.read.format("delta").load(f"{wh}/events").inputFiles()[0]

    q = spark.read.format("delta").load(f"{wh}/quarantine").toPandas()
    assert len(q) == len(BAD_RECORDS)
    expected = sorted(reason for _, reason in BAD_RECORDS)
    assert sorted(q["reason"]) == expected
    by_value = {bytes(v) if v is not None else None: r for v, r in zip(q["raw_value"], q["reason"], strict=True)}
    for raw, reason in BAD_RECORDS:
        if raw:  # the raw bytes are kept so nothing is lost
            assert by_value[raw] == reason

    m = spark.read.format("delta").load(f"{wh}/metrics").toPandas().sort_values("batch_id")
    assert list(m["batch_id"]) == list(range(len(m))) and len(m) >= 4
    assert m["rows_in"].sum() == len(df) + len(BAD_RECORDS)
    assert m["rows_quarantined"].sum() == len(BAD_RECORDS)
    assert m["rows_valid"].sum() == len(df)
    assert (m["seconds_total"] > 0).all() and m["offsets"].str.contains(topic).all()

    f = factors(spark, wh)
    assert set(f.loc[f.side == "u", "id"]) == set(df["user"])
    assert set(f.loc[f.side == "i", "id"]) == set(df["item"])
    assert f.loc[f.side == "u", "count"].sum() == len(df)  # every valid event trained exactly once
    assert f.loc[f.side == "i", "count"].sum() == len(df)
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


@pytest.mark.parametrize("engine", ["local", "spark"])
def test_crash_at_every_point_then_restart_gives_the_factors_of_an_uninterrupted_run(spark, kafka_broker, topic,
                                                                                       cfg, tmp_path, engine):
    df = known_stream(1500, seed=5)
    produce(kafka_broker.bootstrap, topic, df)
    clean = _cfg(cfg, topic, engine=engine).replace(app={"warehouse": str(tmp_path / "clean/wh"),
                                                         "checkpoint_root": str(tmp_path / "clean/ck")})
    assert StreamTrainer(spark, clean).run(timeout_s=300) == 0

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
    assert sorted(faults.fired) == sorted(plan)

    assert_same_factors(factors(spark, clean.app.warehouse), factors(spark, crashy.app.warehouse))
    m = spark.read.format("delta").load(f"{crashy.app.warehouse}/metrics").toPandas()
    assert m["batch_id"].is_unique, "a batch was recorded twice"
    clean_m = spark.read.format("delta").load(f"{clean.app.warehouse}/metrics").toPandas()
    assert sorted(m["batch_id"]) == sorted(clean_m["batch_id"])
    assert spark.read.format("delta").load(f"{crashy.app.warehouse}/events").count() == len(df)
    # the replayed batches report the same prequential DCG as the clean run
    pd.testing.assert_series_equal(m.sort_values("batch_id")["dcg"].reset_index(drop=True),
                                   clean_m.sort_values("batch_id")["dcg"].reset_index(drop=True))
