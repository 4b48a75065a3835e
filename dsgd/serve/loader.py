"""The current model read from the Delta ``factors`` table (and the score-blend snapshot), no JVM.

The current model is the latest row version per ``(side, id)`` by ``model_seq`` (README "How factors is
written"; :func:`dsgd.store.factor_store.latest_rows` is the Spark form). Here: one scan per side, then
``np.lexsort((-model_seq, key))`` and the first row of each key run; the ``key`` column is XXH64 of the
id (the tables' contract), checked: two different ids under one key fail the load. The kept rows come
out sorted by key, which is also the lookup index of a request's id.

A new table version is loaded **incrementally** when its commits only appended rows (the stream's
batches): the appended row versions are read with ``load_cdf`` and merged by the same rule; a rewrite
(compaction, rollback, a retrain's overwrite) shows deleted rows and is loaded in full.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from dsgd.core import columns as C
from dsgd.core.factors import SideFactors
from dsgd.core.hashing import id_key
from dsgd.serve.delta_read import Table

FACTOR_COLUMNS = [C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT, C.MODEL_SEQ]
SNAPSHOT_COLUMNS = [C.ID, C.KEY, C.VEC, C.BIAS, C.COUNT]


class FullLoadNeeded(Exception):
    """The new versions are not plain appends (or their changes cannot be read): load in full."""


@dataclass
class SideRows:
    """One side of the current model (rows sorted by key) and each row's ``model_seq``."""

    factors: SideFactors
    seq: np.ndarray  # int64 [n]
    changed: np.ndarray | None = None  # after :func:`merge`: rows updated or appended (None: a full load)


@dataclass
class LoadedFactors:
    """The factors table as of ``version``: metadata, users, items."""

    version: int
    meta: dict
    meta_seq: int
    users: SideRows
    items: SideRows
    base_version: int | None = None  # incremental: the version the rows' ``changed`` are relative to

    @property
    def rank(self) -> int:
        return int(self.meta["rank"])


def _numbers(col: pa.ChunkedArray | pa.Array, dtype: type) -> np.ndarray:
    return np.asarray(col.fill_null(0).to_numpy(zero_copy_only=False), dtype=dtype)


def latest_per_key(table: pa.Table, rank: int) -> SideRows:
    """The latest row version per key of factor rows (id, key, vec, bias, count, model_seq), in table order
    (sequential copies; lookups go through :meth:`SideFactors.index_of`)."""
    if table.num_rows == 0:
        return SideRows(SideFactors.empty(rank), np.zeros(0, np.int64))
    key = _numbers(table.column(C.KEY), np.int64)
    seq = (np.asarray(table.column(C.MODEL_SEQ).fill_null(-1).to_numpy(), np.int64)
           if C.MODEL_SEQ in table.column_names else np.full(table.num_rows, -1, np.int64))
    order = np.lexsort((-seq, key))
    k = key[order]
    first = np.ones(len(k), bool)
    first[1:] = k[1:] != k[:-1]
    all_ids = table.column(C.ID).to_numpy()  # object array of str (10x faster than to_pylist)
    if not first.all():  # superseded versions: their ids must be their key's kept id
        owner = order[first][np.cumsum(first) - 1][~first]
        if not np.array_equal(all_ids[order[~first]], all_ids[owner]):
            raise ValueError("two different ids share one key in the factors table: its key column must be "
                             "xxhash64 of the id")
    keep = np.sort(order[first])
    ids, keys = all_ids[keep], key[keep]
    sample = np.linspace(0, len(keep) - 1, min(len(keep), 1024)).astype(np.int64)
    if not np.array_equal(id_key(ids[sample]), keys[sample]):  # the key -> row lookup trusts the table's keys
        raise ValueError("the factors table's key column is not xxhash64 of the id")
    f = SideFactors(keys, ids, _kept_vectors(table.column(C.VEC), keep, rank),
                    _numbers(table.column(C.BIAS), np.float32)[keep], _numbers(table.column(C.COUNT), np.int64)[keep])
    return SideRows(f, seq[keep])


def _kept_vectors(col: pa.ChunkedArray, keep: np.ndarray, rank: int) -> np.ndarray:
    """float32 [len(keep), rank] of the kept rows (``keep`` ascending), chunk by chunk, without combining
    the chunks; superseded versions are not checked, so a bad row a later version replaced does not fail
    the load."""
    out = np.empty((len(keep), rank), np.float32)
    chunks = col.chunks if isinstance(col, pa.ChunkedArray) else [col]
    start, lo = 0, 0
    for chunk in chunks:
        end = start + len(chunk)
        hi = int(np.searchsorted(keep, end))
        sel = keep[lo:hi] - start
        if len(sel):
            if chunk.null_count and chunk.is_null().to_numpy(zero_copy_only=False)[sel].any():
                raise ValueError("a current factor vector is null")
            offs = np.asarray(chunk.offsets.to_numpy(), np.int64)
            begin = offs[sel]
            bad = int(np.count_nonzero(offs[sel + 1] - begin != rank))
            if bad:
                raise ValueError(f"{bad} current factor vector(s) do not have the model's rank {rank}")
            values = np.asarray(chunk.values.to_numpy(zero_copy_only=False), np.float32)
            if np.array_equal(offs, offs[0] + rank * np.arange(len(offs))):  # every row of the chunk has the rank
                mat = values[offs[0]:offs[-1]].reshape(len(chunk), rank)
                if len(sel) == len(chunk):  # the whole chunk is current: one block copy
                    out[lo:hi] = mat
                else:
                    np.take(mat, sel, axis=0, out=out[lo:hi])
            else:
                out[lo:hi] = values[begin[:, None] + np.arange(rank)]
        start, lo = end, hi
    return out


def merge(old: SideRows, new: SideRows) -> SideRows:
    """``old`` updated by ``new`` (its latest row per key): a key's newer version replaces its row in
    place, new keys are appended, so the rows of ``old`` keep their positions (the served model's derived
    arrays can then be updated instead of recomputed). The same rows as a full load, in another order."""
    a, b = old.factors, new.factors
    pos = a.index_of(b.keys) if len(b) else np.zeros(0, np.int64)
    upd = np.flatnonzero((pos >= 0) & (new.seq >= old.seq[np.maximum(pos, 0)]))
    add = np.flatnonzero(pos < 0)
    n = len(a)
    f = SideFactors(np.concatenate([a.keys, b.keys[add]]), np.concatenate([a.ids, b.ids[add]]),
                    np.concatenate([a.vec, b.vec[add]]), np.concatenate([a.bias, b.bias[add]]),
                    np.concatenate([a.count, b.count[add]]))
    seq = np.concatenate([old.seq, new.seq[add]])
    rows = pos[upd]
    f.ids[rows], f.vec[rows], f.bias[rows], f.count[rows], seq[rows] = (b.ids[upd], b.vec[upd], b.bias[upd],
                                                                       b.count[upd], new.seq[upd])
    return SideRows(f, seq, np.concatenate([rows, n + np.arange(len(add))]).astype(np.int64))


def _meta_of(rows: pa.Table) -> tuple[dict, int] | None:
    """The metadata row with the highest model_seq among ``rows`` (side 'm'), None if there is none."""
    if rows.num_rows == 0:
        return None
    seq = np.asarray(rows.column(C.MODEL_SEQ).fill_null(-1).to_numpy(), np.int64) \
        if C.MODEL_SEQ in rows.column_names else np.full(rows.num_rows, -1, np.int64)
    j = int(np.argmax(seq))
    return json.loads(rows.column("meta")[j].as_py()), int(seq[j])


def load_full(table: Table, version: int) -> LoadedFactors:
    """The model as of ``version``: every row version read, the latest per key kept."""
    meta = _meta_of(table.scan(version, ["meta", C.MODEL_SEQ], f"{C.SIDE} = '{C.SIDE_META}'"))
    if meta is None:
        raise ValueError(f"factors table {table.uri} version {version} has no metadata row")
    rank = int(meta[0]["rank"])
    sides = {s: latest_per_key(table.scan(version, FACTOR_COLUMNS, f"{C.SIDE} = '{s}'"), rank)
             for s in (C.SIDE_ITEM, C.SIDE_USER)}
    return LoadedFactors(version, meta[0], meta[1], sides[C.SIDE_USER], sides[C.SIDE_ITEM])


def load_incremental(table: Table, prev: LoadedFactors, version: int) -> LoadedFactors:
    """``prev`` plus the row versions appended by the commits after it up to ``version``.

    Raises :class:`FullLoadNeeded` when those commits did more than append (or cannot be read as changes).
    """
    try:
        rows, kinds = table.changes(prev.version, version, [C.SIDE, *FACTOR_COLUMNS, "meta"])
    except Exception as exc:  # e.g. files of the range already vacuumed
        raise FullLoadNeeded(f"changes after version {prev.version} unreadable: {exc}") from exc
    if kinds - {"insert"}:
        raise FullLoadNeeded(f"versions {prev.version + 1}..{version} rewrote rows ({', '.join(sorted(kinds))})")
    side = rows.column(C.SIDE)
    meta = _meta_of(rows.filter(pc.equal(side, C.SIDE_META)))
    meta, meta_seq = meta if meta is not None and meta[1] >= prev.meta_seq else (prev.meta, prev.meta_seq)
    if int(meta["rank"]) != prev.rank:
        raise FullLoadNeeded(f"the rank changed from {prev.rank} to {meta['rank']}")
    new = {s: latest_per_key(rows.filter(pc.equal(side, s)), prev.rank) for s in (C.SIDE_USER, C.SIDE_ITEM)}
    for s, part in new.items():  # the lookup trusts the keys: check the new rows' (a full load checks uniqueness)
        if len(part.factors) and not np.array_equal(id_key(part.factors.ids), part.factors.keys):
            raise ValueError(f"side {s!r}: rows whose key is not xxhash64 of the id in versions after {prev.version}")
    users, items = merge(prev.users, new[C.SIDE_USER]), merge(prev.items, new[C.SIDE_ITEM])
    return LoadedFactors(version, meta, meta_seq, users, items, base_version=prev.version)


@dataclass
class Snapshot:
    """The batch snapshot a score-blend model blends in: its users, items and global mean."""

    as_of: int
    users: SideFactors
    items: SideFactors
    mu: float


def load_snapshot(table: Table, as_of: int, rank: int) -> Snapshot:
    """The snapshot with cut-off ``as_of`` from the ``snapshots`` table (one row per side and id)."""
    version = table.latest_version()
    if version is None:
        raise ValueError(f"the model blends snapshot as_of={as_of} but there is no snapshots table at {table.uri}")
    where = f"as_of = {int(as_of)} AND {C.SIDE} = "
    sides = {s: SideFactors.from_arrow(table.scan(version, SNAPSHOT_COLUMNS, where + f"'{s}'"), rank)
             for s in (C.SIDE_USER, C.SIDE_ITEM)}
    meta_rows = table.scan(version, ["meta"], where + f"'{C.SIDE_META}'")
    meta = json.loads(meta_rows.column("meta")[0].as_py()) if meta_rows.num_rows else {}
    if not len(sides[C.SIDE_ITEM]):
        raise ValueError(f"snapshot as_of={as_of} has no item rows in {table.uri}")
    return Snapshot(int(as_of), sides[C.SIDE_USER], sides[C.SIDE_ITEM], float(meta.get("mu", 0.0)))
