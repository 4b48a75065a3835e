"""The DSGD estimator and model: engine parity, reference equality, recovery, determinism, recommend."""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pandas as pd
import pytest

from dsgd.api import DSGD, DSGDModel
from dsgd.core.config import ModelConfig
from dsgd.core.hashing import id_key, init_vectors, mix_seed
from dsgd.core.reference import run_block_reference
from dsgd.core.schedules import make_schedule
from dsgd.evaluation.synthetic import planted_ratings

pytestmark = pytest.mark.spark


def _events(n=400, n_u=25, n_i=18, seed=0, int_ids=False, with_seq=True):
    rng = np.random.default_rng(seed)
    u, i = rng.integers(0, n_u, n), rng.integers(0, n_i, n)
    df = pd.DataFrame({
        "user": u if int_ids else np.array([f"u{x}" for x in u], dtype=object),
        "item": (i + 1000) if int_ids else np.array([f"i{x}" for x in i], dtype=object),
        "rating": rng.integers(1, 6, n).astype(np.float32),
        "ts": rng.integers(0, 50, n).astype(np.int64),  # many ties: seq decides
    })
    if with_seq:
        df["seq"] = np.arange(n, dtype=np.int64)
    return df


def _assert_same_factors(a: DSGDModel, b: DSGDModel) -> None:
    """Bit for bit: same ids, vectors, biases and counts."""
    for x, y in [(a.user_ids, b.user_ids), (a.item_ids, b.item_ids)]:
        assert x.tolist() == y.tolist()
    pairs = [(a.user_vecs, b.user_vecs), (a.user_bias, b.user_bias), (a.item_vecs, b.item_vecs),
             (a.item_bias, b.item_bias), (a.user_count, b.user_count), (a.item_count, b.item_count)]
    for x, y in pairs:
        np.testing.assert_array_equal(x, y)


def _reference_d1(ev: pd.DataFrame, est: DSGD, mu: float):
    """Sequential NumPy reference of fit with d = 1: one block, seeds as dsgd.engines.local.train_epochs."""
    users = np.array(sorted(set(ev["user"])), dtype=object)
    items = np.array(sorted(set(ev["item"]), key=lambda s: int(id_key([s])[0])), dtype=object)  # by key
    uk, ik = id_key(users), id_key(items)
    U = init_vectors(uk, est.rank, est.seed, est.init_scale, "u")
    V = init_vectors(ik, est.rank, est.seed, est.init_scale, "i")
    bu, bi = np.zeros(len(users), np.float32), np.zeros(len(items), np.float32)
    cu, ci = np.zeros(len(users), np.int64), np.zeros(len(items), np.int64)
    u_idx = pd.Index(users).get_indexer(ev["user"])
    i_idx = pd.Index(items).get_indexer(ev["item"])
    pool = np.arange(len(items))  # item rows sorted by key, as both engines
    sched = make_schedule(est.lr_schedule, est.lr)
    params = est.kernel_params(mu)
    losses = []
    for e in range(est.epochs):
        p = dataclasses.replace(params, lr=sched.rate(e))
        sse, n = run_block_reference(U, bu, cu, V, bi, ci, u_idx, i_idx, ev["rating"].to_numpy(np.float32),
                                     ev["ts"].to_numpy(), ev["seq"].to_numpy(), pool,
                                     (ci[pool] + 1).astype(np.float64), p, mix_seed(est.seed, 0, e, 0, 0),
                                     count=e == 0)
        losses.append(sse / n)
        sched.observe(sse / n)
    return users, U, bu, items, V, bi, losses


@pytest.mark.parametrize("kind", ["explicit", "implicit"])
def test_d1_spark_fit_equals_sequential_numpy_reference(spark, kind):
    ev = _events()
    est = DSGD(rank=4, kind=kind, lr=0.05, lr_schedule="inverse_sqrt", reg=0.01, init_scale=0.1, blocks=1,
               epochs=2, seed=7, negatives=3, negative_sampling="popularity", engine="spark")
    model = est.fit(spark.createDataFrame(ev))
    assert model.engine == "spark"
    mu = float(ev["rating"].astype(np.float64).mean()) if kind == "explicit" else 0.0
    assert model.mu == pytest.approx(mu, abs=1e-12)
    users, U, bu, items, V, bi, losses = _reference_d1(ev, est, mu)
    ur, ir = pd.Index(model.user_ids).get_indexer(users), pd.Index(model.item_ids).get_indexer(items)
    assert (ur >= 0).all() and (ir >= 0).all() and len(model.user_ids) == len(users)
    # the compiled kernel (fastmath: reassociated float32 sums) vs NumPy: float32 rounding apart
    np.testing.assert_allclose(model.user_vecs[ur], U, rtol=1e-6, atol=5e-7)
    np.testing.assert_allclose(model.item_vecs[ir], V, rtol=1e-6, atol=5e-7)
    np.testing.assert_allclose(model.user_bias[ur], bu, rtol=1e-6, atol=5e-7)
    np.testing.assert_allclose(model.item_bias[ir], bi, rtol=1e-6, atol=5e-7)
    assert [h["loss"] for h in model.history] == pytest.approx(losses, rel=1e-6)
    assert [h["updates"] for h in model.history] == [len(ev)] * 2


@pytest.mark.parametrize("exchange", ["barrier", "shuffle"])
def test_spark_and_local_engines_give_the_same_factors_from_int_ids_without_seq(spark, exchange):
    # d = 3 blocks on local[2]: the barrier stage has 2 tasks, one of them holds two user blocks
    ev = _events(n=600, n_u=40, n_i=30, seed=3, int_ids=True, with_seq=False)
    kw = dict(rank=5, kind="implicit", lr=0.05, lr_schedule="bold_driver", reg=0.01, init_scale=0.1, blocks=3,
              epochs=3, seed=11, negatives=2, negative_sampling="popularity", strata_order="permutation")
    on_spark = DSGD(engine="spark", spark_exchange=exchange, **kw).fit(spark.createDataFrame(ev))
    local_from_pandas = DSGD(engine="local", **kw).fit(ev)
    assert on_spark.engine == "spark" and local_from_pandas.engine == "local"
    # int ids come back as their decimal text, every one of them, on both engines
    for model in (on_spark, local_from_pandas):
        assert sorted(model.item_ids) == sorted(str(x) for x in set(ev["item"]))
        assert sorted(model.user_ids) == sorted(str(x) for x in set(ev["user"]))
    _assert_same_factors(on_spark, local_from_pandas)
    for key in ("loss", "lr", "updates"):  # the bold driver moved the rate the same way on every engine
        assert [h[key] for h in on_spark.history] == [h[key] for h in local_from_pandas.history], key
    assert len({h["lr"] for h in on_spark.history}) > 1


def test_barrier_stage_has_one_task_per_block_but_never_more_than_the_task_slots(spark):
    from dsgd.engines.barrier import barrier_slots

    slots = spark.sparkContext._jsc.sc().maxNumConcurrentTasks(
        spark.sparkContext._jsc.sc().resourceProfileManager().defaultResourceProfile())
    assert slots == 2  # local[2]
    assert [barrier_slots(spark, d) for d in (1, 2, 3, 8)] == [1, 2, 2, 2]


def test_same_seed_gives_identical_factors_and_another_seed_different(spark):
    sdf = spark.createDataFrame(_events(n=800, seed=5, with_seq=False).sample(frac=1.0, random_state=1))
    kw = dict(rank=6, kind="implicit", lr=0.05, init_scale=0.1, blocks=2, epochs=3, negatives=4,
              strata_order="permutation", engine="local")
    a, b = DSGD(seed=1, **kw).fit(sdf), DSGD(seed=1, **kw).fit(sdf.repartition(3))
    _assert_same_factors(a, b)
    c = DSGD(seed=2, **kw).fit(sdf)
    assert not np.allclose(a.user_vecs, c.user_vecs)
    assert not np.allclose(a.item_vecs, c.item_vecs)


@pytest.fixture(scope="module")
def planted():
    noise = 0.1
    df, _, _ = planted_ratings(300, 200, 5, 0.5, noise, seed=1)
    rng = np.random.default_rng(0)
    test_mask = np.zeros(len(df), bool)
    test_mask[rng.choice(len(df), 2000, replace=False)] = True
    train, test = df[~test_mask].reset_index(drop=True), df[test_mask].reset_index(drop=True)
    model = DSGD(rank=5, kind="explicit", lr=0.02, reg=0.005, init_scale=0.1, blocks=4, epochs=20, strata_order="permutation",
                 seed=0, engine="local").fit(train)
    return noise, train, test, model


def test_d4_planted_low_rank_recovers_held_out_ratings_near_noise_level(planted):
    noise, train, test, model = planted
    rmse = model.rmse(test)
    baseline = float(np.sqrt(np.mean((test["rating"].to_numpy(np.float64) - model.mu) ** 2)))
    assert model.mu == pytest.approx(float(train["rating"].astype(np.float64).mean()))
    assert rmse <= 1.1 * noise, (rmse, baseline)
    assert rmse < 0.2 * baseline
    assert model.mae(test) < rmse
    assert model.history[-1]["loss"] < 0.05 * model.history[0]["loss"]


def test_transform_adds_prediction_nan_or_drop_for_cold_rows(spark, planted):
    _, _, test, model = planted
    rows = test.head(5)[["user", "item", "rating"]]
    rows = pd.concat([rows, pd.DataFrame({"user": ["nobody", "u0"], "item": ["i0", "no-item"],
                                          "rating": [1.0, 1.0]})], ignore_index=True)
    out = model.transform(spark.createDataFrame(rows)).toPandas()
    got = out.set_index(["user", "item"])["prediction"]
    want = pd.Series(model.predict(rows["user"], rows["item"]), index=pd.MultiIndex.from_frame(rows[["user", "item"]]))
    np.testing.assert_allclose(got.loc[want.index].to_numpy(), want.to_numpy(), rtol=1e-9, equal_nan=True)
    assert got.isna().sum() == 2
    dropped = model.transform(spark.createDataFrame(rows), cold_start_strategy="drop")
    assert dropped.count() == 5 and dropped.columns == ["user", "item", "rating", "prediction"]
    assert len(model.transform(rows, cold_start_strategy="drop")) == 5
    assert model.userFactors.count() == len(model.user_ids)
    assert model.itemFactors.schema.simpleString() == "struct<id:string,vec:array<float>,bias:float,count:bigint>"


def test_recommend_excludes_seen_respects_k_and_cold_user_gets_popularity(planted):
    _, train, _, model = planted
    recs = model.recommend(["u0", "u1", "cold", "u0"], k=7)
    assert list(recs.columns) == ["user", "rank", "item", "score"]
    assert recs["user"].drop_duplicates().tolist() == ["u0", "u1", "cold"]
    assert (recs.groupby("user").size() == 7).all()
    seen = train.groupby("user")["item"].apply(set)
    for u in ("u0", "u1"):
        r = recs[recs.user == u]
        assert r["rank"].tolist() == list(range(1, 8))
        assert not set(r["item"]) & seen[u]
        assert (np.diff(r["score"].to_numpy()) <= 0).all()
        np.testing.assert_allclose(r["score"], model.predict([u] * 7, r["item"]), rtol=1e-9)
    # cold user: distinct training users per item, ties by item id
    pop = train.groupby("item")["user"].nunique().reset_index()
    expected = pop.sort_values(["user", "item"], ascending=[False, True])["item"].head(7).tolist()
    assert recs[recs.user == "cold"]["item"].tolist() == expected
    # an explicit seen frame filters the cold user's list too; without exclusion u0 can get seen items
    filtered = model.recommend(["cold"], k=3, seen=pd.DataFrame({"user": ["cold"], "item": [expected[0]]}))
    assert filtered["item"].tolist() == expected[1:4]
    everything = model.recommend(["u0"], k=len(model.item_ids), exclude_seen=False)
    assert len(everything) == len(model.item_ids)
    assert model.recommend(["u0"], k=10**6)["item"].nunique() == len(model.item_ids) - len(seen["u0"])
    all_recs = model.recommend_for_all(2)
    assert len(all_recs) == 2 * len(model.user_ids)
    with pytest.raises(ValueError, match="k must be an int >= 1"):
        model.recommend(["u0"], k=0)


def test_partial_fit_adds_new_ids_and_replays_deterministically(planted):
    _, _, _, model = planted
    a, b = copy.deepcopy(model), copy.deepcopy(model)
    new = pd.DataFrame({"user": ["u0", "newbie", "newbie"], "item": ["i1", "i2", "brand-new"],
                        "rating": [4.0, 3.0, 5.0], "ts": [10**13] * 3})
    sa = a.partial_fit(new, batch_id=5, epochs=2)
    sb = b.partial_fit(new, batch_id=5, epochs=2)
    def timeless(stats):
        return [{k: v for k, v in s.items() if k != "seconds"} for s in stats]

    assert [s["updates"] for s in sa] == [3, 3] and timeless(sa) == timeless(sb)  # loss, lr, ... all equal
    _assert_same_factors(a, b)
    assert "newbie" in set(a.user_ids) and "brand-new" in set(a.item_ids)
    assert a.mu == model.mu and a.history[-1]["batch_id"] == 5
    assert {("newbie", "brand-new")} <= set(map(tuple, a.seen.to_numpy()))
    assert not np.isnan(a.predict(["newbie"], ["i2"])[0]) and np.isnan(model.predict(["newbie"], ["i2"])[0])


def test_save_and_load_round_trip(planted, tmp_path):
    _, _, test, model = planted
    model.save(tmp_path / "m")
    back = DSGDModel.load(tmp_path / "m")
    _assert_same_factors(model, back)
    assert back.mu == model.mu and back.params == model.params and back.history == model.history
    assert back.rmse(test) == model.rmse(test)
    pd.testing.assert_frame_equal(back.recommend(["u3", "cold"], k=4), model.recommend(["u3", "cold"], k=4))
    with pytest.raises(FileNotFoundError, match="model.json"):
        DSGDModel.load(tmp_path / "nothing")


@pytest.mark.parametrize(("kwargs", "message"), [
    ({"kind": "bpr"}, r"kind='bpr' is not supported; allowed values: 'implicit', 'explicit'"),
    ({"rank": 0}, r"rank=0 is out of range; allowed: 1 <= rank <= 1024"),
    ({"rank": 2.5}, r"rank must be an int"),
    ({"lr": 0.0}, r"lr=0.0 is out of range; allowed: 0.0 < lr"),
    ({"lr": float("nan")}, r"lr must be finite"),
    ({"reg": -1}, r"reg=-1 is out of range"),
    ({"lr_schedule": "cosine"}, r"lr_schedule='cosine' is not supported; allowed values: 'constant'"),
    ({"negative_sampling": "zipf"}, r"negative_sampling='zipf'.*'uniform', 'popularity'"),
    ({"blocks": 0}, r"blocks=0 is out of range"),
    ({"strata_order": "random"}, r"strata_order='random'.*'rotation', 'permutation'"),
    ({"epochs": 0}, r"epochs=0 is out of range"),
    ({"seed": -1}, r"seed=-1 is out of range"),
    ({"engine": "gpu"}, r"engine='gpu' is not supported; allowed values: 'spark', 'local'"),
    ({"spark_exchange": "mpi"}, r"spark_exchange='mpi' is not supported; allowed values: 'auto', 'barrier'"),
    ({"kind": "explicit", "use_bias": False}, r"use_bias=False is not supported for kind='explicit'"),
    ({"use_bias": "yes"}, r"use_bias must be True, False or None"),
    ({"negatives": True}, r"negatives must be an int"),
    ({"user_col": ""}, r"user_col must be a non-empty column name"),
    ({"cold_start_strategy": "skip"}, r"cold_start_strategy='skip'.*'nan', 'drop'"),
])
def test_constructor_rejects_bad_arguments_with_actionable_messages(kwargs, message):
    with pytest.raises(ValueError, match=message):
        DSGD(**kwargs)


def test_constructor_is_keyword_only_and_from_config_maps_the_model_section():
    with pytest.raises(TypeError):
        DSGD(10)  # type: ignore[misc]
    assert DSGD(kind="explicit").use_bias is True and DSGD(kind="implicit").use_bias is False
    # the estimator's defaults are the [model] config keys' defaults (one declaration)
    defaults, declared = DSGD().get_params(), ModelConfig()
    assert {k: defaults[k] for k in ("rank", "kind", "lr", "epochs", "negatives", "blocks", "engine", "seed")} == {
        k: getattr(declared, k) for k in ("rank", "kind", "lr", "epochs", "negatives", "blocks", "engine", "seed")}
    assert DSGD().model_config() == dataclasses.replace(declared, use_bias=False)
    est = DSGD.from_config(ModelConfig(kind="explicit", rank=16, use_bias=False), epochs=3, engine="local")
    assert (est.rank, est.use_bias, est.epochs, est.engine, est.kind) == (16, True, 3, "local", "explicit")
    imp = DSGD.from_config(ModelConfig(kind="implicit", use_bias=True, negatives=7))
    assert (imp.use_bias, imp.negatives, imp.kernel_params().implicit) == (True, 7, True)
    with pytest.raises(ValueError, match="unknown override"):
        DSGD.from_config(ModelConfig(), ranks=3)
    with pytest.raises(ValueError, match="pass cfg.model"):
        DSGD.from_config({"rank": 3})  # type: ignore[arg-type]


def test_fit_rejects_missing_columns_and_null_ratings(spark):
    with pytest.raises(ValueError, match="lacks column"):
        DSGD(kind="explicit", engine="local").fit(pd.DataFrame({"user": ["a"], "item": ["b"]}))
    with pytest.raises(ValueError, match="finite 'rating'"):
        DSGD(kind="explicit", engine="local").fit(pd.DataFrame({"user": ["a"], "item": ["b"], "rating": [np.nan]}))
    sdf = spark.createDataFrame([("a", "b", None, 1)], "user string, item string, rating float, ts long")
    with pytest.raises(ValueError, match="finite 'rating'"):
        DSGD(kind="explicit", engine="spark").fit(sdf)
    with pytest.raises(ValueError, match="pyspark.sql.DataFrame or a pandas.DataFrame"):
        DSGD().fit([("a", "b", 1.0)])
