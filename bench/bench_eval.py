"""Benchmark of the prequential harness: DCG and events/s against micro-batch size, plus the speed of
the full four-model run.

    .venv/bin/python bench/bench_eval.py --dataset lastfm-tsv \\
        --path ../shared/data/lastfm-1k/listens-first10pct.tsv --sizes 10,100,1000,10000,day

Writes ``sweep.csv``, ``sweep.md``, ``sweep.png`` and ``speed.json`` to ``--out`` (default bench/out/eval),
and prints the full run's mean DCG@100 per model in the three seen-item modes (``summary.json``).
``--sizes ""`` skips the sweep.
Without ``--path`` it runs on a synthetic stream (dsgd.evaluation.synthetic.generate_stream).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsgd.evaluation.harness import (
    parse_sizes,
    prepare_stream,
    run_prequential,
    speed,
    summary_table,
    sweep_batch_sizes,
)
from dsgd.evaluation.loaders import load_dataset  # noqa: E402
from dsgd.evaluation.report import write_sweep  # noqa: E402
from dsgd.evaluation.synthetic import generate_stream  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="lastfm-tsv")
    ap.add_argument("--path", default=None)
    ap.add_argument("--implicit-threshold", type=float, default=None)
    ap.add_argument("--sizes", default="10,100,1000,10000,day")
    ap.add_argument("--models", default="popularity,online")
    ap.add_argument("--full-models", default="popularity,online,batch,batch+online",
                    help="models of the speed run at --speed-batch (empty: skip)")
    ap.add_argument("--speed-batch", type=int, default=100)
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
    t = time.perf_counter()
    if args.sizes:
        sw = sweep_batch_sizes(stream, parse_sizes(args.sizes), args.models)
        md = write_sweep(sw, out, title=f"{args.dataset}: micro-batch size sweep")
        print(md)
        print(f"\nsweep: {time.perf_counter() - t:.1f} s")
    if args.full_models:
        res = run_prequential(stream, args.full_models, batch_events=args.speed_batch)
        sp = {**speed(res), "models": res.models, "per_model_seconds": res.seconds}
        (out / "speed.json").write_text(json.dumps(sp, indent=1))
        print(f"\nfull run ({args.full_models}, micro-batch {args.speed_batch}): {sp['events']} events, "
              f"{sp['wall_seconds']:.1f} s, {sp['events_per_s']:.0f} events/s")
        for m, s in res.seconds.items():
            print(f"  {m}: " + ", ".join(f"{k} {v:.2f} s" for k, v in s.items()))
        summ = summary_table(res)[["model", "dcg_off", "dcg_exclude_seen", "dcg_strict"]]
        (out / "summary.json").write_text(summ.to_json(orient="records", indent=1))
        print(f"\nmean DCG@100, batches of {args.speed_batch} (off / exclude seen / strict):")
        for r in summ.itertuples():
            print(f"  {r.model}: {r.dcg_off:.4f} / {r.dcg_exclude_seen:.4f} / {r.dcg_strict:.4f}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
