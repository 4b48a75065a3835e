"""Issue 18's experiment on one shared stream: every model (popularity, the SGD stand-ins, the product's
ALS retrain with its blend policies), plain and with request-time fold-in, at several micro-batch cuts,
with the settings chosen on a validation prefix only; prints a JSON summary.

    .venv/bin/python bench/bench_quality.py --stream lastfm        # or ml100k, mlsmall, mt

Protocol (the same functions as ``dsgd evaluate --grid --choose-retrain --per-event --holdout-prefix``):

1. on the first ``--prefix`` (20%) of the stream, at the selection cut (``--select-cut``, 1-hour
   event-time batches): the online model's lr / rank / negatives / epochs / item biases
   (:data:`dsgd.evaluation.harness.DEFAULT_GRID`, plain serving), then the retrain: policy, score-blend alpha
   and recency (:func:`dsgd.evaluation.harness.choose_retrain`, served with fold-in);
2. with those settings, every model at every cut of ``--cuts``, reported on the rest of the stream;
   the per-event online reference (one event per batch) on the same events;
3. the micro-batch size sweep of popularity and online (``--sweep``).

Writes ``<out>/<stream>/``: per cut ``<cut>/summary.{csv,md}``, ``periods.csv``, ``dcg_by_period.png``,
``results.json``; ``grid.csv``, ``retrain_grid.csv``, ``sweep.{csv,md,png}``, ``quality.json``.
Weekly fits are cached in ``--cache-dir`` (reruns and the other cuts reuse them).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from dsgd.evaluation.harness import prepare_stream, run_prequential, summary_table  # noqa: E402
from dsgd.evaluation.loaders import load_dataset  # noqa: E402
from dsgd.evaluation.models import FOLDIN_SUFFIX, EvalParams, retrain_setup  # noqa: E402
from dsgd.evaluation.report import merge_runs, write_report, write_sweep  # noqa: E402
from dsgd.evaluation.tuning import (  # noqa: E402
    DEFAULT_GRID,
    RUNNABLE,
    batch_cut,
    choose_retrain,
    grid_search,
    parse_sizes,
    sweep_batch_sizes,
)

#: name -> (loader, path under --data, load options, retrain_min_growth, per-event reference or None)
STREAMS: dict[str, tuple[str, str, dict[str, Any], float, float | None]] = {
    "lastfm": ("lastfm-tsv", "lastfm-1k/listens-first10pct.tsv", {}, 0.0, 0.2148),
    "ml100k": ("ml-100k", "ml-100k", {"implicit_threshold": 4.0}, 0.0, 0.1059),
    "mlsmall": ("ml-latest", "ml-latest-small", {"implicit_threshold": 4.0}, 0.05, None),
    # 0-10 scale: >= 8 keeps 8/10 of the scale like >= 4 of 5 on MovieLens, and 50.5% of the ratings (ml-100k: 55%)
    "mt": ("movietweetings", "movietweetings-100k", {"implicit_threshold": 8.0}, 0.0, None),
}


def _fmt(x: Any) -> str:
    return f"{x:.4f}" if isinstance(x, float) else str(x)


def summarize(out: Path, streams: list[str], cuts: list[str]) -> str:
    """Markdown tables of the ``quality.json`` files under ``out`` (for bench/RESULTS.md)."""
    reps = {s: json.loads((out / s / "quality.json").read_text()) for s in streams if (out / s / "quality.json").exists()}
    md = ["Settings chosen on the validation prefix (first 20% of events, 1-hour batches):", "",
          "| stream | events | online params (grid) | retrain chosen: policy, alpha, window, half-life | best runnable "
          "on validation | ALS fits, seconds |", "|---|---|---|---|---|---|"]
    for s, r in reps.items():
        g, c = r.get("grid_chosen", {}), r["retrain_chosen"]
        md.append(f"| {s} | {r['events']} | {', '.join(f'{k} {v}' for k, v in g.items())} | {c['policy']}, "
                  f"{c['alpha']}, {c['window_days']} d, {c['half_life_days']} d | {c['model']} ({c['dcg']:.4f}) | "
                  f"{r['als_total']['fits']}, {r['als_total']['fit_seconds']:.0f} s |")
    md += ["", "Done-means checks (test part = events after the prefix; DCG@100, no exclusion):", "",
           "| stream | per-event online (harness) | published per-event ref. | best runnable at 1 h (validation-"
           "chosen) | best retrain config at 1 h vs online/fold-in | online > popularity at every sweep size "
           "(plain / fold-in) |", "|---|---|---|---|---|---|"]
    for s, r in reps.items():
        h = r["cuts"].get("3600s", {})
        if not h:
            continue
        br = h["best_runnable_validation_chosen"]
        best_rt = h["best_retrain_on_test"]
        ob = r.get("online_beats_popularity", {})
        md.append(f"| {s} | {r['per_event_online']:.4f} | {_fmt(r['per_event_reference_published'])} | "
                  f"{br['model']} {br['dcg_off']:.4f} | {best_rt} {h['dcg'][best_rt + '/fold-in']['off']:.4f} vs "
                  f"{h['online_only_fold_in']:.4f} | {ob.get('plain')} / {ob.get('fold_in')} |")
    for s, r in reps.items():
        md += ["", f"**{s}** — mean DCG@100 on the test part, off / exclude-seen / strict:", "",
               "| model | " + " | ".join(f"{c} batches" for c in cuts if c in r["cuts"]) + " |",
               "|---|" + "---|" * sum(c in r["cuts"] for c in cuts)]
        models = list(next(iter(r["cuts"].values()))["dcg"])
        for m in models:
            cells = []
            for c in cuts:
                if c in r["cuts"]:
                    d = r["cuts"][c]["dcg"].get(m)
                    cells.append(" / ".join(f"{d[x]:.4f}" for x in ("off", "exclude_seen", "strict")) if d else "")
            md.append(f"| {m} | " + " | ".join(cells) + " |")
        if "sweep" in r:
            md += ["", f"{s} sweep (test part, off): " + "; ".join(
                f"{b}: pop {v.get('popularity', float('nan')):.4f}, online {v.get('online', float('nan')):.4f}, "
                f"fold-in {v.get('online/fold-in', float('nan')):.4f}" for b, v in r["sweep"].items())]
        md += ["", f"{s} seconds per cut (ALS fits in the cut): " + "; ".join(
            f"{c}: {v['seconds']:.0f} s ({v['als_fits']} fits, {v['als_fit_seconds']:.0f} s)"
            for c, v in r["cuts"].items())]
    return "\n".join(md)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--stream", choices=sorted(STREAMS))
    ap.add_argument("--summarize", action="store_true", help="print Markdown tables of the streams' quality.json")
    here = Path(__file__).resolve()
    found = [p for p in (here.parents[2] / "shared" / "data", here.parents[3] / "shared" / "data") if p.is_dir()]
    ap.add_argument("--data", default=str(found[0]) if found else "../shared/data",
                    help="the shared data folder (default: ../shared/data beside the checkout)")
    ap.add_argument("--out", default="bench/out/quality")
    ap.add_argument("--cache-dir", default=".dsgd/eval-cache")
    ap.add_argument("--models", default="all")
    ap.add_argument("--cuts", default="3600s,60s,100")
    ap.add_argument("--select-cut", default="3600s")
    ap.add_argument("--sweep", default="1,10,100,1000,10000,60s,3600s,day")
    ap.add_argument("--prefix", type=float, default=0.2)
    ap.add_argument("--no-grid", action="store_true", help="keep EvalParams' defaults for the online model")
    args = ap.parse_args(argv)
    if args.summarize:
        print(summarize(Path(args.out), sorted(STREAMS, key=list(STREAMS).index), args.cuts.split(",")))
        return 0
    if not args.stream:
        ap.error("--stream is required (or --summarize)")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", stream=sys.stderr)
    for noisy in ("py4j", "numba"):
        logging.getLogger(noisy).setLevel(logging.WARNING)

    loader, rel, opts, min_growth, reference = STREAMS[args.stream]
    stream = prepare_stream(load_dataset(loader, str(Path(args.data) / rel), **opts))
    out = Path(args.out) / args.stream
    out.mkdir(parents=True, exist_ok=True)
    prefix_end = max(1, int(len(stream) * args.prefix))
    sel = batch_cut(parse_sizes(args.select_cut)[0])
    report: dict[str, Any] = {"stream": args.stream, "loader": loader, "path": rel, "load_options": opts,
                              "events": len(stream), "users": len(stream.user_ids), "items": len(stream.item_ids),
                              "prefix": args.prefix, "prefix_events": prefix_end, "select_cut": args.select_cut,
                              "retrain_min_growth": min_growth, "per_event_reference_published": reference}
    t0 = time.perf_counter()
    params = EvalParams()
    if not args.no_grid:
        params, grid = grid_search(stream, DEFAULT_GRID, params, prefix=args.prefix, progress=False, **sel)
        grid.to_csv(out / "grid.csv", index=False)
        report["grid_chosen"] = {k: getattr(params, k) for k in DEFAULT_GRID}
    setup = retrain_setup(None, params, cache_dir=args.cache_dir)
    chosen, table = choose_retrain(stream, params, setup, prefix=args.prefix, retrain_min_growth=min_growth, **sel)
    table.to_csv(out / "retrain_grid.csv", index=False)
    report["retrain_chosen"] = chosen
    report["validation_seconds"] = round(time.perf_counter() - t0, 1)
    setup = setup.with_retrain(alpha=chosen["alpha"], window_days=chosen["window_days"],
                               half_life_days=chosen["half_life_days"], policy=chosen["policy"])
    report["retrain_config"] = {k: getattr(setup.rc, k) for k in ("policy", "alpha", "window_days", "half_life_days",
                                                                   "als_max_iter", "als_reg", "als_alpha",
                                                                   "warm_start_epochs", "warm_start_lr")}
    pe = run_prequential(stream, "online", params, eval_from=prefix_end, batch_events=1, label="per-event ")
    report["per_event_online"] = float(pe.dcg("online", "off").mean())
    report["cuts"] = {}
    for cut in parse_sizes(args.cuts):
        t = time.perf_counter()
        fits0, fit_s0 = setup.fits, setup.fit_seconds
        res = run_prequential(stream, args.models, params, eval_from=prefix_end, serving="plain,fold-in",
                              setup=setup, retrain_min_growth=min_growth, label=f"{cut}: ", **batch_cut(cut))
        merge_runs(res, pe, "@1")
        write_report(out / str(cut), res, period="week", title=f"{args.stream}: micro-batch {cut}, settings chosen "
                     f"on the first {args.prefix:.0%}, reported on the rest",
                     extra={"grid_chosen": report.get("grid_chosen"), "retrain_chosen": chosen,
                            "retrain_config": report["retrain_config"]})
        summ = summary_table(res).set_index("model")
        dcg = {m: {md: round(float(summ.loc[m, f"dcg_{md}"]), 4) for md in ("off", "exclude_seen", "strict")}
               for m in summ.index}
        best_model = chosen["model"] + FOLDIN_SUFFIX
        online_only = dcg["online" + FOLDIN_SUFFIX]["off"]
        with_retrain = {m: dcg[m + FOLDIN_SUFFIX]["off"] for m in RUNNABLE if m != "online"}
        report["cuts"][str(cut)] = {
            "dcg": dcg, "seconds": round(time.perf_counter() - t, 1),
            "als_fits": setup.fits - fits0, "als_fit_seconds": round(setup.fit_seconds - fit_s0, 1),
            "per_model_seconds": {m: round(sum(v.values()), 2) for m, v in res.seconds.items()},
            "pass_seconds": {m: round(v, 1) for m, v in res.info["pass_seconds"].items()},
            "best_runnable_validation_chosen": {"model": best_model, "dcg_off": dcg[best_model]["off"]},
            "best_retrain_on_test": max(with_retrain, key=with_retrain.get),
            "retrain_beats_online_only": max(with_retrain.values()) > online_only,
            "online_only_fold_in": online_only}
        print(json.dumps({"cut": str(cut), **report["cuts"][str(cut)]}), flush=True)
    if args.sweep:
        sw = sweep_batch_sizes(stream, parse_sizes(args.sweep), "popularity,online", params, serving="plain,fold-in",
                               eval_from=prefix_end, retrain_period="week")
        write_sweep(sw, out, title=f"{args.stream}: micro-batch size sweep (test part)")
        piv = sw.pivot_table(index="batch_size", columns="model", values="dcg_off", sort=False)
        report["sweep"] = {str(b): {m: round(float(v), 4) for m, v in row.items()} for b, row in piv.iterrows()}
        report["online_beats_popularity"] = {
            "plain": bool((piv["online"] > piv["popularity"]).all()),
            "fold_in": bool((piv["online" + FOLDIN_SUFFIX] > piv["popularity"]).all())}
    report["als_total"] = {"fits": setup.fits, "fit_seconds": round(setup.fit_seconds, 1),
                           "cache_hits": setup.cache_hits}
    report["seconds"] = round(time.perf_counter() - t0, 1)
    (out / "quality.json").write_text(json.dumps(report, indent=1, default=str))
    print(json.dumps(report, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
