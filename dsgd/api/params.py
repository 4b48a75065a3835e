"""The estimator's parameters, derived from the one declaration of the model's hyper-parameters.

Every hyper-parameter is declared once, in :class:`dsgd.core.config.ModelConfig` (default, doc, allowed
values or range). :class:`dsgd.api.DSGD` takes exactly those keys (minus the ingestion-only rating
bounds) with the same defaults, checks them against the same declarations, and derives its
:class:`~dsgd.core.params.KernelParams` through the same function as the streaming trainer
(:func:`dsgd.core.params.params_from_model_config`). Only the input column names and the cold-start
strategy are the estimator's own.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import numpy as np

from dsgd.core import columns as C
from dsgd.core.config import ModelConfig

_FIELDS = {f.name: f for f in dataclasses.fields(ModelConfig)}
#: ``[model]`` keys the estimator takes: not the rating bounds (checks of the stream's ingestion) nor the
#: driver-size limit of the stream's local engine (a fit's input is already in hand).
MODEL_KEYS = tuple(n for n in _FIELDS if n not in ("rating_min", "rating_max", "local_max_rows"))
DEFAULTS = ModelConfig()

COLD_START_STRATEGIES = ("nan", "drop")
#: The estimator's own parameters: (default, doc).
OWN = {
    "user_col": (C.USER, "Input column of the user ids (integer or string)."),
    "item_col": (C.ITEM, "Input column of the item ids (integer or string)."),
    "rating_col": (C.RATING, "Input column of the ratings (explicit: required and finite; implicit: ignored)."),
    "time_col": (C.TS, "Input column of the event time: epoch milliseconds (integer) or a timestamp; "
                       "missing: ts = 0 for every event."),
    "cold_start_strategy": ("nan", "What transform does with rows whose user or item is unknown: nan "
                                   "(prediction NaN, like MLlib) or drop (the rows are removed)."),
}
PARAM_NAMES = (*MODEL_KEYS, *OWN)


def check(name: str, value: Any) -> Any:
    """``value`` checked against the declaration of ``name``; ``ValueError`` names what is allowed."""
    if name == "use_bias":
        if value is not None and not isinstance(value, bool | np.bool_):
            raise ValueError(f"DSGD: use_bias must be True, False or None, got {value!r}")
        return None if value is None else bool(value)
    if name in OWN:
        if name == "cold_start_strategy":
            return _choice(name, value, COLD_START_STRATEGIES)
        if not isinstance(value, str) or not value:
            raise ValueError(f"DSGD: {name} must be a non-empty column name, got {value!r}")
        return value
    meta = _FIELDS[name].metadata
    if meta.get("choices"):
        return _choice(name, value, meta["choices"])
    integer = isinstance(_FIELDS[name].default, int)
    lo = meta.get("lo")
    # a learning rate of 0 is allowed by the config's range floor only as its tiny positive bound
    return _number(name, value, integer=integer, lo=0.0 if name == "lr" else lo, hi=meta.get("hi"),
                   lo_open=name == "lr")


def _choice(name: str, value: Any, choices: tuple) -> str:
    if value not in choices:
        raise ValueError(f"DSGD: {name}={value!r} is not supported; allowed values: "
                         f"{', '.join(repr(c) for c in choices)}")
    return value


def _number(name: str, value: Any, *, integer: bool, lo: float | None, hi: float | None, lo_open: bool) -> Any:
    ok_type = isinstance(value, int | np.integer) if integer else isinstance(value, int | float | np.number)
    if isinstance(value, bool) or not ok_type:
        raise ValueError(f"DSGD: {name} must be {'an int' if integer else 'a number'}, got {value!r} "
                         f"({type(value).__name__})")
    if not integer and not math.isfinite(float(value)):
        raise ValueError(f"DSGD: {name} must be finite, got {value!r}")
    if (lo is not None and (value <= lo if lo_open else value < lo)) or (hi is not None and value > hi):
        lo_s = "" if lo is None else f"{lo} {'<' if lo_open else '<='} "
        hi_s = "" if hi is None else f" <= {hi}"
        raise ValueError(f"DSGD: {name}={value!r} is out of range; allowed: {lo_s}{name}{hi_s}")
    return int(value) if integer else float(value)


def resolve_bias(kind: str, use_bias: bool | None) -> bool:
    """Explicit models always learn biases; implicit ones when asked (None: the kind's default)."""
    if kind == "explicit" and use_bias is False:
        raise ValueError("DSGD: use_bias=False is not supported for kind='explicit' (explicit models always "
                         "learn user and item biases); leave use_bias=None")
    return kind == "explicit" or bool(use_bias)


def default_of(name: str) -> Any:
    """The estimator's default of ``name`` (``use_bias``: None, the kind's default)."""
    if name in OWN:
        return OWN[name][0]
    return None if name == "use_bias" else _FIELDS[name].default


def doc_of(name: str) -> str:
    """The contract of ``name``: the declaration's doc plus its allowed values or range."""
    if name in OWN:
        return OWN[name][1]
    meta = _FIELDS[name].metadata
    doc = meta["doc"]
    if meta.get("choices"):
        doc += f" Supported values: {', '.join(repr(c) for c in meta['choices'])}."
    elif meta.get("lo") is not None:
        doc += f" Range {meta['lo']:g}..{meta['hi']:g}."
    if name == "use_bias":
        doc += " None: the kind's default (on for explicit, off for implicit)."
    return doc


def docstring() -> str:
    """The numpydoc ``Parameters`` section, generated from the declarations."""
    lines = ["Parameters", "----------"]
    for name in PARAM_NAMES:
        lines += [f"{name} : default {default_of(name)!r}", f"    {doc_of(name)}"]
    return "\n".join(lines)
