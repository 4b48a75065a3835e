"""Prequential evaluation harness: popularity vs online vs weekly batch vs batch+online (GUIDE.md §4).

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
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from numba import njit

from dsgd.core.columns import ITEM, SEQ, TS, USER
from dsgd.evaluation.models import FOLDIN_SUFFIX, PRODUCT_KINDS, EvalParams, FitCache, Popularity, RetrainSetup, Stream, build_model, expand_models, expand_serving, retrain_setup
from dsgd.core.hashing import id_key
from dsgd.core.metrics import EXCLUSION_MODES, dcg_from_ranks, period_means

log = logging.getLogger("dsgd.evaluate")

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


class SeenItems:
    """Each user's distinct items so far as a bitset ``[n_users, ceil(n_items / 8)]`` (uint8), for seen-item
    exclusion (a stream of 16k users x 10k items takes 21 MB)."""

    def __init__(self, n_users: int = 0, n_items: int = 0) -> None:
        self.bits = np.zeros((n_users, (n_items + 7) // 8), np.uint8)

    def _grow(self, n_users: int, n_items: int) -> None:
        nu, nb = self.bits.shape
        if n_users > nu or (n_items + 7) // 8 > nb:
            bits = np.zeros((max(nu, n_users), max(nb, (n_items + 7) // 8)), np.uint8)
            bits[:nu, :nb] = self.bits
            self.bits = bits

    def mask(self, users: np.ndarray, n_items: int) -> np.ndarray:
        """Bool ``[len(users), n_items]``: item already seen by the user."""
        self._grow(int(users.max()) + 1 if len(users) else 0, n_items)
        unpacked = np.unpackbits(self.bits[users], axis=1, bitorder="little", count=n_items)
        return unpacked.astype(bool)

    def add(self, users: np.ndarray, items: np.ndarray) -> None:
        if len(users) == 0:
            return
        self._grow(int(users.max()) + 1, int(items.max()) + 1)
        _set_bits(self.bits, np.ascontiguousarray(users, np.int64), np.ascontiguousarray(items, np.int64))


@njit(cache=True, nogil=True)
def _set_bits(bits, users, items):
    for n in range(users.shape[0]):
        i = items[n]
        bits[users[n], i >> 3] |= np.uint8(1 << (i & 7))


@njit(cache=True, nogil=True, fastmath=False)
def _rank_events(scores, rows, targets, users, bits, n_known, per_event, off, excl, strict):
    """Ranks of each event's target in the three modes (the contract of :func:`ranks_all_modes`).

    ``scores[rows[e]]`` is event ``e``'s score row; ``bits`` the seen bitset. ``per_event``: after ranking
    event ``e`` its (user, item) is marked seen, so later events of the chunk see it (fold-in serving,
    where the server has the user's earlier events). Two passes: a branch-free count over all items,
    then the seen items (set bits) among them."""
    n_bytes = (n_known + 7) >> 3
    for e in range(targets.shape[0]):
        t = targets[e]
        u = users[e]
        if t >= n_known:
            off[e] = 0
            excl[e] = 0
            strict[e] = 0
        else:
            row = rows[e]
            st = scores[row, t]
            o = 1
            for j in range(n_known):
                o += scores[row, j] > st
            hidden = 0
            for byte in range(n_bytes):
                v = bits[u, byte]
                if v:
                    for bit in range(8):
                        if (v >> bit) & 1:
                            j = byte * 8 + bit
                            if j < n_known and scores[row, j] > st:
                                hidden += 1
            off[e] = o
            excl[e] = o - hidden
            strict[e] = 0 if (bits[u, t >> 3] >> (t & 7)) & 1 else o - hidden
        if per_event:
            bits[u, t >> 3] |= np.uint8(1 << (t & 7))


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


class Progress:
    """Progress of one model's pass: a tqdm bar on a terminal, a log line every ``every`` seconds
    otherwise (events done, events/s, ETA)."""

    def __init__(self, total: int, desc: str, *, enabled: bool | None = None, every: float = 15.0) -> None:
        import sys

        self.total, self.desc, self.every = total, desc, every
        self.done = 0
        self.t0 = self.last = time.perf_counter()
        tty = sys.stderr.isatty() if enabled is None else enabled
        self.bar = None
        if tty and enabled is not False:
            from tqdm import tqdm

            self.bar = tqdm(total=total, desc=desc, unit="ev", unit_scale=True, leave=False, dynamic_ncols=True)
        self.log = enabled is not False and not tty

    def update(self, n: int) -> None:
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        now = time.perf_counter()
        if self.log and now - self.last >= self.every:
            self.last = now
            rate = self.done / (now - self.t0)
            eta = (self.total - self.done) / rate if rate > 0 else float("inf")
            log.info("%s: %d/%d events (%.0f%%), %.0f events/s, ETA %s", self.desc, self.done, self.total,
                     100.0 * self.done / max(1, self.total), rate, _hms(eta))

    def close(self) -> float:
        if self.bar is not None:
            self.bar.close()
        secs = time.perf_counter() - self.t0
        if self.log or self.bar is not None:
            log.info("%s: %d events in %.1f s (%.0f events/s)", self.desc, self.done, secs,
                     self.done / secs if secs > 0 else float("nan"))
        return secs


def _hms(s: float) -> str:
    if not np.isfinite(s):
        return "?"
    s = int(s)
    return f"{s // 3600}h{s % 3600 // 60:02d}m{s % 60:02d}s" if s >= 3600 else f"{s // 60}m{s % 60:02d}s"


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


__all__ = ["RETRAIN_GRID", "EvalParams", "batch_cut", "parse_sizes", "Popularity", "RunResult", "SeenItems", "Stream", "choose_retrain",
           "cut_batches", "evaluate",
           "grid_search", "period_table", "prepare_stream", "ranks_all_modes", "run_prequential", "speed",
           "summary_table", "sweep_batch_sizes"]
