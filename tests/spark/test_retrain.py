"""The batch retrain: ALS snapshot, the three blend policies, idempotence, safety next to the stream."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from pyspark.sql import functions as F

from batch.blend import FACTOR_COLS, kernel_params, replay_seed, warm_start_model
from batch.retrain import (
    EXIT_NOTHING_TO_DO,
    EXIT_OK,
    dense_index,
    load_snapshot,
    main,
    parse_as_of,
    run_retrain,
    snapshot_meta,
)
from batch.retrain_config import RetrainConfig, validated
from dsgd.core import columns as C
from dsgd.core.config import ConfigError
from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.core.schedules import make_schedule
from dsgd.engines.local import train_epochs
from dsgd.store.factor_store import FactorStore
from dsgd.store.tables import Tables

pytestmark = pytest.mark.spark

T0 = 1_700_000_000_000
CUT = T0 + 1_000_000
RANK = 4


def make_events(n_users: int = 30, n_items: int = 20, per_user: int = 8, *, explicit: bool = True, seed: int = 0,
                t_start: int = T0, users: list[str] | None = None) -> pd.DataFrame:
    """Unique (user, item) pairs with low-rank ratings; ids zero-padded so string order = int order."""
    rng = np.random.default_rng(seed)
    p, q = rng.normal(size=(n_users, 2)), rng.normal(size=(n_items, 2))
    rows = []
    names = users or [f"u{u:03d}" for u in range(n_users)]
    for u, name in enumerate(names):
        for i in rng.choice(n_items, size=per_user, replace=False):
            r = float(np.clip(3.0 + p[u % n_users] @ q[i] + rng.normal(scale=0.3), 1, 5)) if explicit else np.nan
            rows.append((name, f"i{i:03d}", r))
    df = pd.DataFrame(rows, columns=[C.USER, C.ITEM, C.RATING])
    df = df.sample(frac=1.0, random_state=seed).reset_index(drop=True)
    df[C.TS] = t_start + np.arange(len(df), dtype=np.int64) * 100
    df[C.SEQ] = np.arange(len(df), dtype=np.int64) + (t_start - T0)
    return df


def write_events(spark, cfg, df: pd.DataFrame) -> None:
    """A real Delta append to the events table (same schema and partitioning as the stream)."""
    sdf = spark.createDataFrame(df.astype({C.RATING: "float32"}),
                                "user string, item string, rating float, ts long, seq long")
    sdf = sdf.withColumn(C.RATING, F.when(F.isnan(C.RATING), None).otherwise(F.col(C.RATING)))
    sdf = sdf.withColumn(C.EVENT_DATE, F.to_date(F.timestamp_millis(F.col(C.TS))))
    sdf.write.format("delta").mode("append").partitionBy(C.EVENT_DATE).save(Tables.from_config(cfg).events)


def local_cfg(base_config, tmp_path, kind: str = "explicit"):
    return base_config.replace(
        app={"warehouse": str(tmp_path / "warehouse"), "checkpoint_root": str(tmp_path / "ckpt")},
        model={"kind": kind, "rank": RANK, "engine": "local", "blocks": 2, "lr": 0.02, "reg": 0.01, "negatives": 3})


def factors(spark, cfg, side: str, version: int | None = None) -> dict[str, tuple[np.ndarray, float, int]]:
    rows = FactorStore(spark, Tables.from_config(cfg).factors).load(side, version=version).collect()
    return {r[C.ID]: (np.asarray(r[C.VEC], np.float32), float(r[C.BIAS]), int(r[C.COUNT])) for r in rows}


def snapshot(spark, cfg, as_of: int, side: str) -> dict[str, tuple[np.ndarray, float, int]]:
    rows = load_snapshot(spark, Tables.from_config(cfg).snapshots, as_of, side).collect()
    return {r[C.ID]: (np.asarray(r[C.VEC], np.float32), float(r[C.BIAS]), int(r[C.COUNT])) for r in rows}


def seed_online(spark, cfg, ids_u: list[str], ids_i: list[str], *, batch_id: int = 0, scale: float = 0.1) -> None:
    """Online factors as the stream would have written them (one MERGE)."""
    store = FactorStore(spark, Tables.from_config(cfg).factors)
    store.create(rank=RANK, kind=cfg.model.kind)
    rng = np.random.default_rng(batch_id + 7)

    def rows(ids):
        return spark.createDataFrame(
            [(x, 0, [float(v) for v in rng.normal(scale=scale, size=RANK)], 0.0, 1) for x in ids],
            "id string, key long, vec array<float>, bias float, count long").withColumn(C.KEY, F.xxhash64(C.ID))

    store.write(rows(ids_u), rows(ids_i), meta={"stream_id": "s1", "mu": 3.0, "n_ratings": 10}, batch_id=batch_id)


# ---------------------------------------------------------------------------------------------------------
def test_retrain_train_rmse_equals_direct_mllib_als_on_the_same_data(spark, base_config, tmp_path):
    from pyspark.ml.recommendation import ALS

    cfg = local_cfg(base_config, tmp_path)
    ev = make_events()
    write_events(spark, cfg, ev)
    seed_online(spark, cfg, sorted(set(ev[C.USER])), sorted(set(ev[C.ITEM])))
    before = factors(spark, cfg, C.SIDE_USER)
    rc = RetrainConfig(policy="score-blend", alpha=0.3, als_max_iter=5, als_reg=0.05, als_center=False, als_blocks=2)
    res = run_retrain(spark, cfg, as_of_ms=CUT, retrain=rc)
    assert res.status == "blended" and res.exit_code == EXIT_OK

    # score-blend: the live factors stay, the metadata records the snapshot and alpha
    assert res.metrics["rows_written"] == 0
    after = factors(spark, cfg, C.SIDE_USER)
    assert {k: v[0].tolist() for k, v in before.items()} == {k: v[0].tolist() for k, v in after.items()}
    meta = FactorStore(spark, Tables.from_config(cfg).factors).meta()
    assert meta["blend_policy"] == "score-blend" and meta["blend_alpha"] == 0.3
    assert meta["snapshot_as_of"] == CUT and meta["snapshot_version"] == res.snapshot_version

    # direct MLlib run: ids "u007" -> 7 is exactly the dense index (string order = numeric order)
    direct = spark.createDataFrame(pd.DataFrame({
        "u": ev[C.USER].str[1:].astype("int32"), "i": ev[C.ITEM].str[1:].astype("int32"),
        "r": ev[C.RATING].astype("float32")}))
    model = ALS(rank=RANK, maxIter=5, regParam=0.05, userCol="u", itemCol="i", ratingCol="r", numUserBlocks=2,
                numItemBlocks=2, seed=cfg.model.seed, checkpointInterval=10).fit(direct)
    rmse = model.transform(direct).select(F.sqrt(F.avg((F.col("prediction") - F.col("r")) ** 2))).first()[0]
    assert res.metrics["train_rmse"] == pytest.approx(rmse, abs=1e-6)
    assert res.metrics["n_users"] == 30 and res.metrics["n_items"] == 20

    # factors map back to the original string ids, with the direct run's vectors
    snap = snapshot(spark, cfg, CUT, C.SIDE_USER)
    assert set(snap) == set(ev[C.USER])
    direct_u = {r.id: np.asarray(r.features) for r in model.userFactors.collect()}
    np.testing.assert_allclose(snap["u007"][0], direct_u[7], atol=1e-4)
    meta = snapshot_meta(spark, Tables.from_config(cfg).snapshots, CUT)
    assert meta["params"]["maxIter"] == 5 and meta["as_of"] == CUT and meta["trainer"] == "als"


def test_dense_index_keeps_every_string_id_and_is_dense(spark):
    df = spark.createDataFrame([("b",), ("a",), ("0104257",), ("a",), ("x" * 300,)], "user string")
    idx = {r.id: r.idx for r in dense_index(df, "user").collect()}
    assert sorted(idx.values()) == [0, 1, 2, 3]
    assert idx["0104257"] == 0 and "x" * 300 in idx


def test_replace_policy_live_equals_snapshot_except_ids_with_events_after_the_cutoff(spark, base_config, tmp_path):
    cfg = local_cfg(base_config, tmp_path)
    hist = make_events()
    after = pd.DataFrame({C.USER: ["u001", "u002", "u001"], C.ITEM: ["i003", "i004", "i004"],
                          C.RATING: [5.0, 1.0, 4.0], C.TS: [CUT + 10, CUT + 20, CUT + 30], C.SEQ: [10**6 + i for i in range(3)]})
    write_events(spark, cfg, hist)
    write_events(spark, cfg, after)
    seed_online(spark, cfg, sorted(set(hist[C.USER])), sorted(set(hist[C.ITEM])))
    res = run_retrain(spark, cfg, as_of_ms=CUT, retrain=RetrainConfig(policy="replace", als_max_iter=2, als_blocks=2))
    assert res.status == "blended" and res.metrics["replayed_events"] == 3

    touched = {C.SIDE_USER: {"u001", "u002"}, C.SIDE_ITEM: {"i003", "i004"}}
    for side in (C.SIDE_USER, C.SIDE_ITEM):
        snap, live = snapshot(spark, cfg, CUT, side), factors(spark, cfg, side)
        assert set(live) == set(snap)
        for x, (vec, _bias, count) in live.items():
            if x in touched[side]:
                assert not np.allclose(vec, snap[x][0]), x
                assert count > snap[x][2]
            else:
                np.testing.assert_array_equal(vec, snap[x][0])
                assert count == snap[x][2]
    meta = FactorStore(spark, Tables.from_config(cfg).factors).meta()
    assert meta["blend_policy"] == "replace" and meta["snapshot_as_of"] == CUT
    assert meta["snapshot_version"] == res.snapshot_version
    # explicit running mean: history mean extended by the 3 replayed ratings
    n = len(hist) + 3
    assert meta["n_ratings"] == n
    want_mu = (hist[C.RATING].astype("float32").astype(float).sum() + 10.0) / n
    assert meta["mu"] == pytest.approx(want_mu, rel=1e-5)

    # the replay is exactly the stream's DSGD step from the snapshot over the later events
    tables = Tables.from_config(cfg)
    su = SideFactors.from_frame(load_snapshot(spark, tables.snapshots, CUT, C.SIDE_USER).toPandas(), RANK)
    si = SideFactors.from_frame(load_snapshot(spark, tables.snapshots, CUT, C.SIDE_ITEM).toPandas(), RANK)
    uids, iids = after[C.USER].to_numpy(object), after[C.ITEM].to_numpy(object)
    m = cfg.model
    train_epochs(su, si, id_key(uids), id_key(iids), uids, iids, after[C.RATING].to_numpy(np.float32),
                 after[C.TS].to_numpy(np.int64), after[C.SEQ].to_numpy(np.int64),
                 kernel_params(cfg, lr=m.lr, mu=meta["mu"]), d=m.blocks, epochs=m.epochs,
                 schedule=make_schedule(m.lr_schedule, m.lr), strata_order=m.strata_order, seed=m.seed,
                 batch_id=replay_seed(CUT), init_scale=m.init_scale, rank=RANK)
    live = factors(spark, cfg, C.SIDE_USER)
    for x, vec in zip(su.ids, su.vec, strict=True):
        np.testing.assert_array_equal(live[x][0], vec)  # the same engine, the same seeds: bit for bit


def test_warm_start_starts_from_the_online_factors_and_epochs_move_them(spark, base_config, tmp_path):
    cfg = local_cfg(base_config, tmp_path)
    hist = make_events()
    write_events(spark, cfg, hist)
    seed_online(spark, cfg, sorted(set(hist[C.USER])), sorted(set(hist[C.ITEM])))
    fs = FactorStore(spark, Tables.from_config(cfg).factors)
    online = {s: factors(spark, cfg, s) for s in (C.SIDE_USER, C.SIDE_ITEM)}
    history = spark.read.format("delta").load(Tables.from_config(cfg).events)

    # 0 epochs: the model is the online factors, unchanged
    u0, i0, _ = warm_start_model(spark, cfg, fs.load(C.SIDE_USER), fs.load(C.SIDE_ITEM), history, epochs=0,
                                 lr=0.03, mu=3.0, as_of_ms=CUT)
    for side, df in ((C.SIDE_USER, u0), (C.SIDE_ITEM, i0)):
        got = {r[C.ID]: (np.asarray(r[C.VEC], np.float32), r[C.COUNT]) for r in df.collect()}
        assert set(got) == set(online[side])
        for x, (vec, cnt) in got.items():
            np.testing.assert_array_equal(vec, online[side][x][0])
            assert cnt == online[side][x][2]

    # 2 epochs through the job: exactly DSGD from the online vectors, which move
    su = SideFactors.from_frame(fs.load(C.SIDE_USER).toPandas(), RANK)
    si = SideFactors.from_frame(fs.load(C.SIDE_ITEM).toPandas(), RANK)
    rc = RetrainConfig(policy="warm-start", warm_start_epochs=2, warm_start_lr=0.03)
    res = run_retrain(spark, cfg, as_of_ms=CUT, retrain=rc)
    assert res.status == "blended" and res.metrics["train_rmse"] > 0
    live = {s: factors(spark, cfg, s) for s in (C.SIDE_USER, C.SIDE_ITEM)}
    m = cfg.model
    uids, iids = hist[C.USER].to_numpy(object), hist[C.ITEM].to_numpy(object)
    train_epochs(su, si, id_key(uids), id_key(iids), uids, iids, hist[C.RATING].to_numpy(np.float32),
                 hist[C.TS].to_numpy(np.int64), hist[C.SEQ].to_numpy(np.int64), kernel_params(cfg, lr=0.03, mu=3.0),
                 d=m.blocks, epochs=2, schedule=make_schedule(m.lr_schedule, 0.03), strata_order=m.strata_order,
                 seed=m.seed, batch_id=replay_seed(CUT), init_scale=m.init_scale, rank=RANK)
    for x, vec in zip(su.ids, su.vec, strict=True):
        np.testing.assert_array_equal(live[C.SIDE_USER][x][0], vec)
        assert not np.allclose(vec, online[C.SIDE_USER][x][0])
        assert live[C.SIDE_USER][x][2] == online[C.SIDE_USER][x][2]  # counts: history counted once already
    assert fs.meta()["blend_policy"] == "warm-start"


def test_rerun_of_the_same_as_of_is_a_noop_and_no_events_exits_3(spark, base_config, tmp_path, capsys):
    cfg = local_cfg(base_config, tmp_path)
    write_events(spark, cfg, make_events())
    rc = RetrainConfig(policy="replace", als_max_iter=2, als_blocks=2)
    assert main(spark, cfg, as_of=str(CUT), retrain=rc) == EXIT_OK
    first = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    store = FactorStore(spark, Tables.from_config(cfg).factors)
    v_factors = store.version()
    snaps = Tables.from_config(cfg).snapshots
    v_snap = spark.sql(f"DESCRIBE HISTORY delta.`{snaps}`").first()["version"]

    assert main(spark, cfg, as_of=str(CUT), retrain=rc) == EXIT_OK
    second = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert first["status"] == "blended" and second["status"] == "already_done"
    # the first run says what its swap changed: the replaced model's rows, a user's top-k before and after
    ch = first["changes"]
    assert ch["versions"] == [v_factors - 1, v_factors] and ch["rows_changed"]["u"] > 0, ch
    assert ch["rows_changed"]["i"] > 0 and 0 < len(ch["top_k_after"]) <= rc.top_k, ch
    assert second["changes"] == {}
    assert store.version() == v_factors
    assert spark.sql(f"DESCRIBE HISTORY delta.`{snaps}`").first()["version"] == v_snap

    assert main(spark, cfg, as_of=str(T0 - 1), retrain=rc) == EXIT_NOTHING_TO_DO
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["status"] == "no_events"
    assert store.version() == v_factors


def test_retrain_config_is_validated_and_as_of_parsed():
    assert validated(RetrainConfig(), {"alpha": "0.25", "policy": "warm-start"}).alpha == 0.25
    with pytest.raises(ConfigError, match="retrain.policy"):
        validated(RetrainConfig(), {"policy": "average"})
    with pytest.raises(ConfigError, match="retrain.alpha"):
        validated(RetrainConfig(), {"alpha": 1.5})
    assert parse_as_of("2023-11-14T22:13:20Z") == T0
    assert parse_as_of(str(T0)) == T0


def test_retrain_while_the_stream_commits_loses_no_batch_update(spark, base_config, tmp_path, monkeypatch):
    """The stream commits batches inside the retrain's race window: after the swap computed its rows from
    the live model and before it commits them (the swap's first rebase), then once after the swap.

    The swap must lose its first compare-and-swap (2 attempts) and rebase onto the stream's commits
    instead of overwriting them: every batch's new user keeps its exact row (vector, count 1),
    the user of the batch already in before the retrain is the replay of its event, and each batch and
    the swap made exactly one commit."""
    import batch.blend as blend

    cfg = local_cfg(base_config, tmp_path, kind="implicit")
    hist = make_events(explicit=False)
    write_events(spark, cfg, hist)
    tables = Tables.from_config(cfg)
    seed_online(spark, cfg, sorted(set(hist[C.USER])), sorted(set(hist[C.ITEM])))
    store = FactorStore(spark, tables.factors)

    def stream_batch(b: int) -> None:  # as StreamTrainer: the batch's event, then its factor commit
        user = f"s{b:03d}"  # a new user per batch, event after the cut-off on an old item
        write_events(spark, cfg, pd.DataFrame({C.USER: [user], C.ITEM: ["i001"], C.RATING: [np.nan],
                                               C.TS: [CUT + b], C.SEQ: [10**6 + b]}))
        row = spark.createDataFrame([(user, 0, [float(b)] * RANK, 0.0, 1)],
                                    "id string, key long, vec array<float>, bias float, count long")
        assert store.write(row.withColumn(C.KEY, F.xxhash64(C.ID)), None, meta={"stream_id": "s1"}, batch_id=b)

    stream_batch(1)  # before the retrain: part of its base model, and its event is replayed
    rebases: list[int] = []
    real_rebase = blend.rebase

    def rebase_then_stream_commits(*args, **kwargs):
        rows = real_rebase(*args, **kwargs).localCheckpoint()  # the swap's rows, computed now
        rebases.append(len(rebases))
        if len(rebases) == 1:
            for b in (2, 3, 4):  # the stream commits before the swap does
                stream_batch(b)
        return rows

    monkeypatch.setattr(blend, "rebase", rebase_then_stream_commits)
    res = run_retrain(spark, cfg, as_of_ms=CUT, retrain=RetrainConfig(policy="replace", als_max_iter=2,
                                                                      als_blocks=2))
    assert res.status == "blended" and res.metrics["replayed_events"] == 1
    assert res.metrics["swap_attempts"] == 2 and len(rebases) == 2  # the race happened and was lost once
    stream_batch(5)  # after the swap: lands on the swapped model
    n_batches = 5

    # each stream batch made one factor commit, the swap one
    hist_df = spark.sql(f"DESCRIBE HISTORY delta.`{tables.factors}`").toPandas()
    labels = hist_df["userMetadata"].fillna("")
    for b in range(1, n_batches + 1):
        assert labels.str.startswith(f"dsgd-factors:{b}:").sum() == 1, (b, list(labels))
    assert labels.str.startswith("dsgd-swap:").sum() == 1

    live = factors(spark, cfg, C.SIDE_USER)
    for b in range(2, n_batches + 1):  # the stream's own rows, exactly
        user = f"s{b:03d}"
        np.testing.assert_array_equal(live[user][0], np.full(RANK, float(b), np.float32))
        assert live[user][2] == 1
    # batch 1 was in the base: the retrain replaced it by the replay of its event from the snapshot
    su = SideFactors.from_frame(load_snapshot(spark, tables.snapshots, CUT, C.SIDE_USER).toPandas(), RANK)
    si = SideFactors.from_frame(load_snapshot(spark, tables.snapshots, CUT, C.SIDE_ITEM).toPandas(), RANK)
    after = pd.DataFrame({C.USER: ["s001"], C.ITEM: ["i001"], C.RATING: [1.0], C.TS: [CUT + 1], C.SEQ: [10**6 + 1]})
    m = cfg.model
    uids, iids = after[C.USER].to_numpy(object), after[C.ITEM].to_numpy(object)
    train_epochs(su, si, id_key(uids), id_key(iids), uids, iids, after[C.RATING].to_numpy(np.float32),
                 after[C.TS].to_numpy(np.int64), after[C.SEQ].to_numpy(np.int64),
                 kernel_params(cfg, lr=m.lr, mu=float(snapshot_meta(spark, tables.snapshots, CUT)["mu"])), d=m.blocks, epochs=m.epochs,
                 schedule=make_schedule(m.lr_schedule, m.lr), strata_order=m.strata_order, seed=m.seed,
                 batch_id=replay_seed(CUT), init_scale=m.init_scale, rank=RANK)
    np.testing.assert_array_equal(live["s001"][0], su.vec[su.index_of(id_key(np.array(["s001"], object)))[0]])
    assert live["s001"][2] == 1
    # the model is the snapshot's users plus the stream's: nothing lost, nothing extra
    assert set(live) == set(hist[C.USER]) | {f"s{b:03d}" for b in range(1, n_batches + 1)}
    meta = store.meta()
    assert meta["last_batch"] == n_batches and meta["stream_id"] == "s1"
    assert meta["blend_policy"] == "replace" and meta["n_ratings"] == len(hist) + 1  # + the replayed event
    assert set(FACTOR_COLS) <= set(store.current().columns)
