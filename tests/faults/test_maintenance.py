"""Item 9: maintenance compacts the factor table, and its VACUUM at the configured retention deletes what
is older than the window while rollback to a version replaced inside the window keeps working.

Delta's VACUUM works in whole hours, so the window of the test is 1 h: files older than that are made by
setting the modification time of two unreferenced files (what a crashed write leaves behind), one 2 h
old (outside the window) and one 10 min old (inside it).
"""

from __future__ import annotations

import os
import shutil
import time
from pathlib import Path

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


def _history(spark, path):
    hist = DeltaTable.forPath(spark, path).history().toPandas().sort_values("version").reset_index(drop=True)
    hist["label"] = hist["userMetadata"].fillna("")
    return hist


def _write_of(hist, batch_id: int) -> int:
    rows = hist[hist["label"].str.contains(f"-factors:{batch_id}:")]
    assert len(rows) == 1, hist[["version", "operation", "label"]]
    return int(rows["version"].iloc[0])


def _orphan(path: str, name: str, age_s: float) -> Path:
    """An unreferenced data file in the table's user partition, last modified ``age_s`` ago."""
    some = next(Path(path, "side=m").glob("*.parquet"))
    target = Path(path, "side=u", name)
    target.parent.mkdir(exist_ok=True)
    shutil.copy(some, target)
    t = time.time() - age_s
    os.utime(target, (t, t))
    return target


def test_compaction_reduces_files_and_vacuum_keeps_rollback_inside_the_retention_window(
        spark, kafka_broker, topic, cfg, tmp_path):
    produce(kafka_broker.bootstrap, topic, known_stream(1200, seed=29))
    c = stream_cfg(cfg, topic, tmp_path, kafka={"max_offsets_per_trigger": 200},
                   stream={"maintenance_every": 4, "vacuum_retention_hours": 1.0})
    path = f"{c.app.warehouse}/factors"
    trainer = StreamTrainer(spark, c)  # creates the factors table
    old_orphan = _orphan(path, "part-09998-orphan-2h.c000.snappy.parquet", 2 * 3600)
    new_orphan = _orphan(path, "part-09999-orphan-10min.c000.snappy.parquet", 600)
    assert trainer.run(timeout_s=400) == 0
    assert list(metrics(spark, c)["batch_id"]) == list(range(6))
    hist = _history(spark, path)

    # the compaction: a rewrite to one row per key (the model unchanged), then OPTIMIZE if files remain
    # to bin-pack; then VACUUM
    compact = hist[hist["label"].str.startswith("dsgd-compact")]
    assert len(compact) == 1, hist[["version", "operation", "label"]]
    v_c = int(compact["version"].iloc[0])
    v_opt = v_c + 1 if (hist[hist["version"] == v_c + 1]["operation"] == "OPTIMIZE").any() else v_c
    v_pre = v_c - 1
    assert v_pre == _write_of(hist, 4)  # the pass ran after batch 4's factor commit
    assert (hist["operation"] == "VACUUM END").sum() == 1
    assert_same_factors(_rows(spark, path, v_pre), _rows(spark, path, v_opt), atol=0)
    assert _stored_rows(spark, path, v_opt) == len(_rows(spark, path, v_opt)) + 1  # + the metadata row
    assert _stored_rows(spark, path, v_pre) > _stored_rows(spark, path, v_opt)  # superseded versions dropped
    files_before = len(spark.read.format("delta").option("versionAsOf", v_pre).load(path).inputFiles())
    files_after = len(spark.read.format("delta").option("versionAsOf", v_opt).load(path).inputFiles())
    assert files_after < files_before, (files_before, files_after)

    # VACUUM at the 1 h retention: what is older than the window went, what is inside stayed
    assert not old_orphan.exists(), "VACUUM kept a file older than the retention window"
    assert new_orphan.exists(), "VACUUM deleted a file inside the retention window"

    # inside the window: batch 1's model (replaced by the compaction minutes ago) rolls back exactly
    v_old = _write_of(hist, 1)
    store = FactorStore(spark, path)
    old_rows, old_meta = _rows(spark, path, v_old), store.meta(v_old)
    assert len(old_rows) > 0 and old_meta["last_batch"] == 1
    store.restore(version=v_old)
    assert_same_factors(old_rows, _rows(spark, path), atol=0)
    assert store.meta() == old_meta

    # a fractional retention is never shorter than asked (Delta takes whole hours; 0.01 h acted as 0 h)
    store.compact()
    v_restored = store.version() - (2 if _history(spark, path)["operation"].iloc[-1] == "OPTIMIZE" else 1)
    store.vacuum(0.01)
    assert_same_factors(_rows(spark, path, v_restored), _rows(spark, path), atol=0)

    # the window is what protects rollback: with 0 h retention the pre-compaction files are gone
    store.vacuum(0.0)
    assert not new_orphan.exists()
    with pytest.raises(Exception, match=r"(?i)(not found|does not exist|FileNotFound|DELTA_FILE|FILE_NOT_EXIST)"):
        _rows(spark, path, v_pre)
