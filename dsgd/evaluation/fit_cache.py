"""Weekly fits (ALS snapshots, SGD batch models) kept in memory and on disk, reused across runs."""

from __future__ import annotations

import hashlib
from collections import OrderedDict
from pathlib import Path
from typing import Any

import numpy as np

from dsgd.evaluation.dense import DenseModel
from dsgd.evaluation.stream import Stream


# ---- fit cache ------------------------------------------------------------------------------------------
class FitCache:
    """Retrain results by key: a few in memory, all on disk under ``folder`` (if given) so that runs over
    the same stream (other micro-batch sizes, validation grids, later sessions) reuse the weekly fits."""

    def __init__(self, folder: str | Path | None = None, memory: int = 4) -> None:
        self.folder = Path(folder) if folder else None
        self.memory = memory
        self._mem: OrderedDict[str, Any] = OrderedDict()

    @staticmethod
    def digest(key: tuple) -> str:
        return hashlib.sha256(repr(key).encode()).hexdigest()[:32]

    def _remember(self, h: str, value: Any) -> Any:
        self._mem[h] = value
        self._mem.move_to_end(h)
        while len(self._mem) > self.memory:
            self._mem.popitem(last=False)
        return value

    def get_arrays(self, key: tuple, build: Any) -> dict[str, np.ndarray]:
        h = self.digest(key)
        if h in self._mem:
            self._mem.move_to_end(h)
            return self._mem[h]
        path = self.folder / f"{h}.npz" if self.folder else None
        if path is not None and path.exists():
            with np.load(path) as z:
                return self._remember(h, {k: z[k] for k in z.files})
        value = build()
        if path is not None:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp.npz")
            np.savez(tmp, **value)
            tmp.replace(path)
        return self._remember(h, value)

    def get_model(self, key: tuple, stream: Stream, build: Any) -> DenseModel:
        """A copy of the cached DenseModel for ``key`` (built on a miss)."""
        def arrays() -> dict[str, np.ndarray]:
            m = build()
            return {"uvec": m.users.vec, "ubias": m.users.bias, "ucount": m.users.count, "uknown": m.users.known,
                    "ivec": m.items.vec, "ibias": m.items.bias, "icount": m.items.count, "iknown": m.items.known,
                    "meta": np.array([m.rank, m.seed, m.d], np.int64), "scale": np.array(m.init_scale)}

        a = self.get_arrays(key, arrays)
        rank, seed, d = (int(x) for x in a["meta"])
        m = DenseModel(stream, rank, seed, float(a["scale"]), d)
        for side, p in ((m.users, "u"), (m.items, "i")):
            side.vec, side.bias = a[f"{p}vec"].copy(), a[f"{p}bias"].copy()
            side.count, side.known = a[f"{p}count"].copy(), a[f"{p}known"].copy()
        m.rebuild_pools()
        return m
