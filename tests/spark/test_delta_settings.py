"""A MERGE's session-wide transaction id never leaks into a commit made by another thread."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pytest
from pyspark.sql import functions as F

from dsgd import columns as C
from dsgd.delta_conf import delta_settings
from dsgd.factor_store import FactorStore

pytestmark = pytest.mark.spark

TXN = {"spark.databricks.delta.write.txnAppId": "other-writer",
       "spark.databricks.delta.write.txnVersion": "7",
       "spark.databricks.delta.commitInfo.userMetadata": "other-writer:7"}


def _commit_actions(path: str, version: int) -> list[dict]:
    text = (Path(path) / "_delta_log" / f"{version:020d}.json").read_text()
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_write_waits_for_another_threads_txn_settings_and_records_only_its_own(spark, tmp_path):
    store = FactorStore(spark, str(tmp_path / "factors"))
    store.create(rank=2, kind="explicit")
    row = (spark.createDataFrame([("u1", 0, [1.0, 2.0], 0.0, 1)],
                                 "id string, key long, vec array<float>, bias float, count long")
           .withColumn(C.KEY, F.xxhash64(C.ID)))
    held = threading.Event()
    released_at: list[float] = []

    def other_writer() -> None:  # sets its txn id for a (pretend) long MERGE of its own
        with delta_settings(spark, TXN):
            held.set()
            time.sleep(2.0)
            released_at.append(time.monotonic())

    th = threading.Thread(target=other_writer)
    th.start()
    held.wait(30)
    assert store.write(row, None, meta={"stream_id": "s"}, batch_id=3)
    done_at = time.monotonic()
    th.join(30)
    assert released_at and done_at >= released_at[0]  # the write waited for the lock
    actions = _commit_actions(store.path, store.version())
    txns = [a["txn"] for a in actions if "txn" in a]
    assert txns and {(t["appId"], t["version"]) for t in txns} == {("dsgd-factors", 3)}
    info = next(a["commitInfo"] for a in actions if "commitInfo" in a)
    assert info.get("userMetadata") == "dsgd-factors:3"
    for key in TXN:  # nothing left behind in the shared session conf
        assert spark.conf.get(key, None) is None
