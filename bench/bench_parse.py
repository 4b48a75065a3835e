"""Where the parse phase of a big micro-batch goes: reading Kafka, parsing + validating + collecting.

A real local broker gets ``--events`` synthetic events (2 partitions); then, in one Spark session and
alternating within each repetition, the same records are read as a batch query:

- ``read_count_500`` / ``read_count_20000``: Kafka read only (``count()``) with the consumer's default of
  500 records per poll vs the trainer's ``kafka.max.poll.records = 20000``;
- ``parse_collect``: the trainer's parse phase: ``parse_events`` persisted, collected to pandas, plus
  the count of valid events from the cache;
- ``raw_collect`` + ``py_json``: the alternative of collecting the raw records with ``toArrow`` and
  parsing them with ``json.loads`` in the driver (before any validation or the events DataFrame that
  the append would need).

Medians over ``--reps`` repetitions after the first (warm-up) are printed as JSON.

    .venv/bin/python bench/bench_parse.py [--events 250000] [--reps 5]
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from dsgd.config import load_config  # noqa: E402
from dsgd.kafka_broker import KafkaBroker  # noqa: E402
from dsgd.session import build_session  # noqa: E402
from dsgd.synthetic import generate_stream, to_json_lines  # noqa: E402
from streaming.events import parse_events, valid_events  # noqa: E402


def _timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=250_000)
    ap.add_argument("--reps", type=int, default=5)
    args = ap.parse_args(argv)

    from kafka import KafkaProducer

    home = Path(tempfile.mkdtemp(prefix="bench-parse-"))
    df = generate_stream(args.events, n_users=20_000, n_items=2_000, seed=1, duration_days=7.0)
    try:
        with KafkaBroker(home / "kafka", port=0, heap="1g") as broker:
            broker.create_topic("events", partitions=2)
            producer = KafkaProducer(bootstrap_servers=broker.bootstrap, linger_ms=50, batch_size=512 * 1024)
            for key, value in zip(df["user"], to_json_lines(df), strict=True):
                producer.send("events", key=key.encode(), value=value)
            producer.flush()
            producer.close()
            cfg = load_config(profile="local", overrides=[f'app.warehouse="{home / "wh"}"'])
            spark = build_session(cfg)

            def source(poll: int = 20000):
                return (spark.read.format("kafka").option("kafka.bootstrap.servers", broker.bootstrap)
                        .option("subscribe", "events").option("startingOffsets", "earliest")
                        .option("kafka.max.poll.records", str(poll)).load())

            def parse_collect() -> None:
                parsed = parse_events(source(), explicit=False, rating_min=-1e9, rating_max=1e9).persist()
                parsed.select("user", "item", "rating", "ts", "seq", "topic", "partition", "offset",
                              "reason").toPandas()
                valid_events(parsed).count()
                parsed.unpersist()

            box: dict = {}

            def raw_collect() -> None:
                box["raw"] = source().select("key", "value", "topic", "partition", "offset", "timestamp").toArrow()

            def py_json() -> None:
                out = []
                for v in box["raw"].column("value").to_pylist():
                    try:
                        out.append(json.loads(v))
                    except ValueError:
                        out.append(None)

            runs: dict[str, list[float]] = {k: [] for k in ("read_count_500", "read_count_20000", "parse_collect",
                                                           "raw_collect", "py_json")}
            for _ in range(args.reps + 1):
                runs["read_count_500"].append(_timed(lambda: source(500).count()))
                runs["read_count_20000"].append(_timed(lambda: source(20000).count()))
                runs["parse_collect"].append(_timed(parse_collect))
                runs["raw_collect"].append(_timed(raw_collect))
                runs["py_json"].append(_timed(py_json))
            spark.stop()
    finally:
        shutil.rmtree(home, ignore_errors=True)
    med = {k: round(float(np.median(v[1:])), 3) for k, v in runs.items()}
    out = {"events": args.events, "reps": args.reps, "median_s": med,
           "all_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
           "poll_500_vs_20000": round(med["read_count_500"] / med["read_count_20000"], 2),
           "parse_us_per_event": round(med["parse_collect"] / args.events * 1e6, 2),
           "python_path_vs_parse": round((med["raw_collect"] + med["py_json"]) / med["parse_collect"], 2)}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
