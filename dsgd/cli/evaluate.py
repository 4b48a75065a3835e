"""``dsgd evaluate``: the prequential experiment (popularity / online / batch / batch+online) on a stream.

Writes to ``--out``: ``summary.csv``, ``periods.csv`` (per period, model and exclusion mode),
``results.json`` (all of it plus the settings and the harness speed), ``dcg_by_period.png``,
``summary.md`` (printed too); with ``--grid``: ``grid.csv``; with ``--sweep-batch-sizes``: ``sweep.csv``,
``sweep.md`` and ``sweep.png``.

Example
-------
    dsgd evaluate --dataset lastfm-tsv --path ../shared/data/lastfm-1k/listens-first10pct.tsv \\
        --models popularity,online,batch,batch+online --period week --batch-events 100 --out bench/out/lastfm
"""

from __future__ import annotations

import argparse
import logging
import time
from pathlib import Path
from typing import Any

from dsgd.cli.registry import command
from dsgd.core.config import Config
from dsgd.evaluation.harness import (
    DEFAULT_GRID,
    grid_search,
    parse_sizes,
    prepare_stream,
    run_prequential,
    sweep_batch_sizes,
)
from dsgd.evaluation.loaders import DATASETS, load_dataset
from dsgd.evaluation.models import EvalParams, expand_models
from dsgd.evaluation.report import markdown, write_report, write_sweep

log = logging.getLogger("dsgd.evaluate")

def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS, help="input format (dsgd.evaluation.loaders)")
    p.add_argument("--path", required=True, help="file or folder of the data set")
    p.add_argument("--models", default="popularity,online,batch,batch+online",
                   help="comma list: popularity, online, batch, batch+online (both variants), "
                   "batch+online:warm-start, batch+online:replace")
    p.add_argument("--period", default="week", choices=("week", "day"), help="reporting period")
    p.add_argument("--retrain-period", default="week", choices=("week", "day"), help="batch retrain period")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch-events", type=int, default=None, help="micro-batch by count (default 100)")
    g.add_argument("--batch-seconds", type=float, default=None, help="micro-batch by event time")
    p.add_argument("--out", default="bench/out/evaluate", help="output folder")
    p.add_argument("--implicit-threshold", type=float, default=None, help="keep ratings >= this as implicit")
    p.add_argument("--limit", type=int, default=None, help="first N events only")
    for name, typ, help_text in (("rank", int, "factor rank"), ("lr", float, "online learning rate"),
                                 ("negatives", int, "negatives per positive"),
                                 ("epochs", int, "online epochs per micro-batch"),
                                 ("batch-lr", float, "batch retrain learning rate"),
                                 ("batch-epochs", int, "batch retrain epochs"), ("seed", int, "seed"),
                                 ("k", int, "DCG cut-off")):
        p.add_argument(f"--{name}", type=typ, default=None, help=f"{help_text} (default: EvalParams)")
    p.add_argument("--batch-order", choices=("time", "shuffle"), default=None, help="history order in retrains")
    p.add_argument("--grid", action="store_true", help="grid-search lr, rank, negatives, epochs of the online "
                   "model on a validation prefix; report the rest of the stream with the chosen setting")
    p.add_argument("--grid-prefix", type=float, default=0.2, help="validation prefix fraction (default 0.2)")
    p.add_argument("--sweep-batch-sizes", default=None, metavar="LIST",
                   help="e.g. 10,100,1000,10000,day: DCG and events/s per micro-batch size (online, popularity)")


@command("evaluate", "prequential DCG@K of popularity / online / batch / batch+online on a stream", _args)
def cmd_evaluate(args: argparse.Namespace, cfg: Config) -> int:

    kw = {"implicit_threshold": args.implicit_threshold, "limit": args.limit}
    events = load_dataset(args.dataset, args.path, **{k: v for k, v in kw.items() if v is not None})
    stream = prepare_stream(events)
    over = {k: getattr(args, k) for k in ("rank", "lr", "negatives", "epochs", "batch_lr", "batch_epochs",
                                          "seed", "k", "batch_order") if getattr(args, k) is not None}
    params = EvalParams(**over)
    models = expand_models(args.models)
    cut: dict[str, Any] = ({"batch_seconds": args.batch_seconds} if args.batch_seconds
                           else {"batch_events": args.batch_events or 100})
    cut["retrain_period"] = args.retrain_period
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("evaluate %s: %d events, %d users, %d items, models %s, %s", args.dataset, len(stream),
             len(stream.user_ids), len(stream.item_ids), models, params)
    title = f"{args.dataset}: prequential DCG@{params.k}, micro-batch {cut.get('batch_events') or cut.get('batch_seconds')}"
    extra: dict[str, Any] = {"dataset": args.dataset, "path": str(args.path), "load_options": kw}
    eval_from = 0
    if args.grid:
        t = time.perf_counter()
        params, grid = grid_search(stream, DEFAULT_GRID, params, prefix=args.grid_prefix, **cut)
        grid.to_csv(out / "grid.csv", index=False)
        eval_from = max(1, int(len(stream) * args.grid_prefix))
        chosen = {k: getattr(params, k) for k in DEFAULT_GRID}
        extra["grid"] = {"prefix": args.grid_prefix, "chosen": chosen, "points": grid.to_dict(orient="records"),
                         "seconds": time.perf_counter() - t}
        title += f", grid-chosen {chosen} on the first {args.grid_prefix:.0%}, test = the rest"
        print(f"grid (validation prefix {args.grid_prefix:.0%}, online model, mode off):\n{markdown(grid)}\n"
              f"chosen: {chosen}\n")
    res = run_prequential(stream, models, params, eval_from=eval_from, **cut)
    print(write_report(out, res, period=args.period, title=title, extra=extra))
    if args.sweep_batch_sizes:
        sizes = parse_sizes(args.sweep_batch_sizes)
        sw = sweep_batch_sizes(stream, sizes, [m for m in models if m in ("popularity", "online")] or ["online"],
                               params, retrain_period=args.retrain_period)
        md = write_sweep(sw, out, title=f"{args.dataset}: micro-batch size sweep")
        print(f"\nMicro-batch size sweep:\n\n{md}")
    return 0
