"""The SGD stand-in models (``online``, ``batch``, ``batch+online:*``): every micro-batch and every weekly
retrain is the streaming trainer's DSGD step."""

from __future__ import annotations

import numpy as np

from dsgd.core.schedules import Constant
from dsgd.evaluation.dense import DenseModel, dsgd_step
from dsgd.evaluation.fit_cache import FitCache
from dsgd.evaluation.params import SGD_KINDS, EvalParams
from dsgd.evaluation.serving import FactorSet, _with_fallback
from dsgd.evaluation.stream import Popularity, Stream


class FactorModel:
    """Implicit MF trained with the streaming trainer's DSGD step: online, weekly batch or both.

    Parameters
    ----------
    kind : str
        ``"online"`` (one DSGD step per micro-batch), ``"batch"`` (retrained from scratch on the whole
        history at each period boundary, frozen in between), ``"batch+online:warm-start"`` (the batch
        epochs continue from the online factors, then online updates) or ``"batch+online:replace"``
        (the from-scratch batch factors replace the online ones, then online updates).
    params : EvalParams
    popularity : Popularity
        The live counts used for cold users.
    cache : FitCache, optional
        Shares the from-scratch retrain between ``batch`` and ``batch+online:replace`` (and runs).
    """

    def __init__(self, kind: str, params: EvalParams, popularity: Popularity, stream: Stream,
                 cache: FitCache | None = None) -> None:
        if kind not in SGD_KINDS:
            raise ValueError(f"not an SGD factor model: {kind!r}")
        self.name = kind
        self.p = params
        self.pop = popularity
        self.stream = stream
        self.cache = cache or FitCache()
        self.online = kind != "batch"
        self.batch = kind != "online"
        self.set = FactorSet(self._new(), params.foldin(), frozen=not self.online, new_user=params.foldin_new_user,
                             new_user_min=params.foldin_new_user_min)
        self.kp = params.kernel(params.lr)
        self.schedule = Constant(params.lr)
        self.set.use_bias = params.use_bias

    def _new(self) -> DenseModel:
        return DenseModel(self.stream, self.p.rank, self.p.seed, self.p.init_scale, self.p.d)

    def score(self, users: np.ndarray, n_known: int, stream: Stream | None = None) -> np.ndarray:
        vecs, warm = self.set.user_rows(users)
        return _with_fallback(self.set.scores(vecs, n_known), warm, self.pop, n_known)

    def score_foldin(self, stream: Stream, lo: int, c: int, ce: int, n_known: int) -> np.ndarray:
        vecs, warm = self.set.foldin_rows(stream, lo, c, ce, n_known)
        return _with_fallback(self.set.scores(vecs, n_known), warm, self.pop, n_known)

    def update(self, stream: Stream, lo: int, hi: int, batch_id: int) -> None:
        if self.online and hi > lo and self.p.epochs > 0:
            dsgd_step(self.set.m, slice(lo, hi), self.kp, epochs=self.p.epochs, schedule=self.schedule,
                      strata_order="rotation", batch_id=batch_id)

    def _history_order(self, end: int, period: int) -> np.ndarray | None:
        if self.p.batch_order == "time":
            return None
        # train_epochs sorts by (ts, seq): equal ts + a permuted seq = the permutation's order
        perm = np.random.default_rng(self.p.seed * 1_000_003 + period).permutation(end)
        return np.argsort(perm, kind="stable")

    def _from_scratch(self, end: int, period: int) -> DenseModel:
        m = self._new()
        dsgd_step(m, slice(0, end), self.p.kernel(self.p.batch_lr), epochs=self.p.batch_epochs,
                  schedule=Constant(self.p.batch_lr), strata_order="rotation", batch_id=1_000_000_000 + period,
                  order=self._history_order(end, period))
        return m

    def retrain(self, stream: Stream, end: int, period: int, as_of_ms: int) -> None:
        """Period boundary: ``end`` events of history are available."""
        if not self.batch or end == 0:
            return
        if self.name == "batch+online:warm-start":
            dsgd_step(self.set.m, slice(0, end), self.p.kernel(self.p.batch_lr), epochs=self.p.batch_epochs,
                      schedule=Constant(self.p.batch_lr), strata_order="rotation",
                      batch_id=1_000_000_000 + period, order=self._history_order(end, period))
        else:
            key = ("sgd-batch", stream.fingerprint(end), self.p.rank, self.p.seed, self.p.init_scale, self.p.d,
                   self.p.reg, self.p.negatives, self.p.batch_lr, self.p.batch_epochs, self.p.batch_order, period)
            self.set.m = self.cache.get_model(key, stream, lambda: self._from_scratch(end, period))
        self.set.m.version += 1
        self.set.cut = end
