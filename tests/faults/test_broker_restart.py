"""Item 2: the broker goes down and comes back (same home, same ports) while the stream runs."""

from __future__ import annotations

import json
import time

import pytest

from dsgd.ops.kafka_broker import KafkaBroker
from streaming.trainer import StreamTrainer
from tests.faults.helpers import REFERENCE_BATCH, metrics, stream_cfg, table, wait_for
from tests.kafka.stream_helpers import assert_same_factors, factors, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def _by_partition(offsets) -> list[dict]:
    return [{key.rsplit(":", 1)[1]: span for key, span in json.loads(o).items()} for o in offsets]


def test_broker_restart_mid_stream_loses_nothing_and_gives_the_fault_free_factors(spark, cfg, tmp_path,
                                                                                  fault_free_run):
    broker = KafkaBroker(tmp_path / "kafka", port=0, heap="256m")
    broker.start()
    try:
        broker.create_topic("events", partitions=2)
        df, clean = fault_free_run.events, fault_free_run.cfg  # the same records, on this test's own broker
        produce(broker.bootstrap, "events", df)
        base = cfg.replace(kafka={"bootstrap_servers": broker.bootstrap})
        opts = {"kafka": {"max_offsets_per_trigger": REFERENCE_BATCH}}

        live = stream_cfg(base, "events", tmp_path / "live", stream={"trigger": "processing_time",
                                                                    "trigger_interval": "1 second"}, **opts)
        trainer = StreamTrainer(spark, live)
        query = trainer.start()
        outcome = "recovered"
        try:
            wait_for(lambda: len(trainer.results) >= 2 or not query.isActive, 300, "two batches")
            broker.stop()
            down_at = len(trainer.results)
            time.sleep(8)
            broker = KafkaBroker(tmp_path / "kafka", port=broker.port, controller_port=broker.controller_port,
                                 heap="256m")
            broker.start()
            wait_for(lambda: sum(r.rows_in for r in trainer.results) >= len(df) or not query.isActive, 300,
                     "the stream to finish or fail")
            if not query.isActive:  # it failed loudly: the restart resumes from the checkpoint
                outcome = f"failed: {str(query.exception())[:200]}"
        finally:
            if query.isActive:
                query.stop()
        if outcome != "recovered":
            assert StreamTrainer(spark, live.replace(stream={"trigger": "available_now"})).run(timeout_s=400) == 0
        print(f"broker restart after batch {down_at}: {outcome}")

        assert_same_factors(factors(spark, clean.app.warehouse), factors(spark, live.app.warehouse))
        m, mc = metrics(spark, live), metrics(spark, clean)
        assert m["batch_id"].is_unique and m["rows_in"].sum() == len(df)
        assert m["records_lost"].sum() == 0
        assert len(table(spark, live, "events")) == len(df)
        # the same offsets per batch and partition (the reference ran on another topic)
        assert _by_partition(m["offsets"]) == _by_partition(mc["offsets"])
    finally:
        broker.stop()
