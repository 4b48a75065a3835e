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
from dsgd.core.paths import spark_jars_dir

log = logging.getLogger(__name__)

DELTA_EXTENSION = "io.delta.sql.DeltaSparkSessionExtension"
DELTA_CATALOG = "org.apache.spark.sql.delta.catalog.DeltaCatalog"


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
    }
    jars = local_jars(cfg)
    if jars:
        conf["spark.jars"] = ",".join(jars)
    conf.update({str(k): str(v) for k, v in cfg.spark.conf.items()})
    return conf


def build_session(cfg: Config):
    """Create (or return the active) SparkSession configured for Delta and the Kafka source."""
    from pyspark.sql import SparkSession

    os.environ.setdefault("PYSPARK_PYTHON", sys.executable)
    os.environ.setdefault("PYSPARK_DRIVER_PYTHON", sys.executable)
    builder = SparkSession.builder
    if cfg.spark.master:
        builder = builder.master(cfg.spark.master)
    for key, value in spark_settings(cfg).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    spark.sparkContext.setLogLevel("WARN")
    log.info("spark session %s master=%s jars=%d", spark.version, spark.sparkContext.master,
             len(local_jars(cfg)))
    return spark
