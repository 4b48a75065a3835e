"""The trainer runs for many micro-batches, across maintenance passes, without slowing down.

Nothing is carried from batch to batch as a DataFrame, so the plan cannot grow; what could grow is the
Delta log and the number of small files, which maintenance (compaction + VACUUM) bounds. Each
micro-batch costs ~5-8 s of fixed Spark/Delta work on a 2-core machine, so CI runs 18 batches with
maintenance every 6 (three passes); `DSGD_LONG_RUN_BATCHES=200` runs the full-length version.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from streaming.trainer import StreamTrainer
from tests.kafka.stream_helpers import factors, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

BATCHES = int(os.environ.get("DSGD_LONG_RUN_BATCHES", "18"))


def test_many_micro_batches_across_maintenance_without_slowdown(spark, kafka_broker, topic, cfg):
    per_batch = 6  # records per micro-batch (3 per partition)
    df = known_stream(BATCHES * per_batch, seed=11)
    produce(kafka_broker.bootstrap, topic, df)
    cfg = cfg.replace(kafka={"topic": topic, "max_offsets_per_trigger": per_batch},
                      stream={"trigger": "available_now", "maintenance_every": 6 if BATCHES < 60 else 12, "eval_max_events": 100},
                      model={"engine": "local", "negatives": 4})
    trainer = StreamTrainer(spark, cfg)
    assert trainer.run(timeout_s=BATCHES * 30) == 0

    m = spark.read.format("delta").load(f"{cfg.app.warehouse}/metrics").toPandas().sort_values("batch_id")
    assert len(m) >= BATCHES
    assert m["rows_valid"].sum() == len(df)
    window = max(5, BATCHES // 4)
    first = np.median(m["seconds_total"].iloc[3:3 + window])  # skip the warm-up (JIT, first Delta commits)
    last = np.median(m["seconds_total"].iloc[-window:])
    assert last < 1.5 * first + 0.5, f"per-batch time grew: first {first:.2f}s, last {last:.2f}s"
    f = factors(spark, cfg.app.warehouse)
    assert f.loc[f.side == "u", "count"].sum() == len(df)
