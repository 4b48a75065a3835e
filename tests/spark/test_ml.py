"""DSGD as a pyspark.ml stage: Params from the declarations, Pipeline save/load in a new session, tuning."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from pyspark.ml import Pipeline
from pyspark.ml.evaluation import RegressionEvaluator
from pyspark.ml.feature import SQLTransformer
from pyspark.ml.param import Param
from pyspark.ml.tuning import CrossValidator, TrainValidationSplit

from dsgd.api import DSGD as PlainDSGD
from dsgd.api.ml import DECLARED, DSGD, ML_OWN, DSGDModel, RankingEvaluator
from dsgd.api.params import default_of, doc_of
from dsgd.core.metrics import dcg_from_ranks, ranks_of_targets
from dsgd.evaluation.synthetic import generate_stream, planted_ratings

pytestmark = pytest.mark.spark

ROOT = Path(__file__).resolve().parents[2]
#: Explicit settings that learn the planted rank-2 ratings (60 users, 40 items, half the cells rated).
EXPLICIT = dict(kind="explicit", lr=0.05, epochs=60, initScale=0.3, engine="local")


@pytest.fixture(scope="module")
def planted(spark):
    df, _p, _q = planted_ratings(60, 40, 2, 0.5, 0.1, seed=1)
    return spark.createDataFrame(df)


def test_params_are_the_declared_ones_in_mllib_spelling_and_the_plain_api_is_unchanged(spark, tmp_path):
    est = DSGD()
    assert {p.name for p in est.params} == set(DECLARED) | set(ML_OWN)
    for ml_name, name in DECLARED.items():
        assert est.getParam(ml_name).doc == doc_of(name)
        assert est.getOrDefault(ml_name) == default_of(name)
    assert DECLARED["coldStartStrategy"] == "cold_start_strategy" and DECLARED["lrSchedule"] == "lr_schedule"
    with pytest.raises(ValueError, match="allowed values: 'implicit', 'explicit'"):
        DSGD(kind="bpr")
    with pytest.raises(ValueError, match="out of range"):
        est.setRank(0)
    with pytest.raises(TypeError, match="unknown parameter.*user_col"):
        DSGD(user_col="u")
    # pyspark.ml's est.rank is a Param; the plain estimator's est.rank is still the value
    assert isinstance(DSGD(rank=8).rank, Param) and DSGD(rank=8).getRank() == 8 and PlainDSGD(rank=8).rank == 8
    assert DSGD(rank=8, userCol="u").plain().get_params() == PlainDSGD(rank=8, user_col="u").get_params()
    # the estimator itself saves and loads like an MLlib one
    path = (tmp_path / "est").as_uri()
    DSGD(rank=7, kind="explicit", coldStartStrategy="drop").save(path)
    back = DSGD.load(path)
    assert (back.getRank(), back.getKind(), back.getColdStartStrategy()) == (7, "explicit", "drop")


_NEW_SESSION = textwrap.dedent("""
    import json, sys
    from pyspark.sql import SparkSession
    from pyspark.ml import PipelineModel
    path, test_path, out_path = sys.argv[1:4]
    spark = SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false").getOrCreate()
    model = PipelineModel.load(path)
    stage = model.stages[-1]
    model.transform(spark.read.parquet(test_path)).toPandas().to_parquet(out_path)
    print(json.dumps({"class": type(stage).__module__ + "." + type(stage).__name__, "uid": stage.uid,
                      "rank": stage.getRank(), "reg": stage.getReg(), "users": len(stage.model.users)}))
    spark.stop()
""")


def test_pipeline_fitted_saved_and_loaded_in_a_new_session_gives_identical_predictions(spark, planted, tmp_path):
    clean = SQLTransformer(statement="SELECT user, item, rating, ts, seq FROM __THIS__ WHERE rating IS NOT NULL")
    model = Pipeline(stages=[clean, DSGD(rank=2, reg=0.05, **EXPLICIT)]).fit(planted)
    cold = spark.createDataFrame([("nobody", "i1", 3.0, 0, 10**6), ("u1", "nothing", 3.0, 0, 10**6 + 1)],
                                 planted.schema)
    test = planted.limit(300).unionByName(cold)
    test_path, out_path = str(tmp_path / "test"), str(tmp_path / "predictions.parquet")
    test.write.parquet(test_path)
    path = (tmp_path / "pipeline").as_uri()  # a Hadoop URI, as on a cluster path
    model.write().overwrite().save(path)
    want = model.transform(spark.read.parquet(test_path)).toPandas().sort_values("seq").reset_index(drop=True)

    env = {**os.environ, "PYTHONPATH": str(ROOT), "PYSPARK_PYTHON": sys.executable}
    proc = subprocess.run([sys.executable, "-c", _NEW_SESSION, path, test_path, out_path], env=env, cwd=ROOT,
                          capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr[-3000:]
    info = json.loads(proc.stdout.strip().splitlines()[-1])
    stage = model.stages[-1]
    assert info == {"class": "dsgd.api.ml.DSGDModel", "uid": stage.uid, "rank": 2, "reg": 0.05,
                    "users": len(stage.model.users)}
    got = pd.read_parquet(out_path).sort_values("seq").reset_index(drop=True)
    assert len(got) == len(want) == 302
    np.testing.assert_array_equal(got["prediction"].to_numpy(), want["prediction"].to_numpy())  # NaN == NaN here
    assert np.isnan(want["prediction"].iloc[-2:]).all() and np.isfinite(want["prediction"].iloc[:-2]).all()


def test_cross_validator_picks_the_setting_with_the_lower_held_out_rmse(spark, planted):
    est = DSGD(coldStartStrategy="drop", **EXPLICIT)
    maps = [{est.rank: 8, est.reg: 0.0}, {est.rank: 2, est.reg: 0.05}]
    rmse = RegressionEvaluator(labelCol="rating", metricName="rmse")
    train, held_out = planted.randomSplit([0.5, 0.5], seed=7)
    held = [rmse.evaluate(est.fit(train, m).transform(held_out)) for m in maps]
    best = int(np.argmin(held))
    assert max(held) > 1.3 * min(held), held  # the two settings really differ on this data

    cv = CrossValidator(estimator=est, estimatorParamMaps=maps, evaluator=rmse, numFolds=2, seed=3, parallelism=2)
    cvm = cv.fit(planted)
    assert int(np.argmin(cvm.avgMetrics)) == best, (cvm.avgMetrics, held)
    assert isinstance(cvm.bestModel, DSGDModel)
    assert (cvm.bestModel.getRank(), cvm.bestModel.getReg()) == (maps[best][est.rank], maps[best][est.reg])


def test_train_validation_split_with_the_ranking_evaluator_picks_the_better_implicit_setting(spark):
    sdf = spark.createDataFrame(generate_stream(4000, n_users=100, n_items=80, seed=3, implicit=True))
    est = DSGD(kind="implicit", rank=8, lr=0.1, epochs=10, engine="local", rankCol="rank")
    maps = [{est.negatives: 0}, {est.negatives: 8}]
    dcg = RankingEvaluator(k=10)
    train, held_out = sdf.randomSplit([0.75, 0.25], seed=7)
    fitted = [est.fit(train, m) for m in maps]
    held = [dcg.evaluate(m.transform(held_out)) for m in fitted]
    best = int(np.argmax(held))
    assert max(held) > 1.5 * min(held), held

    # the evaluator is the protocol's DCG@K: ranks from dsgd.core.metrics, unknown ids count as misses
    plain, ev = fitted[best].model, held_out.toPandas()
    ur, ir = plain._rows(ev["user"], "u"), plain._rows(ev["item"], "i")
    ok = (ur >= 0) & (ir >= 0)
    ranks = np.zeros(len(ev), np.int64)
    ranks[ok] = ranks_of_targets(plain._score_matrix(ur[ok]), ir[ok])
    assert held[best] == pytest.approx(dcg_from_ranks(ranks, 10).mean(), abs=1e-12)

    tvs = TrainValidationSplit(estimator=est, estimatorParamMaps=maps, evaluator=dcg, trainRatio=0.75, seed=3)
    tvm = tvs.fit(sdf)
    assert int(np.argmax(tvm.validationMetrics)) == best, (tvm.validationMetrics, held)
    assert tvm.bestModel.getNegatives() == maps[best][est.negatives]
