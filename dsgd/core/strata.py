"""DSGD strata: d interchangeable sets of d blocks that share no user block and no item block."""

from __future__ import annotations

import numpy as np

from dsgd.core.hashing import SplitMix64, mix_seed

STRATA_ORDERS = ("rotation", "permutation")


def _permutation(d: int, rng: SplitMix64) -> np.ndarray:
    """Fisher-Yates shuffle of ``range(d)`` driven by a SplitMix64 stream (same on every platform)."""
    perm = list(range(d))
    for k in range(d - 1, 0, -1):
        j = rng.next() % (k + 1)
        perm[k], perm[j] = perm[j], perm[k]
    return np.array(perm, dtype=np.int32)


def strata_schedule(d: int, order: str = "rotation", seed: int = 0, epoch: int = 0) -> list[np.ndarray]:
    """The d strata of one epoch, in the order they are to be run.

    Stratum ``s`` is an int32 array ``item_block_of_user_block``: user block ``b`` is paired with item
    block ``stratum[b]``. Over the d strata every (user block, item block) pair occurs exactly once.

    Parameters
    ----------
    d : int
        Blocks per side.
    order : str
        Supported values: ``"rotation"`` (stratum ``s`` pairs ``b`` with ``(b + s) % d``; ``seed`` and
        ``epoch`` are ignored) and ``"permutation"`` (stratum pairs ``b`` with ``pi[(b + s) % d]`` for a
        permutation ``pi`` of the item blocks, and the strata are run in a permuted order; both
        permutations derive from ``(seed, epoch)`` via SplitMix64).
    """
    if d < 1:
        raise ValueError(f"d must be >= 1, got {d}")
    if order not in STRATA_ORDERS:
        raise ValueError(f"order must be one of {STRATA_ORDERS}, got {order!r}")
    b = np.arange(d, dtype=np.int32)
    if order == "rotation":
        return [((b + s) % d).astype(np.int32) for s in range(d)]
    rng = SplitMix64(mix_seed(seed, epoch, 0x57A7A))
    pi = _permutation(d, rng)
    run_order = _permutation(d, rng)
    return [pi[(b + s) % d] for s in run_order]


def stratum_blocks(stratum: np.ndarray) -> list[tuple[int, int]]:
    """``[(user_block, item_block), ...]`` of one stratum."""
    return [(int(ub), int(ib)) for ub, ib in enumerate(stratum)]
