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
from dsgd.evaluation.models import EvalParams, Popularity, Stream, build_models, expand_models

DAY_MS = 86_400_000
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


class SeenItems:
    """Each user's distinct items so far (sorted arrays), for seen-item exclusion."""

    def __init__(self) -> None:
        self.items: list[np.ndarray] = []

    def mask(self, users: np.ndarray, n_items: int) -> np.ndarray:
        """Bool ``[len(users), n_items]``: item already seen by the user."""
        out = np.zeros((len(users), n_items), bool)
        for r, u in enumerate(users):
            if u < len(self.items):
                s = self.items[u]
                out[r, s[s < n_items]] = True
        return out

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        if len(users) == 0:
            return
        need = int(users.max()) + 1
        self.items.extend(np.zeros(0, np.int64) for _ in range(need - len(self.items)))
        order = np.argsort(users, kind="stable")
        su, si = users[order], items[order]
        starts = np.r_[0, np.flatnonzero(su[1:] != su[:-1]) + 1, len(su)]
        for a, b in itertools.pairwise(starts):
            u = int(su[a])
            self.items[u] = np.union1d(self.items[u], si[a:b])


def ranks_all_modes(scores: np.ndarray, targets: np.ndarray, seen: np.ndarray) -> dict[str, np.ndarray]:
    """Ranks of each row's target in the three exclusion modes (same contract as
    :func:`dsgd.core.metrics.ranks_of_targets`; ties in the target's favour). Targets ``>= scores.shape[1]``
    (items new to the stream) get rank 0 in every mode."""
    n, m = scores.shape
    new = targets >= m
    t = np.where(new, 0, targets)
    rows = np.arange(n)
    if m == 0:
        z = np.zeros(n, np.int64)
        return {mode: z.copy() for mode in EXCLUSION_MODES}
    higher = scores > scores[rows, t][:, None]
    off = 1 + np.count_nonzero(higher, axis=1)
    excl = 1 + np.count_nonzero(higher & ~seen, axis=1)  # the target is never "higher" than itself
    strict = np.where(seen[rows, t], 0, excl)
    out = {"off": off, "exclude_seen": excl, "strict": strict}
    for v in out.values():
        v[new] = 0
    return {k: v.astype(np.int64) for k, v in out.items()}


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


def run_prequential(stream: Stream, models: str | list[str], params: EvalParams | None = None, *,
                    batch_events: int | None = 100, batch_seconds: float | None = None,
                    retrain_period: str = "week", chunk: int = 2048, end: int | None = None,
                    eval_from: int = 0) -> RunResult:
    """The prequential loop over micro-batches (see the module docstring).

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
    """
    params = params or EvalParams()
    names = expand_models(models)
    pop, objs = build_models(names, params)
    learners: list[Any] = [m for m in objs if m is not pop] + [pop]  # popularity last: the fallback is pre-batch
    n = len(stream) if end is None else min(end, len(stream))
    if batch_seconds is not None:
        batch_events = None
    bounds = cut_batches(stream.ts[:n], batch_events=batch_events, batch_seconds=batch_seconds,
                         period=retrain_period)
    ranks = {nm: {md: np.zeros(n, np.int64) for md in EXCLUSION_MODES} for nm in names}
    secs = {nm: {"score": 0.0, "update": 0.0, "retrain": 0.0} for nm in names}
    seen = SeenItems()
    o = origin_ms(stream.ts)
    per_len = PERIOD_MS[retrain_period]
    current = None
    n_known = 0
    t_start = time.perf_counter()
    for b, (lo, hi) in enumerate(itertools.pairwise(bounds.tolist())):
        p = int((stream.ts[lo] - o) // per_len)
        if current is not None and p != current:
            for nm, m in zip(names, objs, strict=True):
                t = time.perf_counter()
                m.retrain(stream, lo, p)
                secs[nm]["retrain"] += time.perf_counter() - t
        current = p
        for c in range(lo, hi, chunk):
            ce = min(hi, c + chunk)
            uniq, inv = np.unique(stream.user[c:ce], return_inverse=True)
            seen_u = seen.mask(uniq, n_known)[inv]
            targets = stream.item[c:ce]
            for nm, m in zip(names, objs, strict=True):
                t = time.perf_counter()
                s = np.asarray(m.score(uniq, n_known, stream))[inv]
                for md, r in ranks_all_modes(s, targets, seen_u).items():
                    ranks[nm][md][c:ce] = r
                secs[nm]["score"] += time.perf_counter() - t
        for m in learners:
            t = time.perf_counter()
            m.update(stream, lo, hi, b)
            if m.name in secs:
                secs[m.name]["update"] += time.perf_counter() - t
        seen.add(stream.user[lo:hi], stream.item[lo:hi])
        n_known = max(n_known, int(stream.item[lo:hi].max()) + 1)
    wall = time.perf_counter() - t_start
    stream_n = Stream(**{k: (v[:n] if k in ("user", "item", "ts", "seq") else v)
                         for k, v in stream.__dict__.items()})
    return RunResult(stream_n, names, params, bounds, ranks, secs, wall, eval_from,
                     {"batch_events": batch_events, "batch_seconds": batch_seconds,
                      "retrain_period": retrain_period, "n_batches": len(bounds) - 1})


def evaluate(events: pd.DataFrame, models: str | list[str] = "popularity,online,batch,batch+online",
             params: EvalParams | None = None, **kw: Any) -> RunResult:
    """:func:`prepare_stream` then :func:`run_prequential` (keywords as there)."""
    return run_prequential(prepare_stream(events), models, params, **kw)


# ---- tables -------------------------------------------------------------------------------------------
def summary_table(res: RunResult) -> pd.DataFrame:
    """One row per model: mean DCG@K per exclusion mode, events and events/s of the model's own work."""
    rows = []
    for nm in res.models:
        s = res.seconds[nm]
        work = s["score"] + s["update"] + s["retrain"]
        row: dict[str, Any] = {"model": nm}
        for md in EXCLUSION_MODES:
            row[f"dcg_{md}"] = float(res.dcg(nm, md).mean()) if res.n_events > res.eval_from else float("nan")
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


# ---- grid search and batch-size sweep -----------------------------------------------------------------
DEFAULT_GRID: dict[str, list] = {"lr": [0.05, 0.1, 0.2], "rank": [10, 32], "negatives": [9, 19],
                                 "epochs": [1, 2]}


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


def parse_sizes(spec: str) -> list[int | str]:
    """``"10,100,day"`` -> ``[10, 100, "day"]`` (``day``/``week``: one batch per day/week of events)."""
    out: list[int | str] = []
    for s in spec.split(","):
        s = s.strip()
        out.append(s if s in PERIOD_MS else int(s))
    return out


def sweep_batch_sizes(stream: Stream, sizes: list[int | str], models: str | list[str] = "popularity,online",
                      params: EvalParams | None = None, **kw: Any) -> pd.DataFrame:
    """Mean DCG (three modes) and events/s per model for each micro-batch size."""
    rows = []
    for size in sizes:
        if isinstance(size, str):
            res = run_prequential(stream, models, params, batch_seconds=PERIOD_MS[size] / 1000, **kw)
        else:
            res = run_prequential(stream, models, params, batch_events=int(size), **kw)
        tab = summary_table(res)
        tab.insert(0, "n_batches", res.info["n_batches"])
        tab.insert(0, "batch_size", str(size))
        tab["mean_batch_events"] = res.n_events / max(1, res.info["n_batches"])
        tab["harness_events_per_s"] = speed(res)["events_per_s"]
        rows.append(tab)
    return pd.concat(rows, ignore_index=True)


__all__ = ["EvalParams", "Popularity", "RunResult", "SeenItems", "Stream", "cut_batches", "evaluate",
           "grid_search", "period_table", "prepare_stream", "ranks_all_modes", "run_prequential", "speed",
           "summary_table", "sweep_batch_sizes"]
