"""Saving a :class:`~dsgd.api.DSGDModel` to a folder and reading it back.

Layout: ``model.json`` (format version, params, mu, engine, history), ``users.parquet`` and
``items.parquet`` (id, vec, bias, count) and ``seen.parquet`` (user, item).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from dsgd.api.inputs import _json_default
from dsgd.core import columns as C
from dsgd.core.factors import list_array, list_matrix

FORMAT_VERSION = 1


def save_model(model: Any, path: str | Path) -> None:
    """Write ``model`` to the folder ``path`` (created; existing files are overwritten)."""
    folder = Path(path)
    folder.mkdir(parents=True, exist_ok=True)
    meta = {"format_version": FORMAT_VERSION, "params": model.params, "mu": model.mu, "engine": model.engine,
            "history": model.history}
    for name, side in (("users", model.users), ("items", model.items)):
        pq.write_table(pa.table({C.ID: pa.array(side.ids.tolist(), pa.string()), C.VEC: list_array(side.vec),
                                 C.BIAS: pa.array(side.bias, pa.float32()), C.COUNT: pa.array(side.count, pa.int64())}),
                       folder / f"{name}.parquet")
    pq.write_table(pa.table({C.USER: pa.array(model.seen[C.USER].tolist(), pa.string()),
                             C.ITEM: pa.array(model.seen[C.ITEM].tolist(), pa.string())}), folder / "seen.parquet")
    (folder / "model.json").write_text(json.dumps(meta, indent=1, default=_json_default))


def load_model(cls: type, path: str | Path) -> Any:
    """Read a model written by :func:`save_model` as an instance of ``cls``."""
    folder = Path(path)
    if not (folder / "model.json").is_file():
        raise FileNotFoundError(f"DSGDModel.load: {folder} holds no model.json (not a saved DSGDModel)")
    meta = json.loads((folder / "model.json").read_text())
    if meta.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"DSGDModel.load: unsupported format_version {meta.get('format_version')!r}")
    rank = int(meta["params"]["rank"])
    sides = []
    for name in ("users", "items"):
        t = pq.read_table(folder / f"{name}.parquet")
        sides.append((np.asarray(t.column(C.ID).to_pylist(), dtype=object), list_matrix(t.column(C.VEC), rank),
                      t.column(C.BIAS).to_numpy().astype(np.float32), t.column(C.COUNT).to_numpy().astype(np.int64)))
    seen = pq.read_table(folder / "seen.parquet").to_pandas().astype(object)
    return cls(params=meta["params"], mu=meta["mu"], engine=meta["engine"], users=sides[0], items=sides[1],
               history=meta["history"], seen=seen)
