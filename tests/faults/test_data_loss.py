"""Item 7: records deleted from Kafka before they were read: fail loudly (policy on) or warn (policy off)."""

from __future__ import annotations

import logging
import types

import pytest

from dsgd import cli
from streaming.lag import LagProbe
from streaming.trainer import StreamTrainer
from tests.faults.helpers import (
    delete_records,
    end_offsets,
    implicit_values,
    metrics,
    produce_raw,
    stream_cfg,
    table,
    wait_for,
    write_conf,
)
from tests.kafka.stream_helpers import known_stream

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def test_deleted_offsets_stop_the_query_when_fail_on_data_loss_else_warn_with_records_lost(
        spark, kafka_broker, topic, cfg, tmp_path, caplog):
    df = known_stream(1200, seed=13)
    first, second = df.iloc[:600], df.iloc[600:]
    produce_raw(kafka_broker.bootstrap, topic, implicit_values(first))
    strict = stream_cfg(cfg, topic, tmp_path, kafka={"fail_on_data_loss": True})
    assert StreamTrainer(spark, strict).run(timeout_s=300) == 0
    read = end_offsets(kafka_broker.bootstrap, topic)

    produce_raw(kafka_broker.bootstrap, topic, implicit_values(second))
    delete_records(kafka_broker.bootstrap, topic, {p: off + 100 for p, off in read.items()})
    lost = 100 * len(read)

    conf = write_conf(tmp_path / "strict.toml", strict)
    caplog.set_level(logging.ERROR, logger="dsgd.stream")
    rc = cli.main(["stream", "--available-now", "--profile", "local", "--conf", str(conf)])
    assert rc == 1, "deleted offsets did not stop the query"
    failure = " ".join(r.getMessage() for r in caplog.records if r.name == "dsgd.stream")
    assert "stream failed" in failure
    # the query's own error says what happened and which option decides it
    query = StreamTrainer(spark, strict).start()
    wait_for(lambda: not query.isActive, 300, "the strict query to stop")
    text = str(query.exception())
    assert "Some data may have been lost" in text and "failOnDataLoss" in text, text[:2000]
    assert len(metrics(spark, strict)) == len(metrics(spark, strict).drop_duplicates("batch_id"))
    n_before = len(table(spark, strict, "events"))
    assert n_before == len(first)

    lenient = strict.replace(kafka={"fail_on_data_loss": False})
    assert StreamTrainer(spark, lenient).run(timeout_s=300) == 0
    m = metrics(spark, lenient)
    assert m["batch_id"].is_unique
    assert m["records_lost"].sum() == lost
    flagged = m[m["records_lost"] > 0]
    assert flagged["alert"].str.contains("data loss").all()
    assert len(table(spark, lenient, "events")) == len(df) - lost


_SPARK_FAILURE = """[STREAM_FAILED] Query [id = 1, runId = 2] terminated with exception: Job aborted due to stage failure: \
Task 1 in stage 2866.0 failed 1 times, most recent failure: org.apache.spark.sql.kafka010.KafkaIllegalStateException: \
Some data may have been lost because they are not available in Kafka any more; either the data was aged out by \
Kafka or the topic may have been deleted before all the data in the topic was processed. If you don't want your \
streaming query to fail on such cases, set the source option 'failOnDataLoss' to 'false'.
\tat org.apache.spark.sql.kafka010.KafkaDataConsumer.reportDataLoss(KafkaDataConsumer.scala:724)
\tat org.apache.spark.util.SparkErrorUtils.tryWithSafeFinally(SparkErrorUtils.scala:64)
\tat org.apache.spark.util.SparkErrorUtils.tryWithSafeFinally$(SparkErrorUtils.scala:77)
"""


def test_regression_stream_failure_log_names_the_cause_not_a_stack_frame(caplog):
    class _Query:
        isActive = False

        def exception(self):
            return _SPARK_FAILURE

        def stop(self):
            pass

    trainer = StreamTrainer.__new__(StreamTrainer)
    trainer.ctx = types.SimpleNamespace(lag=LagProbe("127.0.0.1:9"))
    trainer.monitor = types.SimpleNamespace(close=lambda failed: None)
    trainer.start = _Query  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="dsgd.stream")
    assert trainer.run() == 1
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "Some data may have been lost" in text and "failOnDataLoss" in text, text
