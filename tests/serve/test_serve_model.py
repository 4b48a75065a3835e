"""The server answers what ``dsgd recommend`` answers for the same model version, online and score-blend,
hot-reloads every new factors version, and keeps serving the old model when a version fails to load."""

from __future__ import annotations

import shutil

import httpx
import numpy as np
import pytest

from dsgd.core import metric_names as N
from tests.serve.conftest import RANK
from tests.serve.helpers import Server, wait_for

pytestmark = pytest.mark.spark

T0 = 1_700_000_000_000


def _copy(planted, tmp_path):
    wh = tmp_path / "wh"
    shutil.copytree(planted.warehouse, wh)
    return planted.cfg.replace(app={"warehouse": str(wh)}), str(wh)


def _same_as_dsgd_recommend(spark, cfg, srv, users, version):
    from batch.serving import recommend

    for user in users:
        want = recommend(spark, cfg, user, k=10)  # filter_seen: retrain.filter_seen = true, like serve.exclude_seen
        got = httpx.get(f"{srv.url}/users/{user}/recommendations", params={"k": 10}, timeout=30).json()
        assert want["model_version"] == got["model_version"] == version
        assert got["source"] == want["source"] and got["snapshot_id"] == want["snapshot_id"], user
        assert [i["item"] for i in got["items"]] == [i["item"] for i in want["items"]], user
        np.testing.assert_allclose([i["score"] for i in got["items"]], [i["score"] for i in want["items"]],
                                   rtol=1e-6, atol=1e-7)


def test_same_items_and_scores_as_dsgd_recommend_online_then_score_blend_after_a_hot_reload(spark, planted, tmp_path):
    from batch.blend import swap
    from batch.retrain import write_snapshot
    from dsgd import DSGD
    from dsgd.engines.spark import side_to_spark
    from dsgd.store.factor_store import FactorStore

    cfg, wh = _copy(planted, tmp_path)
    store = FactorStore(spark, f"{wh}/factors")
    with Server([f'app.warehouse="{wh}"', "serve.poll_interval_s=0.2"], tmp_path / "serve.log") as srv:
        v0 = srv.wait_ready()["model_version"]
        assert v0 == store.version()
        _same_as_dsgd_recommend(spark, cfg, srv, ["u0", "u5", "nobody"], v0)  # known (seen items), known, cold

        # a batch snapshot of an older history: it lacks the last users and some items; blend it in
        early = planted.events[planted.events["user"].isin([f"u{j}" for j in range(90)])]
        early = early[~early["item"].str.endswith("_24")]
        snap = DSGD(rank=RANK, kind="implicit", lr=0.1, negatives=8, epochs=10, engine="local", seed=9).fit(early)
        write_snapshot(spark, f"{wh}/snapshots", T0, side_to_spark(spark, snap.users), side_to_spark(spark, snap.items),
                       {"as_of": T0, "mu": 0.0})
        swap(spark, store, None, None, base_version=store.version(),
             meta={"blend_policy": "score-blend", "blend_alpha": 0.3, "snapshot_as_of": T0, "snapshot_id": "asof-t0"})
        v1 = store.version()
        ready = srv.wait_ready(v1, timeout=60)
        assert ready["blend_policy"] == "score-blend" and ready["snapshot_id"] == "asof-t0"
        # u1: both models; u101: online only; nobody: cold
        _same_as_dsgd_recommend(spark, cfg, srv, ["u1", "u101", "nobody"], v1)


def test_a_version_that_fails_to_load_is_counted_and_the_old_model_keeps_serving(spark, planted, tmp_path):
    from pyspark.sql import functions as F

    from dsgd.store.factor_store import FactorStore

    cfg, wh = _copy(planted, tmp_path)
    store = FactorStore(spark, f"{wh}/factors")
    with Server([f'app.warehouse="{wh}"', "serve.poll_interval_s=0.2"], tmp_path / "serve.log") as srv:
        v0 = srv.wait_ready()["model_version"]
        schema = "id string, key long, vec array<float>, bias float, count long"
        bad = spark.createDataFrame([("u0", 0, [1.0, 2.0, 3.0], 0.0, 1)], schema)  # rank 3 in a rank-8 model
        store.write(bad.withColumn("key", F.xxhash64("id")), None, meta={}, batch_id=1)
        wait_for(lambda: _failures(srv).get("factors", 0) >= 1, 60, "the failed load was never counted")
        r = httpx.get(f"{srv.url}/users/u0/recommendations", timeout=10)
        assert r.status_code == 200 and r.json()["model_version"] == v0  # still the old model
        assert "loading factors version" in (tmp_path / "serve.log").read_text()
        good = spark.createDataFrame([("u0", 0, [0.1] * RANK, 0.0, 1)], schema).withColumn("key", F.xxhash64("id"))
        store.write(good, None, meta={}, batch_id=2)  # the next version supersedes the bad row: served again
        assert srv.wait_ready(store.version(), timeout=60)["model_version"] == store.version()


def _failures(srv) -> dict:
    from prometheus_client.parser import text_string_to_metric_families

    text = httpx.get(f"{srv.url}/metrics", timeout=10).text
    return {s.labels.get("table"): s.value for f in text_string_to_metric_families(text)
            if f.name == N.SERVE_RELOAD_FAILURES for s in f.samples}
