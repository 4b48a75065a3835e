"""Plots of the evaluation harness (matplotlib, Agg backend: no display needed)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import pandas as pd  # noqa: E402

from dsgd.core.metrics import EXCLUSION_MODES  # noqa: E402


def plot_periods(periods: pd.DataFrame, path: str | Path, *, title: str = "", k: int = 100) -> Path:
    """Mean DCG@k per period per model, one panel per exclusion mode (input: ``period_table``)."""
    modes = [m for m in EXCLUSION_MODES if m in set(periods["mode"])]
    fig, axes = plt.subplots(1, len(modes), figsize=(5.5 * len(modes), 4), squeeze=False)
    for ax, mode in zip(axes[0], modes, strict=True):
        sub = periods[periods["mode"] == mode]
        for model, g in sub.groupby("model", sort=False):
            ax.plot(g["period_index"], g["mean"], marker=".", label=str(model))
        ax.set_title(f"exclusion: {mode}")
        ax.set_xlabel("period")
        ax.set_ylabel(f"mean DCG@{k}")
        ax.grid(alpha=0.3)
    axes[0][0].legend(fontsize=8)
    return _save(fig, path, title)


def plot_sweep(sweep: pd.DataFrame, path: str | Path, *, title: str = "", mode: str = "off") -> Path:
    """DCG and events/s against micro-batch size (input: ``sweep_batch_sizes``)."""
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(11, 4))
    for model, g in sweep.groupby("model", sort=False):
        x = g["mean_batch_events"]
        a1.plot(x, g[f"dcg_{mode}"], marker="o", label=str(model))
        a2.plot(x, g["events_per_s"], marker="o", label=str(model))
    for ax, ylabel in ((a1, f"mean DCG@100 ({mode})"), (a2, "events/s (model's score+update)")):
        ax.set_xscale("log")
        ax.set_xlabel("mean events per micro-batch")
        ax.set_ylabel(ylabel)
        ax.grid(alpha=0.3)
    a2.set_yscale("log")
    a1.legend(fontsize=8)
    return _save(fig, path, title)


def _save(fig, path: str | Path, title: str) -> Path:
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    path = Path(path)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path
