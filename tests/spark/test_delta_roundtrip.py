from __future__ import annotations

import pytest
from chispa import assert_df_equality

pytestmark = pytest.mark.spark


def test_delta_write_read_and_time_travel_round_trip(spark, tmp_path):
    path = str(tmp_path / "t")
    v0 = spark.createDataFrame([("u1", "i1", 4.0), ("u2", "i2", 3.5)], "user string, item string, rating double")
    v1 = spark.createDataFrame([("u3", "i9", 1.0)], "user string, item string, rating double")
    v0.write.format("delta").save(path)
    v1.write.format("delta").mode("overwrite").save(path)

    latest = spark.read.format("delta").load(path)
    assert_df_equality(latest, v1, ignore_row_order=True)
    first = spark.read.format("delta").option("versionAsOf", 0).load(path)
    assert_df_equality(first, v0, ignore_row_order=True)
    history = spark.sql(f"DESCRIBE HISTORY delta.`{path}`").orderBy("version").collect()
    assert [h.version for h in history] == [0, 1]
