"""Reports of the evaluation harness: CSV, JSON, PNG and Markdown of a run and of a batch-size sweep."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from dsgd.core.metrics import EXCLUSION_MODES
from dsgd.evaluation.harness import RunResult, period_table, speed, summary_table

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
