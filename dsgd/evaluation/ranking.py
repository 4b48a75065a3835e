"""Ranks of the targets in the three seen-item exclusion modes, with each user's seen items as a bitset."""

from __future__ import annotations

import numpy as np
from numba import njit

from dsgd.core.metrics import EXCLUSION_MODES


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
