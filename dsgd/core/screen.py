"""An exact top-K shortcut for big item matrices: an int8 copy of the item factors screens the items,
the float32 factors score only the few that can be among the best.

Scoring one user reads the whole float32 item matrix (256 MB at 10^6 items, rank 64): memory-bound.
The int8 copy is a quarter of it. Each item row ``v`` is stored as ``codes * scale`` with ``scale =
max|v| / 127``, so every component is off by at most ``scale / 2`` and the screened score
``a = scale * (codes . u) + b_i + c`` (``c``: the user's bias plus ``mu``) is within

    ``e = scale * |u|_1 * (1/2 + SUM_SLACK + REL_SLACK) + REL_SLACK * (|scale * codes . u| + |b_i| + |b_u| + |mu|)
    + ABS_SLACK``

of the float32 score :func:`dsgd.core.scoring.score_matrix` computes (the slacks bound the float32
rounding of both products and of the bias additions). With ``lo = a - e`` and ``hi = a + e``: any ``t`` at most the ``kk``-th largest
``lo`` leaves every one of the ``kk`` best items with ``hi >= t`` (``kk`` items score at least ``t``,
so an item with ``hi < t`` has ``kk`` better ones). The caller scores those candidates exactly; asking
for ``k + len(exclude)`` keeps the ``k`` best of the items not excluded among them. The candidates'
product is a smaller one than the full product, and BLAS may round its last float32 bit differently: the
scores agree to float32 rounding and items tied within it may swap (as in a coalesced batch).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numba import njit

from dsgd.core.scoring import block_threshold

#: Ranks the slack below covers.
MAX_RANK = 1024
#: float32 rounding of a rank-r dot product is at most r * 2^-24 of the sum of |terms|, and the terms
#: sum to at most 127 * scale * |u|_1 in both the screened and the exact product: twice that for
#: MAX_RANK, doubled again for room (rint of a rounded quotient, |u|_1 and e rounded themselves).
SUM_SLACK = 4 * MAX_RANK * 127 * 2.0**-24
#: Relative rounding of the bias additions and of the float32 results (a few ulps).
REL_SLACK = 8 * 2.0**-24
#: Absolute rounding of products that underflow float32's normal range.
ABS_SLACK = MAX_RANK * 2.0**-126


@njit(cache=True, nogil=True, fastmath={"reassoc", "nsz", "contract"})
def _bounds(codes, scale, bias, u, c, c_abs, l1, lo, hi):  # pragma: no cover - compiled
    """lo, hi of every item; returns how many of them are not finite."""
    n, r = codes.shape
    half = np.float32(0.5 + SUM_SLACK + REL_SLACK)
    rel = np.float32(REL_SLACK)
    floor = np.float32(ABS_SLACK)
    bad = 0
    for i in range(n):
        acc = np.float32(0.0)
        for j in range(r):
            acc += np.float32(codes[i, j]) * u[j]
        dot = acc * scale[i]
        a = dot + bias[i] + c
        e = scale[i] * l1 * half + rel * (abs(dot) + abs(bias[i]) + c_abs) + floor
        lo[i] = a - e
        hi[i] = a + e
        if not (np.isfinite(lo[i]) and np.isfinite(hi[i])):
            bad += 1
    return bad


@dataclass(frozen=True)
class Int8Items:
    """The int8 copy of one model's item factors: ``vec[i] ~ codes[i] * scale[i]``."""

    codes: np.ndarray  # int8 [n, rank]
    scale: np.ndarray  # float32 [n]
    bias: np.ndarray  # float32 [n]
    tiny: bool = False  # a nonzero row below float32's normal range: its scale cannot bound it (never screened)

    @classmethod
    def of(cls, vec: np.ndarray, bias: np.ndarray) -> Int8Items:
        vec = np.asarray(vec, np.float32)
        peak = np.abs(vec).max(axis=1) if len(vec) else np.zeros(0, np.float32)
        scale = (peak / np.float32(127.0)).astype(np.float32)
        safe = np.where(scale > 0, scale, np.float32(1.0))
        codes = np.clip(np.rint(vec / safe[:, None]), -127, 127).astype(np.int8)
        tiny = bool(((peak > 0) & (peak < 127 * np.finfo(np.float32).tiny)).any())
        return cls(codes, scale, np.ascontiguousarray(bias, np.float32), tiny)

    def with_rows(self, vec: np.ndarray, bias: np.ndarray, rows: np.ndarray) -> Int8Items:
        """This copy for factors that differ from its own only in ``rows`` (changed, or appended after them)."""
        n = len(vec)
        part = Int8Items.of(vec[rows], bias[rows])
        codes = np.concatenate([self.codes, np.zeros((n - len(self.codes), vec.shape[1]), np.int8)])
        scale = np.concatenate([self.scale, np.zeros(n - len(self.scale), np.float32)])
        codes[rows], scale[rows] = part.codes, part.scale
        # a tiny row stays counted until a full reload (conservative: the full product decides)
        return Int8Items(codes, scale, np.ascontiguousarray(bias, np.float32), self.tiny or part.tiny)

    def candidates(self, u: np.ndarray, c_parts: tuple[float, ...], kk: int) -> np.ndarray | None:
        """Sorted rows holding every one of the ``kk`` best items for the user vector ``u`` (float32
        score ``u . v_i + b_i + sum(c_parts)``: the user's bias and ``mu``); None when the screen cannot
        tell (too few items for its threshold, a tiny row, a bound that is not finite)."""
        n = len(self.codes)
        if kk < 1 or kk >= n or self.codes.shape[1] > MAX_RANK or self.tiny:
            return None
        u = np.ascontiguousarray(u, np.float32)
        l1 = np.float32(np.abs(u.astype(np.float64)).sum() * (1 + 2.0**-20))
        c, c_abs = np.float32(sum(c_parts)), np.float32(sum(abs(x) for x in c_parts))
        lo, hi = np.empty(n, np.float32), np.empty(n, np.float32)
        if _bounds(self.codes, self.scale, self.bias, u, c, c_abs, l1, lo, hi):
            return None  # NaN or overflow: the threshold would not bound the kk-th best (the full product decides)
        t = block_threshold(lo, kk)
        if t is None:
            return None
        rows = np.flatnonzero(hi >= t)
        return rows if rows.size >= kk else None
