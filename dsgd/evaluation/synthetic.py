"""Seeded synthetic event streams with a known latent structure (shared by demo, tests and benchmarks).

The generative model (:class:`TasteModel`): user ``u`` at stream fraction ``t`` in [0, 1] has taste
``p_u(t) = cos(a t) p_u + sin(a t) p'_u`` with ``a = drift * pi/2`` (``drift=1`` replaces every taste by
an independent one by the end). A *fresh* event of user ``u`` picks item ``i`` with probability
``softmax_i(p_u(t).q_i / temperature + log pop_i)``: user taste times a Zipf popularity prior, so a
matrix-factorisation model can learn it and beats popularity. With probability ``repeat_prob`` an event
instead repeats the item of a uniformly chosen earlier event of the same user (frequent items are
repeated more, as in listening data). Users are drawn from a Zipf activity distribution, timestamps
are uniform over ``duration_days``. Factor entries are ``N(0, 1/sqrt(rank))`` so ``p.q`` has unit
variance.

Example
-------
>>> from dsgd.evaluation.synthetic import generate_stream
>>> events = generate_stream(100_000, n_users=500, n_items=300, drift=0.3, seed=1)
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import pandas as pd

from dsgd.core.columns import ITEM, RATING, SEQ, TS, USER

DAY_MS = 86_400_000
_CELL_BUDGET = 20_000_000  # max users x items logits held at once while sampling
_EXACT_CELLS = 10_000_000  # sampler="auto" uses the exact softmax up to n_users * n_items cells
_SIR_CANDIDATES = 64
SAMPLERS: tuple[str, ...] = ("auto", "exact", "sir")


@dataclass(frozen=True)
class TasteModel:
    """Ground truth of a synthetic stream; row ``k`` of the user arrays is user ``f"u{k}"``."""

    user_start: np.ndarray  # float64 [n_users, rank], taste at t = 0
    user_end: np.ndarray  # float64 [n_users, rank], the direction tastes rotate towards
    item_vecs: np.ndarray  # float64 [n_items, rank]; row k is item f"i{k}"
    item_logpop: np.ndarray  # float64 [n_items], log of the normalised Zipf popularity prior
    user_prob: np.ndarray  # float64 [n_users], activity distribution
    temperature: float
    drift: float

    def user_vecs(self, users: np.ndarray, frac: float | np.ndarray) -> np.ndarray:
        """Tastes of ``users`` at stream fraction(s) ``frac`` (scalar or one per user)."""
        a = np.asarray(frac, dtype=np.float64) * self.drift * (math.pi / 2)
        c, s = np.cos(a), np.sin(a)
        if np.ndim(a):
            c, s = c[:, None], s[:, None]
        return c * self.user_start[users] + s * self.user_end[users]

    def logits(self, users: np.ndarray, frac: float) -> np.ndarray:
        """Unnormalised log-probabilities [len(users), n_items] of a fresh pick at ``frac``."""
        return self.user_vecs(users, frac) @ self.item_vecs.T / self.temperature + self.item_logpop


def _zipf_prob(n: int, skew: float, rng: np.random.Generator) -> np.ndarray:
    """Zipf weights ``1/rank**skew`` normalised, assigned to ids in a random order."""
    w = 1.0 / np.arange(1, n + 1, dtype=np.float64) ** skew
    return rng.permutation(w / w.sum())


def make_taste_model(
    n_users: int,
    n_items: int,
    rank: int,
    *,
    rng: np.random.Generator,
    popularity_skew: float = 1.0,
    activity_skew: float = 1.0,
    drift: float = 0.0,
    temperature: float = 0.5,
) -> TasteModel:
    """Draw a :class:`TasteModel` (used by :func:`generate_stream` with its seeded generator)."""
    scale = rank**-0.25
    return TasteModel(
        user_start=rng.standard_normal((n_users, rank)) * scale,
        user_end=rng.standard_normal((n_users, rank)) * scale,
        item_vecs=rng.standard_normal((n_items, rank)) * scale,
        item_logpop=np.log(_zipf_prob(n_items, popularity_skew, rng)),
        user_prob=_zipf_prob(n_users, activity_skew, rng),
        temperature=temperature,
        drift=drift,
    )


def stream_truth(
    *,
    seed: int = 0,
    n_users: int = 1000,
    n_items: int = 500,
    rank: int = 8,
    popularity_skew: float = 1.0,
    activity_skew: float = 1.0,
    drift: float = 0.0,
    temperature: float = 0.5,
) -> TasteModel:
    """The :class:`TasteModel` behind ``generate_stream(...)`` called with the same arguments."""
    return make_taste_model(
        n_users,
        n_items,
        rank,
        rng=np.random.default_rng(seed),
        popularity_skew=popularity_skew,
        activity_skew=activity_skew,
        drift=drift,
        temperature=temperature,
    )


def _sample_rows(logits: np.ndarray, rows: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """One categorical draw from ``softmax(logits[r])`` for each ``r`` in ``rows`` (vectorised)."""
    logits = np.asarray(logits, dtype=np.float64)
    p = np.exp(logits - logits.max(axis=1, keepdims=True))
    cdf = np.cumsum(p, axis=1)
    cdf /= cdf[:, -1:]
    n_items = logits.shape[1]
    # shift row r by r so one searchsorted over the flattened, monotone array serves all rows
    flat = (cdf + np.arange(len(cdf))[:, None]).ravel()
    x = rows + rng.random(len(rows))
    idx = np.searchsorted(flat, x, side="right") - rows * n_items
    return np.minimum(idx, n_items - 1)


def _fill_exact(
    items: np.ndarray,
    fresh: np.ndarray,
    users: np.ndarray,
    frac: np.ndarray,
    model: TasteModel,
    rng: np.random.Generator,
) -> None:
    """Full-softmax draws for the ``fresh`` events, per time chunk (>= 32 chunks for drift)."""
    n_items = len(model.item_vecs)
    chunk = max(1, min(65_536, _CELL_BUDGET // n_items, math.ceil(len(fresh) / 32)))
    for lo in range(0, len(fresh), chunk):
        ev = fresh[lo : lo + chunk]
        uniq, rows = np.unique(users[ev], return_inverse=True)
        mid = float(frac[ev[0]] + frac[ev[-1]]) / 2
        items[ev] = _sample_rows(model.logits(uniq, mid), rows, rng)


def _fill_sir(
    items: np.ndarray,
    fresh: np.ndarray,
    users: np.ndarray,
    frac: np.ndarray,
    model: TasteModel,
    rng: np.random.Generator,
) -> None:
    """Sampling-importance-resampling draws: popularity proposals re-weighted by taste."""
    pop_cdf = np.cumsum(np.exp(model.item_logpop))
    pop_cdf /= pop_cdf[-1]
    n_items, m = len(pop_cdf), _SIR_CANDIDATES
    q32 = model.item_vecs.astype(np.float32)
    for lo in range(0, len(fresh), 8192):
        ev = fresh[lo : lo + 8192]
        cand = np.minimum(np.searchsorted(pop_cdf, rng.random((len(ev), m)), side="right"), n_items - 1)
        v = (model.user_vecs(users[ev], frac[ev]) / model.temperature).astype(np.float32)
        taste = np.matmul(q32[cand], v[:, :, None])[..., 0]
        pick = _sample_rows(taste, np.arange(len(ev)), rng)
        items[ev] = cand[np.arange(len(ev)), pick]


def _earlier_event_sources(users: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Per event: its 0-based position in its user's history and a uniform earlier event of that user."""
    n = len(users)
    order = np.argsort(users, kind="stable")  # events of a user stay in time order
    su = users[order]
    first = np.r_[0, np.flatnonzero(su[1:] != su[:-1]) + 1]
    start = np.repeat(first, np.diff(np.r_[first, n]))
    pos = np.empty(n, dtype=np.int64)
    pos[order] = np.arange(n) - start
    group_start = np.empty(n, dtype=np.int64)
    group_start[order] = start
    src = order[group_start + np.floor(rng.random(n) * pos).astype(np.int64)]
    return pos, src


def generate_stream(
    n_events: int,
    *,
    n_users: int = 1000,
    n_items: int = 500,
    rank: int = 8,
    implicit: bool = True,
    seed: int = 0,
    popularity_skew: float = 1.0,
    activity_skew: float = 1.0,
    drift: float = 0.0,
    repeat_prob: float = 0.3,
    noise: float = 0.1,
    start_ms: int = 1_600_000_000_000,
    duration_days: float = 28.0,
    rating_range: tuple[float, float] = (1.0, 5.0),
    temperature: float = 0.5,
    sampler: str = "auto",
) -> pd.DataFrame:
    """Generate ``n_events`` events in the common schema (ids ``"u17"``, ``"i42"``), deterministic per seed.

    Parameters
    ----------
    popularity_skew, activity_skew : float
        Zipf exponents of the item popularity prior and of user activity (0 = uniform).
    drift : float in [0, 1]
        How far user tastes rotate over the stream (see the module docstring).
    repeat_prob : float in [0, 1]
        Probability that an event (of a user with history) repeats one of the user's earlier items.
    noise : float
        Standard deviation of the explicit rating noise.
    implicit : bool
        True: ``rating`` is NaN. False: ``rating = clip(mid + spread * p_u(t).q_i + noise * N(0, 1))``
        with ``mid``/``spread`` = centre/quarter-width of ``rating_range`` (not rounded).
    temperature : float
        Softmax temperature of the taste term; lower = tastes matter more relative to popularity.
    sampler : {"auto", "exact", "sir"}
        How fresh items are drawn. ``"exact"``: the full softmax over all items, per time chunk with
        tastes at the chunk's midpoint (cost ~ distinct users per chunk x n_items). ``"sir"``:
        sampling-importance-resampling, 64 candidates from the popularity prior re-drawn by
        ``exp(taste / temperature)`` at each event's own time (cost independent of n_items; slightly
        flattens tastes). ``"auto"``: exact when ``n_users * n_items <= 1e7``.

    Notes
    -----
    Fresh items are sampled per time chunk (at least 32 chunks when drift matters), with tastes taken
    at the chunk's midpoint. 1M events with the defaults take about a second.
    """
    _check_stream_args(n_events, n_users, n_items, rank, drift, repeat_prob, sampler, temperature, duration_days)
    rng = np.random.default_rng(seed)
    model = make_taste_model(
        n_users,
        n_items,
        rank,
        rng=rng,
        popularity_skew=popularity_skew,
        activity_skew=activity_skew,
        drift=drift,
        temperature=temperature,
    )
    duration_ms = duration_days * DAY_MS
    offsets = np.sort(np.floor(rng.random(n_events) * duration_ms).astype(np.int64))
    frac = offsets / duration_ms
    users = rng.choice(n_users, size=n_events, p=model.user_prob)
    pos, src = _earlier_event_sources(users, rng)
    repeat = (rng.random(n_events) < repeat_prob) & (pos > 0)

    items = np.zeros(n_events, dtype=np.int64)
    fresh = np.flatnonzero(~repeat)
    if sampler == "auto":
        sampler = "exact" if n_users * n_items <= _EXACT_CELLS else "sir"
    if sampler == "exact":
        _fill_exact(items, fresh, users, frac, model, rng)
    else:
        _fill_sir(items, fresh, users, frac, model, rng)
    items = items[_copied_events(repeat, src)]
    if implicit:
        rating = np.full(n_events, np.nan, dtype=np.float32)
    else:
        rating = _ratings(model, users, items, frac, rating_range, noise, rng)
    return pd.DataFrame(
        {
            USER: _names("u", n_users)[users],
            ITEM: _names("i", n_items)[items],
            RATING: rating,
            TS: start_ms + offsets,
            SEQ: np.arange(n_events, dtype=np.int64),
        }
    )


def _check_stream_args(n_events: int, n_users: int, n_items: int, rank: int, drift: float, repeat_prob: float,
                       sampler: str, temperature: float, duration_days: float) -> None:
    if n_events < 0 or n_users < 1 or n_items < 1 or rank < 1:
        raise ValueError("n_events must be >= 0 and n_users, n_items, rank >= 1")
    if not 0.0 <= drift <= 1.0 or not 0.0 <= repeat_prob <= 1.0:
        raise ValueError(f"drift and repeat_prob must be in [0, 1], got {drift}, {repeat_prob}")
    if sampler not in SAMPLERS:
        raise ValueError(f"unknown sampler {sampler!r}; supported values: {', '.join(SAMPLERS)}")
    if temperature <= 0 or duration_days <= 0:
        raise ValueError("temperature and duration_days must be > 0")


def _copied_events(repeat: np.ndarray, src: np.ndarray) -> np.ndarray:
    """For each event, the fresh event whose item it carries (itself unless it repeats an earlier one)."""
    root = np.where(repeat, src, np.arange(len(repeat)))
    while True:  # pointer jumping: a repeat of a repeat resolves to the fresh event it copies
        nxt = root[root]
        if np.array_equal(nxt, root):
            return root
        root = nxt


def _ratings(model: TasteModel, users: np.ndarray, items: np.ndarray, frac: np.ndarray,
             rating_range: tuple[float, float], noise: float, rng: np.random.Generator) -> np.ndarray:
    """Explicit ratings: ``clip(mid + spread * p_u(t).q_i + noise * N(0, 1))``."""
    lo_r, hi_r = rating_range
    score = np.einsum("ij,ij->i", model.user_vecs(users, frac), model.item_vecs[items])
    raw = (lo_r + hi_r) / 2 + (hi_r - lo_r) / 4 * score + noise * rng.standard_normal(len(users))
    return np.clip(raw, lo_r, hi_r).astype(np.float32)


def _names(prefix: str, n: int) -> np.ndarray:
    return np.array([f"{prefix}{k}" for k in range(n)], dtype=object)


def planted_ratings(
    n_users: int,
    n_items: int,
    rank: int,
    density: float,
    noise: float,
    seed: int,
    *,
    mu: float = 3.0,
    start_ms: int = 1_600_000_000_000,
    duration_days: float = 28.0,
) -> tuple[pd.DataFrame, np.ndarray, np.ndarray]:
    """Explicit ratings ``mu + p_u.q_i + noise * N(0, 1)`` (no clipping) on a uniform random subset of cells.

    Returns
    -------
    (events, user_vecs [n_users, rank], item_vecs [n_items, rank])
        ``events`` in the common schema with ``round(density * n_users * n_items)`` distinct
        ``(user, item)`` cells and uniform random times; row ``k`` of the factors is ``"u{k}"``/``"i{k}"``.
    """
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    rng = np.random.default_rng(seed)
    scale = rank**-0.25
    p = rng.standard_normal((n_users, rank)) * scale
    q = rng.standard_normal((n_items, rank)) * scale
    n = round(density * n_users * n_items)
    cells = rng.choice(n_users * n_items, size=n, replace=False)
    u, i = cells // n_items, cells % n_items
    rating = mu + np.einsum("ij,ij->i", p[u], q[i]) + noise * rng.standard_normal(n)
    offsets = np.sort(np.floor(rng.random(n) * duration_days * DAY_MS).astype(np.int64))
    df = pd.DataFrame(
        {
            USER: _names("u", n_users)[u],
            ITEM: _names("i", n_items)[i],
            RATING: rating.astype(np.float32),
            TS: start_ms + offsets,
            SEQ: np.arange(n, dtype=np.int64),
        }
    )
    return df, p, q


def to_json_lines(df: pd.DataFrame) -> Iterator[bytes]:
    """Wire values for the Kafka producer: compact UTF-8 JSON ``{"user", "item", "rating"?, "ts"}``.

    One object per event, no trailing newline; ``rating`` is omitted when NaN (implicit).
    """
    cols = zip(
        df[USER].astype(str).tolist(),
        df[ITEM].astype(str).tolist(),
        # shortest float32 text, so 4.3852696 is sent rather than 4.385269641876221
        [float(x) for x in df[RATING].to_numpy(np.float32).astype(str)],
        df[TS].astype(np.int64).tolist(),
        strict=True,
    )
    for user, item, rating, ts in cols:
        rec: dict[str, object] = {"user": user, "item": item}
        if rating == rating:  # not NaN
            rec["rating"] = rating
        rec["ts"] = ts
        yield json.dumps(rec, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
