"""Item 2: the broker goes down and comes back (same home, same ports) while the stream runs."""

from __future__ import annotations

import time

import pytest

from dsgd.ops.kafka_broker import KafkaBroker
from streaming.trainer import StreamTrainer
from tests.faults.helpers import REFERENCE_BATCH, stream_cfg, wait_for
from tests.kafka.stream_helpers import assert_same_run, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def test_broker_restart_mid_stream_loses_nothing_and_gives_the_fault_free_factors(spark, cfg, tmp_path,
                                                                                  fault_free_run):
    broker = KafkaBroker(tmp_path / "kafka", port=0, heap="384m")  # 256m: OOM in the log cleaner at start
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
        try:
            wait_for(lambda: len(trainer.results) >= 2 or not query.isActive, 300, "two batches")
            broker.stop()
            read_before = sum(r.rows_in for r in trainer.results)
            down_at = len(trainer.results)
            time.sleep(8)
            broker = KafkaBroker(tmp_path / "kafka", port=broker.port, controller_port=broker.controller_port,
                                 heap="384m")
            broker.start()
            up_at = len(trainer.results)
            wait_for(lambda: sum(r.rows_in for r in trainer.results) >= len(df) or not query.isActive, 300,
                     "the stream to finish or fail")
            # the same query recovered by itself: it is still running, with no exception
            assert query.isActive and query.exception() is None, str(query.exception())[:2000]
        finally:
            if query.isActive:
                query.stop()
        print(f"broker down after batch {down_at - 1} ({read_before} records read), up again after {up_at} batches")
        # the downtime fell inside the stream: records were still to read when the broker went down, and
        # batches ran after it came back
        assert down_at >= 2 and read_before < len(df) and len(trainer.results) > up_at

        # bit for bit the fault-free run: factors, every events column, every deterministic metrics column
        # (incl. the same offsets per batch and partition, records_lost 0); each batch and event once
        got = assert_same_run(spark, clean.app.warehouse, live.app.warehouse)
        assert len(got["events"]) == len(df) and (got["metrics"]["records_lost"] == 0).all()
    finally:
        broker.stop()
