from __future__ import annotations

import json

import pytest
from chispa import assert_df_equality
from kafka import KafkaProducer
from pyspark.sql import functions as F

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def test_events_produced_to_real_broker_are_streamed_into_delta_exactly(spark, kafka_broker, topic, tmp_path):
    events = [{"user": f"u{i % 17}", "item": f"i{i % 31}", "rating": float(i % 5) + 0.5, "ts": 1_700_000_000_000 + i}
              for i in range(500)]
    producer = KafkaProducer(bootstrap_servers=kafka_broker.bootstrap)
    for e in events:
        producer.send(topic, key=e["user"].encode(), value=json.dumps(e).encode())
    producer.flush()
    producer.close()

    schema = "user string, item string, rating double, ts long"
    stream = (spark.readStream.format("kafka")
              .option("kafka.bootstrap.servers", kafka_broker.bootstrap)
              .option("subscribe", topic).option("startingOffsets", "earliest").load()
              .select(F.from_json(F.col("value").cast("string"), schema).alias("e")).select("e.*"))
    out = str(tmp_path / "events")
    query = (stream.writeStream.format("delta").option("checkpointLocation", str(tmp_path / "ckpt"))
             .trigger(availableNow=True).start(out))
    query.awaitTermination(120)
    assert query.exception() is None

    got = spark.read.format("delta").load(out)
    assert got.count() == 500
    expected = spark.createDataFrame([(e["user"], e["item"], e["rating"], e["ts"]) for e in events], schema)
    assert_df_equality(got, expected, ignore_row_order=True)
