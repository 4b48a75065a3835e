"""The page of ``dsgd report``: summary, alerts and six plots (matplotlib, PNG embedded as ``data:`` URIs).

:func:`render` takes a :class:`dsgd.ops.report.ReportData` and returns ``(html, number of plots)``. The
page needs nothing but itself: styles inline, images base64, no script, no network. A plot without
data still renders (it says so), so the page always has the same six figures.
"""

from __future__ import annotations

import base64
import html
import io
from collections.abc import Callable
from typing import Any

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

PHASES = ("parse", "eval", "train", "write")
WRITER_COLOURS = {"stream": "#1f77b4", "retrain": "#d62728", "compaction": "#7f7f7f", "rollback": "#ff7f0e",
                  "other": "#2ca02c"}
STYLE = """body{font-family:system-ui,sans-serif;margin:24px auto;max-width:1100px;color:#222}
h1{font-size:22px}h2{font-size:17px;margin-top:28px}table{border-collapse:collapse;font-size:13px}
td,th{border:1px solid #ccc;padding:3px 8px;text-align:left}figure{margin:18px 0}
img{max-width:100%;border:1px solid #eee}figcaption{font-size:13px;color:#555}.muted{color:#777}"""


def _figure(title: str) -> tuple[Figure, Any]:
    fig = Figure(figsize=(10, 3.4), dpi=90)
    ax = fig.add_subplot(1, 1, 1)
    ax.set_title(title, fontsize=11)
    ax.grid(alpha=0.3)
    return fig, ax


def _no_data(ax: Any, text: str) -> None:
    ax.text(0.5, 0.5, text, ha="center", va="center", transform=ax.transAxes, color="#777")


def _png(fig: Figure) -> str:
    buf = io.BytesIO()
    fig.tight_layout()
    fig.savefig(buf, format="png")
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _mark_retrains(ax: Any, retrains: pd.DataFrame) -> None:
    for i, t in enumerate(retrains.get("created_at", [])):
        ax.axvline(t, color="#d62728", ls="--", lw=1, label="retrain" if i == 0 else None)


def plot_dcg(d: Any) -> Figure:
    fig, ax = _figure(f"Prequential DCG@{d.k} per batch (model vs popularity; dashed: retrains)")
    m = d.metrics[d.metrics["dcg_events"] > 0] if len(d.metrics) else d.metrics
    if not len(m):
        _no_data(ax, "no evaluated batch yet")
        return fig
    ax.plot(m["written_at"], m["dcg"], marker=".", label="model")
    ax.plot(m["written_at"], m["dcg_popularity"], marker=".", label="popularity")
    _mark_retrains(ax, d.retrains)
    ax.set_ylabel(f"DCG@{d.k}")
    ax.legend(fontsize=8)
    return fig


def plot_throughput(d: Any) -> Figure:
    fig, ax = _figure("Events per second: within each batch, and wall clock between batches")
    m = d.metrics
    if not len(m):
        _no_data(ax, "no batch yet")
        return fig
    busy = m["rows_valid"] / m["seconds_total"].where(m["seconds_total"] > 0)
    gap = m["written_at"].diff().dt.total_seconds()
    ax.plot(m["written_at"], busy, marker=".", label="events/s while the batch ran")
    ax.plot(m["written_at"], m["rows_valid"] / gap.where(gap > 0), marker=".", label="events/s wall clock")
    ax.set_ylabel("events/s")
    ax.legend(fontsize=8)
    return fig


def plot_phases(d: Any) -> Figure:
    fig, ax = _figure("Batch time per phase (seconds)")
    m = d.metrics
    if not len(m):
        _no_data(ax, "no batch yet")
        return fig
    parts = [m[f"seconds_{p}"].to_numpy(float) for p in PHASES]
    other = np.clip(m["seconds_total"].to_numpy(float) - np.sum(parts, axis=0), 0, None)
    x = np.arange(len(m))
    bottom = np.zeros(len(m))
    for name, v in zip((*PHASES, "other"), (*parts, other), strict=True):
        ax.bar(x, v, bottom=bottom, label=name, width=0.9)
        bottom += v
    ax.set_xlabel("batch (in time order)")
    ax.set_ylabel("seconds")
    ax.legend(fontsize=8, ncol=5)
    return fig


def plot_lag(d: Any) -> Figure:
    fig, ax = _figure("Consumer lag after each batch (records) and event-time lag (seconds)")
    m = d.metrics
    if not len(m):
        _no_data(ax, "no batch yet")
        return fig
    ax.plot(m["written_at"], m["lag_records"].where(m["lag_records"] >= 0), marker=".", label="records behind")
    ax.set_ylabel("records")
    ax2 = ax.twinx()
    ax2.plot(m["written_at"], (m["lag_ms"] / 1000.0).where(m["lag_ms"] >= 0), color="#ff7f0e", marker=".",
             label="event age (s)")
    ax2.set_ylabel("seconds")
    ax.legend(fontsize=8, loc="upper left")
    ax2.legend(fontsize=8, loc="upper right")
    return fig


def plot_quarantine(d: Any) -> Figure:
    fig, ax = _figure("Quarantined records by reason")
    reasons = d.quarantine_reasons
    if not len(reasons):
        _no_data(ax, "no record was quarantined")
        return fig
    ax.barh(list(reasons.index)[::-1], list(reasons.to_numpy())[::-1], color="#9467bd")
    ax.set_xlabel("records")
    return fig


def plot_versions(d: Any) -> Figure:
    fig, ax = _figure("Model versions (factors table) by writer; dashed: retrain snapshots")
    v = d.versions
    if not len(v):
        _no_data(ax, "no factors table yet")
        return fig
    ax.step(v["timestamp"], v["version"], where="post", color="#bbb", lw=1)
    for writer, g in v.groupby("writer"):
        ax.scatter(g["timestamp"], g["version"], s=18, label=writer, color=WRITER_COLOURS.get(writer, "#000"))
    _mark_retrains(ax, d.retrains)
    ax.set_ylabel("Delta version")
    ax.legend(fontsize=8)
    return fig


PLOTS: tuple[tuple[str, Callable[[Any], Figure]], ...] = (
    ("DCG and popularity DCG over time", plot_dcg), ("Events per second", plot_throughput),
    ("Batch time per phase", plot_phases), ("Consumer lag", plot_lag),
    ("Quarantine reasons", plot_quarantine), ("Model versions and retrains", plot_versions))


def _table(rows: list[tuple[str, Any]] | pd.DataFrame) -> str:
    if isinstance(rows, pd.DataFrame):
        head = "".join(f"<th>{html.escape(str(c))}</th>" for c in rows.columns)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in r) + "</tr>"
                       for r in rows.itertuples(index=False))
        return f"<table><tr>{head}</tr>{body}</table>"
    return "<table>" + "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(str(v))}</td></tr>"
                               for k, v in rows) + "</table>"


def summary(d: Any) -> list[tuple[str, Any]]:
    """The figures of the summary table."""
    m = d.metrics
    ev = m[m["dcg_events"] > 0] if len(m) else m
    span = f"{m['written_at'].min():%Y-%m-%d %H:%M:%S} .. {m['written_at'].max():%Y-%m-%d %H:%M:%S} UTC" \
        if len(m) else "no batch yet"
    last = d.retrains.iloc[-1] if len(d.retrains) else None
    return [("warehouse", d.warehouse), ("batches", f"{len(m)} ({span})"),
            ("records read / valid / quarantined", f"{int(m['rows_in'].sum()) if len(m) else 0} / "
             f"{int(m['rows_valid'].sum()) if len(m) else 0} / {int(m['rows_quarantined'].sum()) if len(m) else 0}"),
            (f"mean DCG@{d.k}: model / popularity", f"{ev['dcg'].mean():.4f} / {ev['dcg_popularity'].mean():.4f}"
             if len(ev) else "n/a"),
            ("alerts / rejected / replayed / records lost",
             f"{int((m['alert'] != '').sum()) if len(m) else 0} / {int(m['rejected'].sum()) if len(m) else 0} / "
             f"{int(m['replayed'].sum()) if len(m) else 0} / {int(m['records_lost'].sum()) if len(m) else 0}"),
            ("model version (factors table)", int(d.versions["version"].max()) if len(d.versions) else "none"),
            ("last retrain", f"{last.snapshot_id} ({last.policy}, {last.trainer}) at {last.created_at:%Y-%m-%d %H:%M}"
             if last is not None else "none")]


def render(d: Any, *, title: str) -> tuple[str, int]:
    """The page's HTML and its number of plots."""
    figures = []
    for caption, plot in PLOTS:
        data = _png(plot(d))
        figures.append(f'<figure><img alt="{html.escape(caption)}" src="data:image/png;base64,{data}">'
                       f"<figcaption>{html.escape(caption)}</figcaption></figure>")
    m = d.metrics
    alerts = m.loc[m["alert"] != "", ["written_at", "batch_id", "alert"]].tail(20) if len(m) else pd.DataFrame()
    alerts_html = _table(alerts) if len(alerts) else '<p class="muted">no alert</p>'
    retrains = _table(d.retrains) if len(d.retrains) else '<p class="muted">no retrain</p>'
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>"
            f"<h2>Summary</h2>{_table(summary(d))}<h2>Plots</h2>{''.join(figures)}"
            f"<h2>Recent alerts</h2>{alerts_html}<h2>Retrains</h2>{retrains}</body></html>")
    return page, len(figures)
