"""Prequential evaluation harness: popularity vs online vs weekly batch vs batch+online (docs/evaluation.md).

The stream is cut into micro-batches in time order (by event count or by event time, and always at the
retrain-period boundaries). For each micro-batch every model first scores the batch's events against
its state *before* the batch (micro-batch mode: coarser than per-event evaluation, the whole batch sees
the same model), then learns from the batch. The target's rank among all items known so far gives
``DCG@K = 1/log2(rank+1)`` if ``rank <= K`` (K = 100); an event whose item is new scores rank 0 (DCG 0)
and counts in the mean. The three seen-item exclusion modes of :mod:`dsgd.core.metrics` are computed from
the same scores; "seen" is the user's history before the batch.

Example
-------
>>> from dsgd.evaluation.loaders import load_dataset
>>> events = load_dataset("lastfm-tsv", "listens-first10pct.tsv")
>>> res = evaluate(events, models="popularity,online", batch_events=100)
>>> summary_table(res)
"""

from __future__ import annotations

import itertools
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from dsgd.core.columns import ITEM, SEQ, TS, USER
from dsgd.core.hashing import id_key
from dsgd.core.metrics import EXCLUSION_MODES, dcg_from_ranks, period_means
from dsgd.evaluation.models import (
    FOLDIN_SUFFIX,
    PRODUCT_KINDS,
    EvalParams,
    FitCache,
    Popularity,
    RetrainSetup,
    Stream,
    build_model,
    expand_models,
    expand_serving,
    retrain_setup,
)
from dsgd.evaluation.progress import Progress
from dsgd.evaluation.ranking import SeenItems, _rank_events, ranks_all_modes

DAY_MS = 86_400_000
PROGRESS_EVERY_S = 15.0  # seconds between progress log lines when stderr is not a terminal
PERIOD_MS = {"day": DAY_MS, "week": 7 * DAY_MS}


def prepare_stream(events: pd.DataFrame) -> Stream:
    """Dense user/item indices in order of first appearance (events sorted by ``ts``, ``seq``)."""
    ev = events.sort_values([TS, SEQ], kind="stable") if len(events) else events
    u_codes, u_ids = pd.factorize(ev[USER].astype(str), sort=False)
    i_codes, i_ids = pd.factorize(ev[ITEM].astype(str), sort=False)
    u_ids, i_ids = np.asarray(u_ids, object), np.asarray(i_ids, object)
    return Stream(user=u_codes.astype(np.int64), item=i_codes.astype(np.int64),
                  ts=ev[TS].to_numpy(np.int64), seq=ev[SEQ].to_numpy(np.int64), user_ids=u_ids, item_ids=i_ids,
                  user_keys=id_key(u_ids), item_keys=id_key(i_ids))


def origin_ms(ts: np.ndarray) -> int:
    """UTC midnight on or before the first event (the origin of days and weeks, as in period_means)."""
    return int(ts[0] // DAY_MS * DAY_MS) if len(ts) else 0


def cut_batches(ts: np.ndarray, *, batch_events: int | None = None, batch_seconds: float | None = None,
                period: str | None = "week") -> np.ndarray:
    """Start offsets of the micro-batches plus the end, int64 ``[n_batches + 1]``.

    Exactly one of ``batch_events`` (count) and ``batch_seconds`` (event time, aligned to the stream's
    first midnight) is given. Batches are also cut at every ``period`` boundary (the retrain times), so
    a count-cut batch may be shorter at the end of a period.
    """
    if (batch_events is None) == (batch_seconds is None):
        raise ValueError("give exactly one of batch_events and batch_seconds")
    ts = np.asarray(ts, np.int64)
    n = len(ts)
    if n == 0:
        return np.zeros(1, np.int64)
    o = origin_ms(ts)
    per = (ts - o) // PERIOD_MS[period] if period else np.zeros(n, np.int64)
    if batch_seconds is not None:
        if not batch_seconds > 0:
            raise ValueError(f"batch_seconds must be > 0, got {batch_seconds}")
        sub = (ts - o) // max(1, int(round(batch_seconds * 1000)))
    else:
        if batch_events < 1:
            raise ValueError(f"batch_events must be >= 1, got {batch_events}")
        first = np.r_[0, np.flatnonzero(per[1:] != per[:-1]) + 1]
        pos = np.arange(n) - np.repeat(first, np.diff(np.r_[first, n]))
        sub = pos // batch_events
    change = np.flatnonzero((per[1:] != per[:-1]) | (sub[1:] != sub[:-1])) + 1
    return np.r_[0, change, n].astype(np.int64)


@dataclass
class RunResult:
    """Per-event ranks of each model in each exclusion mode, plus timings."""

    stream: Stream
    models: list[str]
    params: EvalParams
    bounds: np.ndarray
    ranks: dict[str, dict[str, np.ndarray]]  # model -> mode -> int64 [n]
    seconds: dict[str, dict[str, float]]  # model -> {"score", "update", "retrain"}
    wall_seconds: float
    eval_from: int = 0
    info: dict[str, Any] = field(default_factory=dict)

    def dcg(self, model: str, mode: str = "off") -> np.ndarray:
        return dcg_from_ranks(self.ranks[model][mode], self.params.k)[self.eval_from:]

    @property
    def n_events(self) -> int:
        return len(self.stream)

def _pass(model: Any, pop: Popularity, stream: Stream, bounds: np.ndarray, n: int, servings: list[str],
          ranks: dict[str, dict[str, np.ndarray]], secs: dict[str, dict[str, float]], labels: dict[str, str],
          retrain_period: str, chunk: int, progress: Progress, min_growth: float = 0.0) -> None:
    """One model over the whole stream (test-then-train per micro-batch)."""
    seen = SeenItems(len(stream.user_ids), len(stream.item_ids))
    seen_ev = SeenItems(len(stream.user_ids), len(stream.item_ids)) if "fold-in" in servings else None
    o = origin_ms(stream.ts)
    per_len = PERIOD_MS[retrain_period]
    current = None
    n_known = 0
    plain, folded = labels.get("plain"), labels.get("fold-in")
    main = plain or folded
    assert main is not None
    last_end = 0
    for b, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist())):
        p = int((stream.ts[lo] - o) // per_len)
        if current is not None and p != current and lo >= last_end * (1.0 + min_growth) and lo > last_end:
            t = time.perf_counter()
            model.retrain(stream, lo, p, o + p * per_len - 1)
            secs[main]["retrain"] += time.perf_counter() - t
            last_end = lo
        current = p
        for c in range(lo, hi, chunk):
            ce = min(hi, c + chunk)
            users = stream.user[c:ce]
            targets = stream.item[c:ce]
            if plain is not None:
                t = time.perf_counter()
                uniq, inv = np.unique(users, return_inverse=True)
                s = np.ascontiguousarray(model.score(uniq, n_known, stream), np.float32)
                out = ranks[plain]
                _rank_events(s, inv.astype(np.int64), targets, users, seen.bits, n_known, False,
                             out["off"][c:ce], out["exclude_seen"][c:ce], out["strict"][c:ce])
                secs[plain]["score"] += time.perf_counter() - t
            if folded is not None:
                assert seen_ev is not None
                t = time.perf_counter()
                s = np.ascontiguousarray(model.score_foldin(stream, lo, c, ce, n_known), np.float32)
                out = ranks[folded]
                _rank_events(s, np.arange(ce - c, dtype=np.int64), targets, users, seen_ev.bits, n_known, True,
                             out["off"][c:ce], out["exclude_seen"][c:ce], out["strict"][c:ce])
                secs[folded]["score"] += time.perf_counter() - t
        t = time.perf_counter()
        model.update(stream, lo, hi, b)
        secs[main]["update"] += time.perf_counter() - t
        if pop is not model:
            pop.update(stream, lo, hi, b)
        seen.add(stream.user[lo:hi], stream.item[lo:hi])
        n_known = max(n_known, int(stream.item[lo:hi].max()) + 1)
        progress.update(hi - lo)
    if plain is not None and folded is not None:  # the same training serves both
        secs[folded]["update"] = secs[plain]["update"]
        secs[folded]["retrain"] = secs[plain]["retrain"]


def run_prequential(stream: Stream, models: str | list[str], params: EvalParams | None = None, *,
                    batch_events: int | None = 100, batch_seconds: float | None = None,
                    retrain_period: str = "week", chunk: int = 2048, end: int | None = None,
                    eval_from: int = 0, serving: str | list[str] = "plain", setup: RetrainSetup | None = None,
                    cache: FitCache | None = None, progress: bool | None = None, label: str = "",
                    retrain_min_growth: float = 0.0) -> RunResult:
    """The prequential loop over micro-batches (see the module docstring), one pass per model.

    Parameters
    ----------
    stream : Stream
        From :func:`prepare_stream`.
    models : str or list of str
        Names, see :func:`dsgd.evaluation.models.expand_models`.
    batch_events, batch_seconds : int, float
        Micro-batch cut by count or by event time (``batch_seconds`` wins when given).
    retrain_period : {"week", "day"}
        When the batch models retrain (on all events before the boundary).
    chunk : int
        Events scored at once (memory ``chunk * n_items``); results do not depend on it.
    end : int, optional
        Stop after this many events (a validation prefix).
    eval_from : int
        Events before this offset are trained on but left out of the reported means.
    serving : str or list of str
        ``"plain"`` (the user's vector as the model has it) and/or ``"fold-in"`` (the user's events the
        model has not trained on, before the event, folded in: :mod:`dsgd.core.foldin`); fold-in
        results are named ``<model>/fold-in``. Popularity has no user vector: it is reported plain only.
    setup : RetrainSetup, optional
        Config, Spark session and fit cache of the product models (``als``...); default
        :func:`dsgd.evaluation.models.retrain_setup` on ``conf/dsgd.toml``.
    cache : FitCache, optional
        Shares the SGD models' weekly from-scratch fits (default: ``setup.cache`` or in memory).
    progress : bool, optional
        Per-model progress (events/s, ETA): a bar on a terminal, log lines otherwise; False: silent.
    label : str
        Prefix of the progress lines (e.g. the batch size of a sweep).
    retrain_min_growth : float
        Retrain at a period boundary only when the history has grown by this fraction since the last
        retrain (0: every boundary). A cost knob for long sparse streams (ml-latest-small spans 1,025
        weeks); the snapshot in between is the last one fitted.
    """
    params = params or EvalParams()
    names = expand_models(models)
    servings = expand_serving(serving)
    if any(nm in PRODUCT_KINDS for nm in names) and setup is None:
        setup = retrain_setup(None, params)
    cache = cache or (setup.cache if setup is not None else FitCache())
    n = len(stream) if end is None else min(end, len(stream))
    if batch_seconds is not None:
        batch_events = None
    bounds = cut_batches(stream.ts[:n], batch_events=batch_events, batch_seconds=batch_seconds,
                         period=retrain_period)
    out_names: list[str] = []
    ranks: dict[str, dict[str, np.ndarray]] = {}
    secs: dict[str, dict[str, float]] = {}
    info: dict[str, Any] = {"batch_events": batch_events, "batch_seconds": batch_seconds,
                            "retrain_period": retrain_period, "retrain_min_growth": retrain_min_growth, "n_batches": len(bounds) - 1, "serving": servings,
                            "pass_seconds": {}}
    t_start = time.perf_counter()
    for nm in names:
        labels = {sv: (nm if sv == "plain" else nm + FOLDIN_SUFFIX) for sv in servings
                  if nm != "popularity" or sv == "plain"}
        if not labels:
            labels = {"plain": nm}
        for lab in labels.values():
            out_names.append(lab)
            ranks[lab] = {md: np.zeros(n, np.int64) for md in EXCLUSION_MODES}
            secs[lab] = {"score": 0.0, "update": 0.0, "retrain": 0.0}
        pop = Popularity()
        model = build_model(nm, params, stream, pop, cache=cache, setup=setup)
        prog = Progress(n, f"{label}{nm}", enabled=progress, every=PROGRESS_EVERY_S)
        fits_before = setup.fits if setup is not None else 0
        fit_s_before = setup.fit_seconds if setup is not None else 0.0
        _pass(model, pop, stream, bounds, n, list(labels), ranks, secs, labels, retrain_period, chunk, prog,
              retrain_min_growth)
        info["pass_seconds"][nm] = prog.close()
        if nm in PRODUCT_KINDS and setup is not None:
            info.setdefault("als", {})[nm] = {"fits": setup.fits - fits_before,
                                              "fit_seconds": setup.fit_seconds - fit_s_before,
                                              "retrains": getattr(model, "snapshots", 0)}
    wall = time.perf_counter() - t_start
    stream_n = Stream(**{k: (v[:n] if k in ("user", "item", "ts", "seq") else v)
                         for k, v in stream.__dict__.items() if k != "cache"})
    return RunResult(stream_n, out_names, params, bounds, ranks, secs, wall, eval_from, info)


def evaluate(events: pd.DataFrame, models: str | list[str] = "popularity,online,batch,batch+online",
             params: EvalParams | None = None, **kw: Any) -> RunResult:
    """:func:`prepare_stream` then :func:`run_prequential` (keywords as there)."""
    return run_prequential(prepare_stream(events), models, params, **kw)


# ---- tables -------------------------------------------------------------------------------------------
def summary_table(res: RunResult) -> pd.DataFrame:
    """One row per model: mean DCG@K per exclusion mode (over the reported events, from ``eval_from``;
    with a validation prefix also ``dcg_off_all_events`` over every event), events and events/s of the
    model's own work (score + update + retrain)."""
    rows = []
    for nm in res.models:
        s = res.seconds[nm]
        work = s["score"] + s["update"] + s["retrain"]
        row: dict[str, Any] = {"model": nm}
        for md in EXCLUSION_MODES:
            row[f"dcg_{md}"] = float(res.dcg(nm, md).mean()) if res.n_events > res.eval_from else float("nan")
        if res.eval_from:
            row["dcg_off_all_events"] = float(dcg_from_ranks(res.ranks[nm]["off"], res.params.k).mean())
        row.update({"events": res.n_events - res.eval_from, "score_s": s["score"], "update_s": s["update"],
                    "retrain_s": s["retrain"], "events_per_s": res.n_events / work if work else float("nan")})
        rows.append(row)
    return pd.DataFrame(rows)


def period_table(res: RunResult, period: str = "week") -> pd.DataFrame:
    """Long table: model, mode, period_index, period_start, n, mean (per-period mean DCG@K)."""
    ts = res.stream.ts[res.eval_from:]
    o = origin_ms(res.stream.ts)
    parts = []
    for nm in res.models:
        for md in EXCLUSION_MODES:
            df = period_means(ts, res.dcg(nm, md), period, origin_ms=o)
            df.insert(0, "mode", md)
            df.insert(0, "model", nm)
            parts.append(df)
    return pd.concat(parts, ignore_index=True)


def speed(res: RunResult) -> dict[str, float]:
    """Harness speed: events/s of the whole run (all models, scoring in three modes, bookkeeping)."""
    return {"events": res.n_events, "batches": res.info["n_batches"], "wall_seconds": res.wall_seconds,
            "events_per_s": res.n_events / res.wall_seconds if res.wall_seconds else float("nan")}


__all__ = ["PERIOD_MS", "EvalParams", "Popularity", "RunResult", "SeenItems", "Stream", "cut_batches", "evaluate",
           "origin_ms", "period_table", "prepare_stream", "ranks_all_modes", "run_prequential", "speed",
           "summary_table"]
