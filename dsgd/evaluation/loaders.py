"""Loaders for published rating/listening data sets into the common event schema.

Every loader returns a pandas DataFrame with columns ``user`` (str), ``item`` (str), ``rating``
(float32, NaN when implicit), ``ts`` (int64 epoch ms) and ``seq`` (int64 ``0..n-1``), sorted by ``ts``
(stable: ties keep file order), ``seq`` assigned after sorting. Integer ids (MovieLens, the indexed
Last.fm stream) become ``str(int)``; other ids keep their text (MovieTweetings' IMDb id ``0104257``
keeps its leading zero).

Shared options (keyword-only, same for every loader):

``implicit_threshold``
    keep only ratings ``>= threshold`` and set ``rating`` to NaN (implicit feedback). A no-op on data
    that is implicit already (Last.fm).
``first_only``
    keep only the first interaction (in time) of each ``(user, item)`` pair.
``min_item_count``
    drop items with fewer events, in one pass (users are not re-filtered afterwards).
``limit``
    keep only the first ``limit`` events in time order (applied last, after the filters above).

Files are parsed with ``pyarrow.csv`` (multi-threaded C++) and explicit column types; ``::`` separated
files are read with the single-character delimiter ``:`` and the empty fields between the two colons
ignored, which is exact for these all-numeric files. Paths ending in ``.gz``/``.bz2`` are decompressed.

Example
-------
>>> from dsgd.evaluation.loaders import load_dataset
>>> events = load_dataset("ml-100k", "../shared/data/ml-100k", implicit_threshold=4.0)
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pacsv

from dsgd.core.columns import ITEM, RATING, SEQ, TS, USER

LASTFM_ITEM_KINDS: tuple[str, ...] = ("artist", "track")
NAME_PREFIX = "name:"  # prefix of Last.fm item ids built from names when the MBID is empty


# --------------------------------------------------------------------------- helpers


def _resolve(path: str | os.PathLike, default_name: str | None) -> str:
    """``path`` itself if a file, else ``path/default_name``; FileNotFoundError with the tried path."""
    p = os.fspath(path)
    if os.path.isdir(p):
        if default_name is None:
            raise FileNotFoundError(f"{p} is a directory; pass the data file itself")
        p = os.path.join(p, default_name)
    if not os.path.isfile(p):
        raise FileNotFoundError(f"no such data file: {p}")
    return p


def _read(
    path: str,
    names: list[str],
    types: dict[str, pa.DataType],
    delimiter: str,
    header: bool = False,
    *,
    on_invalid: Callable[[Any], str] | None = None,
) -> pa.Table:
    """Read a delimited text file with pyarrow; only the columns in ``types`` are kept."""
    read = pacsv.ReadOptions(column_names=names, skip_rows=1 if header else 0, block_size=1 << 24)
    parse = pacsv.ParseOptions(delimiter=delimiter, quote_char=False, invalid_row_handler=on_invalid)
    conv = pacsv.ConvertOptions(column_types=types, include_columns=list(types), strings_can_be_null=False)
    try:
        return pacsv.read_csv(path, read_options=read, parse_options=parse, convert_options=conv)
    except pa.ArrowInvalid as e:
        raise ValueError(f"{path}: not in the expected format ({', '.join(names)}): {e}") from e


@dataclass
class _Ids:
    """An id column as integer codes into distinct Python strings (``cats[codes]`` is the column)."""

    codes: np.ndarray
    cats: np.ndarray  # object array of str

    @classmethod
    def from_strings(cls, col: pa.ChunkedArray | pa.Array) -> _Ids:
        """Arrow string column; one Python str is created per distinct id."""
        if isinstance(col, pa.ChunkedArray):
            col = col.combine_chunks()
        enc = col.dictionary_encode()
        cats = np.asarray(enc.dictionary.to_pylist(), dtype=object)
        return cls(enc.indices.to_numpy(zero_copy_only=False).astype(np.int64, copy=False), cats)

    @classmethod
    def from_ints(cls, col: pa.ChunkedArray) -> _Ids:
        """Integer id column; ids become ``str(int)``."""
        codes, uniq = pd.factorize(col.to_numpy())
        return cls(codes.astype(np.int64, copy=False), np.array([str(x) for x in uniq], dtype=object))


def _seconds_to_ms(col: pa.ChunkedArray) -> np.ndarray:
    s = col.to_numpy()
    if np.issubdtype(s.dtype, np.integer):
        return s.astype(np.int64) * 1000
    return np.rint(s.astype(np.float64) * 1000.0).astype(np.int64)


def _opts(
    implicit_threshold: float | None, first_only: bool, min_item_count: int, limit: int | None
) -> dict[str, Any]:
    return {
        "implicit_threshold": implicit_threshold,
        "first_only": first_only,
        "min_item_count": min_item_count,
        "limit": limit,
    }


def _finalize(
    user: _Ids,
    item: _Ids,
    rating: np.ndarray | None,
    ts_ms: np.ndarray,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """Apply the shared options to events in file order and build the common-schema DataFrame.

    Order: threshold, stable sort by ``ts``, ``first_only``, ``min_item_count``, ``limit``, ``seq``.
    All steps run on integer codes; the string columns are built once, at the end.
    """
    if limit is not None and limit < 0:
        raise ValueError(f"limit must be >= 0 or None, got {limit}")
    n = len(ts_ms)
    r = np.full(n, np.nan, dtype=np.float32) if rating is None else np.asarray(rating, dtype=np.float32)
    idx = np.arange(n)
    if implicit_threshold is not None:
        idx = idx[np.isnan(r) | (r >= implicit_threshold)]
        r = np.full(n, np.nan, dtype=np.float32)
    idx = idx[np.argsort(ts_ms[idx], kind="stable")]
    if first_only:
        pair = user.codes[idx] * len(item.cats) + item.codes[idx]
        idx = idx[~pd.Series(pair).duplicated(keep="first").to_numpy()]
    if min_item_count > 1:
        counts = np.bincount(item.codes[idx], minlength=len(item.cats))
        idx = idx[counts[item.codes[idx]] >= min_item_count]
    if limit is not None:
        idx = idx[:limit]
    cols = {
        USER: user.cats[user.codes[idx]],
        ITEM: item.cats[item.codes[idx]],
        RATING: r[idx],
        TS: np.asarray(ts_ms, dtype=np.int64)[idx],
        SEQ: np.arange(len(idx), dtype=np.int64),
    }
    return pd.DataFrame(cols, copy=False)


# --------------------------------------------------------------------------- formats


def _load_four_columns(
    path: str,
    names: list[str],
    delimiter: str,
    header: bool,
    positions: tuple[int, int, int, int],
    *,
    int_ids: bool,
    **opts: Any,
) -> pd.DataFrame:
    """Events from user, item, rating, unix-seconds columns at ``positions`` of a delimited file.

    ``int_ids``: parse ids as integers (faster; ids become ``str(int)``), else keep their text.
    """
    u, i, r, t = (names[k] for k in positions)
    id_type = pa.int64() if int_ids else pa.string()
    tab = _read(path, names, {u: id_type, i: id_type, r: pa.float32(), t: pa.int64()}, delimiter, header)
    ids = _Ids.from_ints if int_ids else _Ids.from_strings
    return _finalize(ids(tab[u]), ids(tab[i]), tab[r].to_numpy(), _seconds_to_ms(tab[t]), **opts)


def _colon_names(fields: list[str]) -> list[str]:
    """Column names for ``a::b::c`` read with delimiter ``:`` (empty columns between fields)."""
    out: list[str] = []
    for i, f in enumerate(fields):
        out.append(f)
        if i < len(fields) - 1:
            out.append(f"_gap{i}")
    return out


def load_movielens_100k(
    path: str | os.PathLike,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """MovieLens 100K ``u.data``: ``user \\t item \\t rating \\t unix_seconds``, no header, unsorted.

    ``path`` is the file or the folder holding ``u.data``.
    """
    p = _resolve(path, "u.data")
    opts = _opts(implicit_threshold, first_only, min_item_count, limit)
    return _load_four_columns(
        p, ["user", "item", "rating", "ts"], "\t", False, (0, 1, 2, 3), int_ids=True, **opts
    )


def load_movielens_dat(
    path: str | os.PathLike,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """MovieLens 1M/10M ``ratings.dat``: ``UserID::MovieID::Rating::Timestamp`` (seconds).

    ``path`` is the file or the folder holding ``ratings.dat``.
    """
    p = _resolve(path, "ratings.dat")
    names = _colon_names(["user", "item", "rating", "ts"])
    opts = _opts(implicit_threshold, first_only, min_item_count, limit)
    return _load_four_columns(p, names, ":", False, (0, 2, 4, 6), int_ids=True, **opts)


def load_movielens_csv(
    path: str | os.PathLike,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """MovieLens 20M/25M/latest ``ratings.csv`` with header ``userId,movieId,rating,timestamp``.

    ``path`` is the file or the folder holding ``ratings.csv``.
    """
    p = _resolve(path, "ratings.csv")
    with open(p, encoding="utf-8") as f:
        head = f.readline().strip().split(",")
    if head[:4] != ["userId", "movieId", "rating", "timestamp"]:
        raise ValueError(f"{p}: expected header userId,movieId,rating,timestamp, got {','.join(head)}")
    opts = _opts(implicit_threshold, first_only, min_item_count, limit)
    return _load_four_columns(p, head[:4], ",", True, (0, 1, 2, 3), int_ids=True, **opts)


def load_movietweetings(
    path: str | os.PathLike,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """MovieTweetings ``ratings.dat``: ``user_id::movie_id::rating::rating_timestamp``, ratings 0-10.

    Movie ids are IMDb ids and keep their leading zeros. ``path`` is the file or its folder.
    """
    p = _resolve(path, "ratings.dat")
    names = _colon_names(["user", "item", "rating", "ts"])
    opts = _opts(implicit_threshold, first_only, min_item_count, limit)
    return _load_four_columns(p, names, ":", False, (0, 2, 4, 6), int_ids=False, **opts)


def load_lastfm_tsv(
    path: str | os.PathLike,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
) -> pd.DataFrame:
    """Pre-indexed Last.fm stream ``user_idx \\t item_idx \\t seconds_since_start`` (implicit).

    ``ts`` is ``seconds * 1000`` (milliseconds since the start of the stream, not the epoch).
    """
    p = _resolve(path, None)
    types = {"user": pa.int64(), "item": pa.int64(), "ts": pa.float64()}
    t = _read(p, ["user", "item", "ts"], types, "\t")
    return _finalize(
        _Ids.from_ints(t["user"]),
        _Ids.from_ints(t["item"]),
        None,
        _seconds_to_ms(t["ts"]),
        **_opts(implicit_threshold, first_only, min_item_count, limit),
    )


def _parse_iso(col: pa.ChunkedArray) -> pa.Array:
    """ISO-8601 UTC seconds (``2009-05-04T23:08:57Z``, ``Z`` optional) -> timestamp[s]; null if invalid."""
    col = col.combine_chunks() if isinstance(col, pa.ChunkedArray) else col
    with_z = pc.strptime(col, format="%Y-%m-%dT%H:%M:%SZ", unit="s", error_is_null=True)
    without_z = pc.strptime(col, format="%Y-%m-%dT%H:%M:%S", unit="s", error_is_null=True)
    return pc.coalesce(with_z, without_z)


def load_lastfm_1k(
    path: str | os.PathLike,
    *,
    implicit_threshold: float | None = None,
    first_only: bool = False,
    min_item_count: int = 1,
    limit: int | None = None,
    item_kind: str = "artist",
) -> pd.DataFrame:
    """Raw Last.fm 1K ``userid-timestamp-artid-artname-traid-traname.tsv`` (implicit listens).

    Format: ``userid \\t ISO-timestamp \\t artist-mbid \\t artist-name \\t track-mbid \\t track-name``, no
    header, newest first per user. Quotes are literal characters (no quoting). Lines with the wrong
    number of fields or an unparsable timestamp are skipped and counted in a warning.

    Parameters
    ----------
    item_kind : {"artist", "track"}
        ``"artist"``: the artist MBID, or ``"name:<artist>"`` when it is empty. ``"track"``: the track
        MBID, or ``"name:<artist> - <track>"`` when it is empty (track names alone collide).
    """
    if item_kind not in LASTFM_ITEM_KINDS:
        raise ValueError(f"unknown item_kind {item_kind!r}; supported values: {', '.join(LASTFM_ITEM_KINDS)}")
    p = _resolve(path, "userid-timestamp-artid-artname-traid-traname.tsv")
    bad = 0

    def skip(row: Any) -> str:
        nonlocal bad
        bad += 1
        return "skip"

    names = ["user", "time", "artist_id", "artist", "track_id", "track"]
    wanted = ["user", "time", "artist_id", "artist"] + (["track_id", "track"] if item_kind == "track" else [])
    t = _read(p, names, {c: pa.string() for c in wanted}, "\t", on_invalid=skip)
    when = _parse_iso(t["time"])
    ok = pc.is_valid(when)
    n_bad_time = len(when) - pc.sum(ok).as_py() if len(when) else 0
    if n_bad_time:
        t, when = t.filter(ok), when.filter(ok)
    bad += n_bad_time
    if bad:
        msg = f"{p}: skipped {bad} malformed line(s)"
        warnings.warn(msg, stacklevel=2)
    artist_id = t["artist_id"].combine_chunks()
    if item_kind == "artist":
        mbid, name = artist_id, pc.binary_join_element_wise(NAME_PREFIX, t["artist"].combine_chunks(), "")
    else:
        mbid = t["track_id"].combine_chunks()
        name = pc.binary_join_element_wise(
            NAME_PREFIX, t["artist"].combine_chunks(), " - ", t["track"].combine_chunks(), ""
        )
    item = pc.if_else(pc.equal(pc.utf8_trim_whitespace(mbid), ""), name, mbid)
    ts_ms = when.cast(pa.int64()).to_numpy(zero_copy_only=False) * 1000
    return _finalize(
        _Ids.from_strings(t["user"]),
        _Ids.from_strings(item),
        None,
        ts_ms,
        **_opts(implicit_threshold, first_only, min_item_count, limit),
    )


# --------------------------------------------------------------------------- dispatcher

_LOADERS: dict[str, Callable[..., pd.DataFrame]] = {
    "ml-100k": load_movielens_100k,
    "ml-1m": load_movielens_dat,
    "ml-10m": load_movielens_dat,
    "ml-20m": load_movielens_csv,
    "ml-latest": load_movielens_csv,
    "movietweetings": load_movietweetings,
    "lastfm-1k": load_lastfm_1k,
    "lastfm-tsv": load_lastfm_tsv,
}
DATASETS: tuple[str, ...] = tuple(_LOADERS)


def load_dataset(name: str, path: str | os.PathLike, **opts: Any) -> pd.DataFrame:
    """Load data set ``name`` (one of :data:`DATASETS`) from ``path`` with the loader's options.

    Example
    -------
    >>> load_dataset("lastfm-1k", "raw.tsv", item_kind="track", first_only=True)
    """
    try:
        loader = _LOADERS[name]
    except KeyError:
        raise ValueError(f"unknown dataset {name!r}; supported values: {', '.join(DATASETS)}") from None
    return loader(path, **opts)
