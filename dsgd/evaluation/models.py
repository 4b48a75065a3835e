"""Models compared by the prequential harness (:mod:`dsgd.evaluation.harness`).

Every model scores users against the items known so far (``score``), learns from one micro-batch
(``update``) and may retrain at a period boundary (``retrain``). The matrix-factorisation models all
train through :func:`dsgd.engines.local.train_epochs`, the micro-batch step of the streaming trainer.

Items are indexed densely in order of first appearance in the stream, so "the items known before
batch b" are the indices ``0 .. n_known-1``. Users unknown to a factor model (cold users) are scored by
the live popularity counts (the serving fallback); items known to the stream but not (yet) to a frozen
model score ``-inf``.
"""

from __future__ import annotations

import copy
import dataclasses
from dataclasses import dataclass
from typing import Any

import numpy as np

from dsgd.core.factors import SideFactors
from dsgd.core.params import KernelParams
from dsgd.core.schedules import Constant
from dsgd.engines.local import train_epochs

MODEL_KINDS: tuple[str, ...] = ("popularity", "online", "batch", "batch+online:warm-start",
                                "batch+online:replace")
_ALIASES = {"batch+online": ("batch+online:warm-start", "batch+online:replace"),
            "batch+online:warm": ("batch+online:warm-start",), "all": MODEL_KINDS}


def expand_models(spec: str | list[str]) -> list[str]:
    """Model names from ``"popularity,online,batch,batch+online"``; ``batch+online`` means both variants."""
    names = [s.strip() for s in spec.split(",")] if isinstance(spec, str) else list(spec)
    out: list[str] = []
    for n in filter(None, names):
        for m in _ALIASES.get(n, (n,)):
            if m not in MODEL_KINDS:
                raise ValueError(f"unknown model {n!r}; supported values: popularity, online, batch, "
                                 "batch+online, batch+online:warm-start, batch+online:replace")
            if m not in out:
                out.append(m)
    if not out:
        raise ValueError("no model given")
    return out


@dataclass(frozen=True)
class EvalParams:
    """Hyper-parameters of the factor models (defaults: docs/evaluation.md).

    Parameters
    ----------
    rank, init_scale : int, float
        Factor rank; initial components uniform in ``[-init_scale, init_scale]``.
    lr, negatives, reg, epochs : float, int, float, int
        Online step: learning rate, uniform negatives per positive (drawn from the known items of the
        DSGD item block), L2 regularisation, epochs per micro-batch.
    batch_lr, batch_epochs : float, int
        Weekly batch retrain: SGD epochs over the whole history at ``batch_lr``.
    batch_order : str
        Order of the history in a batch epoch. Supported values: ``"time"`` (stream order) and
        ``"shuffle"`` (a seeded permutation per retrain).
    d : int
        DSGD blocks per side (d strata per epoch).
    seed, k : int
        Seed of initial vectors and negatives; the DCG cut-off.
    """

    rank: int = 10
    init_scale: float = 0.01
    lr: float = 0.2
    negatives: int = 19
    reg: float = 0.0
    epochs: int = 1
    batch_lr: float = 0.05
    batch_epochs: int = 10
    batch_order: str = "time"
    d: int = 2
    seed: int = 0
    k: int = 100

    def __post_init__(self) -> None:
        if self.rank < 1 or self.d < 1 or self.epochs < 0 or self.batch_epochs < 0 or self.k < 1:
            raise ValueError(f"need rank >= 1, d >= 1, epochs >= 0, batch_epochs >= 0, k >= 1: {self}")
        if self.batch_order not in ("time", "shuffle"):
            raise ValueError(f"batch_order must be 'time' or 'shuffle', got {self.batch_order!r}")

    def kernel(self, lr: float) -> KernelParams:
        return KernelParams(lr=lr, reg=self.reg, implicit=True, use_bias=False, negatives=self.negatives)

    def replace(self, **kw: Any) -> EvalParams:
        return dataclasses.replace(self, **kw)


@dataclass
class Stream:
    """A time-ordered event stream with dense indices (order of first appearance)."""

    user: np.ndarray  # int64 [n] user index
    item: np.ndarray  # int64 [n] item index
    ts: np.ndarray  # int64 [n] epoch ms
    seq: np.ndarray  # int64 [n]
    user_ids: np.ndarray  # object [n_users]
    item_ids: np.ndarray  # object [n_items]
    user_keys: np.ndarray  # int64 [n_users]
    item_keys: np.ndarray  # int64 [n_items]

    def __len__(self) -> int:
        return int(self.user.shape[0])


class Popularity:
    """Counts of each item so far; the score of every user is the item's count."""

    name = "popularity"

    def __init__(self) -> None:
        self.counts = np.zeros(0, np.float64)

    def score(self, users: np.ndarray, n_items: int, stream: Stream | None = None) -> np.ndarray:
        c = self.counts[:n_items]
        return np.broadcast_to(c, (len(users), n_items))

    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        items = stream.item[lo:hi]
        need = int(items.max()) + 1 if items.size else 0
        if need > self.counts.size:
            self.counts = np.concatenate([self.counts, np.zeros(need - self.counts.size)])
        np.add.at(self.counts, items, 1.0)

    def retrain(self, stream: Stream, end: int, period: int) -> None:
        return None


class RetrainCache:
    """The latest from-scratch batch factors, shared by the models that need the same retrain."""

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.value: tuple[SideFactors, SideFactors] | None = None

    def get(self, key: tuple, build: Any) -> tuple[SideFactors, SideFactors]:
        if self.key != key:
            self.key, self.value = key, build()
        assert self.value is not None
        return copy.deepcopy(self.value)


def _train(users: SideFactors, items: SideFactors, stream: Stream, idx: np.ndarray | slice, p: EvalParams,
           lr: float, epochs: int, batch_id: int, shuffle_seed: int | None = None) -> None:
    u, i = stream.user[idx], stream.item[idx]
    ts, seq = stream.ts[idx], stream.seq[idx]
    if shuffle_seed is not None:  # train_epochs sorts by (ts, seq): equal ts + permuted seq = shuffled order
        ts = np.zeros_like(ts)
        seq = np.random.default_rng(shuffle_seed).permutation(len(seq)).astype(np.int64)
    train_epochs(users, items, stream.user_keys[u], stream.item_keys[i], stream.user_ids[u], stream.item_ids[i],
                 np.ones(len(u), np.float32), ts, seq, p.kernel(lr), d=p.d, epochs=epochs,
                 schedule=Constant(lr), strata_order="rotation", seed=p.seed, batch_id=batch_id,
                 init_scale=p.init_scale, rank=p.rank, threads=1 if len(u) < 20_000 else 2)


class FactorModel:
    """Implicit MF trained with :func:`dsgd.engines.local.train_epochs`: online, weekly batch or both.

    Parameters
    ----------
    kind : str
        ``"online"`` (one ``train_epochs`` call per micro-batch), ``"batch"`` (retrained from scratch on
        the whole history at each period boundary, frozen in between), ``"batch+online:warm-start"``
        (the batch epochs continue from the online factors, then online updates) or
        ``"batch+online:replace"`` (the from-scratch batch factors replace the online ones, then
        online updates).
    params : EvalParams
    popularity : Popularity
        The live counts used for cold users.
    cache : RetrainCache, optional
        Shares the from-scratch retrain between ``batch`` and ``batch+online:replace``.
    """

    def __init__(self, kind: str, params: EvalParams, popularity: Popularity,
                 cache: RetrainCache | None = None) -> None:
        if kind not in MODEL_KINDS[1:]:
            raise ValueError(f"not a factor model: {kind!r}")
        self.name = kind
        self.p = params
        self.pop = popularity
        self.cache = cache or RetrainCache()
        self.users = SideFactors.empty(params.rank)
        self.items = SideFactors.empty(params.rank)
        self._item_rows = np.zeros(0, np.int64)
        self._item_state: tuple[int, int] = (-1, -1)
        self.online = kind != "batch"
        self.batch = kind != "online"

    # ---- scoring
    def _rows(self, stream_keys: np.ndarray, n_items: int) -> np.ndarray:
        state = (n_items, len(self.items))
        if state != self._item_state:
            self._item_rows = self.items.index_of(stream_keys[:n_items])
            self._item_state = state
        return self._item_rows

    def score(self, users: np.ndarray, n_items: int, stream: Stream) -> np.ndarray:
        rows_i = self._rows(stream.item_keys, n_items)
        rows_u = self.users.index_of(stream.user_keys[users])
        out = np.empty((len(users), n_items), np.float32)
        warm = rows_u >= 0
        if warm.any():
            known = rows_i >= 0
            v = np.zeros((n_items, self.p.rank), np.float32)
            v[known] = self.items.vec[rows_i[known]]
            out[warm] = self.users.vec[rows_u[warm]] @ v.T
            out[np.ix_(warm, ~known)] = -np.inf
        if (~warm).any():
            out[~warm] = self.pop.counts[:n_items].astype(np.float32)
        return out

    # ---- learning
    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        if self.online and hi > lo and self.p.epochs > 0:
            _train(self.users, self.items, stream, slice(lo, hi), self.p, self.p.lr, self.p.epochs, batch_id)

    def _from_scratch(self, stream: Stream, end: int, period: int) -> tuple[SideFactors, SideFactors]:
        u, i = SideFactors.empty(self.p.rank), SideFactors.empty(self.p.rank)
        shuffle = None if self.p.batch_order == "time" else self.p.seed * 1_000_003 + period
        _train(u, i, stream, slice(0, end), self.p, self.p.batch_lr, self.p.batch_epochs,
               1_000_000_000 + period, shuffle)
        return u, i

    def retrain(self, stream: Stream, end: int, period: int) -> None:
        """Period boundary: ``end`` events of history are available."""
        if not self.batch or end == 0:
            return
        if self.name == "batch+online:warm-start":
            shuffle = None if self.p.batch_order == "time" else self.p.seed * 1_000_003 + period
            _train(self.users, self.items, stream, slice(0, end), self.p, self.p.batch_lr, self.p.batch_epochs,
                   1_000_000_000 + period, shuffle)
        else:
            key = (period, end, self.p)
            self.users, self.items = self.cache.get(key, lambda: self._from_scratch(stream, end, period))
        self._item_state = (-1, -1)


def build_models(names: list[str], params: EvalParams) -> tuple[Popularity, list[Any]]:
    """The live popularity counts (always kept, for the cold-user fallback) and the named models."""
    pop = Popularity()
    cache = RetrainCache()
    models: list[Any] = [pop if n == "popularity" else FactorModel(n, params, pop, cache) for n in names]
    return pop, models
