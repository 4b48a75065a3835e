"""Item 9: maintenance compacts the factor table, and VACUUM at the configured retention keeps rollback
inside the window working."""

from __future__ import annotations

import json

import pytest
from delta.tables import DeltaTable

from dsgd.store.factor_store import FactorStore
from streaming.trainer import StreamTrainer
from tests.faults.helpers import metrics, stream_cfg
from tests.kafka.stream_helpers import assert_same_factors, known_stream, produce

pytestmark = [pytest.mark.faults, pytest.mark.kafka, pytest.mark.spark]


def _rows(spark, path, version=None):
    df = FactorStore(spark, path).current(version).where("side != 'm'").toPandas()
    return df.sort_values(["side", "id"]).reset_index(drop=True)


def _stored_rows(spark, path, version):
    return spark.read.format("delta").option("versionAsOf", version).load(path).count()


def test_compaction_reduces_files_and_vacuum_keeps_rollback_inside_the_retention_window(
        spark, kafka_broker, topic, cfg, tmp_path):
    produce(kafka_broker.bootstrap, topic, known_stream(1200, seed=29))
    c = stream_cfg(cfg, topic, tmp_path, kafka={"max_offsets_per_trigger": 200},
                   stream={"maintenance_every": 4, "vacuum_retention_hours": 1.0})
    assert StreamTrainer(spark, c).run(timeout_s=400) == 0
    assert len(metrics(spark, c)) == 6
    path = f"{c.app.warehouse}/factors"
    hist = DeltaTable.forPath(spark, path).history().toPandas().sort_values("version")
    # the compaction: a rewrite to one row per key (the model unchanged), then OPTIMIZE if files remain
    # to bin-pack
    compact = hist[hist["userMetadata"].fillna("").str.startswith("dsgd-compact")]
    assert len(compact) == 1, hist[["version", "operation", "userMetadata"]]
    v_c = int(compact["version"].iloc[0])
    v_opt = v_c + 1 if (hist[hist["version"] == v_c + 1]["operation"] == "OPTIMIZE").any() else v_c
    v_pre = v_c - 1
    assert_same_factors(_rows(spark, path, v_pre), _rows(spark, path, v_opt), atol=0)
    assert _stored_rows(spark, path, v_opt) == len(_rows(spark, path, v_opt)) + 1  # + the metadata row
    assert _stored_rows(spark, path, v_pre) > _stored_rows(spark, path, v_opt)  # superseded versions dropped
    files_before = len(spark.read.format("delta").option("versionAsOf", v_pre).load(path).inputFiles())
    files_after = len(spark.read.format("delta").option("versionAsOf", v_opt).load(path).inputFiles())
    assert files_after < files_before, (files_before, files_after)

    # a model version from before the compaction + vacuum (within the 1 h window): rollback is exact
    writes = hist[hist["userMetadata"].fillna("").str.contains("-factors:") & (hist["version"] < v_opt)]
    v_old = int(writes["version"].iloc[1])
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
        _rows(spark, path, v_pre)
