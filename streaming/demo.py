"""``dsgd demo``: the main job end to end on its embedded default, on one machine.

Starts a local KRaft broker on free ports, creates the topic, replays a seeded synthetic stream into
it, runs the streaming trainer until the stream is consumed (availableNow), prints a short report
(events, batches, events/s, prequential DCG of the model vs popularity) and a top-10 for one user, stops the broker, then starts
``dsgd serve`` on the demo's model, prints one HTTP answer and stops it. Everything lives under
``--home`` (default ``.dsgd/demo``) and nothing is left running.
"""

from __future__ import annotations

import argparse
import json
import logging
import shutil
import time
from pathlib import Path

import numpy as np

from dsgd.cli.registry import command
from dsgd.core.config import Config

log = logging.getLogger("dsgd.demo")


def _demo_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--home", default=".dsgd/demo", help="folder for the broker, tables and checkpoints (wiped)")
    p.add_argument("--events", type=int, default=200_000, help="synthetic events to replay")
    p.add_argument("--users", type=int, default=5_000)
    p.add_argument("--items", type=int, default=1_000)
    p.add_argument("--batch", type=int, default=40_000, help="records per micro-batch (maxOffsetsPerTrigger)")
    p.add_argument("--seed", type=int, default=7)


@command("demo", "end-to-end demo: local broker -> synthetic stream -> trainer -> Delta -> report", _demo_args)
def cmd_demo(args: argparse.Namespace, cfg: Config) -> int:
    return run_demo(cfg, home=args.home, n_events=args.events, n_users=args.users, n_items=args.items,
                    batch=args.batch, seed=args.seed)


def run_demo(cfg: Config, *, home: str, n_events: int, n_users: int, n_items: int, batch: int, seed: int) -> int:
    from dsgd.evaluation.synthetic import generate_stream
    from dsgd.ops.kafka_broker import KafkaBroker
    from dsgd.store.session import build_session
    from streaming.produce import produce_events
    from streaming.trainer import StreamTrainer

    t_start = time.monotonic()
    root = Path(home).resolve()
    shutil.rmtree(root, ignore_errors=True)
    root.mkdir(parents=True)
    print(f"[demo] generating {n_events:,} synthetic events ({n_users:,} users, {n_items:,} items)", flush=True)
    df = generate_stream(n_events, n_users=n_users, n_items=n_items, seed=seed, implicit=True,
                         duration_days=14.0)
    with KafkaBroker(root / "kafka", port=0, heap="512m") as broker:
        print(f"[demo] Kafka broker up at {broker.bootstrap} (pid {broker.pid()})", flush=True)
        run_cfg = cfg.replace(
            app={"warehouse": str(root / "warehouse"), "checkpoint_root": str(root / "checkpoints")},
            spark={"master": cfg.spark.master or "local[2]"},
            kafka={"bootstrap_servers": broker.bootstrap, "topic": "events", "max_offsets_per_trigger": batch},
            stream={"trigger": "available_now"},
            model={"engine": "local", "lr": 0.1, "negatives": 10})
        broker.create_topic("events", partitions=2)
        produce_events(df, bootstrap=broker.bootstrap, topic="events", progress=True)
        spark = build_session(run_cfg)
        trainer = StreamTrainer(spark, run_cfg)
        t0 = time.monotonic()
        rc = trainer.run()
        took = time.monotonic() - t0
        if rc != 0:
            print("[demo] the stream failed; see the log above", flush=True)
            return 1
        report = _report(spark, run_cfg, trainer, took, df)
    print(json.dumps(report, indent=2))
    _serve_once(run_cfg, report["top10_for_user"]["user"])
    print(f"[demo] done in {time.monotonic() - t_start:.0f}s; broker and server stopped, nothing left running",
          flush=True)
    return 0


def _serve_once(cfg: Config, user: str) -> None:
    """Start ``dsgd serve`` on the demo's tables (a free loopback port), print one HTTP answer, stop it."""
    import os
    import subprocess
    import sys

    import httpx

    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    proc = subprocess.Popen([sys.executable, "-m", "dsgd", "serve", "--port", "0", "--set",
                             f'app.warehouse="{cfg.app.warehouse}"', "--set", 'app.log_level="WARNING"'],
                            stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, env=env)
    try:
        url = json.loads(proc.stdout.readline())["serving"]
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{url}/ready", timeout=10).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            time.sleep(0.2)
        answer = httpx.get(f"{url}/users/{user}/recommendations", params={"k": 5}, timeout=30)
        print(f"[demo] dsgd serve at {url} (docs: {url}/docs)\n[demo] GET /users/{user}/recommendations?k=5 -> "
              f"{answer.status_code} {answer.text}", flush=True)
    finally:
        proc.terminate()
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(10)


def _report(spark, cfg: Config, trainer, took: float, df) -> dict:
    from dsgd.core import columns as C
    from dsgd.store.factor_store import FactorStore
    from dsgd.store.tables import Tables

    tables = Tables.from_config(cfg)
    m = spark.read.format("delta").load(tables.metrics).toPandas().sort_values("batch_id")
    scored = m[(m["dcg_events"] > 0) & m["dcg"].notna() & m["dcg_popularity"].notna()]
    w = scored["dcg_events"].to_numpy(float)
    store = FactorStore(spark, tables.factors)
    items = store.load(C.SIDE_ITEM).toPandas()
    user = df[C.USER].value_counts().index[0]
    urow = store.load(C.SIDE_USER).where(f"id = '{user}'").toPandas()
    seen = set(df.loc[df[C.USER] == user, C.ITEM])
    top = []
    if len(urow):
        scores = np.stack(items[C.VEC].to_numpy()) @ np.asarray(urow[C.VEC].iloc[0], np.float32)
        order = np.argsort(-scores, kind="stable")
        top = [{"item": items[C.ID].iloc[j], "score": round(float(scores[j]), 4)} for j in order
               if items[C.ID].iloc[j] not in seen][:10]
    later = scored.iloc[len(scored) // 2:]
    return {
        "events": int(m["rows_valid"].sum()),
        "quarantined": int(m["rows_quarantined"].sum()),
        "batches": len(m),
        "seconds": round(took, 1),
        "events_per_s": round(float(m["rows_in"].sum()) / took, 1),
        "batch_seconds_p50": round(float(m["seconds_total"].median()), 2),
        "dcg@100_model": round(float(np.average(scored["dcg"], weights=w)), 4) if len(scored) else None,
        "dcg@100_popularity": round(float(np.average(scored["dcg_popularity"], weights=w)), 4) if len(scored) else None,
        "dcg@100_model_second_half": round(float(later["dcg"].mean()), 4) if len(later) else None,
        "dcg@100_popularity_second_half": round(float(later["dcg_popularity"].mean()), 4) if len(later) else None,
        "top10_for_user": {"user": user, "items": top},
        "tables": {"events": tables.events, "factors": tables.factors, "metrics": tables.metrics},
    }
