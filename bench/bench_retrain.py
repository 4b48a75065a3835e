"""Weekly retrain wall time vs a plain MLlib ALS fit on the same data (the overhead of our wrapping).

The retrain (``batch.retrain.run_retrain``: read the Delta events up to the as-of, dense id index,
ALS fit, snapshot commit, replace-blend swap) against ``ALS.fit`` + train RMSE on the same ratings with
the same parameters, both in the same warm local[2] session. Prints one JSON object.

    .venv/bin/python bench/bench_retrain.py [--dataset ml-latest --path /work/shared/data/ml-latest-small]
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))


def main() -> int:
    p = argparse.ArgumentParser()
    p.add_argument("--dataset", default="ml-latest")
    p.add_argument("--path", default="/work/shared/data/ml-latest-small")
    p.add_argument("--rank", type=int, default=10)
    p.add_argument("--max-iter", type=int, default=10)
    p.add_argument("--reg", type=float, default=0.1)
    args = p.parse_args()

    from pyspark.ml.recommendation import ALS
    from pyspark.sql import functions as F

    from batch.retrain import run_retrain
    from batch.retrain_config import RetrainConfig
    from dsgd.core import columns as C
    from dsgd.core.config import load_config
    from dsgd.evaluation.loaders import load_dataset
    from dsgd.store.session import build_session

    root = Path(tempfile.mkdtemp(prefix="bench_retrain_"))
    cfg = load_config(profile="local", overrides=[
        f'app.warehouse="{root / "wh"}"', f'app.checkpoint_root="{root / "ck"}"', 'app.log_level="WARNING"',
        'model.kind="explicit"', f"model.rank={args.rank}", 'model.engine="local"'])
    spark = build_session(cfg)
    ev = load_dataset(args.dataset, args.path)
    events = (spark.createDataFrame(ev.astype({C.RATING: "float32"}))
              .withColumn(C.EVENT_DATE, F.to_date(F.timestamp_millis(C.TS))))
    events.write.format("delta").partitionBy(C.EVENT_DATE).save(f"{root / 'wh'}/events")
    as_of = int(ev[C.TS].max())
    rc = RetrainConfig(policy="replace", als_max_iter=args.max_iter, als_reg=args.reg, als_center=False)

    # warm-up: JVM, Python workers, ALS classes
    ALS(rank=2, maxIter=1).setUserCol("u").setItemCol("i").setRatingCol("r").fit(
        spark.createDataFrame([(0, 0, 1.0), (1, 1, 2.0)], "u int, i int, r float"))

    t = time.perf_counter()
    data = (spark.createDataFrame(ev[[C.USER, C.ITEM, C.RATING]].astype({C.USER: "int32", C.ITEM: "int32",
                                                                          C.RATING: "float32"}))
            .toDF("u", "i", "r").cache())
    data.count()
    spark.sparkContext.setCheckpointDir(str(root / "ck" / "plain"))
    model = ALS(rank=args.rank, maxIter=args.max_iter, regParam=args.reg, userCol="u", itemCol="i", ratingCol="r",
                seed=cfg.model.seed, checkpointInterval=10).fit(data)
    rmse = model.transform(data).select(F.sqrt(F.avg((F.col("prediction") - F.col("r")) ** 2))).first()[0]
    plain_s = time.perf_counter() - t

    t = time.perf_counter()
    res = run_retrain(spark, cfg, as_of_ms=as_of, retrain=rc)
    ours_s = time.perf_counter() - t
    t = time.perf_counter()
    again = run_retrain(spark, cfg, as_of_ms=as_of, retrain=rc)
    noop_s = time.perf_counter() - t

    blas = "unknown"
    try:
        blas = spark.sparkContext._jvm.dev.ludovic.netlib.blas.BLAS.getInstance().getClass().getName()
    except Exception:  # noqa: BLE001
        pass
    out = {"dataset": args.dataset, "events": len(ev), "users": int(ev[C.USER].nunique()),
           "items": int(ev[C.ITEM].nunique()), "rank": args.rank, "max_iter": args.max_iter,
           "master": spark.sparkContext.master, "blas": blas,
           "plain_als_seconds": round(plain_s, 2), "plain_als_train_rmse": rmse,
           "retrain_seconds": round(ours_s, 2), "retrain_train_rmse": res.metrics.get("train_rmse"),
           "retrain_breakdown": res.seconds, "retrain_als_fit_seconds": res.metrics.get("seconds_fit"),
           "overhead_ratio": round(ours_s / plain_s, 2), "rerun_noop_seconds": round(noop_s, 2),
           "rerun_status": again.status, "status": res.status}
    print(json.dumps(out, indent=2))
    spark.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
