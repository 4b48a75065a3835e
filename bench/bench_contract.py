"""What the strict event contract costs on the hot path: ``parse_events`` now vs at a baseline revision.

Synthetic events (the trainer's wire format, ``to_json_lines``; with ``--bad-fraction`` some records of the
fuzz corpus mixed in) are put into a Kafka-shaped frame held in a ``localCheckpoint`` (no broker: the
Kafka read is the same for both and ``bench_parse.py`` measures it). Then, alternating within each
repetition, in one Spark session:

- ``current`` / ``baseline``: the trainer's parse phase without the Kafka read: ``parse_events``
  persisted, collected to pandas (the columns the trainer collects), plus the count of valid events
  from the cache; ``baseline`` is ``streaming/events.py`` as it was at ``--baseline`` (read with
  ``git show``, loaded as its own module);
- ``reference_us_per_event``: :func:`dsgd.core.contract.parse_event` in Python over the same values
  (what ``dsgd produce`` adds per record).

Medians over ``--reps`` repetitions after the first (warm-up) are printed as JSON.

    .venv/bin/python bench/bench_contract.py [--events 250000] [--reps 5] [--baseline fd9dfb5]
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from dsgd.core.config import load_config  # noqa: E402
from dsgd.core.contract import parse_event  # noqa: E402
from dsgd.evaluation.synthetic import generate_stream, to_json_lines  # noqa: E402
from dsgd.store.session import build_session  # noqa: E402
from streaming import events as current  # noqa: E402

COLLECTED = ["user", "item", "rating", "ts", "seq", "topic", "partition", "offset", "reason"]


def _baseline(rev: str):
    source = subprocess.run(["git", "show", f"{rev}:streaming/events.py"], cwd=ROOT, capture_output=True, text=True,
                            check=True).stdout
    # a revision from before the package layout imported the column names from the flat package
    source = source.replace("from dsgd import columns as C", "from dsgd.core import columns as C")
    path = Path(tempfile.mkdtemp(prefix="bench-contract-")) / "baseline_events.py"
    path.write_text(source)
    spec = importlib.util.spec_from_file_location("baseline_events", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules["baseline_events"] = module
    spec.loader.exec_module(module)
    return module


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--events", type=int, default=250_000)
    ap.add_argument("--reps", type=int, default=5)
    ap.add_argument("--baseline", default="fd9dfb5", help="git revision of the parser to compare with")
    ap.add_argument("--bad-fraction", type=float, default=0.0, help="share of fuzz-corpus records mixed in")
    args = ap.parse_args(argv)

    baseline = _baseline(args.baseline)
    df = generate_stream(args.events, n_users=20_000, n_items=2_000, seed=1, duration_days=7.0)
    values = list(to_json_lines(df))
    if args.bad_fraction > 0:
        from tests.contract_records import corpus

        bad = [v for v in corpus(int(len(values) * args.bad_fraction)) if v is None or len(v) < 10_000]
        step = max(1, len(values) // max(1, len(bad)))
        for k, v in enumerate(bad):
            values[k * step] = v
    home = Path(tempfile.mkdtemp(prefix="bench-contract-"))
    spark = build_session(load_config(profile="local", overrides=[f'app.warehouse="{home / "wh"}"']))
    import pandas as pd

    kafka_ts = datetime.datetime(2024, 1, 2, tzinfo=datetime.UTC)
    pdf = pd.DataFrame({"key": [b"k"] * len(values), "value": values, "topic": "events",
                        "partition": [i % 2 for i in range(len(values))], "offset": range(len(values)),
                        "timestamp": kafka_ts})
    kafka = spark.createDataFrame(
        pdf, "key binary, value binary, topic string, partition int, offset long, timestamp timestamp")
    kafka = kafka.repartition(2).localCheckpoint()
    kafka.count()

    def phase(module) -> None:
        parsed = module.parse_events(kafka, explicit=False, rating_min=-1e9, rating_max=1e9).persist()
        parsed.select(*COLLECTED).toPandas()
        module.valid_events(parsed).count()
        parsed.unpersist()

    def reference() -> None:
        for v in values:
            parse_event(v, kafka_ts_ms=0, explicit=False, rating_min=-1e9, rating_max=1e9)

    steps = {"current": lambda: phase(current), "baseline": lambda: phase(baseline), "reference": reference}
    runs: dict[str, list[float]] = {k: [] for k in steps}
    for _ in range(args.reps + 1):
        for name, step in steps.items():
            t = time.perf_counter()
            step()
            runs[name].append(time.perf_counter() - t)
    valid = {name: module.valid_events(module.parse_events(kafka, explicit=False, rating_min=-1e9,
                                                           rating_max=1e9)).count()
             for name, module in (("current", current), ("baseline", baseline))}
    spark.stop()
    med = {k: round(float(np.median(v[1:])), 3) for k, v in runs.items()}
    out = {"events": len(values), "reps": args.reps, "baseline": args.baseline, "bad_fraction": args.bad_fraction,
           "median_s": med, "all_s": {k: [round(x, 2) for x in v] for k, v in runs.items()},
           "current_vs_baseline": round(med["current"] / med["baseline"], 2),
           "current_us_per_event": round(med["current"] / len(values) * 1e6, 2),
           "reference_us_per_event": round(med["reference"] / len(values) * 1e6, 2),
           "valid_events": valid}
    print(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
