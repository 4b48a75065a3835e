"""Per-batch cost against model size: the same 50k-event micro-batch (parse to commit) on models of
10^4 .. 10^7 factor rows, for both engines, with the driver's memory, and a maintenance pass timed.

    .venv/bin/python bench/bench_scale.py --rows 1e4,1e5,1e6,1e7 --engines local,spark
    .venv/bin/python bench/bench_scale.py --rows 1e4,1e6 --rank 64

Each model is written straight into a fresh warehouse's ``factors`` table (seeded vectors made on the
executors, 10 % users, 90 % items, like a music catalogue), then the trainer's own per-batch function
(:meth:`streaming.trainer.StreamTrainer.process_batch`) takes two micro-batches built like a Kafka
source's rows: the first warms up (compilation, first model read), the second is timed. Its events
touch 5k known users and new ones, and items by a Zipf law over the catalogue. No broker is needed
(the consumer-lag probe records -1). Prints one JSON object; ``ratio_largest_to_smallest`` is the goal
(<= 1.5).
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


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    raise FileNotFoundError(pid)


def _jvm_heap_mb(spark) -> float:
    rt = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    return (rt.totalMemory() - rt.freeMemory()) / 2**20


def seed_model(spark, store, n_users: int, n_items: int, rank: int, seed: int = 42, scale: float = 0.1) -> float:
    """Write a model of ``n_users`` + ``n_items`` rows (ids ``u<n>``/``i<n>``) in one commit, built on the
    executors; returns the seconds it took."""
    from dsgd.core.factors import SideFactors
    from dsgd.core.hashing import id_key

    def rows(prefix: str, side: str):
        def build(batches):
            for b in batches:
                n = b.column(0).to_numpy()
                ids = np.array([f"{prefix}{v}" for v in n], dtype=object)
                f = SideFactors.empty(rank)
                f.ensure(ids, id_key(ids), rank, seed, scale, side)
                f.count[:] = 1
                yield from f.to_arrow().to_batches()

        return build

    schema = "id string, key long, vec array<float>, bias float, count long"
    t = time.perf_counter()
    parts = max(2, (n_users + n_items) // 500_000)
    users = spark.range(n_users, numPartitions=max(1, parts // 10)).mapInArrow(rows("u", "u"), schema)
    items = spark.range(n_items, numPartitions=parts).mapInArrow(rows("i", "i"), schema)
    store.write(users, items, meta={"n_users": n_users, "n_items": n_items, "mu": 0.0}, batch_id=-1, force=True)
    return time.perf_counter() - t


def kafka_batch(spark, n_users: int, n_items: int, events: int, offset: int, seed: int):
    """``events`` records shaped like the Kafka source's rows: 5k known users (plus 10 % new ones),
    items by a Zipf law over the catalogue."""
    rng = np.random.default_rng(seed)
    known = rng.integers(0, n_users, 5000)
    users = np.where(rng.random(events) < 0.9, known[rng.integers(0, len(known), events)].astype(str),
                     np.char.add("new", rng.integers(0, 2000, events).astype(str)))
    items = np.minimum(rng.zipf(1.3, events) - 1, n_items - 1)
    ts = 1_700_000_000_000 + offset + np.arange(events)
    values = [json.dumps({"user": f"u{u}" if not u.startswith("new") else u, "item": f"i{i}", "ts": int(t)}).encode()
              for u, i, t in zip(users, items, ts, strict=True)]
    pdf = pd.DataFrame({"key": [None] * events, "value": values, "topic": "bench", "partition": 0,
                        "offset": np.arange(offset, offset + events, dtype=np.int64),
                        "timestamp": pd.to_datetime(ts, unit="ms"), "timestampType": 0})
    return spark.createDataFrame(pdf, "key binary, value binary, topic string, partition int, offset long, "
                                      "timestamp timestamp, timestampType int")


def one_size(spark, base_cfg, rows: int, engine: str, rank: int, events: int) -> dict:
    from dsgd.store.factor_store import FactorStore
    from streaming.trainer import StreamTrainer

    home = Path(tempfile.mkdtemp(prefix=f"bench-scale-{rows}-"))
    try:
        cfg = base_cfg.replace(app={"warehouse": str(home / "wh"), "checkpoint_root": str(home / "ck")},
                               model={"engine": engine, "rank": rank, "local_max_rows": max(rows * 2, 10**6)},
                               kafka={"bootstrap_servers": "127.0.0.1:9"})
        n_users = rows // 10
        store = FactorStore(spark, cfg.app.warehouse + "/factors")
        store.create(rank=rank, kind="implicit")
        seeded = seed_model(spark, store, n_users, rows - n_users, rank)
        trainer = StreamTrainer(spark, cfg)
        trainer.stream_id = "bench"
        trainer._started.set()
        out = {"rows": rows, "engine": engine, "rank": rank, "seed_model_s": round(seeded, 1)}
        for batch_id, label in ((0, "warm"), (1, "timed")):
            df = kafka_batch(spark, n_users, rows - n_users, events, batch_id * events, seed=batch_id).cache()
            df.count()
            t = time.perf_counter()
            trainer.process_batch(df, batch_id)
            wall = time.perf_counter() - t
            df.unpersist()
            res = trainer.results[-1]
            out[label] = {"wall_s": round(wall, 2), "parse_s": round(res.seconds_parse, 2),
                          "eval_s": round(res.seconds_eval, 2), "train_s": round(res.seconds_train, 2),
                          "write_s": round(res.seconds_write, 2), "rows_valid": res.rows_valid}
        out["driver_python_rss_mb"] = round(_rss_mb(os.getpid()), 0)
        out["driver_jvm_heap_mb"] = round(_jvm_heap_mb(spark), 0)
        t = time.perf_counter()
        trainer.maintenance()
        out["maintenance_s"] = round(time.perf_counter() - t, 2)
        trainer.ctx.lag.close()
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--rows", default="1e4,1e5,1e6,1e7", help="model sizes (factor rows), comma-separated")
    ap.add_argument("--engines", default="local,spark")
    ap.add_argument("--rank", type=int, default=10)
    ap.add_argument("--events", type=int, default=50_000, help="events per micro-batch")
    args = ap.parse_args()

    from dsgd.core.config import load_config
    from dsgd.store.session import build_session

    cfg = load_config(profile="local", overrides=['spark.driver_memory="8g"'])
    spark = build_session(cfg)
    sizes = [int(float(r)) for r in args.rows.split(",")]
    runs = []
    for engine in args.engines.split(","):
        for rows in sizes:
            r = one_size(spark, cfg, rows, engine, args.rank, args.events)
            print(json.dumps(r), file=sys.stderr, flush=True)
            runs.append(r)
    ratios = {}
    for engine in args.engines.split(","):
        mine = [r for r in runs if r["engine"] == engine]
        ratios[engine] = round(mine[-1]["timed"]["wall_s"] / mine[0]["timed"]["wall_s"], 2)
    print(json.dumps({"events_per_batch": args.events, "rank": args.rank, "runs": runs,
                      "ratio_largest_to_smallest": ratios}, indent=2))


if __name__ == "__main__":
    main()
