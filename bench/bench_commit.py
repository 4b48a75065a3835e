"""Per-micro-batch Delta cost of the factor write: ``FactorStore.write`` (one append of the changed row
versions with the compare-and-swap on the model sequence, i.e. a Delta transaction id, plus the check
that the commit is its own) against a plain idempotent append of the same rows, same run; and that
idempotent append (``txnAppId``/``txnVersion``) against the same append without a transaction id (what
the trainer does for a metrics row it knows is new); and, alternating with the factor write, the MERGE
it replaced (``--merge``: an upsert of the same rows on ``(side, id)`` into a one-row-per-key copy of the
table, the metadata row updated only if it still holds the metadata read before, i.e. the
compare-and-swap of the MERGE-based ``FactorStore.write`` until commit ``8f0e5a4``, with the session-wide
idempotent-transaction settings it needed). Prints JSON.

A factors table with ``--users`` user and ``--items`` item rows is created; then ``--batches`` writes
of ``--rows`` changed user rows + as many item rows each (the shape of a tiny micro-batch) are timed,
the first three dropped as warm-up; the Spark jobs of one write are counted. ``--conf key=value``
sets extra session settings for the whole run (e.g. ``spark.sql.adaptive.enabled=false``).

    .venv/bin/python bench/bench_commit.py [--batches 15] [--rows 6] [--merge] [--conf k=v ...]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsgd.core import columns as C  # noqa: E402
from dsgd.core.config import load_config  # noqa: E402
from dsgd.engines.spark import factors_to_spark  # noqa: E402
from dsgd.store.delta_settings import delta_settings  # noqa: E402
from dsgd.store.factor_store import FactorStore  # noqa: E402
from dsgd.store.session import build_session  # noqa: E402
from dsgd.store.tables import append_once  # noqa: E402


def _rows(rng: np.random.Generator, n: int, offset: int, rank: int) -> pd.DataFrame:
    return pd.DataFrame({"id": [f"x{i}" for i in range(offset, offset + n)],
                         "key": np.arange(offset, offset + n, dtype=np.int64),
                         "vec": list(rng.normal(size=(n, rank)).astype(np.float32)),
                         "bias": np.zeros(n, np.float32), "count": np.ones(n, np.int64)})


def merge_write(store: FactorStore, users, items, *, batch_id: int) -> None:
    """The factor write as one MERGE (the layout before ``model_seq``: one row per key, updated in place),
    with the metadata compare-and-swap and the session-wide transaction id of that version."""
    from delta.tables import DeltaTable
    from pyspark.sql import functions as F

    spark = store.spark
    expected = store.meta_raw()
    meta = {**json.loads(expected), "last_batch": batch_id}
    rows = None
    for side, df in ((C.SIDE_USER, users), (C.SIDE_ITEM, items)):
        part = df.select(F.lit(side).alias(C.SIDE), C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT)
        rows = part if rows is None else rows.unionByName(part)
    source = store._meta_df(meta, batch_id, 0).withColumn("_expected", F.lit(expected)).unionByName(rows.select(
        C.SIDE, C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, F.lit(batch_id).cast("long").alias(C.LAST_BATCH),
        F.current_timestamp().alias(C.UPDATED_AT), F.lit(None).cast("string").alias("meta"),
        F.lit(0).cast("long").alias(C.MODEL_SEQ), F.lit(None).cast("string").alias("_expected")))
    cols = [c.name for c in store.table().schema.fields]
    values = {c: f"s.{c}" for c in cols}
    guarded = {**values, "meta": "CASE WHEN t.meta = s._expected THEN s.meta "
                                 "ELSE raise_error('stale: the model metadata moved') END"}
    settings = {"spark.databricks.delta.write.txnAppId": "bench-factors",
                "spark.databricks.delta.write.txnVersion": str(batch_id),
                "spark.databricks.delta.commitInfo.userMetadata": f"bench-factors:{batch_id}"}
    with delta_settings(spark, settings):
        (DeltaTable.forPath(spark, store.path).alias("t")
         .merge(source.alias("s"), "t.side = s.side AND t.id = s.id")
         .whenMatchedUpdate(condition=f"s.side = '{C.SIDE_META}'", set=guarded)
         .whenMatchedUpdate(set=values)
         .whenNotMatchedInsert(values=values)
         .execute())


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--users", type=int, default=5000)
    ap.add_argument("--items", type=int, default=2000)
    ap.add_argument("--rows", type=int, default=6)
    ap.add_argument("--batches", type=int, default=15)
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--merge", action="store_true", help="also time the MERGE-based factor write, alternating")
    ap.add_argument("--conf", nargs="*", default=[])
    a = ap.parse_args(argv)
    root = Path(tempfile.mkdtemp(prefix="dsgd-bench-commit-"))
    cfg = load_config(profile="local", overrides=[f'app.warehouse="{root}"', "spark.shuffle_partitions=2"])
    spark = build_session(cfg)
    for kv in a.conf:
        spark.conf.set(*kv.split("=", 1))
    sc = spark.sparkContext
    rng = np.random.default_rng(0)
    try:
        store = FactorStore(spark, str(root / "factors"))
        mstore = FactorStore(spark, str(root / "merge-factors"))
        for st in (store, mstore) if a.merge else (store,):
            st.create(rank=a.rank, kind="implicit")
            st.write(factors_to_spark(spark, _rows(np.random.default_rng(0), a.users, 0, a.rank), a.rank),
                     factors_to_spark(spark, _rows(np.random.default_rng(1), a.items, 0, a.rank), a.rank), meta={},
                     batch_id=0)
        if a.merge:
            mstore.compact()  # one row per key: the layout the MERGE updated in place
        head = store.head()
        write_s, merge_s, jobs, merge_jobs = [], [], 0, 0
        for b in range(1, a.batches + 1):
            u = factors_to_spark(spark, _rows(rng, a.rows, b * 3, a.rank), a.rank)
            i = factors_to_spark(spark, _rows(rng, a.rows, b, a.rank), a.rank)
            before = len(sc.statusTracker().getJobIdsForGroup(None))
            t0 = time.perf_counter()
            store.write(u, i, meta={"batch": b}, batch_id=b, expected=head)
            write_s.append(time.perf_counter() - t0)
            jobs = len(sc.statusTracker().getJobIdsForGroup(None)) - before
            head = store.last_written
            if a.merge:
                before = len(sc.statusTracker().getJobIdsForGroup(None))
                t0 = time.perf_counter()
                merge_write(mstore, u, i, batch_id=b)
                merge_s.append(time.perf_counter() - t0)
                merge_jobs = len(sc.statusTracker().getJobIdsForGroup(None)) - before
        # the same rows appended with and without a transaction id (dsgd.store.tables.append_once), alternating
        append_s: dict[bool, list[float]] = {True: [], False: []}
        append_jobs: dict[bool, int] = {}
        for b in range(a.batches):
            df = factors_to_spark(spark, _rows(rng, 2 * a.rows, b, a.rank), a.rank)
            for txn in (True, False):
                before = len(sc.statusTracker().getJobIdsForGroup(None))
                t0 = time.perf_counter()
                append_once(df, str(root / f"append-txn-{txn}"), app_id="bench", version=b, txn=txn)
                append_s[txn].append(time.perf_counter() - t0)
                append_jobs[txn] = len(sc.statusTracker().getJobIdsForGroup(None)) - before
        out = {"bench": "commit", "conf": a.conf, "rows_per_side": a.rows, "table_rows": a.users + a.items,
               "factor_write_median_s": round(float(np.median(write_s[3:])), 3),
               "factor_write_p90_s": round(float(np.percentile(write_s[3:], 90)), 3),
               "spark_jobs_per_factor_write": jobs,
               "plain_txn_append_median_s": round(float(np.median(append_s[True][3:])), 3),
               "no_txn_append_median_s": round(float(np.median(append_s[False][3:])), 3),
               "spark_jobs_per_append_txn_vs_no_txn": [append_jobs[True], append_jobs[False]],
               "factor_write_over_append": round(float(np.median(write_s[3:]) / np.median(append_s[True][3:])), 2)}
        if a.merge:
            out.update({"merge_median_s": round(float(np.median(merge_s[3:])), 3),
                        "merge_p90_s": round(float(np.percentile(merge_s[3:], 90)), 3),
                        "spark_jobs_per_merge": merge_jobs,
                        "merge_over_factor_write": round(float(np.median(merge_s[3:]) / np.median(write_s[3:])), 2)})
        out["loadavg_1m_at_end"] = os.getloadavg()[0]
        print(json.dumps(out, indent=1))
        return out
    finally:
        spark.stop()
        shutil.rmtree(root, ignore_errors=True)


if __name__ == "__main__":
    main()
