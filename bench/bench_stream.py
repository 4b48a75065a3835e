"""End-to-end streaming throughput: Kafka -> trainer -> Delta factors at a fixed offered rate.

A producer thread offers ``--rate`` events/s for ``--seconds`` to a real local broker; the trainer runs
with a processing-time trigger. Reported (JSON): offered and sustained events/s (events committed to
the factor table / wall time of the batches that held them), p50/p95/max batch duration vs the trigger
interval, consumer lag at the end, driver RSS at start and end. ``processing_events_per_s`` divides by
the batches' own ``seconds_total``; ``wall_events_per_s`` by the wall time between the first and the
last batch's metrics commit, so it also pays the per-batch work outside ``seconds_total`` (the metrics
append, Spark's offset and commit logs).

    python bench/bench_stream.py --rate 20000 --seconds 60 --trigger "5 seconds"

``--preload`` writes all events to the topic first and then runs the trainer with
``kafka.max_offsets_per_trigger = rate x trigger``: each batch holds what one trigger interval brings
at the offered rate, and no producer competes for the two cores (a Python producer tops out near
13k events/s here and takes a core while it runs).

``--capacity`` measures the trainer against the limit of its own stack, side by side in one run: the
topic is preloaded, then a plain Structured Streaming job (the same Kafka source options, the same parser
``streaming.events.parse_events``, an append of the valid events to a Delta table partitioned like
``events``, nothing else) and the trainer each consume all of it as fast as they can (``availableNow``,
the same ``maxOffsetsPerTrigger`` = rate x trigger, so the same batches), alternating ``--reps`` times
from fresh tables and checkpoints. Both rates come from the queries' own progress reports: events of
batches 2..n over the time between the end of batch 1 and the end of batch n. Printed: both rates and
``trainer_over_plain`` (goal >= 0.6).

    python bench/bench_stream.py --capacity --rate 50000 --seconds 30 --trigger "5 seconds" --reps 2

Every run also reports each maintenance pass (``--maintenance-every``): its seconds (from the trainer's
log line) and the trigger time of the batch that ran it.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import re
import shutil
import tempfile
import threading
import time
from pathlib import Path

import numpy as np


def _rss_mb() -> float:
    with open(f"/proc/{os.getpid()}/status") as fh:
        for line in fh:
            if line.startswith("VmRSS"):
                return int(line.split()[1]) / 1024
    return float("nan")


def _producer(bootstrap: str, topic: str, values: list[bytes], keys: list[bytes], rate: float, seconds: float,
              sent: list[int], stop: threading.Event, paced: bool = True) -> None:
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=50, batch_size=512 * 1024, acks=1)
    start = time.monotonic()
    n = 0
    total = int(rate * seconds)
    chunk = max(1, int(rate / 20))
    while n < total and not stop.is_set():
        wait = start + n / rate - time.monotonic()
        if paced and wait > 0:
            time.sleep(wait)
        for _ in range(min(chunk, total - n)):
            producer.send(topic, key=keys[n % len(keys)], value=values[n % len(values)])
            n += 1
    producer.flush()
    producer.close()
    sent.append(n)


class _MaintenanceLog(logging.Handler):
    """Collects the seconds of each maintenance pass from the trainer's log line."""

    PATTERN = re.compile(r"maintenance: (?:rewrote|kept) the factors table .* in ([0-9.]+)s")

    def __init__(self) -> None:
        super().__init__(logging.INFO)
        self.seconds: list[float] = []

    def emit(self, record: logging.LogRecord) -> None:
        m = self.PATTERN.search(record.getMessage())
        if m:
            self.seconds.append(float(m.group(1)))


def _progress_stats(progress: list) -> dict:
    """Rate and batch times of a query from its progress reports (batches that read something)."""
    from datetime import datetime

    ps = sorted((p for p in progress if p["numInputRows"] > 0), key=lambda p: p["batchId"])
    ends = [datetime.fromisoformat(p["timestamp"].replace("Z", "+00:00")).timestamp()
            + p["durationMs"]["triggerExecution"] / 1000 for p in ps]
    rows = [int(p["numInputRows"]) for p in ps]
    secs = np.array([p["durationMs"]["triggerExecution"] / 1000 for p in ps])
    wall = ends[-1] - ends[0] if len(ends) > 1 else 0.0
    return {"events": int(sum(rows)), "batches": len(ps), "mean_rows_per_batch": round(float(np.mean(rows)), 1),
            "events_per_s": round(sum(rows[1:]) / wall, 1) if wall > 0 else None,
            "batch_p50_s": round(float(np.percentile(secs, 50)), 2), "batch_max_s": round(float(secs.max()), 2),
            "batch_seconds": [round(float(x), 2) for x in secs]}


def _plain_job(spark, cfg, path: str, checkpoint: str) -> dict:
    """The stack's limit: Kafka -> parse_events -> append the valid events to Delta, nothing else."""
    from dsgd.store.tables import EVENTS_PARTITION
    from streaming.events import parse_events, valid_events
    from streaming.trainer import source_options

    m = cfg.model
    src = spark.readStream.format("kafka").options(**source_options(cfg)).load()
    events = valid_events(parse_events(src, explicit=m.kind == "explicit", rating_min=m.rating_min,
                                       rating_max=m.rating_max))
    query = (events.writeStream.format("delta").outputMode("append").partitionBy(*EVENTS_PARTITION)
             .option("checkpointLocation", checkpoint).trigger(availableNow=True).start(path))
    query.awaitTermination()
    return _progress_stats(query.recentProgress)


def _trainer_job(spark, cfg, home: Path, rep: int, maint: _MaintenanceLog) -> dict:
    from streaming.trainer import StreamTrainer

    c = cfg.replace(app={"warehouse": str(home / f"wh-{rep}"), "checkpoint_root": str(home / f"ck-{rep}")},
                    stream={"trigger": "available_now"})
    n0 = len(maint.seconds)
    trainer = StreamTrainer(spark, c)
    query = trainer.start()
    query.awaitTermination()
    out = _progress_stats(query.recentProgress)
    out["maintenance_pass_s"] = maint.seconds[n0:]
    return out


def capacity(spark, cfg, home: Path, reps: int, maint: _MaintenanceLog) -> dict:
    """The plain job and the trainer over the same preloaded topic, alternating (see the module doc)."""
    runs = []
    for rep in range(reps):
        plain = _plain_job(spark, cfg, str(home / f"plain-{rep}"), str(home / f"plain-ck-{rep}"))
        trainer = _trainer_job(spark, cfg, home, rep, maint)
        runs.append({"plain": plain, "trainer": trainer,
                     "trainer_over_plain": round(trainer["events_per_s"] / plain["events_per_s"], 3)})
    return {"runs": runs,
            "plain_events_per_s_median": float(np.median([r["plain"]["events_per_s"] for r in runs])),
            "trainer_events_per_s_median": float(np.median([r["trainer"]["events_per_s"] for r in runs])),
            "trainer_over_plain_median": float(np.median([r["trainer_over_plain"] for r in runs]))}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--rate", type=float, default=20000.0, help="offered events per second")
    ap.add_argument("--seconds", type=float, default=60.0, help="how long to offer load")
    ap.add_argument("--trigger", default="5 seconds")
    ap.add_argument("--engine", default="local", choices=("local", "spark"))
    ap.add_argument("--users", type=int, default=50_000)
    ap.add_argument("--items", type=int, default=5_000)
    ap.add_argument("--out", default=None, help="also write the JSON here")
    ap.add_argument("--maintenance-every", type=int, default=None,
                    help="stream.maintenance_every (compaction + VACUUM every N batches; default: the config's)")
    ap.add_argument("--preload", action="store_true",
                    help="produce everything first; batches capped at rate x trigger (see above)")
    ap.add_argument("--capacity", action="store_true",
                    help="trainer vs a plain parse + Delta append job on the same preloaded topic (see above)")
    ap.add_argument("--reps", type=int, default=1, help="--capacity: alternating repetitions")
    args = ap.parse_args()
    args.preload = args.preload or args.capacity

    from dsgd.core.config import load_config
    from dsgd.evaluation.synthetic import generate_stream, to_json_lines
    from dsgd.ops.kafka_broker import KafkaBroker
    from dsgd.store.session import build_session
    from streaming.trainer import StreamTrainer

    home = Path(tempfile.mkdtemp(prefix="bench-stream-"))
    n_distinct = int(min(args.rate * args.seconds, 2_000_000))
    df = generate_stream(n_distinct, n_users=args.users, n_items=args.items, seed=1, duration_days=7.0)
    values = list(to_json_lines(df))
    keys = [u.encode() for u in df["user"]]
    try:
        with KafkaBroker(home / "kafka", port=0, heap="1g") as broker:
            broker.create_topic("events", partitions=2)
            cfg = load_config(profile="local", overrides=[
                f'app.warehouse="{home / "wh"}"', f'app.checkpoint_root="{home / "ck"}"',
                f'kafka.bootstrap_servers="{broker.bootstrap}"', 'kafka.starting_offsets="earliest"',
                f'stream.trigger_interval="{args.trigger}"', f'model.engine="{args.engine}"',
                "model.negatives=10", "stream.eval_max_events=5000",
                *([f"stream.maintenance_every={args.maintenance_every}"] if args.maintenance_every else []),
                *([f"kafka.max_offsets_per_trigger={int(args.rate * float(args.trigger.split()[0]))}"]
                  if args.preload else [])])
            spark = build_session(cfg)
            maint = _MaintenanceLog()
            logging.getLogger("dsgd.stream").addHandler(maint)
            logging.getLogger("dsgd.stream").setLevel(logging.INFO)
            rss0 = _rss_mb()
            if args.capacity:
                sent: list[int] = []
                _producer(broker.bootstrap, "events", values, keys, args.rate, args.seconds, sent,
                          threading.Event(), False)
                out = {"mode": "capacity", "engine": args.engine, "trigger": args.trigger,
                       "max_offsets_per_trigger": int(args.rate * float(args.trigger.split()[0])),
                       "events": sent[0], **capacity(spark, cfg, home, args.reps, maint),
                       "loadavg_1m_at_end": os.getloadavg()[0], "cpus": os.cpu_count()}
                spark.stop()
                print(json.dumps(out, indent=2))
                if args.out:
                    Path(args.out).write_text(json.dumps(out, indent=2))
                return
            trainer = StreamTrainer(spark, cfg)
            sent: list[int] = []
            stop = threading.Event()
            prod = threading.Thread(target=_producer, args=(broker.bootstrap, "events", values, keys, args.rate,
                                                            args.seconds, sent, stop, not args.preload), daemon=True)
            query = None
            t0 = time.monotonic()
            if not args.preload:
                query = trainer.start()
            prod.start()
            prod.join()
            offered_s = time.monotonic() - t0
            if args.preload:
                query = trainer.start()
            # drain: wait until the trainer has consumed everything (or 3 minutes)
            deadline = time.monotonic() + 180
            while time.monotonic() < deadline:
                done = sum(r.rows_in for r in trainer.results)
                if sent and done >= sent[0]:
                    break
                time.sleep(1)
            query.stop()
            res = [r for r in trainer.results if r.rows_in > 0]
            m = spark.read.format("delta").load(f"{home / 'wh'}/metrics").toPandas()
            durations = m[m["rows_in"] > 0].sort_values("batch_id")["seconds_total"].to_numpy()
            steady = res[1:] if len(res) > 2 else res
            steady_rows = sum(r.rows_in for r in steady)
            steady_time = sum(r.seconds_total for r in steady)
            interval = float(args.trigger.split()[0])
            # wall clock, all per-batch overheads included (metrics append, Spark's offset/commit logs):
            # events of batches 2..n over the time between the metrics commits of batch 1 and batch n
            done = m[m["rows_in"] > 0].sort_values("batch_id")
            wall = (done["written_at"].iloc[-1] - done["written_at"].iloc[0]).total_seconds() if len(done) > 1 else 0
            wall_rate = round(float(done["rows_in"].iloc[1:].sum()) / wall, 1) if wall > 0 else None
            out = {
                "engine": args.engine, "mode": "preloaded" if args.preload else "live producer",
                "trigger_s": interval, "offered_rate": args.rate,
                "offered_events": sent[0] if sent else 0, "offer_seconds": round(offered_s, 1),
                "achieved_offer_rate": round((sent[0] if sent else 0) / offered_s, 1),
                "consumed_events": int(m["rows_in"].sum()), "batches": int(len(durations)),
                "processing_events_per_s": round(steady_rows / steady_time, 1) if steady_time else None,
                "wall_events_per_s": wall_rate,
                "batch_p50_s": round(float(np.percentile(durations, 50)), 2),
                "batch_p95_s": round(float(np.percentile(durations, 95)), 2),
                "batch_max_s": round(float(durations.max()), 2),
                "batch_p95_after_first_s": round(float(np.percentile(durations[1:], 95)), 2) if len(durations) > 2
                else None,
                "batch_seconds": [round(float(x), 2) for x in durations],
                "p95_below_trigger": bool(np.percentile(durations, 95) < interval),
                "mean_rows_per_batch": round(float(m.loc[m["rows_in"] > 0, "rows_in"].mean()), 1),
                "phase_means_s": {k: round(float(m[f"seconds_{k}"].mean()), 2)
                                  for k in ("parse", "eval", "train", "write")},
                "final_lag_records": int(m.sort_values("batch_id")["lag_records"].iloc[-1]),
                "maintenance_pass_s": maint.seconds,
                "trigger_seconds": _progress_stats(query.recentProgress)["batch_seconds"],
                "driver_rss_mb": [round(rss0, 1), round(_rss_mb(), 1)],
                "cpus": os.cpu_count(),
            }
            spark.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    print(json.dumps(out, indent=2))
    if args.out:
        Path(args.out).write_text(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
