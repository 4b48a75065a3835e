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
import dataclasses
import json
import logging
import time
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsgd.cli.registry import command
from dsgd.core.config import Config, ConfigError
from dsgd.evaluation.harness import DEFAULT_GRID, RunResult, choose_retrain, grid_search, parse_sizes, period_table, prepare_stream, run_prequential, speed, summary_table, sweep_batch_sizes
from dsgd.evaluation.models import MODEL_KINDS, EvalParams, expand_models, expand_serving, retrain_setup
from dsgd.evaluation.loaders import DATASETS, load_dataset
from dsgd.core.metrics import EXCLUSION_MODES

log = logging.getLogger("dsgd.evaluate")

NOTE = ("Micro-batch prequential evaluation: every event of a micro-batch is scored against the model as it "
        "was before the batch (coarser than per-event), then the models train on the batch. Rank among the "
        "items known before the batch; a new item scores 0. Seen items = the user's history before the "
        "batch. Cold users of the factor models are ranked by live popularity. '<model>/fold-in': the server's "
        "request-time fold-in (dsgd.core.foldin): the user's events the model has not trained on (earlier "
        "events of the batch; for frozen models, since the retrain's cut-off) are folded into the user's "
        "vector with the item factors fixed before the event is scored, and seen items are all of the user's "
        "events before it. 'online@1': the online model at one event per batch (the per-event reference).")


def markdown(df: pd.DataFrame, floatfmt: str = "{:.4f}") -> str:
    """A GitHub Markdown table (no extra dependency)."""
    def cell(v: Any) -> str:
        if isinstance(v, float | np.floating):
            return floatfmt.format(v) if np.isfinite(v) else "nan"
        return str(v)

    head = "| " + " | ".join(map(str, df.columns)) + " |"
    sep = "|" + "|".join("---" for _ in df.columns) + "|"
    body = ["| " + " | ".join(cell(v) for v in row) + " |" for row in df.itertuples(index=False)]
    return "\n".join([head, sep, *body])


def wide_periods(periods: pd.DataFrame, mode: str = "off") -> pd.DataFrame:
    """Per-period means with one column per model (one exclusion mode)."""
    sub = periods[periods["mode"] == mode]
    w = sub.pivot_table(index=["period_index", "period_start"], columns="model", values="mean", sort=False)
    n = sub.groupby("period_index")["n"].first()
    w = w.reset_index()
    w.insert(2, "n", w["period_index"].map(n).to_numpy())
    w["period_start"] = w["period_start"].dt.strftime("%Y-%m-%d")
    return w[["period_index", "period_start", "n", *[m for m in sub["model"].unique()]]]


def write_report(out: Path, res: RunResult, *, period: str, title: str,
                 extra: dict[str, Any] | None = None) -> str:
    """Write CSV, JSON, PNG and Markdown for one run; return the Markdown."""
    from dsgd.evaluation.plots import plot_periods

    out.mkdir(parents=True, exist_ok=True)
    summ = summary_table(res)
    per = period_table(res, period)
    summ.to_csv(out / "summary.csv", index=False)
    per.to_csv(out / "periods.csv", index=False)
    plot_periods(per, out / "dcg_by_period.png", title=title, k=res.params.k)
    sp = speed(res)
    payload = {"title": title, "period": period, "params": res.params.__dict__, "run": res.info,
               "eval_from": res.eval_from, "speed": sp, "note": NOTE, **(extra or {}),
               "summary": summ.to_dict(orient="records"),
               "periods": json.loads(per.assign(period_start=per["period_start"].astype(str)).to_json(
                   orient="records"))}
    (out / "results.json").write_text(json.dumps(payload, indent=1, default=str))
    cols = ["model", *[f"dcg_{m}" for m in EXCLUSION_MODES], "events", "events_per_s"]
    md = [f"# {title}", "", NOTE, "", f"Mean DCG@{res.params.k} per model and exclusion mode:", "",
          markdown(summ[cols]), "",
          f"Harness: {sp['events']} events in {sp['batches']} micro-batches, {sp['wall_seconds']:.1f} s, "
          f"{sp['events_per_s']:.0f} events/s (all models, three modes).", ""]
    for mode in EXCLUSION_MODES:
        md += [f"Mean DCG@{res.params.k} per {period} (exclusion: {mode}):", "",
               markdown(wide_periods(per, mode)), ""]
    text = "\n".join(md)
    (out / "summary.md").write_text(text)
    return text


def _args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, choices=DATASETS, help="input format (dsgd.evaluation.loaders)")
    p.add_argument("--path", required=True, help="file or folder of the data set")
    p.add_argument("--models", default="popularity,online,batch,batch+online",
                   help="comma list of " + ", ".join(MODEL_KINDS) + "; aliases: batch+online (both SGD variants), "
                   "als+online (replace, score-blend), retrain (the four product models: MLlib ALS through "
                   "dsgd.engines.als with the [retrain] config, as `dsgd retrain` runs it), sgd, all")
    p.add_argument("--serving", default="plain,fold-in",
                   help="plain (the model's user vectors) and/or fold-in (the user's events the model has not "
                   "trained on folded in, dsgd.core.foldin; reported as <model>/fold-in)")
    p.add_argument("--period", default="week", choices=("week", "day"), help="reporting period")
    p.add_argument("--retrain-period", default="week", choices=("week", "day"), help="batch retrain period")
    p.add_argument("--retrain-min-growth", type=float, default=0.0, metavar="F",
                   help="retrain only when the history grew by this fraction since the last retrain (cost knob "
                   "for long sparse streams; 0 = at every period boundary)")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--batch-events", type=int, default=None, help="micro-batch by count (default 100)")
    g.add_argument("--batch-seconds", type=float, default=None, help="micro-batch by event time")
    p.add_argument("--out", default="bench/out/evaluate", help="output folder")
    p.add_argument("--cache-dir", default=".dsgd/eval-cache",
                   help="weekly fits (ALS snapshots, SGD batch models) are kept here and reused by later runs on "
                   "the same stream; 'none': memory only")
    p.add_argument("--implicit-threshold", type=float, default=None, help="keep ratings >= this as implicit")
    p.add_argument("--limit", type=int, default=None, help="first N events only")
    for name, typ, help_text in (("rank", int, "factor rank"), ("lr", float, "online learning rate"),
                                 ("negatives", int, "negatives per positive"),
                                 ("epochs", int, "online epochs per micro-batch"),
                                 ("batch-lr", float, "batch retrain learning rate"),
                                 ("batch-epochs", int, "batch retrain epochs"), ("seed", int, "seed"),
                                 ("k", int, "DCG cut-off")):
        p.add_argument(f"--{name}", type=typ, default=None, help=f"{help_text} (default: EvalParams)")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other EvalParams field, e.g. foldin_method=sgd (repeatable)")
    p.add_argument("--batch-order", choices=("time", "shuffle"), default=None, help="history order in retrains")
    p.add_argument("--grid", action="store_true", help="grid-search lr, rank, negatives, epochs of the online "
                   "model on a validation prefix; report the rest of the stream with the chosen setting")
    p.add_argument("--choose-retrain", action="store_true",
                   help="choose the retrain policy, score-blend alpha and recency (window / half-life) on the "
                   "validation prefix (served with fold-in); the product models of the report use the choice")
    p.add_argument("--grid-prefix", type=float, default=0.2, help="validation prefix fraction (default 0.2)")
    p.add_argument("--holdout-prefix", action="store_true",
                   help="report only the events after the validation prefix (as --grid / --choose-retrain do), e.g. "
                   "when their choices are passed in as options")
    p.add_argument("--per-event", action="store_true",
                   help="also run the online model at one event per batch (the per-event reference), reported "
                   "as 'online@1'")
    p.add_argument("--sweep-batch-sizes", default=None, metavar="LIST",
                   help="e.g. 1,10,100,1000,60s,3600s,day: DCG and events/s per micro-batch size (event counts, "
                   "event-time seconds, day/week; models popularity and online)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar or progress log lines")


def _param_values(items: list[str]) -> dict[str, Any]:
    fields = {f.name: f for f in dataclasses.fields(EvalParams)}
    out: dict[str, Any] = {}
    for item in items:
        key, _, raw = item.partition("=")
        key = key.strip().replace("-", "_")
        if key not in fields or not _:
            raise ConfigError(f"--param {item!r}: expected KEY=VALUE with KEY one of {', '.join(fields)}")
        default = fields[key].default
        try:
            out[key] = raw if isinstance(default, str) else (int(raw) if isinstance(default, int)
                                                              and not isinstance(default, bool) else float(raw))
        except ValueError as exc:
            raise ConfigError(f"--param {item!r}: {exc}") from exc
    return out


def write_sweep(sw: pd.DataFrame, out: Path, *, title: str) -> str:
    """Write a batch-size sweep as ``sweep.csv``, ``sweep.png`` and ``sweep.md``; return the Markdown."""
    from dsgd.evaluation.plots import plot_sweep

    sw.to_csv(out / "sweep.csv", index=False)
    plot_sweep(sw, out / "sweep.png", title=title)
    cols = ["batch_size", "n_batches", "mean_batch_events", "model", *[f"dcg_{m}" for m in EXCLUSION_MODES],
            "events_per_s", "harness_events_per_s"]
    md = markdown(sw[cols], "{:.4g}")
    (out / "sweep.md").write_text(md + "\n")
    return md


def merge_runs(res: RunResult, other: RunResult, suffix: str) -> None:
    """Add ``other``'s models to ``res`` (same stream and events) as ``<model><suffix>``."""
    for m in other.models:
        name = m + suffix
        res.models.append(name)
        res.ranks[name] = other.ranks[m]
        res.seconds[name] = other.seconds[m]


@command("evaluate", "prequential DCG@K of popularity / online / batch / batch+online / the ALS retrain on a stream",
         _args)
def cmd_evaluate(args: argparse.Namespace, cfg: Config) -> int:

    kw = {"implicit_threshold": args.implicit_threshold, "limit": args.limit}
    events = load_dataset(args.dataset, args.path, **{k: v for k, v in kw.items() if v is not None})
    stream = prepare_stream(events)
    over = {k: getattr(args, k) for k in ("rank", "lr", "negatives", "epochs", "batch_lr", "batch_epochs",
                                          "seed", "k", "batch_order") if getattr(args, k) is not None}
    params = EvalParams(**over, **_param_values(args.param))
    models = expand_models(args.models)
    serving = expand_serving(args.serving)
    cut: dict[str, Any] = ({"batch_seconds": args.batch_seconds} if args.batch_seconds
                           else {"batch_events": args.batch_events or 100})
    cut["retrain_period"] = args.retrain_period
    progress = False if args.no_progress else None
    cache_dir = None if args.cache_dir == "none" else args.cache_dir
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("evaluate %s: %d events, %d users, %d items, models %s, serving %s, %s", args.dataset, len(stream),
             len(stream.user_ids), len(stream.item_ids), models, serving, params)
    title = f"{args.dataset}: prequential DCG@{params.k}, micro-batch {cut.get('batch_events') or cut.get('batch_seconds')}"
    if "batch_seconds" in cut:
        title += " s"
    extra: dict[str, Any] = {"dataset": args.dataset, "path": str(args.path), "load_options": kw,
                             "retrain_min_growth": args.retrain_min_growth}
    prefix_end = max(1, int(len(stream) * args.grid_prefix))
    eval_from = prefix_end if args.holdout_prefix else 0
    t = time.perf_counter()
    if args.grid:
        params, grid = grid_search(stream, DEFAULT_GRID, params, prefix=args.grid_prefix, progress=False, **cut)
        grid.to_csv(out / "grid.csv", index=False)
        eval_from = prefix_end
        chosen = {k: getattr(params, k) for k in DEFAULT_GRID}
        extra["grid"] = {"prefix": args.grid_prefix, "chosen": chosen, "points": grid.to_dict(orient="records"),
                         "seconds": time.perf_counter() - t}
        title += f", grid-chosen {chosen} on the first {args.grid_prefix:.0%}, test = the rest"
        print(f"grid (validation prefix {args.grid_prefix:.0%}, online model, mode off):\n{markdown(grid)}\n"
              f"chosen: {chosen}\n")
    setup = retrain_setup(cfg, params, cache_dir=cache_dir)
    if args.choose_retrain:
        t = time.perf_counter()
        chosen_rt, table = choose_retrain(stream, params, setup, prefix=args.grid_prefix, progress=progress,
                                          serving="fold-in" if "fold-in" in serving else "plain",
                                          retrain_min_growth=args.retrain_min_growth, **cut)
        table.to_csv(out / "retrain_grid.csv", index=False)
        setup = setup.with_retrain(alpha=chosen_rt["alpha"], window_days=chosen_rt["window_days"],
                                   half_life_days=chosen_rt["half_life_days"])
        eval_from = prefix_end
        extra["retrain_choice"] = {"prefix": args.grid_prefix, "chosen": chosen_rt,
                                   "points": table.to_dict(orient="records"), "seconds": time.perf_counter() - t}
        print(f"retrain choice (validation prefix {args.grid_prefix:.0%}, served with "
              f"{'fold-in' if 'fold-in' in serving else 'plain'}, mode off):\n{markdown(table)}\n"
              f"chosen: {chosen_rt}\n")
    extra["retrain_config"] = {k: getattr(setup.rc, k) for k in ("policy", "alpha", "als_max_iter", "als_reg",
                                                                  "als_alpha", "window_days", "half_life_days",
                                                                  "warm_start_epochs", "warm_start_lr")}
    res = run_prequential(stream, models, params, eval_from=eval_from, serving=serving, setup=setup,
                          progress=progress, retrain_min_growth=args.retrain_min_growth, **cut)
    if args.per_event:
        pe = run_prequential(stream, "online", params, eval_from=eval_from, serving="plain", progress=progress,
                             batch_events=1, retrain_period=args.retrain_period, label="per-event ")
        merge_runs(res, pe, "@1")
    if setup.fits or setup.cache_hits:
        extra["als"] = {"fits": setup.fits, "fit_seconds": round(setup.fit_seconds, 1),
                        "cache_hits": setup.cache_hits, "per_model": res.info.get("als", {})}
    print(write_report(out, res, period=args.period, title=title, extra=extra))
    if args.sweep_batch_sizes:
        sizes = parse_sizes(args.sweep_batch_sizes)
        sw = sweep_batch_sizes(stream, sizes, [m for m in models if m in ("popularity", "online")] or ["online"],
                               params, retrain_period=args.retrain_period, serving=serving, progress=progress,
                               eval_from=eval_from)
        md = write_sweep(sw, out, title=f"{args.dataset}: micro-batch size sweep")
        print(f"\nMicro-batch size sweep:\n\n{md}")
    return 0
