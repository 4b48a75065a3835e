"""Serving: top-K export, `dsgd recommend`, score-blend scores, rollback."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from batch.blend import swap
from batch.retrain import write_snapshot
from batch.serving import export_top_k, recommend, rollback
from dsgd.core import columns as C
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables

pytestmark = pytest.mark.spark

T0 = 1_700_000_000_000
ONLINE_U = {"u1": [1.0, 0.0], "u2": [0.0, 1.0]}
ONLINE_I = {"i1": ([1.0, 0.0], 5), "i2": ([0.5, 0.5], 4), "i3": ([0.2, 0.9], 3), "i4": ([0.9, 0.1], 2),
            "i5": ([0.0, 0.3], 1)}
BATCH_U = {"u1": [0.0, 2.0], "u2": [1.0, 1.0]}
BATCH_I = {"i1": [0.1, 0.1], "i2": [1.0, 0.0], "i3": [0.0, 1.0], "i4": [0.5, 0.5], "i5": [2.0, 2.0]}


@pytest.fixture
def served(spark, base_config, tmp_path):
    """Events (u1 saw i1, u2 saw i3, cold user u9 saw i1 and has no factors), online factors, a snapshot."""
    cfg = base_config.replace(app={"warehouse": str(tmp_path / "wh"), "checkpoint_root": str(tmp_path / "ck")},
                              model={"kind": "implicit", "rank": 2})
    tables = Tables.from_config(cfg)
    ev = pd.DataFrame({C.USER: ["u1", "u2", "u9"], C.ITEM: ["i1", "i3", "i1"], C.RATING: [None, None, None],
                       C.TS: [T0, T0 + 1, T0 + 2], C.SEQ: [0, 1, 2]})
    (spark.createDataFrame(ev, "user string, item string, rating float, ts long, seq long")
     .withColumn(C.EVENT_DATE, F.to_date(F.timestamp_millis(C.TS)))
     .write.format("delta").partitionBy(C.EVENT_DATE).save(tables.events))
    schema = "id string, key long, vec array<float>, bias float, count long"

    def rows(d):
        return spark.createDataFrame([(k, 0, v[0] if isinstance(v, tuple) else v, 0.0,
                                       v[1] if isinstance(v, tuple) else 1) for k, v in d.items()], schema
                                     ).withColumn(C.KEY, F.xxhash64(C.ID))  # the tables' key: XXH64 of the id

    store = FactorStore(spark, tables.factors)
    store.create(rank=2, kind="implicit")
    store.write(rows(ONLINE_U), rows(ONLINE_I), meta={"stream_id": "s"}, batch_id=0)
    write_snapshot(spark, tables.snapshots, T0, rows(BATCH_U), rows(BATCH_I), {"as_of": T0, "mu": 0.0})
    return cfg, store


def test_export_filters_seen_items_gives_cold_users_popularity_and_k_rows_per_user(spark, served):
    cfg, _store = served
    out = export_top_k(spark, cfg, k=3)
    assert out["users"] == 3 and out["rows"] == 9 and out["cold_users"] == 1
    recs = spark.read.format("delta").load(Tables.from_config(cfg).recommendations).toPandas()
    got = {u: list(g.sort_values("rank")["item"]) for u, g in recs.groupby("user")}
    # u1 = (1, 0): online scores i1 1.0 (seen), i4 0.9, i2 0.5, i3 0.2, i5 0
    assert got["u1"] == ["i4", "i2", "i3"]
    # u2 = (0, 1): i3 0.9 (seen), i2 0.5, i5 0.3, i4 0.1
    assert got["u2"] == ["i2", "i5", "i4"]
    # u9 has no factors: most popular (count) items it has not seen
    assert got["u9"] == ["i2", "i3", "i4"]
    assert set(recs[recs.user == "u9"]["source"]) == {"popularity"}
    assert set(recs[recs.user != "u9"]["source"]) == {"model"}
    assert (recs.groupby("user").size() == 3).all()


def test_score_blend_serves_alpha_batch_plus_one_minus_alpha_online(spark, served):
    cfg, store = served
    swap(spark, store, None, None, base_version=store.version(),
         meta={"blend_policy": "score-blend", "blend_alpha": 0.25, "snapshot_as_of": T0, "snapshot_id": "asof-x"})
    out = recommend(spark, cfg, "u2", k=5, filter_seen=False)
    scores = {r["item"]: r["score"] for r in out["items"]}
    for item, (ovec, _cnt) in ONLINE_I.items():
        want = 0.25 * float(np.dot(BATCH_U["u2"], BATCH_I[item])) + 0.75 * float(np.dot(ONLINE_U["u2"], ovec))
        assert scores[item] == pytest.approx(want, abs=1e-6), item
    assert [r["item"] for r in out["items"]] == sorted(scores, key=lambda i: -scores[i])
    assert out["snapshot_id"] == "asof-x"


def test_dsgd_recommend_prints_json_top_k(spark, served, capsys):
    from dsgd.cli import main

    cfg, _store = served
    args = ["recommend", "--profile", "local", "--user", "u1", "-k", "2",
            "--set", f'app.warehouse="{cfg.app.warehouse}"', "--set", "model.rank=2"]
    assert main(args) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["user"] == "u1" and out["source"] == "model"
    assert [r["item"] for r in out["items"]] == ["i4", "i2"]
    assert out["items"][0]["score"] == pytest.approx(0.9, abs=1e-6)

    assert main(["recommend", "--profile", "local", "--user", "nobody", "-k", "2",
                 "--set", f'app.warehouse="{cfg.app.warehouse}"']) == 0
    cold = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert cold["source"] == "popularity" and [r["item"] for r in cold["items"]] == ["i1", "i2"]


def test_rollback_restores_the_earlier_factors_exactly(spark, served, capsys):
    from dsgd.cli import main

    cfg, store = served
    v = store.version()
    before = store.current(v).drop(C.UPDATED_AT, C.MODEL_SEQ).toPandas().sort_values([C.SIDE, C.ID]).reset_index(drop=True)
    changed = spark.createDataFrame([("u1", 0, [9.0, 9.0], 0.0, 7), ("u3", 0, [1.0, 1.0], 0.0, 1)],
                                    "id string, key long, vec array<float>, bias float, count long")
    store.write(changed, None, meta={"mu": 1.0}, batch_id=5)
    assert store.meta()["last_batch"] == 5

    assert main(["rollback", "--profile", "local", "--version", str(v), "--set",
                 f'app.warehouse="{cfg.app.warehouse}"']) == 0
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["restored_from"] == v + 1 and out["factors_version"] == v + 2
    # the command says what changed: the two user rows the write had changed, and a top-k before/after
    ch = out["changes"]
    assert ch["versions"] == [v + 1, v + 2] and ch["rows_changed"] == {"u": 2, "i": 0}, ch
    assert ch["user"] and len(ch["top_k_after"]) <= 10 and 0 <= ch["top_k_kept"] <= len(ch["top_k_after"]), ch
    after = store.current().drop(C.UPDATED_AT, C.MODEL_SEQ).toPandas().sort_values([C.SIDE, C.ID]).reset_index(drop=True)
    pd.testing.assert_frame_equal(after.drop(columns=[C.VEC]), before.drop(columns=[C.VEC]))
    assert [list(x) for x in after[C.VEC].dropna()] == [list(x) for x in before[C.VEC].dropna()]
    with pytest.raises(ValueError, match="does not exist"):
        rollback(spark, cfg, version=99)
    # by timestamp: the answer names the version the timestamp resolved to
    from delta.tables import DeltaTable

    at = DeltaTable.forPath(spark, store.path).history().where(f"version = {v}").first()["timestamp"]
    out = rollback(spark, cfg, timestamp=str(at))
    assert out["restored_to_version"] == v and out["restored_to_timestamp"] == str(at), out
    with pytest.raises(ValueError, match="no version of the factors table was committed at or before"):
        rollback(spark, cfg, timestamp="2001-01-01 00:00:00")
