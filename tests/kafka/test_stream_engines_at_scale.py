"""The engines' scale paths (issue 19): the Spark engine trains a model the driver may not hold, with the
same factors and evaluation as the local engine; the local engine refuses a model over its limit."""

from __future__ import annotations

import logging

import numpy as np
import pytest

from streaming.trainer import StreamTrainer
from tests.kafka.stream_helpers import factors, known_stream, produce

pytestmark = [pytest.mark.kafka, pytest.mark.spark]


def _cfg(cfg, topic, root, **model):
    return cfg.replace(app={"warehouse": str(root / "wh"), "checkpoint_root": str(root / "ck")},
                       kafka={"topic": topic, "max_offsets_per_trigger": 300},
                       stream={"trigger": "available_now", "eval_max_events": 12},
                       model={"blocks": 2, "negatives": 3, "lr": 0.1, **model})


def test_spark_engine_with_a_driver_limit_below_the_model_equals_the_local_engine(spark, kafka_broker, topic, cfg,
                                                                                  tmp_path):
    df = known_stream(900, seed=9)  # up to 120 users and 80 items
    produce(kafka_broker.bootstrap, topic, df)
    local = _cfg(cfg, topic, tmp_path / "local", engine="local")
    on_spark = _cfg(cfg, topic, tmp_path / "spark", engine="spark", spark_exchange="shuffle", local_max_rows=40)
    assert StreamTrainer(spark, local).run(timeout_s=300) == 0
    assert StreamTrainer(spark, on_spark).run(timeout_s=300) == 0  # would raise if it collected > 40 rows

    a, b = factors(spark, local.app.warehouse), factors(spark, on_spark.app.warehouse)
    assert len(a) > 4 * on_spark.model.local_max_rows  # the model is several times the driver's limit
    assert list(a["side"] + a["id"]) == list(b["side"] + b["id"])
    np.testing.assert_array_equal(np.stack(a["vec"]), np.stack(b["vec"]))  # bit for bit
    np.testing.assert_array_equal(a["bias"].to_numpy(), b["bias"].to_numpy())
    assert list(a["count"]) == list(b["count"])

    def metrics(c):
        return spark.read.format("delta").load(f"{c.app.warehouse}/metrics").toPandas().sort_values("batch_id")

    ml, ms = metrics(local), metrics(on_spark)
    assert list(ml["batch_id"]) == list(ms["batch_id"])
    for col in ("dcg_events", "new_users", "new_items", "rows_valid"):
        assert list(ml[col]) == list(ms[col]), col
    # the same ranks; the Spark engine scores a target apart from the other items (ulp-level rounding)
    np.testing.assert_allclose(ms["dcg"].to_numpy(float), ml["dcg"].to_numpy(float), rtol=1e-6, equal_nan=True)
    np.testing.assert_allclose(ms["dcg_popularity"].to_numpy(float), ml["dcg_popularity"].to_numpy(float),
                               rtol=1e-12, equal_nan=True)


def test_local_engine_refuses_a_model_over_its_driver_limit_naming_the_key(spark, kafka_broker, topic, cfg,
                                                                           tmp_path, caplog):
    produce(kafka_broker.bootstrap, topic, known_stream(600, seed=4))
    c = _cfg(cfg, topic, tmp_path, engine="local", local_max_rows=50)
    caplog.set_level(logging.ERROR, logger="dsgd.stream")
    assert StreamTrainer(spark, c).run(timeout_s=300) == 1  # the first batch fits; a later one does not
    text = " ".join(r.getMessage() for r in caplog.records)
    assert "model.local_max_rows = 50" in text and "model.engine = spark" in text, text
