"""A session-wide Delta transaction id (set under ``dsgd.store.delta_settings``) never leaks into a commit made by
another thread."""

from __future__ import annotations

import json
import threading
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dsgd.core import columns as C
from dsgd.store.delta_settings import delta_settings
from dsgd.store.factor_store import CAS_APP, FactorStore

pytestmark = pytest.mark.spark

TXN = {"spark.databricks.delta.write.txnAppId": "other-writer",
       "spark.databricks.delta.write.txnVersion": "7",
       "spark.databricks.delta.commitInfo.userMetadata": "other-writer:7"}


def _commit_actions(path: str, version: int) -> list[dict]:
    text = (Path(path) / "_delta_log" / f"{version:020d}.json").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_factor_write_ignores_another_threads_session_txn_settings_and_records_only_its_own(spark, tmp_path):
    """The factor commit passes its transaction id and user metadata as writer options, which take
    precedence over the session conf: it neither waits for nor picks up another thread's settings."""
    store = FactorStore(spark, str(tmp_path / "factors"))
    store.create(rank=2, kind="explicit")
    row = (spark.createDataFrame([("u1", 0, [1.0, 2.0], 0.0, 1)],
                                 "id string, key long, vec array<float>, bias float, count long")
           .withColumn(C.KEY, F.xxhash64(C.ID)))
    held, done = threading.Event(), threading.Event()

    def other_writer() -> None:  # holds its session-wide txn id, as a MERGE or VACUUM would
        with delta_settings(spark, TXN):
            held.set()
            done.wait(300)

    wrote: list[bool] = []
    writer = threading.Thread(target=lambda: wrote.append(store.write(row, None, meta={"stream_id": "s"}, batch_id=3)))
    th = threading.Thread(target=other_writer)
    th.start()
    assert held.wait(30)
    try:
        assert spark.conf.get("spark.databricks.delta.write.txnAppId") == "other-writer"
        writer.start()
        writer.join(90)  # the write takes a second or two; one that waited for the lock would hang here
        assert not writer.is_alive(), "the factor write waited for another thread's Delta settings"
        assert th.is_alive() and not done.is_set()  # ... which were held the whole time
        assert wrote == [True]
    finally:
        done.set()
        th.join(30)
        writer.join(300)
    actions = _commit_actions(store.path, store.version())
    txns = [a["txn"] for a in actions if "txn" in a]
    assert txns and {(t["appId"], t["version"]) for t in txns} == {(CAS_APP, 1)}
    info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
    assert info.get("userMetadata", "").startswith("dsgd-factors:3:1:")
    for key in TXN:  # nothing left behind in the shared session conf
        assert spark.conf.get(key, None) is None


def test_a_commit_without_writer_options_waits_for_another_threads_settings_and_records_none_of_them(spark, tmp_path):
    """A write that has no writer options of its own (OPTIMIZE, the export, the snapshot) runs inside
    ``delta_settings(spark)``: while another thread holds session-wide settings it waits, then commits
    without them."""
    path = str(tmp_path / "plain")
    spark.range(3).write.format("delta").save(path)
    held, release = threading.Event(), threading.Event()

    def other_writer() -> None:
        with delta_settings(spark, TXN):
            held.set()
            release.wait(300)

    def plain_write() -> None:
        with delta_settings(spark):
            spark.range(2).write.format("delta").mode("append").save(path)

    th = threading.Thread(target=other_writer)
    th.start()
    assert held.wait(30)
    writer = threading.Thread(target=plain_write)
    try:
        writer.start()
        writer.join(8)  # an unguarded append commits within a second or two
        assert writer.is_alive(), "a write committed while another thread's session settings were set"
        assert not (Path(path) / "_delta_log" / f"{1:020d}.json").exists()
    finally:
        release.set()
        th.join(30)
        writer.join(120)
    assert not writer.is_alive()
    actions = _commit_actions(path, 1)
    assert not [a for a in actions if "txn" in a], actions
    assert "userMetadata" not in next(a["commitInfo"] for a in actions if "commitInfo" in a)
