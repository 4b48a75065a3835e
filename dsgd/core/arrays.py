"""Small array helpers on the hot path.

``np.unique`` on 64-bit integers became a hash-based algorithm in numpy 2.3 that is tens of times
slower than sorting for the id keys this engine uses (bench/RESULTS.md, "np.unique"); these are the
sort-based equivalents.
"""

from __future__ import annotations

import numpy as np


def unique(a: np.ndarray) -> np.ndarray:
    """The sorted distinct values of ``a`` (as ``np.unique(a)``)."""
    s = np.sort(np.asarray(a), kind="stable")
    if s.size == 0:
        return s
    return s[np.concatenate(([True], s[1:] != s[:-1]))]


def first_positions(a: np.ndarray) -> np.ndarray:
    """Position of the first occurrence of each distinct value of ``a``, in order of first appearance
    (``np.sort(np.unique(a, return_index=True)[1])``)."""
    a = np.asarray(a)
    if a.size == 0:
        return np.zeros(0, np.int64)
    order = np.argsort(a, kind="stable")
    s = a[order]
    return np.sort(order[np.concatenate(([True], s[1:] != s[:-1]))]).astype(np.int64)
