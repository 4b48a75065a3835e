"""Input checks and conversions shared by the estimator and the model: ids, times, sequence numbers.

Ids are integer or string columns; integers become ``str(int)`` (``42`` and ``"42"`` are the same id).
Time is epoch milliseconds (integer) or a timestamp; ``seq`` is a deterministic tie-breaker.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np
import pandas as pd

from dsgd.core import columns as C
from dsgd.core.config import ModelConfig
from dsgd.core.hashing import id_key

_MODEL_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}


def _check_choice(name: str, value: Any, choices: tuple) -> str:
    if value not in choices:
        allowed = ", ".join(repr(c) for c in choices)
        raise ValueError(f"DSGD: {name}={value!r} is not supported; allowed values: {allowed}")
    return value


def _check_number(name: str, value: Any, *, integer: bool, lo: float | None, hi: float | None,
                  lo_open: bool = False) -> Any:
    ok_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not ok_type:
        kind = "an int" if integer else "a number"
        raise ValueError(f"DSGD: {name} must be {kind}, got {value!r} ({type(value).__name__})")
    if not integer and not math.isfinite(float(value)):
        raise ValueError(f"DSGD: {name} must be finite, got {value!r}")
    low_bad = lo is not None and (value <= lo if lo_open else value < lo)
    if low_bad or (hi is not None and value > hi):
        lo_s = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" <= {hi}"
        raise ValueError(f"DSGD: {name}={value!r} is out of range; allowed: {lo_s}{name}{hi_s}")
    return int(value) if integer else float(value)


def _cfg_range(name: str) -> tuple[float | None, float | None]:
    meta = _MODEL_FIELDS[name].metadata
    return meta.get("lo"), meta.get("hi")


def _check_column_name(name: str, value: Any) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"DSGD: {name} must be a non-empty column name, got {value!r}")
    return value



def _json_default(o: Any) -> Any:
    if isinstance(o, np.generic):
        return o.item()
    raise TypeError(f"not JSON serialisable: {type(o).__name__}")


def _is_spark_df(obj: Any) -> bool:
    try:
        from pyspark.sql import DataFrame
    except ImportError:  # pragma: no cover
        return False
    return isinstance(obj, DataFrame)


def _active_spark() -> Any:
    from pyspark.sql import SparkSession

    spark = SparkSession.getActiveSession()
    if spark is None:
        raise RuntimeError("no active SparkSession: userFactors/itemFactors/transform need one "
                           "(dsgd.store.session.build_session)")
    return spark


_INT_SPARK = ("tinyint", "smallint", "int", "bigint")


def _spark_id(df: Any, name: str, types: dict[str, str]) -> Any:
    from pyspark.sql import functions as F

    t = types[name]
    if t == "string":
        return F.col(name)
    if t in _INT_SPARK:
        return F.col(name).cast("long").cast("string")
    raise ValueError(f"id column {name!r} must be an integer or string column, got {t}")


def _ids_to_str(s: pd.Series, name: str) -> pd.Series:
    """Ids as Python str: integers through ``str(int)``, strings unchanged."""
    if pd.api.types.is_integer_dtype(s.dtype):
        return pd.Series(s.to_numpy(np.int64).astype(str).astype(object), index=s.index)
    if pd.api.types.is_float_dtype(s.dtype) or pd.api.types.is_bool_dtype(s.dtype):
        raise ValueError(f"id column {name!r} must hold integers or strings, got dtype {s.dtype} (a float id "
                         "column usually means nulls in an integer column: drop them and cast to int)")
    vals = s.to_numpy(object)
    out = np.empty(len(vals), dtype=object)
    for n, v in enumerate(vals):
        if v is None or (isinstance(v, float) and v != v):
            out[n] = None
        elif isinstance(v, str):
            out[n] = v
        elif isinstance(v, int | np.integer) and not isinstance(v, bool):
            out[n] = str(int(v))
        else:
            raise ValueError(f"id column {name!r} must hold integers or strings, got {v!r} ({type(v).__name__})")
    return pd.Series(out, index=s.index, dtype=object)


def _ts_to_ms(s: pd.Series) -> np.ndarray:
    if pd.api.types.is_datetime64_any_dtype(s.dtype):
        return (s.astype("datetime64[ns]").to_numpy().astype(np.int64) // 1_000_000).astype(np.int64)
    if pd.api.types.is_integer_dtype(s.dtype):
        return s.to_numpy(np.int64)
    raise ValueError(f"time column must be integer epoch ms or datetime64, got dtype {s.dtype}")


def _derived_seq(ev: pd.DataFrame) -> np.ndarray:
    """Position of each event in (ts, user, item, rating) order: as Spark's row_number in _prepare_spark."""
    r = ev[C.RATING].to_numpy(np.float64)
    order = np.lexsort((np.where(np.isnan(r), np.inf, r), ev[C.ITEM].to_numpy(object).astype(str),
                        ev[C.USER].to_numpy(object).astype(str), ev[C.TS].to_numpy(np.int64)))
    seq = np.empty(len(ev), np.int64)
    seq[order] = np.arange(len(ev), dtype=np.int64)
    return seq


def _normalise_pandas_types(pdf: pd.DataFrame) -> pd.DataFrame:
    out = pd.DataFrame({C.USER: pdf[C.USER].astype(object), C.ITEM: pdf[C.ITEM].astype(object),
                        C.RATING: pd.to_numeric(pdf[C.RATING]).astype(np.float32).to_numpy(),
                        C.TS: pdf[C.TS].to_numpy(np.int64), C.SEQ: pdf[C.SEQ].to_numpy(np.int64)})
    return out


def _mean_rating(r: np.ndarray) -> float:
    """Mean rating in float64 (exact sum for the usual ratings, so both engines agree)."""
    return math.fsum(np.asarray(r, np.float64).tolist()) / len(r)


def _ids_and_keys(ids: pd.Series) -> tuple[np.ndarray, np.ndarray]:
    """Ids (object array) and their XXH64 keys, hashing each distinct id once."""
    codes, uniq = pd.factorize(ids.to_numpy(object))
    return ids.to_numpy(object), id_key(list(uniq))[codes]


def _distinct_pairs(ev: pd.DataFrame) -> pd.DataFrame:
    return ev[[C.USER, C.ITEM]].drop_duplicates(ignore_index=True).astype(object)


def _factor_rows_to_side(pdf: pd.DataFrame, rank: int) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    n = len(pdf)
    vec = np.stack(pdf[C.VEC].to_numpy()).astype(np.float32) if n else np.zeros((0, rank), np.float32)
    return (pdf[C.ID].to_numpy(object), vec.reshape(n, rank), pdf[C.BIAS].to_numpy(np.float32),
            pdf[C.COUNT].to_numpy(np.int64))



def prepare_pandas(est: Any, df: pd.DataFrame) -> pd.DataFrame:
    """Events of a pandas DataFrame in the common schema (user, item str; rating float32; ts, seq int64),
    read with the column names of ``est`` (a :class:`dsgd.api.DSGD`)."""
    require_columns(est, list(df.columns), "pandas DataFrame")
    out = pd.DataFrame({C.USER: _ids_to_str(df[est.user_col], est.user_col),
                        C.ITEM: _ids_to_str(df[est.item_col], est.item_col)})
    if est.rating_col in df.columns:
        out[C.RATING] = pd.to_numeric(df[est.rating_col], errors="raise").to_numpy(np.float32)
    else:
        out[C.RATING] = np.full(len(df), np.nan, np.float32)
    out[C.TS] = _ts_to_ms(df[est.time_col]) if est.time_col in df.columns else np.zeros(len(df), np.int64)
    _check_pandas_values(est, out)
    if C.SEQ in df.columns:
        out[C.SEQ] = df[C.SEQ].to_numpy(np.int64)
    else:
        out[C.SEQ] = _derived_seq(out)
    return out.reset_index(drop=True)

def _check_pandas_values(est: Any, out: pd.DataFrame) -> None:
    if out[C.USER].isna().any() or out[C.ITEM].isna().any():
        raise ValueError(f"DSGD.fit: {est.user_col}/{est.item_col} hold null ids; drop those rows first")
    if est.kind == "explicit":
        bad = int((~np.isfinite(out[C.RATING].to_numpy())).sum())
        if bad:
            raise ValueError(f"DSGD.fit: kind='explicit' needs a finite {est.rating_col!r} on every row; "
                             f"{bad} row(s) are null/NaN/inf")

def require_columns(est: Any, cols: list[str], what: str) -> None:
    need = [est.user_col, est.item_col] + ([est.rating_col] if est.kind == "explicit" else [])
    missing = [c for c in need if c not in cols]
    if missing:
        raise ValueError(f"DSGD.fit: the {what} lacks column(s) {', '.join(missing)} (has: "
                         f"{', '.join(cols)}); set user_col/item_col/rating_col to the right names")

def prepare_spark(est: Any, df: Any) -> Any:
    """Events of a Spark DataFrame in the common schema (a derived ``seq`` when there is none)."""
    from pyspark.sql import Window
    from pyspark.sql import functions as F

    require_columns(est, df.columns, "Spark DataFrame")
    types = dict(df.dtypes)
    cols = [_spark_id(df, est.user_col, types).alias(C.USER), _spark_id(df, est.item_col, types).alias(C.ITEM)]
    if est.rating_col in types:
        if types[est.rating_col] not in ("float", "double", "int", "bigint", "smallint", "tinyint") \
                and not types[est.rating_col].startswith("decimal"):
            raise ValueError(f"DSGD.fit: rating column {est.rating_col!r} must be numeric, got "
                             f"{types[est.rating_col]}")
        cols.append(F.col(est.rating_col).cast("float").alias(C.RATING))
    else:
        cols.append(F.lit(None).cast("float").alias(C.RATING))
    if est.time_col in types:
        t = types[est.time_col]
        if t in ("timestamp", "timestamp_ntz"):
            cols.append(F.unix_millis(F.col(est.time_col).cast("timestamp")).alias(C.TS))
        elif t in ("bigint", "int", "smallint", "tinyint"):
            cols.append(F.col(est.time_col).cast("long").alias(C.TS))
        else:
            raise ValueError(f"DSGD.fit: time column {est.time_col!r} must be an integer (epoch ms) or a "
                             f"timestamp, got {t}")
    else:
        cols.append(F.lit(0).cast("long").alias(C.TS))
    has_seq = C.SEQ in types and types[C.SEQ] in ("bigint", "int")
    if has_seq:
        cols.append(F.col(C.SEQ).cast("long").alias(C.SEQ))
    ev = df.select(*cols)
    if not has_seq:
        # identical (ts, user, item, rating) rows are interchangeable, so this order is deterministic
        w = Window.orderBy(F.col(C.TS).asc(), F.col(C.USER).asc(), F.col(C.ITEM).asc(),
                           F.col(C.RATING).asc_nulls_last())
        ev = ev.withColumn(C.SEQ, (F.row_number().over(w) - 1).cast("long"))
    return ev
