"""Benchmark of the prequential harness: DCG and events/s against micro-batch size, plus the speed of
the online model at 100-event batches (issue 18's goal: >= 100k events/s) and of a full run.

    .venv/bin/python bench/bench_eval.py --dataset lastfm-tsv \\
        --path ../shared/data/lastfm-1k/listens-first10pct.tsv --sizes 10,100,1000,10000,day

Prints one JSON line per measurement; writes ``sweep.csv``, ``sweep.md``, ``sweep.png`` and
``speed.json`` to ``--out`` (default bench/out/eval). Without ``--path`` it runs on a synthetic stream
(dsgd.evaluation.synthetic.generate_stream). ``--sizes ""`` skips the sweep.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsgd.evaluation.harness import prepare_stream, run_prequential, speed  # noqa: E402
from dsgd.evaluation.loaders import load_dataset  # noqa: E402
from dsgd.evaluation.report import write_sweep  # noqa: E402
from dsgd.evaluation.synthetic import generate_stream  # noqa: E402
from dsgd.evaluation.tuning import parse_sizes, sweep_batch_sizes  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="lastfm-tsv")
    ap.add_argument("--path", default=None)
    ap.add_argument("--implicit-threshold", type=float, default=None)
    ap.add_argument("--sizes", default="10,100,1000,10000,day")
    ap.add_argument("--models", default="popularity,online")
    ap.add_argument("--full-models", default="",
                    help="models of the speed run at --speed-batch (empty: skip)")
    ap.add_argument("--speed-batch", type=int, default=100)
    ap.add_argument("--repeat", type=int, default=3, help="repetitions of the online speed run")
    ap.add_argument("--out", default="bench/out/eval")
    args = ap.parse_args(argv)
    if args.path:
        opts = {} if args.implicit_threshold is None else {"implicit_threshold": args.implicit_threshold}
        events = load_dataset(args.dataset, args.path, **opts)
    else:
        events = generate_stream(50_000, n_users=500, n_items=1000, seed=0, duration_days=60)
    stream = prepare_stream(events)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    run_prequential(stream, "online", end=min(len(stream), 2000), progress=False, serving="plain,fold-in")  # jit
    for rep in range(args.repeat):
        res = run_prequential(stream, "online", batch_events=args.speed_batch, progress=False,
                              serving="plain,fold-in")
        for m in res.models:
            s = res.seconds[m]
            work = s["score"] + s["update"] + s["retrain"]
            print(json.dumps({"measure": "online_speed", "dataset": args.dataset, "items": len(stream.item_ids),
                              "model": m, "batch_events": args.speed_batch, "repeat": rep, "events": res.n_events,
                              "score_s": round(s["score"], 3), "update_s": round(s["update"], 3),
                              "events_per_s": round(res.n_events / work) if work else None,
                              "load_avg_1m": os.getloadavg()[0]}), flush=True)
    if args.sizes:
        t = time.perf_counter()
        sw = sweep_batch_sizes(stream, parse_sizes(args.sizes), args.models, progress=False)
        md = write_sweep(sw, out, title=f"{args.dataset}: micro-batch size sweep")
        print(md)
        print(f"\nsweep: {time.perf_counter() - t:.1f} s")
    if args.full_models:
        res = run_prequential(stream, args.full_models, batch_events=args.speed_batch, progress=False)
        sp = {**speed(res), "models": res.models, "per_model_seconds": res.seconds}
        (out / "speed.json").write_text(json.dumps(sp, indent=1))
        print(f"\nfull run ({args.full_models}, micro-batch {args.speed_batch}): {sp['events']} events, "
              f"{sp['wall_seconds']:.1f} s, {sp['events_per_s']:.0f} events/s")
        for m, s in res.seconds.items():
            print(f"  {m}: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.items()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
