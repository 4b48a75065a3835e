"""Item 7: records deleted from Kafka before they were read: fail loudly (policy on) or warn (policy off)."""

from __future__ import annotations

import logging
import types

import pytest

from dsgd import cli
from dsgd.core.config import Config
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
    failure = [r.getMessage() for r in caplog.records if r.name == "dsgd.stream" and r.levelno >= logging.ERROR]
    # the logged cause says what happened and which option decides it (not a stack frame)
    assert len(failure) == 1 and failure[0].startswith("stream failed: "), failure
    assert "Some data may have been lost" in failure[0] and "failOnDataLoss" in failure[0], failure
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


#: The shape of the same failure raised inside foreachBatch (the parse's collect): py4j and awaitResult
#: wrap it, and Spark's Kafka message spans several lines.
_WRAPPED_FAILURE = """[STREAM_FAILED] Query [id = 1, runId = 2] terminated with exception: An exception was raised by \
the Python Proxy. Return Message: Traceback (most recent call last):
  File "/x/py4j/clientserver.py", line 644, in _call_proxy
    return_value = getattr(self.pool[obj_id], method)(*params)
  File "/x/streaming/trainer.py", line 294, in _batch
    "reason").toPandas()
py4j.protocol.Py4JJavaError: An error occurred while calling o26407.getResult.
: org.apache.spark.SparkException: Exception thrown in awaitResult:
\tat org.apache.spark.util.SparkThreadUtils$.awaitResult(SparkThreadUtils.scala:53)
Caused by: org.apache.spark.SparkException: Job aborted due to stage failure: Task 1 in stage 936.0 failed 1 times, \
most recent failure: Lost task 1.0 in stage 936.0 (TID 1219) (192.0.2.2 executor driver): \
org.apache.spark.sql.kafka010.KafkaIllegalStateException: Some data may have been lost because they are not available \
in Kafka any more;
either the data was aged out by Kafka or the topic may have been deleted before all the data in the
topic was processed.
If you don't want your streaming query to fail on such cases, set the source option failOnDataLoss to false.
Reason: Could not read records in offset [300, 500) for topic partition t3-1
\tat org.apache.spark.sql.kafka010.KafkaExceptions$.couldNotReadOffsetRange(KafkaExceptions.scala:101)
"""


@pytest.mark.parametrize("text", [_SPARK_FAILURE, _WRAPPED_FAILURE], ids=["plain", "wrapped-by-py4j"])
def test_regression_stream_failure_log_names_the_cause_not_a_stack_frame(caplog, text):
    class _Query:
        isActive = False

        def exception(self):
            return text

        def stop(self):
            pass

    trainer = StreamTrainer.__new__(StreamTrainer)
    trainer.ctx = types.SimpleNamespace(lag=LagProbe("127.0.0.1:9"), results=[])
    trainer.cfg, trainer.store = Config(), None  # run() ends with a summary (no factors table here)
    trainer.monitor = types.SimpleNamespace(close=lambda failed: None)
    trainer.start = _Query  # type: ignore[method-assign]
    caplog.set_level(logging.ERROR, logger="dsgd.stream")
    assert trainer.run() == 1
    logged = [r.getMessage() for r in caplog.records]
    assert len(logged) == 1 and logged[0].startswith("stream failed: "), logged
    assert "Some data may have been lost" in logged[0] and "failOnDataLoss" in logged[0], logged
    assert "Py4J" not in logged[0] and "\tat " not in logged[0], logged
