"""The evaluation harness's product models run the product's retrain: the ALS snapshot, the replace
policy's live factors and the warm-start policy's live factors in the harness equal those of
``dsgd retrain`` (batch.retrain.run_retrain) on the same history."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from batch.retrain import run_retrain
from batch.retrain_config import RetrainConfig
from dsgd.core import columns as C
from dsgd.evaluation.harness import prepare_stream
from dsgd.evaluation.models import EvalParams, FitCache, Popularity, ProductModel, RetrainSetup, fit_als
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables
from tests.spark.test_retrain import factors, snapshot, write_events

pytestmark = pytest.mark.spark

T0 = 1_700_006_400_000  # a UTC midnight
HOUR = 3_600_000
CUT = T0 + 8 * 24 * HOUR
RANK = 4


def implicit_events(n: int = 600, n_users: int = 25, n_items: int = 18, seed: int = 3) -> pd.DataFrame:
    """Listening events with repeats over 10 days (some after the cut-off), low-rank preferences."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    prob = np.exp(p @ q.T)
    prob /= prob.sum(axis=1, keepdims=True)
    users = rng.integers(n_users, size=n)
    items = np.array([rng.choice(n_items, p=prob[u]) for u in users])
    ts = T0 + np.sort(rng.integers(0, 10 * 24 * HOUR, size=n))
    names = np.array([f"u{u:03d}" for u in users], dtype=object)
    names[ts < T0 + 24 * HOUR] = [f"old{u % 3}" for u in users[ts < T0 + 24 * HOUR]]  # gone after day 1
    return pd.DataFrame({C.USER: names, C.ITEM: [f"i{i:03d}" for i in items], C.RATING: np.full(n, np.nan, np.float32),
                         C.TS: ts, C.SEQ: np.arange(n, dtype=np.int64)})


def harness_cfg(base_config, tmp_path, **retrain):
    cfg = base_config.replace(
        app={"warehouse": str(tmp_path / "warehouse"), "checkpoint_root": str(tmp_path / "ckpt")},
        model={"kind": "implicit", "rank": RANK, "engine": "local", "blocks": 2, "lr": 0.05, "reg": 0.01,
               "negatives": 3, "seed": 11},
        retrain={"als_max_iter": 4, "als_reg": 0.05, "als_alpha": 2.0, **retrain})
    return cfg


def _rows(stream, snap: dict, side: str) -> dict[str, np.ndarray]:
    ids = stream.user_ids if side == "user" else stream.item_ids
    return {str(ids[r]): v for r, v in zip(snap[f"{side}_rows"], snap[f"{side}_vec"], strict=True)}


@pytest.mark.parametrize("recency", [{}, {"window_days": 6.0, "half_life_days": 2.0}], ids=["all", "recent"])
def test_harness_als_snapshot_and_replace_equal_dsgd_retrain(spark, base_config, tmp_path, recency):
    cfg = harness_cfg(base_config, tmp_path, **recency)
    ev = implicit_events()
    before = ev[ev[C.TS] <= CUT]
    write_events(spark, cfg, before)  # `dsgd retrain` sees the history up to the cut-off only
    res = run_retrain(spark, cfg, as_of_ms=CUT, retrain=RetrainConfig(**{**cfg.retrain.__dict__, "policy": "replace"}))
    assert res.status == "blended" and res.metrics["replayed_events"] == 0

    stream = prepare_stream(ev)
    end = int((stream.ts <= CUT).sum())
    setup = RetrainSetup(cfg=cfg, cache=FitCache(), spark_factory=lambda: spark)
    snap = fit_als(setup, stream, end, CUT)
    for side, name in ((C.SIDE_USER, "user"), (C.SIDE_ITEM, "item")):
        want = snapshot(spark, cfg, CUT, side)
        got = _rows(stream, snap, name)
        assert set(got) == set(want) and len(got) > 5
        for k, (vec, _, _) in want.items():
            np.testing.assert_allclose(got[k], vec, rtol=1e-4, atol=1e-5)
        live = factors(spark, cfg, side)  # replace with nothing after the cut-off: live = snapshot
        for k, (vec, _, _) in live.items():
            np.testing.assert_allclose(got[k], vec, rtol=1e-4, atol=1e-5)
    fitted = set(_rows(stream, snap, "user"))
    assert ({"old0", "old1", "old2"} & fitted == set()) == bool(recency)  # the window leaves day-1 users out

    # the harness's replace model installs exactly these rows at the boundary
    model = ProductModel("als+online:replace", EvalParams(), Popularity(), stream, setup)
    model.update(stream, 0, end, 0)
    model.retrain(stream, end, 1, CUT)
    dm = model.online.m
    np.testing.assert_array_equal(dm.users.vec[snap["user_rows"]], snap["user_vec"])
    np.testing.assert_array_equal(dm.items.vec[snap["item_rows"]], snap["item_vec"])


def test_harness_warm_start_equals_dsgd_retrain_warm_start_from_the_same_online_factors(spark, base_config, tmp_path):
    cfg = harness_cfg(base_config, tmp_path, warm_start_epochs=2, warm_start_lr=0.03)
    ev = implicit_events(seed=4)
    stream = prepare_stream(ev)
    end = int((stream.ts <= CUT).sum())
    write_events(spark, cfg, ev.iloc[:end])
    setup = RetrainSetup(cfg=cfg, cache=FitCache(), spark_factory=lambda: spark)
    model = ProductModel("retrain+online:warm-start", EvalParams(), Popularity(), stream, setup)
    for b, lo in enumerate(range(0, end, 100)):  # the online model as the stream trains it
        model.update(stream, lo, min(end, lo + 100), b)
    dm = model.online.m

    def frame(side, ids):
        known = np.flatnonzero(side.known)
        return spark.createDataFrame(
            [(str(ids[r]), 0, side.vec[r].tolist(), float(side.bias[r]), int(side.count[r])) for r in known],
            "id string, key long, vec array<float>, bias float, count long").withColumn(C.KEY, F.xxhash64(C.ID))

    store = FactorStore(spark, Tables.from_config(cfg).factors)
    store.create(rank=RANK, kind="implicit")
    store.write(frame(dm.users, stream.user_ids), frame(dm.items, stream.item_ids), meta={"stream_id": "s1"},
                batch_id=0)
    res = run_retrain(spark, cfg, as_of_ms=CUT, retrain=RetrainConfig(**{**cfg.retrain.__dict__,
                                                                           "policy": "warm-start"}))
    assert res.status == "blended"
    before = dm.users.vec.copy()
    model.retrain(stream, end, 1, CUT)
    assert not np.array_equal(before, dm.users.vec)  # the epochs moved the factors
    for side, ids, name in ((dm.users, stream.user_ids, C.SIDE_USER), (dm.items, stream.item_ids, C.SIDE_ITEM)):
        live = factors(spark, cfg, name)
        assert len(live) == int(side.known.sum())
        for r in np.flatnonzero(side.known):
            vec, _, count = live[str(ids[r])]
            np.testing.assert_array_equal(side.vec[r], vec)
            assert side.count[r] == count
