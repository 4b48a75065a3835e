"""dsgd-stream: streaming matrix factorization (stratified DSGD) on Spark, Kafka and Delta.

The public API, imported lazily (``import dsgd`` starts no JVM and compiles nothing):

- :class:`DSGD`, :class:`DSGDModel`: the batch estimator and its model (pandas or Spark input);
- :func:`load_config`, :class:`Config`: the one typed, validated application config;
- :func:`build_session`: a Delta- and Kafka-enabled SparkSession from a config; :func:`spark_session`
  the same from a profile (``spark = dsgd.spark_session(profile="local")``), :func:`table_path` the
  absolute path of a warehouse table;
- :class:`FactorStore`, :class:`Tables`: the model's Delta table and the warehouse layout;
- :class:`SideFactors`: the in-memory factors of one side.

Packages (dependencies point one way, a test enforces it): ``dsgd.core`` (numpy-only math, config)
<- ``dsgd.engines`` (local and Spark DSGD) <- ``dsgd.store`` (Spark/Delta I/O) <- ``dsgd.api``,
``dsgd.evaluation``, ``dsgd.ops`` <- ``dsgd.cli``. The jobs (``streaming/``, ``batch/``) sit on top.
See docs/architecture.md.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.2.0"

_EXPORTS = {
    "DSGD": "dsgd.api.estimator",
    "DSGDModel": "dsgd.api.model",
    "Config": "dsgd.core.config",
    "load_config": "dsgd.core.config",
    "SideFactors": "dsgd.core.factors",
    "build_session": "dsgd.store.session",
    "spark_session": "dsgd.store.session",
    "table_path": "dsgd.store.session",
    "FactorStore": "dsgd.store.factor_store",
    "Tables": "dsgd.store.tables",
}

__all__ = [*_EXPORTS, "__version__"]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(_EXPORTS[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'dsgd' has no attribute {name!r}")
