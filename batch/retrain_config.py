"""The ``[retrain]`` config section: the periodic ALS retrain, its blend into the live model, serving.

The keys are declared in :mod:`dsgd.core.config` (``Config.retrain``) like every other section; the batch
jobs also accept a :class:`RetrainConfig` argument that overrides it.

Example
-------
>>> rc = RetrainConfig(policy="score-blend", alpha=0.7)
>>> validated(rc, {"als_max_iter": "5"}).als_max_iter
5
"""

from __future__ import annotations

import dataclasses
from typing import Any

from dsgd.core.config import POLICIES, ConfigError, RetrainConfig, _check_value
from dsgd.engines.als import implicit_prefs

__all__ = ["POLICIES", "RetrainConfig", "implicit_prefs", "retrain_config", "validated"]


def retrain_config(cfg: Any, override: RetrainConfig | None = None) -> RetrainConfig:
    """The retrain section: ``override`` if given, else ``cfg.retrain`` once wired, else the defaults."""
    if override is not None:
        return override
    rc = getattr(cfg, "retrain", None)
    return rc if isinstance(rc, RetrainConfig) else RetrainConfig()


def validated(base: RetrainConfig, values: dict[str, Any]) -> RetrainConfig:
    """A copy of ``base`` with ``values`` applied, each checked against its declaration.

    Raises :class:`dsgd.core.config.ConfigError` naming the key (``retrain.<key>``) and what is allowed.

    Example
    -------
    >>> validated(RetrainConfig(), {"policy": "warm-start"}).policy
    'warm-start'
    """
    fields = {f.name: f for f in dataclasses.fields(RetrainConfig)}
    checked = {}
    for key, value in values.items():
        if key not in fields:
            raise ConfigError(f"unknown config key retrain.{key}; allowed keys of [retrain]: {', '.join(fields)}")
        checked[key] = _check_value("retrain", fields[key], value)
    return dataclasses.replace(base, **checked)
