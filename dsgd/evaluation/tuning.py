"""Choices made on a validation prefix (online grid, retrain policy / alpha / recency) and the
micro-batch size sweep."""

from __future__ import annotations

import itertools
import time
from typing import Any

import pandas as pd

from dsgd.evaluation.harness import PERIOD_MS, run_prequential, speed, summary_table
from dsgd.evaluation.models import FOLDIN_SUFFIX, EvalParams, RetrainSetup, Stream

# ---- grid search and batch-size sweep -----------------------------------------------------------------
DEFAULT_GRID: dict[str, list] = {"lr": [0.05, 0.1, 0.2], "rank": [10, 32], "negatives": [9, 19],
                                 "epochs": [1, 2], "use_bias": [False, True]}


def grid_search(stream: Stream, grid: dict[str, list] | None = None, params: EvalParams | None = None, *,
                prefix: float = 0.2, model: str = "online", mode: str = "off",
                **kw: Any) -> tuple[EvalParams, pd.DataFrame]:
    """Pick the setting with the best mean DCG of ``model`` on the first ``prefix`` of the stream only.

    Returns the chosen parameters and one row per grid point (its values, ``dcg`` and ``seconds``).
    """
    grid = grid or DEFAULT_GRID
    base = params or EvalParams()
    end = max(1, int(len(stream) * prefix))
    rows = []
    best: tuple[float, EvalParams] | None = None
    keys = list(grid)
    for values in itertools.product(*(grid[k] for k in keys)):
        p = base.replace(**dict(zip(keys, values, strict=True)))
        t = time.perf_counter()
        res = run_prequential(stream, [model], p, end=end, **kw)
        score = float(res.dcg(model, mode).mean())
        rows.append({**dict(zip(keys, values, strict=True)), "dcg": score, "seconds": time.perf_counter() - t})
        if best is None or score > best[0]:
            best = (score, p)
    assert best is not None
    return best[1], pd.DataFrame(rows)


#: Validation grid of the product's retrain: recency ``(window_days, half_life_days)`` and score-blend alpha.
RETRAIN_GRID: dict[str, list] = {"recency": [(0.0, 0.0), (0.0, 14.0), (28.0, 0.0)], "alpha": [0.25, 0.5, 0.75]}
RUNNABLE = ("online", "als+online:replace", "als+online:score-blend", "retrain+online:warm-start")


def choose_retrain(stream: Stream, params: EvalParams, setup: RetrainSetup, *, prefix: float = 0.2,
                   grid: dict[str, list] | None = None, mode: str = "off", serving: str = "fold-in",
                   progress: bool | None = None, **kw: Any) -> tuple[dict[str, Any], pd.DataFrame]:
    """Choose the retrain configuration on the first ``prefix`` of the stream only (like ``--grid``).

    Candidates, each served as ``serving`` (the product serves with fold-in): online only (no
    retrain), ``warm-start``, and for every recency setting of ``grid["recency"]`` the ALS policies
    ``replace`` and ``score-blend`` with every ``grid["alpha"]`` (the frozen ``als`` snapshot is
    reported for reference, not chosen: the product always runs the stream). Returns the chosen
    ``{"model", "dcg"}`` (the best runnable configuration, possibly online only), the best policy
    ``{"policy", "policy_dcg"}``, the ALS settings of the best ALS policy (replace or score-blend)
    ``{"window_days", "half_life_days"}`` and the best score-blend ``alpha`` at those settings, and one
    row per candidate.
    """
    grid = grid or RETRAIN_GRID
    end = max(1, int(len(stream) * prefix))
    suffix = "" if serving == "plain" else FOLDIN_SUFFIX
    policy = {"als+online:replace": "replace", "als+online:score-blend": "score-blend",
              "retrain+online:warm-start": "warm-start"}
    rows: list[dict[str, Any]] = []

    def run(models: list[str], su: RetrainSetup, recency: tuple[float, float] | None, alpha: float | None) -> None:
        t = time.perf_counter()
        res = run_prequential(stream, models, params, end=end, serving=serving, setup=su, progress=progress,
                              label="validation: ", **kw)
        secs = time.perf_counter() - t
        for m in models:
            rows.append({"model": m, "policy": policy.get(m),
                         "window_days": recency[0] if recency and m != "online" else None,
                         "half_life_days": recency[1] if recency and m != "online" else None,
                         "alpha": alpha if m == "als+online:score-blend" else None,
                         "dcg": float(res.dcg(m + suffix, mode).mean()), "seconds": secs / len(models)})

    run(["online", "retrain+online:warm-start"], setup, None, None)  # neither depends on the ALS settings
    for w, h in grid["recency"]:
        for j, a in enumerate(grid["alpha"]):
            su = setup.with_retrain(window_days=float(w), half_life_days=float(h), alpha=float(a))
            run(["als+online:score-blend"] + (["als+online:replace", "als"] if j == 0 else []), su,
                (float(w), float(h)), float(a))
    table = pd.DataFrame(rows)
    return select_retrain(table, default_alpha=setup.rc.alpha), table


def select_retrain(table: pd.DataFrame, *, default_alpha: float = 0.5) -> dict[str, Any]:
    """The choice of :func:`choose_retrain` from its table of validation scores (see there)."""
    cand = table[table["model"].isin(RUNNABLE)]
    best = cand.loc[cand["dcg"].idxmax()]
    pol = cand[cand["policy"].notna()]
    ref = pol.loc[pol["dcg"].idxmax()]  # the policy to schedule (even if online only wins)
    als = cand[cand["model"].isin(["als+online:replace", "als+online:score-blend"])]
    als_best = als.loc[als["dcg"].idxmax()]  # the ALS settings: of the best ALS policy
    w, h = float(als_best["window_days"]), float(als_best["half_life_days"])
    sb = als[(als["model"] == "als+online:score-blend") & (als["window_days"] == w) & (als["half_life_days"] == h)]
    return {"model": best["model"], "dcg": float(best["dcg"]), "policy": ref["policy"], "policy_dcg": float(ref["dcg"]),
            "alpha": float(sb.loc[sb["dcg"].idxmax(), "alpha"]) if len(sb) else default_alpha,
            "window_days": w, "half_life_days": h}


def parse_sizes(spec: str) -> list[int | str]:
    """``"10,100,60s,day"`` -> ``[10, 100, "60s", "day"]``: event counts, event-time seconds (``60s``) or
    ``day``/``week`` (one batch per day/week of events)."""
    out: list[int | str] = []
    for s in spec.split(","):
        s = s.strip()
        if s in PERIOD_MS or (s.endswith("s") and s[:-1].replace(".", "", 1).isdigit()):
            out.append(s)
        else:
            out.append(int(s))
    return out


def batch_cut(size: int | str) -> dict[str, Any]:
    """The ``run_prequential`` keywords of one size of :func:`parse_sizes`."""
    if isinstance(size, str):
        return {"batch_seconds": PERIOD_MS[size] / 1000 if size in PERIOD_MS else float(size[:-1])}
    return {"batch_events": int(size)}


def sweep_batch_sizes(stream: Stream, sizes: list[int | str], models: str | list[str] = "popularity,online",
                      params: EvalParams | None = None, **kw: Any) -> pd.DataFrame:
    """Mean DCG (three modes) and events/s per model for each micro-batch size."""
    rows = []
    for size in sizes:
        res = run_prequential(stream, models, params, **batch_cut(size), **kw)
        tab = summary_table(res)
        tab.insert(0, "n_batches", res.info["n_batches"])
        tab.insert(0, "batch_size", str(size))
        tab["mean_batch_events"] = res.n_events / max(1, res.info["n_batches"])
        tab["harness_events_per_s"] = speed(res)["events_per_s"]
        rows.append(tab)
    return pd.concat(rows, ignore_index=True)


__all__ = ["DEFAULT_GRID", "RETRAIN_GRID", "RUNNABLE", "batch_cut", "choose_retrain", "grid_search", "parse_sizes",
           "select_retrain", "sweep_batch_sizes"]
