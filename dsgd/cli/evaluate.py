"""``dsgd evaluate``: the prequential experiment (popularity / online / batch / batch+online / the ALS retrain).

Writes to ``--out``: ``summary.csv``, ``periods.csv`` (per period, model and exclusion mode),
``results.json`` (all of it plus the settings and the harness speed), ``dcg_by_period.png``,
``summary.md`` (printed too); with ``--grid``: ``grid.csv``; with ``--choose-retrain``:
``retrain_grid.csv``; with ``--sweep-batch-sizes``: ``sweep.csv``, ``sweep.md`` and ``sweep.png``.

Example
-------
    dsgd evaluate --dataset lastfm-tsv --path ../shared/data/lastfm-1k/listens-first10pct.tsv \\
        --models popularity,online,retrain --serving plain,fold-in --batch-seconds 3600 --out bench/out/lastfm
"""

from __future__ import annotations

import argparse
import dataclasses
import logging
import sys
import time
from pathlib import Path
from typing import Any

from dsgd.cli.registry import command
from dsgd.core.config import Config, ConfigError
from dsgd.evaluation.harness import Stream, prepare_stream, run_prequential
from dsgd.evaluation.loaders import DATASETS, load_dataset
from dsgd.evaluation.models import (
    MODEL_KINDS,
    EvalParams,
    RetrainSetup,
    expand_models,
    expand_serving,
    retrain_setup,
)
from dsgd.evaluation.report import markdown, merge_runs, write_report, write_sweep
from dsgd.evaluation.tuning import DEFAULT_GRID, choose_retrain, grid_search, parse_sizes, sweep_batch_sizes

log = logging.getLogger("dsgd.evaluate")


def missing_path_error(text: str) -> str | None:
    """The usage error for a data path that does not exist (naming the absolute path tried), else None."""
    path = Path(text).expanduser()
    if path.exists():
        return None
    return (f"dsgd evaluate: error: argument --path: no file or folder at {text!r} (tried {path.resolve()}); "
            "a relative path is relative to the folder you run from")


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
        default = getattr(EvalParams(), name.replace("-", "_"))
        p.add_argument(f"--{name}", type=typ, default=None, help=f"{help_text} (default: {default})")
    p.add_argument("--param", action="append", default=[], metavar="KEY=VALUE",
                   help="any other EvalParams field, e.g. foldin_method=sgd (repeatable)")
    p.add_argument("--batch-order", choices=("time", "shuffle"), default=None, help="history order in retrains")
    _selection_args(p)


def _selection_args(p: argparse.ArgumentParser) -> None:
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


def _online_grid(args: argparse.Namespace, stream: Stream, params: EvalParams, cut: dict[str, Any], out: Path,
                 extra: dict[str, Any]) -> tuple[EvalParams, str]:
    """``--grid``: the online model's settings chosen on the validation prefix."""
    t = time.perf_counter()
    params, grid = grid_search(stream, DEFAULT_GRID, params, prefix=args.grid_prefix, progress=False, **cut)
    grid.to_csv(out / "grid.csv", index=False)
    chosen = {k: getattr(params, k) for k in DEFAULT_GRID}
    extra["grid"] = {"prefix": args.grid_prefix, "chosen": chosen, "points": grid.to_dict(orient="records"),
                     "seconds": time.perf_counter() - t}
    print(f"grid (validation prefix {args.grid_prefix:.0%}, online model, mode off):\n{markdown(grid)}\n"
          f"chosen: {chosen}\n")
    return params, f", grid-chosen {chosen} on the first {args.grid_prefix:.0%}, test = the rest"


def _retrain_choice(args: argparse.Namespace, stream: Stream, params: EvalParams, setup: RetrainSetup,
                    serving: list[str], cut: dict[str, Any], out: Path, extra: dict[str, Any]) -> RetrainSetup:
    """``--choose-retrain``: policy, score-blend alpha and recency chosen on the validation prefix."""
    t = time.perf_counter()
    how = "fold-in" if "fold-in" in serving else "plain"
    chosen, table = choose_retrain(stream, params, setup, prefix=args.grid_prefix,
                                   progress=False if args.no_progress else None, serving=how,
                                   retrain_min_growth=args.retrain_min_growth, **cut)
    table.to_csv(out / "retrain_grid.csv", index=False)
    extra["retrain_choice"] = {"prefix": args.grid_prefix, "chosen": chosen,
                               "points": table.to_dict(orient="records"), "seconds": time.perf_counter() - t}
    print(f"retrain choice (validation prefix {args.grid_prefix:.0%}, served with {how}, mode off):\n"
          f"{markdown(table)}\nchosen: {chosen}\n")
    return setup.with_retrain(alpha=chosen["alpha"], window_days=chosen["window_days"],
                              half_life_days=chosen["half_life_days"])


@command("evaluate", "prequential DCG@K of popularity / online / batch / batch+online / the ALS retrain on a stream",
         _args)
def cmd_evaluate(args: argparse.Namespace, cfg: Config) -> int:
    if (error := missing_path_error(args.path)) is not None:
        print(error, file=sys.stderr)
        return 2
    kw = {"implicit_threshold": args.implicit_threshold, "limit": args.limit}
    stream = prepare_stream(load_dataset(args.dataset, args.path, **{k: v for k, v in kw.items() if v is not None}))
    over = {k: getattr(args, k) for k in ("rank", "lr", "negatives", "epochs", "batch_lr", "batch_epochs",
                                          "seed", "k", "batch_order") if getattr(args, k) is not None}
    params = EvalParams(**over, **_param_values(args.param))
    models, serving = expand_models(args.models), expand_serving(args.serving)
    cut: dict[str, Any] = ({"batch_seconds": args.batch_seconds} if args.batch_seconds
                           else {"batch_events": args.batch_events or 100})
    cut["retrain_period"] = args.retrain_period
    progress = False if args.no_progress else None
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    log.info("evaluate %s: %d events, %d users, %d items, models %s, serving %s, %s", args.dataset, len(stream),
             len(stream.user_ids), len(stream.item_ids), models, serving, params)
    title = (f"{args.dataset}: prequential DCG@{params.k}, micro-batch "
             f"{cut.get('batch_events') or cut.get('batch_seconds')}{' s' if 'batch_seconds' in cut else ''}")
    extra: dict[str, Any] = {"dataset": args.dataset, "path": str(args.path), "load_options": kw,
                             "retrain_min_growth": args.retrain_min_growth}
    prefix_end = max(1, int(len(stream) * args.grid_prefix))
    held_out = args.holdout_prefix or args.grid or args.choose_retrain
    if args.grid:
        params, note = _online_grid(args, stream, params, cut, out, extra)
        title += note
    setup = retrain_setup(cfg, params, cache_dir=None if args.cache_dir == "none" else args.cache_dir)
    if args.choose_retrain:
        setup = _retrain_choice(args, stream, params, setup, serving, cut, out, extra)
    extra["retrain_config"] = {k: getattr(setup.rc, k) for k in ("policy", "alpha", "als_max_iter", "als_reg",
                                                                  "als_alpha", "window_days", "half_life_days",
                                                                  "warm_start_epochs", "warm_start_lr")}
    eval_from = prefix_end if held_out else 0
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
        sw = sweep_batch_sizes(stream, parse_sizes(args.sweep_batch_sizes),
                               [m for m in models if m in ("popularity", "online")] or ["online"], params,
                               retrain_period=args.retrain_period, serving=serving, progress=progress,
                               eval_from=eval_from)
        print(f"\nMicro-batch size sweep:\n\n{write_sweep(sw, out, title=f'{args.dataset}: micro-batch size sweep')}")
    return 0
