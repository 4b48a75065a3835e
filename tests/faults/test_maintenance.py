"""Item 9: maintenance compacts the factor table, and VACUUM at the configured retention keeps rollback
inside the window working."""

from __future__ import annotations

import json

import pytest
from delta.tables import DeltaTable

from dsgd.factor_store import FactorStore
from streaming.trainer import StreamTrainer
from tests.faults.helpers import metrics, stream_cfg
from tests.kafka.stream_helpers import assert_same_factors, known_stream, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def _rows(spark, path, version=None):
    reader = spark.read.format("delta")
    if version is not None:
        reader = reader.option("versionAsOf", version)
    df = reader.load(path).where("side != 'm'").toPandas()
    return df.sort_values(["side", "id"]).reset_index(drop=True)


def test_compaction_reduces_files_and_vacuum_keeps_rollback_inside_the_retention_window(
        spark, kafka_broker, topic, cfg, tmp_path):
    produce(kafka_broker.bootstrap, topic, known_stream(1200, seed=29))
    c = stream_cfg(cfg, topic, tmp_path, kafka={"max_offsets_per_trigger": 200},
                   stream={"maintenance_every": 4, "vacuum_retention_hours": 1.0})
    assert StreamTrainer(spark, c).run(timeout_s=400) == 0
    assert len(metrics(spark, c)) == 6
    path = f"{c.app.warehouse}/factors"
    hist = DeltaTable.forPath(spark, path).history().toPandas().sort_values("version")
    opt = hist[hist["operation"] == "OPTIMIZE"]
    assert len(opt) == 1, hist[["version", "operation"]]
    v_opt = int(opt["version"].iloc[0])
    files_before = len(spark.read.format("delta").option("versionAsOf", v_opt - 1).load(path).inputFiles())
    files_after = len(spark.read.format("delta").option("versionAsOf", v_opt).load(path).inputFiles())
    assert files_after < files_before, (files_before, files_after)

    # a model version from before the compaction + vacuum (within the 1 h window): rollback is exact
    merges = hist[(hist["operation"] == "MERGE") & (hist["version"] < v_opt)]
    v_old = int(merges["version"].iloc[1])
    store = FactorStore(spark, path)
    old_rows, old_meta = _rows(spark, path, v_old), store.meta(v_old)
    assert len(old_rows) > 0
    store.restore(version=v_old)
    assert_same_factors(old_rows, _rows(spark, path), atol=0)
    assert store.meta() == old_meta
    assert json.loads(json.dumps(old_meta))["last_batch"] < 5

    # the window is what protects rollback: with 0 h retention the pre-compaction files are gone
    store.vacuum(0.0)
    with pytest.raises(Exception, match=r"(?i)(not found|does not exist|FileNotFound|DELTA_FILE)"):
        _rows(spark, path, v_opt - 1)
