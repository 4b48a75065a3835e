"""SparkSession factory: local jars on ``spark.jars``, Delta enabled, no network at start-up.

The Delta and Kafka connector jars come from the folder ``build.sh`` resolved with Maven (or from the
cluster when ``spark.jars_dir = "none"``); nothing is resolved at session start, so the factory works
offline. Jars are never resolved over the network at start-up.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from dsgd.core.config import Config, ConfigError
from dsgd.core.paths import conf_dir, spark_jars_dir

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"
#: The driver JVM's log4j2 configuration (in the conf folder) when this process starts the JVM: a quiet
#: start-up, WARN and up.
LOG4J_FILE = "log4j2.properties"


def local_jars(cfg: Config) -> list[str]:
    """Jar paths for ``spark.jars``; empty when the cluster provides them (``jars_dir = "none"``)."""
    if cfg.spark.jars_dir == "none":
        return []
    folder = Path(cfg.spark.jars_dir) if cfg.spark.jars_dir else spark_jars_dir()
    jars = sorted(str(p.resolve()) for p in folder.glob("*.jar")) if folder.is_dir() else []
    names = " ".join(Path(j).name for j in jars)
    if "delta-spark" not in names or "spark-sql-kafka" not in names:
        raise ConfigError(
            f"config key spark.jars_dir: no Delta/Kafka connector jars in {folder}; run ./build.sh to resolve "
            "them, point spark.jars_dir at a folder holding them, or set it to 'none' if the cluster has them")
    return jars


#: How much finished work the driver's status store keeps (with or without the UI). A micro-batch runs
#: about a dozen SQL executions, so at Spark's defaults (1,000 executions, jobs and stages) a stream's
#: live heap grows for its first hundred batches or so before the store evicts anything (bench/RESULTS.md,
#: "Driver heap"); these bounds reach that plateau within a few batches. ``spark.conf`` overrides them.
STATUS_RETENTION = {
    "spark.sql.ui.retainedExecutions": "50",
    "spark.ui.retainedJobs": "100",
    "spark.ui.retainedStages": "100",
    "spark.ui.retainedTasks": "10000",
}


def spark_settings(cfg: Config) -> dict[str, str]:
    """All Spark settings the factory applies (also used to write spark-submit --conf lines)."""
    conf = {
        "spark.app.name": cfg.app.name,
        "spark.sql.extensions": DELTA_EXTENSION,
        "spark.sql.catalog.spark_catalog": DELTA_CATALOG,
        "spark.sql.shuffle.partitions": str(cfg.spark.shuffle_partitions),
        "spark.ui.enabled": str(cfg.spark.ui).lower(),
        "spark.ui.showConsoleProgress": "false",
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.execution.arrow.pyspark.enabled": "true",
        "spark.databricks.delta.snapshotPartitions": "2",
        "spark.driver.memory": cfg.spark.driver_memory,
        # Python workers are reused: numba-compiled kernels stay warm across tasks.
        "spark.python.worker.reuse": "true",
        **STATUS_RETENTION,
    }
    jars = local_jars(cfg)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    conf.update({str(k): str(v) for k, v in cfg.spark.conf.items()})
    return conf


#: JVM loggers whose WARN lines are known and harmless here, raised to ERROR: the dense id index of the
#: ALS retrain is one global window on purpose (a few thousand ids per side, one partition), a streaming
#: query runs without adaptive execution (Spark says so at every start), and MLlib falls back to its Java
#: BLAS when no native one is installed (the speed is measured with it).
QUIET_LOGGERS = ("org.apache.spark.sql.execution.window.WindowExec",
                 "org.apache.spark.sql.execution.streaming.ResolveWriteToStream",
                 "dev.ludovic.netlib.blas.InstanceBuilder", "dev.ludovic.netlib.lapack.InstanceBuilder",
                 "dev.ludovic.netlib.arpack.InstanceBuilder",
                 # "Truncated the string representation of a plan": the event parser's plan is long by design
                 "org.apache.spark.sql.catalyst.util.SparkStringUtils", "org.apache.spark.util.SparkStringUtils")


def _quiet_known_warnings(spark) -> None:
    jvm = spark.sparkContext._jvm
    error = jvm.org.apache.logging.log4j.Level.ERROR
    for name in QUIET_LOGGERS:
        jvm.org.apache.logging.log4j.core.config.Configurator.setLevel(name, error)


def build_session(cfg: Config):
    """Create (or return the active) SparkSession configured for Delta and the Kafka source."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    settings = spark_settings(cfg)
    log4j = conf_dir() / LOG4J_FILE
    if log4j.is_file():
        settings.setdefault("spark.driver.extraJavaOptions", f"-Dlog4j2.configurationFile={log4j.as_uri()}")
    for key, value in settings.items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    _quiet_known_warnings(spark)
    log.info("spark session %s master=%s jars=%d", spark.version, spark.sparkContext.master,
             len(local_jars(cfg)))
    return spark


def spark_session(profile: str | None = None, *, conf: list[str] | None = None,
                  overrides: list[str] | None = None):
    """The session the ``dsgd`` commands use, from the same config (``profile``: conf/PROFILE.toml;
    ``overrides``: ``["section.key=value", ...]`` like ``--set``): Delta and the Kafka source enabled.

    >>> spark = spark_session(profile="local")
    """
    from dsgd.core.config import load_config

    return build_session(load_config(profile=profile, files=conf, overrides=overrides))


def table_path(name: str, profile: str | None = None, *, conf: list[str] | None = None,
               overrides: list[str] | None = None) -> str:
    """The absolute path (or URI) of warehouse table ``name`` (events, factors, metrics, quarantine,
    snapshots, recommendations), as SQL's ``delta.`path``` needs it; a relative ``app.warehouse`` is
    resolved against the working directory, as the jobs resolve it.

    >>> spark.sql(f"DESCRIBE HISTORY delta.`{table_path('factors', profile='local')}`")
    """
    from dsgd.core.config import load_config
    from dsgd.store.tables import Tables

    tables = Tables.from_config(load_config(profile=profile, files=conf, overrides=overrides))
    if name not in TABLE_NAMES:
        raise ValueError(f"table_path: unknown table {name!r}; allowed: {', '.join(TABLE_NAMES)}")
    path = getattr(tables, name)
    return path if "://" in path or path.startswith("file:") else os.path.abspath(path)


TABLE_NAMES = ("events", "factors", "metrics", "quarantine", "snapshots", "recommendations")
