"""How a factor model is scored at request time: plain user vectors or fold-in (:mod:`dsgd.core.foldin`),
including ALS's own user solve for the snapshot side, with the popularity fallback for cold users."""

from __future__ import annotations

from typing import Any

import numpy as np
from numba import njit

from dsgd.core.foldin import FoldInParams, fold_in_many, item_gram
from dsgd.evaluation.dense import DenseModel
from dsgd.evaluation.stream import Popularity, Stream


# ---- scoring ------------------------------------------------------------------------------------------
@njit(cache=True, nogil=True, fastmath=True)
def _dot_rows(vecs, Vt, known, out):
    """``out = vecs @ Vt`` (``Vt``: [rank, n] item factors transposed, SIMD over items), ``-inf`` where
    the item is not known."""
    k = vecs.shape[1]
    n = out.shape[1]
    for r in range(vecs.shape[0]):
        for j in range(n):
            out[r, j] = 0.0
        for f in range(k):
            x = vecs[r, f]
            for j in range(n):
                out[r, j] += x * Vt[f, j]
        for j in range(n):
            if not known[j]:
                out[r, j] = -np.inf


class FactorSet:
    """A dense model plus how it is scored and folded in.

    ``frozen``: not updated per micro-batch (its fold-in window starts at the retrain's cut-off);
    ``als``: an ALS snapshot (fold-in = ALS's user solve over the user's whole history);
    ``new_user``: the fold-in start of a user the model does not know: ``"zeros"``, ``"mean"`` (the
    mean known user vector) or ``"popularity"`` (no fold-in: the popularity fallback until the model
    has trained on the user).
    """

    def __init__(self, model: DenseModel, foldin: FoldInParams, *, frozen: bool = False,
                 als: AlsFoldIn | None = None, new_user: str = "zeros", new_user_min: int = 1) -> None:
        self.m = model
        self.foldin = foldin
        self.frozen = frozen
        self.als = als
        self.cut = 0  # events before this index are in the model (frozen models)
        self.new_user = new_user
        self.new_user_min = new_user_min
        self.use_bias = False
        self._cache: tuple[tuple[int, int], Any] | None = None

    def mean_user(self) -> np.ndarray:
        """The mean vector of the users the model knows (the fold-in start of a new user, ``new_user="mean"``)."""
        if getattr(self, "_mean_key", None) != self.m.version:
            self._mean_key = self.m.version
            k = self.m.users.known
            self._mean = self.m.users.vec[k].mean(axis=0) if k.any() else np.zeros(self.m.rank, np.float32)
        return self._mean

    def item_view(self, n_known: int) -> tuple[np.ndarray, np.ndarray]:
        """``(known mask, known rows)`` of the first n_known items (unknown rows hold zero vectors)."""
        key = (self.m.version, n_known)
        if self._cache is None or self._cache[0] != key:
            known = self.m.items.known[:n_known]
            self._cache = (key, (known, np.flatnonzero(known)))
        return self._cache[1]

    def gram(self, n_known: int) -> np.ndarray:
        key = ("gram", self.m.version, n_known)
        if getattr(self, "_gkey", None) != key:
            self._gkey = key
            self._g = item_gram(self.m.items.vec, self.item_view(n_known)[1])
        return self._g

    def scores(self, vecs: np.ndarray, n_known: int) -> np.ndarray:
        """``vecs @ V[:n_known].T`` with ``-inf`` for items the model does not have (numba: no BLAS
        threads, which on a loaded 2-core machine made a [100 x 10] @ [10 x 789] product take 9 ms)."""
        known = self.item_view(n_known)[0]
        key = (self.m.version, n_known)
        if getattr(self, "_vt_key", None) != key:
            self._vt_key = key
            self._vt = np.ascontiguousarray(self.m.items.vec[:n_known].T)
        out = np.empty((vecs.shape[0], n_known), np.float32)
        _dot_rows(np.ascontiguousarray(vecs, np.float32), self._vt, known, out)
        if self.use_bias:  # the item bias ranks; the user's bias is the same for every item
            out += self.m.items.bias[:n_known]
        return out

    def user_rows(self, users: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(vectors, warm)``: the users' vectors (zeros where cold: unknown rows are never written)
        and whether the model knows them."""
        return self.m.users.vec[users], self.m.users.known[users]

    def foldin_rows(self, stream: Stream, lo: int, c: int, ce: int, n_known: int) -> tuple[np.ndarray, np.ndarray]:
        """Per event of ``[c, ce)`` (in batch ``[lo, ...)``): the user's vector folded in from their events
        before it that the model has not trained on, and whether the user has a vector at all."""
        users = stream.user[c:ce]
        vecs, warm = self.user_rows(users)
        if self.als is not None:
            return self.als.rows(self, stream, c, ce, n_known, vecs, warm)
        known, known_rows = self.item_view(n_known)
        ptr, pos, nth = stream.user_positions()
        fptr, fitems, _ = _gather_pending(stream.user, stream.item, stream.ts, ptr, pos, nth, c, ce,
                                          self.cut if self.frozen else lo, known, 0, 0.0)
        has = np.diff(fptr) > 0
        if has.any():
            G = self.gram(n_known) if self.foldin.method == "ls" else None
            start, has_user = vecs, warm
            if self.new_user == "mean" and (has & ~warm).any():
                start = vecs.copy()
                start[~warm] = self.mean_user()
                has_user = np.ones_like(warm)
            elif self.new_user == "popularity":
                has = has & warm
            if self.new_user_min > 1:  # a new user needs this many events to leave the popularity fallback
                has = has & (warm | (np.diff(fptr) >= self.new_user_min))
            v, _ = fold_in_many(self.m.items.vec, self.m.items.bias if self.use_bias else None, start, fptr, fitems,
                                params=self.foldin, has_user=has_user, user_bias=self.m.users.bias[users],
                                candidates=known_rows, gram=G)
            vecs[has] = v[has]
            warm = warm | has
        return vecs, warm


@njit(cache=True, nogil=True)
def _gather_pending(user, item, ts, ptr, pos, nth, c, ce, start, known, window_ms, half_life_days):
    """For each event ``e`` of ``[c, ce)``: its user's events in ``[start, e)`` (and, with ``window_ms``,
    newer than ``ts[e] - window_ms``) whose item is known, oldest first, as ``(ptr, items, weights)``;
    weights ``0.5 ** (age / half_life)`` with ``half_life_days`` (else 1)."""
    n_known = known.shape[0]
    total = 0
    for e in range(c, ce):
        total += nth[e]  # an upper bound
    items = np.empty(total, np.int64)
    w = np.empty(total, np.float32)
    out_ptr = np.zeros(ce - c + 1, np.int64)
    m = 0
    for e in range(c, ce):
        u = user[e]
        base = ptr[u]
        first = base + np.searchsorted(pos[base:base + nth[e]], start)
        if window_ms > 0:  # ts is ascending with the position
            first = max(first, base + np.searchsorted(ts[pos[base:base + nth[e]]], ts[e] - window_ms, "right"))
        for q in range(first, base + nth[e]):
            p = pos[q]
            j = item[p]
            if j < n_known and known[j]:
                items[m] = j
                if half_life_days > 0:
                    w[m] = np.float32(0.5 ** ((ts[e] - ts[p]) / (half_life_days * 86_400_000.0)))
                else:
                    w[m] = np.float32(1.0)
                m += 1
        out_ptr[e - c + 1] = m
    return out_ptr, items[:m], w[:m]


class AlsFoldIn:
    """ALS's own user solve against the snapshot's items, over the user's history before the event
    (within ``window_days``, weighted by ``half_life_days`` from the event's time, like the fit)."""

    def __init__(self, rc: Any, new_user_min: int = 1) -> None:
        self.params = FoldInParams(method="ls", implicit=True, reg=rc.als_reg, alpha=rc.als_alpha,
                                   reg_per_item=True, prior=0.0)
        self.window_ms = int(rc.window_days * 86_400_000)
        self.half_life = float(rc.half_life_days)
        self.new_user_min = new_user_min

    def rows(self, fs: FactorSet, stream: Stream, c: int, ce: int, n_known: int, vecs: np.ndarray,
             warm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        known, known_rows = fs.item_view(n_known)
        ptr, pos, nth = stream.user_positions()
        fptr, fitems, w = _gather_pending(stream.user, stream.item, stream.ts, ptr, pos, nth, c, ce, 0, known,
                                          self.window_ms, self.half_life)
        n_ev = np.diff(fptr)
        has = (n_ev > 0) & (warm | (n_ev >= self.new_user_min))
        if has.any():
            v, _ = fold_in_many(fs.m.items.vec, None, None, fptr, fitems, w, params=self.params,
                                candidates=known_rows, gram=fs.gram(n_known))
            vecs[has] = v[has]
            warm = warm | has
        return vecs, warm


def _with_fallback(scores: np.ndarray, warm: np.ndarray, pop: Popularity, n_known: int) -> np.ndarray:
    if (~warm).any():
        scores[~warm] = pop.counts[:n_known].astype(np.float32)
    return scores
