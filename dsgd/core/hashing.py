"""Stable hashing: id keys, block assignment, seeded random streams and deterministic initial vectors.

Everything here is a pure function of its inputs, so any process (driver, Spark executor, a replay after
a crash) derives the same keys, blocks, seeds and initial vectors.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence

import numpy as np
import xxhash
from numba import njit

ID_HASH_SEED = 42
MASK64 = (1 << 64) - 1
_GOLDEN = 0x9E3779B97F4A7C15
_M1 = 0xBF58476D1CE4E5B9
_M2 = 0x94D049BB133111EB

GOLDEN_U64 = np.uint64(_GOLDEN)
_M1_U64 = np.uint64(_M1)
_M2_U64 = np.uint64(_M2)
_S30 = np.uint64(30)
_S27 = np.uint64(27)
_S31 = np.uint64(31)
_S11 = np.uint64(11)
INV_2_53 = 1.0 / 9007199254740992.0  # 2**-53: maps the top 53 bits of a uint64 to [0, 1)


def id_key(ids: Sequence[str] | Sequence[int] | np.ndarray | Iterable) -> np.ndarray:
    """XXH64 (seed 42) of each id's utf-8 bytes as signed int64, equal to Spark's ``xxhash64(id)``.

    Integer ids are hashed through ``str(id)``, so ``42`` and ``"42"`` get the same key.
    """
    out = [xxhash.xxh64_intdigest(s if isinstance(s, str) else str(s), seed=ID_HASH_SEED) for s in ids]
    return np.array(out, dtype=np.uint64).view(np.int64)


def block_of(keys: np.ndarray, d: int) -> np.ndarray:
    """Block of each key: non-negative ``keys mod d`` (Python floor-mod, Spark ``pmod(key, d)``)."""
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    return np.mod(np.asarray(keys, dtype=np.int64), np.int64(d)).astype(np.int32)


@njit(cache=True, nogil=True)
def splitmix64(x: np.uint64) -> np.uint64:
    """SplitMix64 finaliser of ``x + golden``: one output of the SplitMix64 generator at state ``x``."""
    z = x + GOLDEN_U64
    z = (z ^ (z >> _S30)) * _M1_U64
    z = (z ^ (z >> _S27)) * _M2_U64
    return z ^ (z >> _S31)


def splitmix64_py(x: int) -> int:
    """Pure-Python :func:`splitmix64` (identical values)."""
    z = (x + _GOLDEN) & MASK64
    z = ((z ^ (z >> 30)) * _M1) & MASK64
    z = ((z ^ (z >> 27)) * _M2) & MASK64
    return z ^ (z >> 31)


def mix_seed(*ints: int) -> int:
    """Combine integers (any sign, any size mod 2**64) into one uint64 seed, order-sensitively."""
    h = 0x5EED
    for x in ints:
        h = splitmix64_py(h ^ (int(x) & MASK64))
    return h


class SplitMix64:
    """Pure-Python SplitMix64 stream: ``next()`` returns ``splitmix64(state)`` then advances by golden."""

    def __init__(self, seed: int) -> None:
        self.state = int(seed) & MASK64

    def next(self) -> int:
        out = splitmix64_py(self.state)
        self.state = (self.state + _GOLDEN) & MASK64
        return out

    def uniform(self) -> float:
        """A float in [0, 1) from the top 53 bits of the next output."""
        return (self.next() >> 11) * INV_2_53


def side_code(side: str) -> int:
    """Stable integer for a side name ("u", "i", ...), mixed into initial-vector seeds."""
    return xxhash.xxh64_intdigest(side.encode("utf-8"), seed=0)


@njit(cache=True, nogil=True)
def _init_vectors(keys: np.ndarray, rank: int, base: np.uint64, scale: float) -> np.ndarray:
    n = keys.shape[0]
    out = np.empty((n, rank), dtype=np.float32)
    for r in range(n):
        h = splitmix64(np.uint64(keys[r]) ^ base)
        for j in range(rank):
            z = splitmix64(h + np.uint64(j))
            u = np.float64(z >> _S11) * INV_2_53
            out[r, j] = np.float32(scale * (2.0 * u - 1.0))
    return out


def init_vectors(keys: np.ndarray, rank: int, seed: int, scale: float, side: str) -> np.ndarray:
    """Deterministic initial vectors, float32 ``[n, rank]``, components in ``[-scale, scale]``.

    Component ``j`` of key ``k`` is ``scale * (2u - 1)`` with ``u = top53(splitmix64(h + j)) / 2**53``
    and ``h = splitmix64(uint64(k) ^ mix_seed(seed, side_code(side)))``: the same key, seed and side
    give the same vector in any process. (Initial biases are 0; they are not produced here.)
    """
    keys = np.ascontiguousarray(keys, dtype=np.int64)
    if rank < 1:
        raise ValueError(f"rank must be >= 1, got {rank}")
    base = np.uint64(mix_seed(seed, side_code(side)))
    return _init_vectors(keys, int(rank), base, float(scale))


def init_vector_py(key: int, rank: int, seed: int, scale: float, side: str) -> list[float]:
    """Pure-Python :func:`init_vectors` for one key (float64 values before the float32 cast)."""
    base = mix_seed(seed, side_code(side))
    h = splitmix64_py((int(key) & MASK64) ^ base)
    return [scale * (2.0 * ((splitmix64_py((h + j) & MASK64) >> 11) * INV_2_53) - 1.0) for j in range(rank)]
