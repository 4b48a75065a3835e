"""Where the parse phase of a big micro-batch goes: reading Kafka, parsing + validating + collecting.

A real local broker gets ``--events`` synthetic events (2 partitions); then, in one Spark session and
alternating within each repetition, the same records are read as a batch query:

- ``read_count_500`` / ``read_count_20000``: Kafka read only (``count()``) with the consumer's default of
  500 records per poll vs the trainer's ``kafka.max.poll.records = 20000``;
- ``parse_collect``: the trainer's parse phase: ``parse_events`` persisted, collected to pandas, plus
  the count of valid events from the cache;
- ``valid_count_unpersisted``: ``valid_events(parse_events(...)).count()`` with no cache in between (the
  path that took 6.3 s per 250k records before ``parse_events`` stopped the filter from being pushed
  below the JSON parse);
- ``from_json_strings`` / ``from_json_typed``: ``from_json`` alone over the values, already read into a
  ``localCheckpoint``, with the all-string wire schema the parser used before issue 21 vs a typed one
  (``rating double, ts long``);
- ``parse_json_wrapped``: what the parser does instead since issue 21, ``try_parse_json`` over
  ``[`` + value + ``]``, alone over the same values, with the four fields' types read back;
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

from pyspark.sql import functions as F  # noqa: E402

from dsgd.core.config import load_config  # noqa: E402
from dsgd.evaluation.synthetic import generate_stream, to_json_lines  # noqa: E402
from dsgd.ops.kafka_broker import KafkaBroker  # noqa: E402
from dsgd.store.session import build_session  # noqa: E402
from streaming.events import parse_events, valid_events  # noqa: E402

WIRE_SCHEMA = "user string, item string, rating string, ts string, _corrupt string"
TYPED_SCHEMA = "user string, item string, rating double, ts long, _corrupt string"


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

            def valid_count_unpersisted() -> None:
                valid_events(parse_events(source(), explicit=False, rating_min=-1e9, rating_max=1e9)).count()

            values = source().select(F.col("value").cast("string").alias("v")).localCheckpoint()
            values.count()

            def from_json(schema: str) -> None:
                e = F.from_json("v", schema, {"columnNameOfCorruptRecord": "_corrupt", "mode": "PERMISSIVE"})
                values.select(e.alias("e")).select(F.sum(F.length("e.user") + F.length("e.item")
                                                         + F.coalesce(F.length("e.ts"), F.lit(0)))).collect()

            def parse_json_wrapped() -> None:
                doc = F.call_function("try_parse_json", F.concat(F.lit("["), F.col("v"), F.lit("]")))
                kinds = [F.call_function("schema_of_variant", F.call_function("variant_get", doc, F.lit(f"$[0].{k}")))
                         for k in ("user", "item", "rating", "ts")]
                values.select(F.sum(sum(F.coalesce(F.length(k), F.lit(0)) for k in kinds))).collect()

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

            steps = {"read_count_500": lambda: source(500).count(), "read_count_20000": lambda: source(20000).count(),
                     "parse_collect": parse_collect, "valid_count_unpersisted": valid_count_unpersisted,
                     "from_json_strings": lambda: from_json(WIRE_SCHEMA),
                     "from_json_typed": lambda: from_json(TYPED_SCHEMA),
                     "parse_json_wrapped": parse_json_wrapped,
                     "raw_collect": raw_collect, "py_json": py_json}
            runs: dict[str, list[float]] = {k: [] for k in steps}
            for _ in range(args.reps + 1):
                for name, step in steps.items():
                    runs[name].append(_timed(step))
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
