"""The trainer runs for hundreds of micro-batches without slowing down or overflowing the stack."""

from __future__ import annotations

import numpy as np
import pytest

from streaming.trainer import StreamTrainer
from tests.kafka.stream_helpers import factors, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark, pytest.mark.slow]

BATCHES = 200


def test_two_hundred_micro_batches_without_stack_overflow_or_slowdown(spark, kafka_broker, topic, cfg):
    per_batch = 6  # records per micro-batch (3 per partition)
    df = known_stream(BATCHES * per_batch, seed=11)
    produce(kafka_broker.bootstrap, topic, df)
    cfg = cfg.replace(kafka={"topic": topic, "max_offsets_per_trigger": per_batch},
                      stream={"trigger": "available_now", "maintenance_every": 50, "eval_max_events": 100},
                      model={"engine": "local", "negatives": 4})
    trainer = StreamTrainer(spark, cfg)
    assert trainer.run(timeout_s=1500) == 0

    m = spark.read.format("delta").load(f"{cfg.app.warehouse}/metrics").toPandas().sort_values("batch_id")
    assert len(m) >= BATCHES
    assert m["rows_valid"].sum() == len(df)
    first = np.median(m["seconds_total"].iloc[5:25])  # skip the warm-up (JIT, first Delta commits)
    last = np.median(m["seconds_total"].iloc[-20:])
    assert last < 1.5 * first + 0.5, f"per-batch time grew: first {first:.2f}s, last {last:.2f}s"
    f = factors(spark, cfg.app.warehouse)
    assert f.loc[f.side == "u", "count"].sum() == len(df)
